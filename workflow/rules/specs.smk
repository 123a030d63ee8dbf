# Write one engine's settings (plus the shared sampling and scenarios) to its spec file.
rule engine_spec:
    output:
        "results/specs/engines/{engine}.json",
    log:
        "logs/specs/engines/{engine}.log",
    params:
        spec=lambda wc: engine_spec(config, wc.engine).to_dict(),
    run:
        write_spec_file(output[0], params.spec, log[0])


# Write how one model is served (path, dtype, GPUs, context length) to its spec file.
rule model_spec:
    output:
        "results/specs/models/{model}.json",
    log:
        "logs/specs/models/{model}.log",
    params:
        spec=lambda wc: model_spec(config, wc.model).to_dict(),
    run:
        write_spec_file(output[0], params.spec, log[0])

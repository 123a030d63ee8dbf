# Prepare each model as an HF-format directory (download, link or convert), with file hashes.
rule model:
    input:
        model_build_inputs,
    output:
        directory("resources/models/{model}"),
        meta="results/models/{model}.json",
    log:
        "logs/models/{model}.log",
    params:
        source=lambda wc: model_source(config["models"][wc.model]),
        dtype=model_build_dtype,
        seed=lambda wc: config["models"][wc.model]["seed"],
        python=f".venvs/{config['tools_env']}/bin/python",
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.pipeline.models --name {wildcards.model} "
        "--source {params.source:q} --dtype {params.dtype} --out resources/models/{wildcards.model} "
        "--meta {output.meta} --seed {params.seed} > {log} 2>&1"


# Write the prepared weights as a GGUF at the serve dtype for llama.cpp (or say why it cannot).
rule gguf:
    input:
        env=env_marker(config["tools_env"]),
        model="results/models/{model}.json",
    output:
        meta="results/models/{model}.gguf.json",
    log:
        "logs/models/{model}.gguf.log",
    params:
        dtype=gguf_dtype,
        python=f".venvs/{config['tools_env']}/bin/python",
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.pipeline.gguf_export --name {wildcards.model} "
        "--model-dir resources/models/{wildcards.model} --dtype {params.dtype} "
        "--out resources/gguf/{wildcards.model}.gguf --meta {output.meta} > {log} 2>&1"

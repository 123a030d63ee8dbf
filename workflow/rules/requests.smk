# Requests the prepare step builds before the bench jobs: tokenizer-exact prompts (shared prefix,
# synthetic sizes, trace replay) and sampled conversations, one file per (model, scenario).


# Write one scenario's settings to its spec file (the prepare step reads it).
rule scenario_spec:
    output:
        "results/specs/scenarios/{scenario}.json",
    log:
        "logs/specs/scenarios/{scenario}.log",
    params:
        spec=lambda wc: asdict(scenario_of(config, wc.scenario)),
    run:
        write_spec_file(output[0], params.spec, log[0])


# Write the small seeded trace in the Mooncake format that a trace scenario with source seeded replays.
rule seeded_trace:
    output:
        layout.seeded_trace("{seed}"),
    log:
        "logs/traces/seeded-{seed}.log",
    wildcard_constraints:
        seed=r"-?\d+",
    shell:
        "infbench seeded-trace --seed {wildcards.seed} --out {output} > {log} 2>&1"


# Build one scenario's requests for one model with the model's tokenizer (exact token counts), or
# sample its conversations, in the tools env.
rule requests:
    input:
        env=f".venvs/{config['tools_env']}/.infbench-built",
        spec="results/specs/scenarios/{scenario}.json",
        model_spec="results/specs/models/{model}.json",
        model="results/models/{model}.json",
        source=scenario_source,
    output:
        layout.request_file("{model}", "{scenario}"),
    log:
        "logs/requests/{model}/{scenario}.log",
    wildcard_constraints:
        scenario=one_of(PREPARED_SCENARIOS),
    params:
        python=memory_python(),
        max_tokens=config["sampling"]["max_tokens"],
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.pipeline.requestprep --scenario-spec {input.spec} "
        "--model-spec {input.model_spec} --max-tokens {params.max_tokens} --out {output} > {log} 2>&1"

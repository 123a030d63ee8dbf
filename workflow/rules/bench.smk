# Benchmark one engine on one model: start its server, warm up, run every scenario, stop it. One
# rule per set of extra runs (bench_rules(): e.g. bench_tgi also writes its native-route records).
for bench_rule, (extra_runs, bench_engines) in bench_rules().items():

    rule:
        name:
            bench_rule
        input:
            unpack(engine_inputs),
            engine_spec="results/specs/engines/{engine}.json",
            model_spec="results/specs/models/{model}.json",
            model="results/models/{model}.json",
            prompts=f"results/prompts/{PROMPTS_NAME}.jsonl",
            requests=prepared_requests,
            failed_before=failure_marker,
        output:
            records=[layout.records("{engine}", "{model}", run) for run in [*SCENARIOS, *extra_runs]],
            server=layout.server_info("{engine}", "{model}"),
            memory=layout.memory_report("{engine}", "{model}"),
        log:
            bench="logs/bench/{engine}/{model}.log",
            server="logs/bench/{engine}/{model}.server.log",
        wildcard_constraints:
            engine=one_of(bench_engines),
        threads: bench_threads
        resources:
            gpu=model_gpus,
        params:
            venv=lambda wc: f".venvs/{engine_env(wc.engine) or 'none'}",
            lock=lambda wc: f"results/envs/{engine_env(wc.engine)}.lock" if engine_env(wc.engine) else "none",
        shell:
            "infbench bench --engine-spec {input.engine_spec} --model-spec {input.model_spec} "
            "--prompts {input.prompts} --venv {params.venv} --lock {params.lock} --threads {threads} "
            f"--out-dir {layout.raw_dir('{wildcards.engine}', '{wildcards.model}')} "
            f"--requests-dir {layout.requests_dir('{wildcards.model}')} "
            "--server-log {log.server} --log {log.bench}"

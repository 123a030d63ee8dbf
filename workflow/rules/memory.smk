# Memory estimates per model and the estimate-vs-measured table. The estimator needs torch and
# transformers, so both rules run with the tools venv's python (PYTHONPATH=workflow).


# Estimate one model's memory (parameters, weights per dtype, KV cache, vLLM GPU fit) without weights.
rule memory_estimate:
    input:
        unpack(memory_estimate_input),
    output:
        layout.memory_estimate("{model}"),
    log:
        "logs/memory/{model}.log",
    params:
        python=memory_python(),
        flag=memory_source_flag,
        dtype=lambda wc: model_spec(config, wc.model).dtype,  # the dtype engines compute in
        context=lambda wc: config["models"][wc.model]["max_model_len"],
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.cli memory-estimate "
        "{params.flag} {input.source:q} --name {wildcards.model} --dtype {params.dtype} "
        "--context {params.context} --out {output} > {log} 2>&1"


# Tabulate every model's estimate beside the memory each engine was measured to use.
rule memory_table:
    input:
        env=f".venvs/{config['tools_env']}/.infbench-built",
        estimates=memory_table_inputs()[0],
        measured=memory_table_inputs()[1],
    output:
        "results/tables/memory.md",
    log:
        "logs/memory/table.log",
    params:
        python=memory_python(),
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.cli memory-table "
        "--estimates {input.estimates} --measured {input.measured} --out {output} > {log} 2>&1"


# Measure this machine's memory bandwidth (a short read benchmark on every core, so it runs alone):
# the single-request decode bound of CPU runs is bandwidth / bytes read per token.
rule memory_bandwidth:
    output:
        layout.BANDWIDTH,
    log:
        "logs/memory/bandwidth.log",
    threads: all_cores
    shell:
        "infbench memory-bandwidth --out {output} > {log} 2>&1"

# Prepare each model as an HF-format directory (download, link or convert), with file hashes.
rule model:
    input:
        model_build_inputs,
    output:
        directory("resources/models/{model}"),
        meta="results/models/{model}.json",
    params:
        source=lambda wc: model_source(config["models"][wc.model]),
        dtype=model_build_dtype,
        seed=lambda wc: config["models"][wc.model]["seed"],
        python=f".venvs/{config['tools_env']}/bin/python",
    log:
        "logs/models/{model}.log",
    shell:
        "PYTHONPATH=workflow {params.python} -m infbench.pipeline.models --name {wildcards.model} "
        "--source {params.source:q} --dtype {params.dtype} --out resources/models/{wildcards.model} "
        "--meta {output.meta} --seed {params.seed} > {log} 2>&1"

# Sample N chat prompts with a seed from the configured source (same seed, same sample).
rule prompts:
    output:
        sample=f"results/prompts/{PROMPTS_NAME}.jsonl",
        meta=f"results/prompts/{PROMPTS_NAME}.meta.json",
    log:
        f"logs/prompts/{PROMPTS_NAME}.log",
    params:
        source=config["prompts"]["source"],
        n=config["prompts"]["n"],
        seed=config["prompts"]["seed"],
    shell:
        "infbench prompts --source {params.source:q} --n {params.n} --seed {params.seed} "
        "--out {output.sample} > {log} 2>&1"

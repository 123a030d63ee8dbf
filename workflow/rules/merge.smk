# Merge every raw record into the study's tables (models x engines) and a details table, with polars.
rule merge:
    input:
        [raw_outputs(e, m) for e in ENGINES for m in MODELS],
        [f"results/raw/{e}/{m}/server.json" for e in ENGINES for m in MODELS],
        # For the decode bound beside single-request tok/s (results/bounds.py): each model's estimate,
        # what each engine used (memory.json) and this machine's measured bandwidth.
        [f"results/memory/{m}.json" for m in MODELS],
        [f"results/raw/{e}/{m}/memory.json" for e in ENGINES for m in MODELS],
        "results/hardware/bandwidth.json",
    output:
        speed="results/tables/inference_speed.md",
        throughput="results/tables/throughput.md",
        details="results/tables/details.md",
        workloads="results/tables/workloads.md",
        csv="results/tables/summary.csv",
        plan="results/tables/merge_plan.json",
    log:
        "logs/merge.log",
    params:
        plan=merge_plan(),
    shell:
        "infbench merge --raw-dir results/raw --out-dir results/tables --plan {params.plan:q} > {log} 2>&1"

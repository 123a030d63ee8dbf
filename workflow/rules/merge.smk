# Merge every raw record into the study's tables (models x engines) and a details table, with polars.
rule merge:
    input:
        records=all_raw_records(),
        servers=all_server_files(),
        # For the decode bound beside single-request tok/s (results/bounds.py): each model's estimate,
        # what each engine used (memory.json) and this machine's measured bandwidth, passed explicitly.
        estimates=memory_table_inputs()[0],
        measured=memory_table_inputs()[1],
        bandwidth=layout.BANDWIDTH,
    output:
        speed="results/tables/inference_speed.md",
        throughput="results/tables/throughput.md",
        details="results/tables/details.md",
        workloads="results/tables/workloads.md",
        csv="results/tables/summary.csv",
        plan=layout.MERGE_PLAN,
    log:
        "logs/merge.log",
    params:
        plan=merge_plan(),
    run:
        # The plan travels in a file, not on the command line (a param still: a new plan reruns the merge).
        with handoff_file(params.plan) as plan_file:
            shell(
                f"infbench merge --raw-dir {layout.RAW} --out-dir {layout.TABLES} "
                "--plan {plan_file:q} "
                "--estimates {input.estimates:q} --measured {input.measured:q} --bandwidth {input.bandwidth:q} "
                "> {log} 2>&1"
            )

# This run against another: `snakemake --cores all compare --config compare_to=A`, where A is a
# bundle (.tar.gz) or a results folder; A is the baseline, this run is B (infbench compare A .).
# Asking for `compare` brings this run up to date first; it is not part of `all`.


# Compare this run with compare_to: A, B, change %, 95% interval and verdict per cell and metric.
rule compare:
    input:
        baseline=compare_baseline,
        tables=rules.merge.output,
        provenance=rules.provenance.output,
        records=all_raw_records(),
        servers=all_server_files(),
        repeats=all_repeat_dirs(),
    output:
        md="results/compare/compare.md",
        csv="results/compare/compare.csv",
        html=report("results/compare/compare.html", category="Comparison", labels={"page": "compare"}),
        plot=report("results/compare/forest.png", category="Comparison", labels={"page": "forest plot"}),
    log:
        "logs/compare.log",
    params:
        fail=lambda wildcards: (
            f"--fail-if-worse {config['compare_fail_if_worse']}"
            if config.get("compare_fail_if_worse") is not None
            else ""
        ),
    shell:
        "infbench compare {input.baseline:q} . --out results/compare {params.fail} > {log} 2>&1"

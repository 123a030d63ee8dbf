# This run against another: `snakemake --cores all compare --config compare_to=A`, where A is a
# bundle (.tar.gz) or a results folder; A is the baseline, this run is B (infbench compare A .).
# Asking for `compare` brings this run up to date first; it is not part of `all`.


def compare_baseline(wildcards):
    """The run to compare with, from --config compare_to (a clear error when it is not set)."""
    baseline = config.get("compare_to") or ""
    if not baseline:
        raise ValueError(
            "compare needs the run to compare with: snakemake --cores all compare --config "
            "compare_to=BUNDLE_OR_RESULTS_FOLDER"
        )
    return baseline


# Compare this run with compare_to: A, B, change %, 95% interval and verdict per cell and metric.
rule compare:
    input:
        baseline=compare_baseline,
        tables=rules.merge.output,
        provenance=rules.provenance.output,
        records=all_raw_records(),
        servers=all_server_files(),
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

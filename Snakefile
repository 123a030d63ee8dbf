# infbench: benchmark LLM inference engines on a matrix of models x engines.
#   snakemake --cores all                                   CPU default (config/config.yaml)
#   snakemake --cores all --resources gpu=2 --configfile config/seed.yaml
# See README.md for the steps and config/README.md for every config key.

from snakemake.utils import min_version

min_version("9.0")

# A --configfile replaces the CPU default instead of being merged into it (seed.yaml is complete).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# On a cluster (snakemake --profile profiles/slurm) these light steps run where snakemake runs
# instead of waiting in the queue; the bench, env, model, prompts and memory estimate jobs are submitted.
localrules:
    all,
    engine_spec,
    model_spec,
    scenario_spec,
    seeded_trace,
    merge,
    memory_table,
    plots,
    provenance,
    report_pages,
    bundle,
    compare,


include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/envs.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/specs.smk"
include: "workflow/rules/requests.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/memory.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/compare.smk"


# Shown on the first page of `snakemake --report results/report.html`.
report: "workflow/report/workflow.rst"


rule all:
    input:
        "results/tables/inference_speed.md",
        "results/tables/throughput.md",
        "results/tables/details.md",
        "results/tables/workloads.md",
        "results/tables/memory.md",
        "results/provenance.json",
        rules.plots.output,
        rules.report_pages.output,
        # Targets too: a deleted or cleaned-up raw record is measured again (and the tables remade),
        # not left behind up-to-date tables.
        all_raw_records(),
        all_server_files(),


# A failed bench job still writes its outputs (so the merge runs and the tables show the failure);
# the run as a whole then ends with exit code 1 and says what to do.
onsuccess:
    failed = failed_bench_jobs()
    if failed:
        print(f"infbench: {len(failed)} bench job(s) failed; the tables show them as 'failed':", file=sys.stderr)
        for engine, model, reason in failed:
            print(f"  {engine} on {model}: {reason} (logs/bench/{engine}/{model}.log)", file=sys.stderr)
        print(
            "fix the cause, then run the same command again: only these jobs (and the tables) are redone",
            file=sys.stderr,
        )
        sys.exit(1)

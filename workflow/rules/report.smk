# Plots, provenance and the HTML pages of the Snakemake report (snakemake --report results/report.html).

from infbench.results.plots import PLOT_FILES
from infbench.results.workloadplots import WORKLOAD_PLOT_FILES
from infbench.results.redact import redact_config

REPORT_TABLES = ["inference_speed", "throughput", "details", "workloads", "memory"]


# Plot tokens/s per model and engine, TTFT and latency CDFs and throughput per engine.
rule plots:
    input:
        records=all_raw_records(),
        servers=all_server_files(),
        plan=layout.MERGE_PLAN,
    output:
        [
            report(
                f"results/plots/{name}",
                category="Plots",
                caption=f"../report/{name.removesuffix('.png')}.rst",
                labels={"plot": name.removesuffix(".png").replace("_", " ")},
            )
            for name in (*PLOT_FILES, *WORKLOAD_PLOT_FILES)
        ],
    log:
        "logs/report/plots.log",
    shell:
        f"infbench plots --raw-dir {layout.RAW} --plan {{input.plan}} --out-dir {layout.PLOTS} > {{log}} 2>&1"


# Record what ran, on what and when: git, redacted config, locks, hashes, hardware, versions, times.
rule provenance:
    input:
        tables=[
            f"results/tables/{name}"
            for name in (
                "inference_speed.md",
                "throughput.md",
                "details.md",
                "workloads.md",
                "summary.csv",
                "merge_plan.json",
                "memory.md",
            )
        ],
        locks=sorted({f"results/envs/{engine_env(e)}.lock" for e in ENGINES if engine_env(e)}),
        models=[f"results/models/{m}.json" for m in MODELS],
        prompts=f"results/prompts/{PROMPTS_NAME}.meta.json",
        servers=all_server_files(),
        records=all_raw_records(),
        bandwidth=layout.BANDWIDTH,
    output:
        report(
            "results/provenance.json",
            category="Provenance",
            caption="../report/provenance.rst",
            labels={"file": "provenance.json (machine-readable)"},
        ),
    log:
        "logs/report/provenance.log",
    params:
        # Redacted here already, and handed over in a file: never on a command line or in a log.
        # (a function, so that braces in the config, e.g. an openai command's {port}, stay as they are)
        # compare_* only say what `compare` compares this run with: not part of the run (a new baseline
        # must not make the provenance, and so the run, out of date).
        config=lambda wildcards: json.dumps(
            redact_config({k: v for k, v in config.items() if not k.startswith("compare_")}), sort_keys=True
        ),
    run:
        with handoff_file(params.config) as config_file:
            shell(
                "infbench provenance --config {config_file:q} --tables {input.tables} --locks {input.locks} "
                "--models {input.models} --prompts-meta {input.prompts} --servers {input.servers} "
                "--records {input.records} --bandwidth {input.bandwidth} --out {output} > {log} 2>&1"
            )


# Render each table and the provenance as HTML, so the report shows them inline.
rule report_pages:
    input:
        tables=[f"results/tables/{name}.md" for name in REPORT_TABLES],
        provenance="results/provenance.json",
    output:
        [
            report(f"results/report/{name}.html", category="Tables", labels={"table": name.replace("_", " ")})
            for name in REPORT_TABLES
        ],
        report("results/report/provenance.html", category="Provenance", labels={"file": "provenance (read me)"}),
    log:
        "logs/report/pages.log",
    shell:
        "infbench report-pages --tables {input.tables} --provenance {input.provenance} "
        "--out-dir results/report > {log} 2>&1"

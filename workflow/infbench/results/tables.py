"""Merge raw records into the study's tables with polars.

results/tables/inference_speed.md  models x engines, mean tokens/s at concurrency 1
results/tables/throughput.md       models x engines, requests/min under a closed loop
results/tables/details.md          every (engine, model, scenario): n, errors, percentiles
results/tables/workloads.md        capacity at an SLO, conversations per turn, shared prefix, sizes, trace replay
results/tables/summary.csv         the same figures, machine-readable
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import polars as pl

from infbench import layout
from infbench.fileio import write_text_atomic
from infbench.handoff import MergePlan
from infbench.layout import repeat_dirs
from infbench.measure.metrics import RUN, SUMMARY_FIELDS, request_metrics, scenario_summaries, summarize_runs
from infbench.measure.recordframe import RECORD_SCHEMA, read_runs
from infbench.results import bounds, conditions, routing, runstatus, servertables, tablestats, workloads
from infbench.results.redact import redact_argv, redact_url

# Per request, what the workload sections read: timed steps' saturation, conversation turns, planned
# prompt sizes, capacity verdicts, the cache state and the prompt tokens served from a cache.
WORKLOAD_COLUMNS = [
    "cache",
    "cached_prompt_tokens",
    "saturated",
    "offered_rate",
    "achieved_rate",
    "conversation",
    "turn",
    "planned_prompt_tokens",
    "step_passed",
    "slo",
    "send_time",
]
# Per request, what the tables and plots need beyond the summaries (the cross-engine checks, CDFs).
REQUEST_COLUMNS = [
    "prompt_id",
    "ok",
    "tokens_per_s",
    "ttft_s",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "max_tokens",
    "concurrency",
    "rate",
    "output_length",
    "tokens_counted_by",
    "chunk_tokens_counted_by",
    "chunk_tokens_sum",
    *WORKLOAD_COLUMNS,
]


# Runs are summarized together up to this many bytes of raw JSONL (about 30,000 records of long
# completions): few queries, and memory bounded however many records a results folder holds.
BATCH_BYTES = 100_000_000


def load_summaries(raw_dir: Path, plan: MergePlan) -> tuple[pl.DataFrame, dict, pl.DataFrame, pl.DataFrame]:
    """One summary row per (engine, model, scenario), followed by a row per step of a sweep (its
    step_rate set; WHOLE picks the others), in the plan's order; each run's
    server.json; one row per request (REQUEST_COLUMNS, under the run's engine, model and scenario,
    with the engine and model the record itself names as record_engine and record_model); and one row
    per pass (engine, model, scenario, repeat and REPEAT_FIGURES). Records come from each JSONL's
    Parquet copy where it is usable, else from the JSONL (recordframe.py).

    A scenario with repeats (results/raw/E/M/repeat-K) is summarized over the requests of all its
    passes; the figures over a pass's wall time (requests/min, output tokens/s) are the mean of the
    passes', since the time between passes is no part of any."""
    servers = runstatus.read_servers(raw_dir, plan.engines, plan.models, plan.passes)
    cells, runs, cell_of, repeat_no = [], [], [], []
    for engine in plan.engines:
        for model in plan.models:
            folders = repeat_dirs(raw_dir / engine / model)
            for scenario in plan.runs(engine):
                for repeat, folder in folders:
                    path = layout.records_in(folder, scenario)
                    if repeat == 1 or (repeat <= plan.passes(scenario) and path.exists()):
                        runs.append((engine, model, scenario, path))
                        cell_of.append(len(cells))
                        repeat_no.append(repeat)
                cells.append((engine, model, scenario))
    sweeps = [
        cell
        for cell, (_, _, scenario) in enumerate(cells)  # and a row per step (each offered rate)
        if scenario in plan.scenarios and routing.scenario_class(plan, scenario).has_steps
    ]
    names = pl.DataFrame(
        {
            RUN: range(len(cells)),
            "run_engine": [c[0] for c in cells],
            "run_model": [c[1] for c in cells],
            "run_scenario": [c[2] for c in cells],
        },
        schema_overrides={RUN: pl.Int32},
    )
    columns = list(dict.fromkeys([*SUMMARY_FIELDS, *RECORD_COLUMNS]))
    repeated = len(runs) > len(cells)

    figures: dict = {}  # per (cell, step): all passes together
    per_pass: dict = {}  # per (run, None): one pass (only when some scenario has repeats)
    requests: list[pl.DataFrame] = []
    for batch in _batches(runs, cell_of):
        frame = read_runs([runs[run][3] for run in batch], columns, RUN).with_columns(pl.col(RUN) + batch[0])
        by_cell = frame.with_columns(
            pl.col(RUN).replace_strict(list(batch), [cell_of[run] for run in batch], return_dtype=pl.Int32)
        )
        batch_cells = {cell_of[run] for run in batch}
        figures.update(summarize_runs(by_cell.lazy(), [cell for cell in sweeps if cell in batch_cells]))
        if repeated:
            per_pass.update(summarize_runs(frame.lazy(), []))
        requests.append(
            request_metrics(by_cell.lazy())
            .join(names.lazy(), on=RUN, how="left", maintain_order="left")
            .select(*REQUEST_KEYS, *REQUEST_COLUMNS)
            .collect()
        )

    def own(run: int) -> dict:  # one pass's own figures (a cell of one pass: the cell's)
        return (per_pass.get((run, None)) if repeated else figures.get((cell_of[run], None))) or {}

    passes = pl.DataFrame(
        [
            {"engine": e, "model": m, "scenario": s, "repeat": repeat_no[run]}
            | {f: own(run).get(f) for f in REPEAT_FIGURES}
            for run, (e, m, s, _) in enumerate(runs)
        ],
        schema={"engine": pl.String, "model": pl.String, "scenario": pl.String, "repeat": pl.Int32}
        | {f: pl.Float64 for f in REPEAT_FIGURES},
    )
    rows = [
        asdict(s)
        for cell, (engine, model, scenario) in enumerate(cells)
        for s in scenario_summaries(figures, cell, engine, model, scenario)
    ]
    if repeated:
        _pass_means(rows, passes)
    summaries = pl.DataFrame(rows, infer_schema_length=None)
    return summaries, servers, pl.concat(requests) if requests else _no_requests(), passes


# The figures over a pass's wall time: with repeats, a cell shows the mean of its passes'.
REPEAT_FIGURES = ["requests_per_min", "output_tokens_per_s", "wall_time_s", "goodput_rps"]


def _pass_means(rows: list[dict], passes: pl.DataFrame) -> None:
    """Each whole-scenario row of a cell with several passes gets its passes' mean of REPEAT_FIGURES."""
    means = {
        (row["engine"], row["model"], row["scenario"]): row
        for row in passes.group_by("engine", "model", "scenario")
        .agg(pl.len().alias("passes"), *(pl.col(f).mean() for f in REPEAT_FIGURES))
        .filter(pl.col("passes") > 1)
        .iter_rows(named=True)
    }
    for row in rows:
        mean = means.get((row["engine"], row["model"], row["scenario"]))
        if mean and row.get("step_rate") is None:
            row.update({f: mean[f] for f in REPEAT_FIGURES})


def _batches(runs: list[tuple[str, str, str, Path]], cell_of: list[int]) -> list[range]:
    """Consecutive runs in batches of up to BATCH_BYTES of raw JSONL (a larger run is a batch alone);
    the passes of one cell stay in one batch (they are summarized together)."""
    batches, start, size = [], 0, 0
    for run, (*_, path) in enumerate(runs):
        file_size = path.stat().st_size if path.exists() else 0
        if run > start and size + file_size > BATCH_BYTES and cell_of[run] != cell_of[run - 1]:
            batches.append(range(start, run))
            start, size = run, 0
        size += file_size
    if runs:
        batches.append(range(start, len(runs)))
    return batches


# The record fields behind REQUEST_KEYS and REQUEST_COLUMNS.
RECORD_COLUMNS = [
    "engine",
    "model",
    "prompt_id",
    "max_tokens",
    "output_length",
    "tokens_counted_by",
    *WORKLOAD_COLUMNS,
]
REQUEST_KEYS = [
    pl.col("run_engine").alias("engine"),
    pl.col("run_model").alias("model"),
    pl.col("run_scenario").alias("scenario"),
    pl.col("engine").alias("record_engine"),
    pl.col("model").alias("record_model"),
]


def _no_requests() -> pl.DataFrame:
    empty = pl.DataFrame(schema=RECORD_SCHEMA).with_columns(
        run_engine=pl.lit(None, pl.String), run_model=pl.lit(None, pl.String), run_scenario=pl.lit(None, pl.String)
    )
    return request_metrics(empty.lazy()).select(*REQUEST_KEYS, *REQUEST_COLUMNS).collect()


WHOLE = pl.col("step_rate").is_null()  # summary rows of whole scenarios, not of a sweep's steps


def labelled(df: pl.DataFrame) -> pl.DataFrame:
    """The summaries as the files show them: a sweep step's row is scenario `NAME@RATE` (no step_rate column)."""
    labels = [
        scenario if rate is None else f"{scenario}@{rate:g}"
        for scenario, rate in df.select("scenario", "step_rate").iter_rows()
    ]
    return df.with_columns(pl.Series("scenario", labels, pl.String)).drop("step_rate")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pivot_markdown(
    df: pl.DataFrame,
    plan: MergePlan,
    servers: dict,
    scenario: str,
    column: str,
    title: str,
    samples: dict[tuple[str, str], tablestats.CellSample],
) -> str:
    """Models as rows, engines as columns, each cell with its 95% interval; bold what is
    significantly best in its row, or tied with the best (tablestats.row_bold); notes under the table."""
    labels = list(plan.engines.values())
    lines = [f"## {title}", "", " | ".join(["Model", *labels]), " | ".join(["---"] * (len(labels) + 1))]
    part = df.filter(pl.col("scenario") == scenario)
    row_notes, missing, numbers = [], {}, 0
    for model, model_label in plan.models.items():
        values = {
            engine: part.filter((pl.col("model") == model) & (pl.col("engine") == engine))[column].item()
            for engine in plan.engines
        }
        values = {e: None if runstatus.failed_cell(servers[(e, model)]) else v for e, v in values.items()}
        cell_samples = {
            e: replace(samples[(e, model)], marked=_marks(part, servers, e, model, scenario))
            for e in plan.engines
            if (e, model) in samples
        }
        decision = tablestats.row_bold(values, cell_samples, plan.engines)
        if decision.note:
            row_notes.append((model_label, decision.note))
        cells = []
        for engine in plan.engines:
            value = values[engine]
            interval = cell_samples[engine].interval if engine in cell_samples else None
            server = servers[(engine, model)]
            skipped = server.status == "skipped"
            text = server.reason if skipped else tablestats.cell_text(value, interval)
            numbers += value is not None
            if value is not None and interval is not None and interval.half_width is None:
                missing.setdefault(interval.note, []).append(f"{plan.engines[engine]} ({model_label})")
            text = f"**{text}**" if engine in decision.bold else text
            if server.external and value is not None:
                text += " (external endpoint)"  # not started here: its machine and load are unknown
            if _lag_flagged(part, engine, model):
                text += LAG_MARK  # the client's own lag passed its limit: see the footer
            if servertables.mismatch_flagged(part, engine, model):
                text += servertables.MISMATCH_MARK  # the server counted otherwise: see the footer
            if conditions.cache_flagged(part, engine, model, server):
                text += conditions.CACHE_MARK  # declared cold, yet served from a cache: see the footer
            text = runstatus.failed_cell(server) or text  # never a failed job's number
            if runstatus.busy(server, scenario):
                text += runstatus.BUSY_MARK  # others used the machine meanwhile: see the footer
            cells.append(text)
        lines.append(" | ".join([model_label, *cells]))
    unit = next(iter(samples.values())).unit if samples else tablestats.MAIN_FIGURES[column][0]
    lines += tablestats.table_notes(unit, row_notes, missing, numbers)
    return "\n".join(lines) + "\n"


def _marks(part: pl.DataFrame, servers: dict, engine: str, model: str, scenario: str) -> tuple[str, ...]:
    """Why a cell may not be bold alone: failed requests, client lag, the server's own count, a busy machine."""
    row = part.filter((pl.col("model") == model) & (pl.col("engine") == engine))
    marks = ["failed requests"] if row.height == 1 and (row["errors"].item() or 0) > 0 else []
    marks += ["client lag"] if _lag_flagged(part, engine, model) else []
    marks += ["server count differs"] if servertables.mismatch_flagged(part, engine, model) else []
    marks += ["busy machine"] if runstatus.busy(servers[(engine, model)], scenario) else []
    marks += ["cache not cold"] if conditions.cache_flagged(part, engine, model, servers[(engine, model)]) else []
    return tuple(marks)


def _footer(
    df: pl.DataFrame, plan: MergePlan, servers: dict, scenarios: list[str], requests: pl.DataFrame | None = None
) -> str:
    lines = ["", "Engines:"]
    for engine, label in plan.engines.items():
        for model in plan.models:
            server = servers[(engine, model)]
            if server.status == "skipped":
                lines.append(f"- {label} ({model}): not run, {server.reason}")
                continue
            version = server.version or "unknown"
            command = " ".join(redact_argv(server.command)) or "n/a"
            if server.external:
                command = f"external endpoint {redact_url(server.base_url or '')}"
            lines.append(f"- {label} {version} ({model}): `{command}`")
            settings = server.settings
            if settings:  # what matters for speed: threads, binding, batching, KV cache, graphs
                lines.append("  settings: " + "; ".join(f"{k}: {v}" for k, v in settings.items()))
    failed = df.filter(pl.col("scenario").is_in(scenarios) & (pl.col("errors") > 0))
    for row in failed.iter_rows(named=True):
        lines.append(
            f"- WARNING: {row['engine']}/{row['model']}/{row['scenario']}: "
            f"{row['errors']} of {row['n']} requests failed"
        )
    lines += client_lag_warnings(df.filter(pl.col("scenario").is_in(scenarios)))
    lines += servertables.mismatch_warnings(df.filter(pl.col("scenario").is_in(scenarios)))
    lines += conditions.cache_warnings(df.filter(pl.col("scenario").is_in(scenarios)), servers)
    if requests is not None:
        lines += conditions.completion_length_notes(df, requests, scenarios)
    lines += runstatus.failure_lines(servers, plan.engines, list(plan.models))
    lines += runstatus.busy_warnings(servers, plan.engines, list(plan.models), scenarios)
    return "\n".join(lines) + "\n"


LAG_MARK = "*"  # a footnote mark: the cell stays a number for anyone parsing the table


def _lag_flagged(part: pl.DataFrame, engine: str, model: str) -> bool:
    row = part.filter((pl.col("model") == model) & (pl.col("engine") == engine))
    return "client_lag_flag" in row.columns and row.height == 1 and bool(row["client_lag_flag"].item())


def client_lag_warnings(df: pl.DataFrame) -> list[str]:
    """One line per flagged run: how far the client's own delay could move its figures."""
    if "client_lag_flag" not in df.columns:
        return []
    return [
        f"- WARNING ({LAG_MARK}): {row['engine']}/{row['model']}/{row['scenario']}: the client's own lag could "
        f"move tokens/s, requests/min and latency by up to {_pct(row['client_lag_share'])} and TTFT by up to "
        f"{_pct(row['client_lag_ttft_share'])} (limit {_pct(row['client_lag_share_limit'])}; dispatch lag p99 "
        f"{_detail_cell(row['dispatch_lag_p99_s'], -3)} ms, read lag p99 {_detail_cell(row['read_lag_p99_s'], -3)} ms)"
        for row in df.filter(pl.col("client_lag_flag")).iter_rows(named=True)
    ]


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.2f}%"


def speed_table(df, plan: MergePlan, servers, samples: dict, requests: pl.DataFrame | None = None) -> str:
    singles = routing.scenarios_where(plan, "in_speed_table")
    parts = [
        "# Generative inference speed",
        "",
        "Mean tokens/s of a single request (completion tokens / full round trip). Bigger is better.",
        "",
    ]
    for scenario in singles:
        n = int(df.filter(pl.col("scenario") == scenario)["n"].max() or 0)
        parts.append(
            pivot_markdown(
                df,
                plan,
                servers,
                scenario,
                "tokens_per_s_mean",
                f"Inference speed (tokens/s), scenario {scenario}, {n} prompts{conditions.cache_title(df, scenario)}",
                samples[scenario],
            )
        )
    return "\n".join(parts) + _footer(df, plan, servers, singles, requests)


def throughput_table(df, plan: MergePlan, servers, samples: dict, requests: pl.DataFrame | None = None) -> str:
    loads = routing.scenarios_where(plan, "in_throughput_table")
    parts = [
        "# Generative inference throughput",
        "",
        "Completed requests per minute under a closed loop. Bigger is better.",
        "",
    ]
    for scenario in loads:
        part = df.filter(pl.col("scenario") == scenario)
        concurrency = int(part["concurrency"].max() or 0)
        parts.append(
            pivot_markdown(
                df,
                plan,
                servers,
                scenario,
                "requests_per_min",
                f"Throughput (requests/min), scenario {scenario}, concurrency {concurrency}"
                f"{conditions.cache_title(df, scenario)}",
                samples[scenario],
            )
        )
    return "\n".join(parts) + _footer(df, plan, servers, loads, requests)


DETAIL_COLUMNS = [
    ("engine", "engine", None),
    ("model", "model", None),
    ("scenario", "scenario", None),
    ("concurrency", "C", None),
    ("n", "n", None),
    ("errors", "errors", None),
    ("tokens_per_s_mean", "tok/s mean", 2),
    ("tokens_per_s_sd", "tok/s sd", 2),
    ("tokens_per_s_mean", "tok/s 95% CI", "ci"),
    ("requests_per_min", "req/min", 2),
    ("requests_per_min", "req/min 95% CI", "ci"),
    ("output_tokens_per_s", "out tok/s", 2),
    ("ttft_p50_s", "TTFT p50 ms", -3),
    ("ttft_p90_s", "TTFT p90 ms", -3),
    ("ttft_p99_s", "TTFT p99 ms", -3),
    ("tpot_p50_s", "TPOT p50 ms", -3),
    ("tpot_p90_s", "TPOT p90 ms", -3),
    ("tpot_p99_s", "TPOT p99 ms", -3),
    ("latency_p50_s", "latency p50 s", 3),
    ("latency_p90_s", "latency p90 s", 3),
    ("latency_p99_s", "latency p99 s", 3),
    ("prompt_tokens_mean", "prompt tok", 1),
    ("completion_tokens_mean", "completion tok", 1),
    conditions.CACHE_COLUMN,
    ("itl_p50_s", "ITL p50 ms", -3),
    ("itl_p99_s", "ITL p99 ms", -3),
    ("rate", "rate req/s", 2),
    ("goodput_rps", "goodput req/s", 2),
    ("dispatch_lag_p99_s", "dispatch lag p99 ms", -3),
    ("read_lag_p99_s", "read lag p99 ms", -3),
    ("connect_mean_s", "connect ms", -3),
    ("workers", "client procs", None),
    ("client_lag_share", "lag/latency %", "share"),
    ("client_lag_ttft_share", "lag/TTFT %", "share"),
    ("client_lag_flag", "client lag", "flag"),
]


def _detail_cell(value, digits) -> str:
    if digits == "flag":
        return "OVER LIMIT" if value else "ok"
    if digits == "share":
        return _pct(value)
    if digits is None:
        return str(value)
    if digits < 0:  # seconds shown as milliseconds
        return _fmt(None if value is None else value * 1000.0, 1)
    return _fmt(value, digits)


def prompt_token_mismatches(requests: pl.DataFrame) -> list[str]:
    """Engines must see the same prompt: differing prompt_tokens means differing chat templates."""
    counted = requests.filter(pl.col("ok") & pl.col("prompt_tokens").is_not_null())
    seen = counted.group_by("record_model", "prompt_id", "record_engine").agg(pl.col("prompt_tokens").unique().sort())
    differing = (
        counted.group_by("record_model", "prompt_id")
        .agg(distinct=pl.col("prompt_tokens").n_unique())
        .filter(pl.col("distinct") > 1)
    )
    out = []
    for model, prompt_id in differing.sort("record_model", "prompt_id").select("record_model", "prompt_id").iter_rows():
        part = seen.filter((pl.col("record_model") == model) & (pl.col("prompt_id") == prompt_id)).sort("record_engine")
        counts = ", ".join(
            f"{e}={'/'.join(map(str, n))}" for e, n in part.select("record_engine", "prompt_tokens").iter_rows()
        )
        out.append(f"- {model} / {prompt_id}: prompt_tokens differ ({counts})")
    return out


def output_length_check(requests: pl.DataFrame) -> list[str]:
    """In fixed mode every completion must be exactly max_tokens long; say where it was not."""
    fixed = requests.filter(pl.col("ok") & (pl.col("output_length") == "fixed"))
    if fixed.is_empty():
        modes = requests["output_length"].unique().sort().to_list() or ["natural"]
        return [f"Output length: {', '.join(modes)} (natural: each engine stops at EOS or max_tokens)."]
    off = (
        fixed.filter(pl.col("completion_tokens").ne_missing(pl.col("max_tokens")))
        .group_by("record_engine", "record_model")
        .len()
        .sort("record_engine", "record_model")
    )
    if off.is_empty():
        return [f"Output length: fixed; all {fixed.height} completions had exactly max_tokens tokens."]
    return ["Output length: fixed, but these completions were not max_tokens long:"] + [
        f"- WARNING: {engine}/{model}: {count} request(s)" for engine, model, count in off.iter_rows()
    ]


def details_table(df, requests: pl.DataFrame) -> str:
    steps = df.filter(~WHOLE)
    df = labelled(df)  # a sweep step's row names its rate: sweep@4
    columns = bounds.detail_columns(DETAIL_COLUMNS, df.columns)  # + decode bound columns when measured
    lines = [
        "# Details",
        "",
        "Per (engine, model, scenario). TTFT: first content token; TPOT: (latency - TTFT) / "
        "(completion tokens - 1); percentiles over successful requests. " + conditions.support_note(),
        "",
        " | ".join(label for _, label, _ in columns),
        " | ".join("---" for _ in columns),
    ]
    for row in df.iter_rows(named=True):
        lines.append(
            " | ".join(
                tablestats.ci_cell(row, key)
                if digits == "ci"
                else bounds.detail_cell(row, key, digits)
                if digits in bounds.CELL_KINDS
                else conditions.percentile_cell(row, key, _detail_cell(row[key], digits))
                for key, _, digits in columns
            )
        )
    lines += tablestats.interval_notes()
    lines += bounds.bound_notes(df)
    counted = (
        requests.filter(pl.col("tokens_counted_by").ne_missing("usage"))
        .select("record_engine", "tokens_counted_by")
        .unique()
        .sort("record_engine", "tokens_counted_by")
        .rows()
    )
    if counted:
        lines += ["", "Token counts not from the engine's usage: " + ", ".join(f"{e} ({how})" for e, how in counted)]
    lines += client_lag_section(df, requests)
    lines += sweep_lines(steps, requests)
    lines += ["", "## Output length", ""] + output_length_check(requests)
    mismatches = prompt_token_mismatches(requests)
    lines += ["", "## Prompt tokens across engines", ""]
    lines += mismatches or ["All engines counted the same prompt tokens for every prompt."]
    lengths = conditions.completion_token_mismatches(requests)
    if lengths:
        lines += ["", "## Completion tokens across engines (output length natural)", "", *lengths]
    return "\n".join(lines) + "\n"


def client_lag_section(df: pl.DataFrame, requests: pl.DataFrame) -> list[str]:
    """What the client columns mean, flagged runs, and where ITL could only be counted per chunk."""
    lines = [
        "",
        "## Client lag",
        "",
        "dispatch lag: how late requests were sent against their plan (latencies count from the plan); "
        "read lag: a bound on how long chunks waited unread in the client; p99 over requests. "
        "lag/latency and lag/TTFT: the share of the measured time that could be the client's own delay "
        "(per request its dispatch lag plus its largest read lag, summed, over the latencies or TTFTs summed), "
        "i.e. how far the client could have moved tokens/s, requests/min and latency, or TTFT. "
        f"Runs whose lag/latency passes bench.client_lag_share are marked {LAG_MARK} in the main tables.",
    ]
    lines += client_lag_warnings(df) or ["No run passed its client lag limit."]
    ttft = (
        df.filter(
            ~pl.col("client_lag_flag")
            & (pl.col("client_lag_ttft_share") > pl.col("client_lag_share_limit")).fill_null(False)
        )
        if "client_lag_ttft_share" in df.columns
        else df.clear()
    )
    for row in ttft.iter_rows(named=True):
        lines.append(
            f"- {row['engine']}/{row['model']}/{row['scenario']}: its TTFT figures could be off by up to "
            f"{_pct(row['client_lag_ttft_share'])} (client lag against short TTFTs)"
        )
    per_chunk = (
        requests.filter(
            pl.col("ok")
            & (pl.col("chunk_tokens_counted_by") == "one_per_chunk")
            & pl.col("completion_tokens").is_not_null()
            & (pl.col("completion_tokens") != pl.col("chunk_tokens_sum"))
        )["record_engine"]
        .unique()
        .sort()
        .to_list()
    )
    if per_chunk:
        lines += [
            "",
            "ITL per chunk, not per token (chunks carried several tokens but the engine did not say "
            "how many each): " + ", ".join(per_chunk),
        ]
    return lines


def saturated_steps(requests: pl.DataFrame) -> set[tuple[str, str, str, float]]:
    """(engine, model, scenario, offered rate) of every saturated timed step (loadgen.judge_window)."""
    rows = requests.filter(pl.col("saturated").fill_null(False)).select("engine", "model", "scenario", "rate")
    return set(rows.unique().iter_rows())


def sweep_lines(steps: pl.DataFrame, requests: pl.DataFrame) -> list[str]:
    """Per sweep, from its steps' summary rows: every rate tried, and the highest that met the SLOs
    (and was not saturated) with its goodput."""
    if steps.is_empty():
        return []
    saturated = saturated_steps(requests)
    lines = [
        "",
        "## Sweeps: the highest rate meeting the SLOs (TTFT and TPOT p99)",
        "",
        "engine | model | sweep | SLO TTFT ms | SLO TPOT ms | rates tried (req/s) | best rate req/s | goodput req/s",
        "--- | --- | --- | --- | --- | --- | --- | ---",
    ]
    for (engine, model, sweep), part in steps.group_by(["engine", "model", "scenario"], maintain_order=True):
        part = part.sort("step_rate")
        part = part.with_columns(
            saturated=pl.Series([(engine, model, sweep, rate) in saturated for rate in part["step_rate"]])
        )
        tried = ", ".join(
            f"{r:g}{' (saturated)' if sat else '' if ok else ' (fail)'}"
            for r, ok, sat in zip(part["step_rate"], part["slo_passed"], part["saturated"], strict=True)
        )
        passing = part.filter(pl.col("slo_passed") & ~pl.col("saturated"))
        best = passing.row(-1, named=True) if passing.height else None
        first = part.row(0, named=True)
        lines.append(
            " | ".join(
                [
                    engine,
                    model,
                    sweep,
                    _detail_cell(first["slo_ttft_s"], -3),
                    _detail_cell(first["slo_tpot_s"], -3),
                    tried,
                    _fmt(best["step_rate"]) if best else "none passed",
                    _fmt(best["goodput_rps"]) if best else "n/a",
                ]
            )
        )
    return lines


def merge(
    raw_dir: Path, tables_dir: Path, plan: MergePlan, bound_files: bounds.BoundFiles | None = None
) -> pl.DataFrame:
    """The tables of plan's runs under raw_dir (results/raw). bound_files: what the decode bounds
    read (the merge rule's inputs, or bounds.BoundFiles.under a workflow directory); None: none,
    so the tables show no bounds."""
    df, servers, requests, passes = load_summaries(raw_dir, routing.check_plan(plan))
    # The decode bound beside single-request tokens/s.
    df = bounds.with_bounds(df, bound_files or bounds.BoundFiles.none(), plan.scenarios)
    unrecorded = [s for s in plan.scenarios if not routing.scenario_class(plan, s).records_every_send]
    server = servertables.ServerView(raw_dir, plan.engines, plan.models, plan.scenarios, requests, unrecorded)
    df = server.with_columns(df)  # the server's own figures, where the bench job read them
    tables_dir.mkdir(parents=True, exist_ok=True)
    # Each main figure's units (per-prompt tokens/s, per-repeat requests/min) and 95% intervals.
    df, samples = tablestats.main_intervals(df, requests, passes, plan)
    # Build every table first, then write: a failure never leaves a mix of old and new tables.
    whole = df.filter(WHOLE)  # the main tables show whole scenarios; a sweep's steps are in details.md
    outputs = {
        "inference_speed.md": speed_table(whole, plan, servers, samples, requests),
        "throughput.md": throughput_table(whole, plan, servers, samples, requests),
        "details.md": details_table(df, requests)
        + "".join(line + "\n" for line in runstatus.machine_load_section(servers, plan.engines, list(plan.models)))
        + "".join(line + "\n" for line in server.details(labelled(df.filter(WHOLE)))),
    }
    outputs["workloads.md"] = workloads.workloads_table(df, requests, plan, servers)
    outputs["summary.csv"] = conditions.mask_unsupported(labelled(df)).write_csv()  # percentiles n supports
    # The plan itself, so that `infbench verify` can recompute these tables from a bundle's raw records.
    outputs["merge_plan.json"] = json.dumps(asdict(plan), indent=2) + "\n"
    for name, text in outputs.items():
        write_text_atomic(tables_dir / name, text)
    return df

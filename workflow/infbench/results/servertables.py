"""What the server saw, in the tables: reconciliation, server vs client latency, engine health, energy.

Reads each scenario's metrics/{scenario}.json (written by the bench job beside the records; see
measure/scrape.py). Runs recorded before server metrics existed have none: then nothing here shows,
and the tables are as they were.

- A scenario whose error-free counts differ from the server's is marked MISMATCH_MARK in the main
  tables (like the lag and busy marks), with a line naming both counts under the table and in
  details.md.
- summary.csv gets the server's figures as columns (`server_*`, `energy_*`, `reconcile`).
- details.md gets a section "What the server saw".
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from infbench.measure.reconcile import ClientCounts, Reconciliation, reconcile
from infbench.measure.servermetrics import ServerMetrics

MISMATCH_MARK = "≠"  # a footnote mark: the cell stays a number for anyone parsing the table

Key = tuple[str, str, str]  # engine, model, scenario


def metrics_file(raw_dir: Path, engine: str, model: str, scenario: str) -> Path:
    return raw_dir / engine / model / "metrics" / f"{scenario}.json"


def load_server_metrics(raw_dir: Path, engines, models, scenarios) -> dict[Key, ServerMetrics]:
    found = {}
    for engine in engines:
        for model in models:
            for scenario in scenarios:
                path = metrics_file(raw_dir, engine, model, scenario)
                if path.exists():
                    found[(engine, model, scenario)] = ServerMetrics.read(path)
    return found


def client_counts(requests: pl.DataFrame, unrecorded: frozenset[str] = frozenset()) -> dict[Key, ClientCounts]:
    """Per scenario, from the merge's per-request rows (tables.REQUEST_COLUMNS); `unrecorded`: the
    scenarios that send requests they do not record (timed steps' warm-up windows)."""
    out = {}
    for (engine, model, scenario), part in requests.group_by(["engine", "model", "scenario"]):
        ok = part.filter(pl.col("ok"))
        by_usage = ok.filter(pl.col("tokens_counted_by") == "usage")
        complete = by_usage.height == ok.height
        # the client's own count, where it knew the tokens of its chunks (older records may not)
        chunks = ok.select(
            pl.when((pl.col("chunk_tokens_sum") > 0) | (pl.col("completion_tokens").fill_null(0) == 0))
            .then(pl.col("chunk_tokens_sum"))
            .otherwise(None)
        ).to_series()
        out[(engine, model, scenario)] = ClientCounts(
            requests=part.height,
            ok=ok.height,
            usage_completion_tokens=int(ok["completion_tokens"].fill_null(0).sum()) if complete else None,
            usage_prompt_tokens=int(ok["prompt_tokens"].sum())
            if complete and ok["prompt_tokens"].null_count() == 0
            else None,
            chunk_tokens=int(chunks.sum()) if chunks.null_count() == 0 and ok.height else None,
            unrecorded_sends=scenario in unrecorded,
        )
    return out


def client_means(requests: pl.DataFrame) -> dict[Key, dict[str, float | None]]:
    """Mean TTFT and latency of the successful requests per scenario: beside the server's exact means
    (a histogram's sum over its count), the difference needs no bucket interpolation."""
    means = (
        requests.filter(pl.col("ok"))
        .group_by(["engine", "model", "scenario"])
        .agg(ttft=pl.col("ttft_s").mean(), e2e=pl.col("latency_s").mean())
    )
    return {(e, m, s): {"ttft": ttft, "e2e": e2e} for e, m, s, ttft, e2e in means.iter_rows()}


def reconciliations(metrics: dict[Key, ServerMetrics], counts: dict[Key, ClientCounts]) -> dict[Key, Reconciliation]:
    return {key: reconcile(counts[key], server) for key, server in metrics.items() if key in counts}


def mismatch_flagged(part: pl.DataFrame, engine: str, model: str) -> bool:
    """From one scenario's summary rows (with_server_columns): did this cell's counts differ?"""
    if "reconcile" not in part.columns:
        return False
    row = part.filter((pl.col("model") == model) & (pl.col("engine") == engine))
    return row.height == 1 and row["reconcile"].item() == "MISMATCH"


def mismatch_warnings(df: pl.DataFrame) -> list[str]:
    """Under a main table and in details.md: one line per mismatched scenario, naming both counts."""
    if "reconcile" not in df.columns:
        return []
    return [
        f"- WARNING ({MISMATCH_MARK}): {row['engine']}/{row['model']}/{row['scenario']}: the server's counts "
        f"differ from the client's in an error-free scenario: {row['reconcile_note']}"
        for row in df.filter(pl.col("reconcile") == "MISMATCH").iter_rows(named=True)
    ]


class ServerView:
    """The run's server metrics, the client's counts and their reconciliation, loaded once by the merge."""

    def __init__(self, raw_dir: Path, engines, models, scenarios, requests: pl.DataFrame, unrecorded=frozenset()):
        self.metrics = load_server_metrics(raw_dir, engines, models, scenarios)
        self.counts = client_counts(requests, frozenset(unrecorded)) if self.metrics else {}
        self.means = client_means(requests) if self.metrics else {}
        self.recs = reconciliations(self.metrics, self.counts)

    def with_columns(self, df: pl.DataFrame) -> pl.DataFrame:
        return with_server_columns(df, self.metrics, self.recs)

    def details(self, df: pl.DataFrame) -> list[str]:
        return details_section(df, self.metrics, self.recs, self.counts, self.means)


SERVER_COLUMNS = {
    "server_metrics": pl.String,  # ok | n/a | missing | invalid
    "server_ttft_p50_s": pl.Float64,
    "server_ttft_p99_s": pl.Float64,
    "server_ttft_mean_s": pl.Float64,  # exact: the histogram's sum over its count
    "server_e2e_mean_s": pl.Float64,
    "server_queue_p50_s": pl.Float64,
    "server_prefill_p50_s": pl.Float64,
    "server_decode_p50_s": pl.Float64,
    "server_e2e_p50_s": pl.Float64,
    "server_e2e_p99_s": pl.Float64,
    "server_generation_tokens": pl.Float64,
    "server_prompt_tokens": pl.Float64,
    "server_requests_ok": pl.Float64,
    "reconcile": pl.String,  # match | MISMATCH | not judged | n/a
    "reconcile_note": pl.String,  # the differing counts, or why not judged
    "peak_running": pl.Float64,
    "peak_waiting": pl.Float64,
    "peak_kv_usage": pl.Float64,
    "preemptions": pl.Float64,
    "prefix_cache_hit_rate": pl.Float64,
    "energy_j": pl.Float64,
    "energy_j_per_output_token": pl.Float64,
    "energy_avg_w": pl.Float64,
    "energy_method": pl.String,  # the method of each cell, or n/a: why
}


def server_row(server: ServerMetrics, rec: Reconciliation | None) -> dict:
    quantile = {role: server.quantiles(role) for role in ("ttft", "queue", "prefill", "decode", "e2e")}
    energy = server.energy or {}
    verdict = "n/a"
    if rec is not None and server.status != "n/a":  # no endpoint: nothing to judge
        verdict = "MISMATCH" if rec.mismatch else "match" if rec.judged else "not judged"
    return {
        "server_metrics": server.status,
        "server_ttft_p50_s": quantile["ttft"][0.5],
        "server_ttft_p99_s": quantile["ttft"][0.99],
        "server_ttft_mean_s": _mean(server, "ttft"),
        "server_e2e_mean_s": _mean(server, "e2e"),
        "server_queue_p50_s": quantile["queue"][0.5],
        "server_prefill_p50_s": quantile["prefill"][0.5],
        "server_decode_p50_s": quantile["decode"][0.5],
        "server_e2e_p50_s": quantile["e2e"][0.5],
        "server_e2e_p99_s": quantile["e2e"][0.99],
        "server_generation_tokens": server.counters.get("generation_tokens"),
        "server_prompt_tokens": server.counters.get("prompt_tokens"),
        "server_requests_ok": server.counters.get("requests_ok"),
        "reconcile": verdict,
        "reconcile_note": None if rec is None else "; ".join(rec.lines()) or rec.note,
        "peak_running": server.gauges.running_max,
        "peak_waiting": server.gauges.waiting_max,
        "peak_kv_usage": server.gauges.kv_usage_max,
        "preemptions": server.counters.get("preemptions"),
        "prefix_cache_hit_rate": server.prefix_cache_hit_rate,
        "energy_j": energy.get("joules"),
        "energy_j_per_output_token": energy.get("joules_per_output_token"),
        "energy_avg_w": energy.get("average_watts"),
        "energy_method": energy.get("method") if energy.get("joules") is not None else _energy_na(energy),
    }


def _mean(server: ServerMetrics, role: str) -> float | None:
    hist = server.histogram(role)
    return hist.mean if hist else None


def _energy_na(energy: dict) -> str | None:
    return f"n/a: {energy['reason']}" if energy.get("reason") else None


def with_server_columns(df: pl.DataFrame, metrics: dict[Key, ServerMetrics], recs) -> pl.DataFrame:
    """The summaries with the server's figures as columns; unchanged when no run has server metrics."""
    if not metrics:
        return df
    rows = [
        {"engine": e, "model": m, "scenario": s, **server_row(server, recs.get((e, m, s)))}
        for (e, m, s), server in metrics.items()
    ]
    schema = {"engine": pl.String, "model": pl.String, "scenario": pl.String, **SERVER_COLUMNS}
    extra = pl.DataFrame(rows, schema=schema)
    if "step_rate" in df.columns:  # a sweep's step rows are parts of the scenario: the figures are the whole's
        extra = extra.with_columns(step_rate=pl.lit(None, df.schema["step_rate"]))
    keys = [k for k in ("engine", "model", "scenario", "step_rate") if k in extra.columns]
    return df.join(extra, on=keys, how="left", maintain_order="left", nulls_equal=True)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.1f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _diff_ms(client: float | None, server: float | None) -> str:
    return "n/a" if client is None or server is None else f"{(client - server) * 1e3:+.1f}"


def details_section(df: pl.DataFrame, metrics: dict[Key, ServerMetrics], recs, counts, means=None) -> list[str]:
    """details.md's "What the server saw" (df: the summaries with_server_columns); nothing when no run
    has server metrics."""
    if not metrics:
        return []
    lines = ["", "## What the server saw", ""]
    no_endpoint = sorted({(e, s.note) for (e, _, _), s in metrics.items() if s.status == "n/a"})
    lines += [f"- {engine}: {note}" for engine, note in no_endpoint]  # once per engine, not per cell
    measured = {k: v for k, v in metrics.items() if v.status != "n/a"}
    for (engine, model, scenario), server in measured.items():
        if server.status != "ok" or server.note:
            lines.append(f"- {engine}/{model}/{scenario}: server metrics {server.status}: {server.note}")
    maps = sorted({(k[0], v.checked_on, tuple(v.mapping_notes)) for k, v in measured.items() if v.checked_on})
    lines += [
        f"- {engine}: metric names as checked on {checked}" + "".join(f"; {note}" for note in notes)
        for engine, checked, notes in maps
    ]
    if measured:
        lines += _reconciliation_table(measured, recs, counts)
        lines += _latency_table(df, measured, means or {})
        lines += _health_table(measured)
    lines += _energy_table(metrics)
    lines += [""] + (mismatch_warnings(df) or ["No count mismatch between client and server."])
    return lines


def _reconciliation_table(measured, recs, counts) -> list[str]:
    lines = [
        "",
        "### Counts: client vs usage vs server",
        "",
        "Completion tokens as the client counted them in the stream (chunks; an EOS token that ends a request "
        "is counted by `usage` but never streamed), as the responses' `usage` said, and as the server's counter "
        "grew; prompt tokens from `usage` and the server; completed "
        f"requests. An error-free scenario must match exactly (else {MISMATCH_MARK} in the main tables).",
        "",
        "engine | model | scenario | requests ok (client / server) | completion tokens (chunks / usage / server) "
        "| prompt tokens (usage / server) | verdict",
        "--- | --- | --- | --- | --- | --- | ---",
    ]
    for key, server in measured.items():
        client, rec = counts.get(key), recs.get(key)
        c = server.counters
        verdict = (
            "n/a"
            if rec is None
            else "MISMATCH"
            if rec.mismatch
            else "match"
            if rec.judged
            else f"not judged: {rec.note}"
        )
        lines.append(
            " | ".join(
                [
                    *key,
                    f"{_num(client.ok if client else None)} / {_num(c.get('requests_ok'))}",
                    f"{_num(client.chunk_tokens if client else None)} / "
                    f"{_num(client.usage_completion_tokens if client else None)} / {_num(c.get('generation_tokens'))}",
                    f"{_num(client.usage_prompt_tokens if client else None)} / {_num(c.get('prompt_tokens'))}",
                    verdict,
                ]
            )
        )
    return lines


def _latency_table(df: pl.DataFrame, measured, means) -> list[str]:
    lines = [
        "",
        "### Latency: server vs client",
        "",
        "Server means are exact (a histogram's sum over its count); server percentiles are interpolated within "
        "its buckets (exact only to the bucket bounds); client figures are exact. Difference = client - server: "
        "the network and client overhead (for percentiles, plus the bucket error).",
        "",
        "engine | model | scenario | TTFT mean ms (client / server / diff) | latency mean ms (client / server / diff) "
        "| TTFT p50 ms (client / server) | TTFT p99 ms (client / server) | latency p50 ms (client / server) "
        "| queue p50 ms | prefill p50 ms | decode p50 ms",
        "--- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ---",
    ]
    for (engine, model, scenario), server in measured.items():
        row = df.filter((pl.col("engine") == engine) & (pl.col("model") == model) & (pl.col("scenario") == scenario))
        client = row.row(0, named=True) if row.height else {}
        mean = means.get((engine, model, scenario), {})
        q = {role: server.quantiles(role) for role in ("ttft", "queue", "prefill", "decode", "e2e")}
        ttft_mean, e2e_mean = _mean(server, "ttft"), _mean(server, "e2e")
        lines.append(
            " | ".join(
                [
                    engine,
                    model,
                    scenario,
                    f"{_ms(mean.get('ttft'))} / {_ms(ttft_mean)} / {_diff_ms(mean.get('ttft'), ttft_mean)}",
                    f"{_ms(mean.get('e2e'))} / {_ms(e2e_mean)} / {_diff_ms(mean.get('e2e'), e2e_mean)}",
                    f"{_ms(client.get('ttft_p50_s'))} / {_ms(q['ttft'][0.5])}",
                    f"{_ms(client.get('ttft_p99_s'))} / {_ms(q['ttft'][0.99])}",
                    f"{_ms(client.get('latency_p50_s'))} / {_ms(q['e2e'][0.5])}",
                    _ms(q["queue"][0.5]),
                    _ms(q["prefill"][0.5]),
                    _ms(q["decode"][0.5]),
                ]
            )
        )
    return lines


def _health_table(measured) -> list[str]:
    lines = [
        "",
        "### Engine health during the run",
        "",
        "Peaks of the gauges sampled about once a second; preemptions and prefix-cache hit rate (cached prompt "
        "tokens over prompt tokens looked up) from counter growth.",
        "",
        "engine | model | scenario | peak running | peak waiting | peak KV usage | preemptions | prefix-cache hit rate "
        "| gauge samples",
        "--- | --- | --- | --- | --- | --- | --- | --- | ---",
    ]
    for key, server in measured.items():
        g = server.gauges
        rate = server.prefix_cache_hit_rate
        lines.append(
            " | ".join(
                [
                    *key,
                    _num(g.running_max),
                    _num(g.waiting_max),
                    "n/a" if g.kv_usage_max is None else f"{g.kv_usage_max:.1%}",
                    _num(server.counters.get("preemptions")),
                    "n/a" if rate is None else f"{rate:.1%}",
                    f"{g.samples}" + (f" ({g.failed_samples} failed)" if g.failed_samples else ""),
                ]
            )
        )
    return lines


def _energy_table(metrics) -> list[str]:
    lines = [
        "",
        "### Energy over each scenario's measured window",
        "",
        "First request sent to last one finished; never load or warm-up. Each cell names its method.",
        "",
        "engine | model | scenario | J | J per output token | average W | method",
        "--- | --- | --- | --- | --- | --- | ---",
    ]
    for key, server in metrics.items():
        e = server.energy or {}
        method = e.get("method") if e.get("joules") is not None else _energy_na(e) or "n/a"
        lines.append(
            " | ".join(
                [
                    *key,
                    _num(e.get("joules"), 1),
                    _num(e.get("joules_per_output_token"), 3),
                    _num(e.get("average_watts"), 1),
                    method,
                ]
            )
        )
    return lines

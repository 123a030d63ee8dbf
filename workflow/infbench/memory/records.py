"""The estimator's typed records: overheads, one GPU fit, the speed bound, the whole estimate
and its JSON form (results/memory/{model}.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from infbench.handoff import (
    EstimateGpuFit,
    EstimateKvCache,
    EstimateOverhead,
    EstimateParameters,
    EstimateSpeedBound,
    EstimateVllm,
    MemoryEstimate,
)
from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.facts import ModelFacts

# The written estimate's records are handoff's; under their own names here, where fit.py builds them.
Overhead = EstimateOverhead
GpuFit = EstimateGpuFit


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

    def to_record(self) -> MemoryEstimate:
        """results/memory/{model}.json as its handoff record (what the memory_estimate rule writes)."""
        f = self.facts
        profile = vllm_rules.profile_for(self.vllm_version)
        return MemoryEstimate(
            model=f.name,
            source=f.source,
            model_type=f.model_type,
            parameters=EstimateParameters(
                total=f.params.total,
                source=f.params.source,
                tied_embeddings=f.params.tied_embeddings,
                by_role=f.params.by_role(),
                checkpoint_bytes=f.params.checkpoint_bytes,
            ),
            dtype=self.dtype,
            kv_dtype=self.kv_dtype,
            context=self.context,
            batch=self.batch,
            group_size=self.group_size,
            weights_bytes=self.weights_bytes,
            weights_file_bytes=self.file_bytes,
            weights_resident_bytes=self.resident_bytes,
            weights_assumptions={k: s.assumption for k, s in quant.SCHEMES.items()},
            quantization=None
            if f.quant is None
            else {
                "method": f.quant.method,
                "scheme": f.quant.scheme,
                "kept_16bit": list(f.quant.skip),
                "source": quant.SCHEMES[f.quant.scheme].source,
            },
            moe=None if f.moe is None else asdict(f.moe),
            kv_cache=EstimateKvCache(
                attention=f.kv.attention,
                layers=f.kv.num_layers,
                attention_heads=f.kv.num_heads,
                kv_heads=f.kv.num_kv_heads,
                head_dim=f.kv.head_dim,
                layer_kinds=f.kv.kinds(),
                sliding_windows=f.kv.windows(),
                bytes_per_token=self.kv_bytes_per_token,
                bytes_per_sequence=self.kv_bytes_per_sequence,
                notes=list(f.kv.notes),
            ),
            overheads=list(self.overheads),
            cpu_footprint=self.cpu_footprint,
            vllm=EstimateVllm(
                version=self.vllm_version,
                accounting=profile.name,
                graphs_in_budget=not profile.graphs_outside_budget,
                sampler=self.sampler,
                max_num_seqs=self.max_num_seqs,
                max_num_batched_tokens=self.max_num_batched_tokens,
                enforce_eager=self.enforce_eager,
                disable_custom_all_reduce=self.disable_custom_all_reduce,
                expert_parallel="not modelled separately: with experts dividing evenly over the GPUs, "
                "each holds the same bytes as under tensor parallelism",
                gpu_memory_utilization=self.gpu_util,
                context=self.context,
                batch=self.batch,
                gpus=list(self.fits),
                smallest=None
                if self.smallest is None
                else {"gpu": self.smallest.gpu, "tp": self.smallest.tp, "setup": self.smallest.setup},
            ),
            speed_bound=EstimateSpeedBound(
                what=(
                    "single-request decode tokens/s <= memory bandwidth / (resident weights "
                    f"+ KV cache of {self.context} tokens), per GPU at the fitted TP"
                ),
                cpu=None if self.cpu_bound is None else self.cpu_bound.to_json(),
            ),
            notes=list(self.notes),
        )

    def to_json(self) -> dict[str, Any]:
        return self.to_record().to_dict()

    def to_json_text(self) -> str:
        return self.to_record().to_json_text()

"""The combined estimate: read the model, check the shape asked for, fit it on every GPU.

Modules by job: facts (reading the model), fit (the vLLM fit and the decode bound), records (the
typed Estimate and its JSON), render (text), cpu_runtime (engines' CPU memory).
"""

from __future__ import annotations

from typing import Any

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.cpu_runtime import CpuRuntime, cpu_footprint
from infbench.memory.errors import EstimateError
from infbench.memory.facts import ModelFacts, model_facts
from infbench.memory.fit import Shape, fit_gpu, overheads_for, smallest_setup, valid_tp
from infbench.memory.gpus import CATALOGUE, GPU
from infbench.memory.records import Estimate, SpeedBound
from infbench.memory.weights import all_scheme_bytes, weights_model


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
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    enforce_eager: bool = False,
    disable_custom_all_reduce: bool = False,
    cpu_runtimes: dict[str, CpuRuntime] | None = None,
) -> Estimate:
    """cpu_bandwidth: (bytes/s, where the figure comes from) for the local-CPU speed bound;
    cpu_runtimes: each engine kind's CPU memory beside the weights (engines.base.cpu_runtimes())."""
    notes: list[str] = []
    scheme = quant.parse_weight_dtype(dtype) if dtype else (facts.quantized_as or facts.model_dtype or "bf16")
    kv_name = quant.parse_kv_dtype(kv_dtype) if kv_dtype else quant.default_kv_dtype(scheme, facts.model_dtype)
    if context is None:
        context = facts.max_context or 2048
        if facts.max_context is None:
            notes.append("config gives no maximum context; assumed 2048 tokens")
    if context <= 0 or batch <= 0:
        raise EstimateError(f"--max-model-len and --batch must be positive (got {context}, {batch})")
    for flag, value in (("--max-num-seqs", max_num_seqs), ("--max-num-batched-tokens", max_num_batched_tokens)):
        if value is not None and value <= 0:
            raise EstimateError(f"{flag} must be positive, got {value}")
    if gpu_util is None:  # the engine version's own default
        gpu_util = vllm_rules.default_gpu_memory_utilization(vllm_version)
    if not 0.0 < gpu_util <= 1.0:
        raise EstimateError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_util}")
    if tp is not None:
        if tp <= 0 or tp > 64:
            raise EstimateError(f"--tensor-parallel-size must be 1-64, got {tp}")
        if not valid_tp(facts, tp):
            raise EstimateError(
                f"--tensor-parallel-size {tp}: {facts.kv.num_heads} attention heads "
                f"({facts.kv.num_kv_heads} KV heads) of {facts.name} do not split over {tp} GPUs"
            )
    if sampler is None:  # the engine version's own default
        sampler = vllm_rules.default_sampler(vllm_version)
    if sampler not in vllm_rules.SAMPLERS:
        raise EstimateError(f"--sampler must be one of {vllm_rules.SAMPLERS}, got {sampler!r}")
    profile = vllm_rules.profile_for(vllm_version)  # validates the version
    group = group_size or facts.quant_group_size or quant.GROUP_SIZE
    if group <= 0 and group != -1:
        raise EstimateError(f"--group-size must be positive or -1 (one group per column), got {group}")
    if group != quant.GROUP_SIZE and scheme in quant.GROUPED:
        notes.append(f"{scheme} with group size {group}")
    if facts.quant is not None and facts.quant.skip and scheme == facts.quant.scheme:
        notes.append(f"{facts.quant.method} checkpoint keeps 16-bit: {', '.join(facts.quant.skip)}")

    kv_elem = quant.KV_DTYPE_BYTES[kv_name]
    weights = all_scheme_bytes(facts, group)
    served = weights_model(facts, scheme, group)
    gpus = list(CATALOGUE) if gpus is None else gpus
    if not gpus:
        raise EstimateError("no GPU to fit on")
    shape = Shape(
        scheme,
        kv_elem,
        context,
        batch,
        gpu_util,
        vllm_version,
        sampler,
        group,
        max_num_seqs,
        max_num_batched_tokens,
        enforce_eager,
        disable_custom_all_reduce,
    )
    fits = tuple(fit_gpu(facts, gpu, shape, tp, served) for gpu in gpus)
    best = smallest_setup(fits)
    # Overheads are reported for the recommended setup (else the first GPU at TP=1).
    ref_gpu = gpus[[f.gpu for f in fits].index(best.gpu)] if best else gpus[0]
    ref_tp = best.tp if best else (tp or 1)
    notes.append(
        f"overheads shown for {ref_tp}x {ref_gpu.name}; vLLM {vllm_version} ({profile.name}), {sampler} sampler"
    )
    notes.extend(profile.notes)
    if facts.moe is not None:
        notes.append(
            f"MoE: {facts.moe.experts} experts, top-{facts.moe.top_k}, expert width {facts.moe.expert_intermediate}"
            + (f", shared {facts.moe.shared_intermediate}" if facts.moe.shared_intermediate else "")
            + "; expert parallelism not modelled separately (same bytes per GPU when experts divide evenly)"
        )
    cpu_bound = None
    if cpu_bandwidth is not None:
        bytes_per_token = served.stored_bytes + facts.kv.bytes_for_context(context, kv_elem)
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
            served.stored_bytes,
            cast_at_load=bool(stored_dtype) and quant.parse_weight_dtype(stored_dtype) != scheme,
            runtimes=cpu_runtimes,
        ),
        fits=fits,
        smallest=best,
        notes=tuple(notes),
        vllm_version=vllm_version,
        sampler=sampler,
        group_size=group,
        file_bytes=facts.params.checkpoint_bytes,
        resident_bytes=served.resident_bytes(1),
        cpu_bound=cpu_bound,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        enforce_eager=enforce_eager,
        disable_custom_all_reduce=disable_custom_all_reduce,
    )


def estimate(model: str, **kwargs: Any) -> Estimate:
    """model_facts + build_estimate in one call (what the CLI uses)."""
    name = kwargs.pop("name", None)
    return build_estimate(model_facts(model, name), **kwargs)

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
from infbench.memory.fit import TP_SIZES, Shape, fit_gpu, overheads_for, smallest_setup
from infbench.memory.gpus import CATALOGUE, GPU
from infbench.memory.records import Estimate, SpeedBound


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
    shape = Shape(scheme, kv_elem, context, batch, gpu_util, vllm_version, sampler, group)
    fits = tuple(fit_gpu(facts, gpu, shape, tp) for gpu in gpus)
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
            weights[scheme],
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
        resident_bytes=resident,
        cpu_bound=cpu_bound,
    )


def estimate(model: str, **kwargs: Any) -> Estimate:
    """model_facts + build_estimate in one call (what the CLI uses)."""
    name = kwargs.pop("name", None)
    return build_estimate(model_facts(model, name), **kwargs)

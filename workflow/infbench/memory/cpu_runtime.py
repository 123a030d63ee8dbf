"""CPU memory of each engine kind beside the weights: the runtime's resident set, and whether the
weights are resident at idle. Each kind's figures are its engine plug-in's (engines/kinds/,
`cpu_runtime`), passed in by the command line (this layer does not import engines); the python
fallback is here."""

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


# An engine kind without figures of its own: one python process with torch + transformers.
PYTHON_RUNTIME = CpuRuntime(
    352 * MIB,
    False,
    (
        "one python process with torch + transformers and the model code imported, ~350 MiB "
        "(measured, torch 2.13 CPU); weights memory-mapped, resident once used"
    ),
)


def cpu_footprint(
    weights: int, cast_at_load: bool = False, runtimes: dict[str, CpuRuntime] | None = None
) -> dict[str, dict[str, Any]]:
    """CPU RSS per engine kind: idle (server healthy, no request yet) and loaded (weights in use).

    runtimes: each engine kind's figures (its plug-in's cpu_runtime, engines.base.cpu_runtimes());
    "python" (PYTHON_RUNTIME) is always added, the fallback for kinds without figures.

    cast_at_load: the served dtype differs from the stored one, so the weights are converted, and
    resident, as the server loads (no memory map to page in later).
    """
    footprint = {}
    for engine, rt in {**(runtimes or {}), "python": PYTHON_RUNTIME}.items():
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

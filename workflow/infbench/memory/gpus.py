"""Catalogue of common inference GPUs.

Memory is the total nvidia-smi reports (MiB), not the marketing "GB": the
80 GB H100 shows 81559 MiB, the 141 GB H200 143771 MiB. The driver keeps a
little of that for itself, so real headroom is slightly smaller; the CUDA
context term in estimate.py covers that.
"""

from __future__ import annotations

from dataclasses import dataclass

from infbench.memory.errors import EstimateError

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    # Aliases a user may type, lowercased, without spaces.
    aliases: tuple[str, ...] = ()


CATALOGUE: tuple[GPU, ...] = (
    GPU("L4-24GB", 23034 * MIB, ("l4", "l4-24", "l4-24gb")),
    GPU("RTX4090-24GB", 24564 * MIB, ("rtx4090", "4090", "rtx-4090", "geforcertx4090")),
    GPU("A100-40GB", 40960 * MIB, ("a100-40", "a100-40gb", "a10040gb", "a100")),
    GPU("L40S-48GB", 46068 * MIB, ("l40s", "l40s-48", "l40s-48gb")),
    GPU("A100-80GB", 81920 * MIB, ("a100-80", "a100-80gb", "a10080gb")),
    GPU("H100-80GB", 81559 * MIB, ("h100", "h100-80", "h100-80gb", "h10080gb")),
    GPU("H200-141GB", 143771 * MIB, ("h200", "h200-141", "h200-141gb")),
)


def find_gpu(name: str) -> GPU:
    """Look a GPU up by catalogue name or alias, case-insensitively."""
    key = name.strip().lower().replace(" ", "").replace("_", "-")
    for gpu in CATALOGUE:
        if key == gpu.name.lower() or key in gpu.aliases:
            return gpu
    known = ", ".join(g.name for g in CATALOGUE)
    raise EstimateError(f"unknown GPU {name!r}; known: {known} (or pass --gpu-mem GiB)")


def custom_gpu(gib: float) -> GPU:
    if gib <= 0:
        raise EstimateError(f"--gpu-mem must be positive, got {gib}")
    return GPU(f"custom-{gib:g}GiB", int(gib * GIB))

"""Catalogue of common inference GPUs: the memory vLLM budgets from, and memory bandwidth.

Memory: vLLM sizes its budget from what CUDA reports (torch.cuda.mem_get_info), which is less
than the nvidia-smi total because the driver keeps part of the card for itself. Where a published
vLLM log gives that figure, it is used and its source named; otherwise the nvidia-smi total is the
stand-in and the source says so. Bandwidth: the datasheet figure (decimal GB/s, SXM variants).
"""

from __future__ import annotations

from dataclasses import dataclass

from infbench.memory.errors import EstimateError

MIB = 2**20
GIB = 2**30
GB = 10**9


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int  # what CUDA reports as total (vLLM's "total_gpu_memory")
    memory_source: str
    bandwidth_bytes_s: float | None = None  # published peak memory bandwidth
    bandwidth_source: str = ""
    # Aliases a user may type, lowercased, without spaces.
    aliases: tuple[str, ...] = ()
    # vLLM keys its server defaults on the device name ("a100" keeps the small batch budget).
    device_name: str = ""
    # The PCI device ids (vendor 0x10de) of exactly this model, from the pci.ids database: with the
    # NVML name (device_name), how a measured GPU is matched to its catalogue entry (results/bounds.py).
    pci_device_ids: tuple[int, ...] = ()

    @property
    def is_a100(self) -> bool:
        return "a100" in (self.device_name or self.name).lower()


def _gib(value: float) -> int:
    return int(value * GIB)


CATALOGUE: tuple[GPU, ...] = (
    GPU(
        "L4-24GB",
        23034 * MIB,
        "nvidia-smi total 23034 MiB (no CUDA-reported figure found)",
        300 * GB,
        "https://www.nvidia.com/en-us/data-center/l4/ (300 GB/s)",
        ("l4", "l4-24", "l4-24gb"),
        "NVIDIA L4",
        (0x27B8,),
    ),
    GPU(
        "RTX3090-24GB",
        _gib(23.58),
        "vLLM log total_gpu_memory=23.58GiB, https://github.com/vllm-project/vllm/issues/10517",
        936 * GB,
        "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3090-3090ti/ (936 GB/s)",
        ("rtx3090", "3090", "rtx-3090", "geforcertx3090"),
        "NVIDIA GeForce RTX 3090",
        (0x2204,),
    ),
    GPU(
        "RTX4090-24GB",
        24564 * MIB,
        "nvidia-smi total 24564 MiB (no CUDA-reported figure found)",
        1008 * GB,
        "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/ (1008 GB/s)",
        ("rtx4090", "4090", "rtx-4090", "geforcertx4090"),
        "NVIDIA GeForce RTX 4090",
        (0x2684,),
    ),
    GPU(
        "A100-40GB",
        _gib(39.49),
        "vLLM logs show 39.4-39.6 GiB (issue 13's survey; midpoint used, no single log URL)",
        1555 * GB,
        "https://www.nvidia.com/en-us/data-center/a100/ (SXM 40GB: 1555 GB/s)",
        ("a100-40", "a100-40gb", "a10040gb", "a100"),
        "NVIDIA A100-SXM4-40GB",
        (0x20B0,),
    ),
    GPU(
        "L40S-48GB",
        46068 * MIB,
        "nvidia-smi total 46068 MiB (no CUDA-reported figure found)",
        864 * GB,
        "https://www.nvidia.com/en-us/data-center/l40s/ (864 GB/s)",
        ("l40s", "l40s-48", "l40s-48gb"),
        "NVIDIA L40S",
    ),
    GPU(
        "A100-80GB",
        _gib(79.15),
        "vLLM logs show 79.15 GiB (issue 13's survey); consistent with the 0.5/0.25-utilisation "
        "Qwen2-7B logs in tests/data/vllm_ground_truth.json",
        2039 * GB,
        "https://www.nvidia.com/en-us/data-center/a100/ (SXM 80GB: 2039 GB/s)",
        ("a100-80", "a100-80gb", "a10080gb"),
        "NVIDIA A100-SXM4-80GB",
        (0x20B2,),
    ),
    GPU(
        "H100-80GB",
        _gib(79.22),
        "vLLM log total_gpu_memory 79.22GiB, https://github.com/vllm-project/vllm/pull/10511 "
        "(79.18 GiB on another driver: llm-d-benchmark empirical-vllm-memory-results.md)",
        3350 * GB,
        "https://www.nvidia.com/en-us/data-center/h100/ (SXM: 3.35 TB/s)",
        ("h100", "h100-80", "h100-80gb", "h10080gb"),
        "NVIDIA H100 80GB HBM3",
        (0x2330,),
    ),
    GPU(
        "H200-141GB",
        143771 * MIB,
        "nvidia-smi total 143771 MiB (no CUDA-reported figure found)",
        4800 * GB,
        "https://www.nvidia.com/en-us/data-center/h200/ (4.8 TB/s)",
        ("h200", "h200-141", "h200-141gb"),
        "NVIDIA H200",
    ),
)


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "-")


def find_gpu(name: str) -> GPU:
    """Look a GPU up by catalogue name or alias, case-insensitively."""
    key = _key(name)
    for gpu in CATALOGUE:
        if key == gpu.name.lower() or key in gpu.aliases:
            return gpu
    known = ", ".join(g.name for g in CATALOGUE)
    raise EstimateError(f"unknown GPU {name!r}; known: {known} (or pass --gpu-mem GiB)")


def custom_gpu(gib: float, like: GPU | None = None, bandwidth_gb_s: float | None = None) -> GPU:
    """A GPU with `gib` GiB as CUDA reports it; `like` keeps a catalogue GPU's identity
    (vLLM's defaults depend on the device name) and bandwidth."""
    if gib <= 0:
        raise EstimateError(f"--gpu-mem must be positive, got {gib}")
    if bandwidth_gb_s is not None and bandwidth_gb_s <= 0:
        raise EstimateError(f"--bandwidth must be positive, got {bandwidth_gb_s}")
    bandwidth = bandwidth_gb_s * GB if bandwidth_gb_s else (like.bandwidth_bytes_s if like else None)
    if like is None:
        return GPU(f"custom-{gib:g}GiB", int(gib * GIB), "--gpu-mem", bandwidth, "--bandwidth" if bandwidth else "")
    return GPU(
        f"{like.name}@{gib:g}GiB",
        int(gib * GIB),
        "--gpu-mem",
        bandwidth,
        "--bandwidth" if bandwidth_gb_s else like.bandwidth_source,
        (),
        like.device_name,
    )

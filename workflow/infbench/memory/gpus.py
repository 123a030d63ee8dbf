"""Catalogue of common inference GPUs: the memory vLLM budgets from, and memory bandwidth.

Memory: vLLM sizes its budget from what CUDA reports (torch.cuda.mem_get_info), which is less
than the nvidia-smi total because the driver keeps part of the card for itself. Where a published
vLLM log gives that figure, it is used and its source named; otherwise the nvidia-smi total is the
stand-in and the source says so. Bandwidth: the datasheet figure (decimal GB/s).

Names are matched exactly (case, spaces and underscores aside) against each GPU's name and
aliases; a family name that covers several cards ("A100", "H100") is refused with the choices, and
a near miss gets a "did you mean".
"""

from __future__ import annotations

import difflib
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
    # CUDA compute capability (None: not NVIDIA); picks kernels whose weight padding differs.
    compute_capability: float | None = None
    # How TP ranks talk: "nvlink"/"xgmi" (all-to-all links: vLLM's custom all-reduce at any TP) or
    # "pcie" (custom all-reduce only at TP=2, and only with peer-to-peer access).
    interconnect: str = "pcie"
    p2p: bool = True  # PCIe peer-to-peer (GeForce 40-series drivers refuse it)
    # The PCI device ids (vendor 0x10de) of exactly this model, from the pci.ids database: with the
    # NVML name (device_name), how a measured GPU is matched to its catalogue entry (results/bounds.py).
    pci_device_ids: tuple[int, ...] = ()

    @property
    def is_a100(self) -> bool:
        return "a100" in (self.device_name or self.name).lower()


def _gib(value: float) -> int:
    return int(value * GIB)


# Where no CUDA-reported total was found, the datasheet capacity less 1% stands in: the H100's
# 80 GB reads 79.22 GiB in vLLM's log (PR 10511), i.e. about 1% below 80 GiB.
def _datasheet(gib: float) -> int:
    return int(gib * 0.99 * GIB)


_DATASHEET = "no CUDA-reported figure found: datasheet {} GB less 1% (the H100 80 GB reads 79.22 GiB)"

CATALOGUE: tuple[GPU, ...] = (
    GPU(
        "T4-16GB",
        _gib(14.58),
        "CUDA 'total capacity of 14.58 GiB' in an OOM message, https://github.com/datawhalechina/self-llm/issues/162",
        320 * GB,
        "https://www.nvidia.com/en-us/data-center/tesla-t4/ (320 GB/s)",
        ("t4", "t4-16", "t4-16gb", "teslat4"),
        "Tesla T4",
        7.5,
    ),
    GPU(
        "A10-24GB",
        _gib(21.99),
        "CUDA 'total capacity of 21.99 GiB' in an OOM message on 4x A10 (Qwen3-30B-A3B), "
        "https://github.com/QwenLM/Qwen3/issues/1387 (22.18 GiB on another driver: "
        "https://github.com/OpenBMB/MiniCPM-V/issues/640)",
        600 * GB,
        "https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (600 GB/s)",
        ("a10", "a10-24", "a10-24gb"),
        "NVIDIA A10",
        8.6,
    ),
    GPU(
        "A10G-24GB",
        _gib(21.99),
        "the A10's CUDA figure (same 24 GB GDDR6 with ECC; no A10G log found)",
        600 * GB,
        "AWS G5 instances: A10G, 24 GB GDDR6, 600 GB/s (https://aws.amazon.com/ec2/instance-types/g5/)",
        ("a10g", "a10g-24", "a10g-24gb"),
        "NVIDIA A10G",
        8.6,
    ),
    GPU(
        "L4-24GB",
        23034 * MIB,
        "nvidia-smi total 23034 MiB (no CUDA-reported figure found)",
        300 * GB,
        "https://www.nvidia.com/en-us/data-center/l4/ (300 GB/s)",
        ("l4", "l4-24", "l4-24gb"),
        "NVIDIA L4",
        8.9,
        pci_device_ids=(0x27B8,),
    ),
    GPU(
        "RTX3090-24GB",
        _gib(23.58),
        "vLLM log total_gpu_memory=23.58GiB, https://github.com/vllm-project/vllm/issues/10517",
        936 * GB,
        "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3090-3090ti/ (936 GB/s)",
        ("rtx3090", "3090", "rtx-3090", "geforcertx3090", "rtx3090-24gb"),
        "NVIDIA GeForce RTX 3090",
        8.6,
        pci_device_ids=(0x2204,),
    ),
    GPU(
        "RTX4090-24GB",
        _gib(23.55),
        "vLLM log total_gpu_memory (23.55GiB), https://github.com/vllm-project/vllm/issues/11550 "
        "(and 23.08 GiB = 0.98 x 23.55 in https://github.com/vllm-project/vllm/issues/13061)",
        1008 * GB,
        "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/ (1008 GB/s)",
        ("rtx4090", "4090", "rtx-4090", "geforcertx4090", "rtx4090-24gb"),
        "NVIDIA GeForce RTX 4090",
        8.9,
        p2p=False,  # GeForce 40-series drivers disable PCIe peer-to-peer
        pci_device_ids=(0x2684,),
    ),
    GPU(
        "V100-32GB",
        _gib(31.74),
        "CUDA '31.74 GiB total capacity' in an OOM message, https://github.com/liucongg/ChatGLM-Finetuning/issues/73",
        900 * GB,
        "https://www.nvidia.com/en-us/data-center/v100/ (SXM2: 900 GB/s)",
        ("v100", "v100-32", "v100-32gb", "teslav100"),
        "Tesla V100-SXM2-32GB",
        7.0,
        "nvlink",
    ),
    GPU(
        "A100-40GB",
        _gib(39.38),
        "vLLM log total_gpu_memory 39.38 GiB, https://github.com/vllm-project/vllm/issues/16570",
        1555 * GB,
        "https://www.nvidia.com/en-us/data-center/a100/ (SXM 40GB: 1555 GB/s)",
        ("a100-40", "a100-40gb", "a10040gb"),
        "NVIDIA A100-SXM4-40GB",
        8.0,
        "nvlink",
        pci_device_ids=(0x20B0,),
    ),
    GPU(
        "L40-48GB",
        46068 * MIB,
        "the L40S's nvidia-smi total 46068 MiB (same 48 GB GDDR6 with ECC; no CUDA-reported figure found)",
        864 * GB,
        "https://www.nvidia.com/en-us/data-center/l40/ (864 GB/s)",
        ("l40", "l40-48", "l40-48gb"),
        "NVIDIA L40",
        8.9,
    ),
    GPU(
        "L40S-48GB",
        46068 * MIB,
        "nvidia-smi total 46068 MiB (no CUDA-reported figure found)",
        864 * GB,
        "https://www.nvidia.com/en-us/data-center/l40s/ (864 GB/s)",
        ("l40s", "l40s-48", "l40s-48gb"),
        "NVIDIA L40S",
        8.9,
    ),
    GPU(
        "A6000-48GB",
        _datasheet(48),
        _DATASHEET.format(48),
        768 * GB,
        "https://www.nvidia.com/en-us/design-visualization/rtx-a6000/ (768 GB/s)",
        ("a6000", "rtxa6000", "rtx-a6000", "a6000-48", "a6000-48gb"),
        "NVIDIA RTX A6000",
        8.6,
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
        8.0,
        "nvlink",
        pci_device_ids=(0x20B2,),
    ),
    GPU(
        "H100-PCIe-80GB",
        _gib(79.18),
        "the H100 SXM's CUDA figure on a recent driver (79.18 GiB, llm-d-benchmark "
        "empirical-vllm-memory-results.md): the same 80 GB; no PCIe log found",
        2000 * GB,
        "https://www.nvidia.com/en-us/data-center/h100/ (PCIe: 2 TB/s)",
        ("h100-pcie", "h100pcie", "h100-pcie-80gb"),
        "NVIDIA H100 PCIe",
        9.0,
    ),
    GPU(
        "H100-80GB",
        _gib(79.22),
        "vLLM log total_gpu_memory 79.22GiB, https://github.com/vllm-project/vllm/pull/10511 "
        "(79.18 GiB on another driver: llm-d-benchmark empirical-vllm-memory-results.md)",
        3350 * GB,
        "https://www.nvidia.com/en-us/data-center/h100/ (SXM: 3.35 TB/s)",
        ("h100-80", "h100-80gb", "h10080gb", "h100-sxm", "h100sxm"),
        "NVIDIA H100 80GB HBM3",
        9.0,
        "nvlink",
        pci_device_ids=(0x2330,),
    ),
    GPU(
        "H100-NVL-94GB",
        _gib(93.00),
        "CUDA 'total capacity of 93.00 GiB' in an OOM message, https://github.com/ali-vilab/VACE/issues/56",
        3900 * GB,
        "https://www.nvidia.com/en-us/data-center/h100/ (NVL: 3.9 TB/s)",
        ("h100-nvl", "h100nvl", "h100-nvl-94gb", "h100-94gb"),
        "NVIDIA H100 NVL",
        9.0,  # NVLink bridges join pairs only: PCIe rules beyond TP=2
    ),
    GPU(
        "H20-96GB",
        _datasheet(96),
        _DATASHEET.format(96),
        4000 * GB,
        "NVIDIA HGX H20: 96 GB HBM3, 4.0 TB/s (product brief)",
        ("h20", "h20-96", "h20-96gb"),
        "NVIDIA H20",
        9.0,
        "nvlink",
    ),
    GPU(
        "H200-141GB",
        143771 * MIB,
        "nvidia-smi total 143771 MiB (no CUDA-reported figure found)",
        4800 * GB,
        "https://www.nvidia.com/en-us/data-center/h200/ (4.8 TB/s)",
        ("h200", "h200-141", "h200-141gb"),
        "NVIDIA H200",
        9.0,
        "nvlink",
    ),
    GPU(
        "B200-180GB",
        _datasheet(180),
        _DATASHEET.format(180),
        8000 * GB,
        "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200: 180 GB, 8 TB/s per GPU)",
        ("b200", "b200-180", "b200-180gb"),
        "NVIDIA B200",
        10.0,
        "nvlink",
    ),
    GPU(
        "MI300X-192GB",
        _gib(192),
        "AMD datasheet 192 GB HBM3 (no HIP-reported figure found)",
        5300 * GB,
        "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (5.3 TB/s)",
        ("mi300x", "mi300x-192", "mi300x-192gb", "instinctmi300x"),
        "AMD Instinct MI300X",
        None,
        "xgmi",
    ),
)

# Family names that cover several cards: refused with the choices rather than guessed.
_FAMILIES = {
    "a100": ("A100-40GB", "A100-80GB"),
    "h100": ("H100-80GB", "H100-PCIe-80GB", "H100-NVL-94GB"),
}


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "-")


def _names(gpu: GPU) -> tuple[str, ...]:
    return (_key(gpu.name), *gpu.aliases)


def find_gpu(name: str) -> GPU:
    """Look a GPU up by catalogue name or alias, exactly (case-insensitive)."""
    key = _key(name)
    for gpu in CATALOGUE:
        if key in _names(gpu):
            return gpu
    if key in _FAMILIES:
        raise EstimateError(f"GPU {name!r} is ambiguous: say which, one of " + ", ".join(_FAMILIES[key]))
    every = [n for gpu in CATALOGUE for n in _names(gpu)]
    near = difflib.get_close_matches(key, every, n=3, cutoff=0.6)
    by_key = {n: gpu.name for gpu in CATALOGUE for n in _names(gpu)}
    hint = f"; did you mean {' or '.join(dict.fromkeys(by_key[n] for n in near))}?" if near else ""
    known = ", ".join(g.name for g in CATALOGUE)
    raise EstimateError(f"unknown GPU {name!r}{hint} (known: {known}; or pass --gpu-mem GiB)")


def match_device(device_name: str) -> GPU | None:
    """The catalogue GPU an NVML/CUDA device name ("NVIDIA A100-SXM4-80GB") is, or None.

    The longest matching device name wins, so "NVIDIA A10" does not claim an A100."""
    name = device_name.strip().lower()
    if not name:
        return None
    within = [g for g in CATALOGUE if g.device_name and g.device_name.lower() in name]
    if within:
        return max(within, key=lambda g: len(g.device_name))
    around = [g for g in CATALOGUE if g.device_name and name in g.device_name.lower()]
    return min(around, key=lambda g: len(g.device_name), default=None)


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
        like.compute_capability,
        like.interconnect,
        like.p2p,
        like.pci_device_ids,
    )

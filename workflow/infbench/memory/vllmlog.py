"""What vLLM says about its own memory at start-up, read from its server log.

vLLM logs its accounting as it starts; these are the lines read (formats of the v0 and v1 engines,
GPU and CPU; later lines win, so a restarted server's last start counts):
  Model loading took 14.2488 GiB and 2.99 seconds          (v1; v0: "Loading model weights took 14.9888 GB", GiB too)
  Available KV cache memory: 24.83 GiB                     (v1 GPU worker)
  available_kv_cache_memory    53.29GiB / "...reserved for KV Cache is 1.57GiB"   (v0.6.5-0.7)
  Explicitly set (1.00/23.47) GiB for KV cache on node 0.  (v1 CPU worker, VLLM_CPU_KVCACHE_SPACE)
  GPU KV cache size: 464,848 tokens                        (v1; "CPU KV cache size" on the CPU)
  Maximum concurrency for 16,384 tokens per request: 28.37x
  # GPU blocks: 7351, # CPU blocks: 2048                   (v0: blocks of 16 tokens)
  ... dtype=torch.bfloat16, ... kv_cache_dtype=auto, ...   (the engine's config line)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 2**30

_PATTERNS = {
    "weights_gib": [
        r"Model loading took ([\d.]+) ?GiB",
        r"Loading model weights took ([\d.]+) ?GB",
        r"model weights take\s+([\d.]+) ?GiB",
    ],
    "kv_cache_gib": [
        r"Available KV cache memory: (-?[\d.]+) ?GiB",
        r"available_kv_cache_memory\s+(-?[\d.]+) ?GiB",
        r"reserved for KV Cache is (-?[\d.]+) ?GiB",
        r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache",
        r"Auto set \(([\d.]+)/[\d.]+\) GiB for KV cache",
    ],
    "kv_tokens": [r"(?:GPU|CPU|XPU|TPU)[^\n]*? KV cache size: ([\d,]+) tokens"],
    "max_concurrency": [r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"],
    "gpu_blocks": [r"# (?:GPU|cuda|CUDA) blocks: (\d+)"],
    "dtype": [r"\bdtype=torch\.(\w+)"],
    "kv_cache_dtype": [r"\bkv_cache_dtype=(\w+)"],
    "version": [r"vLLM API server version ([\w.+-]+)", r"LLM engine \(v([\w.+-]+)\)"],
}


@dataclass(frozen=True)
class VllmStartup:
    """vLLM's own start-up figures (per GPU where it runs on several)."""

    version: str | None = None
    dtype: str | None = None
    kv_cache_dtype: str | None = None
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_tokens: int | None = None
    max_concurrency: float | None = None
    concurrency_context: int | None = None  # the max_model_len the concurrency is for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return all(v is None for v in asdict(self).values())


def _last(text: str, patterns: list[str]) -> re.Match | None:
    found = None
    for pattern in patterns:
        for match in re.finditer(pattern, text):
            if found is None or match.start() > found.start():
                found = match
    return found


def parse_vllm_startup(text: str) -> VllmStartup:
    def number(key: str) -> float | None:
        m = _last(text, _PATTERNS[key])
        return float(m.group(1).replace(",", "")) if m else None

    def word(key: str) -> str | None:
        m = _last(text, _PATTERNS[key])
        return m.group(1) if m else None

    weights, kv = number("weights_gib"), number("kv_cache_gib")
    tokens = number("kv_tokens")
    if tokens is None and number("gpu_blocks") is not None:
        tokens = number("gpu_blocks") * 16  # v0's default block of 16 tokens
    conc = _last(text, _PATTERNS["max_concurrency"])
    return VllmStartup(
        version=word("version"),
        dtype=word("dtype"),
        kv_cache_dtype=word("kv_cache_dtype"),
        weights_bytes=None if weights is None else int(weights * GIB),
        kv_cache_bytes=None if kv is None else int(kv * GIB),
        kv_tokens=None if tokens is None else int(tokens),
        max_concurrency=float(conc.group(2)) if conc else None,
        concurrency_context=int(conc.group(1).replace(",", "")) if conc else None,
    )


def read_vllm_startup(path: str | Path) -> VllmStartup | None:
    """The figures of one server log, or None when the log is missing or says nothing of them."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    found = parse_vllm_startup(text)
    return None if found.empty else found

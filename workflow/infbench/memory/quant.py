"""Bytes of weights per dtype and quantization scheme, the schemes written as data.

Every scheme is computed tensor by tensor from exact shapes, so group scales, zero points, block
headers and per-tensor scales are counted exactly under the stated layout. A matrix is read as
(rows, cols) = (prod(shape[:-1]), shape[-1]); for nn.Linear that is (out_features, in_features),
and groups/blocks run along the input dimension, as in the GPTQ, AWQ, MX/NV-FP4 and GGUF layouts.
Fused MoE expert tensors ([experts, a, b]) count as experts x a rows.

GPU schemes quantize only the matrices of the transformer blocks (role "linear"); embeddings, the
output head, norms, biases and MoE routers stay at the 16-bit activation dtype, and a checkpoint's
own skip list (modules_to_not_convert, ignore, exclude_modules: see quantconfig.py) keeps more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from infbench.memory.errors import EstimateError
from infbench.memory.params import TensorInfo

GROUP_SIZE = 128  # GPTQ/AWQ group size: the common default of published 4-bit checkpoints
NF4_BLOCK = 64  # bitsandbytes 4-bit blocksize (its default)


@dataclass(frozen=True)
class WeightScheme:
    """A weight storage format: how each quantized weight and its scales are stored, and where
    the layout comes from.

    layout:
      dense        every tensor value_bits wide
      per_tensor   value_bits per weight + one scale per tensor
      per_channel  value_bits per weight + one scale per output row
      block        value_bits per weight + one scale per block x block tile
      group        value_bits per weight + one scale (and zero) per `group` inputs of each row
      nf4, gguf    as their own code below
    """

    name: str
    label: str
    layout: str
    value_bits: int
    assumption: str
    source: str
    scale_bytes: int = 0
    group: int = 0  # inputs per scale (group layout) or the tile edge (block layout)
    zero_bits: int = 0  # asymmetric zero point per group, packed 8 to an int32
    g_idx: bool = False  # GPTQ's int32 group index per input
    pack_outputs: bool = False  # AWQ packs 4-bit values along outputs, GPTQ along inputs
    tensor_scales: int = 0  # extra fp32 scalars per tensor (NVFP4: global weight scale, input scale)
    # Lowest CUDA compute capability vLLM serves it on (its get_min_capability, read in 0.32).
    min_capability: float = 0.0

    @property
    def quantizes_all_2d(self) -> bool:
        return self.layout == "gguf"


def _scheme(*args, **kwargs) -> WeightScheme:
    return WeightScheme(*args, **kwargs)


_KEEP = "embeddings, lm_head, norms, biases and MoE routers stay 16-bit"

SCHEMES: dict[str, WeightScheme] = {
    s.name: s
    for s in (
        _scheme("fp32", "fp32", "dense", 32, "4 bytes per parameter", "IEEE float32"),
        _scheme("bf16", "bf16", "dense", 16, "2 bytes per parameter", "bfloat16"),
        _scheme("fp16", "fp16", "dense", 16, "2 bytes per parameter", "IEEE float16"),
        _scheme(
            "fp8",
            "fp8",
            "per_tensor",
            8,
            f"block matrices 1 byte/weight + one fp32 scale per tensor (vLLM fp8, per-tensor); {_KEEP}",
            "vllm/model_executor/layers/quantization/fp8.py (weight_scale per tensor)",
            scale_bytes=4,
            min_capability=7.5,
        ),
        _scheme(
            "fp8-channel",
            "fp8/channel",
            "per_channel",
            8,
            f"block matrices 1 byte/weight + one fp32 scale per output row; {_KEEP}",
            "compressed-tensors float-quantized, strategy 'channel' (e.g. RedHatAI *-FP8-dynamic)",
            scale_bytes=4,
            min_capability=7.5,
        ),
        _scheme(
            "fp8-block",
            "fp8/128x128",
            "block",
            8,
            f"block matrices 1 byte/weight + one fp32 scale per 128x128 tile; {_KEEP}",
            "fp8 with weight_block_size [128, 128] (DeepSeek-V3/R1, Qwen3-*-FP8: weight_scale_inv)",
            scale_bytes=4,
            group=128,
            min_capability=7.5,
        ),
        _scheme(
            "int8",
            "int8",
            "per_channel",
            8,
            f"block matrices 1 byte/weight + one fp32 scale per output row (bitsandbytes LLM.int8 layout); {_KEEP}",
            "bitsandbytes LLM.int8; compressed-tensors int8 'channel'",
            scale_bytes=4,
            min_capability=7.0,
        ),
        _scheme(
            "gptq-int8",
            "GPTQ 8-bit",
            "group",
            8,
            f"block matrices: 8-bit weights packed in int32, per group of {GROUP_SIZE} inputs one fp16 scale and "
            f"one 8-bit zero per output, plus an int32 g_idx per input; {_KEEP}",
            "AutoGPTQ/GPTQModel layout (qweight, qzeros, scales, g_idx)",
            scale_bytes=2,
            group=GROUP_SIZE,
            zero_bits=8,
            g_idx=True,
            min_capability=6.0,
        ),
        _scheme(
            "gptq-int4",
            "GPTQ 4-bit",
            "group",
            4,
            f"block matrices: 4-bit weights packed in int32, per group of {GROUP_SIZE} "
            f"inputs one fp16 scale and one 4-bit zero per output, plus an int32 g_idx per input; {_KEEP}",
            "AutoGPTQ/GPTQModel layout (qweight, qzeros, scales, g_idx)",
            scale_bytes=2,
            group=GROUP_SIZE,
            zero_bits=4,
            g_idx=True,
            min_capability=6.0,
        ),
        _scheme(
            "awq-int4",
            "AWQ 4-bit",
            "group",
            4,
            f"block matrices: 4-bit weights packed in int32, per group of {GROUP_SIZE} "
            f"inputs one fp16 scale and one 4-bit zero per output (no g_idx); {_KEEP}",
            "AutoAWQ GEMM layout (qweight packed along outputs, qzeros, scales)",
            scale_bytes=2,
            group=GROUP_SIZE,
            zero_bits=4,
            pack_outputs=True,
            min_capability=7.5,
        ),
        _scheme(
            "int4-group",
            "int4 W4A16",
            "group",
            4,
            f"block matrices: 4-bit weights packed 8 to an int32, one 16-bit scale per group of "
            f"{GROUP_SIZE} inputs, symmetric (no zero point); {_KEEP}",
            "compressed-tensors pack-quantized W4A16 (llm-compressor), weight_packed/weight_scale",
            scale_bytes=2,
            group=GROUP_SIZE,
            min_capability=7.0,
        ),
        _scheme(
            "mxfp4",
            "MXFP4",
            "group",
            4,
            "block matrices: FP4 (E2M1) values + one 8-bit E8M0 scale per 32 weights (4.25 bits/weight); "
            "gpt-oss keeps attention, routers, embeddings and lm_head in bf16 (modules_to_not_convert); "
            "vLLM pads expert dimensions per kernel (memory/vllm.py)",
            "OCP Microscaling Formats (MX) v1.0: block of 32, E8M0 scale; gpt-oss checkpoints "
            "(*_blocks, *_scales tensors)",
            scale_bytes=1,
            group=32,
            min_capability=8.0,
        ),
        _scheme(
            "nvfp4",
            "NVFP4",
            "group",
            4,
            "block matrices: FP4 (E2M1) values + one FP8 (E4M3) scale per 16 weights + two fp32 "
            f"scalars per tensor (global weight scale, input scale; 4.5 bits/weight); {_KEEP}",
            "NVIDIA ModelOpt NVFP4 and compressed-tensors nvfp4-pack-quantized (group 16, E4M3 scales)",
            scale_bytes=1,
            group=16,
            tensor_scales=2,
            min_capability=7.5,
        ),
        _scheme(
            "nf4",
            "bnb NF4",
            "nf4",
            4,
            f"block matrices: 4-bit NF4 + one fp32 absmax per {NF4_BLOCK} weights "
            f"(bitsandbytes default, no double quantization); {_KEEP}",
            "bitsandbytes 4-bit (blocksize 64)",
            min_capability=7.0,
        ),
        _scheme(
            "gguf-q8_0",
            "GGUF Q8_0",
            "gguf",
            8,
            "every 2-D tensor (embeddings and output too) in blocks of 32: 32 int8 + "
            "fp16 scale = 34 bytes; 1-D tensors f32; rows not divisible by 32 stay f16",
            "ggml-common.h block_q8_0",
        ),
        _scheme(
            "gguf-q4_k",
            "GGUF Q4_K",
            "gguf",
            4,
            "every 2-D tensor in Q4_K super-blocks of 256 = 144 bytes (4.5 bits/weight); "
            "rows not divisible by 256 fall back to Q5_0 (22 bytes per 32), as "
            "llama.cpp does; 1-D tensors f32. A pure Q4_K file: Q4_K_M keeps some "
            "tensors in Q6_K and is ~5-10% larger",
            "ggml-common.h block_q4_K",
        ),
    )
}

# Schemes whose group size the user (or the checkpoint) may change.
GROUPED = ("gptq-int4", "gptq-int8", "awq-int4", "int4-group")

# Aliases accepted on the command line -> canonical scheme name.
_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "fp16": "fp16",
    "float8": "fp8",
    "fp8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "fp8-channel": "fp8-channel",
    "fp8-block": "fp8-block",
    "fp8_block": "fp8-block",
    "int8": "int8",
    "i8": "int8",
    "w8": "int8",
    "llm.int8": "int8",
    "gptq-int8": "gptq-int8",
    "gptq8": "gptq-int8",
    # "int4" means the most common 4-bit format served by vLLM: GPTQ g128.
    "int4": "gptq-int4",
    "gptq": "gptq-int4",
    "gptq-int4": "gptq-int4",
    "gptq4": "gptq-int4",
    "awq": "awq-int4",
    "awq-int4": "awq-int4",
    "awq4": "awq-int4",
    "w4a16": "int4-group",
    "int4-group": "int4-group",
    "mxfp4": "mxfp4",
    "nvfp4": "nvfp4",
    "nf4": "nf4",
    "bnb-nf4": "nf4",
    "bnb4": "nf4",
    "bitsandbytes": "nf4",
    "q8_0": "gguf-q8_0",
    "gguf-q8_0": "gguf-q8_0",
    "q4_k": "gguf-q4_k",
    "gguf-q4_k": "gguf-q4_k",
}

# KV-cache element types: name -> bytes per element.
KV_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# The same names as for weights, limited to the element types a KV cache uses.
_KV_ALIASES = {name: dtype for name, dtype in _ALIASES.items() if dtype in KV_DTYPE_BYTES}


def _lookup(text: str, aliases: dict[str, str], what: str) -> str:
    key = text.strip().lower().removeprefix("torch.")
    if key in aliases:
        return aliases[key]
    raise EstimateError(f"unknown {what} {text!r}; use one of: " + ", ".join(sorted(aliases)))


def parse_weight_dtype(text: str) -> str:
    """Canonical scheme name for a torch dtype name or short form."""
    return _lookup(text, _ALIASES, "dtype")


def parse_kv_dtype(text: str) -> str:
    if text.strip().lower() == "auto":
        raise EstimateError("KV-cache dtype 'auto' is the default: leave --kv-cache-dtype out")
    return _lookup(text, _KV_ALIASES, "KV-cache dtype")


def default_kv_dtype(scheme: str, model_dtype: str | None) -> str:
    """The KV dtype an engine uses with 'auto': the activation dtype.

    fp32/bf16/fp16 weights compute in that dtype; quantized weights compute in
    the model's 16-bit dtype (config torch_dtype, bf16 if unknown or fp32).
    """
    if scheme in ("fp32", "bf16", "fp16"):
        return scheme
    if model_dtype in ("bf16", "fp16"):
        return model_dtype
    return "bf16"


def quantizable(t: TensorInfo) -> bool:
    """A matrix of the transformer blocks that GPU schemes quantize (not a bias stored 2-D)."""
    return t.role == "linear" and not t.name.endswith("bias")


def tensor_bytes(scheme: str, t: TensorInfo, group_size: int = GROUP_SIZE) -> int:
    """Bytes one tensor takes stored in the given scheme (group_size: inputs per group of the
    GPTQ/AWQ/W4A16 schemes; the others have a fixed group)."""
    s = SCHEMES.get(scheme)
    if s is None:
        raise EstimateError(f"unknown weight scheme {scheme!r}")
    n = t.numel
    if s.layout == "dense":
        return s.value_bits // 8 * n
    if s.layout == "gguf":
        if len(t.shape) < 2:
            return 4 * n  # llama.cpp keeps norms/biases in f32
        rows, cols = _matrix(t)
        return rows * _gguf_row_bytes(scheme, cols)
    if not quantizable(t):
        return 2 * n
    return quantized_bytes(s, t, group_size)


def quantized_bytes(s: WeightScheme, t: TensorInfo, group_size: int = GROUP_SIZE) -> int:
    """Bytes of one quantized matrix in scheme s."""
    n = t.numel
    rows, cols = _matrix(t)
    values = math.ceil(n * s.value_bits / 8)
    if s.layout == "per_tensor":
        return values + s.scale_bytes
    if s.layout == "per_channel":
        return values + s.scale_bytes * rows
    if s.layout == "block":
        return values + s.scale_bytes * math.ceil(rows / s.group) * math.ceil(cols / s.group)
    if s.layout == "nf4":
        return math.ceil(n / 2) + 4 * math.ceil(n / NF4_BLOCK)
    if s.layout != "group":
        raise EstimateError(f"scheme {s.name!r} has no byte rule for layout {s.layout!r}")
    group = group_size if s.name in GROUPED else s.group
    if group <= 0 and group != -1:
        raise EstimateError(f"group size must be positive or -1 (per column), got {group}")
    groups = 1 if group == -1 else math.ceil(cols / group)
    per_int32 = 32 // s.value_bits
    if s.zero_bits or s.g_idx or s.pack_outputs:  # GPTQ/AWQ: values packed in int32
        if s.pack_outputs:
            values = cols * math.ceil(rows / per_int32) * 4
        else:
            values = math.ceil(cols / per_int32) * rows * 4
    zeros = groups * math.ceil(rows * s.zero_bits / 32) * 4 if s.zero_bits else 0
    g_idx = 4 * cols if s.g_idx else 0
    return values + groups * rows * s.scale_bytes + zeros + g_idx + 4 * s.tensor_scales


def _matrix(t: TensorInfo) -> tuple[int, int]:
    return math.prod(t.shape[:-1]), t.shape[-1]


def _gguf_row_bytes(scheme: str, cols: int) -> int:
    if scheme == "gguf-q4_k" and cols % 256 == 0:
        return cols // 256 * 144
    if scheme == "gguf-q4_k" and cols % 32 == 0:
        return cols // 32 * 22  # Q5_0 fallback
    if scheme == "gguf-q8_0" and cols % 32 == 0:
        return cols // 32 * 34
    return 2 * cols  # f16 when no block type fits


def weight_bytes(scheme: str, tensors: Iterable[TensorInfo], group_size: int = GROUP_SIZE) -> int:
    return sum(tensor_bytes(scheme, t, group_size) for t in tensors)


def all_weight_bytes(tensors: Iterable[TensorInfo], group_size: int = GROUP_SIZE) -> dict[str, int]:
    """Weights in every scheme, keyed by canonical scheme name."""
    tensors = tuple(tensors)
    return {name: weight_bytes(name, tensors, group_size) for name in SCHEMES}


# vLLM pads the vocabulary of its embedding and lm_head to a multiple of 64 per rank
# (vllm/model_executor/layers/vocab_parallel_embedding.py, DEFAULT_VOCAB_PADDING_SIZE = 64).
VOCAB_PADDING = 64


def resident_bytes(scheme: str, tensors: Iterable[TensorInfo], tp: int = 1, group_size: int = GROUP_SIZE) -> int:
    """Bytes vLLM holds on one GPU at tensor-parallel size tp, every block matrix in `scheme`."""
    return sum(resident_tensor_bytes(t, tensor_bytes(scheme, t, group_size), tp) for t in tensors)


def resident_tensor_bytes(t: TensorInfo, size: int, tp: int) -> int:
    """One tensor's share on one GPU, given its stored size.

    Differs from the checkpoint file: a tied lm_head is held once even when the file stores a
    copy (quantization tools often write one), norms, biases and MoE routers are replicated on
    every rank, and the vocabulary is padded to a multiple of 64 per rank.
    """
    if t.role in ("other", "router"):
        return size
    if t.role in ("embedding", "lm_head") and len(t.shape) == 2:
        vocab = t.shape[0]
        padded = math.ceil(vocab / (VOCAB_PADDING * tp)) * VOCAB_PADDING * tp
        return math.ceil(size * padded / vocab / tp)
    return math.ceil(size / tp)

"""Bytes of weights per dtype and quantization scheme.

Every scheme is computed tensor by tensor from exact shapes, so group scales,
zero points and block headers are counted exactly under the stated layout.
A matrix is read as (rows, cols) = (prod(shape[:-1]), shape[-1]); for
nn.Linear that is (out_features, in_features), and groups/blocks run along
the input dimension, as in the GPTQ, AWQ and GGUF layouts.
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
    """A weight storage format and the assumption behind its byte count."""

    name: str
    label: str
    assumption: str


SCHEMES: dict[str, WeightScheme] = {
    s.name: s
    for s in (
        WeightScheme("fp32", "fp32", "4 bytes per parameter"),
        WeightScheme("bf16", "bf16", "2 bytes per parameter"),
        WeightScheme("fp16", "fp16", "2 bytes per parameter"),
        WeightScheme(
            "fp8",
            "fp8",
            (
                "block matrices 1 byte/weight + one fp32 scale per tensor (vLLM fp8, "
                "per-tensor); embeddings, lm_head, norms and biases stay 16-bit"
            ),
        ),
        WeightScheme(
            "int8",
            "int8",
            (
                "block matrices 1 byte/weight + one fp32 scale per output row "
                "(bitsandbytes LLM.int8 layout); embeddings, lm_head, norms stay 16-bit"
            ),
        ),
        WeightScheme(
            "gptq-int4",
            "GPTQ 4-bit",
            (
                f"block matrices: 4-bit weights packed in int32, per group of {GROUP_SIZE} "
                "inputs one fp16 scale and one 4-bit zero per output, plus an int32 g_idx "
                "per input; embeddings, lm_head, norms stay 16-bit"
            ),
        ),
        WeightScheme(
            "awq-int4",
            "AWQ 4-bit",
            (
                f"block matrices: 4-bit weights packed in int32, per group of {GROUP_SIZE} "
                "inputs one fp16 scale and one 4-bit zero per output (no g_idx); "
                "embeddings, lm_head, norms stay 16-bit"
            ),
        ),
        WeightScheme(
            "nf4",
            "bnb NF4",
            (
                f"block matrices: 4-bit NF4 + one fp32 absmax per {NF4_BLOCK} weights "
                "(bitsandbytes default, no double quantization); embeddings, lm_head, "
                "norms stay 16-bit"
            ),
        ),
        WeightScheme(
            "gguf-q8_0",
            "GGUF Q8_0",
            (
                "every 2-D tensor (embeddings and output too) in blocks of 32: 32 int8 + "
                "fp16 scale = 34 bytes; 1-D tensors f32; rows not divisible by 32 stay f16"
            ),
        ),
        WeightScheme(
            "gguf-q4_k",
            "GGUF Q4_K",
            (
                "every 2-D tensor in Q4_K super-blocks of 256 = 144 bytes (4.5 bits/weight); "
                "rows not divisible by 256 fall back to Q5_0 (22 bytes per 32), as "
                "llama.cpp does; 1-D tensors f32. A pure Q4_K file: Q4_K_M keeps some "
                "tensors in Q6_K and is ~5-10% larger"
            ),
        ),
    )
}

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
    "int8": "int8",
    "i8": "int8",
    "w8": "int8",
    "llm.int8": "int8",
    # "int4" means the most common 4-bit format served by vLLM: GPTQ g128.
    "int4": "gptq-int4",
    "gptq": "gptq-int4",
    "gptq-int4": "gptq-int4",
    "gptq4": "gptq-int4",
    "awq": "awq-int4",
    "awq-int4": "awq-int4",
    "awq4": "awq-int4",
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


def tensor_bytes(scheme: str, t: TensorInfo, group_size: int = GROUP_SIZE) -> int:
    """Bytes one tensor takes stored in the given scheme (group_size: GPTQ/AWQ inputs per group)."""
    n = t.numel
    if scheme == "fp32":
        return 4 * n
    if scheme in ("bf16", "fp16"):
        return 2 * n
    if scheme.startswith("gguf-"):
        if len(t.shape) < 2:
            return 4 * n  # llama.cpp keeps norms/biases in f32
        rows, cols = _matrix(t)
        return rows * _gguf_row_bytes(scheme, cols)
    # GPU schemes quantize only the block matrices.
    if t.role != "linear":
        return 2 * n
    rows, cols = _matrix(t)
    if scheme == "fp8":
        return n + 4
    if scheme == "int8":
        return n + 4 * rows
    if scheme in ("gptq-int4", "awq-int4"):
        if group_size <= 0 and group_size != -1:
            raise EstimateError(f"group size must be positive or -1 (per column), got {group_size}")
        groups = 1 if group_size == -1 else math.ceil(cols / group_size)
        if scheme == "gptq-int4":
            qweight = math.ceil(cols / 8) * rows * 4  # 8 nibbles per int32 along inputs
            g_idx = 4 * cols
        else:
            qweight = cols * math.ceil(rows / 8) * 4  # AWQ packs along outputs
            g_idx = 0
        qzeros = groups * math.ceil(rows / 8) * 4
        scales = groups * rows * 2
        return qweight + qzeros + scales + g_idx
    if scheme == "nf4":
        return math.ceil(n / 2) + 4 * math.ceil(n / NF4_BLOCK)
    raise EstimateError(f"unknown weight scheme {scheme!r}")


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


def replicated_bytes(scheme: str, tensors: Iterable[TensorInfo], group_size: int = GROUP_SIZE) -> int:
    """Bytes every tensor-parallel rank holds in full (norms and biases)."""
    return sum(tensor_bytes(scheme, t, group_size) for t in tensors if t.role == "other")


# vLLM pads the vocabulary of its embedding and lm_head to a multiple of 64 per rank
# (vllm/model_executor/layers/vocab_parallel_embedding.py, DEFAULT_VOCAB_PADDING_SIZE = 64).
VOCAB_PADDING = 64


def resident_bytes(scheme: str, tensors: Iterable[TensorInfo], tp: int = 1, group_size: int = GROUP_SIZE) -> int:
    """Bytes vLLM holds on one GPU at tensor-parallel size tp.

    Differs from the checkpoint file: a tied lm_head is held once even when the file stores a
    copy (quantization tools often write one), norms and biases are replicated on every rank,
    and the vocabulary is padded to a multiple of 64 per rank.
    """
    total = 0
    for t in tensors:
        size = tensor_bytes(scheme, t, group_size)
        if t.role == "other":
            total += size
        elif t.role in ("embedding", "lm_head") and len(t.shape) == 2:
            vocab = t.shape[0]
            padded = math.ceil(vocab / (VOCAB_PADDING * tp)) * VOCAB_PADDING * tp
            total += math.ceil(size * padded / vocab / tp)
        else:
            total += math.ceil(size / tp)
    return total

"""A checkpoint's quantization_config, read into a plan: which scheme each weight matrix is stored in.

Each quant_method vLLM loads is mapped to a scheme of quant.py and to the list of modules the
checkpoint keeps in 16-bit (modules_to_not_convert, ignore, exclude_modules, ...). A method not
listed here is an error naming it: an estimate never silently reads a quantized model as bf16.

Sources: the config keys are those of transformers' quantizer configs (GPTQ, AWQ, bitsandbytes,
FineGrainedFP8, Mxfp4), of compressed-tensors (config_groups: targets, weights: num_bits, type,
strategy, group_size, block_structure; ignore) and of NVIDIA ModelOpt (quant_algo, group_size,
exclude_modules), as vLLM reads them (vllm/model_executor/layers/quantization/*.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from infbench.memory import quant
from infbench.memory.errors import EstimateError
from infbench.memory.params import TensorInfo

SUPPORTED_METHODS = (
    "gptq",
    "awq",
    "fp8",
    "bitsandbytes",
    "mxfp4",
    "compressed-tensors",
    "modelopt",
    "modelopt_fp4",
)


@dataclass(frozen=True)
class TargetRule:
    """Matrices matching `targets` are stored in `scheme` (compressed-tensors config groups)."""

    targets: tuple[str, ...]  # "Linear" (every block matrix) or module patterns ("re:..." or globs)
    scheme: str
    group_size: int | None = None


@dataclass(frozen=True)
class QuantPlan:
    """How a checkpoint stores its weights: one scheme, or rules per target, and what it skips."""

    scheme: str  # the main scheme (what the estimate reports as served)
    method: str  # the checkpoint's quant_method
    group_size: int | None = None
    skip: tuple[str, ...] = ()  # modules kept in 16-bit
    rules: tuple[TargetRule, ...] = ()  # empty: every block matrix in `scheme`
    notes: tuple[str, ...] = field(default=())

    def scheme_for(self, t: TensorInfo) -> str | None:
        """The scheme one tensor is stored in; None: 16-bit (not quantized)."""
        if not quant.quantizable(t):
            return None
        module = module_name(t.name)
        if self.skip and matches_any(module, self.skip):
            return None
        if not self.rules:
            return self.scheme
        for rule in self.rules:
            if "Linear" in rule.targets or matches_any(module, rule.targets):
                return rule.scheme
        return None

    def group_for(self, scheme: str) -> int | None:
        for rule in self.rules:
            if rule.scheme == scheme and rule.group_size:
                return rule.group_size
        return self.group_size


def module_name(tensor_name: str) -> str:
    """model.layers.0.self_attn.q_proj.weight -> model.layers.0.self_attn.q_proj; fused expert
    parameters (model.layers.0.mlp.experts.gate_up_proj) belong to the experts module."""
    return tensor_name.rsplit(".", 1)[0] if "." in tensor_name else tensor_name


def matches_any(module: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.match(pattern[3:], module):
                return True
        elif any(fnmatchcase(module, p) for p in (pattern, f"{pattern}.*", f"*.{pattern}", f"*.{pattern}.*")):
            return True
    return False


def read_plan(qc: dict[str, Any] | None) -> QuantPlan | None:
    """The plan for a config's quantization_config (None: not quantized)."""
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).strip().lower()
    reader = _READERS.get(method)
    if reader is None:
        raise EstimateError(
            f"quantization_config quant_method {method or '(none)'!r} is not modelled; the estimator "
            f"reads {', '.join(SUPPORTED_METHODS)} (or pass --dtype to price the weights yourself)"
        )
    return reader(qc, method)


def _skip(qc: dict[str, Any], *keys: str) -> tuple[str, ...]:
    found: list[str] = []
    for key in keys:
        value = qc.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(str(v) for v in value)
    return tuple(found)


def _bits(qc: dict[str, Any], method: str, allowed: dict[int, str]) -> str:
    bits = int(qc.get("bits", 4))
    if bits not in allowed:
        raise EstimateError(f"{method} with {bits}-bit weights is not modelled (only {sorted(allowed)} bits)")
    return allowed[bits]


def _group(qc: dict[str, Any]) -> int | None:
    value = qc.get("group_size") or qc.get("q_group_size")
    return int(value) if value else None


def _gptq(qc: dict[str, Any], method: str) -> QuantPlan:
    scheme = _bits(qc, method, {4: "gptq-int4", 8: "gptq-int8"})
    return QuantPlan(scheme, method, _group(qc), _skip(qc, "modules_to_not_convert"))


def _awq(qc: dict[str, Any], method: str) -> QuantPlan:
    scheme = _bits(qc, method, {4: "awq-int4"})
    return QuantPlan(scheme, method, _group(qc), _skip(qc, "modules_to_not_convert"))


def _fp8(qc: dict[str, Any], method: str) -> QuantPlan:
    block = qc.get("weight_block_size")
    skip = _skip(qc, "modules_to_not_convert", "ignored_layers")
    if not block:
        return QuantPlan("fp8", method, None, skip)
    if len(block) != 2 or block[0] != block[1] or int(block[0]) != 128:
        raise EstimateError(f"fp8 weight_block_size {block} is not modelled (only [128, 128])")
    return QuantPlan("fp8-block", method, None, skip)


def _bitsandbytes(qc: dict[str, Any], method: str) -> QuantPlan:
    skip = _skip(qc, "llm_int8_skip_modules")
    if qc.get("load_in_4bit"):
        return QuantPlan("nf4", method, None, skip)
    if qc.get("load_in_8bit"):
        return QuantPlan("int8", method, None, skip)
    raise EstimateError("bitsandbytes quantization_config sets neither load_in_4bit nor load_in_8bit")


def _mxfp4(qc: dict[str, Any], method: str) -> QuantPlan:
    return QuantPlan("mxfp4", method, None, _skip(qc, "modules_to_not_convert"))


def _compressed_tensors(qc: dict[str, Any], method: str) -> QuantPlan:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or not groups:
        raise EstimateError("compressed-tensors quantization_config has no config_groups")
    rules = []
    for name, group in groups.items():
        weights = (group or {}).get("weights") or {}
        scheme, size = _compressed_scheme(name, weights, qc.get("format"))
        targets = tuple(str(t) for t in (group.get("targets") or ["Linear"]))
        rules.append(TargetRule(targets, scheme, size))
    main = max(rules, key=lambda r: "Linear" in r.targets).scheme
    return QuantPlan(main, method, rules[0].group_size, _skip(qc, "ignore"), tuple(rules))


def _compressed_scheme(name: str, weights: dict[str, Any], fmt: Any) -> tuple[str, int | None]:
    bits, kind = int(weights.get("num_bits", 0) or 0), str(weights.get("type", "int"))
    strategy = str(weights.get("strategy", "tensor"))
    size = weights.get("group_size")
    what = f"compressed-tensors group {name!r} ({bits}-bit {kind}, strategy {strategy!r}, format {fmt!r})"
    if kind == "float" and bits == 8:
        if strategy == "tensor":
            return "fp8", None
        if strategy == "channel":
            return "fp8-channel", None
        if strategy == "block" and list(weights.get("block_structure") or []) == [128, 128]:
            return "fp8-block", None
    if kind == "float" and bits == 4 and strategy in ("tensor_group", "group") and (size or 16) == 16:
        return "nvfp4", None
    if kind == "int" and bits == 4 and strategy in ("group", "channel"):
        if not weights.get("symmetric", True):
            raise EstimateError(f"{what}: asymmetric int4 (zero points) is not modelled")
        return "int4-group", int(size) if strategy == "group" and size else -1
    if kind == "int" and bits == 8 and strategy in ("channel", "tensor"):
        return "int8", None
    raise EstimateError(f"{what} is not modelled")


def _modelopt(qc: dict[str, Any], method: str) -> QuantPlan:
    # config.json holds the keys flat; older checkpoints nest them under "quantization"
    # (hf_quant_config.json).
    inner = qc.get("quantization") if isinstance(qc.get("quantization"), dict) else qc
    algo = str(inner.get("quant_algo") or ("NVFP4" if method == "modelopt_fp4" else "")).upper()
    skip = _skip(inner, "exclude_modules", "ignore", "modules_to_not_convert")
    if algo == "FP8":
        return QuantPlan("fp8", method, None, skip)
    if algo == "NVFP4":
        size = int(inner.get("group_size") or 16)
        if size != 16:
            raise EstimateError(f"ModelOpt NVFP4 with group_size {size} is not modelled (only 16)")
        return QuantPlan("nvfp4", method, None, skip)
    if algo in ("FP8_PB_WO", "FP8_BLOCK"):
        return QuantPlan("fp8-block", method, None, skip)
    raise EstimateError(f"ModelOpt quant_algo {algo or '(none)'!r} is not modelled (FP8, NVFP4, FP8_PB_WO)")


_READERS = {
    "gptq": _gptq,
    "awq": _awq,
    "fp8": _fp8,
    "bitsandbytes": _bitsandbytes,
    "mxfp4": _mxfp4,
    "compressed-tensors": _compressed_tensors,
    "modelopt": _modelopt,
    "modelopt_fp4": _modelopt,
}


def plan_for(scheme: str, config_plan: QuantPlan | None) -> QuantPlan:
    """The plan for serving in `scheme`: the checkpoint's own when it is that scheme (its skip
    list and rules apply), else every block matrix in `scheme`."""
    if config_plan is not None and config_plan.scheme == scheme:
        return config_plan
    return QuantPlan(scheme, "--dtype")

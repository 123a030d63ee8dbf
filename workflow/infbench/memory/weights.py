"""Weights as stored and as vLLM holds them on each GPU, under a quantization plan.

The plan (quantconfig.py) says which scheme each matrix is stored in; the rest is 16-bit. On the
GPU vLLM splits block matrices and experts over the tensor-parallel ranks, replicates norms,
biases and routers, pads the vocabulary per rank, and pads MXFP4 expert dimensions to what its
MoE kernel needs on that GPU (vllm.py mxfp4_alignment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.facts import ModelFacts
from infbench.memory.gpus import GPU
from infbench.memory.params import TensorInfo
from infbench.memory.quantconfig import QuantPlan, module_name, plan_for


@dataclass
class WeightsModel:
    """One model's weights under one plan, with the per-tensor work done once."""

    facts: ModelFacts
    plan: QuantPlan
    group_size: int
    # (a tensor, its scheme, its bytes, how many tensors are like it)
    _stored: list[tuple[TensorInfo, str | None, int, int]] = field(default_factory=list, init=False)
    _resident: dict[tuple[int, tuple[int, int] | None], tuple[int, int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # Without a skip list or target rules a tensor's bytes depend on its shape and kind alone,
        # so tensors alike are priced once (a 235B MoE has ~1000 tensors of ~10 kinds).
        by_name = bool(self.plan.skip or self.plan.rules)
        kinds: dict[tuple, list] = {}
        for t in self.facts.params.tensors:
            key = (t.name,) if by_name else (t.shape, t.role, quant.quantizable(t), _is_expert(t))
            if key in kinds:
                kinds[key][3] += 1
            else:
                scheme = self._scheme_of(t)
                kinds[key] = [t, scheme, self._bytes(t, scheme), 1]
        self._stored = [tuple(kind) for kind in kinds.values()]

    def _scheme_of(self, t: TensorInfo) -> str | None:
        scheme = self.plan.scheme
        if quant.SCHEMES[scheme].layout in ("dense", "gguf"):
            return scheme  # every tensor in the dtype (dense) or every 2-D tensor (GGUF)
        return self.plan.scheme_for(t)

    def _bytes(self, t: TensorInfo, scheme: str | None) -> int:
        if scheme is None:
            return 2 * t.numel  # kept at the 16-bit activation dtype
        return quant.tensor_bytes(scheme, t, self.plan.group_for(scheme) or self.group_size)

    @property
    def stored_bytes(self) -> int:
        """The checkpoint's weights as stored (tied weights once)."""
        return sum(size * count for _, _, size, count in self._stored)

    def resident_bytes(self, tp: int = 1, gpu: GPU | None = None) -> int:
        """What one GPU holds at tensor-parallel size tp."""
        return self._per_gpu(tp, gpu)[0]

    def active_bytes(self, tp: int = 1, gpu: GPU | None = None) -> int:
        """What one GPU reads to decode one token of one request: everything but the experts the
        token is not routed to (top_k of each MoE layer's experts)."""
        return self._per_gpu(tp, gpu)[1]

    def _per_gpu(self, tp: int, gpu: GPU | None) -> tuple[int, int]:
        align = vllm_rules.mxfp4_alignment(gpu) if gpu is not None and self._pads_experts else None
        key = (tp, align)
        if key not in self._resident:
            moe = self.facts.moe
            routed = moe.top_k / moe.experts if moe else 1.0
            total = active = 0
            for t, scheme, size, count in self._stored:
                expert = moe is not None and _is_expert(t)
                if align is not None and expert:
                    t = self._padded(t, tp, align)
                    size = self._bytes(t, scheme)
                share = quant.resident_tensor_bytes(t, size, tp) * count
                total += share
                active += int(share * routed) if expert else share
            self._resident[key] = (total, active)
        return self._resident[key]

    @property
    def _pads_experts(self) -> bool:
        return self.plan.scheme == "mxfp4" and self.facts.moe is not None

    def _padded(self, t: TensorInfo, tp: int, align: tuple[int, int]) -> TensorInfo:
        """An expert tensor with its hidden and per-rank intermediate dimensions padded."""
        hidden, inter = self.facts.hidden_size, self.facts.moe.expert_intermediate if self.facts.moe else 0
        hidden_pad = vllm_rules.round_up(hidden, align[0])
        inter_pad = vllm_rules.round_up(max(inter // tp, 1), align[1]) * tp
        dims = []
        for i, d in enumerate(t.shape):
            if i == 0 and len(t.shape) >= 2 and d == (self.facts.moe.experts if self.facts.moe else -1):
                dims.append(d)  # the expert axis
            elif d == hidden:
                dims.append(hidden_pad)
            elif d == 2 * inter:
                dims.append(2 * inter_pad)
            elif d == inter:
                dims.append(inter_pad)
            else:
                dims.append(d)
        return TensorInfo(t.name, tuple(dims), t.role)


def _is_expert(t: TensorInfo) -> bool:
    return ".experts" in module_name(t.name) or module_name(t.name).endswith("experts")


def weights_model(facts: ModelFacts, scheme: str, group_size: int) -> WeightsModel:
    return WeightsModel(facts, plan_for(scheme, facts.quant), group_size)


def all_scheme_bytes(facts: ModelFacts, group_size: int) -> dict[str, int]:
    """The checkpoint's weights stored in every scheme (its own skip list where it is that scheme)."""
    return {name: weights_model(facts, name, group_size).stored_bytes for name in quant.SCHEMES}

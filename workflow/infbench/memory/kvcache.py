"""KV-cache bytes per token, from the model config alone.

Per attention layer and token the cache holds K and V for every KV head:
    2 * num_kv_heads * head_dim * bytes_per_element
MHA has num_kv_heads == num_attention_heads, GQA fewer, MQA one. MLA
(DeepSeek-style) caches one compressed latent of kv_lora_rank + rope dims.
Sliding-window layers stop growing at the window; layers without attention
(Mamba, linear attention) keep a fixed state and cost nothing per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infbench.memory.errors import EstimateError

# layer_types values (transformers configs) that cache nothing per token.
_STATE_LAYERS = {"linear_attention", "mamba", "mamba2", "conv", "recurrent", "ssm", "moe_ssm", "hybrid_mamba"}


@dataclass(frozen=True)
class LayerKV:
    """What one layer caches per token."""

    kind: str  # "full", "sliding" or "none"
    window: int | None  # tokens kept by a sliding layer
    kv_heads: int
    elems_per_head: int  # K + V elements per head and token
    replicated: bool  # MLA latents are not split across tensor-parallel ranks

    def elems_per_token(self, tp: int = 1) -> int:
        if self.kind == "none":
            return 0
        heads = self.kv_heads if self.replicated else max(1, self.kv_heads // tp)
        return heads * self.elems_per_head


@dataclass(frozen=True)
class KVLayout:
    """The KV-cache shape of a whole model."""

    attention: str  # "MHA", "GQA", "MQA" or "MLA"
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    layers: tuple[LayerKV, ...]
    notes: tuple[str, ...] = ()

    def bytes_per_token(self, dtype_bytes: int, tp: int = 1) -> int:
        """Bytes one more token costs (per GPU at tensor-parallel size tp),
        counting every caching layer, as while the context is within windows."""
        return sum(layer.elems_per_token(tp) for layer in self.layers) * dtype_bytes

    def bytes_for_context(self, tokens: int, dtype_bytes: int, tp: int = 1) -> int:
        """Bytes one sequence of `tokens` tokens holds (per GPU)."""
        total = 0
        for layer in self.layers:
            kept = tokens if layer.window is None else min(tokens, layer.window)
            total += kept * layer.elems_per_token(tp)
        return total * dtype_bytes

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
        return counts

    def windows(self) -> list[int]:
        return sorted({layer.window for layer in self.layers if layer.window is not None})


def kv_layout(config: Any) -> KVLayout:
    """Read layers, KV heads, head_dim and per-layer attention type from a config."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = _int_attr(cfg, "num_hidden_layers")
    num_heads = _int_attr(cfg, "num_attention_heads")
    hidden = _int_attr(cfg, "hidden_size")
    notes: list[str] = []

    kv_lora_rank = getattr(cfg, "kv_lora_rank", None)
    if kv_lora_rank:
        # MLA caches one latent (plus the decoupled rope key) shared by all heads.
        rope_dim = int(getattr(cfg, "qk_rope_head_dim", 0) or 0)
        per_layer = LayerKV("full", None, 1, int(kv_lora_rank) + rope_dim, True)
        notes.append(f"MLA: caches kv_lora_rank {kv_lora_rank} + rope dim {rope_dim} per layer")
        layers = tuple(_apply_type(per_layer, t, cfg, notes) for t in _layer_types(cfg, num_layers))
        return KVLayout("MLA", num_layers, num_heads, 1, int(kv_lora_rank) + rope_dim, layers, tuple(notes))

    kv_heads = _kv_heads(cfg, num_heads)
    head_dim = getattr(cfg, "head_dim", None)
    head_dim = int(head_dim) if head_dim else hidden // num_heads
    # Some configs give distinct K and V head sizes; default to head_dim for both.
    k_dim = int(getattr(cfg, "qk_head_dim", None) or head_dim)
    v_dim = int(getattr(cfg, "v_head_dim", None) or head_dim)
    base = LayerKV("full", None, kv_heads, k_dim + v_dim, False)
    layers = tuple(_apply_type(base, t, cfg, notes) for t in _layer_types(cfg, num_layers))
    if kv_heads == num_heads:
        attention = "MHA"
    elif kv_heads == 1:
        attention = "MQA"
    else:
        attention = "GQA"
    return KVLayout(attention, num_layers, num_heads, kv_heads, head_dim, layers, tuple(notes))


def _int_attr(cfg: Any, name: str) -> int:
    value = getattr(cfg, name, None)
    if value is None:
        raise EstimateError(f"config of model_type {cfg.model_type!r} has no {name}")
    return int(value)


def _kv_heads(cfg: Any, num_heads: int) -> int:
    """KV heads, following each architecture's own switch for MQA/GQA."""
    model_type = getattr(cfg, "model_type", "")
    if model_type == "falcon":
        # Falcon-7B: multi_query with the old decoder => one KV head;
        # the "new decoder architecture" (40B/180B) uses num_kv_heads groups.
        if getattr(cfg, "new_decoder_architecture", False):
            return int(cfg.num_kv_heads)
        return 1 if getattr(cfg, "multi_query", False) else num_heads
    if model_type == "mpt":
        attn = getattr(cfg, "attn_config", None)
        attn_type = getattr(attn, "attn_type", "multihead_attention")
        if attn_type == "multiquery_attention":
            return 1
        if attn_type == "grouped_query_attention":
            return int(getattr(attn, "kv_n_heads", num_heads))
        return num_heads
    if model_type == "gpt_bigcode":
        return 1 if getattr(cfg, "multi_query", False) else num_heads
    if model_type == "chatglm" and getattr(cfg, "multi_query_attention", False):
        return int(cfg.multi_query_group_num)
    for name in ("num_key_value_heads", "num_kv_heads", "n_head_kv"):
        value = getattr(cfg, name, None)
        if value:
            return int(value)
    return num_heads


def _layer_types(cfg: Any, num_layers: int) -> list[str]:
    types = getattr(cfg, "layer_types", None)
    if types:
        if len(types) != num_layers:
            raise EstimateError(f"config layer_types has {len(types)} entries for {num_layers} layers")
        return list(types)
    # Mistral-style: one sliding_window for every layer (unless switched off).
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True):
        return ["sliding_attention"] * num_layers
    return ["full_attention"] * num_layers


def _apply_type(base: LayerKV, layer_type: str, cfg: Any, notes: list[str]) -> LayerKV:
    if layer_type == "full_attention":
        return base
    if layer_type in ("sliding_attention", "chunked_attention"):
        window = (
            getattr(cfg, "attention_chunk_size", None)
            if layer_type == "chunked_attention"
            else getattr(cfg, "sliding_window", None)
        )
        if not window:
            return base
        return LayerKV("sliding", int(window), base.kv_heads, base.elems_per_head, base.replicated)
    if layer_type in _STATE_LAYERS:
        return LayerKV("none", None, 0, 0, base.replicated)
    note = f"unknown layer type {layer_type!r} counted as full attention"
    if note not in notes:
        notes.append(note)
    return base

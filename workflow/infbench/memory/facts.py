"""Reading the model: parameter counts, KV layout and the sizes the fit needs, from its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infbench.memory import quant
from infbench.memory.errors import EstimateError
from infbench.memory.kvcache import KVLayout, kv_layout
from infbench.memory.params import ParamCount, count_params, load_config


@dataclass(frozen=True)
class ModelFacts:
    """Everything read from the model: counts, KV layout and a few sizes."""

    name: str
    source: str
    model_type: str
    params: ParamCount
    kv: KVLayout
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    max_context: int | None
    model_dtype: str | None  # config torch_dtype as a scheme name
    quantized_as: str | None  # scheme named by the config's quantization_config
    quant_group_size: int | None = None  # GPTQ/AWQ group size from quantization_config


def model_facts(model: str, name: str | None = None) -> ModelFacts:
    source = load_config(model)
    cfg = source.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    params = count_params(source)
    hidden = int(text.hidden_size)
    return ModelFacts(
        name=name or _default_name(model),
        source=source.description,
        model_type=str(cfg.model_type),
        params=params,
        kv=kv_layout(cfg),
        hidden_size=hidden,
        intermediate_size=_intermediate_size(text, hidden),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        max_context=_max_context(text),
        model_dtype=_model_dtype(cfg),
        quantized_as=_quantized_as(cfg),
        quant_group_size=_quant_group_size(cfg),
    )


def _default_name(model: str) -> str:
    name = model.rstrip("/").split("/")[-1]
    return name.removesuffix(".json") if name != "config.json" else model.rstrip("/").split("/")[-2]


def _intermediate_size(cfg: Any, hidden: int) -> int:
    for attr in ("intermediate_size", "ffn_hidden_size", "ffn_dim", "n_inner"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    ratio = getattr(cfg, "expansion_ratio", None)  # MPT
    return int(ratio * hidden) if ratio else 4 * hidden


def _max_context(cfg: Any) -> int | None:
    for attr in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    return None


def _model_dtype(cfg: Any) -> str | None:
    value = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    if value is None:
        return None
    try:
        return quant.parse_weight_dtype(str(value))
    except EstimateError:
        return None


def _quant_config(cfg: Any) -> dict[str, Any] | None:
    qc = getattr(cfg, "quantization_config", None)
    if qc is None:
        return None
    return qc if isinstance(qc, dict) else qc.to_dict()


def _quantized_as(cfg: Any) -> str | None:
    qc = _quant_config(cfg)
    if qc is None:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method in ("gptq", "awq") and qc.get("bits", 4) == 4:
        return f"{method}-int4"
    if method == "fp8":
        return "fp8"
    if method == "bitsandbytes":
        return "nf4" if qc.get("load_in_4bit") else "int8"
    return None


def _quant_group_size(cfg: Any) -> int | None:
    qc = _quant_config(cfg)
    value = None if qc is None else (qc.get("group_size") or qc.get("q_group_size"))
    return int(value) if value else None

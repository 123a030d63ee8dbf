"""Reading the model: parameter counts, KV layout, MoE shape, quantization and the sizes the fit
needs, from its config. Facts of a local config are cached by content (memory/factcache.py), so a
second estimate of the same model needs neither torch nor transformers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from infbench.memory import factcache, quant
from infbench.memory.errors import EstimateError
from infbench.memory.kvcache import KVLayout, LayerKV, kv_layout
from infbench.memory.params import ParamCount, TensorInfo, count_params, load_config
from infbench.memory.quantconfig import QuantPlan, TargetRule, read_plan


@dataclass(frozen=True)
class MoeShape:
    """A mixture-of-experts model's expert layout, as the config states it."""

    experts: int  # routed experts per MoE layer
    top_k: int  # experts each token is routed to
    expert_intermediate: int  # one expert's MLP width (moe_intermediate_size)
    shared_intermediate: int  # width of the always-on shared expert(s); 0 if none
    moe_layers: int
    dense_layers: int  # layers with a dense MLP instead (first_k_dense_replace, mlp_only_layers)


@dataclass(frozen=True)
class ModelFacts:
    """Everything read from the model: counts, KV layout and a few sizes."""

    name: str
    source: str
    model_type: str
    params: ParamCount
    kv: KVLayout
    hidden_size: int
    intermediate_size: int  # the dense MLP width (unused by MoE layers)
    vocab_size: int
    max_context: int | None
    model_dtype: str | None  # config torch_dtype as a scheme name
    quant: QuantPlan | None = None  # the checkpoint's quantization_config
    moe: MoeShape | None = None

    @property
    def quantized_as(self) -> str | None:
        return self.quant.scheme if self.quant else None

    @property
    def quant_group_size(self) -> int | None:
        return self.quant.group_size if self.quant else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFacts:
        p, kv, q, moe = d["params"], d["kv"], d.get("quant"), d.get("moe")
        return cls(
            **{k: d[k] for k in ("name", "source", "model_type", "hidden_size", "intermediate_size", "vocab_size")},
            max_context=d["max_context"],
            model_dtype=d["model_dtype"],
            params=ParamCount(
                tuple(TensorInfo(t["name"], tuple(t["shape"]), t["role"]) for t in p["tensors"]),
                p["source"],
                p["tied_embeddings"],
                p["checkpoint_bytes"],
            ),
            kv=KVLayout(
                **{k: kv[k] for k in ("attention", "num_layers", "num_heads", "num_kv_heads", "head_dim")},
                layers=tuple(LayerKV(**layer) for layer in kv["layers"]),
                notes=tuple(kv["notes"]),
            ),
            quant=None
            if q is None
            else QuantPlan(
                q["scheme"],
                q["method"],
                q["group_size"],
                tuple(q["skip"]),
                tuple(TargetRule(tuple(r["targets"]), r["scheme"], r["group_size"]) for r in q["rules"]),
                tuple(q["notes"]),
            ),
            moe=None if moe is None else MoeShape(**moe),
        )


def model_facts(model: str, name: str | None = None) -> ModelFacts:
    """Facts of MODEL (hub id, local directory or config.json), from the cache when it has them."""
    key = factcache.key_for(model)
    cached = factcache.load(key) if key is not None else None
    if cached is not None:
        try:
            return replace(ModelFacts.from_dict(cached), name=name or _default_name(model), source=model)
        except (KeyError, TypeError, ValueError):
            pass  # an entry of another shape: read the model again and rewrite it
    facts = _read_facts(model, name)
    if key is not None:
        factcache.store(key, facts.to_dict())
    return facts


def _read_facts(model: str, name: str | None) -> ModelFacts:
    source = load_config(model)
    cfg = source.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    plan = read_plan(_quant_config(cfg))  # an unknown quant_method fails here, before the count
    params = count_params(source)
    hidden = int(text.hidden_size)
    kv = kv_layout(cfg)
    return ModelFacts(
        name=name or _default_name(model),
        source=source.description,
        model_type=str(cfg.model_type),
        params=params,
        kv=kv,
        hidden_size=hidden,
        intermediate_size=_intermediate_size(text, hidden),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        max_context=_max_context(text),
        model_dtype=_model_dtype(cfg),
        quant=plan,
        moe=_moe_shape(text, kv.num_layers, hidden),
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


def _first(cfg: Any, *names: str) -> int:
    for attr in names:
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _moe_shape(cfg: Any, num_layers: int, hidden: int) -> MoeShape | None:
    """Experts, top-k and widths under the names the MoE families use (Mixtral/gpt-oss
    num_local_experts, Qwen num_experts, DeepSeek n_routed_experts)."""
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    top_k = _first(cfg, "num_experts_per_tok", "experts_per_token", "moe_top_k", "top_k")
    if experts <= 1 or top_k <= 0:
        return None
    width = _first(cfg, "moe_intermediate_size", "expert_intermediate_size") or _intermediate_size(cfg, hidden)
    shared = _first(cfg, "shared_expert_intermediate_size")
    if not shared:
        shared = _first(cfg, "n_shared_experts", "num_shared_experts") * width
    dense = _first(cfg, "first_k_dense_replace")
    only = getattr(cfg, "mlp_only_layers", None) or []
    step = _first(cfg, "decoder_sparse_step") or 1
    moe_layers = sum(
        1 for i in range(num_layers) if i >= dense and i not in only and (i + 1) % step == 0
    )  # Qwen's rule: layer i is sparse when (i + 1) % decoder_sparse_step == 0
    return MoeShape(experts, top_k, width, shared, moe_layers, num_layers - moe_layers)


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

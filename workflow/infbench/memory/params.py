"""Exact parameter counts, without downloading or allocating weights.

Two sources:
  * meta device: the model class transformers picks for the config is built
    on torch's "meta" device (shapes only, no storage). Tied weights are the
    same Parameter object after the model ties them, so counting unique
    parameters counts a tied lm_head once, exactly as the model does.
  * safetensors headers: when the weights are local, each file starts with a
    little-endian u64 header length and a JSON header listing every tensor's
    dtype and shape; reading that is exact for what is on disk.

Each tensor gets a role, because quantization schemes treat them differently:
  linear     matrices of the transformer blocks (what GPTQ/AWQ/fp8 quantize)
  embedding  input (and learned position) embeddings
  lm_head    an untied output projection
  router     an MoE router (gate) matrix: replicated on every rank, kept 16-bit
  other      1-D tensors: norms and biases
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from infbench.memory.errors import EstimateError

ROLES = ("linear", "embedding", "lm_head", "router", "other")

# Module names of MoE routers (Qwen/DeepSeek/Mixtral "gate", gpt-oss "router").
_ROUTER_NAMES = ("gate", "router")

# safetensors dtype tag -> bytes per element
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}

# Name fragments that mark embeddings / output heads in checkpoints whose
# module tree we do not walk (safetensors path).
_EMBEDDING_NAMES = (
    "embed_tokens",
    "wte",
    "wpe",
    "word_embeddings",
    "embed_in",
    "tok_embeddings",
    "embed_positions",
    "position_embeddings",
)
_HEAD_NAMES = ("lm_head", "embed_out")


@dataclass(frozen=True)
class TensorInfo:
    """One weight tensor: its checkpoint name, shape and role."""

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ParamCount:
    """All weight tensors of a model, each counted once."""

    tensors: tuple[TensorInfo, ...]
    source: str  # "meta" or "safetensors"
    tied_embeddings: bool
    checkpoint_bytes: int | None = None  # bytes on disk (safetensors only)

    @property
    def total(self) -> int:
        return sum(t.numel for t in self.tensors)

    def by_role(self) -> dict[str, int]:
        counts = {role: 0 for role in ROLES}
        for t in self.tensors:
            counts[t.role] += t.numel
        return counts


@dataclass(frozen=True)
class ModelSource:
    """Where the config came from and, if local, where the weights may be."""

    config: Any  # transformers PretrainedConfig
    description: str  # shown to the user, e.g. the config path
    model_dir: Path | None  # a local directory that may hold *.safetensors


def _require(module: str) -> Any:
    """Import torch/transformers lazily, with an error that says how to get them."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EstimateError(
            f"the estimator needs torch and transformers, which {sys.executable} lacks ({exc}); "
            "install them (pip install 'infbench[estimate]') or use the tools venv's python"
        ) from None


def load_config(model: str) -> ModelSource:
    """Resolve MODEL (hub id, local directory or config.json file) to a config."""
    _require("transformers")
    path = Path(model)
    if path.is_file():
        return ModelSource(config_from_file(path), str(path), path.parent)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EstimateError(f"model directory {model} has no config.json")
        return ModelSource(config_from_file(path / "config.json"), str(path), path)
    if model.endswith(".json") or model.startswith((".", "/", "~")):
        raise EstimateError(f"model path {model} does not exist")
    config = _config_from_hub(model)
    return ModelSource(config, f"hub:{model}", None)


def _config_from_hub(model: str) -> Any:
    """Hub config: from the local HF cache first, then online if the hub resolves."""
    AutoConfig = _require("transformers").AutoConfig

    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except Exception:  # not cached (or not a valid id): try the network below
        pass
    # Without DNS the hub client retries for ~25 s; fail at once instead.
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    reachable = not offline
    if reachable:
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            reachable = False
    error = "hub unreachable"
    if reachable:
        try:
            return AutoConfig.from_pretrained(model)
        except Exception as exc:  # hub errors come in many types; all mean the same here
            error = type(exc).__name__
    raise EstimateError(
        f"cannot fetch config for {model}: no network or gated; pass a local config.json or directory ({error})"
    )


def config_from_file(path: Path) -> Any:
    """Build a transformers config from a config.json file, without network."""
    AutoConfig = _require("transformers").AutoConfig

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EstimateError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise EstimateError(f"config {path} has no model_type")
    data = dict(data)
    model_type = data.pop("model_type")
    transformers = _require("transformers")
    transformers.logging.set_verbosity_error()  # deprecation chatter is not the user's business
    if model_type not in transformers.CONFIG_MAPPING:
        raise EstimateError(
            f"config {path}: model_type {model_type!r} is not an architecture transformers "
            f"{transformers.__version__} knows (custom-code models are not read)"
        )
    try:
        return AutoConfig.for_model(model_type, **data)
    except Exception as exc:  # bad values raise many types; each means the config is unreadable
        raise EstimateError(f"config {path} (model_type {model_type!r}): {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def count_params(source: ModelSource) -> ParamCount:
    """Count from local safetensors when present and unquantized, else on meta."""
    quantized = getattr(source.config, "quantization_config", None) is not None
    if source.model_dir is not None and not quantized:
        counted = count_safetensors(source.model_dir)
        if counted is not None:
            return counted
    # Quantized checkpoints store packed tensors (qweight, scales...), so their
    # header shapes are not parameter counts: count the architecture instead.
    return count_meta(source.config)


def count_meta(config: Any) -> ParamCount:
    """Instantiate the model on the meta device and count unique parameters."""
    nn = _require("torch.nn")

    model = _build_on_meta(config)
    in_emb = _call_or_none(model.get_input_embeddings)
    out_emb = _call_or_none(model.get_output_embeddings)
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head_id = id(out_emb.weight) if out_emb is not None else None
    tied = out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight

    tensors: list[TensorInfo] = []
    # named_parameters() yields a shared (tied) Parameter only once.
    for name, p in model.named_parameters():
        shape = tuple(int(s) for s in p.shape)
        if id(p) in embedding_ids:
            role = "embedding"
        elif id(p) == head_id:
            role = "lm_head"
        elif p.dim() >= 2:
            role = "router" if _is_router(name) else "linear"
        else:
            role = "other"
        tensors.append(TensorInfo(name, shape, role))
    return ParamCount(tuple(tensors), "meta", tied)


def _call_or_none(getter: Any) -> Any:
    # Some architectures (encoders, custom heads) do not implement these.
    try:
        return getter()
    except (NotImplementedError, AttributeError):
        return None


def _build_on_meta(config: Any) -> Any:
    """The model class transformers would load for this config, on meta."""
    torch = _require("torch")
    transformers = _require("transformers")
    errors = []
    # Causal LM first (what inference engines serve), then wider fallbacks.
    for auto in (
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForImageTextToText,
        transformers.AutoModelForSeq2SeqLM,
        transformers.AutoModel,
    ):
        try:
            with torch.device("meta"):
                return auto.from_config(config)
        except ValueError as exc:  # "Unrecognized configuration class ..."
            errors.append(f"{auto.__name__}: {_first_line(exc)}")
        except Exception as exc:  # the config's values do not build a model: say which, once
            raise EstimateError(
                f"transformers cannot build model_type {config.model_type!r} from this config: {_first_line(exc)}"
            ) from None
    raise EstimateError(f"transformers cannot build model_type {config.model_type!r}: " + "; ".join(errors))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file (tensor name -> dtype/shape)."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise EstimateError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 2**20:  # real headers are KiB to a few MiB
            raise EstimateError(f"{path} is not a safetensors file (header {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except json.JSONDecodeError as exc:
            raise EstimateError(f"{path}: bad safetensors header: {exc}") from None
    header.pop("__metadata__", None)
    return header


def count_safetensors(model_dir: Path) -> ParamCount | None:
    """Count parameters from all *.safetensors headers in model_dir, or None."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    tensors: list[TensorInfo] = []
    disk_bytes = 0
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            shape = tuple(int(s) for s in entry["shape"])
            tensors.append(TensorInfo(name, shape, _role_from_name(name, shape)))
            disk_bytes += math.prod(shape) * SAFETENSORS_DTYPE_BYTES.get(entry["dtype"], 0)
    # save_pretrained drops a tied lm_head, so "no head on disk" means tied.
    tied = not any(t.role == "lm_head" for t in tensors)
    return ParamCount(tuple(tensors), "safetensors", tied, disk_bytes)


def _role_from_name(name: str, shape: tuple[int, ...]) -> str:
    if len(shape) < 2:
        return "other"
    parts = name.split(".")
    if any(part in _HEAD_NAMES for part in parts) or name == "output.weight":
        return "lm_head"
    if any(part in _EMBEDDING_NAMES for part in parts):
        return "embedding"
    return "router" if _is_router(name) else "linear"


def _is_router(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-2] in _ROUTER_NAMES and parts[-1] == "weight"

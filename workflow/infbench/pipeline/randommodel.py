"""A model with seeded random weights, built from an architecture config (model source `random:`).

No weights are downloaded, so any architecture can be benchmarked at its true size: an engine's
speed depends on the shapes, not on the values. What is written is an ordinary HF-format directory:

  config.json                   the architecture config, with the served dtype
  model.safetensors             every parameter, in the order and under the names the model uses
  tokenizer.json (+ config)     a byte-level BPE trained on the builtin prompts, padded to vocab_size
  generation_config.json        the config's bos/eos/pad ids

The tensor list is the estimator's own (infbench.memory.params.count_meta: the model on torch's meta
device, tied weights once), so the parameter count equals `infbench estimate` exactly. Tensors are
generated one chunk at a time and streamed to the safetensors file, whose header is known up front:
host memory stays at one chunk (64 MiB of float32), however big the model.

Runs in the tools venv (torch, transformers, tokenizers); imports them only when called.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from infbench.pipeline.prompts import load_source

# safetensors dtype tags of the dtypes a model may be served in
SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
BYTES_PER_ELEMENT = {"bfloat16": 2, "float16": 2, "float32": 4}
CHUNK_ELEMENTS = 16 * 2**20  # generated at a time (float32: 64 MiB)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_NAMES = {"bos_token_id": "<|bos|>", "eos_token_id": "<|eos|>", "pad_token_id": "<|pad|>"}


class RandomModelError(ValueError):
    pass


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    init: str  # normal (matrices: uniform with the init std) | ones (norm weights) | zeros (biases)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_architecture(path: Path) -> dict:
    """The architecture config.json as a dict; a clear error when it is missing or not a config."""
    if not path.is_file():
        raise RandomModelError(f"architecture config {path} does not exist (random: needs a config.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RandomModelError(f"architecture config {path} is not JSON: {err}") from None
    missing = [key for key in ("model_type", "vocab_size") if not isinstance(data, dict) or key not in data]
    if missing:
        raise RandomModelError(f"architecture config {path} has no {' and no '.join(missing)}")
    return data


def plan_tensors(config) -> list[PlannedTensor]:
    """Every parameter the model has, each once (tied weights once), as the estimator counts them."""
    from infbench.memory.params import count_meta

    planned = []
    for tensor in count_meta(config).tensors:
        if len(tensor.shape) >= 2:
            init = "normal"
        else:
            init = "zeros" if tensor.name.endswith("bias") else "ones"
        planned.append(PlannedTensor(tensor.name, tensor.shape, init))
    return planned


def _tensor_seed(seed: int, name: str) -> int:
    # sha256: the same seed per tensor name on every machine, whatever the tensor order.
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def write_random_safetensors(
    path: Path, tensors: list[PlannedTensor], dtype: str, seed: int, std: float, device: str = "cpu"
) -> int:
    """Stream seeded random tensors into one safetensors file; returns its size in bytes.

    device "cuda" draws on the GPU (a 7B model in seconds instead of a minute); the values are then
    those of CUDA's generator, reproducible on the same GPU and torch, not equal to a CPU build's."""
    import torch

    torch_dtype = getattr(torch, dtype)
    width = BYTES_PER_ELEMENT[dtype]
    header: dict = {"__metadata__": {"format": "pt", "infbench": f"random weights, seed {seed}, drawn on {device}"}}
    offset = 0
    for tensor in tensors:
        size = tensor.numel * width
        header[tensor.name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes with spaces
    # Uniform in [-a, a] has the init's std when a = std * sqrt(3), and draws ~4x faster than normal.
    bound = std * math.sqrt(3.0)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for tensor in tensors:
            generator = torch.Generator(device=device).manual_seed(_tensor_seed(seed, tensor.name))
            remaining = tensor.numel
            while remaining:
                count = min(remaining, CHUNK_ELEMENTS)
                if tensor.init == "normal":
                    chunk = torch.empty(count, dtype=torch.float32, device=device)
                    chunk = chunk.uniform_(-bound, bound, generator=generator).to(torch_dtype).cpu()
                else:
                    chunk = (torch.ones if tensor.init == "ones" else torch.zeros)(count, dtype=torch_dtype)
                out.write(chunk.view(torch.uint8).numpy())  # the buffer itself: no copy
                remaining -= count
                del chunk
    return path.stat().st_size


def special_tokens(arch: dict) -> dict[int, str]:
    """id -> token text for the config's bos/eos/pad ids (one token where ids coincide)."""
    specials: dict[int, str] = {}
    for key, name in SPECIAL_NAMES.items():
        ids = arch.get(key)
        for token_id in ids if isinstance(ids, list) else [ids]:
            if isinstance(token_id, int) and 0 <= token_id < arch["vocab_size"]:
                specials.setdefault(token_id, name)
    return specials


def train_tokenizer(vocab_size: int, specials: dict[int, str]):
    """A byte-level BPE trained on the builtin prompts (deterministic), then laid out to exactly
    vocab_size ids: the config's special ids where the config puts them, trained tokens in
    training order, and never-produced `<|unused_N|>` entries up to vocab_size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise RandomModelError(
            f"vocab_size {vocab_size} is too small for a byte-level tokenizer "
            f"({len(alphabet)} bytes + {len(specials)} special tokens)"
        )
    texts = [message["content"] for prompt in load_source("builtin") for message in prompt.messages]
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials), initial_alphabet=alphabet, show_progress=False, min_frequency=1
    )
    trained.train_from_iterator(texts, trainer=trainer)
    data = json.loads(trained.to_str())
    ordered = [token for token, _ in sorted(data["model"]["vocab"].items(), key=lambda item: item[1])]
    vocab: dict[str, int] = {}
    next_trained = iter(ordered)
    unused = 0
    for token_id in range(vocab_size):
        if token_id in specials:
            vocab[specials[token_id]] = token_id
            continue
        token = next(next_trained, None)
        if token is None:
            token, unused = f"<|unused_{unused}|>", unused + 1
        vocab[token] = token_id
    data["model"]["vocab"] = vocab
    data["added_tokens"] = [
        {
            "id": token_id,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token_id, name in sorted(specials.items())
    ]
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.decoder = decoders.ByteLevel()
    if tokenizer.get_vocab_size(with_added_tokens=True) != vocab_size:
        raise RandomModelError(f"tokenizer has {tokenizer.get_vocab_size()} ids, not vocab_size {vocab_size}")
    return tokenizer


def _write_tokenizer(work: Path, arch: dict, max_len: int) -> None:
    specials = special_tokens(arch)
    tokenizer = train_tokenizer(arch["vocab_size"], specials)
    tokenizer.save(str(work / "tokenizer.json"))
    names = {
        key: SPECIAL_NAMES[key] for key in SPECIAL_NAMES if isinstance(arch.get(key), int) and arch[key] in specials
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        **{key.replace("_id", ""): specials[arch[key]] for key in names},
    }
    (work / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_random_model(architecture: Path, dtype: str, seed: int, work: Path, device: str = "cpu") -> int:
    """Write config, random weights and tokenizer into work; returns the parameter count."""
    from infbench.memory.params import config_from_file

    if dtype not in SAFETENSORS_DTYPES:
        raise RandomModelError(f"random weights need a concrete dtype (bfloat16, float16, float32), not {dtype!r}")
    arch = read_architecture(architecture)
    config = config_from_file(architecture)
    tensors = plan_tensors(config)
    std = float(arch.get("initializer_range") or 0.02)
    write_random_safetensors(work / "model.safetensors", tensors, dtype, seed, std, device)
    config.dtype = dtype
    config.save_pretrained(work)
    specials = special_tokens(arch)
    generation = {key: arch[key] for key in SPECIAL_NAMES if arch.get(key) is not None}
    generation["eos_token_id"] = arch.get("eos_token_id", next(iter(specials), None))
    (work / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    max_len = int(arch.get("max_position_embeddings") or arch.get("max_seq_len") or 2048)
    _write_tokenizer(work, arch, max_len)
    (work / "RANDOM_WEIGHTS.txt").write_text(
        f"Seeded random weights (seed {seed}, drawn on {device}) for the architecture in {architecture}: "
        "for speed and memory measurements only, never for output quality.\n"
    )
    return sum(t.numel for t in tensors)

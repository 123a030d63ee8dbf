"""Write a prepared HF-format model as a GGUF file at the dtype the other engines serve.

llama.cpp serves GGUF only. So that its column compares the same weights as the others, the
`gguf` rule writes the prepared safetensors (not the original, possibly quantized, source) at the
model's serve dtype (F32, F16 or BF16), with the `gguf` package's writer and vocabulary readers.
Runs in the tools venv (torch, safetensors, gguf). Architectures it cannot write get a reason in
results/models/{model}.gguf.json instead of a file; the llama.cpp cell then says why.

  python -m infbench.pipeline.gguf_export --model-dir DIR --dtype float32 --out F.gguf --meta M.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from infbench.handoff import GgufMeta

# HF architectures llama.cpp runs as "llama": same tensors, rotary Q/K stored per head interleaved.
LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
GGUF_TYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "auto": "F32"}


def permute_rotary(weight, n_head: int):
    """HF keeps each head's rotary halves apart ([x0..x(d/2-1), x(d/2)..]); GGUF's llama graph
    expects them as pairs (x0, x(d/2)), (x1, x(d/2+1)), ...: reorder the rows of a Q or K weight."""
    rows = weight.shape[0]
    head_dim = rows // n_head
    return weight.reshape(n_head, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tokenizer_pre_of(model_dir: Path) -> str:
    """The pre-tokenizer llama.cpp should use: recorded by the models rule when the model came from
    a GGUF (exact), else 'default' (llama.cpp's generic BPE split)."""
    recorded = model_dir / "infbench_gguf_source.json"
    if recorded.exists():
        pre = json.loads(recorded.read_text()).get("tokenizer.ggml.pre")
        if pre:
            return pre
    return "default"


def _vocab(model_dir: Path):
    from gguf.vocab import BpeVocab, LlamaHfVocab

    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    model = tokenizer.get("model", {})
    if model.get("type") == "BPE" and not model.get("byte_fallback", False):
        return BpeVocab(model_dir)
    return LlamaHfVocab(model_dir)


def _load_state(model_dir: Path) -> dict:
    """All tensors of the prepared model (every safetensors shard), as saved."""
    from safetensors.torch import load_file

    state: dict = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    return state


def write_gguf(model_name: str, model_dir: Path, dtype: str, out: Path, meta_path: Path) -> GgufMeta:
    import gguf
    import numpy as np
    import torch

    config = json.loads((model_dir / "config.json").read_text())
    architectures = config.get("architectures") or []
    # transformers 5 keeps rotary settings under rope_parameters; older configs at the top level.
    rope = {**{k: config[k] for k in ("rope_theta",) if k in config}, **(config.get("rope_parameters") or {})}
    rope_type = (config.get("rope_scaling") or {}).get("rope_type") or rope.get("rope_type") or "default"
    unsupported = None
    if not any(a in LLAMA_ARCHITECTURES for a in architectures):
        unsupported = f"n/a: no GGUF writer for {', '.join(architectures) or 'this architecture'}"
    elif rope_type != "default":
        unsupported = f"n/a: no GGUF writer for rope scaling {rope_type!r}"
    if unsupported:
        meta = GgufMeta(
            model=model_name,
            status="unsupported",
            reason=unsupported,
            path=None,
            file_type=None,
            source_dtype=None,
            tokenizer=None,
            tokenizer_pre=None,
            sha256=None,
            size_bytes=None,
        )
        meta.write(meta_path)
        return meta

    file_type = GGUF_TYPES[dtype]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    n_blocks = config["num_hidden_layers"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    arch = gguf.MODEL_ARCH.LLAMA
    names = gguf.get_tensor_name_map(arch, n_blocks)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_blocks)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(
        {
            "F32": gguf.LlamaFileType.ALL_F32,
            "F16": gguf.LlamaFileType.MOSTLY_F16,
            "BF16": gguf.LlamaFileType.MOSTLY_BF16,
        }[file_type]
    )

    vocab = _vocab(model_dir)
    tokens, scores, types = [], [], []
    for text, score, token_type in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(token_type)
    # Special tokens that sit in the base vocabulary (<|im_start|>, ...) must be CONTROL, else
    # llama.cpp splits them into characters when it renders the chat template.
    for added in json.loads((model_dir / "tokenizer.json").read_text()).get("added_tokens", []):
        if added.get("special") and added["id"] < len(types):
            types[added["id"]] = gguf.TokenType.CONTROL
    pre = _tokenizer_pre_of(model_dir)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=len(tokens))
    # The EOS the other engines stop at: generation_config's first eos id, when it names one.
    generation = model_dir / "generation_config.json"
    if generation.exists():
        eos = json.loads(generation.read_text()).get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if isinstance(eos, int):
            special.special_token_ids["eos"] = eos
    special.add_to_gguf(writer, quiet=True)

    state = _load_state(model_dir)
    source_dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    for hf_name, tensor in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"{model_dir}: tensor {hf_name} has no GGUF name for architecture llama")
        tensor = tensor.to(torch.float32)
        if hf_name.endswith("q_proj.weight"):
            tensor = permute_rotary(tensor, n_head)
        elif hf_name.endswith("k_proj.weight"):
            tensor = permute_rotary(tensor, n_kv)
        data = tensor.numpy()
        # Norms and other 1-D tensors stay F32, as llama.cpp expects; matrices at the serve dtype.
        if data.ndim == 1 or file_type == "F32":
            writer.add_tensor(name, data.astype(np.float32))
        elif file_type == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)

    from infbench.pipeline.models import sha256_file

    meta = GgufMeta(
        model=model_name,
        status="ok",
        reason=None,
        path=str(out),
        file_type=file_type,
        source_dtype=source_dtype,
        tokenizer=vocab.tokenizer_model,
        tokenizer_pre=pre,
        sha256=sha256_file(out),
        size_bytes=out.stat().st_size,
    )
    meta.write(meta_path)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infbench.pipeline.gguf_export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--dtype", required=True, choices=sorted(GGUF_TYPES))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--meta", required=True, type=Path)
    args = parser.parse_args(argv)
    meta = write_gguf(args.name, args.model_dir, args.dtype, args.out, args.meta)
    if meta.status != "ok":
        print(f"model {args.name}: {meta.reason}", file=sys.stderr)
    else:
        print(
            f"model {args.name}: {meta.file_type} GGUF, {meta.size_bytes / 1e6:.1f} MB in {meta.path}", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GGUF export for llama.cpp: a real (tiny, seeded) Llama model written with the gguf writer and read
back with transformers' own GGUF loader gives the same logits; unsupported architectures say why."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO

torch = pytest.importorskip("torch", reason="needs the estimate extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the estimate extra (transformers)")
pytest.importorskip("gguf", reason="needs the gguf extra: pip install -e .[gguf]")

from infbench.pipeline.gguf_export import permute_rotary, write_gguf  # noqa: E402

SMOLLM_CONFIG = REPO / "tests/data/smollm2-135m-config.json"


def _tiny_llama(tmp_path, rope_theta=100000.0):
    """A 2-layer Llama with SmolLM2's head layout (9 heads, 3 KV heads) and a small byte-level BPE
    tokenizer, random weights from a fixed seed, saved like the models rule saves."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(
        models.BPE(vocab={**{chr(c): i for i, c in enumerate(range(97, 123))}, "ab": 26}, merges=[("a", "b")])
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=72,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=8,
        max_position_embeddings=256,
        rope_theta=rope_theta,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    out = tmp_path / "model"
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return model, out


def test_permute_rotary_interleaves_the_halves_of_each_head():
    rows = torch.arange(8).reshape(8, 1)  # 2 heads of 4: halves [0 1 | 2 3], [4 5 | 6 7]
    assert permute_rotary(rows, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_written_gguf_reads_back_to_the_same_logits(tmp_path):
    model, model_dir = _tiny_llama(tmp_path)
    out, meta_path = tmp_path / "gguf/tiny.gguf", tmp_path / "tiny.gguf.json"
    meta = write_gguf("tiny", model_dir, "float32", out, meta_path)
    assert meta.status == "ok" and meta.file_type == "F32" and meta.source_dtype == "bfloat16"
    assert json.loads(meta_path.read_text())["sha256"] == meta.sha256 and out.stat().st_size == meta.size_bytes
    assert not list(out.parent.glob(".*tmp"))  # written atomically

    # transformers' GGUF loader undoes llama.cpp's rotary layout: equal logits mean equal weights.
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 0, 5, 26, 7, 2]])
    with torch.no_grad():
        expected = model.to(torch.float32)(ids).logits
        got = loaded(ids).logits
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()

    import gguf

    reader = gguf.GGUFReader(str(out))
    special = reader.fields["tokenizer.ggml.token_type"]
    types = [int(special.parts[i][0]) for i in special.data]
    assert types[model.config.bos_token_id] == gguf.TokenType.CONTROL  # <|im_start|> stays one token
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == model.config.eos_token_id
    assert reader.fields["llama.rope.freq_base"].contents() == pytest.approx(100000.0)


def test_unsupported_architecture_gets_a_reason_not_a_file(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = json.loads(SMOLLM_CONFIG.read_text()) | {"architectures": ["FalconForCausalLM"]}
    (model_dir / "config.json").write_text(json.dumps(config))
    meta = write_gguf("f", model_dir, "float32", tmp_path / "f.gguf", tmp_path / "f.gguf.json")
    assert meta.status == "unsupported" and meta.reason == "n/a: no GGUF writer for FalconForCausalLM"
    assert not (tmp_path / "f.gguf").exists()
    assert json.loads((tmp_path / "f.gguf.json").read_text())["reason"] == meta.reason


def test_bf16_gguf_keeps_norms_in_f32(tmp_path):
    _, model_dir = _tiny_llama(tmp_path)
    meta = write_gguf("tiny", model_dir, "bfloat16", tmp_path / "t.gguf", tmp_path / "t.json")
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "t.gguf")).tensors}
    assert meta.file_type == "BF16"
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    shutil.rmtree(model_dir)

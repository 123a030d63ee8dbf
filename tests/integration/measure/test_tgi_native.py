"""TGI's native measurement: the real `text-generation` client, in its own venv, against a local
server speaking TGI's /generate_stream format (one token per event). No TGI server runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from sse_server import ScriptedServer

pytestmark = pytest.mark.slow


def tgi_event(token_id, text, special=False, details=None):
    body = {
        "token": {"id": token_id, "text": text, "logprob": -0.1, "special": special},
        "generated_text": "Paris." if details else None,
        "details": details,
    }
    return "data:" + json.dumps(body)


@pytest.fixture(scope="module")
def tgi_venv(tmp_path_factory):
    """The TGI env, built by the pipeline's own env builder from envs/tgi.txt."""
    root = tmp_path_factory.mktemp("tgi-env")
    venv = root / "venv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "infbench.cli",
            "build-env",
            "--name",
            "tgi",
            "--requirements",
            str(REPO / "envs/tgi.txt"),
            "--venv",
            str(venv),
            "--lock",
            str(root / "tgi.lock"),
            "--marker",
            str(root / "built"),
            "--log",
            str(root / "build.log"),
        ],
        check=True,
    )
    assert "text-generation==0.7.0" in (root / "tgi.lock").read_text()
    return venv


def test_native_stream_gives_one_timed_token_per_event(tgi_venv, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|im_end|>"}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "messages": [{"role": "user", "content": "Capital of France?"}]}) + "\n")
    script = [
        (0.05, tgi_event(1, "Par")),
        (0.02, tgi_event(2, "is")),
        (0.02, tgi_event(3, ".")),
        (
            0.02,
            tgi_event(
                0,
                "<|im_end|>",
                special=True,
                details={"finish_reason": "eos_token", "generated_tokens": 4, "seed": None},
            ),
        ),
    ]
    out = tmp_path / "native.jsonl"
    with ScriptedServer(script) as server:
        base_url = server.url.rsplit("/v1/", 1)[0]
        result = subprocess.run(
            [
                str(tgi_venv / "bin/python"),
                "-m",
                "infbench.measure.tgi_native",
                "--base-url",
                base_url,
                "--model-dir",
                str(model_dir),
                "--prompts",
                str(prompts),
                "--max-tokens",
                "16",
                "--timeout-s",
                "30",
                "--out",
                str(out),
            ],
            env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
            capture_output=True,
            text=True,
        )
        request = server.requests[0]
    assert result.returncode == 0, result.stderr
    assert request["inputs"] == "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert request["parameters"]["max_new_tokens"] == 16 and request["parameters"]["do_sample"] is False
    record = json.loads(out.read_text())
    assert record["output_text"] == "Paris." and record["error"] is None
    assert record["completion_tokens"] == 4 and record["tokens_counted_by"] == "events"
    assert len(record["chunk_times_s"]) == 3  # EOS is not content
    gaps = [b - a for a, b in zip(record["chunk_times_s"], record["chunk_times_s"][1:], strict=False)]
    assert all(0.015 <= gap < 0.5 for gap in gaps)  # one event per token, ~20 ms apart
    assert record["finish_reason"] == "eos_token"

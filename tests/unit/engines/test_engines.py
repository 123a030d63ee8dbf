"""Engine plug-ins up to the process boundary: command lines, request controls, skip reasons."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import infbench
import pytest
from conftest import engine_spec_of
from infbench.engines.base import engine_for
from infbench.engines.kinds.tgi import TGI_IMAGE
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling, Scenario


def engine(kind="transformers", output_length="natural", **kw) -> EngineSpec:
    return engine_spec_of(
        kind,
        device="cuda",
        sampling=Sampling(max_tokens=32, output_length=output_length),
        scenarios=[Scenario(name="single", kind="single")],
        **kw,
    )


@pytest.fixture
def model(tmp_path) -> ModelSpec:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": 2, "pad_token_id": 2, "repetition_penalty": 1.3})
    )
    return ModelSpec(name="m", path=str(tmp_path), dtype="float16", gpus=2, max_model_len=4096)


def test_transformers_sends_an_explicit_generation_config(model, tmp_path):
    plan = engine_for("transformers").plan(engine(output_length="fixed"), model, tmp_path / "venv", "127.0.0.1", 8000)
    assert plan.command[:3] == [str(tmp_path / "venv/bin/transformers"), "serve", model.path]
    assert plan.command[plan.command.index("--device") + 1] == "auto"  # 2 GPUs: layers split over both
    assert plan.command[plan.command.index("--host") + 1] == "127.0.0.1"
    generation = json.loads(plan.extra_body["generation_config"])
    # Greedy, the model's repetition_penalty (1.3) overridden, EOS kept, fixed length enforced.
    assert generation["do_sample"] is False and generation["repetition_penalty"] == 1.0
    assert generation["eos_token_id"] == 2 and generation["min_new_tokens"] == 32 == generation["max_new_tokens"]
    assert plan.model_name == model.path


def test_vllm_command_ignores_model_generation_defaults_and_shards(model, tmp_path):
    plan = engine_for("vllm").plan(engine("vllm"), model, tmp_path / "v", "127.0.0.1", 8001)
    cmd = plan.command
    assert cmd[:3] == [str(tmp_path / "v/bin/python"), "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--generation-config") + 1] == "vllm"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    assert plan.extra_body == {} and plan.version_path == "/version"
    fixed = engine_for("vllm").plan(engine("vllm", output_length="fixed"), model, tmp_path, "127.0.0.1", 1)
    assert fixed.extra_body == {"ignore_eos": True, "min_tokens": 32}


def test_tgi_native_launcher_command(model, tmp_path):
    plan = engine_for("tgi").plan(
        engine("tgi", launcher="native", args=["--disable-custom-kernels"]),
        model,
        tmp_path,
        "127.0.0.1",
        8002,
        ["0", "1"],
    )
    cmd = plan.command
    assert cmd[0] == "text-generation-launcher"
    assert cmd[cmd.index("--num-shard") + 1] == "2" and cmd[cmd.index("--hostname") + 1] == "127.0.0.1"
    assert "--disable-custom-kernels" in cmd and plan.model_name == "tgi" and plan.version_path == "/info"


def test_tgi_docker_passes_gpu_ids_and_binds_loopback(model, tmp_path):
    plan = engine_for("tgi").plan(engine("tgi", launcher="docker"), model, tmp_path, "127.0.0.1", 8003, ["2", "3"])
    cmd = plan.command
    assert cmd[:3] == ["docker", "run", "--rm"]
    assert cmd[cmd.index("--gpus") + 1] == '"device=2,3"'
    assert cmd[cmd.index("-p") + 1] == "127.0.0.1:8003:80"
    assert f"{model.path}:/data/model:ro" in cmd and TGI_IMAGE in cmd
    assert cmd[cmd.index("--model-id") + 1] == "/data/model"


def test_tgi_apptainer_passes_gpu_ids(model, tmp_path):
    plan = engine_for("tgi").plan(
        engine("tgi", launcher="apptainer", image="my/tgi:1"), model, tmp_path, "127.0.0.1", 8004, ["1"]
    )
    cmd = plan.command
    assert cmd[:2] == ["apptainer", "run"] and "--nv" in cmd and "CUDA_VISIBLE_DEVICES=1" in cmd
    assert "docker://my/tgi:1" in cmd


def test_tgi_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert (
        engine_for("tgi").unavailable_reason(engine("tgi", launcher="native"))
        == "n/a: text-generation-launcher not on PATH"
    )
    assert engine_for("tgi").unavailable_reason(engine("tgi", launcher="docker")) == "n/a: docker not installed"
    assert engine_for("tgi").unavailable_reason(engine("tgi", launcher="apptainer")) == "n/a: apptainer not installed"


def test_tgi_docker_without_an_engine(monkeypatch, tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert engine_for("tgi").unavailable_reason(engine("tgi", launcher="docker")) == "n/a: no docker engine"


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="mlc-llm"):
        engine_for("mlc-llm")


def test_a_skipped_engine_leaves_a_reason_and_empty_records(tmp_path):
    """The real `infbench bench` on a TGI engine with no launcher: no crash, a reason in server.json."""
    from infbench.engines.spec import write_spec
    from infbench.pipeline.prompts import build_sample

    build_sample("builtin", 2, 1, tmp_path / "prompts.jsonl")
    write_spec(tmp_path / "engine.json", engine("tgi", launcher="native"))
    write_spec(tmp_path / "model.json", ModelSpec(name="m", path=str(tmp_path), gpus=0))
    out = tmp_path / "raw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infbench.cli",
            "bench",
            "--engine-spec",
            str(tmp_path / "engine.json"),
            "--model-spec",
            str(tmp_path / "model.json"),
            "--prompts",
            str(tmp_path / "prompts.jsonl"),
            "--venv",
            str(tmp_path / "venv"),
            "--lock",
            str(tmp_path / "none.lock"),
            "--out-dir",
            str(out),
            "--server-log",
            str(tmp_path / "server.log"),
        ],
        capture_output=True,
        text=True,
        # PYTHONPATH: the infbench under test (a worktree's), not whichever one is pip-installed.
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(Path(infbench.__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr
    server = json.loads((out / "server.json").read_text())
    assert server["status"] == "skipped" and server["reason"] == "n/a: text-generation-launcher not on PATH"
    assert (out / "single.jsonl").read_text() == "" and (out / "native-single.jsonl").exists()
    assert "skipped" in result.stderr

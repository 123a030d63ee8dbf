"""The request body each engine kind sends, as the bench job builds it (plan -> request settings ->
body): every sampling field in the engine's own spelling, the fixed-length control, and the cold
controls on a cold request only. One test per kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import engine_spec_of, gguf_meta
from infbench.engines.base import engine_for
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling, Scenario
from infbench.jobs.bench import _request_settings

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = ModelSpec(name="m", path="resources/models/m", dtype="float32", max_model_len=2048)


def _engine(kind: str, cache: tuple[str, ...] = ("cold", "cold"), **kw) -> EngineSpec:
    sampling = kw.pop("sampling", Sampling(temperature=0.0, top_p=1.0, seed=0, max_tokens=16))
    return engine_spec_of(
        kind,
        sampling=sampling,
        scenarios=[
            Scenario(name="single", kind="single", cache=cache[0]),
            Scenario(name="throughput", kind="throughput", concurrency=2, requests=4, cache=cache[1]),
        ],
        **kw,
    )


def _bodies(kind: str, spec: EngineSpec, model: ModelSpec = MODEL) -> tuple[dict, dict, object]:
    """(a cold request's body, a warm one's, the plan), as the kind's plug-in makes them."""
    plan = engine_for(kind).plan(spec, model, Path(".venvs/x"), "127.0.0.1", 9000, threads=2)
    settings = _request_settings(spec, plan)
    return settings.body(MESSAGES, cold_key="single-0001"), settings.body(MESSAGES), plan


def test_vllm_body_states_every_sampling_field_and_salts_cold_requests():
    cold, warm, plan = _bodies("vllm", _engine("vllm"))
    for field, value in {"temperature": 0.0, "top_p": 1.0, "seed": 0, "top_k": 0, "min_p": 0.0}.items():
        assert cold[field] == value and warm[field] == value
    assert cold["repetition_penalty"] == 1.0 and cold["presence_penalty"] == 0.0 and cold["frequency_penalty"] == 0.0
    assert cold["cache_salt"] == "infbench-single-0001" and "cache_salt" not in warm
    assert "--enable-prompt-tokens-details" in plan.command  # usage then says how many tokens were cached
    assert "cache_salt" in plan.settings["prefix cache"]


def test_llamacpp_body_neutralises_its_own_samplers_and_turns_prompt_caching_off_when_cold():
    cold, warm, plan = _bodies("llamacpp", _engine("llamacpp"))
    assert cold["top_k"] == 0 and cold["min_p"] == 0.0 and cold["repeat_penalty"] == 1.0
    assert cold["typical_p"] == 1.0 and cold["dry_multiplier"] == 0.0 and cold["xtc_probability"] == 0.0
    assert cold["cache_prompt"] is False and "cache_prompt" not in warm
    assert plan.command[plan.command.index("--cache-type") + 1] == "f32"  # the serve dtype's KV cache


def test_transformers_body_sends_a_full_generation_config():
    sampling = Sampling(temperature=0.7, top_p=0.9, seed=3, max_tokens=16)
    cold, warm, plan = _bodies("transformers", _engine("transformers", sampling=sampling))
    config = json.loads(cold["generation_config"])
    assert config["top_k"] == 0 and config["temperature"] == 0.7 and config["repetition_penalty"] == 1.0
    assert cold["temperature"] == 0.7 and cold["seed"] == 3 and "frequency_penalty" not in cold
    assert cold == warm  # no cache to control
    assert plan.settings["prefix cache"].startswith("no prefix cache")


def test_tgi_body_leaves_out_what_tgi_refuses_and_its_server_goes_cold():
    cold, warm, plan = _bodies("tgi", _engine("tgi", launcher="native"))
    assert "top_p" not in cold and "presence_penalty" not in cold and cold["temperature"] == 0.0
    assert cold["frequency_penalty"] == 0.0 and cold["seed"] == 0
    assert plan.env == {"PREFIX_CACHING": "0"}
    docker = engine_for("tgi").plan(_engine("tgi", launcher="docker"), MODEL, Path("v"), "127.0.0.1", 9001)
    assert "PREFIX_CACHING=0" in docker.command and docker.container_id_file.endswith("infbench-tgi-9001.cid")
    mixed_spec = _engine("tgi", cache=("cold", "warm"), launcher="native")
    mixed = engine_for("tgi").plan(mixed_spec, MODEL, Path("v"), "h", 1)
    assert mixed.env == {} and "cold ones (single)" in engine_for("tgi").cache_plan(mixed_spec).not_assured


def test_sglang_body_and_its_radix_cache_off_for_cold_scenarios():
    cold, _, plan = _bodies("sglang", _engine("sglang", device="cuda"))
    assert cold["top_k"] == -1 and cold["min_p"] == 0.0 and cold["repetition_penalty"] == 1.0
    assert "--disable-radix-cache" in plan.command and "--enable-cache-report" in plan.command


def test_openai_body_keeps_to_openai_fields_and_says_cold_is_not_assured():
    spec = _engine("openai", env=None, base_url="http://127.0.0.1:1/v1")
    cold, warm, _ = _bodies("openai", spec)
    assert set(cold) >= {"temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"}
    assert "top_k" not in cold and cold == warm
    assert engine_for("openai").cache_plan(spec).not_assured
    salted = _engine("openai", env=None, base_url="http://127.0.0.1:1/v1", cold_salt_field="cache_salt")
    cold, warm, _ = _bodies("openai", salted)
    assert cold["cache_salt"] == "infbench-single-0001" and "cache_salt" not in warm
    assert not engine_for("openai").cache_plan(salted).not_assured


@pytest.fixture(autouse=True)
def _gguf(tmp_path, monkeypatch):
    """llama.cpp's plan reads the GGUF record the gguf rule writes."""
    monkeypatch.chdir(tmp_path)
    gguf_meta(tmp_path, "m")

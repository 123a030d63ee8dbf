"""Each engine's cache controls and sampling spellings (engines/cache.py, engines/sampling.py): the
fields its requests carry, checked against what the engines accept (docs/cache-and-sampling.md)."""

from __future__ import annotations

import pytest
from infbench.engines import cache, sampling
from infbench.engines.spec import Sampling

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=0)
SAMPLED = Sampling(temperature=0.7, top_p=0.9, seed=5)
COLD = {"name": "single", "cache": "cold"}
WARM = {"name": "again", "cache": "warm"}


def test_vllm_and_llamacpp_keep_cold_per_request_so_one_server_runs_both_states():
    vllm = cache.vllm_plan()
    assert vllm.cold_salt_field == "cache_salt" and "--enable-prompt-tokens-details" in vllm.server_args
    llamacpp = cache.llamacpp_plan()
    assert llamacpp.cold_fields == {"cache_prompt": False} and not llamacpp.server_args
    assert vllm.reports_cached_tokens and llamacpp.reports_cached_tokens and not vllm.not_assured


@pytest.mark.parametrize(
    ("plan", "switch"), [(cache.sglang_plan, "--disable-radix-cache"), (cache.tgi_plan, "PREFIX_CACHING=0")]
)
def test_sglang_and_tgi_keep_their_cache_on_for_warm_and_say_cold_beside_it_is_not_assured(plan, switch):
    mixed = plan([COLD, WARM])
    assert mixed.not_assured and switch in mixed.not_assured
    assert "warm scenarios (again)" in mixed.not_assured and "cold ones (single)" in mixed.not_assured
    assert "declare a second engine" in mixed.not_assured
    assert plan([COLD]).not_assured is None and plan([WARM]).not_assured is None


def test_sglang_and_tgi_switch_their_cache_off_when_every_scenario_is_cold():
    assert "--disable-radix-cache" in cache.sglang_plan([COLD]).server_args
    warm = cache.sglang_plan([WARM])
    assert "--disable-radix-cache" not in warm.server_args and "--enable-cache-report" in warm.server_args
    assert warm.cached_tokens_absent_is_zero  # SGLang leaves the field out at 0
    assert cache.tgi_plan([COLD]).server_env == {"PREFIX_CACHING": "0"}
    assert cache.tgi_plan([WARM]).server_env == {} and not cache.tgi_plan([WARM]).reports_cached_tokens


def test_engines_without_a_control_say_cold_is_not_assured():
    assert cache.transformers_plan(False).not_assured is None  # no cache at all: cold by nature
    assert "no switch" in cache.transformers_plan(True).not_assured
    assert cache.openai_plan(None, None).not_assured
    given = cache.openai_plan({"cache_prompt": False}, None)
    assert given.not_assured is None and given.cold_fields == {"cache_prompt": False}


def test_every_engine_states_every_sampling_field_in_its_own_spelling():
    vllm = sampling.vllm_fields(SAMPLED)
    assert vllm == {
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 5,
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    assert sampling.sglang_fields(SAMPLED)["top_k"] == -1
    llamacpp = sampling.llamacpp_fields(SAMPLED)
    assert llamacpp["top_k"] == 0 and llamacpp["min_p"] == 0.0  # its defaults are 40 and 0.05
    assert llamacpp["repeat_penalty"] == 1.0 and "repetition_penalty" not in llamacpp  # its own name
    assert {"dry_multiplier", "xtc_probability", "top_n_sigma", "mirostat", "typical_p"} <= set(llamacpp)


def test_tgi_never_gets_a_field_it_refuses_or_remaps():
    greedy = sampling.tgi_fields(GREEDY)
    assert "top_p" not in greedy  # 1.0 is refused: top_p must be in (0, 1)
    assert "presence_penalty" not in greedy  # would become repetition_penalty = 0 + 2
    assert sampling.tgi_fields(SAMPLED)["top_p"] == 0.9 and greedy["temperature"] == 0.0


def test_transformers_gets_a_full_generation_config_with_top_k_off_when_sampling():
    sampled = sampling.transformers_generation_config(SAMPLED, eos=2, pad=None, max_new_tokens=8, fixed_length=False)
    assert sampled["do_sample"] and sampled["top_k"] == 0 and sampled["temperature"] == 0.7
    assert sampled["repetition_penalty"] == 1.0 and sampled["pad_token_id"] == 2
    greedy = sampling.transformers_generation_config(GREEDY, eos=2, pad=0, max_new_tokens=8, fixed_length=True)
    assert not greedy["do_sample"] and "top_k" not in greedy and greedy["min_new_tokens"] == 8
    body = sampling.transformers_fields(SAMPLED)
    assert "frequency_penalty" not in body and "presence_penalty" not in body  # remapped / ignored there

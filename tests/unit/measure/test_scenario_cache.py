"""A scenario's declared cache state reaches the client with every run of it; warm-up never sends a
measured prompt."""

from __future__ import annotations

import pytest
from infbench.defaults import schema_default
from infbench.measure.scenarios import Scenario, warmup_requests
from infbench.pipeline.prompts import load_source


def test_scenarios_are_cold_unless_declared_warm_and_their_requests_say_so():
    with pytest.raises(KeyError):  # no one default: it depends on the kind (below)
        schema_default("scenarios.*.cache")
    config = {
        "prompts": {"n": 2},
        "scenarios": {
            "single": {"kind": "single", "concurrency": 1, "workers": 1, "cache": "cold"},
            "again": {"kind": "throughput", "concurrency": 2, "workers": 1, "cache": "warm"},
        },
    }
    for name, state in (("single", "cold"), ("again", "warm")):
        scenario = Scenario.from_config(config, name)
        assert scenario.cache == state and scenario.run_context("e", "m").cache == state
    assert Scenario(name="s", kind="single").cache == "cold"  # a spec written before the key existed


def test_kinds_that_measure_prefix_reuse_are_warm_unless_declared_cold():
    """A conversation's later turns, a group's shared system prompt and a trace's shared blocks are
    what those kinds measure: warm by default; cold when the config says so."""
    config = {
        "prompts": {"n": 2},
        "scenarios": {
            "chat": {"kind": "conversation", "concurrency": 2},
            "chat_cold": {"kind": "conversation", "concurrency": 2, "cache": "cold"},
            "prefix": {"kind": "shared_prefix", "concurrency": 2},
            "replay": {"kind": "trace", "concurrency": 2},
            "sizes": {"kind": "synthetic", "concurrency": 2, "sizes": [[64, 8]]},
        },
    }
    states = {name: Scenario.from_config(config, name).cache for name in config["scenarios"]}
    assert states == {"chat": "warm", "chat_cold": "cold", "prefix": "warm", "replay": "warm", "sizes": "cold"}


def test_warm_up_requests_share_no_prompt_with_any_sample():
    builtin = {p.messages[-1]["content"] for p in load_source("builtin")}
    warm = warmup_requests(5)
    assert len({r.request_id for r in warm}) == 5
    assert not {r.messages[-1]["content"] for r in warm} & builtin

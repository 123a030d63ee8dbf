"""The workload kinds in the config: their keys reach their classes, and bad input stops the run at
start-up in one line naming the key, or the file and line (a trace row, a conversation)."""

from __future__ import annotations

import json

import pytest
from infbench.measure.scenarios import Capacity, MultiTurn, SharedPrefix, Synthetic, Trace
from infbench.pipeline.config import ConfigError, scenario_of, validate_config

ROW = {"timestamp": 0, "input_length": 800, "output_length": 100, "hash_ids": [0, 1]}


def _config(**scenarios):
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 4},
        "models": {"m": {"source": "local:/x", "max_model_len": 1024}},
        "engines": {"t": {"kind": "transformers", "env": "transformers"}},
        "sampling": {"max_tokens": 32},
        "scenarios": scenarios,
    }


def _trace(tmp_path, rows) -> str:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def test_each_kind_reads_its_keys(tmp_path):
    config = validate_config(
        _config(
            chat={"kind": "conversation", "conversations": 4, "max_turns": 2, "concurrency": 2},
            prefix={"kind": "shared_prefix", "groups": 2, "prompts_per_group": 3, "system_tokens": 200},
            sizes={"kind": "synthetic", "sizes": [[128, 16], [512, 64]], "requests": 4},
            replay={"kind": "trace", "source": _trace(tmp_path, [ROW]), "window": {"count": 1}, "length_scale": 0.5},
            cap={"kind": "capacity", "slo": {"ttft_p90_s": 2, "error_rate": 0.01}, "duration_s": 30, "warmup_s": 5},
        )
    )
    chat, prefix, sizes, replay, cap = (scenario_of(config, n) for n in ("chat", "prefix", "sizes", "replay", "cap"))
    assert type(chat) is MultiTurn and (chat.source, chat.conversations, chat.max_turns) == ("builtin", 4, 2)
    assert type(prefix) is SharedPrefix and (prefix.groups, prefix.system_tokens, prefix.question_tokens) == (
        2,
        200,
        128,
    )
    assert type(sizes) is Synthetic and sizes.pairs() == [(128, 16), (512, 64)] and sizes.requests == 4
    assert type(replay) is Trace and replay.trace_window().count == 1 and replay.source_file().endswith("trace.jsonl")
    assert type(cap) is Capacity and cap.plan().slo == {"ttft_p90_s": 2, "error_rate": 0.01}
    assert cap.plan().load.window.duration_s == 30 and cap.plan().min_rate == 0.05
    assert Trace(name="t", kind="trace").source_file() == "results/traces/seeded-0.jsonl"
    assert [s.prepares for s in (chat, prefix, sizes, replay, cap)] == [True, True, True, True, False]


@pytest.mark.parametrize(
    "scenario, message",
    [
        (
            {"kind": "capacity", "slo": {"ttft_p95_s": 1}},
            "config error at scenarios.s.slo: Additional properties are not allowed ('ttft_p95_s' was unexpected)",
        ),
        ({"kind": "capacity"}, "config error at scenarios.s: 'slo' is a required property"),
        (
            {"kind": "capacity", "slo": {"error_rate": 0}, "duration_s": 5, "warmup_s": 10},
            "config error at scenarios.s.duration_s: 5 s is not longer than its warmup_s",
        ),
        (
            {"kind": "capacity", "slo": {"error_rate": 0}, "start_rate": 0.01},
            "config error at scenarios.s.start_rate: needs min_rate <= start_rate <= max_rate",
        ),
        ({"kind": "synthetic"}, "config error at scenarios.s: give input_tokens and output_tokens, or sizes"),
        ({"kind": "synthetic", "input_tokens": 10}, "config error at scenarios.s.output_tokens: required"),
        (
            {"kind": "synthetic", "sizes": [[128, 16], [1000, 100]]},
            "config error at scenarios.s.sizes[1]: input + output (1100 tokens) does not fit model m's context",
        ),
        (
            {"kind": "shared_prefix", "system_tokens": 1000},
            "config error at scenarios.s.system_tokens: system_tokens + question_tokens + max_tokens (1160 tokens)",
        ),
        ({"kind": "trace", "window": {"count": 2, "duration_s": 3}}, "config error at scenarios.s.window: a trace"),
        ({"kind": "conversation", "conversations": 40}, "config error at scenarios.s.conversations: 40 asked for"),
    ],
)
def test_bad_workload_settings_name_the_key(scenario, message):
    with pytest.raises(ConfigError) as caught:
        validate_config(_config(s=scenario))
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_bad_trace_row_stops_the_run_naming_file_and_line(tmp_path):
    source = _trace(tmp_path, [ROW, {**ROW, "timestamp": 5, "hash_ids": None}])
    with pytest.raises(ConfigError, match=r"scenarios.s.source: trace .*trace.jsonl, line 2: hash_ids must be"):
        validate_config(_config(s={"kind": "trace", "source": source}))
    source = _trace(tmp_path, [ROW, {**ROW, "timestamp": -1}])
    with pytest.raises(ConfigError, match=r"line 2: timestamp must not be negative"):
        validate_config(_config(s={"kind": "trace", "source": source}))
    source = _trace(tmp_path, [ROW, {**ROW, "input_length": 5000}])
    with pytest.raises(ConfigError, match=r"scenarios.s.length_scale: trace .*, line 2: 5000 \+ 100 tokens"):
        validate_config(_config(s={"kind": "trace", "source": source}))
    validate_config(_config(s={"kind": "trace", "source": source, "length_scale": 0.1}))  # scaled, it fits
    with pytest.raises(ConfigError, match=r"scenarios.s.window: selects no row"):
        validate_config(_config(s={"kind": "trace", "source": source, "window": {"start": 5}}))


def test_a_conversation_without_a_user_turn_stops_the_run_naming_file_and_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"turns": ["a", "b"]}) + "\n" + json.dumps({"turns": []}) + "\n")
    with pytest.raises(ConfigError) as caught:
        validate_config(_config(s={"kind": "conversation", "source": f"jsonl:{path}"}))
    assert str(caught.value) == (
        f"config error at scenarios.s.source: conversations file {path}, line 2: a conversation with no user turn "
        "('turns' holds none)"
    )

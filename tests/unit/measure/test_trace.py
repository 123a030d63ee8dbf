"""Trace replay's pieces: reading and checking Mooncake-format traces, windows and scales, prompts
built from hash ids (equal ids, equal words), the seeded trace, and the prepared request file."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED
from infbench.measure.prepared import (
    PreparedRequests,
    PreparedSizeError,
    shared_prefix_requests,
    synthetic_requests,
    trace_requests,
)
from infbench.measure.trace import (
    TraceError,
    TraceWindow,
    plan_replay,
    read_trace,
    scaled_block_tokens,
    seeded_trace,
    write_seeded_trace,
)
from infbench.measure.wordtext import WordText, block_runs

MOONCAKE = SHARED / "datasets" / "mooncake" / "conversation_trace.jsonl"
WORDS = tuple(f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(300))


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


ROW = {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [0, 1]}


# --- reading and checking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        ([ROW, {"timestamp": 5, "input_length": 3, "output_length": 1}], "line 2: missing field 'hash_ids'"),
        ([{**ROW, "timestamp": 10}, ROW], "line 2: timestamp 0 is earlier than the line before's 10 (not monotonic)"),
        ([ROW, "{not json"], "line 2: invalid JSON"),
        ([{**ROW, "input_length": 0}], "line 1: input_length must be an integer >= 1"),
        ([{**ROW, "hash_ids": []}], "line 1: hash_ids must be a non-empty list"),
        ([{**ROW, "hash_ids": [0, "a"]}], "line 1: hash_ids[1] must be an integer"),
        ([[1, 2]], "line 1: expected a JSON object"),
    ],
)
def test_a_bad_trace_row_is_named_by_file_and_line(tmp_path, rows, message):
    path = _write(tmp_path / "t.jsonl", rows)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert str(caught.value).startswith(f"trace {path}, {message}")


def test_missing_and_empty_traces_say_so(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "none.jsonl")
    with pytest.raises(TraceError, match="no rows"):
        read_trace(_write(tmp_path / "empty.jsonl", []))


def test_windows_and_scales():
    rows = [
        *read_trace_rows([(0, 1024, 100, [0, 1]), (1000, 600, 5, [0, 2]), (2500, 2048, 30, [0, 1, 3, 4])]),
        *read_trace_rows([(4000, 10, 1, [9])], first_line=4),
    ]
    assert [r.line for r in TraceWindow(start=1, count=2).select(rows)] == [2, 3]
    assert [r.line for r in TraceWindow(start_s=1.0, duration_s=2.0).select(rows)] == [2, 3]
    assert [r.line for r in TraceWindow(start_s=2.6).select(rows)] == [4]
    with pytest.raises(ValueError, match="count or duration_s"):
        TraceWindow(count=1, duration_s=1.0)
    planned = plan_replay(TraceWindow(start=1).select(rows), time_scale=0.5, length_scale=1 / 16)
    assert [p.at_s for p in planned] == [0.0, 0.75, 1.5]  # from the window's first row, halved
    assert [(p.input_tokens, p.output_tokens) for p in planned] == [(38, 1), (128, 2), (1, 1)]  # at least 1
    assert scaled_block_tokens(1 / 16) == 32 and scaled_block_tokens(1e-6) == 1


def read_trace_rows(specs, first_line=1):
    from infbench.measure.trace import TraceRow

    return [TraceRow(first_line + i, float(t), n, o, tuple(h)) for i, (t, n, o, h) in enumerate(specs)]


# --- prompts from hash ids ---------------------------------------------------------------------------


def test_block_runs_lay_tokens_out_by_block_from_an_absolute_start():
    assert block_runs([7, 8, 9], 4, 0, 10) == [(7, 0, 4), (8, 0, 4), (9, 0, 2)]
    assert block_runs([7, 8, 9], 4, 3, 5) == [(7, 3, 1), (8, 0, 4)]  # after 3 template tokens
    assert block_runs([7], 4, 0, 6) == [(7, 0, 6)]  # past the last block: it runs on (rounded lengths)


def test_equal_hash_ids_give_identical_words_and_lengths_are_exact():
    text = WordText(WORDS, seed=5)
    a, b, c = (text.render(block_runs(ids, 8, 3, 30)).split(" ") for ids in ([1, 2, 3, 4], [1, 2, 5, 6], [9, 2, 3, 4]))
    assert len(a) == len(b) == len(c) == 30
    assert a[:13] == b[:13] and a[13] != b[13]  # blocks 1 and 2 shared: 5 + 8 words, then block 3 vs 5
    assert a[:5] != c[:5]  # the same position in another block: other words
    assert set(a) <= set(WORDS)
    assert WordText(WORDS, seed=6).render([(1, 0, 30)]) != text.render([(1, 0, 30)])  # seeded
    # text mode: each block reads consecutive words of the list, from a place its hash picks
    reading = WordText(WORDS, seed=5, content="text").render([(1, 0, 10)]).split(" ")
    start = WORDS.index(reading[0])
    assert reading == [WORDS[(start + i) % len(WORDS)] for i in range(10)]


def test_trace_requests_share_prefixes_exactly_as_the_trace_says():
    planned = plan_replay(
        read_trace_rows([(0, 512, 64, [0, 1]), (100, 900, 10, [0, 1, 2]), (200, 20, 5, [7])]), 1.0, 1 / 16
    )
    block = scaled_block_tokens(1 / 16)
    requests, raised = trace_requests(planned, block, template_tokens=6, template_prefix_tokens=4)
    assert raised == 1  # the 20-token row (1 token scaled) is shorter than the template: one word
    assert [r.prompt_tokens for r in requests] == [32, 56, 7]
    assert [r.max_tokens for r in requests] == [4, 1, 1] and [r.at_s for r in requests] == [0.0, 0.1, 0.2]
    text = WordText(WORDS, 1)
    first, second = (text.render(r.messages[0][1]).split(" ") for r in requests[:2])
    assert len(first) == 26 and len(second) == 50
    assert first == second[:26]  # the first request's words are where its blocks are in the second's
    # After the template's 4 tokens: the rest of block 0 (28 words), then block 1 (the trace's id 1).
    assert second == text.render([(0, 4, block - 4), (1, 0, 22)]).split(" ")


def test_shared_prefix_and_synthetic_generators():
    requests = shared_prefix_requests(3, 4, system_tokens=20, question_tokens=5, template_tokens=9, seed=1)
    assert len(requests) == 12 and {r.prompt_tokens for r in requests} == {34}
    assert [r.id for r in requests] != sorted(r.id for r in requests)  # groups mixed, seeded
    assert requests == shared_prefix_requests(3, 4, 20, 5, 9, seed=1)
    text = WordText(WORDS, 2)
    by_group: dict[str, set] = {}
    for r in requests:
        (system_role, system_runs), (user_role, user_runs) = r.messages
        assert (system_role, user_role) == ("system", "user")
        by_group.setdefault(r.label, set()).add(text.render(system_runs))
    assert all(len(systems) == 1 for systems in by_group.values()) and len(by_group) == 3
    questions = {text.render(r.messages[1][1]) for r in requests}
    assert len(questions) == 12
    sized = synthetic_requests([(128, 128), (64, 16)], 2, template_tokens=30, key="scenarios.s.sizes")
    assert [(r.prompt_tokens, r.max_tokens, r.words()) for r in sized] == [(128, 128, 98)] * 2 + [(64, 16, 34)] * 2
    with pytest.raises(PreparedSizeError, match="scenarios.s.sizes: input of 20 tokens is not longer than the chat"):
        synthetic_requests([(20, 5)], 1, template_tokens=30, key="scenarios.s.sizes")


def test_the_prepared_file_round_trips_and_renders_the_same_text(tmp_path):
    planned = plan_replay(read_trace_rows([(0, 700, 20, [0, 1]), (50, 800, 30, [0, 2])]), 1.0, 0.1)
    requests, _ = trace_requests(planned, scaled_block_tokens(0.1), 5, 2)
    prepared = PreparedRequests("trace", "trace", "m", "tok", 5, WORDS, "random", 3, requests, ["a note"])
    prepared.write(tmp_path / "p.json")
    back = PreparedRequests.read(tmp_path / "p.json")
    assert back == prepared
    chats = back.chat_requests()
    assert [c.request_id for c in chats] == ["trace-line000001", "trace-line000002"]
    assert [c.max_tokens for c in chats] == [2, 3] and [c.planned_prompt_tokens for c in chats] == [70, 80]
    assert [len(c.messages[0]["content"].split(" ")) for c in chats] == [65, 75]
    data = json.loads((tmp_path / "p.json").read_text())
    data["version"] = 0
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version 0"):
        PreparedRequests.read(tmp_path / "old.json")


# --- the seeded trace and the real one ----------------------------------------------------------------


def test_the_seeded_trace_is_a_valid_mooncake_trace_with_conversation_reuse(tmp_path):
    assert seeded_trace(3) == seeded_trace(3) and seeded_trace(3) != seeded_trace(4)
    count = write_seeded_trace(tmp_path / "seeded.jsonl", seed=0)
    rows = read_trace(tmp_path / "seeded.jsonl")
    assert len(rows) == count > 40 and rows[0].timestamp_ms == 0
    assert all(len(r.hash_ids) == -(-r.input_length // 512) for r in rows)
    assert all(r.hash_ids[:2] == (0, 1) for r in rows)  # the shared system blocks
    reused = [
        r
        for r in rows
        if len(r.hash_ids) > 2 and any(set(r.hash_ids[2:]) & set(o.hash_ids) for o in rows if o is not r)
    ]
    assert len(reused) > count / 3  # later turns repeat the earlier turns' blocks


@pytest.mark.skipif(not MOONCAKE.exists(), reason=f"{MOONCAKE} is absent (a clone without ../shared)")
def test_a_window_of_the_real_mooncake_trace_replays_with_its_reuse():
    rows = read_trace(MOONCAKE)
    assert len(rows) == 12031
    window = TraceWindow(start_s=600, count=600).select(rows)
    planned = plan_replay(window, time_scale=0.5, length_scale=1 / 16)
    assert planned[0].at_s == 0.0 and planned[-1].at_s == (window[-1].timestamp_ms - window[0].timestamp_ms) / 2000
    block = scaled_block_tokens(1 / 16)
    requests, _ = trace_requests(planned, block, template_tokens=30, template_prefix_tokens=24)
    text = WordText(WORDS, 0)
    rendered = [text.render(r.messages[0][1]).split(" ") for r in requests]
    assert [len(words) for words in rendered] == [r.words() for r in requests]
    # Rows with the same leading hash ids start with the same words as far as those blocks go, and
    # differ right after (the first block, id 0 in every row, holds the template's 24 tokens).
    pairs = 0
    for i in range(len(window)):
        for j in range(i + 1, len(window)):
            a, b = window[i].hash_ids, window[j].hash_ids
            shared = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            tokens = min(shared * block - 24, len(rendered[i]), len(rendered[j]))
            assert rendered[i][:tokens] == rendered[j][:tokens]
            if shared >= 2 and tokens < min(len(rendered[i]), len(rendered[j])):
                assert rendered[i][tokens : tokens + block] != rendered[j][tokens : tokens + block]
                pairs += 1
    assert pairs >= 10

"""Conversations: multi-turn sources (bundled, MT-bench, ShareGPT, LIMA, OpenAI messages), bad rows
named by file and line, and the runner that sends each turn with the engine's own earlier answers."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import LoadShape, run_load
from infbench.measure.refserver import RefServerProcess, RefSettings
from infbench.pipeline.conversations import (
    Conversation,
    load_conversations,
    read_conversations,
    sample_conversations,
    write_conversations,
)
from infbench.pipeline.prompts import PromptSourceError

MT_BENCH = SHARED / "datasets" / "mt_bench" / "question.jsonl"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def test_the_bundled_conversations_have_several_turns():
    conversations = load_conversations("builtin")
    assert len(conversations) == 16 and all(len(c.turns) == 3 for c in conversations)
    assert len({c.id for c in conversations}) == 16


@pytest.mark.parametrize(
    "row, turns, system",
    [
        ({"turns": ["a?", "b?"]}, ("a?", "b?"), None),
        ({"conversations": ["u1", "a1", "u2", "a2"]}, ("u1", "u2"), None),  # LIMA: alternating
        (
            {
                "conversations": [
                    {"from": "system", "value": "be brief"},
                    {"from": "human", "value": "u1"},
                    {"from": "gpt", "value": "a1"},
                    {"from": "human", "value": "u2"},
                ]
            },
            ("u1", "u2"),
            "be brief",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u1"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u2"},
                ]
            },
            ("u1", "u2"),
            "s",
        ),
    ],
)
def test_each_format_gives_the_user_turns_only(tmp_path, row, turns, system):
    (conversation,) = load_conversations(_jsonl(tmp_path / "c.jsonl", [row]))
    assert conversation.turns == turns and conversation.system == system


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"turns": ["a"]}, {"turns": []}], "line 2: a conversation with no user turn"),
        ([{"conversations": [{"from": "gpt", "value": "hi"}]}], "line 1: a conversation with no user turn"),
        ([{"turns": ["a"]}, {"messages": []}], "line 2: expected key 'turns', found 'messages'"),
        ([{"turns": ["a", ""]}], r"line 1: turns\[1\] is empty"),
        ([{"prompt": "x"}], "line 1: expected a JSON object with one of the keys"),
    ],
)
def test_a_bad_conversation_is_named_by_file_and_line(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    with pytest.raises(PromptSourceError, match=f"conversations file {path}, {message}"):
        load_conversations(_jsonl(path, rows))


def test_sampling_is_seeded_and_cuts_turns(tmp_path):
    conversations = load_conversations("builtin")
    picked = sample_conversations(conversations, 4, seed=7, max_turns=2)
    assert picked == sample_conversations(conversations, 4, seed=7, max_turns=2)
    assert [c.id for c in picked] != [c.id for c in sample_conversations(conversations, 4, seed=8, max_turns=2)]
    assert all(len(c.turns) == 2 for c in picked)
    with pytest.raises(PromptSourceError, match="asked for 20 conversations but the source has only 16"):
        sample_conversations(conversations, 20, seed=7, max_turns=None)
    write_conversations(tmp_path / "s.jsonl", picked)
    assert read_conversations(tmp_path / "s.jsonl") == picked


@pytest.mark.skipif(not MT_BENCH.exists(), reason=f"{MT_BENCH} is absent (a clone without ../shared)")
def test_mt_bench_reads_as_80_two_turn_conversations():
    conversations = load_conversations(f"jsonl:{MT_BENCH}")
    assert len(conversations) == 80 and all(len(c.turns) == 2 for c in conversations)


# --- the runner --------------------------------------------------------------------------------------


def _turns(conversation: Conversation, scenario: str = "chat") -> list[ChatRequest]:
    system = [{"role": "system", "content": conversation.system}] if conversation.system else []
    return [
        ChatRequest(
            request_id=f"{scenario}-{conversation.id}-t{turn}",
            prompt_id=conversation.id,
            messages=(system if turn == 1 else []) + [{"role": "user", "content": text}],
            conversation=conversation.id,
            turn=turn,
        )
        for turn, text in enumerate(conversation.turns, start=1)
    ]


def test_each_turn_carries_the_engines_earlier_answers():
    """The reference server counts a request's prompt as its messages' words and answers `tokens`
    words: so turn k's prompt is every earlier question and answer plus its own question."""
    conversations = [
        Conversation("c0", ("one two", "three", "four five six"), system="sys word"),
        Conversation("c1", ("alpha", "beta gamma")),
        Conversation("c2", ("x",)),
    ]
    settings = RequestSettings(model_name="m", max_tokens=4, timeout_s=30)
    ctx = RunContext(engine="e", model="m", scenario="chat", concurrency=2)
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.002, tokens=50)) as server:
        records = run_load(
            server.chat_url,
            [_turns(c) for c in conversations],
            settings,
            ctx,
            LoadShape("conversation", concurrency=2, workers=2),
        )
        log = server.fetch_log()
    assert all(r.ok for r in records), [r.error for r in records]
    by_id = {r.request_id: r for r in records}
    assert [(r.conversation, r.turn) for r in records] == [
        ("c0", 1),
        ("c0", 2),
        ("c0", 3),
        ("c1", 1),
        ("c1", 2),
        ("c2", 1),
    ]
    answer = 4  # words per answer (max_tokens 4 of " tok")
    assert [by_id[f"chat-c0-t{k}"].prompt_tokens for k in (1, 2, 3)] == [4, 4 + answer + 1, 4 + 2 * answer + 1 + 3]
    assert [by_id[f"chat-c1-t{k}"].prompt_tokens for k in (1, 2)] == [1, 1 + answer + 2]
    # A conversation's turns go one after the other, each after the one before ended.
    turns = sorted((r for r in records if r.conversation == "c0"), key=lambda r: r.turn)
    for before, after in zip(turns, turns[1:], strict=False):
        assert after.send_mono >= before.send_mono + before.latency_s - 1e-6
    assert len(log["requests"]) == 6


def test_a_failed_turn_records_the_later_turns_as_not_sent():
    from infbench.engines.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    settings = RequestSettings(model_name="m", max_tokens=4, timeout_s=5)
    ctx = RunContext(engine="e", model="m", scenario="chat", concurrency=1)
    records = run_load(url, [_turns(Conversation("c0", ("a", "b", "c")))], settings, ctx, LoadShape("conversation"))
    assert [r.turn for r in records] == [1, 2, 3]
    assert "ConnectError" in records[0].error
    assert all(r.error.startswith("not sent: an earlier turn of its conversation failed") for r in records[1:])

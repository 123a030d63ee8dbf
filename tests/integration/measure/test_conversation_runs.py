"""Conversations turn by turn against the reference server: each turn carries the engine's own
earlier answers, turns follow each other, a failed turn's later turns are recorded as not sent."""

from __future__ import annotations

from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import LoadShape, run_load
from infbench.measure.prepared import Conversation
from infbench.measure.refserver import RefServerProcess, RefSettings


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
    from infbench.procutil import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    settings = RequestSettings(model_name="m", max_tokens=4, timeout_s=5)
    ctx = RunContext(engine="e", model="m", scenario="chat", concurrency=1)
    records = run_load(url, [_turns(Conversation("c0", ("a", "b", "c")))], settings, ctx, LoadShape("conversation"))
    assert [r.turn for r in records] == [1, 2, 3]
    assert "ConnectError" in records[0].error
    assert all(r.error.startswith("not sent: an earlier turn of its conversation failed") for r in records[1:])

"""Conversation sources: multi-turn rows (bundled, MT-bench, ShareGPT, LIMA, OpenAI messages), bad rows
named by file and line, seeded samples."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED
from infbench.measure.prepared import PreparedConversations
from infbench.pipeline.conversations import load_conversations, sample_conversations
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
    prepared = PreparedConversations("chat", "builtin", picked)
    prepared.write(tmp_path / "s.json")
    assert PreparedConversations.read(tmp_path / "s.json") == prepared
    turns = prepared.chat_turns("chat")
    assert [[(t.conversation, t.turn) for t in c] for c in turns] == [[(c.id, 1), (c.id, 2)] for c in picked]


@pytest.mark.skipif(not MT_BENCH.exists(), reason=f"{MT_BENCH} is absent (a clone without ../shared)")
def test_mt_bench_reads_as_80_two_turn_conversations():
    conversations = load_conversations(f"jsonl:{MT_BENCH}")
    assert len(conversations) == 80 and all(len(c.turns) == 2 for c in conversations)

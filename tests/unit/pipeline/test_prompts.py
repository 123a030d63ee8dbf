"""Tests for infbench.pipeline.prompts: sources, formats, sampling and sample files."""

from __future__ import annotations

import builtins
import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
from conftest import SHARED
from infbench.handoff import PromptsMeta
from infbench.pipeline.prompts import (
    Prompt,
    PromptSourceError,
    build_sample,
    load_source,
    read_sample,
    sample_prompts,
)

MT_BENCH = SHARED / "datasets/mt_bench/question.jsonl"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def word_count(prompt: Prompt) -> int:
    return sum(len(m["content"].split()) for m in prompt.messages)


# --------------------------------------------------------------------------- builtin


def test_builtin_prompts_are_plentiful_unique_and_varied() -> None:
    prompts = load_source("builtin")
    assert len(prompts) >= 100
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "builtin-0000" and all(p.source == "builtin" for p in prompts)
    assert [p.source_index for p in prompts] == list(range(len(prompts)))

    france = [p for p in prompts if p.messages[-1]["content"] == "What is the capital of France?"]
    assert len(france) == 1

    # Every prompt ends with the user's turn; some carry a system message.
    assert all(p.messages[-1]["role"] == "user" for p in prompts)
    assert sum(p.messages[0]["role"] == "system" for p in prompts) >= 5

    # A realistic spread of lengths: many short questions and some long tasks.
    lengths = sorted(word_count(p) for p in prompts)
    assert lengths[0] <= 12
    assert lengths[-1] >= 300
    assert sum(n <= 20 for n in lengths) >= 20
    assert sum(n >= 150 for n in lengths) >= 8
    # No near-duplicates of the same text.
    assert len({p.messages[-1]["content"] for p in prompts}) == len(prompts)


# --------------------------------------------------------------------------- sampling


def test_sampling_is_hash_ranked_and_deterministic() -> None:
    prompts = load_source("builtin")
    first = sample_prompts(prompts, 10, seed=1)
    again = sample_prompts(list(reversed(prompts)), 10, seed=1)
    assert [p.id for p in first] == [p.id for p in again]  # input order does not matter

    # Ranked order: the sha256 keys are ascending and no other prompt ranks lower.
    def key(p: Prompt) -> str:
        return hashlib.sha256(f"1:{p.id}".encode()).hexdigest()

    keys = [key(p) for p in first]
    assert keys == sorted(keys)
    chosen = {p.id for p in first}
    assert all(key(p) > keys[-1] for p in prompts if p.id not in chosen)

    other = sample_prompts(prompts, 10, seed=2)
    assert [p.id for p in other] != [p.id for p in first]
    # A smaller sample with the same seed is a prefix of the larger one.
    assert [p.id for p in sample_prompts(prompts, 3, seed=1)] == [p.id for p in first[:3]]


def test_sampling_rejects_bad_n() -> None:
    prompts = load_source("builtin")
    with pytest.raises(PromptSourceError, match=rf"has only {len(prompts)}"):
        sample_prompts(prompts, len(prompts) + 1, seed=0)
    with pytest.raises(PromptSourceError, match=">= 1"):
        sample_prompts(prompts, 0, seed=0)


def test_build_sample_is_byte_identical_and_round_trips(tmp_path: Path) -> None:
    out_a = tmp_path / "a" / "sample.jsonl"
    out_b = tmp_path / "b" / "sample.jsonl"
    meta_a = build_sample("builtin", 12, 42, out_a)
    meta_b = build_sample("builtin", 12, 42, out_b)

    assert out_a.read_bytes() == out_b.read_bytes()
    assert meta_a == meta_b
    assert meta_a.sha256 == hashlib.sha256(out_a.read_bytes()).hexdigest()
    assert {k: getattr(meta_a, k) for k in ("source", "n", "seed", "count")} == {
        "source": "builtin",
        "n": 12,
        "seed": 42,
        "count": 12,
    }
    sidecar = tmp_path / "a" / "sample.meta.json"
    assert json.loads(sidecar.read_text(encoding="utf-8")) == meta_a.to_dict()
    assert PromptsMeta.read(sidecar) == meta_a  # the file is the handoff record
    assert sidecar.read_bytes() == (tmp_path / "b" / "sample.meta.json").read_bytes()
    # Atomic write leaves no temp files behind.
    assert sorted(p.name for p in out_a.parent.iterdir()) == ["sample.jsonl", "sample.meta.json"]

    raw = out_a.read_bytes()
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    first_line = raw.decode("utf-8").splitlines()[0]
    obj = json.loads(first_line)
    assert list(obj) == ["id", "messages", "source", "source_index"]  # keys sorted
    assert first_line == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    expected = sample_prompts(load_source("builtin"), 12, 42)
    assert read_sample(out_a) == expected

    meta_c = build_sample("builtin", 12, 43, tmp_path / "c.jsonl")
    assert meta_c.sha256 != meta_a.sha256


# --------------------------------------------------------------------------- formats


def test_messages_format_keeps_system_and_first_user(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi there"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Second turn"},
                ]
            },
            {"messages": [{"role": "user", "content": "Only user", "name": "x"}]},
        ],
    )
    prompts = load_source(f"jsonl:{path}")
    assert [p.id for p in prompts] == ["chat-0000", "chat-0001"]
    assert prompts[0].messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    )
    assert prompts[1].messages == ({"role": "user", "content": "Only user"},)
    assert prompts[1].source == f"jsonl:{path}" and prompts[1].source_index == 1


def test_conversations_and_turns_formats_use_first_string(tmp_path: Path) -> None:
    lima = write_jsonl(
        tmp_path / "lima.jsonl",
        [
            {"conversations": ["Write a poem.", "Roses are red..."], "source": "x"},
            {"conversations": ["Explain tides."]},
        ],
    )
    mt = write_jsonl(
        tmp_path / "mt.jsonl",
        [
            {"question_id": 1, "turns": ["First question", "Follow-up"]},
        ],
    )
    assert [p.messages for p in load_source(f"jsonl:{lima}")] == [
        ({"role": "user", "content": "Write a poem."},),
        ({"role": "user", "content": "Explain tides."},),
    ]
    assert load_source(f"jsonl:{mt}")[0].messages == ({"role": "user", "content": "First question"},)


def test_relative_path_and_blank_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "q.jsonl").write_text('\n{"turns": ["a b c"]}\n   \n{"turns": ["d e f"]}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    prompts = load_source("jsonl:d/q.jsonl")
    assert [(p.id, p.source_index) for p in prompts] == [("q-0000", 0), ("q-0001", 1)]


def test_mt_bench_real_data() -> None:
    if not MT_BENCH.is_file():
        pytest.skip("../shared not present: MT-bench data is only available in the dev/CI checkout")
    prompts = load_source(f"jsonl:{MT_BENCH}")
    assert len(prompts) == 80
    first = json.loads(MT_BENCH.read_text(encoding="utf-8").splitlines()[0])
    assert "turns" in first
    assert prompts[0].messages == ({"role": "user", "content": first["turns"][0]},)
    assert prompts[0].id == "question-0000" and prompts[79].id == "question-0079"
    assert all(len(p.messages) == 1 and p.messages[0]["role"] == "user" for p in prompts)


# --------------------------------------------------------------------------- errors


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"turns": ["ok"]}\n{"turns": ["ok"]}\n{"turns": ["oops"\n', encoding="utf-8")
    with pytest.raises(PromptSourceError) as err:
        load_source(f"jsonl:{path}")
    assert "broken.jsonl" in str(err.value) and "line 3" in str(err.value)
    assert "invalid JSON" in str(err.value)


def test_format_mismatch_names_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"turns": ["a"]},
            {"turns": ["b"]},
            {"conversations": ["c"]},
        ],
    )
    with pytest.raises(PromptSourceError) as err:
        load_source(f"jsonl:{path}")
    msg = str(err.value)
    assert "mixed.jsonl, line 3" in msg
    assert "expected key 'turns' (the file's format, detected from line 1)" in msg


GOOD_TURNS = {"turns": ["fine"]}
GOOD_CHAT = {"messages": [{"role": "user", "content": "fine"}]}


@pytest.mark.parametrize(
    ("good", "bad", "fragment"),
    [
        (GOOD_TURNS, {"turns": [""]}, "turns[0] is empty"),
        (GOOD_TURNS, {"turns": "not a list"}, "non-empty list"),
        (GOOD_CHAT, {"messages": [{"role": "assistant", "content": "hi"}]}, "role 'assistant'"),
        (GOOD_CHAT, {"messages": [{"role": "user", "content": 5}]}, "must be a string"),
        (GOOD_CHAT, {"messages": [{"role": "system", "content": "only system"}]}, "no 'user' message"),
        (GOOD_CHAT, ["not", "an", "object"], "expected a JSON object"),
        (None, {"prompt": "x"}, "cannot detect the record format"),
    ],
)
def test_bad_rows_are_reported(tmp_path: Path, good: object, bad: object, fragment: str) -> None:
    # Line 1: a good record (or blank), line 2: blank, line 3: the bad record.
    first = json.dumps(good) if good is not None else ""
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{first}\n\n{json.dumps(bad)}\n", encoding="utf-8")
    with pytest.raises(PromptSourceError) as err:
        load_source(f"jsonl:{path}")
    assert "bad.jsonl, line 3" in str(err.value)
    assert fragment in str(err.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(PromptSourceError, match="nowhere.jsonl not found"):
        load_source(f"jsonl:{missing}")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(PromptSourceError, match="no records"):
        load_source(f"jsonl:{empty}")


def test_unknown_source_lists_accepted_forms() -> None:
    with pytest.raises(PromptSourceError) as err:
        load_source("mtbench")
    msg = str(err.value)
    assert "'mtbench'" in msg
    for form in ("builtin", "jsonl:PATH", "hf:DATASET[:SPLIT]"):
        assert form in msg


# --------------------------------------------------------------------------- hf


def test_hf_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate absence even where `datasets` happens to be installed.
    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(PromptSourceError, match=r"pip install datasets"):
        load_source("hf:GAIR/lima")


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset) -> list:
    calls: list = []

    def recorder(name: str, split: str):
        calls.append((name, split))
        return load_dataset(name, split)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=recorder))
    return calls


def test_hf_load_failure_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str, split: str):
        raise ConnectionError("Couldn't reach the Hub\nlong traceback-ish details")

    _fake_datasets(monkeypatch, fail)
    with pytest.raises(PromptSourceError) as err:
        load_source("hf:GAIR/lima")
    msg = str(err.value)
    assert "\n" not in msg
    assert "ConnectionError: Couldn't reach the Hub" in msg
    assert "long traceback" not in msg
    for hint in ("network", "HF_TOKEN", "gated"):
        assert hint in msg


def test_hf_rows_are_parsed_like_jsonl(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"conversations": [f"question {i}", "answer"], "source": "s"} for i in range(9)]
    calls = _fake_datasets(monkeypatch, lambda name, split: rows)
    prompts = load_source("hf:GAIR/lima")
    assert calls == [("GAIR/lima", "train")]
    assert prompts[7].id == "GAIR-lima-train-0007"
    assert prompts[7].messages == ({"role": "user", "content": "question 7"},)
    assert prompts[7].source == "hf:GAIR/lima"

    load_source("hf:GAIR/lima:test")
    assert calls[-1] == ("GAIR/lima", "test")

    rows.append({"turns": ["x"]})
    with pytest.raises(PromptSourceError, match=r"row 10: expected key 'conversations'"):
        load_source("hf:GAIR/lima")

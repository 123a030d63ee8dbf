"""Multi-turn conversation sources: the user turns of each conversation, in order.

A conversation scenario sends turn 1, then turn 2 with the engine's own answer to turn 1 in the
messages, and so on, as a chat client would; so only the user turns (and a leading system message)
are taken from a source, never its recorded answers. Sources, as for prompts:

* ``builtin``              -- ``data/builtin_conversations.jsonl`` (16 three-turn conversations)
* ``jsonl:PATH``           -- JSON lines, one conversation a line, in any of these formats (the
  first line fixes it): MT-bench ``turns`` (a list of user turns), ShareGPT ``conversations`` (a list
  of ``{from, value}``; ``human``/``user`` turns are taken) or LIMA ``conversations`` (a list of
  strings alternating user and assistant), OpenAI ``messages`` (its ``user`` messages)
* ``hf:DATASET[:SPLIT]``   -- the same formats from a Hugging Face dataset (the ``datasets`` package)

A conversation without a user turn stops the run, naming the file and line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from infbench.measure.prepared import Conversation
from infbench.pipeline.prompts import PromptSourceError, _jsonl_records, _nonempty_text, _RecordError

BUILTIN_FILE = Path(__file__).parent.parent / "data" / "builtin_conversations.jsonl"
FORMATS = ("turns", "conversations", "messages")
USER_NAMES = ("human", "user")  # ShareGPT's speaker names for the user
SYSTEM_NAMES = ("system",)


def _user_turns(record: Any, fmt: str) -> tuple[list[str], str | None]:
    value = record.get(fmt) if isinstance(record, dict) else None
    if not isinstance(record, dict) or fmt not in record:
        found = [f for f in FORMATS if isinstance(record, dict) and f in record]
        raise _RecordError(f"expected key {fmt!r}" + (f", found {found[0]!r}" if found else ""))
    if not isinstance(value, list):
        raise _RecordError(f"{fmt!r} must be a list, got {type(value).__name__}")
    system = None
    if fmt == "turns":
        turns = [_nonempty_text(t, f"turns[{i}]") for i, t in enumerate(value)]
    elif fmt == "messages":
        turns = []
        for i, m in enumerate(value):
            if not isinstance(m, dict):
                raise _RecordError(f"messages[{i}] must be an object")
            if m.get("role") == "user":
                turns.append(_nonempty_text(m.get("content"), f"messages[{i}].content"))
            elif m.get("role") == "system" and i == 0:
                system = _nonempty_text(m.get("content"), "messages[0].content")
    elif all(isinstance(t, str) for t in value):  # LIMA: user, assistant, user, ...
        turns = [_nonempty_text(t, f"conversations[{i}]") for i, t in enumerate(value) if i % 2 == 0]
    else:  # ShareGPT
        turns = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or "from" not in m or "value" not in m:
                raise _RecordError(f"conversations[{i}] must be a string or an object with 'from' and 'value'")
            if m["from"] in USER_NAMES:
                turns.append(_nonempty_text(m["value"], f"conversations[{i}].value"))
            elif m["from"] in SYSTEM_NAMES and i == 0:
                system = _nonempty_text(m["value"], "conversations[0].value")
    if not turns:
        raise _RecordError(f"a conversation with no user turn ({fmt!r} holds none)")
    return turns, system


def _from_records(records, where: str, unit: str, id_prefix: str) -> list[Conversation]:
    conversations: list[Conversation] = []
    fmt = None
    for index, (loc, record) in enumerate(records):
        try:
            if fmt is None:
                fmt = next((f for f in FORMATS if isinstance(record, dict) and f in record), None)
                if fmt is None:
                    raise _RecordError(f"expected a JSON object with one of the keys {', '.join(map(repr, FORMATS))}")
            turns, system = _user_turns(record, fmt)
        except _RecordError as err:
            raise PromptSourceError(f"{where}, {unit} {loc}: {err}") from None
        conversations.append(Conversation(f"{id_prefix}-{index:04d}", tuple(turns), system, index))
    if not conversations:
        raise PromptSourceError(f"{where}: contains no conversations")
    return conversations


def load_conversations(source: str) -> list[Conversation]:
    """Every conversation of a source, in order."""
    if source == "builtin":
        return _from_records(_jsonl_records(BUILTIN_FILE, "builtin conversations"), str(BUILTIN_FILE), "line", "conv")
    if source.startswith("jsonl:"):
        path = Path(source[len("jsonl:") :])
        where = f"conversations file {path}"
        if not path.is_file():
            raise PromptSourceError(f"{where}: {'is a directory' if path.is_dir() else 'not found'}")
        stem = path.name.removesuffix(".jsonl")
        return _from_records(_jsonl_records(path, where), where, "line", stem)
    if source.startswith("hf:"):
        dataset, _, split = source[len("hf:") :].partition(":")
        try:
            import datasets  # type: ignore[import-not-found]
        except ImportError:
            raise PromptSourceError(f"conversation source {source!r} needs the 'datasets' package") from None
        rows = datasets.load_dataset(dataset, split=split or "train")
        records = ((str(i), row) for i, row in enumerate(rows, start=1))
        return _from_records(records, f"Hugging Face dataset {dataset}", "row", dataset.replace("/", "-"))
    raise PromptSourceError(f"unknown conversation source {source!r}: expected 'builtin', 'jsonl:PATH' or 'hf:DATASET'")


def sample_conversations(conversations: list[Conversation], n: int | None, seed: int, max_turns: int | None):
    """`n` conversations (all when None) ranked by sha256(seed:id) as prompt samples are, each cut to
    `max_turns` user turns."""
    ranked = sorted(
        conversations, key=lambda c: (hashlib.sha256(f"{seed}:{c.id}".encode()).hexdigest(), c.source_index)
    )
    if n is not None and n > len(ranked):
        raise PromptSourceError(f"asked for {n} conversations but the source has only {len(ranked)}")
    picked = ranked if n is None else ranked[:n]
    return [Conversation(c.id, c.turns[:max_turns] if max_turns else c.turns, c.system, c.source_index) for c in picked]

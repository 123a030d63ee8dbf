"""Prompt sources and deterministic prompt sampling.

A *source* string names where prompts come from:

* ``builtin``                 -- the prompts bundled in ``data/builtin_prompts.jsonl``
* ``jsonl:PATH``              -- a JSON-lines file (``messages``, ``conversations`` or ``turns`` records)
* ``hf:DATASET[:SPLIT]``      -- a Hugging Face dataset (needs the optional ``datasets`` package)

Every prompt is reduced to the chat messages that precede the first model reply
(optional system messages plus the first user turn), so all engines receive the
same single-turn requests. Sampling ranks prompts by a hash of ``seed`` and the
prompt id, so a sample is identical on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infbench.fileio import write_bytes_atomic
from infbench.handoff import PromptsMeta

__all__ = [
    "Prompt",
    "PromptSourceError",
    "build_sample",
    "load_source",
    "read_sample",
    "sample_prompts",
]

BUILTIN_FILE = Path(__file__).parent.parent / "data" / "builtin_prompts.jsonl"

# Record formats, in the order they are tried when detecting a file's format.
FORMATS = ("messages", "conversations", "turns")

SOURCE_FORMS = "'builtin', 'jsonl:PATH' or 'hf:DATASET[:SPLIT]'"


class PromptSourceError(ValueError):
    """A prompt source could not be used; the message names the culprit."""


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: tuple[dict, ...]
    source: str
    source_index: int


# --------------------------------------------------------------------------
# Record parsing (shared by jsonl files and Hugging Face rows)
# --------------------------------------------------------------------------


class _RecordError(Exception):
    """Problem with a single record; the caller adds the file/line location."""


def _detect_format(record: Any) -> str:
    if isinstance(record, dict):
        for fmt in FORMATS:
            if fmt in record:
                return fmt
    raise _RecordError(
        "cannot detect the record format: expected a JSON object with one of the keys "
        + ", ".join(repr(f) for f in FORMATS)
    )


def _nonempty_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _RecordError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _RecordError(f"{what} is empty")
    return value


def _messages_from_chat(value: Any) -> list[dict]:
    """Keep leading system messages and the first user message of an OpenAI chat."""
    if not isinstance(value, list) or not value:
        raise _RecordError("'messages' must be a non-empty list of {role, content} objects")
    kept: list[dict] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _RecordError(f"messages[{i}] must be an object, got {type(msg).__name__}")
        role = msg.get("role")
        content = _nonempty_text(msg.get("content"), f"messages[{i}].content")
        if role == "system":
            kept.append({"role": "system", "content": content})
        elif role == "user":
            kept.append({"role": "user", "content": content})
            return kept
        else:
            # A reply before any user turn means there is no prompt to replay.
            raise _RecordError(
                f"messages[{i}] has role {role!r}; expected only 'system' messages before the first 'user' message"
            )
    raise _RecordError("'messages' contains no 'user' message")


def _messages_from_turns(value: Any, key: str) -> list[dict]:
    """LIMA ``conversations`` and MT-bench ``turns``: strings, the first is the user's."""
    if not isinstance(value, list) or not value:
        raise _RecordError(f"{key!r} must be a non-empty list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _RecordError(f"{key}[{i}] must be a string, got {type(item).__name__}")
    return [{"role": "user", "content": _nonempty_text(value[0], f"{key}[0]")}]


def _parse_record(record: Any, fmt: str, detected: str) -> list[dict]:
    if not isinstance(record, dict):
        raise _RecordError(f"expected a JSON object, got {type(record).__name__}")
    if fmt not in record:
        # Mixed formats usually mean concatenated files; say which line set the format.
        found = [f for f in FORMATS if f in record]
        got = (
            f"this record has {found[0]!r} instead"
            if found
            else "this record has keys " + (", ".join(map(repr, sorted(record))) or "none")
        )
        raise _RecordError(f"expected key {fmt!r} ({detected}), but {got}")
    if fmt == "messages":
        return _messages_from_chat(record[fmt])
    return _messages_from_turns(record[fmt], fmt)


def _prompts_from_records(
    records: Iterable[tuple[str, Any]],
    *,
    source: str,
    id_prefix: str,
    where: str,
    unit: str,
    kind: str,
) -> list[Prompt]:
    """Turn located records into prompts.

    ``records`` yields (location label, decoded record); ``where``, ``unit`` and
    ``kind`` build messages such as "prompts file x.jsonl, line 7: expected key
    'turns' (the file's format, detected from line 1), ...".
    """
    prompts: list[Prompt] = []
    fmt: str | None = None
    detected = ""
    for index, (loc, record) in enumerate(records):
        try:
            if fmt is None:
                # The first record fixes the format for the whole source.
                fmt = _detect_format(record)
                detected = f"the {kind}'s format, detected from {unit} {loc}"
            messages = _parse_record(record, fmt, detected)
        except _RecordError as exc:
            raise PromptSourceError(f"{where}, {unit} {loc}: {exc}") from None
        prompts.append(
            Prompt(
                id=f"{id_prefix}-{index:04d}",
                messages=tuple(messages),
                source=source,
                source_index=index,
            )
        )
    if not prompts:
        raise PromptSourceError(f"{where}: contains no records (source {source!r})")
    return prompts


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def _jsonl_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    """Yield (1-based line number, decoded object) for each non-blank line."""
    # Split bytes ourselves so a bad UTF-8 sequence is reported on its own line.
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptSourceError(f"{where}, line {lineno}: not valid UTF-8 ({exc.reason})") from None
        if not text.strip():
            continue
        try:
            yield str(lineno), json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptSourceError(f"{where}, line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def _load_jsonl(source: str, path_text: str, id_prefix: str | None = None) -> list[Prompt]:
    if not path_text:
        raise PromptSourceError(f"prompt source {source!r}: missing path after 'jsonl:'")
    path = Path(path_text)  # relative paths resolve against the current directory
    where = f"prompts file {path_text}"
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "not found"
        raise PromptSourceError(f"{where} {reason} (source {source!r}; resolved to {path.resolve()})")
    return _prompts_from_records(
        _jsonl_records(path, where),
        source=source,
        id_prefix=id_prefix or _stem(path),
        where=where,
        unit="line",
        kind="file",
    )


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else path.stem


def _load_hf(source: str, spec: str) -> list[Prompt]:
    dataset, _, split = spec.partition(":")
    split = split or "train"
    if not dataset:
        raise PromptSourceError(f"prompt source {source!r}: missing dataset name after 'hf:'")
    try:
        # Optional dependency: only needed for hf: sources.
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise PromptSourceError(
            f"prompt source {source!r} needs the Hugging Face 'datasets' package: "
            "pip install datasets (or pip install -e .[hf])"
        ) from None
    try:
        rows = datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure becomes one readable line
        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else ""
        hint = (
            "check network access, that the dataset and split exist, "
            "and for gated datasets (such as GAIR/lima) accept the terms on the Hub and set HF_TOKEN"
        )
        if "Dataset scripts are no longer supported" in first:
            # datasets>=4 refuses repositories that still ship a loading script.
            hint = "this dataset ships a legacy loading script that datasets>=4 no longer runs; " + hint
        raise PromptSourceError(
            f"could not load Hugging Face dataset {dataset!r} (split {split!r}) for source {source!r}: "
            f"{type(exc).__name__}: {first} -- {hint}"
        ) from None
    prefix = f"{dataset.replace('/', '-')}-{split}"
    return _prompts_from_records(
        ((str(i), row) for i, row in enumerate(rows, start=1)),
        source=source,
        id_prefix=prefix,
        where=f"Hugging Face dataset {dataset} (split {split})",
        unit="row",
        kind="dataset",
    )


def load_source(source: str) -> list[Prompt]:
    """Load every prompt of ``source``, in source order."""
    if source == "builtin":
        return _load_jsonl(source, str(BUILTIN_FILE), id_prefix="builtin")
    if source.startswith("jsonl:"):
        return _load_jsonl(source, source[len("jsonl:") :])
    if source.startswith("hf:"):
        return _load_hf(source, source[len("hf:") :])
    raise PromptSourceError(f"unknown prompt source {source!r}: expected {SOURCE_FORMS}")


# --------------------------------------------------------------------------
# Sampling and sample files
# --------------------------------------------------------------------------


def _rank_key(seed: int, prompt: Prompt) -> tuple[str, int]:
    # sha256 is stable across machines and Python versions (unlike random/hash()).
    digest = hashlib.sha256(f"{seed}:{prompt.id}".encode()).hexdigest()
    return digest, prompt.source_index


def sample_prompts(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """The ``n`` prompts with the smallest sha256(f"{seed}:{id}"), in that ranked order."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PromptSourceError(f"number of prompts must be an integer >= 1, got {n!r}")
    if n > len(prompts):
        origin = prompts[0].source if prompts else "the source"
        raise PromptSourceError(f"asked for {n} prompts but {origin!r} has only {len(prompts)}")
    return sorted(prompts, key=lambda p: _rank_key(seed, p))[:n]


def _dump_line(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def meta_path_for(out_path: str | Path) -> Path:
    """``x/sample.jsonl`` -> ``x/sample.meta.json``."""
    out = Path(out_path)
    base = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(base + ".meta.json")


def build_sample(source: str, n: int, seed: int, out_path: str | Path) -> PromptsMeta:
    """Load ``source``, sample ``n`` prompts with ``seed``, write the sample and its meta file."""
    sample = sample_prompts(load_source(source), n, seed)
    lines = [
        _dump_line(
            {
                "id": p.id,
                "source": p.source,
                "source_index": p.source_index,
                "messages": list(p.messages),
            }
        )
        for p in sample
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    meta = PromptsMeta(source=source, n=n, seed=seed, count=len(sample), sha256=hashlib.sha256(data).hexdigest())
    out = Path(out_path)
    write_bytes_atomic(out, data)
    meta.write(meta_path_for(out))
    return meta


def read_sample(path: str | Path) -> list[Prompt]:
    """Read a sample file written by :func:`build_sample`."""
    path = Path(path)
    where = f"sample file {path}"
    if not path.is_file():
        raise PromptSourceError(f"{where} not found")
    prompts: list[Prompt] = []
    for lineno, record in _jsonl_records(path, where):
        try:
            if not isinstance(record, dict):
                raise _RecordError(f"expected a JSON object, got {type(record).__name__}")
            missing = [k for k in ("id", "source", "source_index", "messages") if k not in record]
            if missing:
                raise _RecordError(f"missing key(s) {', '.join(map(repr, missing))}")
            index = record["source_index"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise _RecordError("'source_index' must be an integer")
            prompt = Prompt(
                id=_nonempty_text(record["id"], "'id'"),
                messages=tuple(_messages_from_chat(record["messages"])),
                source=_nonempty_text(record["source"], "'source'"),
                source_index=index,
            )
        except _RecordError as exc:
            raise PromptSourceError(f"{where}, line {lineno}: {exc}") from None
        prompts.append(prompt)
    return prompts

"""Mooncake-format request traces: read and check them, cut a window, scale time and lengths, and
write a small seeded trace of the same shape.

The format (Mooncake FAST'25 traces; vLLM, SGLang and guidellm replay it): one JSON object a line,
`timestamp` (ms from the trace start), `input_length` and `output_length` (tokens) and `hash_ids`,
one id per 512-token block of the input. Requests that share leading ids share those blocks' tokens,
which is how the trace records the prefix reuse between turns of a conversation.

Replay (scenario kind `trace`): request i is sent at (timestamp_i - timestamp_first) x time_scale
seconds after the start, whatever is in flight (open loop, latencies from that planned time). A
length scale shrinks the lengths and the block size together (0.0625: 512-token blocks become 32),
so a small model on a CPU replays the same reuse pattern at a size it can serve.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from infbench.fileio import write_text_atomic

BLOCK_TOKENS = 512  # tokens per hash id in the Mooncake traces
FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class TraceRow:
    line: int  # 1-based line in the file
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _integer(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _row(record, line: int, previous_ms: float | None) -> TraceRow:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise ValueError(f"missing field {', '.join(map(repr, missing))} (a trace row has {', '.join(FIELDS)})")
    timestamp = record["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise ValueError(f"timestamp must be a number of milliseconds, got {timestamp!r}")
    if timestamp < 0:
        raise ValueError(f"timestamp must not be negative, got {timestamp!r}")
    if previous_ms is not None and timestamp < previous_ms:
        raise ValueError(f"timestamp {timestamp:g} is earlier than the line before's {previous_ms:g} (not monotonic)")
    hash_ids = record["hash_ids"]
    if not isinstance(hash_ids, list) or not hash_ids:
        raise ValueError(f"hash_ids must be a non-empty list of integers, got {hash_ids!r}"[:200])
    for i, h in enumerate(hash_ids):
        _integer(h, f"hash_ids[{i}]", 0)
    return TraceRow(
        line=line,
        timestamp_ms=float(timestamp),
        input_length=_integer(record["input_length"], "input_length", 1),
        output_length=_integer(record["output_length"], "output_length", 1),
        hash_ids=tuple(hash_ids),
    )


def read_trace(path: str | Path) -> list[TraceRow]:
    """Every row of a trace file, checked: one line `trace FILE, line N: ...` for the first bad row."""
    path = Path(path)
    where = f"trace {path}"
    if not path.is_file():
        raise TraceError(f"{where}: {'is a directory' if path.is_dir() else 'not found'}")
    rows: list[TraceRow] = []
    previous: float | None = None
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = _row(json.loads(raw), line, previous)
            except json.JSONDecodeError as err:
                raise TraceError(f"{where}, line {line}: invalid JSON ({err.msg} at column {err.colno})") from None
            except (ValueError, UnicodeDecodeError) as err:
                raise TraceError(f"{where}, line {line}: {err}") from None
            rows.append(row)
            previous = row.timestamp_ms
    if not rows:
        raise TraceError(f"{where}: no rows")
    return rows


@dataclass(frozen=True)
class TraceWindow:
    """Which rows to replay: from row `start` (0-based) or the first row at or after `start_s`
    seconds of trace time, then `count` rows or the rows within `duration_s` seconds of trace time
    (neither: to the end)."""

    start: int = 0
    start_s: float | None = None
    count: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.duration_s is not None:
            raise ValueError("a trace window takes count or duration_s, not both")

    def select(self, rows: list[TraceRow]) -> list[TraceRow]:
        first = self.start
        if self.start_s is not None:
            origin = rows[0].timestamp_ms
            first = next((i for i, r in enumerate(rows) if r.timestamp_ms - origin >= self.start_s * 1000), len(rows))
        picked = rows[first:]
        if self.count is not None:
            picked = picked[: self.count]
        elif self.duration_s is not None and picked:
            end = picked[0].timestamp_ms + self.duration_s * 1000
            picked = [r for r in picked if r.timestamp_ms < end]
        return picked


@dataclass(frozen=True)
class TraceRequest:
    """One row as it is replayed: send offset, scaled lengths, its blocks."""

    line: int
    at_s: float  # seconds after the replay's start
    input_tokens: int  # the whole prompt, chat template included
    output_tokens: int
    hash_ids: tuple[int, ...]


def scaled_block_tokens(length_scale: float) -> int:
    return max(1, round(BLOCK_TOKENS * length_scale))


def plan_replay(rows: list[TraceRow], time_scale: float = 1.0, length_scale: float = 1.0) -> list[TraceRequest]:
    """The rows as sends: offsets from the first row's timestamp x time_scale; lengths x length_scale
    (at least one token each); blocks shrink with the same scale (scaled_block_tokens)."""
    if time_scale <= 0 or length_scale <= 0:
        raise ValueError("time_scale and length_scale must be positive")
    if not rows:
        return []
    origin = rows[0].timestamp_ms
    return [
        TraceRequest(
            line=row.line,
            at_s=(row.timestamp_ms - origin) / 1000.0 * time_scale,
            input_tokens=max(1, round(row.input_length * length_scale)),
            output_tokens=max(1, round(row.output_length * length_scale)),
            hash_ids=row.hash_ids,
        )
        for row in rows
    ]


def seeded_trace(
    seed: int = 0,
    conversations: int = 24,
    turns: tuple[int, int] = (2, 5),
    rate: float = 0.5,
    think_s: tuple[float, float] = (5.0, 30.0),
    system_blocks: int = 2,
    question_tokens: tuple[int, int] = (300, 1500),
    answer_tokens: tuple[int, int] = (40, 400),
) -> list[dict]:
    """A small trace in the Mooncake format, seeded: conversations arriving at `rate`/s (Poisson),
    each a few turns apart; every request starts with the same system blocks, and turn k+1's input
    is turn k's input, its answer and a new question (so its leading hash ids are turn k's), as in
    the production trace. Lengths are at full scale (512-token blocks): replay it with a length_scale."""
    rng = random.Random(seed)
    next_id = system_blocks
    rows = []
    start = 0.0
    for _ in range(conversations):
        at, context, full_blocks, ids = start, system_blocks * BLOCK_TOKENS, system_blocks, list(range(system_blocks))
        for _turn in range(rng.randint(*turns)):
            tokens = context + rng.randint(*question_tokens)
            # The full blocks of the turn before stay; its partly filled last block and what follows are new.
            ids = ids[:full_blocks]
            while len(ids) < math.ceil(tokens / BLOCK_TOKENS):
                ids.append(next_id)
                next_id += 1
            output = rng.randint(*answer_tokens)
            rows.append(
                {"timestamp": round(at * 1000), "input_length": tokens, "output_length": output, "hash_ids": ids}
            )
            context, full_blocks = tokens + output, tokens // BLOCK_TOKENS
            at += rng.uniform(*think_s)
        start += rng.expovariate(rate)
    rows.sort(key=lambda r: r["timestamp"])
    return rows


def write_seeded_trace(path: str | Path, seed: int = 0) -> int:
    """seeded_trace() as a JSONL file; returns its row count."""
    rows = seeded_trace(seed)
    write_text_atomic(path, "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in rows))
    return len(rows)

"""The per-request record: what the client saw of one chat completion, written to results/raw/."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from infbench.fileio import read_jsonl, write_jsonl_atomic


@dataclass
class RequestRecord:
    request_id: str
    prompt_id: str
    engine: str
    model: str
    scenario: str
    concurrency: int
    # Wall-clock send time (unix seconds); all durations below are monotonic-clock seconds.
    send_time: float
    ttft_s: float | None = None  # first chunk carrying content; role-only and empty chunks are not tokens
    latency_s: float | None = None  # full round trip: send to end of stream
    chunk_times_s: list[float] = field(default_factory=list)  # content chunks, relative to send
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_counted_by: str = "usage"  # usage | chunks (engine gave no usage: one token per chunk)
    max_tokens: int = 0
    output_length: str = "natural"  # natural (stop at EOS) | fixed (exactly max_tokens)
    finish_reason: str | None = None
    status: int | None = None  # HTTP status
    error: str | None = None
    output_text: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and self.latency_s is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "RequestRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})


def write_records(path: str | Path, records: list[RequestRecord]) -> None:
    write_jsonl_atomic(path, (r.to_dict() for r in records))


def read_records(path: str | Path) -> list[RequestRecord]:
    return [RequestRecord.from_dict(row) for row in read_jsonl(path)]

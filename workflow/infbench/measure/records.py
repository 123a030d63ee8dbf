"""The per-request record: what the client saw of one chat completion, written to results/raw/."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from infbench.fileio import read_jsonl


@dataclass
class RequestRecord:
    request_id: str
    prompt_id: str
    engine: str
    model: str
    scenario: str
    concurrency: int
    # Wall-clock planned send time (unix seconds); all durations below are monotonic-clock seconds,
    # counted from the planned send time (a late client cannot hide its lateness).
    send_time: float
    ttft_s: float | None = None  # first chunk carrying content; role-only and empty chunks are not tokens
    latency_s: float | None = None  # full round trip: send to end of stream
    response_end_s: float | None = None  # send to the end of the HTTP response (a server may end it after [DONE])
    chunk_times_s: list[float] = field(default_factory=list)  # content chunks, relative to send
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Prompt tokens the engine served from its prefix cache, as it reports them (usage
    # prompt_tokens_details.cached_tokens, llama.cpp's timings.cache_n); None: it did not say.
    cached_prompt_tokens: int | None = None
    cache: str | None = None  # the scenario's declared cache state: cold | warm
    # usage | chunks (engine gave no usage: the chunks' token counts summed) | tokenizer
    tokens_counted_by: str = "usage"
    # Tokens in each content chunk, and how they were known: usage (deltas of cumulative usage) |
    # token_ids | tokenizer | one_per_chunk (nothing said: assumed one, ITL is then per chunk).
    chunk_tokens: list[int] = field(default_factory=list)
    chunk_tokens_counted_by: str | None = None
    # The client's own measurement error (see client.py). send_mono: planned send on CLOCK_MONOTONIC,
    # system-wide, shared by worker processes and the reference server's log.
    send_mono: float | None = None
    dispatch_lag_s: float | None = None  # actual start - planned send
    connect_s: float | None = None  # TCP connect; 0.0 when a kept-alive connection was reused
    read_lag_p99_s: float | None = None  # bound on how long content chunks waited unread (p99, max)
    read_lag_max_s: float | None = None
    client_lag_share_limit: float | None = None  # flagged when client lag could move latency by more than this share
    worker: int = 0  # client process that sent it
    rate: float | None = None  # offered load (requests/s) of an open loop or sweep step
    # A step sized by duration (open loop, sweep, capacity): requests planned and requests completed
    # per second in its counted window (planned: the draw's own rate, not the nominal `rate`), and
    # whether the completed fell clearly short of the planned.
    offered_rate: float | None = None
    achieved_rate: float | None = None
    saturated: bool | None = None
    slo: str | None = None  # capacity: its SLO as JSON {figure: limit} (measure/capacity.py)
    step_passed: bool | None = None  # capacity: whether this request's step met the SLO (and was not saturated)
    slo_ttft_s: float | None = None  # a sweep's SLOs, for goodput
    slo_tpot_s: float | None = None
    max_tokens: int = 0
    output_length: str = "natural"  # natural (stop at EOS) | fixed (exactly max_tokens)
    planned_prompt_tokens: int | None = None  # tokenizer-exact prompts: the prompt tokens planned
    conversation: str | None = None  # a conversation's turn: its conversation and turn (1, 2, ...)
    turn: int | None = None
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
    def from_dict(cls, row: dict) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})


def read_records(path: str | Path) -> list[RequestRecord]:
    return [RequestRecord.from_dict(row) for row in read_jsonl(path)]

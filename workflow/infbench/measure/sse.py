"""From a stream of server-sent events to a RequestRecord: content chunks stamped as they arrive,
tokens per chunk, finish reason, usage, and the read lag of each chunk."""

from __future__ import annotations

import json
from collections.abc import Callable

from infbench.measure.eventloop import LagSelector
from infbench.measure.recordmath import percentile
from infbench.measure.records import RequestRecord

TokenCounter = Callable[[str], int]  # a tokenizer's count of a text, for tokens per chunk


class StreamRecorder:
    """Turns one response's SSE lines into a RequestRecord, stamping content chunks as they arrive."""

    def __init__(
        self, record: RequestRecord, planned: float, token_counter: TokenCounter | None, selector: LagSelector | None
    ) -> None:
        self.record = record
        self.planned = planned
        self.token_counter = token_counter
        self.selector = selector
        self.text_parts: list[str] = []
        self.read_lags: list[float] = []
        self.saw_done = False
        self.end: float | None = None  # the read holding [DONE] (or the end of the body)
        self.usage_so_far: int | None = None  # cumulative completion tokens from per-chunk usage
        self.count_methods: set[str] = set()
        self.read_lag = 0.0  # of the read being parsed

    def on_read(self, t: float) -> None:
        if self.selector is not None:
            self.read_lag = t - self.selector.ready_since

    def on_line(self, line: bytes, t: float) -> None:
        if not line.startswith(b"data:") or self.record.error:
            return  # blank separators, SSE comments, event names; nothing after an error counts
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.saw_done = True
            self.end = t
            return
        try:
            chunk = json.loads(payload)
        except ValueError as err:
            self.record.error = f"bad JSON in stream: {err}: {payload[:120]!r}"
            return
        if not isinstance(chunk, dict):
            self.record.error = f"stream chunk is not an object: {payload[:120]!r}"
            return
        if chunk.get("error"):
            self.record.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
            return
        self._read_chunk(chunk, t)

    def _read_chunk(self, chunk: dict, t: float) -> None:
        record = self.record
        usage = chunk.get("usage")
        cumulative = None
        if usage:
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
            cumulative = record.completion_tokens
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                record.cached_prompt_tokens = details["cached_tokens"]
        timings = chunk.get("timings")  # llama.cpp's own: cache_n prompt tokens reused, prompt_n computed
        reused = timings.get("cache_n") if isinstance(timings, dict) else None
        if isinstance(reused, int) and record.cached_prompt_tokens is None:
            record.cached_prompt_tokens = reused
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:  # a role-only or empty delta carries no token
                now = t - self.planned
                if record.ttft_s is None:
                    record.ttft_s = now
                record.chunk_times_s.append(now)
                record.chunk_tokens.append(self._tokens_in(content, choice, cumulative))
                self.text_parts.append(content)
                if self.selector is not None:
                    self.read_lags.append(self.read_lag)
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if cumulative is not None:
            self.usage_so_far = cumulative

    def _tokens_in(self, content: str, choice: dict, cumulative: int | None) -> int:
        """Tokens in one content chunk: usage delta, else token ids, else a tokenizer, else one.

        Cumulative usage in a content chunk (vLLM's continuous_usage_stats) counts that chunk's tokens.
        """
        if cumulative is not None:
            self.count_methods.add("usage")
            return max(cumulative - (self.usage_so_far or 0), 1)  # content is at least one token
        token_ids = choice.get("token_ids") or (choice.get("delta") or {}).get("token_ids")
        if isinstance(token_ids, list) and token_ids:
            self.count_methods.add("token_ids")
            return len(token_ids)
        if self.token_counter is not None:
            self.count_methods.add("tokenizer")
            return max(self.token_counter(content), 1)
        self.count_methods.add("one_per_chunk")
        return 1

    def finish(self) -> None:
        record = self.record
        record.output_text = "".join(self.text_parts)
        record.chunk_tokens_counted_by = "+".join(sorted(self.count_methods)) or None
        if self.read_lags:
            record.read_lag_max_s = max(self.read_lags)
            record.read_lag_p99_s = percentile(self.read_lags, 99)

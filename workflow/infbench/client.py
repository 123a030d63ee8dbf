"""Streaming client for /v1/chat/completions and the two load shapes (single, closed-loop throughput)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from infbench.records import RequestRecord


@dataclass(frozen=True)
class ChatRequest:
    request_id: str
    prompt_id: str
    messages: list[dict]


@dataclass
class RequestSettings:
    """What every engine gets the same (fairness): model name, sampling, max_tokens, output length."""

    model_name: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    output_length: str = "natural"
    extra_body: dict = field(default_factory=dict)  # the engine's own control for fixed lengths
    timeout_s: float = 300.0

    def body(self, messages: list[dict]) -> dict:
        body = {
            "model": self.model_name,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        body.update(self.extra_body)
        return body


@dataclass
class RunContext:
    engine: str
    model: str
    scenario: str
    concurrency: int


async def stream_chat(
    client: httpx.AsyncClient, url: str, request: ChatRequest, settings: RequestSettings, ctx: RunContext
) -> RequestRecord:
    """Send one streaming chat request and time it; never raises for server or network faults."""
    record = RequestRecord(
        request_id=request.request_id,
        prompt_id=request.prompt_id,
        engine=ctx.engine,
        model=ctx.model,
        scenario=ctx.scenario,
        concurrency=ctx.concurrency,
        send_time=time.time(),
        max_tokens=settings.max_tokens,
        output_length=settings.output_length,
    )
    start = time.perf_counter()
    text_parts: list[str] = []
    done = False
    try:
        async with client.stream("POST", url, json=settings.body(request.messages), timeout=settings.timeout_s) as response:
            record.status = response.status_code
            if response.status_code != 200:
                body = (await response.aread()).decode("utf-8", "replace")
                record.error = f"HTTP {response.status_code}: {body[:300]}"
                return record
            async for line in response.aiter_lines():
                now = time.perf_counter() - start
                if not line.startswith("data:"):
                    continue  # blank separators, SSE comments, event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if chunk.get("error"):
                    record.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                    return record
                _read_chunk(chunk, now, record, text_parts)
        record.latency_s = time.perf_counter() - start
        if not done and record.finish_reason is None:
            record.error = "stream closed before [DONE] or a finish_reason"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as err:
        record.error = f"{type(err).__name__}: {err}"[:300]
    finally:
        record.output_text = "".join(text_parts)
    if record.error is None and record.completion_tokens is None:
        # The engine sent no usage: fall back to one token per content chunk, and say so.
        record.completion_tokens = len(record.chunk_times_s)
        record.tokens_counted_by = "chunks"
    return record


def _read_chunk(chunk: dict, now: float, record: RequestRecord, text_parts: list[str]) -> None:
    usage = chunk.get("usage")
    if usage:
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:  # a role-only or empty delta carries no token
            if record.ttft_s is None:
                record.ttft_s = now
            record.chunk_times_s.append(now)
            text_parts.append(content)
        if choice.get("finish_reason"):
            record.finish_reason = choice["finish_reason"]


ProgressCallback = Callable[[RequestRecord], None]


async def run_single(
    url: str, requests: list[ChatRequest], settings: RequestSettings, ctx: RunContext,
    on_done: ProgressCallback | None = None,
) -> list[RequestRecord]:
    """Each prompt alone, one after the other (concurrency 1): the study's inference speed."""
    records = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1), trust_env=False) as client:
        for request in requests:
            record = await stream_chat(client, url, request, settings, ctx)
            records.append(record)
            if on_done:
                on_done(record)
    return records


async def run_closed_loop(
    url: str, requests: list[ChatRequest], settings: RequestSettings, ctx: RunContext,
    on_done: ProgressCallback | None = None,
) -> list[RequestRecord]:
    """ctx.concurrency workers; each sends its next request as soon as its previous one ends."""
    queue = list(reversed(requests))
    records: list[RequestRecord] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            request = queue.pop()
            record = await stream_chat(client, url, request, settings, ctx)
            records.append(record)
            if on_done:
                on_done(record)

    limits = httpx.Limits(max_connections=ctx.concurrency, max_keepalive_connections=ctx.concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(ctx.concurrency)))
    return sorted(records, key=lambda r: r.request_id)


"""Load shapes in one process: each prompt alone, a closed loop at concurrency C, an open loop at
planned send times (loadgen.py spreads them over processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from infbench.measure.client import ChatRequest, RequestSettings, RunContext, StreamClient
from infbench.measure.records import RequestRecord
from infbench.measure.sse import TokenCounter

ProgressCallback = Callable[[RequestRecord], None]


async def run_single(
    url: str,
    requests: list[ChatRequest],
    settings: RequestSettings,
    ctx: RunContext,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
) -> list[RequestRecord]:
    """Each prompt alone, one after the other (concurrency 1): the study's inference speed."""
    return await run_closed_loop(url, requests, settings, ctx, on_done, token_counter, concurrency=1)


async def run_closed_loop(
    url: str,
    requests: list[ChatRequest],
    settings: RequestSettings,
    ctx: RunContext,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
    concurrency: int | None = None,
    start_at: float | None = None,
    wall_offset_s: float | None = None,
) -> list[RequestRecord]:
    """`concurrency` (default ctx.concurrency) workers; each sends its next request as soon as its
    previous one ends. A request's planned time is the end of the previous one (or `start_at`), so the
    client's own turnaround shows up as dispatch lag."""
    concurrency = concurrency or ctx.concurrency
    queue = list(reversed(requests))
    records: list[RequestRecord] = []

    async def worker(client: StreamClient) -> None:
        planned = first
        while queue:
            request = queue.pop()
            record = await client.chat(request, settings, ctx, planned=planned)
            records.append(record)
            # The next request is due when this one's HTTP response ended (a failed one: now); a server
            # that ends the body late after [DONE] holds the connection, which is not the client's lag.
            end = record.response_end_s if record.response_end_s is not None else record.latency_s
            planned = planned + end if end is not None else time.monotonic()
            if on_done:
                on_done(record)

    async with StreamClient(url, token_counter, wall_offset_s) as client:
        try:
            await client.prewarm(min(concurrency, len(requests)), settings.timeout_s)
        except asyncio.TimeoutError:
            pass  # each request then connects (and times) on its own
        if start_at is not None:
            await asyncio.sleep(max(start_at - time.monotonic(), 0.0))
        # The plan starts after the connections are open: opening them is set-up, not a late send.
        first = max(time.monotonic() if start_at is None else start_at, time.monotonic())
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return sorted(records, key=lambda r: r.request_id)


async def run_open_loop(
    url: str,
    requests: list[ChatRequest],
    planned: list[float],
    settings: RequestSettings,
    ctx: RunContext,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
    wall_offset_s: float | None = None,
) -> list[RequestRecord]:
    """Send request i at monotonic time planned[i], whatever is in flight (no concurrency cap)."""
    if len(planned) != len(requests):
        raise ValueError(f"open loop: {len(planned)} send times for {len(requests)} requests")
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    async with StreamClient(url, token_counter, wall_offset_s) as client:

        async def one(request: ChatRequest, when: float) -> RequestRecord:
            record = await client.chat(request, settings, ctx, planned=when)
            if on_done:
                on_done(record)
            return record

        def start(request: ChatRequest, when: float) -> None:
            tasks.append(loop.create_task(one(request, when)))

        for request, when in zip(requests, planned, strict=True):
            loop.call_at(when, start, request, when)  # loop.time() is time.monotonic()
        await asyncio.sleep(max(max(planned, default=0.0) - time.monotonic(), 0.0))
        while len(tasks) < len(requests):  # the last timers may fire a hair after the sleep ends
            await asyncio.sleep(0.001)
        records = await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r.request_id)

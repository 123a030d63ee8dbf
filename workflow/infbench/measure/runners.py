"""Load shapes in one process: each prompt alone, a closed loop at concurrency C, an open loop at
planned send times, conversations turn by turn (loadgen.py spreads them over processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from infbench.measure.client import ChatRequest, PreparedSend, RequestSettings, RunContext, StreamClient
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

    async def worker(client: StreamClient, planned: float) -> None:
        while queue:
            request = queue.pop()
            record = await client.chat(request, settings, ctx, planned=planned)
            records.append(record)
            planned = _next_due(planned, record)
            if on_done:
                on_done(record)

    await _streams(url, settings, token_counter, wall_offset_s, start_at, concurrency, len(requests), worker)
    return sorted(records, key=lambda r: r.request_id)


def _next_due(planned: float, record: RequestRecord) -> float:
    """A closed stream's next send: when this request's HTTP response ended (a failed one: now); a
    server that ends the body late after [DONE] holds the connection, which is not the client's lag."""
    end = record.response_end_s if record.response_end_s is not None else record.latency_s
    return planned + end if end is not None else time.monotonic()


async def _streams(
    url: str,
    settings: RequestSettings,
    token_counter: TokenCounter | None,
    wall_offset_s: float | None,
    start_at: float | None,
    streams: int,
    items: int,
    worker: Callable[[StreamClient, float], Awaitable[None]],
) -> None:
    """`streams` copies of worker(client, first planned send) on one client, after opening a
    connection per stream (at most `items`) and waiting for `start_at`."""
    async with StreamClient(url, token_counter, wall_offset_s) as client:
        try:
            await client.prewarm(min(streams, items), settings.timeout_s)
        except asyncio.TimeoutError:
            pass  # each request then connects (and times) on its own
        if start_at is not None:
            await asyncio.sleep(max(start_at - time.monotonic(), 0.0))
        # The plan starts after the connections are open: opening them is set-up, not a late send.
        first = max(time.monotonic() if start_at is None else start_at, time.monotonic())
        await asyncio.gather(*(worker(client, first) for _ in range(streams)))


async def run_open_loop(
    url: str,
    requests: list[ChatRequest],
    planned: list[float],
    settings: RequestSettings,
    ctx: RunContext,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
    wall_offset_s: float | None = None,
    deadline: float | None = None,
) -> list[RequestRecord]:
    """Send request i at monotonic time planned[i], whatever is in flight (no concurrency cap); a
    request still running at `deadline` (monotonic) is cut there and recorded as an error."""
    if len(planned) != len(requests):
        raise ValueError(f"open loop: {len(planned)} send times for {len(requests)} requests")
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    # The sends due at one instant (trace rows often share a timestamp) leave in one timer callback.
    instants: dict[float, list[ChatRequest]] = {}
    for request, when in zip(requests, planned, strict=True):
        instants.setdefault(when, []).append(request)
    times = sorted(instants)
    async with StreamClient(url, token_counter, wall_offset_s) as client:
        ready: dict[int, list[PreparedSend]] = {}  # by instant index: built ahead, not yet sent
        fired = 0  # instants sent so far (their timers fire in time order)

        def prepare(index: int) -> None:
            if index >= fired and index not in ready:
                when = times[index]
                ready[index] = [client.prepare(request, settings, ctx, when) for request in instants[when]]

        async def finish(send: PreparedSend) -> RequestRecord:
            record = await client.finish(send, settings, deadline)
            if on_done:
                on_done(record)
            return record

        def fire(index: int) -> None:
            nonlocal fired
            try:
                prepare(index)
                fired = index + 1
                for send in ready.pop(index):
                    client.send_now(send)
                    tasks.append(loop.create_task(finish(send)))
            except Exception as err:  # a timer callback's error would only be logged: end the run with it
                if not all_sent.done():
                    all_sent.set_exception(err)
                return
            if fired < len(times):
                # The next instant's bytes are built now, in the gap after these sends, not at its time.
                loop.call_soon(prepare, fired)
            elif not all_sent.done():
                all_sent.set_result(None)

        all_sent = loop.create_future()
        if times:
            prepare(0)
        else:
            all_sent.set_result(None)
        for index, when in enumerate(times):
            loop.call_at(when, fire, index)  # loop.time() is time.monotonic()
        await all_sent
        records = await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r.request_id)


async def run_conversations(
    url: str,
    conversations: list[list[ChatRequest]],
    settings: RequestSettings,
    ctx: RunContext,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
    concurrency: int | None = None,
    start_at: float | None = None,
    wall_offset_s: float | None = None,
) -> list[RequestRecord]:
    """`concurrency` conversations at a time, each turn by turn: a conversation is its turns as
    requests whose messages hold that turn's user message (and a leading system message); before a
    turn is sent, the history of the turns before it, with the engine's own answers, goes in front of
    it, as a chat client would send it. A turn is due when the turn before it ended. When a turn
    fails, the conversation's later turns are recorded as not sent (errors), never dropped."""
    concurrency = concurrency or ctx.concurrency
    queue = list(reversed(conversations))
    records: list[RequestRecord] = []

    async def worker(client: StreamClient, planned: float) -> None:
        while queue:
            turns = queue.pop()
            history: list[dict] = []
            for index, turn in enumerate(turns):
                system = [m for m in turn.messages if m["role"] == "system"] if not history else []
                messages = system + history + [m for m in turn.messages if m["role"] != "system"]
                record = await client.chat(replace(turn, messages=messages), settings, ctx, planned=planned)
                records.append(record)
                planned = _next_due(planned, record)
                if on_done:
                    on_done(record)
                if not record.ok:
                    for later in turns[index + 1 :]:
                        unsent = client.new_record(later, settings, ctx, time.monotonic())
                        unsent.error = f"not sent: an earlier turn of its conversation failed ({record.request_id})"
                        records.append(unsent)
                    break
                history = messages + [{"role": "assistant", "content": record.output_text}]

    await _streams(url, settings, token_counter, wall_offset_s, start_at, concurrency, len(conversations), worker)
    return sorted(records, key=lambda r: r.request_id)

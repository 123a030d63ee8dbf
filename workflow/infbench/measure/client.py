"""Streaming client for /v1/chat/completions that measures its own error on every request.

The pieces, one module each: the measured event loop (eventloop.py), HTTP/1.1 framing (http1.py),
keep-alive connections (pool.py), the stream-to-record logic (sse.py); the load runners are in
runners.py and loadgen.py. On every request the client records:

- dispatch lag: how late the request started against its planned send time. All latencies count from
  the *planned* time, so a late client cannot hide its lateness (no coordinated omission);
- connect time: opening the TCP connection (0.0 when a kept-alive one was reused);
- read lag: an upper bound on how long a chunk's bytes may have waited in the client before being
  stamped, from the event loop's own polls (see LagSelector).

Clock: time.monotonic() (CLOCK_MONOTONIC on Linux: one system-wide clock, shared by worker
processes and the reference server). `send_time` is that planned time mapped once to the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from infbench.defaults import schema_default
from infbench.measure.eventloop import running_lag_selector, wall_offset
from infbench.measure.http1 import HttpConnection, ResponseParser
from infbench.measure.pool import ConnectionPool
from infbench.measure.records import RequestRecord
from infbench.measure.sse import StreamRecorder, TokenCounter

CLIENT_LAG_SHARE = schema_default("bench.client_lag_share")  # flag a run whose client lag could move latency more
DONE_GRACE_S = 1.0  # after [DONE], how long the body may take to end before the connection is dropped


# --- what to send --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    request_id: str
    prompt_id: str
    messages: list[dict]
    max_tokens: int | None = None  # its own output length (trace, synthetic sizes); None: the settings'
    planned_prompt_tokens: int | None = None  # tokenizer-exact prompts: what the prepare step counted
    conversation: str | None = None  # a conversation's turn: which conversation, which turn (1, 2, ...)
    turn: int | None = None


@dataclass
class RequestSettings:
    """What every engine gets the same (fairness): model name, sampling, max_tokens, output length."""

    model_name: str
    max_tokens: int
    temperature: float = schema_default("sampling.temperature")
    top_p: float = schema_default("sampling.top_p")
    seed: int | None = schema_default("sampling.seed")
    output_length: str = schema_default("sampling.output_length")
    extra_body: dict = field(default_factory=dict)  # the engine's own control for fixed lengths
    # Requests with their own output length (trace, synthetic): the engine's fields for each length
    # (its fixed-length control names the count), else extra_body.
    extra_body_by_max_tokens: dict[int, dict] = field(default_factory=dict)
    timeout_s: float = schema_default("bench.request_timeout_s")
    # Ask for cumulative usage in every chunk (vLLM's continuous_usage_stats): tokens per chunk from
    # usage deltas. Off by default: servers that validate stream_options strictly may refuse it.
    continuous_usage: bool = False
    client_lag_share_limit: float = CLIENT_LAG_SHARE
    # An external endpoint's key (from the variable its api_key_env names): sent as a bearer token,
    # kept out of repr so it never reaches a log.
    api_key: str | None = field(default=None, repr=False)
    # How a cold request asks the engine not to reuse cached prefixes, in its own spelling: fields
    # added to the body (llama.cpp: cache_prompt false), and a field set to a value unique to the
    # request (vLLM: cache_salt), so no two requests share cached blocks.
    cold_fields: dict = field(default_factory=dict)
    cold_salt_field: str | None = None
    # The engine leaves prompt_tokens_details out when nothing came from its cache (SGLang with
    # --enable-cache-report): absent then means 0, not "cannot say".
    cached_tokens_absent_is_zero: bool = False
    # Every sampling field, in the engine's own spelling (its plug-in's request_fields), so that it
    # falls back on none of its own or the model's defaults; None: temperature, top_p and seed as
    # OpenAI spells them (tools, the reference server).
    sampling_fields: dict | None = None

    def body(self, messages: list[dict], max_tokens: int | None = None, cold_key: str | None = None) -> dict:
        """The request body; a request with its own max_tokens gets the engine's fields for that length;
        `cold_key` (the request's id) marks a cold request: the engine's cold fields, and its salt field
        set from the key, unique per request."""
        max_tokens = max_tokens or self.max_tokens
        stream_options: dict = {"include_usage": True}
        if self.continuous_usage:
            stream_options["continuous_usage_stats"] = True
        body = {
            "model": self.model_name,
            "messages": messages,
            "stream": True,
            "stream_options": stream_options,
            "max_tokens": max_tokens,
        }
        if self.sampling_fields is None:
            body.update(temperature=self.temperature, top_p=self.top_p)
            if self.seed is not None:
                body["seed"] = self.seed
        else:
            body.update(self.sampling_fields)
        body.update(self.extra_body_by_max_tokens.get(max_tokens, self.extra_body))
        if cold_key is not None:
            body.update(self.cold_fields)
            if self.cold_salt_field:
                body[self.cold_salt_field] = f"infbench-{cold_key}"
        return body


@dataclass
class RunContext:
    engine: str
    model: str
    scenario: str
    concurrency: int
    rate: float | None = None  # offered load (requests/s) of an open loop
    worker: int = 0
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    # The scenario's declared cache state: cold requests carry the engine's cold fields (see
    # RequestSettings.cold_fields); None: no cache control (tools, tests).
    cache: str | None = None


@dataclass
class PreparedSend:
    """One request ready to leave: its bytes and the recorder of its stream (which holds its record and
    planned time); then when it left and on which kept-alive connection (None: finish() opens one)."""

    payload: bytes
    stream: StreamRecorder
    started: float = 0.0
    conn: HttpConnection | None = None

    @property
    def record(self) -> RequestRecord:
        return self.stream.record


class StreamClient:
    """Keep-alive HTTP/1.1 connections to one server. A request takes an idle connection or opens one,
    so the number of connections follows the concurrency the load shape produces."""

    def __init__(self, url: str, token_counter: TokenCounter | None = None, wall_offset_s: float | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"client: unsupported URL scheme in {url!r} (http or https)")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = parts.scheme == "https"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.encode()
        self.token_counter = token_counter
        self.wall_offset = wall_offset() if wall_offset_s is None else wall_offset_s
        self.pool = ConnectionPool(self.host, self.port, self.ssl)

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    async def prewarm(self, n: int, timeout_s: float = 30.0) -> None:
        """Open n connections ahead of a run (a closed loop's C users hold theirs all along)."""
        await self.pool.prewarm(n, timeout_s)

    def _request_bytes(self, request: ChatRequest, settings: RequestSettings, cold: bool = False) -> bytes:
        cold_key = request.request_id if cold else None
        body = json.dumps(settings.body(request.messages, request.max_tokens, cold_key)).encode()
        head = (
            b"POST "
            + self.path.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.host_header
            + b"\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nUser-Agent: infbench\r\n"
            + (b"Authorization: Bearer " + settings.api_key.encode() + b"\r\n" if settings.api_key else b"")
            + b"X-Request-Id: "
            + request.request_id.encode("ascii", "replace")
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        return head + body

    def new_record(
        self, request: ChatRequest, settings: RequestSettings, ctx: RunContext, planned: float
    ) -> RequestRecord:
        """The record of `request` planned at `planned` (time.monotonic()), before anything is sent."""
        return RequestRecord(
            request_id=request.request_id,
            prompt_id=request.prompt_id,
            engine=ctx.engine,
            model=ctx.model,
            scenario=ctx.scenario,
            concurrency=ctx.concurrency,
            send_time=planned + self.wall_offset,
            max_tokens=request.max_tokens or settings.max_tokens,
            output_length=settings.output_length,
            send_mono=planned,
            rate=ctx.rate,
            worker=ctx.worker,
            client_lag_share_limit=settings.client_lag_share_limit,
            cache=ctx.cache,
            slo_ttft_s=ctx.slo_ttft_s,
            slo_tpot_s=ctx.slo_tpot_s,
            planned_prompt_tokens=request.planned_prompt_tokens,
            conversation=request.conversation,
            turn=request.turn,
        )

    def prepare(self, request: ChatRequest, settings: RequestSettings, ctx: RunContext, planned: float) -> PreparedSend:
        """Everything a send needs before its time comes (record, request bytes, stream recorder), so an
        open loop builds them ahead and a send at its planned instant is only the write."""
        record = self.new_record(request, settings, ctx, planned)
        payload = self._request_bytes(request, settings, ctx.cache == "cold")
        return PreparedSend(payload, StreamRecorder(record, planned, self.token_counter, running_lag_selector()))

    def send_now(self, send: PreparedSend) -> None:
        """Stamp the send and, when a kept-alive connection is idle, write the request on it now
        (otherwise finish() opens one). Synchronous: an open loop's sends due at one instant leave in one
        pass, without a task switch between them."""
        send.started = time.monotonic()
        send.record.dispatch_lag_s = send.started - send.stream.planned
        send.record.connect_s = 0.0  # finish() times the connect when it must open one
        send.conn = self.pool.take_idle()
        if send.conn is not None:
            self._write(send.conn, send.payload, send.stream)

    async def chat(
        self,
        request: ChatRequest,
        settings: RequestSettings,
        ctx: RunContext,
        planned: float | None = None,
        deadline: float | None = None,
    ) -> RequestRecord:
        """Send one streaming chat request and time it from `planned` (default: now); never raises
        for server or network faults: they land in record.error. A request still running at
        `deadline` (time.monotonic(); a timed step's end plus its drain time) is cut there, an error."""
        send = self.prepare(request, settings, ctx, time.monotonic() if planned is None else planned)
        self.send_now(send)
        return await self.finish(send, settings, deadline)

    async def finish(
        self, send: PreparedSend, settings: RequestSettings, deadline: float | None = None
    ) -> RequestRecord:
        """Wait for the response of a send (send_now first), opening a connection if none was idle."""
        record, stream, conn = send.record, send.stream, send.conn
        timeout_s, cut = settings.timeout_s, False
        if deadline is not None and deadline - send.started < timeout_s:
            timeout_s, cut = max(deadline - send.started, 0.0), True
        try:
            if conn is not None:
                await self._response(conn, stream, timeout_s)
                if record.status is None and record.error is not None:
                    # The server had closed the kept-alive connection before our request: retry once, fresh.
                    conn.close()
                    conn, record.error = None, None
            if conn is None:
                conn, record.connect_s = await asyncio.wait_for(self.pool.connect(), timeout_s)
                self._write(conn, send.payload, stream)
                await self._response(conn, stream, timeout_s - (time.monotonic() - send.started))
        except asyncio.TimeoutError:
            record.error = (
                f"cut: still running when its step's drain time ended ({timeout_s:.3g} s after it was sent)"
                if cut
                else f"timeout: no complete response within {timeout_s:g} s"
            )
        except OSError as err:
            name = "ConnectError" if conn is None else type(err).__name__
            record.error = f"{name}: {err}"[:300]
        finally:
            stream.finish()
            if conn is not None:
                if conn.reusable and record.error is None:
                    self.pool.give_back(conn)
                else:
                    conn.close()
        if record.error is None and record.completion_tokens is None:
            # The engine sent no usage: count the chunks' tokens (one per chunk unless known), and say so.
            record.completion_tokens = sum(record.chunk_tokens)
            record.tokens_counted_by = "tokenizer" if self.token_counter else "chunks"
        if record.error is None and record.cached_prompt_tokens is None and settings.cached_tokens_absent_is_zero:
            record.cached_prompt_tokens = 0
        return record

    def _write(self, conn: HttpConnection, payload: bytes, stream: StreamRecorder) -> None:
        conn.response = ResponseParser(stream.on_line)
        conn.on_read = stream.on_read
        conn.done = asyncio.get_running_loop().create_future()
        conn.completed_at = None
        conn.transport.write(payload)

    async def _response(self, conn: HttpConnection, stream: StreamRecorder, timeout_s: float) -> None:
        """Wait for the response to the request just written on conn, and check how it ended."""
        record = stream.record
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not conn.done.done():
            # Wake early when [DONE] came but the body has not ended, to bound a server that never ends it.
            wait = max(deadline - loop.time(), 0.0)
            if stream.saw_done:
                wait = min(wait, DONE_GRACE_S)
            await asyncio.wait([conn.done], timeout=wait)
            if conn.done.done():
                break
            if stream.saw_done:
                conn.close()  # no body end after [DONE]: the timing is complete, the connection is not
                break
            if loop.time() >= deadline:
                conn.close()
                raise asyncio.TimeoutError
        response = conn.response
        record.status = response.status
        if conn.failure is not None and not stream.saw_done:
            record.error = f"{type(conn.failure).__name__}: {conn.failure}"[:300]
            return
        if response.status is None:
            record.error = "connection closed before a response"
            return
        if response.status != 200:
            record.error = f"HTTP {response.status}: {response.error_body.decode('utf-8', 'replace')[:300]}"
            return
        if record.error:
            return
        end = stream.end if stream.end is not None else time.monotonic()
        record.latency_s = end - stream.planned
        if conn.completed_at is not None:  # a server may end the HTTP body well after [DONE]
            record.response_end_s = max(conn.completed_at - stream.planned, record.latency_s)
        if not stream.saw_done and record.finish_reason is None:
            record.error = "stream closed before [DONE] or a finish_reason"

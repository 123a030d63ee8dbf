"""Streaming client for /v1/chat/completions that measures its own error on every request.

Why no HTTP library: on a busy machine a client's own delays end up in the engine's latency. This
client speaks HTTP/1.1 over an asyncio Protocol, so a chunk is stamped in `data_received`, the first
moment Python sees its bytes, and per-chunk work is one line split and one json.loads. On every
request it records:

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
import gc
import json
import select
import selectors
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from infbench.measure.metrics import percentile
from infbench.measure.records import RequestRecord

CLIENT_LAG_LIMIT_S = 0.001  # the default flag threshold: client lag p99 above 1 ms
READ_BUFFER_LIMIT = 1 << 20  # an unframed response head larger than this is a protocol error
DONE_GRACE_S = 1.0  # after [DONE], how long the body may take to end before the connection is dropped


# --- the event loop: precise timers and a record of when it last sat idle ---------------------------


class LagSelector(selectors.DefaultSelector):
    """The default selector with microsecond timeouts, and a bound on how long read bytes waited.

    Timeouts: epoll takes whole milliseconds (Python rounds a timeout up), so an asyncio timer fires up
    to 1 ms late: dispatch lag on every open-loop send, server lag on every reference-server chunk.
    Waiting with select() on the epoll descriptor itself takes microseconds.

    `ready_since`: the bytes a callback reads now arrived after this time. Events returned by a poll
    were not ready at the previous poll (epoll is level-triggered and each ready socket is drained),
    so they arrived after it; after an idle wait, they arrived when they woke the loop. A read at time
    t therefore waited at most t - ready_since in the client: its read lag.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ready_since = self._last_poll = time.monotonic()
        fileno = getattr(self, "fileno", None)  # epoll and kqueue selectors have one descriptor to wait on
        self._wait_fd = fileno() if fileno else -1

    def select(self, timeout: float | None = None):
        polled = time.monotonic()
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            # Work was waiting (or the loop has work queued): these events came after the last poll.
            self.ready_since, self._last_poll = self._last_poll, polled
            return ready
        if timeout is not None and 0 <= self._wait_fd < 1024:
            select.select([self._wait_fd], [], [], timeout)  # µs timeout; wakes when epoll has events
            ready = super().select(0)
        else:
            ready = super().select(timeout)
        self.ready_since = self._last_poll = time.monotonic()  # idle until now: what woke us is fresh
        return ready


class MeasuredLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a LagSelector; the client reads `lag_selector` to bound its read lag."""

    def __init__(self) -> None:
        self.lag_selector = LagSelector()
        super().__init__(self.lag_selector)


def run_measured(coro):
    """asyncio.run, but on a MeasuredLoop (so timers are precise and read lag is known).

    The cyclic garbage collector is paused meanwhile: a full collection over thousands of records
    stalls the loop for milliseconds, which would show up as read lag. Requests leave little cyclic
    garbage; it is collected at the end.
    """
    loop = MeasuredLoop()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            if gc_was_enabled:
                gc.enable()
            gc.collect()


def _lag_selector() -> LagSelector | None:
    return getattr(asyncio.get_running_loop(), "lag_selector", None)


def wall_offset() -> float:
    """Seconds to add to a time.monotonic() reading to get unix time; taken once per run."""
    return time.time() - time.monotonic()


# --- what to send --------------------------------------------------------------------------------


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
    # Ask for cumulative usage in every chunk (vLLM's continuous_usage_stats): tokens per chunk from
    # usage deltas. Off by default: servers that validate stream_options strictly may refuse it.
    continuous_usage: bool = False
    client_lag_limit_s: float = CLIENT_LAG_LIMIT_S
    # An external endpoint's key (from the variable its api_key_env names): sent as a bearer token,
    # kept out of repr so it never reaches a log.
    api_key: str | None = field(default=None, repr=False)

    def body(self, messages: list[dict]) -> dict:
        stream_options: dict = {"include_usage": True}
        if self.continuous_usage:
            stream_options["continuous_usage_stats"] = True
        body = {
            "model": self.model_name,
            "messages": messages,
            "stream": True,
            "stream_options": stream_options,
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
    rate: float | None = None  # offered load (requests/s) of an open loop
    worker: int = 0
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None


TokenCounter = Callable[[str], int]  # a tokenizer's count of a text, for tokens per chunk


# --- HTTP/1.1 over an asyncio Protocol -------------------------------------------------------------


class ProtocolError(Exception):
    pass


class _Response:
    """Parses one HTTP/1.1 response as bytes arrive: head, then chunked, length or close framing.

    The body goes line by line to `on_line(line, t)`, with t the time its bytes were read.
    """

    def __init__(self, on_line: Callable[[bytes, float], None]) -> None:
        self.on_line = on_line
        self.buf = bytearray()
        self.lines = bytearray()
        self.head_done = False
        self.complete = False
        self.status: int | None = None
        self.keep_alive = False
        self.framing = "close"  # chunked | length | close
        self.left = 0  # bytes left: of the current chunk (chunked) or of the body (length)
        self.crlf_left = 0  # the CRLF after a chunk's data
        self.error_body = bytearray()

    def feed(self, data: bytes, t: float) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > READ_BUFFER_LIMIT:
                    raise ProtocolError("response head too large")
                return
            self._parse_head(bytes(self.buf[:end]).decode("latin-1"))
            del self.buf[: end + 4]
            if self.framing == "length" and self.left == 0:
                self.complete = True
                return
        if self.framing == "chunked":
            self._feed_chunked(t)
        elif self.framing == "length":
            take = min(self.left, len(self.buf))
            self._body(bytes(self.buf[:take]), t)
            del self.buf[:take]
            self.left -= take
            self.complete = self.left == 0
        else:
            self._body(bytes(self.buf), t)
            self.buf.clear()

    def eof(self, t: float) -> None:
        """The peer closed: the end of a close-delimited body, else a truncated response."""
        if self.head_done and self.framing == "close":
            if self.lines:
                self._body(b"\n", t)
            self.complete = True

    def _parse_head(self, head: str) -> None:
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        self.status = int(parts[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.framing = "chunked"
        elif "content-length" in headers:
            self.framing, self.left = "length", int(headers["content-length"])
        else:
            self.framing, self.keep_alive = "close", False
        self.head_done = True

    def _feed_chunked(self, t: float) -> None:
        buf = self.buf
        pos, size_buf = 0, len(buf)  # walk with an offset, delete once: no copy per chunk
        while pos < size_buf and not self.complete:
            if self.left:
                take = min(self.left, size_buf - pos)
                self._body(bytes(buf[pos: pos + take]), t)
                pos += take
                self.left -= take
                if not self.left:
                    self.crlf_left = 2
            elif self.crlf_left:
                take = min(self.crlf_left, size_buf - pos)
                pos += take
                self.crlf_left -= take
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(bytes(buf[pos:end]).split(b";")[0].strip() or b"0", 16)
                pos = end + 2
                if size == 0:
                    self.complete = True  # trailers, if any, are ignored (the connection is not reused)
                    self.keep_alive = self.keep_alive and buf[pos: pos + 2] == b"\r\n"
                    break
                self.left = size
        del buf[:pos]

    def _body(self, data: bytes, t: float) -> None:
        if self.status != 200:
            self.error_body += data[: 2000 - len(self.error_body)]
            return
        if self.lines:
            self.lines += data
            data = bytes(self.lines)
            self.lines.clear()
        *complete, rest = data.split(b"\n")
        for line in complete:
            if line:  # blank lines only separate events
                self.on_line(line.rstrip(b"\r"), t)
        if rest:
            self.lines += rest


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one response in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.on_read: Callable[[float], None] | None = None
        self.done: asyncio.Future | None = None
        self.closed = False
        self.failure: Exception | None = None
        self.completed_at: float | None = None  # when the current response's body ended

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        if self.response is None or self.done is None:
            return  # bytes with no request (a server bug): ignored, and the connection is dropped later
        try:
            if self.on_read:
                self.on_read(t)
            self.response.feed(data, t)
        except (ProtocolError, ValueError) as err:
            self.failure = err
            self._finish()
            return
        if self.response.complete:
            self.completed_at = t
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and self.done is not None and not self.done.done():
            self.completed_at = time.monotonic()
            self.response.eof(self.completed_at)
            if not self.response.complete and exc is not None:
                self.failure = exc
            self._finish()

    def _finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    @property
    def reusable(self) -> bool:
        r = self.response
        return not self.closed and self.failure is None and r is not None and r.complete and r.keep_alive

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class _Stream:
    """Turns one response's SSE lines into a RequestRecord, stamping content chunks as they arrive."""

    def __init__(self, record: RequestRecord, planned: float, token_counter: TokenCounter | None,
                 selector: LagSelector | None) -> None:
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
        self.idle: list[_Connection] = []
        self.connections_opened = 0

    async def __aenter__(self) -> "StreamClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def _take_idle(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    async def prewarm(self, n: int, timeout_s: float = 30.0) -> None:
        """Open n connections ahead of a run (a closed loop's C users hold theirs all along)."""
        opened = await asyncio.wait_for(asyncio.gather(*(self._connect() for _ in range(n)), return_exceptions=True), timeout_s)
        self.idle.extend(conn for conn, _ in (o for o in opened if not isinstance(o, BaseException)))

    async def _connect(self) -> tuple[_Connection, float]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl or None)
        self.connections_opened += 1
        return conn, time.monotonic() - started

    def _request_bytes(self, request: ChatRequest, settings: RequestSettings) -> bytes:
        body = json.dumps(settings.body(request.messages)).encode()
        head = (
            b"POST " + self.path.encode() + b" HTTP/1.1\r\nHost: " + self.host_header
            + b"\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nUser-Agent: infbench\r\n"
            + (b"Authorization: Bearer " + settings.api_key.encode() + b"\r\n" if settings.api_key else b"")
            + b"X-Request-Id: " + request.request_id.encode("ascii", "replace")
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        return head + body

    async def chat(self, request: ChatRequest, settings: RequestSettings, ctx: RunContext,
                   planned: float | None = None) -> RequestRecord:
        """Send one streaming chat request and time it from `planned` (default: now); never raises
        for server or network faults: they land in record.error."""
        started = time.monotonic()
        planned = started if planned is None else planned
        record = RequestRecord(
            request_id=request.request_id, prompt_id=request.prompt_id, engine=ctx.engine, model=ctx.model,
            scenario=ctx.scenario, concurrency=ctx.concurrency, send_time=planned + self.wall_offset,
            max_tokens=settings.max_tokens, output_length=settings.output_length,
            send_mono=planned, dispatch_lag_s=started - planned, rate=ctx.rate, worker=ctx.worker,
            client_lag_limit_s=settings.client_lag_limit_s, slo_ttft_s=ctx.slo_ttft_s, slo_tpot_s=ctx.slo_tpot_s,
        )
        payload = self._request_bytes(request, settings)  # built before connecting: no work between connect and write
        stream = _Stream(record, planned, self.token_counter, _lag_selector())
        conn = None
        try:
            conn = self._take_idle()
            record.connect_s = 0.0
            if conn is not None:
                await self._exchange(conn, payload, stream, settings.timeout_s)
                if record.status is None and record.error is not None:
                    # The server had closed the kept-alive connection before our request: retry once, fresh.
                    conn.close()
                    conn, record.error = None, None
            if conn is None:
                conn, record.connect_s = await asyncio.wait_for(self._connect(), settings.timeout_s)
                await self._exchange(conn, payload, stream, settings.timeout_s - (time.monotonic() - started))
        except asyncio.TimeoutError:
            record.error = f"timeout: no complete response within {settings.timeout_s:g} s"
        except OSError as err:
            name = "ConnectError" if conn is None else type(err).__name__
            record.error = f"{name}: {err}"[:300]
        finally:
            stream.finish()
            if conn is not None:
                if conn.reusable and record.error is None:
                    conn.response = conn.done = conn.on_read = None
                    self.idle.append(conn)
                else:
                    conn.close()
        if record.error is None and record.completion_tokens is None:
            # The engine sent no usage: count the chunks' tokens (one per chunk unless known), and say so.
            record.completion_tokens = sum(record.chunk_tokens)
            record.tokens_counted_by = "tokenizer" if self.token_counter else "chunks"
        return record

    async def _exchange(self, conn: _Connection, payload: bytes, stream: _Stream, timeout_s: float) -> None:
        record = stream.record
        loop = asyncio.get_running_loop()
        conn.response = _Response(stream.on_line)
        conn.on_read = stream.on_read
        conn.done = loop.create_future()
        conn.completed_at = None
        conn.transport.write(payload)
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


async def stream_chat(client, url: str, request: ChatRequest, settings: RequestSettings, ctx: RunContext) -> RequestRecord:
    """One request. `client` is a StreamClient for `url`; anything else (an httpx client, say: kept
    for callers of the old signature) gets a one-off StreamClient, i.e. a fresh connection."""
    if isinstance(client, StreamClient):
        return await client.chat(request, settings, ctx)
    async with StreamClient(url) as one_off:
        return await one_off.chat(request, settings, ctx)


# --- load shapes in one process (loadgen.py spreads them over processes) ---------------------------

ProgressCallback = Callable[[RequestRecord], None]


async def run_single(
    url: str, requests: list[ChatRequest], settings: RequestSettings, ctx: RunContext,
    on_done: ProgressCallback | None = None, token_counter: TokenCounter | None = None,
) -> list[RequestRecord]:
    """Each prompt alone, one after the other (concurrency 1): the study's inference speed."""
    return await run_closed_loop(url, requests, settings, ctx, on_done, token_counter, concurrency=1)


async def run_closed_loop(
    url: str, requests: list[ChatRequest], settings: RequestSettings, ctx: RunContext,
    on_done: ProgressCallback | None = None, token_counter: TokenCounter | None = None,
    concurrency: int | None = None, start_at: float | None = None, wall_offset_s: float | None = None,
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
    url: str, requests: list[ChatRequest], planned: list[float], settings: RequestSettings, ctx: RunContext,
    on_done: ProgressCallback | None = None, token_counter: TokenCounter | None = None,
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

        for request, when in zip(requests, planned):
            loop.call_at(when, start, request, when)  # loop.time() is time.monotonic()
        await asyncio.sleep(max(max(planned, default=0.0) - time.monotonic(), 0.0))
        while len(tasks) < len(requests):  # the last timers may fire a hair after the sleep ends
            await asyncio.sleep(0.001)
        records = await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r.request_id)

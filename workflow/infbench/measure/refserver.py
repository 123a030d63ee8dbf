"""A reference server with known timing: OpenAI chat streaming over HTTP/1.1, in its own process.

It "generates" token i of a response at parse + ttft + i * itl and sends a chunk when its last token
is ready (tokens_per_chunk per chunk), so every figure a client should measure is known. It logs what
it really did, per request: when it parsed the request and when each chunk left (time.monotonic(),
CLOCK_MONOTONIC: system-wide on Linux, the same clock as the client's records), and how late each
send was against its schedule. That lag is the server's own error: when it grows, the rig, not the
client, is saturated.

Why raw asyncio: a chunk is one timer callback and one transport.write of pre-rendered bytes, so a
single process keeps tens of thousands of chunks per second on schedule. The loop is the client's
MeasuredLoop, whose timers fire to the microsecond rather than epoll's millisecond.

    python -m infbench.measure.refserver --port 0 --ttft 0.02 --itl 0.01 --tokens 100

prints `refserver listening on http://127.0.0.1:PORT` when ready. Endpoints: POST /v1/chat/completions
(any model name), GET /health, GET /v1/models, GET /refserver/log[?clear=1] (JSON: settings, requests,
server CPU time), POST /refserver/clear.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from infbench.measure.eventloop import MeasuredLoop


@dataclass(frozen=True)
class RefSettings:
    ttft_s: float = 0.020  # parse to first token
    itl_s: float = 0.010  # between tokens
    tokens: int = 100  # per response, unless the request's max_tokens asks for fewer
    tokens_per_chunk: int = 1
    role_chunk: bool = False  # a role-only chunk right after parsing (as vLLM and transformers send)
    usage: bool = True  # the final usage chunk, when the request asks for include_usage
    continuous_usage: bool = False  # cumulative usage in every chunk (also when the request asks for it)
    token_text: str = " tok"  # the text of one token
    model: str = "refserver"  # reported by /v1/models; requests may name any model


@dataclass
class LoggedRequest:
    """What the server did for one request; times are time.monotonic()."""

    id: str  # the X-Request-Id header, else a sequence number
    received: float  # first byte of the request
    parsed: float  # request complete and parsed: the schedule's origin
    tokens: int = 0
    chunk_times: list[float] = field(default_factory=list)  # content chunks' sends
    chunk_tokens: list[int] = field(default_factory=list)
    chunk_lags: list[float] = field(default_factory=list)  # send - scheduled send
    end: float | None = None  # the write holding [DONE]
    aborted: bool = False  # the client went away mid-stream


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream:
    """One response: its schedule, pre-rendered chunk bytes and log entry."""

    def __init__(self, conn: _Connection, log: LoggedRequest, body: dict, settings: RefSettings) -> None:
        self.conn = conn
        self.log = log
        self.settings = settings
        requested = body.get("max_completion_tokens") or body.get("max_tokens")
        self.n = min(settings.tokens, int(requested)) if requested else settings.tokens
        self.finish = "length" if requested and int(requested) <= settings.tokens else "stop"
        options = body.get("stream_options") or {}
        self.want_usage = settings.usage and bool(options.get("include_usage"))
        self.continuous = self.want_usage and (settings.continuous_usage or bool(options.get("continuous_usage_stats")))
        self.prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        model = json.dumps(str(body.get("model") or settings.model))
        self.prefix = (
            'data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,"model":%s,'  # noqa: UP031
            % (log.id, int(time.time()), model)
        ).encode()
        self.sent_tokens = 0
        self.handle: asyncio.TimerHandle | None = None
        self._rendered: dict[int, bytes] = {}  # k -> a plain k-token chunk: rendered once per response

    def _content(self, k: int, finish: str | None) -> bytes:
        if finish is not None or self.continuous:
            return self._chunk({"content": self.settings.token_text * k}, finish)
        if k not in self._rendered:
            self._rendered[k] = self._chunk({"content": self.settings.token_text * k}, None)
        return self._rendered[k]

    def _chunk(self, delta: dict, finish: str | None) -> bytes:
        body = '"choices":[{"index":0,"delta":%s,"finish_reason":%s}]' % (json.dumps(delta), json.dumps(finish))  # noqa: UP031
        if self.continuous:
            body += ',"usage":' + self._usage()
        return self.prefix + body.encode() + b"}\n\n"

    def _usage(self) -> str:
        return json.dumps(
            {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.sent_tokens,
                "total_tokens": self.prompt_tokens + self.sent_tokens,
            }
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if self.settings.role_chunk:
            head += _frame(self._chunk({"role": "assistant", "content": ""}, None))
        self.conn.transport.write(head)
        if self.n <= 0:
            self._end(time.monotonic(), b"")
            return
        self.handle = loop.call_at(self._due(), self._send)

    def _due(self) -> float:
        """When the next chunk is due: when its last token is ready."""
        last = min(self.sent_tokens + self.settings.tokens_per_chunk, self.n) - 1
        return self.log.parsed + self.settings.ttft_s + last * self.settings.itl_s

    def _send(self) -> None:
        due = self._due()
        now = time.monotonic()
        k = min(self.settings.tokens_per_chunk, self.n - self.sent_tokens)
        self.sent_tokens += k
        last = self.sent_tokens >= self.n
        data = self._content(k, self.finish if last else None)
        log = self.log
        log.chunk_times.append(now)
        log.chunk_tokens.append(k)
        log.chunk_lags.append(now - due)
        log.tokens = self.sent_tokens
        if last:
            self._end(now, data)
        else:
            self.conn.transport.write(_frame(data))
            self.handle = self.conn.loop.call_at(self._due(), self._send)

    def _end(self, now: float, data: bytes) -> None:
        if self.want_usage:
            data += (
                b'data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":'
                + self._usage().encode()
                + b"}\n\n"
            )
        data += b"data: [DONE]\n\n"
        self.conn.transport.write(_frame(data) + b"0\r\n\r\n")
        self.log.end = now
        self.handle = None
        self.conn.stream_done()

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.log.aborted = True


class _Connection(asyncio.Protocol):
    def __init__(self, server: RefServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.received: float | None = None
        self.stream: _Stream | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.stream is not None:
            self.stream.abort()
            self.stream = None

    def data_received(self, data: bytes) -> None:
        if self.received is None:
            self.received = time.monotonic()
        self.buf += data
        if self.stream is None:
            self._try_request()

    def stream_done(self) -> None:
        self.stream = None
        if self.buf:
            self._try_request()  # a pipelined request waited behind the stream

    def _try_request(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        received, self.received = self.received, (time.monotonic() if self.buf else None)
        parts = request_line.split(" ")
        method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        self.server.route(self, method, target, headers, body, received)

    def respond(self, status: int, payload: dict | list, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (status, reason.encode(), len(data), b"Connection: close\r\n" if close else b"")
            + data
        )
        if close:
            self.transport.close()
        elif self.buf:
            self._try_request()


class RefServer:
    def __init__(self, settings: RefSettings) -> None:
        self.settings = settings
        self.log: list[LoggedRequest] = []
        self.sequence = 0

    def route(self, conn: _Connection, method: str, target: str, headers: dict, body: bytes, received: float) -> None:
        path = urlsplit(target).path
        if method == "POST" and path == "/v1/chat/completions":
            parsed_body = None
            try:
                parsed_body = json.loads(body)
            except ValueError:
                pass
            if not isinstance(parsed_body, dict) or not parsed_body.get("stream"):
                conn.respond(400, {"error": {"message": "refserver: only JSON bodies with stream=true are served"}})
                return
            parsed = time.monotonic()
            self.sequence += 1
            entry = LoggedRequest(
                id=headers.get("x-request-id") or f"ref-{self.sequence}", received=received, parsed=parsed
            )
            self.log.append(entry)
            conn.stream = _Stream(conn, entry, parsed_body, self.settings)
            conn.stream.start(conn.loop)
        elif method == "GET" and path in ("/health", "/v1/health"):
            conn.respond(200, {"status": "ok"})
        elif method == "GET" and path == "/v1/models":
            conn.respond(200, {"object": "list", "data": [{"id": self.settings.model, "object": "model"}]})
        elif path == "/refserver/log":
            clear = parse_qs(urlsplit(target).query).get("clear", ["0"])[0] == "1"
            conn.respond(200, self.log_payload(clear))
        elif method == "POST" and path == "/refserver/clear":
            self.log = []
            conn.respond(200, {"cleared": True})
        else:
            conn.respond(404, {"error": {"message": f"refserver: no route for {method} {path}"}})

    def log_payload(self, clear: bool) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = [r for r in self.log if r.end is not None or r.aborted]
        payload = {
            "settings": asdict(self.settings),
            "clock": "time.monotonic (CLOCK_MONOTONIC)",
            "now": time.monotonic(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "in_flight": len(self.log) - len(done),
            "requests": [asdict(r) for r in done],
        }
        if clear:
            self.log = [r for r in self.log if r not in done]
        return payload


async def serve(settings: RefSettings, host: str, port: int, ready=None) -> None:
    server = RefServer(settings)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Connection(server), host, port, backlog=4096, reuse_address=True)
    bound = listener.sockets[0].getsockname()[1]
    if ready:
        ready(f"http://{host}:{bound}")
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    listener.close()


def main(argv: list[str] | None = None) -> int:
    defaults = RefSettings()
    p = argparse.ArgumentParser(prog="python -m infbench.measure.refserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed when ready)")
    p.add_argument("--ttft", type=float, default=defaults.ttft_s, help="seconds from parse to first token")
    p.add_argument("--itl", type=float, default=defaults.itl_s, help="seconds between tokens")
    p.add_argument("--tokens", type=int, default=defaults.tokens, help="tokens per response (max_tokens may ask fewer)")
    p.add_argument("--tokens-per-chunk", type=int, default=defaults.tokens_per_chunk)
    p.add_argument("--role-chunk", action="store_true", help="send a role-only chunk first")
    p.add_argument("--no-usage", action="store_true", help="never send usage")
    p.add_argument("--continuous-usage", action="store_true", help="cumulative usage in every chunk")
    p.add_argument("--model", default=defaults.model)
    args = p.parse_args(argv)
    if args.tokens_per_chunk < 1 or args.tokens < 0 or args.ttft < 0 or args.itl < 0:
        p.error("--tokens-per-chunk must be >= 1; --tokens, --ttft and --itl must be >= 0")
    settings = RefSettings(
        ttft_s=args.ttft,
        itl_s=args.itl,
        tokens=args.tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        role_chunk=args.role_chunk,
        usage=not args.no_usage,
        continuous_usage=args.continuous_usage,
        model=args.model,
    )
    loop = MeasuredLoop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(settings, args.host, args.port, ready=lambda url: print(f"refserver listening on {url}", flush=True))
        )
    finally:
        loop.close()
    return 0


class RefServerProcess:
    """The reference server as a child process (its own event loop and, the OS willing, its own core)."""

    def __init__(self, settings: RefSettings = RefSettings(), host: str = "127.0.0.1", log_path: Path | None = None):
        self.settings = settings
        self.host = host
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def __enter__(self) -> RefServerProcess:
        s = self.settings
        command = [
            sys.executable,
            "-m",
            "infbench.measure.refserver",
            "--host",
            self.host,
            "--port",
            "0",
            "--ttft",
            repr(s.ttft_s),
            "--itl",
            repr(s.itl_s),
            "--tokens",
            str(s.tokens),
            "--tokens-per-chunk",
            str(s.tokens_per_chunk),
            "--model",
            s.model,
        ]
        command += (
            ["--role-chunk"] * s.role_chunk
            + ["--no-usage"] * (not s.usage)
            + ["--continuous-usage"] * s.continuous_usage
        )
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        line = self.process.stdout.readline()
        if not line.startswith("refserver listening on "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"refserver did not start (exit {self.process.poll()}): {line.strip()!r}")
        self.base_url = line.split(" on ", 1)[1].strip()
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid

    def fetch_log(self, clear: bool = True) -> dict:
        """The server's log of finished requests (and optionally forget them)."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with opener.open(f"{self.base_url}/refserver/log?clear={int(clear)}", timeout=60) as response:
            return json.loads(response.read())


if __name__ == "__main__":
    sys.exit(main())

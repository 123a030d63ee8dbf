"""HTTP/1.1 framing over an asyncio Protocol: a response parser and one keep-alive connection.

Why no HTTP library: on a busy machine a client's own delays end up in the engine's latency. A chunk
is stamped in `data_received`, the first moment Python sees its bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

READ_BUFFER_LIMIT = 1 << 20  # an unframed response head larger than this is a protocol error


class ProtocolError(Exception):
    pass


class ResponseParser:
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
                self._body(bytes(buf[pos : pos + take]), t)
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
                    self.keep_alive = self.keep_alive and buf[pos : pos + 2] == b"\r\n"
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


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one response in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: ResponseParser | None = None
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

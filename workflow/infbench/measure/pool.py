"""Keep-alive connections to one server: a request takes an idle one or opens one, so the number of
connections follows the concurrency the load shape produces."""

from __future__ import annotations

import asyncio
import time

from infbench.measure.http1 import HttpConnection


class ConnectionPool:
    def __init__(self, host: str, port: int, ssl: bool) -> None:
        self.host, self.port, self.ssl = host, port, ssl
        self.idle: list[HttpConnection] = []
        self.connections_opened = 0

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def take_idle(self) -> HttpConnection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def give_back(self, conn: HttpConnection) -> None:
        """A connection whose response ended cleanly, ready for the next request."""
        conn.response = conn.done = conn.on_read = None
        self.idle.append(conn)

    async def prewarm(self, n: int, timeout_s: float = 30.0) -> None:
        """Open n connections ahead of a run (a closed loop's C users hold theirs all along)."""
        opened = await asyncio.wait_for(
            asyncio.gather(*(self.connect() for _ in range(n)), return_exceptions=True), timeout_s
        )
        self.idle.extend(conn for conn, _ in (o for o in opened if not isinstance(o, BaseException)))

    async def connect(self) -> tuple[HttpConnection, float]:
        """A fresh connection and the seconds it took to open."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        _, conn = await loop.create_connection(HttpConnection, self.host, self.port, ssl=self.ssl or None)
        self.connections_opened += 1
        return conn, time.monotonic() - started

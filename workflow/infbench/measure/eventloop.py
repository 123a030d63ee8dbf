"""The measured event loop: an asyncio loop with microsecond timers that knows when it last sat idle.

Shared by the client (read lag: how long a chunk's bytes may have waited unread) and the reference
server (precise chunk timers). Clock: time.monotonic() (CLOCK_MONOTONIC on Linux: one system-wide
clock, shared by worker processes and the reference server).
"""

from __future__ import annotations

import asyncio
import gc
import select
import selectors
import time


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


def running_lag_selector() -> LagSelector | None:
    """The running loop's LagSelector, or None on a plain asyncio loop (read lag then unknown)."""
    return getattr(asyncio.get_running_loop(), "lag_selector", None)


def wall_offset() -> float:
    """Seconds to add to a time.monotonic() reading to get unix time; taken once per run."""
    return time.time() - time.monotonic()

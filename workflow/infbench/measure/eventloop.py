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

# Waking from a long idle wait is late by up to a few ms on a VM (the vCPU is parked: 3.4 ms at p99
# after 330 ms idle on the 2-core CI machine, 0.3 ms after 30 ms), so a selector that must meet its
# timers wakes early and polls the rest of the way: a lead of SPIN_SHARE of the wait, within
# [SPIN_MIN_S, SPIN_MAX_S], costs at most about 2% of one core whatever the rate.
SPIN_SHARE = 0.02
SPIN_MIN_S = 0.0005
SPIN_MAX_S = 0.005


def spin_lead(timeout: float) -> float:
    """How long before a timer a spinning selector stops sleeping and starts polling."""
    return min(timeout, max(SPIN_MIN_S, min(SPIN_MAX_S, timeout * SPIN_SHARE)))


class LagSelector(selectors.DefaultSelector):
    """The default selector with microsecond timeouts, and a bound on how long read bytes waited.

    Timeouts: epoll takes whole milliseconds (Python rounds a timeout up), so an asyncio timer fires up
    to 1 ms late: dispatch lag on every open-loop send, server lag on every reference-server chunk.
    Waiting with select() on the epoll descriptor itself takes microseconds. With `spin` (the load
    generator's loop, whose timers are send times), the last stretch of each wait is polled instead of
    slept (spin_lead), so a send leaves within microseconds of its plan even after a long idle gap.

    `ready_since`: the bytes a callback reads now arrived after this time. Events returned by a poll
    were not ready at the previous poll (epoll is level-triggered and each ready socket is drained),
    so they arrived after it; after an idle wait, they arrived when they woke the loop. A read at time
    t therefore waited at most t - ready_since in the client: its read lag.
    """

    def __init__(self, spin: bool = False) -> None:
        super().__init__()
        self.spin = spin
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
            deadline = polled + timeout
            sleep_s = timeout - spin_lead(timeout) if self.spin else timeout
            select.select([self._wait_fd], [], [], sleep_s)  # µs timeout; wakes when epoll has events
            ready = super().select(0)
            while self.spin and not ready and time.monotonic() < deadline:
                ready = super().select(0)  # poll: I/O is still served while waiting for the timer
        else:
            ready = super().select(timeout)
        self.ready_since = self._last_poll = time.monotonic()  # idle until now: what woke us is fresh
        return ready


class MeasuredLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a LagSelector; the client reads `lag_selector` to bound its read lag."""

    def __init__(self, spin: bool = False) -> None:
        self.lag_selector = LagSelector(spin)
        super().__init__(self.lag_selector)


def run_measured(coro):
    """asyncio.run, but on a spinning MeasuredLoop (so send times are met to the microsecond and read
    lag is known).

    The cyclic garbage collector is paused meanwhile: a full collection over thousands of records
    stalls the loop for milliseconds, which would show up as read lag. Requests leave little cyclic
    garbage; it is collected at the end.
    """
    loop = MeasuredLoop(spin=True)
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

"""The spinning selector: it sleeps most of a wait, polls the last stretch, never returns early."""

from __future__ import annotations

import os
import selectors
import threading
import time

import pytest
from infbench.measure.eventloop import SPIN_MAX_S, SPIN_MIN_S, LagSelector, spin_lead


@pytest.mark.parametrize(
    ("timeout", "lead"),
    [(0.0002, 0.0002), (0.01, SPIN_MIN_S), (0.1, 0.002), (0.33, SPIN_MAX_S), (600.0, SPIN_MAX_S)],
)
def test_spin_lead_is_a_bounded_share_of_the_wait(timeout, lead):
    assert spin_lead(timeout) == pytest.approx(lead)


@pytest.fixture
def pipe_selector():
    read_fd, write_fd = os.pipe()
    selector = LagSelector(spin=True)
    selector.register(read_fd, selectors.EVENT_READ)
    yield selector, write_fd
    selector.close()
    os.close(read_fd)
    os.close(write_fd)


def test_spinning_wait_with_nothing_ready_lasts_its_whole_timeout(pipe_selector):
    selector, _ = pipe_selector
    started = time.monotonic()
    assert selector.select(0.05) == []
    assert time.monotonic() - started >= 0.05  # the asyncio timer it waits for is due, never early


def test_bytes_that_arrive_while_spinning_end_the_wait(pipe_selector):
    selector, write_fd = pipe_selector
    # Written 49 ms into a 0.5 s wait: inside the sleep (lead 5 ms) it wakes select(); the test only
    # asserts the event is returned, and long before the timeout.
    threading.Timer(0.049, os.write, (write_fd, b"x")).start()
    started = time.monotonic()
    ready = selector.select(0.5)
    assert len(ready) == 1
    assert time.monotonic() - started < 0.4

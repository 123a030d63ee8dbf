"""Start an engine server in its own process group, wait until it is healthy, always stop it."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infbench.pipeline.defaults import schema_default


class ServerError(RuntimeError):
    """The server exited early or never became healthy; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """Runs in a child before exec: SIGTERM when its parent dies, even by SIGKILL (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _own_group_dying_with_parent() -> None:
    """A server's preexec: a new session (its own process group, stopped as one) + die_with_parent."""
    os.setsid()
    die_with_parent()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedServer:
    """One engine server process group. Use as a context manager; stop() is idempotent."""

    command: list[str]
    log_path: Path
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = schema_default("engines.*.startup_timeout_s")
    stop_timeout_s: float = 20.0
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env or None, preexec_fn=_own_group_dying_with_parent,
            )
        finally:
            log.close()  # the child holds its own copy

    def wait_healthy(self) -> float:
        """Poll the health URL; return seconds to healthy. Raise ServerError on exit or timeout."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServerError(
                        f"server exited with code {code} before it was healthy; "
                        f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                try:
                    if client.get(self.health_url).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"server not healthy at {self.health_url} after {self.startup_timeout_s:.0f} s "
                        f"(raise the engine's startup_timeout_s if it is just slow); "
                        f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after stop_timeout_s."""
        if self.process is None:
            return
        pgid = self.process.pid  # setsid made the server its group's leader
        for sig, wait_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _wait_group_gone(self.process, pgid, wait_s):
                break
        self.process.wait()
        self.process = None

    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_group_gone(process: subprocess.Popen, pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not linger as a zombie
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False

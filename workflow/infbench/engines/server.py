"""Start an engine server in its own process group, wait until it is healthy, always stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from infbench.defaults import schema_default
from infbench.procutil import own_group_dying_with_parent


class ServerError(RuntimeError):
    """The server exited early or never became healthy; the message carries its log's tail."""


class PortClashError(ServerError):
    """Another process holds the port we picked (free_port releases it before the engine binds it):
    the caller retries on a fresh port."""


# What engines print when their port is taken (uvicorn, Rust servers, docker).
PORT_IN_USE_MARKERS = ("address already in use", "errno 98", "port is already allocated")


def listener_pids(port: int, root_pid: int) -> tuple[bool, list[int]]:
    """Whether a process of root_pid's tree listens on port, and which other pids do (when visible)."""
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        try:
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in proc.net_connections(kind="inet")
            ):
                return True, []
        except psutil.Error:
            continue
    others = []
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                others.append(conn.pid)
    except psutil.Error:  # other users' sockets need privileges: the pid stays unknown
        pass
    return False, sorted(set(others))


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
    # The port the server was told to bind: a health 200 counts only when a process of the server's
    # own tree listens there (None: not checked, e.g. docker, whose proxy is not our child).
    port: int | None = None
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env or None,
                preexec_fn=own_group_dying_with_parent,
            )
        finally:
            log.close()  # the child holds its own copy

    def wait_healthy(self) -> float:
        """Poll the health URL; return seconds to healthy. Raise ServerError on exit or timeout."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            stranger: list[int] | None = None  # set when something not ours answered
            while True:
                code = self.process.poll()
                if code is not None:
                    tail = log_tail(self.log_path)
                    if stranger is not None or any(m in tail.lower() for m in PORT_IN_USE_MARKERS):
                        raise PortClashError(
                            f"port {self.port} was taken by another process "
                            f"(pid {_pids(stranger)}) before the server bound it"
                        )
                    raise ServerError(
                        f"server exited with code {code} before it was healthy; last lines of {self.log_path}:\n{tail}"
                    )
                try:
                    if client.get(self.health_url).status_code == 200:
                        if self.port is None:
                            return time.monotonic() - started
                        ours, others = listener_pids(self.port, self.process.pid)
                        if ours:
                            return time.monotonic() - started
                        stranger = others  # keep waiting: ours may still be loading, or fail to bind
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    if stranger is not None:
                        raise PortClashError(
                            f"port {self.port} answers, but not from the server we started "
                            f"(it is held by pid {_pids(stranger)})"
                        )
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
                if sig == signal.SIGTERM:
                    os.killpg(pgid, signal.SIGCONT)  # a stopped (hung) server acts on SIGTERM only once resumed
            except ProcessLookupError:
                break
            if _wait_group_gone(self.process, pgid, wait_s):
                break
        self.process.wait()
        self.process = None

    def __enter__(self) -> ManagedServer:
        if self.process is None:  # a server started (and checked) before the block is kept
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _pids(pids: list[int] | None) -> str:
    return ", ".join(map(str, pids)) if pids else "unknown"


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

"""Process helpers shared by the server lifecycle (engines/server.py), the client's worker
processes (measure/loadgen.py) and the bench job: free ports, children that die with their
parent, a job that stops when Snakemake is gone."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time

import psutil


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


def own_group_dying_with_parent() -> None:
    """A server's preexec: a new session (its own process group, stopped as one) + die_with_parent."""
    os.setsid()
    die_with_parent()


def exit_when_parent_dies(poll_s: float = 1.0) -> int | None:
    """Watch the nearest `snakemake` ancestor (else the parent); SIGTERM ourselves when it is gone.

    A bench job runs under `bash -c` under snakemake: PR_SET_PDEATHSIG would fire only when the
    shell dies, and a `kill -9` of snakemake leaves the shell alive. SIGTERM goes through the bench
    job's handler, so its `finally` stops the server as on Ctrl-C. Returns the watched pid.
    """
    try:
        me = psutil.Process()
        ancestors = me.parents()
    except psutil.Error:
        return None
    watched = next((p for p in ancestors if "snakemake" in " ".join(cmdline(p))), ancestors[0] if ancestors else None)
    if watched is None or watched.pid == 1:
        return None

    def alive() -> bool:
        try:  # is_running also compares the start time (a reused pid is not it); a zombie is dead
            return watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return watched.pid


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []

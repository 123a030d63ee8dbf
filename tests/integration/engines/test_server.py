"""Server start and stop: real child processes, no process left behind in any exit path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from infbench.engines.server import ManagedServer, ServerError
from infbench.procutil import free_port

# A real HTTP server with a /health route that also forks a worker, like engines do.
HEALTHY_SERVER = textwrap.dedent("""
    import subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("worker", worker.pid, flush=True)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    time.sleep(float(sys.argv[2]))  # slow start-up
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _server(tmp_path, script: str, *args: str, timeout: float = 20.0) -> ManagedServer:
    path = tmp_path / "server.py"
    path.write_text(script)
    port = free_port()
    return ManagedServer(
        command=[sys.executable, str(path), str(port), *args],
        log_path=tmp_path / "server.log",
        health_url=f"http://127.0.0.1:{port}/health",
        startup_timeout_s=timeout,
        stop_timeout_s=5.0,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _worker_pid(tmp_path) -> int:
    for _ in range(50):
        for line in (tmp_path / "server.log").read_text().splitlines():
            if line.startswith("worker "):
                return int(line.split()[1])
        time.sleep(0.1)
    raise AssertionError("worker never started")


def test_healthy_server_and_its_children_are_stopped(tmp_path):
    server = _server(tmp_path, HEALTHY_SERVER, "0.3")
    with server:
        assert server.wait_healthy() >= 0.3
        pgid = server.process.pid
        worker = _worker_pid(tmp_path)
        assert psutil.pid_exists(worker)
    assert not _group_alive(pgid)
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE


def test_server_that_dies_early_fails_with_its_log_tail(tmp_path):
    script = "import sys\nprint('CUDA out of memory: cannot load weights', flush=True)\nsys.exit(3)\n"
    server = _server(tmp_path, script)
    with pytest.raises(ServerError) as info:
        with server:
            pgid = server.process.pid
            server.wait_healthy()
    assert "exited with code 3" in str(info.value)
    assert "CUDA out of memory" in str(info.value)
    assert not _group_alive(pgid)


def test_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path):
    server = _server(tmp_path, HEALTHY_SERVER, "60", timeout=1.5)
    with pytest.raises(ServerError) as info:
        with server:
            pgid = server.process.pid
            server.wait_healthy()
    assert "not healthy" in str(info.value) and "startup_timeout_s" in str(info.value)
    assert not _group_alive(pgid)


def test_ctrl_c_during_a_run_stops_the_server(tmp_path):
    server = _server(tmp_path, HEALTHY_SERVER, "0")
    with pytest.raises(KeyboardInterrupt):
        with server:
            server.wait_healthy()
            pgid = server.process.pid
            raise KeyboardInterrupt
    assert not _group_alive(pgid)


def test_server_dies_with_a_killed_bench_process(tmp_path):
    """Even SIGKILL of the bench process (no cleanup code runs) leaves no orphan server."""
    (tmp_path / "server.py").write_text(HEALTHY_SERVER)
    port = free_port()
    driver = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from infbench.engines.server import ManagedServer
        s = ManagedServer(command=[sys.executable, {str(tmp_path / "server.py")!r}, "{port}", "0"],
                          log_path=Path({str(tmp_path / "server.log")!r}), health_url="http://127.0.0.1:{port}/health")
        s.start(); s.wait_healthy(); print(s.process.pid, flush=True); time.sleep(600)
    """)
    bench = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    server_pid = int(bench.stdout.readline())
    bench.send_signal(signal.SIGKILL)
    bench.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(server_pid) and psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "server outlived its killed parent"
        time.sleep(0.1)
    # The server's own worker is in the server's process group; clean it as a real run would.
    try:
        os.killpg(server_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

"""The busy-machine mark (measure/busy.py) on real processes: a container's processes are the bench
job's own, one spinning process flags a big machine, and the culprits add up to the CPU measured,
short-lived processes included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from infbench.measure.busy import LoadWatch, container_pids, load_summary

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def _spin(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])


def _idle_root() -> subprocess.Popen:
    """A stand-in bench job: a process tree of its own that uses no CPU."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_culprits_add_up_to_the_cpu_measured_short_lived_processes_included():
    """Many short commands (each ends before the second snapshot) are named as their parent's
    children, not lost: the named CPU seconds explain what others used."""
    root = _idle_root()
    burst = (
        "import subprocess, sys\n"
        "for _ in range(12):\n"
        f"    subprocess.run([sys.executable, '-c', {SPIN.format(seconds=0.1)!r}])\n"
    )
    try:
        watch = LoadWatch(limit=0.1, root_pid=root.pid, core_limit=0.25)
        watch.start()
        parent = subprocess.Popen([sys.executable, "-c", burst])  # started after the first snapshot
        keeper = psutil.Process(parent.pid)
        time.sleep(0.2)
        parent_cpu = keeper.cpu_times()
        while parent.poll() is None:
            time.sleep(0.05)
            try:
                parent_cpu = keeper.cpu_times()
            except psutil.NoSuchProcess:
                break
        load = watch.stop("single", top=1000)
    finally:
        root.kill()
        root.wait()
    # The parent was reaped by this test process (not in the tree): its commands are this process's
    # reaped children, and they used at least 12 x 0.1 CPU s.
    mine = [c for c in load.culprits if c["pid"] == os.getpid() and c["what"] == "children"]
    assert mine and mine[0]["cpu_s"] >= 1.2, load.culprits
    assert parent_cpu.children_user + parent_cpu.children_system >= 1.1
    named = sum(c["cpu_s"] for c in load.culprits)
    assert named == pytest.approx(load.other_cpu_s, rel=0.03, abs=0.1), load.culprits  # the entries add up to the total
    assert "children of" in load_summary(load.to_dict())


def test_one_spinning_process_flags_a_machine_it_is_a_small_share_of():
    """A process that keeps one core busy is a small share of a big machine, but more than the
    per-core limit: the scenario is busy even when the machine as a whole was under its limit."""
    root = _idle_root()
    spinner = _spin(1.5)
    try:
        time.sleep(0.2)
        # A low per-core limit: on a shared test machine the spinner may get only part of a core.
        watch = LoadWatch(limit=1.0, root_pid=root.pid, core_limit=0.05)
        watch.start()
        time.sleep(1.0)
        load = watch.stop("single", top=1000)
    finally:
        spinner.kill()
        root.kill()
        spinner.wait()
        root.wait()
    spun = next(c for c in load.culprits if c["pid"] == spinner.pid and c["what"] == "process")
    assert spun["cpu_s"] / load.wall_s > 0.05  # one process had more than its share of a core
    assert load.busiest_core_share >= spun["cpu_s"] / load.wall_s - 0.01
    # Busy by the per-core rule alone, even when the machine as a whole was under its limit:
    assert replace(load, other_cpu_share=0.0).busy
    assert not replace(load, other_cpu_share=0.0, core_limit=10.0).busy
    assert "of a core (limit 5%)" in load.summary()


def _cgroup_root() -> Path | None:
    """A cgroup v1 hierarchy we may create a group in (root, not read-only), for the container test."""
    for name in ("pids", "cpu", "cpuacct", "memory"):
        base = Path("/sys/fs/cgroup") / name
        if base.is_dir() and os.access(base, os.W_OK):
            return base
    unified = Path("/sys/fs/cgroup/unified")
    if unified.is_dir() and os.access(unified, os.W_OK):
        return unified
    return None


def test_a_containers_processes_are_the_bench_jobs_own():
    """A container runtime starts the container's processes outside the bench job's tree; they are
    found by the container id in their cgroup (docker's cgroupfs layout: /docker/ID), so a TGI
    container's work is not someone else's. The process here is a real one in a real cgroup named
    like a docker container's (no container engine on this machine)."""
    base = _cgroup_root()
    if base is None:
        pytest.skip("no writable cgroup hierarchy (needs root): cannot place a process in a container's cgroup")
    container_id = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, as docker's ids
    group = base / "docker" / container_id
    try:
        group.mkdir(parents=True)
    except OSError as err:
        pytest.skip(f"cannot create a cgroup here: {err}")
    root = _idle_root()
    worker = _spin(1.5)  # not a child of root: as a container's process is not the bench job's
    try:
        (group / "cgroup.procs").write_text(str(worker.pid))
        assert container_pids([container_id]) == {worker.pid}
        time.sleep(0.2)
        counted = LoadWatch(limit=0.1, root_pid=root.pid, core_limit=0.25)
        counted.add_container(container_id)
        not_counted = LoadWatch(limit=0.1, root_pid=root.pid, core_limit=0.25)
        counted.start()
        not_counted.start()
        time.sleep(1.0)
        ours = counted.stop("single", top=1000)
        theirs = not_counted.stop("single", top=1000)
    finally:
        worker.kill()
        root.kill()
        worker.wait()
        root.wait()
        for _ in range(50):  # the group can be removed once its process is gone
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        try:
            group.parent.rmdir()
        except OSError:
            pass
    used = {c["pid"]: c["cpu_s"] for c in theirs.culprits if c["what"] == "process"}
    assert used.get(worker.pid, 0.0) >= 0.1  # without the id: someone else's
    assert worker.pid not in {c["pid"] for c in ours.culprits}  # with it: the bench job's own

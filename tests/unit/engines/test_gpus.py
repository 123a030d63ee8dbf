"""GPU leases: distinct ids for concurrent jobs, scheduler ids respected, locks gone with the job."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
from infbench.engines.gpus import GpuLease, GpuLeaseError, gpus_allocated_by_slurm, this_node, visible_gpu_ids


def test_two_jobs_get_different_gpus(tmp_path):
    with GpuLease(1, ["0", "1"], lock_dir=tmp_path) as a, GpuLease(1, ["0", "1"], lock_dir=tmp_path) as b:
        assert a.ids != b.ids and sorted(a.ids + b.ids) == ["0", "1"]
        assert a.env()["CUDA_VISIBLE_DEVICES"] in ("0", "1")


def test_a_busy_set_waits_then_fails_clearly(tmp_path):
    with GpuLease(1, ["0", "1"], lock_dir=tmp_path):
        with pytest.raises(GpuLeaseError, match="no 2 free GPU"):
            GpuLease(2, ["0", "1"], lock_dir=tmp_path, wait_s=0.5).acquire()


def test_asking_for_more_gpus_than_visible_names_the_setting(tmp_path):
    with pytest.raises(GpuLeaseError, match="gpus"):
        GpuLease(2, ["0"], lock_dir=tmp_path).acquire()


def test_release_frees_the_ids(tmp_path):
    lease = GpuLease(2, ["0", "1"], lock_dir=tmp_path)
    lease.acquire()
    lease.release()
    with GpuLease(2, ["0", "1"], lock_dir=tmp_path) as again:
        assert again.ids == ["0", "1"]


def test_lock_dies_with_the_process(tmp_path):
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from infbench.engines.gpus import GpuLease
        GpuLease(1, ["0"], lock_dir=Path({str(tmp_path)!r})).acquire()
        os._exit(0)  # no release, no cleanup
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    with GpuLease(1, ["0"], lock_dir=tmp_path, wait_s=0.5) as lease:
        assert lease.ids == ["0"]


def test_scheduler_ids_are_the_only_candidates():
    assert visible_gpu_ids([0, 1, 2, 3], {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpu_ids([0, 1], {}) == ["0", "1"]
    assert visible_gpu_ids([5], {"CUDA_VISIBLE_DEVICES": ""}) == ["5"]


def test_cpu_jobs_lease_nothing(tmp_path):
    with GpuLease(0, [], lock_dir=tmp_path) as lease:
        assert lease.ids == [] and lease.env() == {"CUDA_VISIBLE_DEVICES": ""}


def test_cpu_bench_jobs_never_overlap_across_processes(tmp_path):
    """A second CPU job (another process, e.g. another Snakemake run) waits for the first."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from infbench.engines.gpus import GpuLease
        with GpuLease(0, [], lock_dir=Path({str(tmp_path)!r})):
            print(time.time(), flush=True)
            time.sleep(0.5)
            print(time.time(), flush=True)
    """)
    first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    first_start = float(first.stdout.readline())
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first_end = float(first.stdout.readline())
    first.wait()
    second_start = float(second.stdout.split()[0])
    assert first_start < first_end <= second_start
    assert "waiting for another CPU bench job" in second.stderr


def _hold_cpu_lock(lock_dir, node):
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from infbench.engines.gpus import GpuLease
        with GpuLease(0, [], lock_dir=Path({str(lock_dir)!r}), node={node!r}):
            print(time.time(), flush=True)
            time.sleep(1.0)
            print(time.time(), flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _spans(procs):
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        start, end = map(float, out.split())
        spans.append((start, end))
    return spans


def test_cpu_lock_is_per_node_even_in_a_shared_lock_dir(tmp_path):
    """Two nodes bench at once (a lock directory on a shared filesystem included); one node never does."""
    (a, a_end), (b, b_end) = _spans([_hold_cpu_lock(tmp_path, "node-a"), _hold_cpu_lock(tmp_path, "node-b")])
    assert a < b_end and b < a_end  # overlapped
    (c, c_end), (d, d_end) = _spans([_hold_cpu_lock(tmp_path, "node-a"), _hold_cpu_lock(tmp_path, "node-a")])
    assert c_end <= d or d_end <= c  # one after the other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-a.cpu.lock", "node-b.cpu.lock"]


def test_gpus_slurm_allocated_are_taken_without_a_lock(tmp_path):
    """Slurm renumbers a job's GPUs from 0 in every job: two jobs both see "0", and both may use it."""
    slurm = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "1"}
    assert gpus_allocated_by_slurm(slurm)
    assert not gpus_allocated_by_slurm({"CUDA_VISIBLE_DEVICES": "0"})  # no scheduler: lock as usual
    assert not gpus_allocated_by_slurm({"SLURM_JOB_ID": "7"})  # a Slurm job without GPUs
    with (
        GpuLease(1, ["0"], lock_dir=tmp_path, scheduler_owned=True) as a,
        GpuLease(1, ["0"], lock_dir=tmp_path, scheduler_owned=True, wait_s=0.1) as b,
    ):
        assert a.ids == b.ids == ["0"]
    assert not list(tmp_path.iterdir())


def test_this_node_names_the_host_and_the_slurm_job():
    node = this_node({"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "gpu07", "SLURM_JOB_PARTITION": "gpu"})
    assert node.hostname == socket.gethostname().split(".")[0] and "." not in node.hostname
    assert (node.slurm_job_id, node.slurm_node, node.slurm_partition) == ("42", "gpu07", "gpu")
    assert this_node({}).slurm_job_id is None

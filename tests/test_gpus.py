"""GPU leases: distinct ids for concurrent jobs, scheduler ids respected, locks gone with the job."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from infbench.engines.gpus import GpuLease, GpuLeaseError, visible_gpu_ids


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

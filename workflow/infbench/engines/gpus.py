"""Lease concrete GPU ids for a bench job.

Snakemake's local executor counts `--resources gpu=N` but never says which devices a job may use.
A job locks node-local files (flock) for the ids it takes and sets CUDA_VISIBLE_DEVICES; the kernel
drops the locks when the process ends, so no lease outlives its job. Ids a cluster scheduler already
put in CUDA_VISIBLE_DEVICES are the only candidates; GPUs that Slurm allocated to the job are its
own already (and may be renumbered from 0 in every job), so they are taken without a lock.

Lock files carry the node's name: the CPU lock is per node (two nodes bench at once, one node never
runs two CPU bench jobs together) even where the lock directory is on a filesystem nodes share.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LOCK_DIR = Path(os.environ.get("INFBENCH_GPU_LOCK_DIR", "/tmp/infbench-gpu-locks"))


class GpuLeaseError(RuntimeError):
    pass


def node_name() -> str:
    """This machine's short host name (what `hostname -s` prints; Slurm's node names are these)."""
    return socket.gethostname().split(".")[0]


@dataclass(frozen=True)
class NodeIdentity:
    """Where a bench job ran: recorded in server.json, so results say which node produced them."""

    hostname: str
    slurm_job_id: str | None  # None outside a Slurm job
    slurm_node: str | None  # Slurm's name for the node (SLURMD_NODENAME)
    slurm_partition: str | None


def this_node(environ: dict | None = None) -> NodeIdentity:
    environ = os.environ if environ is None else environ
    return NodeIdentity(
        hostname=node_name(),
        slurm_job_id=environ.get("SLURM_JOB_ID"),
        slurm_node=environ.get("SLURMD_NODENAME"),
        slurm_partition=environ.get("SLURM_JOB_PARTITION"),
    )


def gpus_allocated_by_slurm(environ: dict | None = None) -> bool:
    """Slurm gave this job GPUs (a gres) and put them in CUDA_VISIBLE_DEVICES: they are exclusive."""
    environ = os.environ if environ is None else environ
    return bool(
        environ.get("SLURM_JOB_ID")
        and environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")
        and any(environ.get(name) for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE"))
    )


def visible_gpu_ids(configured: list[int] | None = None, environ: dict | None = None) -> list[str]:
    """Candidate ids: the scheduler's CUDA_VISIBLE_DEVICES, else config gpu_ids, else nvidia-smi."""
    environ = os.environ if environ is None else environ
    preset = environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None and preset.strip() not in ("", "-1"):
        return [item.strip() for item in preset.split(",") if item.strip()]
    if configured:
        return [str(i) for i in configured]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class GpuLease:
    count: int
    candidates: list[str]
    lock_dir: Path = DEFAULT_LOCK_DIR
    wait_s: float = 3600.0
    node: str = field(default_factory=node_name)
    scheduler_owned: bool = field(default_factory=gpus_allocated_by_slurm)
    ids: list[str] = field(default_factory=list)
    _handles: list = field(default_factory=list)

    def acquire(self) -> list[str]:
        if self.count == 0:
            return []
        if len(self.candidates) < self.count:
            raise GpuLeaseError(
                f"this job needs {self.count} GPU(s) (the model's `gpus`), but only {len(self.candidates)} "
                f"are visible ({', '.join(self.candidates) or 'none'}); lower `gpus` or set config gpu_ids"
            )
        if self.scheduler_owned:  # Slurm allocated exactly these to this job: nobody else has them
            self.ids = list(self.candidates[: self.count])
            return self.ids
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            for gpu_id in self.candidates:
                handle = open(self.lock_dir / f"{self.node}.gpu{gpu_id}.lock", "w")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                self._handles.append(handle)
                self.ids.append(gpu_id)
                if len(self.ids) == self.count:
                    return self.ids
            self.release()  # not enough free: let go, so two jobs never deadlock on half-sets
            if time.monotonic() > deadline:
                raise GpuLeaseError(f"no {self.count} free GPU(s) among {self.candidates} after {self.wait_s:.0f} s")
            time.sleep(1.0)

    def release(self) -> None:
        for handle in self._handles:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles.clear()
        self.ids.clear()

    def env(self) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for the server; empty on CPU, so a CPU run never grabs a GPU."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.ids)}

    def hold_cpu(self) -> None:
        """CPU bench jobs share one device, the host: take it whole, even against bench jobs of
        another Snakemake run or another Slurm job on this node (threads: all cores only orders jobs
        within one run); bench jobs on other nodes hold their own node's lock and run at once."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.lock_dir / f"{self.node}.cpu.lock"
        handle = open(path, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another CPU bench job on node {self.node} ({path})", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        self._handles.append(handle)

    def __enter__(self) -> GpuLease:
        if self.count == 0:
            self.hold_cpu()
        else:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

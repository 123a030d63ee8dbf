"""The memory_bandwidth job: this machine's memory bandwidth by two independent methods, for the
decode bound of CPU runs (results/hardware/bandwidth.json; `infbench memory-bandwidth`).

- read: one thread per core sums its own buffer (memory/bandwidth.py), bytes read per second;
- triad: STREAM's a = b + s*c, one set of arrays per thread (memory/triad.py), STREAM's byte count.

Neither can report more than the memory delivers (every buffer is far larger than the caches), but
each can report less: a sum is arithmetic too, and on few slow cores it may measure the cores; a
triad also writes. So the bound uses the higher of the two (an engine that decodes faster than the
higher figure allows is flagged, never one that merely beats the lower one), and the file says which
and why. Both run while the machine is held as a bench job holds it (the same CPU lock), and the CPU
time others used meanwhile is measured (measure/busy.py): a busy machine is recorded, not hidden.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infbench.engines.gpus import DEFAULT_LOCK_DIR, GpuLease
from infbench.handoff import Bandwidth
from infbench.measure.busy import LoadWatch, load_summary
from infbench.memory.bandwidth import measure_read_bandwidth
from infbench.memory.triad import measure_triad_bandwidth


@dataclass(frozen=True)
class HostBandwidth(Bandwidth):
    """A measurement just taken (the file's record, handoff.Bandwidth, with what to print)."""

    def machine_load_summary(self) -> str:
        return load_summary(self.machine_load)

    def summary(self) -> str:
        load = f", 1-min load {self.load_1min:.2f}" if self.load_1min is not None else ""
        return (
            f"read {self.read['bandwidth_bytes_s'] / 1e9:.1f} GB/s, triad {self.triad['bandwidth_bytes_s'] / 1e9:.1f} "
            f"GB/s ({self.threads} threads{load}); the bound uses {self.bound_method}"
            + ("" if self.quiet else "; THE MACHINE WAS NOT QUIET while measuring")
        )


def measure_host_bandwidth(
    buffer_mib: int = 128,
    repeats: int = 5,
    threads: int | None = None,
    busy_cpu_limit: float = 0.1,
    busy_core_limit: float = 0.25,
) -> HostBandwidth:
    """Both methods, alternately per repeat (so a burst of load falls on both alike), while a load
    watch counts what others used."""

    threads = threads or os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    watch = LoadWatch(busy_cpu_limit, core_limit=busy_core_limit)
    watch.start()
    reads, triads = [], []
    for _ in range(repeats):
        reads.append(measure_read_bandwidth(buffer_mib, 1, threads))
        triads.append(measure_triad_bandwidth(repeats=1, threads=threads))
    others = watch.stop("memory bandwidth")
    read = _best(reads)
    triad = _best(triads)
    use_read = read["bandwidth_bytes_s"] >= triad["bandwidth_bytes_s"]
    used, other = ("read", "triad") if use_read else ("triad", "read")
    figures = {"read": read["bandwidth_bytes_s"] / 1e9, "triad": triad["bandwidth_bytes_s"] / 1e9}
    why = (
        "the higher of two methods that can understate but not overstate what the memory delivers: "
        f"{used} ({figures[used]:.1f} GB/s) over {other} ({figures[other]:.1f} GB/s)"
    )
    return HostBandwidth(
        bandwidth_bytes_s=max(read["bandwidth_bytes_s"], triad["bandwidth_bytes_s"]),
        bound_method="read" if use_read else "triad",
        why=why,
        read=read,
        triad=triad,
        load_1min=load,
        quiet=not others.busy,
        machine_load=others.to_dict(),
        cpu=platform.processor() or platform.machine(),
        threads=threads,
        measured_at=time.time(),
    )


def _best(runs: list) -> dict[str, Any]:
    """One measurement from single-repeat runs: every sample kept, the best one counts."""
    first = runs[0].to_dict()
    samples = [s for run in runs for s in run.samples_bytes_s]
    return {**first, "bandwidth_bytes_s": max(samples), "repeats": len(samples), "samples_bytes_s": samples}


def write_host_bandwidth(path: str | Path, measurement: HostBandwidth) -> None:
    measurement.write(path)


def run_memory_bandwidth(out: Path, buffer_mib: int = 128, repeats: int = 5) -> HostBandwidth:
    """Measure holding the CPU lock of bench jobs (the machine to itself, as a CPU bench job has it:
    it waits for a bench job of another run on this node), then write `out`."""
    lock_dir = Path(os.environ.get("INFBENCH_GPU_LOCK_DIR", DEFAULT_LOCK_DIR))
    with GpuLease(count=0, candidates=[], lock_dir=lock_dir):
        measured = measure_host_bandwidth(buffer_mib, repeats)
    write_host_bandwidth(out, measured)
    return measured

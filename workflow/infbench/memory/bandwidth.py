"""This machine's memory bandwidth, measured with a short read benchmark.

Single-request decoding reads every weight (and the KV cache of the context) once per token, so
tokens/s can be no higher than read bandwidth / bytes per token. On a CPU that bandwidth is not a
catalogue figure: it depends on channels, DIMMs and what else runs, so it is measured here: bytes
read per second while one thread per core sums its own buffer (numpy releases the GIL). Reading,
not copying: a STREAM-style copy also pays for writes (and their read-for-ownership); here it came
out about 10% below reads, low enough that llama.cpp's measured decode passed the "bound".
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infbench.fileio import write_json_atomic

DEFAULT_BUFFER_MIB = 128  # per thread; far beyond any L3 slice, so the read streams from DRAM
DEFAULT_REPEATS = 5


@dataclass(frozen=True)
class BandwidthMeasurement:
    bandwidth_bytes_s: float  # best repeat: bytes read / second, all threads
    method: str
    threads: int
    buffer_bytes: int  # per thread
    repeats: int
    samples_bytes_s: list[float]
    load_1min: float | None  # os.getloadavg() before the benchmark: the machine may be shared
    cpu: str
    measured_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_in_threads(work: Callable[[int], object], threads: int) -> float:
    """Seconds from releasing `threads` threads at once (each runs work(its index)) until the last
    one is done; numpy releases the GIL inside its kernels, so they run in parallel."""
    barrier = threading.Barrier(threads + 1)

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def measure_read_bandwidth(
    buffer_mib: int = DEFAULT_BUFFER_MIB, repeats: int = DEFAULT_REPEATS, threads: int | None = None
) -> BandwidthMeasurement:
    """Best of `repeats` timed reads (sums) of `buffer_mib` MiB per thread, on `threads` threads."""
    import numpy as np  # a dependency of matplotlib, which infbench requires

    if buffer_mib <= 0 or repeats <= 0:
        raise ValueError(f"buffer_mib and repeats must be positive (got {buffer_mib}, {repeats})")
    threads = threads or os.cpu_count() or 1
    size = buffer_mib * 2**20
    # float32: numpy sums it with SIMD, so the sum streams at memory speed; filled, so every page
    # is touched before timing.
    sources = [np.ones(size // 4, dtype=np.float32) for _ in range(threads)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    samples = [size * threads / time_in_threads(lambda i: sources[i].sum(), threads) for _ in range(repeats)]
    return BandwidthMeasurement(
        bandwidth_bytes_s=max(samples),
        method="numpy sum of float32 buffers, one per thread, best of repeats (bytes read)",
        threads=threads,
        buffer_bytes=size,
        repeats=repeats,
        samples_bytes_s=samples,
        load_1min=load,
        cpu=platform.processor() or platform.machine(),
        measured_at=time.time(),
    )


def write_measurement(path: str | Path, measurement: BandwidthMeasurement) -> None:
    write_json_atomic(path, measurement.to_dict())

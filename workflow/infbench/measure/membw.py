"""This machine's memory bandwidth, measured with a short copy benchmark (STREAM-style "copy").

Single-request decoding reads every weight (and the KV cache of the context) once per token, so
tokens/s can be no higher than bandwidth / bytes per token. On a CPU that bandwidth is not a
catalogue figure: it depends on channels, DIMMs and what else runs, so it is measured here, with
the same convention as STREAM: bytes read + bytes written per second. One thread per core copies
its own buffers (numpy releases the GIL while copying), so the figure covers all cores.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infbench.fileio import write_json_atomic

DEFAULT_BUFFER_MIB = 128  # per thread; far beyond any L3 slice, so the copy streams from DRAM
DEFAULT_REPEATS = 5


@dataclass(frozen=True)
class BandwidthMeasurement:
    bandwidth_bytes_s: float  # best repeat: (read + written) bytes / second, all threads
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


def measure_copy_bandwidth(buffer_mib: int = DEFAULT_BUFFER_MIB, repeats: int = DEFAULT_REPEATS,
                           threads: int | None = None) -> BandwidthMeasurement:
    """Best of `repeats` timed copies of `buffer_mib` MiB per thread, on `threads` threads."""
    import numpy as np  # a dependency of matplotlib, which infbench requires

    if buffer_mib <= 0 or repeats <= 0:
        raise ValueError(f"buffer_mib and repeats must be positive (got {buffer_mib}, {repeats})")
    threads = threads or os.cpu_count() or 1
    size = buffer_mib * 2**20
    sources = [np.ones(size, dtype=np.uint8) for _ in range(threads)]
    targets = [np.empty(size, dtype=np.uint8) for _ in range(threads)]
    for src, dst in zip(sources, targets):  # touch every page before timing
        np.copyto(dst, src)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    samples: list[float] = []
    for _ in range(repeats):
        barrier = threading.Barrier(threads + 1)

        def copy(i: int) -> None:
            barrier.wait()
            np.copyto(targets[i], sources[i])

        workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        start = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        samples.append(2 * size * threads / elapsed)  # each byte read once and written once
    return BandwidthMeasurement(
        bandwidth_bytes_s=max(samples), method="numpy copyto, best of repeats (STREAM copy: read+write)",
        threads=threads, buffer_bytes=size, repeats=repeats, samples_bytes_s=samples,
        load_1min=load, cpu=platform.processor() or platform.machine(), measured_at=time.time())


def write_measurement(path: str | Path, measurement: BandwidthMeasurement) -> None:
    write_json_atomic(path, measurement.to_dict())

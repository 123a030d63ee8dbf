"""A second, independent measure of this machine's memory bandwidth: a STREAM-style triad.

The read benchmark (membw.py) sums one buffer per thread: it counts bytes read, which is what
decoding does, but a sum is also arithmetic, and on a machine with few, slow cores it may measure
the cores rather than the memory. The triad is the other classic way (McCalpin's STREAM):
a = b + s * c over arrays far larger than the caches, one set per thread, counted as STREAM counts
it, 24 bytes per element (two 8-byte reads and one 8-byte write; the write-allocate read that most
CPUs add is not counted). numpy releases the GIL inside each ufunc, so the threads run in parallel;
the product s * c goes through a cache-sized scratch block, so no array-sized temporary adds traffic.

Both figures go into results/hardware/bandwidth.json (see bandwidth.py): two methods that share
no code agreeing is the check that either measures memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from infbench.memory.bandwidth import time_in_threads

DEFAULT_ARRAY_MIB = 64  # per array, three per thread: far beyond any cache slice
MAX_TOTAL_MIB = 3072  # the arrays of all threads together, so that a 128-core machine does not need 24 GiB
MIN_ARRAY_MIB = 16
DEFAULT_REPEATS = 5
BLOCK_ELEMENTS = 64 * 1024  # 512 KiB of float64: the scratch product stays in the core's cache
BYTES_PER_ELEMENT = 24  # STREAM's triad count: read b, read c, write a


@dataclass(frozen=True)
class TriadMeasurement:
    bandwidth_bytes_s: float  # best repeat, STREAM's count (24 bytes per element), all threads
    method: str
    threads: int
    array_bytes: int  # per array; three arrays per thread
    repeats: int
    samples_bytes_s: list[float]
    measured_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _triad(a, b, c, scalar: float, scratch) -> None:
    import numpy as np

    n = len(a)
    for start in range(0, n, BLOCK_ELEMENTS):
        stop = min(start + BLOCK_ELEMENTS, n)
        part = scratch[: stop - start]
        np.multiply(c[start:stop], scalar, out=part)
        np.add(b[start:stop], part, out=a[start:stop])


def measure_triad_bandwidth(
    array_mib: int = DEFAULT_ARRAY_MIB, repeats: int = DEFAULT_REPEATS, threads: int | None = None
) -> TriadMeasurement:
    """Best of `repeats` timed triads, every thread on its own three arrays at once."""
    import numpy as np  # a dependency of matplotlib, which infbench requires

    if array_mib <= 0 or repeats <= 0:
        raise ValueError(f"array_mib and repeats must be positive (got {array_mib}, {repeats})")
    threads = threads or os.cpu_count() or 1
    array_mib = max(MIN_ARRAY_MIB, min(array_mib, MAX_TOTAL_MIB // (3 * threads)))
    n = array_mib * 2**20 // 8
    # Filled (np.zeros and np.empty map pages lazily), so every page is touched before timing.
    arrays = [(np.full(n, 0.0), np.full(n, 1.0), np.full(n, 2.0)) for _ in range(threads)]
    scratch = [np.empty(BLOCK_ELEMENTS) for _ in range(threads)]
    seconds = [time_in_threads(lambda i: _triad(*arrays[i], 3.0, scratch[i]), threads) for _ in range(repeats)]
    samples = [BYTES_PER_ELEMENT * n * threads / elapsed for elapsed in seconds]
    a, b, c = arrays[0]
    if not np.array_equal(a[:4], b[:4] + 3.0 * c[:4]):  # the work was really done
        raise RuntimeError("triad: wrong result")
    return TriadMeasurement(
        bandwidth_bytes_s=max(samples),
        method="STREAM-style triad a = b + s*c on float64 arrays, one set per thread, numpy in threads, "
        "best of repeats (24 bytes per element, as STREAM counts)",
        threads=threads,
        array_bytes=n * 8,
        repeats=repeats,
        samples_bytes_s=samples,
        measured_at=time.time(),
    )

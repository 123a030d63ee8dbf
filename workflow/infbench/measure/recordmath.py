"""Per-record figures without polars: what the client and the bench job need while measuring.

The bench job must run where polars is not installed (an offline GPU box, bench_scripts/gpu_check.sh),
so the client imports these from here; measure/metrics.py re-exports them beside its frame metrics.
"""

from __future__ import annotations

import math

from infbench.measure.records import RequestRecord


def tokens_per_second(record: RequestRecord) -> float | None:
    """TOKENS_PER_S for one record, live in the bench job's progress bar."""
    if not record.ok or not record.completion_tokens or not record.latency_s:
        return None
    return record.completion_tokens / record.latency_s


def _rank(count: int, q: float) -> tuple[float, int, int]:
    """Where percentile q (in [0, 100]) falls among `count` sorted values: rank, floor, ceiling."""
    rank = (count - 1) * q / 100.0
    return rank, math.floor(rank), math.ceil(rank)


def _interpolated(ordered, q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of a non-empty sorted sequence: a list, or a
    polars Series (the frames' percentiles), so that both give the same float."""
    rank, low, high = _rank(len(ordered), q)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile(values: list[float], q: float) -> float | None:
    """Percentile q in [0, 100] of values; None for no values. For one request's chunks in the client
    (its read lag); frames use `grouped_percentiles`, the same interpolation."""
    return _interpolated(sorted(values), q) if values else None

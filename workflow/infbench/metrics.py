"""Metric definitions, in one place (see docs: README "Metrics").

- tokens/s of a request = completion_tokens / end-to-end latency (only completion tokens count).
- TTFT: send to first content chunk. TPOT = (latency - TTFT) / (completion_tokens - 1).
- Throughput: successful requests per minute over the scenario's wall time (first send to last end).
Failed requests are counted in `errors`, never dropped silently.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from infbench.records import RequestRecord


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def tokens_per_second(record: RequestRecord) -> float | None:
    if not record.ok or not record.completion_tokens or not record.latency_s:
        return None
    return record.completion_tokens / record.latency_s


def time_per_output_token(record: RequestRecord) -> float | None:
    if not record.ok or record.ttft_s is None or (record.completion_tokens or 0) < 2:
        return None
    return (record.latency_s - record.ttft_s) / (record.completion_tokens - 1)


@dataclass
class ScenarioSummary:
    engine: str
    model: str
    scenario: str
    concurrency: int
    n: int
    errors: int
    tokens_per_s_mean: float | None
    tokens_per_s_sd: float | None
    requests_per_min: float | None
    output_tokens_per_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_p99_s: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    wall_time_s: float | None


def summarize(records: list[RequestRecord], engine: str, model: str, scenario: str) -> ScenarioSummary:
    ok = [r for r in records if r.ok]
    speeds = [s for s in map(tokens_per_second, ok) if s is not None]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [t for t in map(time_per_output_token, ok) if t is not None]
    latencies = [r.latency_s for r in ok]
    wall = _wall_time(ok)
    completion_total = sum(r.completion_tokens or 0 for r in ok)
    return ScenarioSummary(
        engine=engine,
        model=model,
        scenario=scenario,
        concurrency=max((r.concurrency for r in records), default=0),
        n=len(records),
        errors=len(records) - len(ok),
        tokens_per_s_mean=statistics.fmean(speeds) if speeds else None,
        tokens_per_s_sd=statistics.stdev(speeds) if len(speeds) > 1 else None,
        requests_per_min=len(ok) / wall * 60.0 if wall else None,
        output_tokens_per_s=completion_total / wall if wall else None,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p90_s=percentile(ttfts, 90),
        ttft_p99_s=percentile(ttfts, 99),
        tpot_p50_s=percentile(tpots, 50),
        tpot_p90_s=percentile(tpots, 90),
        tpot_p99_s=percentile(tpots, 99),
        latency_p50_s=percentile(latencies, 50),
        latency_p90_s=percentile(latencies, 90),
        latency_p99_s=percentile(latencies, 99),
        prompt_tokens_mean=_mean([r.prompt_tokens for r in ok]),
        completion_tokens_mean=_mean([r.completion_tokens for r in ok]),
        wall_time_s=wall,
    )


def _wall_time(ok: list[RequestRecord]) -> float | None:
    """First send to last end, on the wall clock the records share."""
    if not ok:
        return None
    start = min(r.send_time for r in ok)
    end = max(r.send_time + r.latency_s for r in ok)
    return end - start if end > start else None


def _mean(values: list[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None

"""Metric definitions, in one place (see docs: README "Metrics").

- tokens/s of a request = completion_tokens / end-to-end latency (only completion tokens count).
- TTFT: send to first content chunk. TPOT = (latency - TTFT) / (completion_tokens - 1).
- Throughput: successful requests per minute over the scenario's wall time (first send to last end).
- ITL: per token. A content chunk of k tokens that came g seconds after the previous one gives k
  inter-token latencies of g/k (the first chunk's tokens are in TTFT).
- Client lag: the client's own dispatch lag and read lag (client.py), p99 over requests; a run whose
  client lag p99 passes its limit is flagged. Goodput: requests/s that met the SLOs (TTFT and TPOT).
Failed requests are counted in `errors`, never dropped silently.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from infbench.measure.records import RequestRecord


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


def inter_token_latencies(record: RequestRecord) -> list[float]:
    """Per-token gaps between content chunks (tokens per chunk from the record, else one)."""
    if not record.ok:
        return []
    times = record.chunk_times_s
    counts = record.chunk_tokens if len(record.chunk_tokens) == len(times) else [1] * len(times)
    out: list[float] = []
    for previous, now, k in zip(times, times[1:], counts[1:]):
        k = max(k, 1)
        out.extend([(now - previous) / k] * k)
    return out


def meets_slo(record: RequestRecord) -> bool:
    """Success with TTFT and TPOT within the record's SLOs (an absent SLO is met)."""
    if not record.ok or record.ttft_s is None:
        return False
    if record.slo_ttft_s is not None and record.ttft_s > record.slo_ttft_s:
        return False
    tpot = time_per_output_token(record)
    return record.slo_tpot_s is None or tpot is None or tpot <= record.slo_tpot_s


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
    itl_p50_s: float | None = None
    itl_p90_s: float | None = None
    itl_p99_s: float | None = None
    # The client's own error (client.py): dispatch lag and read lag p99 over requests, mean connect
    # time of the requests that opened a connection; flagged when a lag p99 passes the limit.
    dispatch_lag_p99_s: float | None = None
    read_lag_p99_s: float | None = None
    connect_mean_s: float | None = None
    client_lag_limit_s: float | None = None
    client_lag_flag: bool = False
    workers: int = 1
    chunk_tokens_counted_by: str | None = None
    rate: float | None = None  # offered requests/s (open loop, sweep step)
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    goodput_rps: float | None = None  # requests/s that met both SLOs
    slo_passed: bool | None = None  # TTFT and TPOT p99 within the SLOs, no errors


def summarize(records: list[RequestRecord], engine: str, model: str, scenario: str) -> ScenarioSummary:
    ok = [r for r in records if r.ok]
    speeds = [s for s in map(tokens_per_second, ok) if s is not None]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [t for t in map(time_per_output_token, ok) if t is not None]
    latencies = [r.latency_s for r in ok]
    wall = _wall_time(ok)
    completion_total = sum(r.completion_tokens or 0 for r in ok)
    itls = [gap for r in ok for gap in inter_token_latencies(r)]
    dispatch_p99 = percentile([r.dispatch_lag_s for r in ok if r.dispatch_lag_s is not None], 99)
    read_p99 = percentile([r.read_lag_p99_s for r in ok if r.read_lag_p99_s is not None], 99)
    limit = max((r.client_lag_limit_s for r in records if r.client_lag_limit_s is not None), default=None)
    slo_ttft = next((r.slo_ttft_s for r in records if r.slo_ttft_s is not None), None)
    slo_tpot = next((r.slo_tpot_s for r in records if r.slo_tpot_s is not None), None)
    has_slo = slo_ttft is not None or slo_tpot is not None
    ttft_p99, tpot_p99 = percentile(ttfts, 99), percentile(tpots, 99)
    rates = {r.rate for r in records if r.rate is not None}
    counted_by = sorted({r.chunk_tokens_counted_by for r in ok if r.chunk_tokens_counted_by})
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
        ttft_p99_s=ttft_p99,
        tpot_p50_s=percentile(tpots, 50),
        tpot_p90_s=percentile(tpots, 90),
        tpot_p99_s=tpot_p99,
        latency_p50_s=percentile(latencies, 50),
        latency_p90_s=percentile(latencies, 90),
        latency_p99_s=percentile(latencies, 99),
        prompt_tokens_mean=_mean([r.prompt_tokens for r in ok]),
        completion_tokens_mean=_mean([r.completion_tokens for r in ok]),
        wall_time_s=wall,
        itl_p50_s=percentile(itls, 50),
        itl_p90_s=percentile(itls, 90),
        itl_p99_s=percentile(itls, 99),
        dispatch_lag_p99_s=dispatch_p99,
        read_lag_p99_s=read_p99,
        connect_mean_s=_mean([r.connect_s for r in ok if r.connect_s]),
        client_lag_limit_s=limit,
        client_lag_flag=limit is not None and any(v is not None and v > limit for v in (dispatch_p99, read_p99)),
        workers=len({r.worker for r in records}) or 1,
        chunk_tokens_counted_by="+".join(counted_by) or None,
        rate=max(rates) if len(rates) == 1 else None,
        slo_ttft_s=slo_ttft,
        slo_tpot_s=slo_tpot,
        goodput_rps=sum(map(meets_slo, records)) / wall if has_slo and wall else None,
        slo_passed=(len(ok) == len(records) and ttft_p99 is not None
                    and (slo_ttft is None or ttft_p99 <= slo_ttft)
                    and (slo_tpot is None or tpot_p99 is None or tpot_p99 <= slo_tpot)) if has_slo else None,
    )


def _wall_time(ok: list[RequestRecord]) -> float | None:
    """First send to last end, on the wall clock the records share."""
    if not ok:
        return None
    start = min(r.send_time for r in ok)
    end = max(r.send_time + r.latency_s for r in ok)
    return end - start if end > start else None


def _mean(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None

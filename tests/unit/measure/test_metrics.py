"""Metric definitions on hand-made records, with figures worked out by hand; the live per-record
helpers agree with the polars expressions; means, sd and percentiles equal the statistics module's
to the last bit."""

from __future__ import annotations

import random
import statistics

import polars as pl
import pytest
from infbench.measure.metrics import (
    inter_token_latencies,
    percentile,
    request_metrics,
    summarize,
    tokens_per_second,
)
from infbench.measure.recordfiles import write_records
from infbench.measure.recordframe import records_frame
from infbench.measure.records import RequestRecord, read_records
from infbench.measure.stats import weighted_percentiles


def rec(i, send, ttft, latency, completion, prompt=10, error=None, status=200, concurrency=1):
    return RequestRecord(
        request_id=f"r{i}",
        prompt_id=f"p{i}",
        engine="e",
        model="m",
        scenario="s",
        concurrency=concurrency,
        send_time=send,
        ttft_s=ttft,
        latency_s=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        status=status,
        error=error,
    )


def test_tokens_per_second_counts_completion_tokens_over_full_round_trip():
    assert tokens_per_second(rec(0, 0.0, 0.5, 2.0, 50)) == pytest.approx(25.0)


def _per_request(records) -> pl.DataFrame:
    return request_metrics(records_frame(records).lazy()).collect()


def test_tpot_excludes_the_first_token():
    # 1 s to the first token, then 9 more tokens over 0.9 s: 0.1 s per output token.
    tpot = _per_request([rec(0, 0.0, 1.0, 1.9, 10), rec(1, 0.0, 1.0, 1.0, 1)])["tpot_s"].to_list()
    assert tpot[0] == pytest.approx(0.1) and tpot[1] is None


def test_live_tokens_per_second_agrees_with_the_expression():
    records = [
        rec(0, 0.0, 0.5, 2.0, 50),
        rec(1, 0.0, 0.5, 0.0, 5),
        rec(2, 0.0, 0.5, 1.5, 0),
        rec(3, 0.0, None, None, None, error="x", status=None),
        rec(4, 0.0, 0.1, 0.3, 7, status=503),
        rec(5, 0.0, 0.1, 0.7, None),
    ]
    rng = random.Random(3)
    records += [rec(10 + i, 0.0, 0.1, rng.uniform(0.01, 30.0), rng.randint(1, 4000)) for i in range(200)]
    assert [tokens_per_second(r) for r in records] == _per_request(records)["tokens_per_s"].to_list()


def test_per_token_itl_splits_a_chunk_gap_over_its_tokens():
    r = rec(0, 0.0, 0.1, 0.5, 6)
    r.chunk_times_s, r.chunk_tokens = [0.1, 0.4, 0.5], [1, 3, 2]
    assert inter_token_latencies(r) == pytest.approx([0.1] * 3 + [0.05] * 2)
    r.chunk_tokens = [1, 3]  # tokens per chunk unknown (lengths differ): one per chunk
    assert inter_token_latencies(r) == pytest.approx([0.3, 0.1])


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([], 50) is None


def test_summary_counts_failures_and_keeps_them_out_of_the_means():
    records = [
        rec(0, 100.0, 0.2, 1.0, 20),  # 20 tok/s
        rec(1, 101.0, 0.4, 2.0, 80),  # 40 tok/s
        rec(2, 103.0, None, None, None, error="HTTP 500: boom", status=500),
    ]
    s = summarize(records, "e", "m", "s")
    assert s.n == 3 and s.errors == 1
    assert s.tokens_per_s_mean == pytest.approx(30.0)
    assert s.tokens_per_s_sd == pytest.approx(14.1421356, rel=1e-6)
    # Two successes between t=100 and t=103 (101 + 2 s): 2 requests in 3 s = 40 requests/min.
    assert s.wall_time_s == pytest.approx(3.0)
    assert s.requests_per_min == pytest.approx(40.0)
    assert s.output_tokens_per_s == pytest.approx(100 / 3.0)
    assert s.ttft_p50_s == pytest.approx(0.3)
    assert s.completion_tokens_mean == pytest.approx(50.0)


def test_summary_of_only_failures_has_no_speed():
    s = summarize([rec(0, 0.0, None, None, None, error="x", status=None)], "e", "m", "s")
    assert s.errors == 1 and s.tokens_per_s_mean is None and s.requests_per_min is None


def test_records_round_trip_through_jsonl(tmp_path):
    records = [rec(0, 1.5, 0.1, 0.2, 3), rec(1, 2.5, None, None, None, error="x", status=None)]
    path = tmp_path / "raw" / "s.jsonl"
    write_records(path, records)
    assert read_records(path) == records
    assert not list(path.parent.glob(".*.tmp"))


def test_live_percentile_agrees_with_the_frame_percentiles_to_the_bit():
    rng = random.Random(5)
    for size in (1, 2, 3, 7, 100, 101, 201, 1001, 2001):
        values = [rng.lognormvariate(-3, 1) for _ in range(size)]
        weights = [rng.choice([1, 1, 2, 5]) for _ in range(size)]
        expanded = sorted(v for v, w in zip(values, weights, strict=True) for _ in range(w))
        frame = pl.DataFrame({"v": values, "w": weights}).sort("v")
        got = weighted_percentiles(frame["v"], frame["w"], (0, 1, 50, 90, 99, 99.9, 100))
        assert got == {q: percentile(expanded, q) for q in got}


def test_bucketed_percentiles_are_exact_across_signs_magnitudes_ties_and_groups():
    """The selection goes by buckets of the floats' bits: values of both signs, zeros, many
    magnitudes, ties and values crowded into one bucket must still give the sorted list's figures."""
    from infbench.measure.stats import grouped_percentiles

    rng = random.Random(21)
    groups = {
        0: [rng.uniform(-5, 5) for _ in range(300)] + [0.0] * 7,
        1: [rng.choice([1e-9, 1e-3, 1.0, 1e6]) * rng.random() for _ in range(500)],
        2: [0.25 + i * 1e-15 for i in range(400)],  # all in one bucket
        3: [-rng.expovariate(2.0) for _ in range(3)],
        4: [42.0],
    }
    rows = [(g, v, rng.choice([1, 1, 3])) for g, values in groups.items() for v in values]
    rng.shuffle(rows)
    frame = pl.DataFrame(rows, schema={"group": pl.Int64, "value": pl.Float64, "weight": pl.Int64}, orient="row")
    qs = (0, 1, 37.5, 50, 90, 99, 100)
    got = {row["group"]: row for row in grouped_percentiles(frame.lazy(), qs).iter_rows(named=True)}
    for g in groups:
        expanded = sorted(v for group, v, w in rows if group == g for _ in range(w))
        assert {q: got[g][f"p{q}"] for q in qs} == {q: percentile(expanded, q) for q in qs}, g


def test_mean_and_sd_equal_the_statistics_module_to_the_bit():
    rng = random.Random(9)
    for size in (2, 3, 10, 257):
        for scale in (1e-3, 1.0, 1e6):
            records = [
                rec(i, float(i), 0.01, rng.uniform(0.001, 3.0) * scale, rng.randint(1, 2000)) for i in range(size)
            ]
            speeds = [tokens_per_second(r) for r in records]
            s = summarize(records, "e", "m", "s")
            assert s.tokens_per_s_mean == statistics.fmean(speeds)
            assert s.tokens_per_s_sd == statistics.stdev(speeds)
            latencies = [r.latency_s for r in records]
            assert s.latency_p99_s == percentile(latencies, 99) and s.latency_p50_s == percentile(latencies, 50)


def test_sweep_steps_are_summarized_per_rate():
    from infbench.measure.metrics import summarize_frame

    records = [rec(i, float(i), 0.1, 1.0, 10) for i in range(6)]
    for i, r in enumerate(records):
        r.rate, r.slo_ttft_s = (1.0, 2.0, 2.0, 4.0, 4.0, 4.0)[i], 0.2
    rows = summarize_frame(records_frame(records), "e", "m", "sw", sweep_steps=True)
    # Steps are data (step_rate), not names: the files label them sw@RATE (tables.labelled).
    assert [(s.scenario, s.step_rate, s.n, s.rate) for s in rows] == [
        ("sw", None, 6, None),
        ("sw", 1.0, 1, 1.0),
        ("sw", 2.0, 2, 2.0),
        ("sw", 4.0, 3, 4.0),
    ]
    assert all(s.slo_passed for s in rows)

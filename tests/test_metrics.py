"""Metric definitions on hand-made records, with figures worked out by hand."""

from __future__ import annotations

import pytest

from infbench.measure.metrics import percentile, summarize, time_per_output_token, tokens_per_second
from infbench.measure.records import RequestRecord, read_records, write_records


def rec(i, send, ttft, latency, completion, prompt=10, error=None, status=200, concurrency=1):
    return RequestRecord(
        request_id=f"r{i}", prompt_id=f"p{i}", engine="e", model="m", scenario="s", concurrency=concurrency,
        send_time=send, ttft_s=ttft, latency_s=latency, prompt_tokens=prompt, completion_tokens=completion,
        status=status, error=error,
    )


def test_tokens_per_second_counts_completion_tokens_over_full_round_trip():
    assert tokens_per_second(rec(0, 0.0, 0.5, 2.0, 50)) == pytest.approx(25.0)


def test_tpot_excludes_the_first_token():
    # 1 s to the first token, then 9 more tokens over 0.9 s: 0.1 s per output token.
    assert time_per_output_token(rec(0, 0.0, 1.0, 1.9, 10)) == pytest.approx(0.1)
    assert time_per_output_token(rec(0, 0.0, 1.0, 1.0, 1)) is None


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

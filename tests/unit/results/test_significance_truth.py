"""The statistics on synthetic runs with a known truth (bench_scripts/stats_error_rates.py, small):
an A/A comparison calls no difference, an injected 10% slowdown is found with an interval covering
it, and 95% intervals cover the truth about 95% of the time.

Bounds: a per-cell test at 5% has a binomial spread of about 1.6 points over the ~180 rows of each
figure here; the bounds leave about three of those either side. The lead's figures come from the
full script (200 trials of the study's shape)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def rates() -> dict:
    script = REPO / "bench_scripts" / "stats_error_rates.py"
    args = ["--trials", "60", "--models", "1", "--engines", "3", "--prompts", "50", "--json"]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_over_a_says_no_significant_difference(rates):
    aa = rates["comparisons"]["aa"]
    assert aa["prompts: latency p99"]["tested"] == 0  # 150 requests: too few for a p99 (the rows say so)
    for metric, figures in aa.items():
        if metric == "prompts: latency p99":
            continue
        assert figures["tested"] >= 150, metric
        assert figures["no_difference"] >= 0.95, (metric, figures)  # adjusted: what the verdict column says
        assert figures["unadjusted_significant"] <= 0.10, (metric, figures)  # each cell's own test: ~5%
    assert rates["comparisons"]["aa_trials_with_any_false_verdict"] <= 0.15


def test_an_injected_slowdown_is_detected_with_an_interval_covering_it(rates):
    injected = rates["comparisons"]["injected"]
    for metric in ("tokens/s", "TTFT p50", "TPOT p50", "latency p50"):
        figures = injected[f"prompts: {metric}"]
        assert figures["worse"] >= 0.95 and figures["better"] == 0, (metric, figures)
        assert figures["coverage"] >= 0.90, (metric, figures)
    for metric, figures in injected.items():  # repeats: 3 each, so power is lower; never the wrong way
        if figures["tested"]:
            assert figures["better"] == 0 and figures["coverage"] >= 0.88, (metric, figures)


def test_intervals_cover_the_truth_about_95_percent_of_the_time(rates):
    for name, figures in rates["intervals"].items():
        assert 0.88 <= figures["coverage"] <= 1.0, (name, figures)
    # A/A: the truth is 0 whichever prompts were drawn, so t intervals should cover it about 95% of the
    # time, neither far less (too narrow) nor far more (too wide to find anything).
    for metric, figures in rates["comparisons"]["aa"].items():
        if metric.startswith("repeats") or metric == "prompts: tokens/s":  # t intervals
            assert 0.90 <= figures["coverage"] <= 0.99, (metric, figures)
        elif figures["tested"]:  # the percentile bootstrap of paired percentiles: conservative
            assert figures["coverage"] >= 0.95, (metric, figures)

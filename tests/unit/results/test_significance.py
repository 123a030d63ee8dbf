"""results/significance.py: intervals and tests agree with scipy.stats, say when a sample is too
small, resample exactly, are reproducible, and adjust for many comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from infbench.results import significance as sig
from scipy import stats


def test_mean_interval_is_students_t_over_the_units():
    values = [41.0, 44.5, 43.2, 47.9, 45.1, 42.6]
    interval = sig.mean_interval(values, "prompts")
    low, high = stats.t.interval(0.95, 5, loc=np.mean(values), scale=stats.sem(values))
    assert interval.estimate == pytest.approx(np.mean(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.describe() == "t over 6 prompts" and interval.half_width == pytest.approx((high - low) / 2)


@pytest.mark.parametrize(
    "values, unit, note", [([812.0], "repeats", "1 repeat: too few"), ([3.0, 4.0], "prompts", "2 prompts: too few")]
)
def test_too_small_a_sample_gives_a_note_not_an_interval(values, unit, note):
    interval = sig.mean_interval(values, unit)
    assert interval.low is None and interval.high is None and interval.estimate == pytest.approx(np.mean(values))
    assert interval.note.startswith(note) and interval.describe() == interval.note


def test_paired_comparison_is_ttest_rel_and_its_interval_is_the_difference_in_percent_of_a():
    rng = np.random.default_rng(3)
    a = rng.lognormal(3, 0.3, 40)  # prompts differ a lot ...
    b = a * rng.lognormal(np.log(1.05), 0.02, 40)  # ... B is 5% faster on each, give or take 2%
    change = sig.compare_means(a, b, "prompts", higher_is_better=True, paired=True)
    test = stats.ttest_rel(b, a)
    low, high = test.confidence_interval(0.95)
    assert change.p == pytest.approx(test.pvalue)
    assert (change.low_pct, change.high_pct) == pytest.approx((low / a.mean() * 100, high / a.mean() * 100))
    assert change.verdict == sig.BETTER and change.low_pct < 5 < change.high_pct
    # Unpaired, the prompt-to-prompt spread hides the same difference: pairing is what finds it.
    unpaired = sig.compare_means(a, b, "prompts", higher_is_better=True, paired=False)
    assert unpaired.p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert unpaired.verdict == sig.SAME and unpaired.method.startswith("Welch t over 40 and 40 prompts")


def test_direction_decides_better_or_worse():
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    slower = a * 1.2
    assert sig.compare_means(a, slower, "repeats", higher_is_better=False, paired=False).verdict == sig.WORSE
    assert sig.compare_means(a, slower, "repeats", higher_is_better=True, paired=False).verdict == sig.BETTER


def test_identical_runs_and_too_few_units():
    a = np.array([10.0, 12.0, 11.0, 13.0])
    same = sig.compare_means(a, a.copy(), "prompts", True, paired=True)
    assert (same.change_pct, same.low_pct, same.high_pct, same.p, same.verdict) == (0.0, 0.0, 0.0, 1.0, sig.SAME)
    one = sig.compare_means([500.0], [400.0], "repeats", True, paired=False)
    assert one.verdict == sig.UNKNOWN and one.p is None and one.note.startswith("1 repeat: too few")
    assert one.change_pct == pytest.approx(-20.0)  # the estimate is still shown


def test_resampled_quantiles_are_numpys_quantiles_of_the_resamples():
    rng = np.random.default_rng(5)
    groups = [rng.lognormal(0, 0.5, rng.integers(1, 4)) for _ in range(25)]  # ragged: failed requests
    grouped = sig.Grouped.of(groups)
    draws = rng.integers(0, 25, (60, 25))
    ours = grouped.resampled_quantiles(sig._counts_of(draws, 25), [0.5, 0.9, 0.99])
    for row, drawn in enumerate(draws):
        pooled = np.concatenate([groups[i] for i in drawn])
        assert ours[:, row] == pytest.approx(np.quantile(pooled, [0.5, 0.9, 0.99]), rel=1e-12)


def _groups(rng, n, repeats, scale=1.0):
    base = rng.lognormal(0, 0.3, n)
    return base, {"latency_s": [b * rng.lognormal(0, 0.05, repeats) * scale for b in base]}


def test_quantile_comparison_finds_a_10_percent_slowdown_and_covers_it():
    rng = np.random.default_rng(11)
    base, a = _groups(rng, 100, 3)
    b = {"latency_s": [x * rng.lognormal(0, 0.05, 3) * 1.10 for x in base]}
    wanted = [sig.QuantileMetric("latency_s", 0.5, False), sig.QuantileMetric("latency_s", 0.99, False)]
    p50, p99 = sig.compare_quantiles(a, b, wanted, "prompts", paired=True, seed=1)
    for change in (p50, p99):
        assert change.verdict == sig.WORSE and change.low_pct < 10 < change.high_pct, change
        assert change.method.startswith("bootstrap of p") and "paired over 100 prompts" in change.method
    again = sig.compare_quantiles(a, b, wanted, "prompts", paired=True, seed=1)
    assert again == [p50, p99]  # seeded: the same records give the same bytes


def test_quantile_comparison_of_identical_data_and_of_too_short_a_tail():
    rng = np.random.default_rng(2)
    _, a = _groups(rng, 40, 1)
    wanted = [sig.QuantileMetric("latency_s", 0.5, False), sig.QuantileMetric("latency_s", 0.99, False)]
    p50, p99 = sig.compare_quantiles(a, a, wanted, "prompts", paired=True, seed=0)
    assert (p50.change_pct, p50.p, p50.verdict) == (0.0, 1.0, sig.SAME)
    assert p99.p is None and p99.note == "40 requests: too few for an interval of p99 (at least 300)"


def test_adjust_is_benjamini_hochberg_and_verdicts_follow_it():
    ps = [0.001, 0.03, 0.2, 0.4, 0.5]
    changes = [sig.Change(1.0, 1.1, 10.0, 1.0, 19.0, p, "t", True) for p in ps]
    changes.append(sig.Change(1.0, 1.1, 10.0, None, None, None, "t", True, note="1 repeat: too few"))
    adjusted = sig.adjust(changes)
    expected = stats.false_discovery_control(ps, method="bh")
    assert [c.p_adjusted for c in adjusted[:5]] == pytest.approx(list(expected))
    assert adjusted[5].p_adjusted is None and adjusted[5].verdict == sig.UNKNOWN
    assert adjusted[0].verdict == sig.BETTER
    # 0.03 alone would pass; after adjusting for five tests it does not (0.075), and the cell says so.
    assert adjusted[1].verdict == sig.SAME and adjusted[1].excludes_zero_unadjusted


def test_seed_of_a_cell_is_stable():
    assert sig.seed_of("vllm", "m", "single") == sig.seed_of("vllm", "m", "single") != sig.seed_of("tgi", "m", "single")

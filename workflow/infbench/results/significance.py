"""How sure a figure is, and whether a difference is real: intervals and tests from scipy.stats.

The unit of independence decides everything else:

- **prompts**, in a single-request scenario (concurrency 1). Each request runs alone, so requests
  differ by their prompt (its length, the completion it draws) and by noise. A prompt's figure is
  the mean of its repeats; the interval of a mean is Student's t over prompts (`scipy.stats.t`).
  Every engine gets the same prompts, so two engines (or two runs on one prompt sample) are
  compared *paired by prompt* (`scipy.stats.ttest_rel` on the per-prompt figures), which removes
  the prompt-to-prompt spread from the comparison. Without common prompts: Welch's t
  (`scipy.stats.ttest_ind`, unequal variances). Percentiles (TTFT, TPOT, latency p50/p99):
  `scipy.stats.bootstrap`, percentile method, resampling whole prompts (all of a prompt's repeats
  together, A's and B's together when paired).
- **repeats**, in a load scenario (closed or open loop). Requests share the server and wait for
  each other, so they are not independent; a repeat (a full pass) is. Each repeat gives one figure
  (requests/min, output tokens/s, a percentile); the interval is t over repeats and two sides are
  compared with Welch's t over their repeats.

Too small to mean anything: fewer than MIN_UNITS prompts or repeats (one repeat of a closed loop, two
prompts) gives no interval and no verdict, and a note saying so; a percentile whose tail holds fewer
than MIN_TAIL values (p99 of fewer than 300 requests: a bootstrap of the largest values does not
cover) likewise.

A change is B relative to A, in percent: (B - A) / A * 100. Its interval is the interval of the
difference divided by A's estimate: for t methods, the difference's t interval (this ignores the
uncertainty of A's estimate in the denominator, of relative size sem(A) / A, a few percent of the
interval's width for the noise seen here); for percentiles, the bootstrap distribution of B / A - 1
itself. Verdicts come from p-values: t tests give theirs; a bootstrap's is twice the smaller tail
of its distribution beyond 0 (so the 95% interval excludes 0 exactly when p < 0.05).

Multiple comparisons: a comparison of two runs makes one test per (engine, model, scenario, metric),
hundreds in a study; at 5% each, an A/A comparison would call about one in twenty cells different.
`adjust` applies Benjamini-Hochberg (`scipy.stats.false_discovery_control`) over all tests of one
comparison: verdicts keep the false discovery rate at 5%, and when nothing differs (A/A) the chance
of any false verdict at all is 5%. Intervals stay per-cell 95% intervals (what a reader of one cell
needs); a cell whose interval excludes 0 but whose adjusted p does not pass says so. Within one
run's table, each row's best-versus-runner-up test is its own decision, not adjusted.

Every bootstrap is seeded from the cell's name, so the same records give the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
MIN_UNITS = 3  # prompts or repeats: fewer give no interval (t with 1 degree of freedom spans +-12.7 sd)
MIN_TAIL = 3  # a percentile q needs n * min(q, 1 - q) >= MIN_TAIL values
RESAMPLES = 1000  # bootstrap resamples: the 2.5% and 97.5% points move by ~2% of the width between seeds

BETTER, WORSE, SAME, UNKNOWN = "better", "worse", "no significant difference", "n/a"


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95% interval; no interval (low, high None) when `note` says why."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    unit: str = ""  # prompts | repeats | requests
    method: str = ""  # t | bootstrap
    note: str | None = None

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    def describe(self) -> str:
        """The method in words, e.g. "t over 8 prompts"; or why there is none."""
        return self.note or f"{self.method} over {self.n} {self.unit}"


@dataclass(frozen=True)
class Change:
    """B against A for one metric of one cell; percentages are of A's estimate."""

    a: float | None
    b: float | None
    change_pct: float | None
    low_pct: float | None
    high_pct: float | None
    p: float | None
    method: str
    higher_is_better: bool
    note: str | None = None
    p_adjusted: float | None = None  # set by `adjust`

    @property
    def verdict(self) -> str:
        """better, worse or no significant difference (by the adjusted p once adjusted), n/a without a test."""
        p = self.p if self.p_adjusted is None else self.p_adjusted
        if p is None or self.change_pct is None:
            return UNKNOWN
        if p >= ALPHA or self.change_pct == 0:
            return SAME
        return BETTER if (self.change_pct > 0) == self.higher_is_better else WORSE

    @property
    def excludes_zero_unadjusted(self) -> bool:
        """The cell's own interval excludes 0 although the adjusted verdict is no difference."""
        return self.p is not None and self.p < ALPHA and self.verdict == SAME


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _count(n: int, unit: str) -> str:
    """3 prompts, 1 repeat."""
    return f"{n} {unit.removesuffix('s') if n == 1 else unit}"


def _too_few(n: int, unit: str) -> str:
    return f"{_count(n, unit)}: too few for an interval (at least {MIN_UNITS})"


def mean_interval(values, unit: str) -> Interval:
    """The mean of independent units (per-prompt figures, per-repeat figures) and its t interval."""
    values = _finite(values)
    n = len(values)
    if n == 0:
        return Interval(None, n=0, unit=unit, note=f"no {unit}")
    mean = float(np.mean(values))
    if n < MIN_UNITS:
        return Interval(mean, n=n, unit=unit, method="t", note=_too_few(n, unit))
    if np.ptp(values) == 0:  # no spread at all: the interval is the point
        return Interval(mean, mean, mean, n, unit, "t")
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=stats.sem(values))
    return Interval(mean, float(low), float(high), n, unit, "t")


def _quantile_note(n: int, q: float, unit: str) -> str | None:
    if n * min(q, 1 - q) < MIN_TAIL:
        needed = math.ceil(MIN_TAIL / min(q, 1 - q))
        return f"{_count(n, unit)}: too few for an interval of p{q * 100:g} (at least {needed})"
    return None


def _pct(value: float, base: float) -> float:
    return (value - base) / base * 100.0


def _no_test(a, b, higher: bool, method: str, note: str) -> Change:
    change = _pct(b, a) if a not in (None, 0) and b is not None else None
    return Change(a, b, change, None, None, None, method, higher, note)


def compare_means(a, b, unit: str, higher_is_better: bool, paired: bool) -> Change:
    """Mean of B against mean of A. Paired: a[i] and b[i] are the same prompt (ttest_rel); else
    Welch's t (ttest_ind, unequal variances). The interval is the difference's, in % of A's mean."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
    else:
        a, b = _finite(a), _finite(b)
    mean_a = float(np.mean(a)) if len(a) else None
    mean_b = float(np.mean(b)) if len(b) else None
    method = f"paired t over {len(a)} {unit}" if paired else f"Welch t over {len(a)} and {len(b)} {unit}"
    if mean_a is None or mean_b is None or mean_a == 0:
        return _no_test(mean_a, mean_b, higher_is_better, method, f"no {unit} to compare")
    if min(len(a), len(b)) < MIN_UNITS:
        return _no_test(mean_a, mean_b, higher_is_better, method, _too_few(min(len(a), len(b)), unit))
    if (paired and np.ptp(b - a) == 0) or (not paired and np.ptp(a) == 0 and np.ptp(b) == 0):
        # No spread: equal means are the same; different ones differ beyond doubt.
        diff = mean_b - mean_a
        return Change(
            mean_a,
            mean_b,
            _pct(mean_b, mean_a),
            _pct(mean_b, mean_a),
            _pct(mean_b, mean_a),
            1.0 if diff == 0 else 0.0,
            method,
            higher_is_better,
        )
    result = stats.ttest_rel(b, a) if paired else stats.ttest_ind(b, a, equal_var=False)
    low, high = result.confidence_interval(CONFIDENCE)
    return Change(
        mean_a,
        mean_b,
        _pct(mean_b, mean_a),
        float(low) / mean_a * 100.0,
        float(high) / mean_a * 100.0,
        float(result.pvalue),
        method,
        higher_is_better,
    )


def seed_of(*names: str) -> int:
    """A bootstrap seed from a cell's names: the same cell gives the same resamples on every run."""
    return int.from_bytes(hashlib.sha256("\0".join(names).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Grouped:
    """Values grouped by unit (a prompt's requests over its repeats), sorted once for resampling.

    The q-quantile of a resample (some prompts drawn several times, others not at all) is found
    from counts, without building the resample: each value weighs as often as its prompt was drawn,
    and the order statistics around rank (N - 1) * q are read off the cumulated weights in sorted
    order, interpolated linearly as numpy's default quantile does."""

    values: np.ndarray  # all values, sorted
    group: np.ndarray  # each sorted value's group (prompt) index
    sizes: np.ndarray  # values per group

    @classmethod
    def of(cls, groups: list) -> Grouped:
        arrays = [_finite(g) for g in groups]
        flat = np.concatenate(arrays) if arrays else np.zeros(0)
        owner = np.repeat(np.arange(len(arrays)), [len(g) for g in arrays])
        order = np.argsort(flat, kind="stable")
        return cls(flat[order], owner[order], np.array([len(g) for g in arrays], dtype=np.int64))

    @property
    def n_values(self) -> int:
        return len(self.values)

    @property
    def n_groups(self) -> int:
        """Groups holding at least one value."""
        return int(np.count_nonzero(self.sizes))

    def quantile(self, q: float) -> float | None:
        return float(np.quantile(self.values, q)) if self.n_values else None

    def resampled_quantiles(self, counts: np.ndarray, qs: list[float]) -> np.ndarray:
        """counts: (resamples, groups) draws per group; (len(qs), resamples) quantiles of the resamples."""
        cumulated = np.cumsum(counts[:, self.group], axis=1, dtype=np.int32)
        total = cumulated[:, -1].astype(np.int64)
        out = np.empty((len(qs), len(counts)))
        for i, q in enumerate(qs):
            rank = (total - 1) * q
            below = np.floor(rank).astype(np.int64)
            # The k-th smallest (0-based) of a resample: the first sorted value whose cumulated weight passes k.
            lower = self.values[np.argmax(cumulated > below[:, None], axis=1)]
            upper = self.values[np.argmax(cumulated > np.minimum(below + 1, total - 1)[:, None], axis=1)]
            out[i] = lower + (upper - lower) * (rank - below)
        return out


def _counts_of(index: np.ndarray, n_groups: int) -> np.ndarray:
    """Resampled group indices (resamples, draws) as counts per group (resamples, n_groups)."""
    index = np.atleast_2d(index)
    offsets = (np.arange(index.shape[0]) * n_groups)[:, None]
    counts = np.bincount((index + offsets).ravel(), minlength=index.shape[0] * n_groups)
    return counts.reshape(-1, n_groups).astype(np.int32)


@dataclass(frozen=True)
class QuantileMetric:
    column: str
    q: float
    higher_is_better: bool


def compare_quantiles(
    a_groups: dict[str, list],
    b_groups: dict[str, list],
    wanted: list[QuantileMetric],
    unit: str,
    paired: bool,
    seed: int,
) -> list[Change]:
    """Quantiles of B's values against A's, one Change per wanted metric: bootstrap of B / A - 1,
    percentile interval, every metric from the same resamples (one bootstrap per cell).

    groups[column][i] holds unit i's values of that column. Paired: unit i is the same prompt on
    both sides and is drawn for both together; else each side's units are resampled on their own."""
    columns = list(dict.fromkeys(m.column for m in wanted))
    a = {c: Grouped.of(a_groups[c]) for c in columns}
    b = {c: Grouped.of(b_groups[c]) for c in columns}
    changes: dict[int, Change] = {}
    tested = []
    for i, metric in enumerate(wanted):
        ga, gb = a[metric.column], b[metric.column]
        name = f"p{metric.q * 100:g}"
        method = (
            f"bootstrap of {name}, paired over {ga.n_groups} {unit}"
            if paired
            else f"bootstrap of {name} over {ga.n_groups} and {gb.n_groups} {unit}"
        )
        qa, qb = ga.quantile(metric.q), gb.quantile(metric.q)
        if qa is None or qb is None or qa == 0:
            changes[i] = _no_test(qa, qb, metric.higher_is_better, method, f"no {unit} to compare")
            continue
        fewest = min(ga.n_groups, gb.n_groups)
        note = (
            _too_few(fewest, unit)
            if fewest < MIN_UNITS
            else _quantile_note(min(ga.n_values, gb.n_values), metric.q, "requests")
        )
        if note:
            changes[i] = _no_test(qa, qb, metric.higher_is_better, method, note)
            continue
        changes[i] = Change(qa, qb, _pct(qb, qa), None, None, None, method, metric.higher_is_better)
        tested.append(i)
    if tested:
        bounds = _bootstrap_ratios(a, b, [wanted[i] for i in tested], paired, seed)
        for i, (low, high, tail) in zip(tested, bounds, strict=True):
            p = 1.0 if changes[i].a == changes[i].b else min(1.0, 2 * tail)  # twice the smaller tail beyond 0
            changes[i] = replace(changes[i], low_pct=low * 100, high_pct=high * 100, p=p)
    return [changes[i] for i in range(len(wanted))]


def _bootstrap_ratios(
    a: dict[str, Grouped], b: dict[str, Grouped], metrics: list[QuantileMetric], paired: bool, seed: int
) -> list[tuple[float, float, float]]:
    """One bootstrap of B / A - 1 for every metric of a cell: per metric its interval's bounds and
    the share of the bootstrap distribution on the smaller side of 0."""
    any_a, any_b = next(iter(a.values())), next(iter(b.values()))
    n_a, n_b = len(any_a.sizes), len(any_b.sizes)
    by_column: dict[str, list[int]] = {}
    for k, metric in enumerate(metrics):
        by_column.setdefault(metric.column, []).append(k)

    def ratios(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
        out = np.empty((len(metrics), len(counts_a)))
        for column, ks in by_column.items():
            qs = [metrics[k].q for k in ks]
            out[ks] = b[column].resampled_quantiles(counts_b, qs) / a[column].resampled_quantiles(counts_a, qs) - 1.0
        return out

    if paired:
        data = (np.arange(n_a),)

        def statistic(index, axis=-1):
            counts = _counts_of(index, n_a)
            return _squeeze(ratios(counts, counts), index)
    else:
        data = (np.arange(n_a), np.arange(n_b))

        def statistic(index_a, index_b, axis=-1):
            return _squeeze(ratios(_counts_of(index_a, n_a), _counts_of(index_b, n_b)), index_a)

    result = stats.bootstrap(
        data,
        statistic,
        n_resamples=RESAMPLES,
        method="percentile",
        vectorized=True,
        paired=paired,
        confidence_level=CONFIDENCE,
        rng=np.random.default_rng(seed),
    )
    lows, highs = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    distribution = np.atleast_2d(result.bootstrap_distribution)
    return [
        (float(lows[k]), float(highs[k]), float(min(np.mean(distribution[k] <= 0), np.mean(distribution[k] >= 0))))
        for k in range(len(metrics))
    ]


def _squeeze(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """scipy calls the statistic with one sample (1-D: a value per metric) or a batch (2-D)."""
    return values[:, 0] if np.ndim(index) == 1 else values


def adjust(changes: list[Change]) -> list[Change]:
    """Benjamini-Hochberg over every tested change of one comparison (see the module doc); untested
    changes (p None) are left as they are."""
    tested = [i for i, c in enumerate(changes) if c.p is not None]
    if not tested:
        return list(changes)
    adjusted = stats.false_discovery_control([changes[i].p for i in tested], method="bh")
    out = list(changes)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = replace(changes[i], p_adjusted=float(p))
    return out

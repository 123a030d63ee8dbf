"""The exact-statistics engine under the metrics: grouped percentiles and means of float columns,
to the last bit, with polars doing the bulk work (measure/metrics.py defines what is measured).

Percentiles interpolate like numpy's default (`recordmath._interpolated`, the same code the
per-record helpers use), found without sorting all values; means are exactly rounded sums over n
(as statistics.fmean) and the sd is the correctly rounded root of the exact sample variance (as
statistics.stdev), computed from exact integer sums of the floats' mantissas.
"""

from __future__ import annotations

import math
from fractions import Fraction

import polars as pl

from infbench.measure.recordmath import _interpolated, _rank

QUANTILES = (50, 90, 99)


# Percentile selection: values go to buckets by the top bits of an order-preserving integer image of
# the float (sign, exponent and BUCKET_BITS of mantissa: buckets 2^-BUCKET_BITS wide, relatively), so
# that only the few buckets holding a wanted rank are ever sorted. A group and a bucket make one
# Int64 key (group * 2^20 + bucket), the cheapest thing for polars to group by.
BUCKET_BITS = 8
_BUCKET = 1 << (52 - BUCKET_BITS)  # the bucket of a value: its order key // _BUCKET, in [-2^19, 2^19)
_GROUP = 1 << 20


def _order_key(value: pl.Expr) -> pl.Expr:
    """An Int64 that orders as the float does: a positive float's bits already do; a negative one's
    magnitude bits are flipped, so that a larger magnitude gives a smaller integer."""
    bits = value.reinterpret(dtype=pl.Int64)
    return pl.when(bits >= 0).then(bits).otherwise(bits ^ pl.lit(0x7FFF_FFFF_FFFF_FFFF, pl.Int64))


def grouped_percentiles(samples: pl.LazyFrame, qs=QUANTILES) -> pl.DataFrame:
    """Percentiles p{q} of `value` per integer `group`, each row counting `weight` times (ITL: a
    chunk's k tokens), as `_interpolated` gives them from the sorted values: exactly, without
    sorting or repeating all the values.

    The rank of q among a group's n weighted values and the interpolation are computed in Python,
    as in `percentile`; polars finds the value at each wanted position: a histogram of weights per
    bucket (cumulated in bucket order) says which bucket holds the position, and only those buckets'
    values are sorted and cumulated to pick it."""
    value, weight, key = pl.col("value"), pl.col("weight"), pl.col("key")
    lf = (
        samples.select(
            value, weight, key=pl.col("group").cast(pl.Int64) * _GROUP + _order_key(value) // _BUCKET + _GROUP // 2
        )
        .collect()
        .lazy()
    )
    hist = (
        lf.group_by(key)
        .agg(weight.sum())
        .sort(key)
        .with_columns(group=key // _GROUP)
        .with_columns(end=weight.cum_sum().over("group"))
        .with_columns(start=pl.col("end") - weight)
        .collect()
    )
    totals = hist.group_by("group", maintain_order=True).agg(n=pl.col("end").max())
    wanted = []  # (group, q, position): the floor and ceiling of each rank
    for group, n in totals.iter_rows():
        for q in qs:
            _, low, high = _rank(n, q)
            wanted += [(group, q, low), (group, q, high)]
    positions = (
        pl.DataFrame(wanted, schema={"group": pl.Int64, "q": pl.Float64, "position": pl.Int64}, orient="row")
        .sort("position")
        .join_asof(
            hist.select("group", "key", "start").sort("start"),
            left_on="position",
            right_on="start",
            by="group",
            check_sortedness=False,
        )
        .with_columns(offset=pl.col("position") - pl.col("start"))
    )
    in_bucket = (
        lf.filter(key.is_in(positions["key"].unique().implode()))
        .sort(key, value)
        .with_columns(after=weight.cum_sum().over(key))
        .select(key, value, offset=pl.col("after") - weight)
        .collect()
    )
    picked = positions.sort("offset").join_asof(in_bucket.sort("offset"), on="offset", by="key", check_sortedness=False)
    found = {
        (group, q, position): v
        for group, q, position, v in picked.select("group", "q", "position", "value").iter_rows()
    }
    rows = []
    for group, n in totals.iter_rows():
        row = {"group": group}
        for q in qs:
            _, low, high = _rank(n, q)
            row[f"p{q}"] = _interpolated(_Known({low: found[(group, q, low)], high: found[(group, q, high)]}, n), q)
        rows.append(row)
    return pl.DataFrame(rows, schema={"group": pl.Int64, **{f"p{q}": pl.Float64 for q in qs}})


class _Known(dict):
    """The sorted values `_interpolated` reads, where only the two it reads are known."""

    def __init__(self, values: dict[int, float], count: int):
        super().__init__(values)
        self.count = count

    def __len__(self) -> int:
        return self.count


def weighted_percentiles(values: pl.Series, weights: pl.Series, qs=QUANTILES) -> dict[float, float | None]:
    """grouped_percentiles of one group."""
    if values.is_empty():
        return dict.fromkeys(qs)
    frame = pl.DataFrame({"group": pl.repeat(0, len(values), eager=True), "value": values, "weight": weights})
    row = grouped_percentiles(frame.lazy(), qs).row(0, named=True)
    return {q: row[f"p{q}"] for q in qs}


def exact_moments(samples: pl.LazyFrame, keys: list[str]) -> dict[tuple, tuple[int, Fraction, Fraction]]:
    """Per group of `keys`: (n, sum, sum of squares) of the float column `value`, as exact fractions
    (each float is mantissa x 2^exponent: integer sums per exponent, added up in Python)."""
    bits = pl.col("value").reinterpret(dtype=pl.Int64)
    magnitude = bits & pl.lit(0x7FFF_FFFF_FFFF_FFFF, pl.Int64)
    biased = magnitude // (1 << 52)
    mantissa = (magnitude & pl.lit((1 << 52) - 1, pl.Int64)) + pl.when(biased > 0).then(1 << 52).otherwise(0)
    signed = pl.when(bits < 0).then(-mantissa).otherwise(mantissa).cast(pl.Int128)
    partials = (
        samples.with_columns(exponent=pl.max_horizontal(biased, 1) - 1075, m=signed)
        .group_by(*keys, "exponent")
        .agg(n=pl.len(), sx=pl.col("m").sum(), sxx=(pl.col("m") * pl.col("m")).sum())
        .collect()
    )
    sums: dict = {}
    for row in partials.iter_rows(named=True):
        entry = sums.setdefault(tuple(row[k] for k in keys), [0, Fraction(0), Fraction(0)])
        entry[0] += row["n"]
        entry[1] += Fraction(row["sx"]) * Fraction(2) ** row["exponent"]
        entry[2] += Fraction(row["sxx"]) * Fraction(2) ** (2 * row["exponent"])
    return {key: (n, sx, sxx) for key, (n, sx, sxx) in sums.items()}


def exact_sd(n: int, sx: Fraction, sxx: Fraction) -> float:
    """The sample sd (n > 1) from exact moments, correctly rounded."""
    return _sqrt_of_fraction((n * sxx - sx * sx) / n / (n - 1))


def _sqrt_of_fraction(value: Fraction) -> float:
    """The float nearest to sqrt(value): an integer root with 60+ bits, its last bit set when inexact
    (round to odd), then one correctly rounded division."""
    num, den = value.numerator, value.denominator
    shift = max(0, 64 - (num.bit_length() - den.bit_length()) // 2)
    scaled, remainder = divmod(num << (2 * shift), den)
    root = math.isqrt(scaled)
    if remainder or root * root != scaled:
        root |= 1
    return root / (1 << shift)

"""Prometheus text from an engine's metrics endpoint: parsed with prometheus_client's parser, summed
over label sets, and differenced between a scrape before a scenario and one after it.

Counters and histograms only ever grow while a server runs; one that went down between two scrapes
means the server restarted (or its metrics were reset), and nothing differenced across that is
meaningful: `delta` then says so instead of returning a number.

Percentiles from a histogram are interpolated linearly within the bucket that holds them, as
Prometheus's histogram_quantile() does; they are estimates, exact only to the bucket bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


class Unparseable(ValueError):
    """The text is not Prometheus exposition format (an HTML error page, garbage, a truncated body)."""


@dataclass(frozen=True)
class Sample:
    name: str  # the sample's own name: vllm:generation_tokens_total, vllm:e2e_request_latency_seconds_bucket
    labels: tuple[tuple[str, str], ...]
    value: float


class Samples:
    """Every sample of one scrape, looked up by sample name."""

    def __init__(self, samples: list[Sample]):
        self.by_name: dict[str, list[Sample]] = {}
        for sample in samples:
            self.by_name.setdefault(sample.name, []).append(sample)

    @classmethod
    def parse(cls, text: str) -> Samples:
        try:
            samples = [
                Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            ]
        except (ValueError, TypeError, IndexError, KeyError) as err:  # the parser's ways of refusing
            raise Unparseable(f"not Prometheus text: {str(err)[:120]}") from None
        return cls(samples)

    def _named(self, name: str) -> list[Sample] | None:
        """The samples of `name`; a counter is found with or without its _total suffix (the parser
        adds it to a counter that lacks it, as TGI's do)."""
        for candidate in (name, f"{name}_total", name.removesuffix("_total")):
            if candidate in self.by_name:
                return self.by_name[candidate]
        return None

    def has(self, name: str) -> bool:
        return self._named(name) is not None

    def total(self, name: str, exclude: dict[str, tuple[str, ...]] | None = None) -> float | None:
        """The sum over every label set of `name` (None: not exported), leaving out label sets whose
        label takes one of the excluded values (vLLM's request_success{finished_reason="abort"})."""
        samples = self._named(name)
        if samples is None:
            return None
        return sum(s.value for s in samples if not _excluded(s.labels, exclude))

    def histogram(self, name: str) -> Histogram | None:
        """The histogram `name` (its _bucket, _count and _sum samples), summed over label sets that
        differ in anything but `le` (several engines, several models)."""
        buckets = self.by_name.get(f"{name}_bucket")
        if not buckets:
            return None
        cumulative: dict[float, float] = {}
        for sample in buckets:
            le = dict(sample.labels).get("le")
            if le is None:
                continue
            bound = float(le)
            cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
        bounds = sorted(cumulative)
        return Histogram(
            bounds=tuple(bounds),
            cumulative=tuple(cumulative[b] for b in bounds),
            count=self.total(f"{name}_count") or cumulative.get(math.inf, 0.0),
            sum=self.total(f"{name}_sum") or 0.0,
        )


def _excluded(labels: tuple[tuple[str, str], ...], exclude: dict[str, tuple[str, ...]] | None) -> bool:
    return bool(exclude) and any(exclude.get(key) and value in exclude[key] for key, value in labels)


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (the last bound is +Inf), with the observations' count and sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    sum: float

    def minus(self, before: Histogram) -> Histogram:
        """What was observed between two scrapes; bounds must agree (a restart may change them)."""
        if before.bounds != self.bounds:
            raise CounterReset("histogram bucket bounds changed between the scrapes")
        diff = tuple(a - b for a, b in zip(self.cumulative, before.cumulative, strict=True))
        if any(d < 0 for d in diff) or self.count < before.count:
            raise CounterReset("histogram counts went down")
        return Histogram(self.bounds, diff, self.count - before.count, self.sum - before.sum)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), interpolated linearly within its bucket, as histogram_quantile():
        the first bucket starts at 0 (or at its bound if that is negative); a quantile in the +Inf
        bucket is the largest finite bound. None when nothing was observed."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        total = self.cumulative[-1] if self.cumulative else 0.0
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= rank and count > lower_count:
                if math.isinf(bound):
                    return lower_bound  # open-ended top bucket: its lower edge is all we know
                if bound <= 0 and lower_count == 0:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound

    def to_dict(self) -> dict:
        return {
            "bounds": [_bound_text(b) for b in self.bounds],
            "cumulative": list(self.cumulative),
            "count": self.count,
            "sum": self.sum,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        return cls(tuple(float(b) for b in data["bounds"]), tuple(data["cumulative"]), data["count"], data["sum"])


def _bound_text(bound: float) -> str | float:
    return "+Inf" if math.isinf(bound) else bound


class CounterReset(ValueError):
    """A counter or histogram went down between two scrapes: the server restarted or reset it."""


def counter_delta(
    before: Samples, after: Samples, names: tuple[str, ...], exclude: dict[str, tuple[str, ...]] | None = None
) -> float | None:
    """The growth of the sum of counters `names` between two scrapes; None when one is not exported.
    Raises CounterReset when any of them went down."""
    total = 0.0
    for name in names:
        first, last = before.total(name, exclude), after.total(name, exclude)
        if first is None or last is None:
            return None
        if last < first:
            raise CounterReset(f"{name} went down from {first:g} to {last:g}")
        total += last - first
    return total


def histogram_delta(before: Samples, after: Samples, name: str) -> Histogram | None:
    """What histogram `name` observed between two scrapes; None when it is not exported.
    Raises CounterReset when its counts went down."""
    first, last = before.histogram(name), after.histogram(name)
    if first is None or last is None:
        return None
    try:
        return last.minus(first)
    except CounterReset as err:
        raise CounterReset(f"{name}: {err}") from None

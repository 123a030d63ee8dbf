"""What the server saw of one scenario: its own counters, histograms and gauges, read from its metrics
endpoint just before the first request and just after the last, beside the client's records.

An engine's metric names are given by a MetricMap (one per engine kind and version, all of them in
engines/metricmaps.py); this module turns two scrapes and the gauge samples in between into one
typed record per scenario, `ServerMetrics`, written to the run's raw folder as
metrics/{scenario}.json beside the raw scrapes (metrics/{scenario}.before.prom, .after.prom) and
the samples (metrics/{scenario}.samples.jsonl).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infbench.fileio import write_json_atomic
from infbench.measure.promtext import CounterReset, Histogram, Samples, counter_delta, histogram_delta

# Histogram roles the tables set beside the client's own figures.
LATENCY_ROLES = ("ttft", "queue", "prefill", "decode", "e2e", "itl")
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class MetricMap:
    """One engine's metric names, and the version they were checked on (names drift between versions).

    Counters are given as tuples of sample names whose growth is summed (llama.cpp counts processed and
    cached prompt tokens apart); a role left empty is a metric the engine does not export."""

    engine: str  # the engine kind
    checked_on: str  # the version whose metrics these names were read from, and how
    path: str = "/metrics"
    enabled_by: str = "on by default"  # how the bench job turns the endpoint on
    generation_tokens: tuple[str, ...] = ()
    prompt_tokens: tuple[str, ...] = ()  # every prompt token, cached or not
    cached_prompt_tokens: tuple[str, ...] = ()
    requests_ok: tuple[str, ...] = ()  # requests that finished well
    requests_ok_exclude: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label values that are failures
    preemptions: tuple[str, ...] = ()
    prefix_cache_queries: tuple[str, ...] = ()  # tokens looked up in the prefix cache
    prefix_cache_hits: tuple[str, ...] = ()  # of those, tokens found
    running: str | None = None  # gauges, sampled about once a second
    waiting: str | None = None
    kv_usage: str | None = None  # fraction of the KV cache in use, 0..1
    histograms: dict[str, str] = field(default_factory=dict)  # role (LATENCY_ROLES) -> histogram name
    notes: tuple[str, ...] = ()  # what a reader must know to read these figures

    @property
    def gauges(self) -> dict[str, str]:
        """role -> gauge name, for the sampler."""
        pairs = (("running", self.running), ("waiting", self.waiting), ("kv_usage", self.kv_usage))
        return {role: name for role, name in pairs if name}

    def counters(self) -> dict[str, tuple[tuple[str, ...], dict]]:
        """role -> (counter names summed, excluded label values)."""
        roles = {
            "generation_tokens": (self.generation_tokens, {}),
            "prompt_tokens": (self.prompt_tokens, {}),
            "cached_prompt_tokens": (self.cached_prompt_tokens, {}),
            "requests_ok": (self.requests_ok, self.requests_ok_exclude),
            "preemptions": (self.preemptions, {}),
            "prefix_cache_queries": (self.prefix_cache_queries, {}),
            "prefix_cache_hits": (self.prefix_cache_hits, {}),
        }
        return {role: spec for role, spec in roles.items() if spec[0]}


@dataclass
class GaugePeaks:
    """The largest value each gauge took in the samples, and how many samples there were."""

    samples: int = 0
    running_max: float | None = None
    waiting_max: float | None = None
    kv_usage_max: float | None = None
    failed_samples: int = 0  # scrapes that timed out or could not be read


@dataclass
class ServerMetrics:
    """One scenario as the server saw it. `status`: ok | n/a (no endpoint) | missing (a scrape failed)
    | invalid (a counter went backwards: a restart) ; `note` says what, for the cell and details.md."""

    engine: str
    model: str
    scenario: str
    status: str
    note: str | None = None
    checked_on: str | None = None  # the MetricMap's version
    mapping_notes: list[str] = field(default_factory=list)  # what to know to read this engine's figures
    url: str | None = None
    window_s: float | None = None  # after-scrape time minus before-scrape time
    counters: dict[str, float | None] = field(default_factory=dict)  # role -> growth over the scenario
    histograms: dict[str, dict] = field(default_factory=dict)  # role -> Histogram.to_dict() of the growth
    gauges: GaugePeaks = field(default_factory=GaugePeaks)
    energy: dict | None = None  # energy.EnergyResult.to_dict(), or None when not asked for
    sampler_cpu_s: float | None = None  # the sampler process's CPU time: what reading the gauges cost

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ServerMetrics:
        data = dict(data)
        data["gauges"] = GaugePeaks(**data.get("gauges") or {})
        return cls(**data)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> ServerMetrics:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def histogram(self, role: str) -> Histogram | None:
        data = self.histograms.get(role)
        return Histogram.from_dict(data) if data else None

    def quantiles(self, role: str) -> dict[float, float | None]:
        """p50/p90/p99 of a latency role, interpolated within the histogram's buckets."""
        hist = self.histogram(role)
        return {q: hist.quantile(q) if hist else None for q in QUANTILES}

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        queries = self.counters.get("prefix_cache_queries")
        hits = self.counters.get("prefix_cache_hits")
        if not queries or hits is None:
            return None
        return hits / queries


def deltas(
    mapping: MetricMap, before: Samples, after: Samples
) -> tuple[dict[str, float | None], dict[str, dict], str | None]:
    """Counter and histogram growth between two scrapes, by role. A counter that went backwards
    makes every delta void (the third value says which): one reset spoils the whole window."""
    counters: dict[str, float | None] = {}
    histograms: dict[str, dict] = {}
    try:
        for role, (names, exclude) in mapping.counters().items():
            counters[role] = counter_delta(before, after, names, exclude)
        for role, name in mapping.histograms.items():
            hist = histogram_delta(before, after, name)
            if hist is not None:
                histograms[role] = hist.to_dict()
    except CounterReset as err:
        return {}, {}, f"counter went backwards ({err}): the server restarted or reset its metrics; deltas void"
    return counters, histograms, None


def gauge_peaks(samples: list[dict], mapping: MetricMap) -> GaugePeaks:
    """Peaks over the sampler's rows ({"t": ..., "values": {role: value}} or {"error": ...})."""
    peaks = GaugePeaks()
    for row in samples:
        if row.get("error"):
            peaks.failed_samples += 1
            continue
        peaks.samples += 1
        for role in mapping.gauges:
            value = (row.get("values") or {}).get(role)
            if value is None:
                continue
            current = getattr(peaks, f"{role}_max")
            setattr(peaks, f"{role}_max", value if current is None else max(current, value))
    return peaks


def gauge_values(samples: Samples, mapping: MetricMap) -> dict[str, float | None]:
    """The mapped gauges' current values (summed over label sets), by role."""
    return {role: samples.total(name) for role, name in mapping.gauges.items()}

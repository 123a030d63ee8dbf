"""Scenario kinds, one class each, registered by kind: single, throughput, open_loop, sweep.

A scenario owns what it sends (its requests), how (its load shape and runner) and where its summary
goes (which study table and plot, and whether it has steps). The bench job, the tables and the plots
ask the scenario's class; nothing else switches on the kind string.

`Scenario(name=..., kind=..., ...)` builds the registered class of that kind, so a spec file's
scenario (a dict with its kind) reads back as the right class. Defaults come from the schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from infbench.defaults import schema_default
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import (
    LoadShape,
    StepLoad,
    StepWindow,
    SweepPlan,
    arrival_offsets,
    auto_workers,
    best_step,
    run_load,
    run_sweep,
)
from infbench.measure.records import RequestRecord
from infbench.measure.runners import ProgressCallback

log = logging.getLogger("infbench.measure.scenarios")

SCENARIO_KINDS: dict[str, type[Scenario]] = {}


def _default(key: str):
    return schema_default(f"scenarios.*.{key}")


def _register(cls: type[Scenario]) -> type[Scenario]:
    SCENARIO_KINDS[cls.__dataclass_fields__["kind"].default] = cls
    return cls


# Warm-up requests never send a measured prompt: a prompt sent before its measurement would be served
# from the engine's prefix cache. These share nothing with any prompt sample beyond the chat template.
WARMUP_SUBJECTS = (
    "the water cycle",
    "how a bicycle gear works",
    "why leaves change colour in autumn",
    "the rules of chess for a beginner",
)


def warmup_requests(count: int) -> list[ChatRequest]:
    """`count` warm-up requests (none of the sample's prompts); send them cold (RunContext.cache) so
    they leave nothing to reuse."""
    return [
        ChatRequest(
            request_id=f"warmup-{i:04d}",
            prompt_id=f"warmup-{i:04d}",
            messages=[
                {
                    "role": "user",
                    "content": f"Warm-up request {i}: in three short paragraphs, explain "
                    f"{WARMUP_SUBJECTS[i % len(WARMUP_SUBJECTS)]} to a curious twelve-year-old.",
                }
            ],
        )
        for i in range(count)
    ]


def scenario_class(kind: str) -> type[Scenario]:
    """The class registered for a kind; a clear error for an unknown one."""
    try:
        return SCENARIO_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown scenario kind {kind!r} (one of {', '.join(SCENARIO_KINDS)})") from None


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # single | throughput (closed loop) | open_loop | sweep
    concurrency: int = _default("concurrency")
    requests: int | None = None  # a sweep: per step
    workers: int | str = _default("workers")  # client processes, or "auto"
    # cold: every request asks the engine not to serve it from a prefix an earlier request computed
    # (RequestSettings.cold_fields / cold_salt_field, the engine's own spelling); warm: as the engine does
    cache: str = _default("cache")

    loop: ClassVar[str] = "closed"  # closed: C streams back to back | open: sends at planned times
    # Where the summary goes (asked by the tables and the plots).
    in_speed_table: ClassVar[bool] = False  # inference_speed.md: tokens/s at concurrency 1
    in_throughput_table: ClassVar[bool] = False  # throughput.md: requests/min under a closed loop
    in_load_plot: ClassVar[bool] = False  # throughput.png: requests/min and tokens/s at a fixed load
    has_steps: ClassVar[bool] = False  # one summary row per step (a sweep's rates) besides the whole

    def __new__(cls, *args, **fields):
        if cls is Scenario:  # Scenario(kind=...) builds that kind's class
            cls = scenario_class(fields["kind"] if "kind" in fields else args[1])
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if SCENARIO_KINDS.get(self.kind) is not type(self):
            raise ValueError(f"scenario {self.name}: kind {self.kind!r} does not match {type(self).__name__}")

    @staticmethod
    def from_config(config: dict, name: str) -> Scenario:
        """The scenario `name` of a validated config (defaults filled from the schema)."""
        settings = config["scenarios"][name]
        return scenario_class(settings["kind"]).from_settings(name, settings, config["prompts"]["n"])

    @classmethod
    def check_settings(cls, name: str, settings: dict) -> None:
        """Checks the schema cannot express, on a validated entry with defaults: ValueError
        "scenarios.NAME.KEY: why" (the config adds "config error at")."""

    @staticmethod
    def from_dict(data: dict) -> Scenario:
        """A spec file's scenario: its kind's class, from the keys that class has (a spec written by
        an older version may hold keys of other kinds, all at their defaults)."""
        cls = scenario_class(data["kind"])
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    @classmethod
    def from_settings(cls, name: str, settings: dict, sample_size: int) -> Scenario:
        concurrency = settings["concurrency"]
        requests = settings.get("requests") or max(2 * concurrency, sample_size)
        own = {
            key: settings[key]
            for key in cls.__dataclass_fields__
            if key in settings and key not in ("kind", "requests", "concurrency")
        }  # this kind's keys only
        return cls(name=name, concurrency=concurrency, requests=requests, **own)

    # --- what it sends ----------------------------------------------------------------------------

    def request_count(self, prompts) -> int:
        return self.requests

    def build_requests(self, prompts, step: int | None = None) -> list[ChatRequest]:
        """The sample cycled to the request count (a sweep: per step, with the step in the id)."""
        prefix = self.name if step is None else f"{self.name}-s{step:02d}"
        return [
            ChatRequest(
                request_id=f"{prefix}-{i:04d}",
                prompt_id=prompts[i % len(prompts)].id,
                messages=list(prompts[i % len(prompts)].messages),
            )
            for i in range(self.request_count(prompts))
        ]

    def _workers_for(self, streams: int) -> int:
        return auto_workers(streams) if self.workers == "auto" else int(self.workers)

    def load_shape(self, count: int) -> LoadShape:
        """How its requests are sent: a closed loop at its concurrency (open loops override)."""
        return LoadShape(kind="closed", concurrency=self.concurrency, workers=self._workers_for(self.concurrency))

    # --- how it runs ------------------------------------------------------------------------------

    def run_context(self, engine: str, model: str) -> RunContext:
        return RunContext(
            engine=engine, model=model, scenario=self.name, concurrency=self.concurrency, cache=self.cache
        )

    @property
    def load_label(self) -> str:
        return f"c={self.concurrency}"

    def progress_total(self, prompts) -> int | None:
        """Requests the progress bar counts to (None: not known ahead)."""
        return self.request_count(prompts)

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, on_done: ProgressCallback | None = None
    ) -> list[RequestRecord]:
        requests = self.build_requests(prompts)
        return run_load(url, requests, settings, ctx, self.load_shape(len(requests)), on_done=on_done)

    # --- how it is summarized ---------------------------------------------------------------------

    @classmethod
    def steps(cls, records: list[RequestRecord]) -> list[tuple[float, list[RequestRecord]]]:
        """Its steps' records by step rate (only a kind with steps has any)."""
        return []


@_register
@dataclass(frozen=True)
class Single(Scenario):
    """Each prompt alone, one after the other: the study's inference speed (tokens/s)."""

    kind: str = "single"
    concurrency: int = 1
    in_speed_table: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, name: str, settings: dict, sample_size: int) -> Scenario:
        return cls(name=name)  # every prompt once at concurrency 1, whatever else the entry says

    def request_count(self, prompts) -> int:
        return len(prompts)


@_register
@dataclass(frozen=True)
class Throughput(Scenario):
    """A closed loop: `concurrency` streams back to back (requests/min)."""

    kind: str = "throughput"
    in_throughput_table: ClassVar[bool] = True
    in_load_plot: ClassVar[bool] = True


class TimedSteps:
    """Keys and helpers of the kinds whose steps are sized by duration (open_loop, sweep, capacity)."""

    duration_s: float
    warmup_s: float
    saturation_margin: float

    def window(self) -> StepWindow:
        return StepWindow(self.duration_s, self.warmup_s, self.saturation_margin)

    def step_load(self, rate: int) -> StepLoad:
        """Its steps' window and arrivals, with client processes for `rate` requests/s."""
        return StepLoad(self.window(), self.arrival, self.burstiness, self.seed, self._workers_for(rate))

    @classmethod
    def check_settings(cls, name: str, settings: dict) -> None:
        if "requests" in settings:
            raise ValueError(
                f"scenarios.{name}.requests: a {settings['kind']} step runs for duration_s "
                f"({settings['duration_s']:g} s), not a request count: remove requests"
            )
        if settings["duration_s"] <= settings["warmup_s"]:
            raise ValueError(
                f"scenarios.{name}.duration_s: {settings['duration_s']:g} s is not longer than its warmup_s "
                f"({settings['warmup_s']:g} s), whose requests are not counted"
            )

    def timed_requests(self, prompts, step: int | None = None) -> Callable[[int], list[ChatRequest]]:
        """A step's n requests: the sample cycled to n (ids carry the step)."""
        return lambda n: replace(self, requests=n).build_requests(prompts, step)


@_register
@dataclass(frozen=True)
class OpenLoop(TimedSteps, Scenario):
    """Sends at planned times drawn in advance (mean `rate`/s) for `duration_s`, whatever is in flight."""

    kind: str = "open_loop"
    rate: float | None = None  # requests/s
    arrival: str = _default("arrival")  # poisson | gamma | constant
    burstiness: float = _default("burstiness")  # gamma shape
    seed: int = _default("seed")
    duration_s: float = _default("duration_s")
    warmup_s: float = _default("warmup_s")
    saturation_margin: float = _default("saturation_margin")
    loop: ClassVar[str] = "open"
    in_load_plot: ClassVar[bool] = True

    def load_shape(self, count: int) -> LoadShape:
        offsets = arrival_offsets(count, self.rate, self.arrival, self.burstiness, self.seed)
        return LoadShape(kind="open", offsets_s=tuple(offsets), workers=self._workers_for(int(self.rate)))

    def run_context(self, engine: str, model: str) -> RunContext:
        return replace(super().run_context(engine, model), rate=self.rate)

    @property
    def load_label(self) -> str:
        return f"rate={self.rate:g}/s for {self.duration_s:g} s"

    def progress_total(self, prompts) -> int | None:
        return None  # as many as the schedule draws within the duration

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, on_done: ProgressCallback | None = None
    ) -> list[RequestRecord]:
        step = self.step_load(int(self.rate)).run(
            url, self.timed_requests(prompts), settings, ctx, self.rate, on_done=on_done
        )
        _log_saturation(self.name, step.rate, step.offered_rps, step.achieved_rps, step.saturated)
        return step.records


@_register
@dataclass(frozen=True)
class Sweep(TimedSteps, Scenario):
    """Open loops at rising rates, to the highest rate whose TTFT and TPOT p99 meet the SLOs."""

    kind: str = "sweep"
    arrival: str = _default("arrival")
    burstiness: float = _default("burstiness")
    seed: int = _default("seed")
    rates: list[float] = field(default_factory=list)  # explicit, else doubling from start_rate then bisection
    start_rate: float = _default("start_rate")
    max_rate: float = _default("max_rate")
    refine_steps: int = _default("refine_steps")
    slo_ttft_s: float | None = None  # on p99
    slo_tpot_s: float | None = None
    duration_s: float = _default("duration_s")
    warmup_s: float = _default("warmup_s")
    saturation_margin: float = _default("saturation_margin")
    loop: ClassVar[str] = "open"
    has_steps: ClassVar[bool] = True

    @property
    def load_label(self) -> str:
        return "sweep"

    def progress_total(self, prompts) -> int | None:
        return None  # the number of steps is found as it goes

    def plan(self) -> SweepPlan:
        return SweepPlan(
            slo_ttft_s=self.slo_ttft_s,
            slo_tpot_s=self.slo_tpot_s,
            load=self.step_load(int(self.max_rate)),
            rates=tuple(self.rates),
            start_rate=self.start_rate,
            max_rate=self.max_rate,
            refine_steps=self.refine_steps,
        )

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, on_done: ProgressCallback | None = None
    ) -> list[RequestRecord]:
        """Every step's records go to the scenario's file, each with its step's rate."""

        def on_step(step) -> None:
            log.info(
                "%s: %.3g requests/s: TTFT p99 %s ms, TPOT p99 %s ms, %d errors, goodput %s requests/s: %s",
                self.name,
                step.rate,
                _ms(step.ttft_p99_s),
                _ms(step.tpot_p99_s),
                step.errors,
                "n/a" if step.goodput_rps is None else f"{step.goodput_rps:.3g}",
                "pass" if step.passed else "FAIL",
            )
            _log_saturation(self.name, step.rate, None, step.achieved_rps, step.saturated)

        def make_requests(step: int, n: int) -> list[ChatRequest]:
            return self.timed_requests(prompts, step)(n)

        steps = run_sweep(url, make_requests, settings, ctx, self.plan(), on_done=on_done, on_step=on_step)
        best = best_step(steps)
        log.info(
            "%s: highest rate that met the SLOs: %s", self.name, "none" if best is None else f"{best.rate:g} requests/s"
        )
        return [record for step in steps for record in step.records]

    @classmethod
    def steps(cls, records: list[RequestRecord]) -> list[tuple[float, list[RequestRecord]]]:
        rates = sorted({r.rate for r in records if r.rate is not None})
        return [(rate, [r for r in records if r.rate == rate]) for rate in rates]


def _log_saturation(name: str, rate: float, offered: float | None, achieved: float | None, saturated: bool) -> None:
    if saturated:
        log.warning(
            "%s: %.3g requests/s offered%s, %.3g completed per second: saturated (the server fell behind)",
            name,
            rate,
            "" if offered is None else f" ({offered:.3g} in the counted window)",
            achieved or 0.0,
        )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f}"

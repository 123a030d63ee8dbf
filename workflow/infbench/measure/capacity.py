"""Capacity at an SLO: the highest request rate (open loop) at which the SLOs hold, found by the
bracketing search (ratesearch.py) over steps sized by duration (loadgen.StepLoad).

An SLO is a mapping of limits on a step's figures, named as the summaries name them: percentiles
`ttft_p50_s`, `ttft_p90_s`, `ttft_p99_s`, and the same for `tpot`, `latency` and `itl`, plus
`error_rate` (failed requests / requests). A step passes when every figure is within its limit and
the step is not saturated; a saturated step fails whatever its percentiles, and the search goes no
higher. Every counted record of a step carries the SLO (as JSON) and its step's verdict, so the
tables read the search's own decisions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import StepGate, StepLoad
from infbench.measure.ratesearch import Bracket, bracket_search
from infbench.measure.records import RequestRecord
from infbench.measure.runners import ProgressCallback
from infbench.measure.sse import TokenCounter

PERCENTILE_METRICS = ("ttft", "tpot", "latency", "itl")
PERCENTILES = (50, 90, 99)
SLO_KEYS = (*(f"{m}_p{q}_s" for m in PERCENTILE_METRICS for q in PERCENTILES), "error_rate")


def check_slo(slo: dict, where: str) -> None:
    """ValueError `WHERE.KEY: ...` for an SLO key the capacity kind does not know, or a bad limit."""
    if not slo:
        raise ValueError(f"{where}: give at least one limit ({', '.join(SLO_KEYS)})")
    for key, limit in slo.items():
        if key not in SLO_KEYS:
            raise ValueError(f"{where}.{key}: not an SLO this kind knows; use one of {', '.join(SLO_KEYS)}")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
            raise ValueError(f"{where}.{key}: the limit must be a number >= 0, got {limit!r}")


@dataclass
class CapacityStep:
    rate: float  # offered requests/s
    offered_rps: float
    achieved_rps: float
    saturated: bool
    measured: dict[str, float | None]  # the SLO's figures as measured
    missed: list[str]  # the SLO keys whose figure passed its limit (or was not measured)
    passed: bool
    records: list[RequestRecord] = field(default_factory=list, repr=False)


def step_figures(records: list[RequestRecord]) -> dict[str, float | None]:
    """Every SLO figure of a step's records (percentiles as the summaries compute them)."""
    from infbench.measure.metrics import summarize  # polars: the summaries' own percentiles

    summary = summarize(records, "", "", "")
    figures = {key: getattr(summary, key) for key in SLO_KEYS if key != "error_rate"}
    figures["error_rate"] = summary.errors / summary.n if summary.n else None
    return figures


def judge(records: list[RequestRecord], slo: dict[str, float], saturated: bool) -> tuple[bool, dict, list[str]]:
    """(passed, the SLO's figures, the keys that missed): a figure that could not be measured (no
    successful request) misses its limit."""
    figures = step_figures(records)
    measured = {key: figures[key] for key in slo}
    missed = [key for key, limit in slo.items() if measured[key] is None or measured[key] > limit]
    return not missed and not saturated and bool(records), measured, missed


@dataclass(frozen=True)
class CapacityPlan:
    slo: dict[str, float]
    load: StepLoad  # each step's duration, warm-up, arrivals and client processes
    start_rate: float
    max_rate: float
    min_rate: float
    refine_steps: int
    precision: float  # stop bisecting once (fail - pass) / pass is at most this


def run_capacity(
    url: str,
    make_requests: Callable[[int, int], list[ChatRequest]],
    settings: RequestSettings,
    ctx: RunContext,
    plan: CapacityPlan,
    on_done: ProgressCallback | None = None,
    on_step: Callable[[CapacityStep], None] | None = None,
    token_counter: TokenCounter | None = None,
    between_steps: StepGate | None = None,
) -> tuple[list[CapacityStep], Bracket]:
    """The search; make_requests(step, n) gives a step's n requests (ids unique per step);
    between_steps, before each step but the first, waits for the engine to be idle."""
    steps: list[CapacityStep] = []
    slo_json = json.dumps(plan.slo, sort_keys=True)

    def passes(rate: float) -> bool:
        index = len(steps)
        if index and between_steps:
            between_steps(plan.load.window.drain_or_duration_s)
        requests_for = lambda n: make_requests(index, n)  # noqa: E731
        timed = plan.load.run(url, requests_for, settings, ctx, rate, index, on_done, token_counter)
        passed, measured, missed = judge(timed.records, plan.slo, timed.saturated)
        for record in timed.records:
            record.slo, record.step_passed = slo_json, passed
        step = CapacityStep(
            rate, timed.offered_rps, timed.achieved_rps, timed.saturated, measured, missed, passed, timed.records
        )
        steps.append(step)
        if on_step:
            on_step(step)
        return passed

    bracket = bracket_search(
        passes, plan.start_rate, plan.max_rate, plan.refine_steps, min_rate=plan.min_rate, precision=plan.precision
    )
    return steps, bracket

"""Load shapes: closed loop at concurrency C, open loop at rate λ, and a sweep for the highest rate
that meets SLOs. Any of them can be spread over worker processes.

Open loop: every send time is drawn before the run (Poisson, gamma or constant gaps, seeded) and each
request's latency counts from its planned time, so a client or server that falls behind cannot hide
it by sending later (no coordinated omission). The lateness itself is recorded as dispatch lag.

Worker processes: one asyncio process reads maybe 10^4 chunks/s before its own lag shows. With
`workers` > 1 the requests are dealt round-robin to processes (an open loop keeps each request's
planned time, so the arrival process is unchanged; a closed loop splits C). All processes start at one
agreed time.monotonic() instant and stamp on CLOCK_MONOTONIC, which Linux shares system-wide, and wall
times come from one offset taken in the parent: the merged records share one clock.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait

from infbench.defaults import schema_default
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.eventloop import run_measured, wall_offset
from infbench.measure.ratesearch import bracket_search
from infbench.measure.records import RequestRecord
from infbench.measure.runners import ProgressCallback, run_closed_loop, run_conversations, run_open_loop
from infbench.measure.sse import TokenCounter
from infbench.procutil import die_with_parent

ARRIVALS = ("poisson", "gamma", "constant")
START_MARGIN_S = 0.2  # between the workers' ready signal and the common start: time to get going
LOOP_START_MARGIN_S = 0.01  # one process: from its running loop to an open loop's first send
STREAMS_PER_WORKER = 256  # "auto" workers: one more process per this many concurrent streams


def _arrivals(rate: float, arrival: str, burstiness: float, seed: int) -> Iterator[float]:
    """Endless send times (seconds from the start, the first at 0) of a process with mean rate
    `rate`/s; the settings are checked first."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"open loop: rate must be a positive number of requests/s, got {rate!r}")
    if arrival not in ARRIVALS:
        raise ValueError(f"open loop: arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    if burstiness <= 0:
        raise ValueError(f"open loop: burstiness (gamma shape) must be > 0, got {burstiness!r}")
    rng = random.Random(seed)
    t, i = 0.0, 0
    while True:
        yield t
        i += 1
        if arrival == "poisson":
            t += rng.expovariate(rate)
        elif arrival == "gamma":
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        else:
            t = i / rate  # not a running sum: no rounding drift at a step's edges


def arrival_offsets(
    n: int,
    rate: float,
    arrival: str = schema_default("scenarios.*.arrival"),
    burstiness: float = schema_default("scenarios.*.burstiness"),
    seed: int = schema_default("scenarios.*.seed"),
) -> list[float]:
    """n send times (seconds after the start, the first at 0) of a process with mean rate `rate`/s.

    poisson: exponential gaps; gamma: gamma gaps with shape `burstiness` (1 is Poisson, < 1 burstier,
    > 1 more regular), mean 1/rate either way; constant: every 1/rate.
    """
    times = _arrivals(rate, arrival, burstiness, seed)
    return [next(times) for _ in range(n)]


@dataclass(frozen=True)
class LoadShape:
    """closed: `concurrency` streams back to back; open: send i at offsets_s[i] after the start;
    conversation: `concurrency` conversations at a time, turn by turn (the requests are conversations,
    each a list of turns). An open loop's requests still running `deadline_s` after the start are cut."""

    kind: str  # closed | open | conversation
    concurrency: int = 1
    offsets_s: tuple[float, ...] = ()
    workers: int = 1
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("closed", "open", "conversation"):
            raise ValueError(f"load shape: kind must be closed, open or conversation, got {self.kind!r}")
        if self.workers < 1 or self.concurrency < 1:
            raise ValueError("load shape: workers and concurrency must be at least 1")


def auto_workers(concurrency: int) -> int:
    """Processes for `workers: auto`: one per STREAMS_PER_WORKER streams, at most one per CPU."""
    return max(1, min(os.cpu_count() or 1, math.ceil(concurrency / STREAMS_PER_WORKER)))


@dataclass
class _Job:
    """One worker's share, sent to its process."""

    url: str
    requests: list[ChatRequest]
    settings: RequestSettings
    ctx: RunContext
    kind: str
    concurrency: int
    offsets_s: list[float]
    wall_offset_s: float
    token_counter: TokenCounter | None = None
    deadline_s: float | None = None


def _split(
    shape: LoadShape,
    url: str,
    requests: list[ChatRequest],
    settings: RequestSettings,
    ctx: RunContext,
    token_counter: TokenCounter | None,
) -> list[_Job]:
    workers = min(shape.workers, len(requests)) or 1
    if shape.kind != "open":
        workers = min(workers, shape.concurrency)
    offset = wall_offset()
    jobs = []
    for w in range(workers):
        share = requests[w::workers]
        concurrency = shape.concurrency // workers + (1 if w < shape.concurrency % workers else 0)
        jobs.append(
            _Job(
                url=url,
                requests=share,
                settings=settings,
                ctx=replace(ctx, worker=w),
                kind=shape.kind,
                concurrency=concurrency,
                offsets_s=list(shape.offsets_s[w::workers]),
                wall_offset_s=offset,
                token_counter=token_counter,
                deadline_s=shape.deadline_s,
            )
        )
    return jobs


async def _run_job(job: _Job, start_at: float | None, on_done: ProgressCallback | None) -> list[RequestRecord]:
    """One worker's share. start_at None (a single process): the plan starts once this loop runs (the
    loop's set-up, a full garbage collection among it, can take a busy machine hundreds of ms)."""
    if start_at is None:
        start_at = time.monotonic() + LOOP_START_MARGIN_S
    if job.kind in ("closed", "conversation"):
        runner = run_closed_loop if job.kind == "closed" else run_conversations
        return await runner(
            job.url,
            job.requests,
            job.settings,
            job.ctx,
            on_done,
            job.token_counter,
            concurrency=job.concurrency,
            start_at=start_at,
            wall_offset_s=job.wall_offset_s,
        )
    planned = [start_at + o for o in job.offsets_s]
    return await run_open_loop(
        job.url,
        job.requests,
        planned,
        job.settings,
        job.ctx,
        on_done,
        job.token_counter,
        wall_offset_s=job.wall_offset_s,
        deadline=None if job.deadline_s is None else start_at + job.deadline_s,
    )


def run_load(
    url: str,
    requests: list[ChatRequest],
    settings: RequestSettings,
    ctx: RunContext,
    shape: LoadShape,
    on_done: ProgressCallback | None = None,
    token_counter: TokenCounter | None = None,
) -> list[RequestRecord]:
    """Run one load shape to the end and return every record, sorted by request id (a conversation
    load: `requests` are conversations, each a list of turns)."""
    if shape.kind == "open" and len(shape.offsets_s) != len(requests):
        raise ValueError(f"open loop: {len(shape.offsets_s)} send times for {len(requests)} requests")
    jobs = _split(shape, url, requests, settings, ctx, token_counter)
    if len(jobs) == 1:
        records = run_measured(_run_job(jobs[0], None, on_done))
    else:
        records = _run_in_processes(jobs, on_done)
    return sorted(records, key=lambda r: r.request_id)


def worker_main(read_fd: int, write_fd: int) -> None:
    """A worker process: take its job, say ready, wait for the common start, stream records back."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        job = inbox.recv()
        outbox.send(("ready", os.getpid()))
        start_at = inbox.recv()
        run_measured(_run_job(job, start_at, lambda record: outbox.send(("record", record))))
        outbox.send(("end", None))
    except BaseException:
        outbox.send(("error", traceback.format_exc()))
    finally:
        inbox.close()
        outbox.close()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    inbox: Connection  # from the worker
    outbox: Connection  # to the worker

    def receive(self) -> tuple[str, object]:
        try:
            return self.inbox.recv()
        except EOFError:
            code = self.process.wait(timeout=5)
            raise RuntimeError(
                f"load worker {self.index} (pid {self.process.pid}) died without a word, exit code {code}"
            ) from None


def _start_worker(index: int, job: _Job) -> _Worker:
    """A fresh interpreter (not fork: the parent may hold threads; not multiprocessing's spawn: it
    re-imports the caller's __main__), fed its job through a pipe."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    code = f"from infbench.measure.loadgen import worker_main; worker_main({to_child_r}, {from_child_w})"
    process = subprocess.Popen(
        [sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w), preexec_fn=die_with_parent
    )
    os.close(to_child_r)
    os.close(from_child_w)
    worker = _Worker(index, process, Connection(from_child_r, writable=False), Connection(to_child_w, readable=False))
    worker.outbox.send(job)
    return worker


def _run_in_processes(jobs: list[_Job], on_done: ProgressCallback | None) -> list[RequestRecord]:
    workers: list[_Worker] = []
    try:
        for index, job in enumerate(jobs):
            workers.append(_start_worker(index, job))
        for worker in workers:
            kind, detail = worker.receive()
            if kind != "ready":
                raise RuntimeError(f"load worker {worker.index} failed to start:\n{detail}")
        start_at = time.monotonic() + START_MARGIN_S
        for worker in workers:
            worker.outbox.send(start_at)
        records: list[RequestRecord] = []
        running = {worker.inbox: worker for worker in workers}
        while running:
            for inbox in wait(list(running)):
                worker = running[inbox]
                kind, detail = worker.receive()
                if kind == "record":
                    records.append(detail)
                    if on_done:
                        on_done(detail)
                elif kind == "end":
                    del running[inbox]
                else:
                    raise RuntimeError(f"load worker {worker.index} failed:\n{detail}")
        return records
    finally:
        for worker in workers:
            worker.inbox.close()
            worker.outbox.close()
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.process.terminate()
                worker.process.wait()


# --- steps sized by duration ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepWindow:
    """One open-loop step: sends for `duration_s`; those planned in its first `warmup_s` are sent but
    not counted (the queue and caches settle). A step whose counted window would plan fewer than
    `min_requests` sends runs longer, until it holds that many (a p90 of 3 requests is their maximum).
    Requests still running `drain_s` after its end (default: duration_s) are cut, as errors. The step
    is saturated when the requests completed within the counted window fall short of those planned in
    it by more than `saturation_margin` (and by at least SATURATION_MIN_SHORTFALL requests, so a
    handful of sends is not judged on one)."""

    duration_s: float
    warmup_s: float = schema_default("scenarios.*.warmup_s")
    saturation_margin: float = schema_default("scenarios.*.saturation_margin")
    drain_s: float | None = None
    min_requests: int = schema_default("scenarios.*.min_requests")

    def __post_init__(self) -> None:
        if self.duration_s <= self.warmup_s:
            raise ValueError(
                f"duration_s ({self.duration_s:g} s) must be longer than warmup_s ({self.warmup_s:g} s): "
                f"a step's warm-up is not counted, so nothing would be"
            )

    @property
    def counted_s(self) -> float:
        return self.duration_s - self.warmup_s

    @property
    def drain_or_duration_s(self) -> float:
        return self.duration_s if self.drain_s is None else self.drain_s

    @property
    def deadline_s(self) -> float:
        return self.duration_s + self.drain_or_duration_s

    def offsets(self, rate: float, arrival: str, burstiness: float, seed: int) -> tuple[list[float], StepWindow]:
        """The step's send times (arrival_offsets' process within [0, duration_s), and on past it
        until `min_requests` fall in the counted window) and the window they fill: this one, or one
        stretched to end where the first send left out would have left."""
        offsets: list[float] = []
        counted = 0
        for t in _arrivals(rate, arrival, burstiness, seed):
            if t >= self.duration_s and counted >= self.min_requests:
                stretched = bool(offsets) and offsets[-1] >= self.duration_s
                return offsets, replace(self, duration_s=t) if stretched else self
            offsets.append(t)
            counted += t >= self.warmup_s
        raise AssertionError("unreachable: the arrival process is endless")


SATURATION_MIN_SHORTFALL = 2

# Before each step of a rate search but the first: wait, at most the given seconds (the step's drain
# time), until the engine serves nothing; returns the seconds waited, None when it cannot say. A request
# the client cut at the last step's deadline may run on in the engine and slow the next step.
StepGate = Callable[[float], float | None]


@dataclass
class TimedStep:
    rate: float  # offered, nominal requests/s
    offered_rps: float  # requests planned in the counted window / its length
    achieved_rps: float  # requests completed (ok) in the counted window / its length
    saturated: bool
    records: list[RequestRecord] = field(default_factory=list, repr=False)  # the counted requests


def judge_window(
    rate: float, requests: list[ChatRequest], offsets: list[float], records: list[RequestRecord], window: StepWindow
) -> TimedStep:
    """Offered and achieved rates over the counted window, saturation, and the counted records (each
    told its step's offered and achieved rates and saturation)."""
    offset_of = {request.request_id: offset for request, offset in zip(requests, offsets, strict=True)}
    start = min((r.send_mono - offset_of[r.request_id] for r in records if r.send_mono is not None), default=0.0)
    counted = [r for r in records if offset_of[r.request_id] >= window.warmup_s]
    completed = sum(
        1
        for r in records
        if r.ok and window.warmup_s <= r.send_mono - start + r.latency_s < window.duration_s  # ended in the window
    )
    short = len(counted) - completed
    saturated = short >= SATURATION_MIN_SHORTFALL and completed < len(counted) * (1 - window.saturation_margin)
    step = TimedStep(rate, len(counted) / window.counted_s, completed / window.counted_s, saturated, counted)
    for record in counted:
        record.offered_rate, record.achieved_rate = round(step.offered_rps, 6), round(step.achieved_rps, 6)
        record.saturated = saturated
    return step


@dataclass(frozen=True)
class StepLoad:
    """How every step of a sweep or capacity search sends: its window, its arrival process (step i
    seeded with seed + i) and its client processes."""

    window: StepWindow
    arrival: str = schema_default("scenarios.*.arrival")
    burstiness: float = schema_default("scenarios.*.burstiness")
    seed: int = schema_default("scenarios.*.seed")
    workers: int = 1

    def run(
        self,
        url: str,
        requests_for: Callable[[int], list[ChatRequest]],
        settings: RequestSettings,
        ctx: RunContext,
        rate: float,
        index: int = 0,
        on_done: ProgressCallback | None = None,
        token_counter: TokenCounter | None = None,
    ) -> TimedStep:
        """Step `index`: an open loop at `rate` for the window's duration; `requests_for(n)` gives the
        n requests its schedule holds."""
        offsets, window = self.window.offsets(rate, self.arrival, self.burstiness, self.seed + index)
        requests = requests_for(len(offsets))
        shape = LoadShape(kind="open", offsets_s=tuple(offsets), workers=self.workers, deadline_s=window.deadline_s)
        records = run_load(url, requests, settings, replace(ctx, rate=rate), shape, on_done, token_counter)
        return judge_window(rate, requests, offsets, records, window)


# --- sweep: the highest rate that meets the SLOs --------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    slo_ttft_s: float
    slo_tpot_s: float
    load: StepLoad  # each step's duration, warm-up, arrivals and client processes
    rates: tuple[float, ...] = ()  # tried in order, all of them; empty: search from start_rate
    start_rate: float = schema_default("scenarios.*.start_rate")
    max_rate: float = schema_default("scenarios.*.max_rate")
    refine_steps: int = schema_default("scenarios.*.refine_steps")  # bisections between the last pass and first fail


@dataclass
class SweepStep:
    rate: float
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    errors: int
    goodput_rps: float | None  # requests/s that met both SLOs
    passed: bool
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    achieved_rps: float | None = None
    saturated: bool = False


def judge_step(rate: float, records: list[RequestRecord]) -> SweepStep:
    """A step passes when no request failed and TTFT and TPOT p99 are within the records' SLOs."""
    from infbench.measure.metrics import summarize  # polars: only sweeps summarize while measuring

    s = summarize(records, "", "", "")
    return SweepStep(
        rate=rate,
        ttft_p99_s=s.ttft_p99_s,
        tpot_p99_s=s.tpot_p99_s,
        errors=s.errors,
        goodput_rps=s.goodput_rps,
        passed=bool(s.slo_passed),
        records=records,
    )


def run_sweep(
    url: str,
    make_requests: Callable[[int, int], list[ChatRequest]],
    settings: RequestSettings,
    ctx: RunContext,
    plan: SweepPlan,
    on_done: ProgressCallback | None = None,
    on_step: Callable[[SweepStep], None] | None = None,
    token_counter: TokenCounter | None = None,
    between_steps: StepGate | None = None,
) -> list[SweepStep]:
    """Open-loop steps sized by duration. make_requests(step, n) gives a step's requests (ids unique
    per step). Explicit `rates` are run in order until one is saturated. Otherwise the bracketing
    search (ratesearch.py): double from start_rate until a step fails the SLOs or is saturated (or
    max_rate), then bisect between the last pass and the first fail `refine_steps` times."""
    steps: list[SweepStep] = []

    def step(rate: float) -> SweepStep:
        index = len(steps)
        if index and between_steps:
            between_steps(plan.load.window.drain_or_duration_s)
        step_ctx = replace(ctx, slo_ttft_s=plan.slo_ttft_s, slo_tpot_s=plan.slo_tpot_s)
        requests_for = lambda n: make_requests(index, n)  # noqa: E731
        timed = plan.load.run(url, requests_for, settings, step_ctx, rate, index, on_done, token_counter)
        result = judge_step(rate, timed.records)
        result.achieved_rps, result.saturated = timed.achieved_rps, timed.saturated
        result.passed = result.passed and not timed.saturated
        steps.append(result)
        if on_step:
            on_step(result)
        return result

    if plan.rates:
        for rate in plan.rates:
            if step(rate).saturated:
                break  # higher rates would only queue more
        return steps
    bracket_search(lambda rate: step(rate).passed, plan.start_rate, plan.max_rate, plan.refine_steps)
    return steps


def best_step(steps: list[SweepStep]) -> SweepStep | None:
    """The highest passing rate."""
    passing = [s for s in steps if s.passed]
    return max(passing, key=lambda s: s.rate) if passing else None

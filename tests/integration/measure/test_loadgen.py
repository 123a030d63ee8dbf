"""Load shapes: arrival schedules' statistics, the open loop's planned-time accounting, worker
processes on one clock, the sweep's search, and the config that reaches them."""

from __future__ import annotations

import statistics
import time

import pytest
from infbench.engines.spec import Scenario
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
from infbench.measure.ratesearch import bracket_search
from infbench.measure.refserver import RefServerProcess, RefSettings
from infbench.pipeline.config import ConfigError, scenario_of, validate_config

SETTINGS = RequestSettings(model_name="m", max_tokens=1000, timeout_s=60)


def _requests(n: int, prefix: str = "lg") -> list[ChatRequest]:
    return [ChatRequest(f"{prefix}-{i:04d}", f"p{i % 3}", [{"role": "user", "content": "q"}]) for i in range(n)]


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip(offsets, offsets[1:], strict=False)]


# --- schedules (seeded: exact and deterministic, no timing) -----------------------------------------


def test_poisson_schedule_has_exponential_gaps_and_poisson_counts():
    rate, n = 50.0, 20000
    offsets = arrival_offsets(n, rate, "poisson", seed=11)
    gaps = _gaps(offsets)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, rel=0.05)  # exponential: CV 1
    # Memoryless: about e^-1 of the gaps are longer than the mean.
    assert sum(g > 1 / rate for g in gaps) / len(gaps) == pytest.approx(0.3679, abs=0.015)
    # Counts in 1 s windows are Poisson: variance equals the mean (index of dispersion 1).
    counts = [0] * int(offsets[-1])
    for t in offsets:
        if int(t) < len(counts):
            counts[int(t)] += 1
    assert statistics.fmean(counts) == pytest.approx(rate, rel=0.03)
    assert statistics.pvariance(counts) / statistics.fmean(counts) == pytest.approx(1.0, abs=0.2)


def test_schedules_are_seeded_and_gamma_sets_burstiness():
    assert arrival_offsets(100, 5.0, seed=3) == arrival_offsets(100, 5.0, seed=3)
    assert arrival_offsets(100, 5.0, seed=3) != arrival_offsets(100, 5.0, seed=4)
    for shape, cv in ((0.25, 2.0), (4.0, 0.5)):  # gamma gaps: CV = 1 / sqrt(shape), mean still 1/rate
        gaps = _gaps(arrival_offsets(20000, 10.0, "gamma", burstiness=shape, seed=5))
        assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.05)
        assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.08)
    assert _gaps(arrival_offsets(5, 4.0, "constant")) == [0.25] * 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"arrival": "uniform"}, "arrival"),
        ({"arrival": "gamma", "burstiness": 0}, "burstiness"),
    ],
)
def test_bad_schedule_settings_name_the_culprit(kwargs, message):
    args = {"n": 3, "rate": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        arrival_offsets(**args)


# --- open loop, workers and the sweep against the reference server --------------------------------


def test_open_loop_counts_latency_from_the_planned_time():
    offsets = arrival_offsets(12, 40.0, "poisson", seed=1)
    ctx = RunContext(engine="e", model="m", scenario="open", concurrency=0, rate=40.0)
    with RefServerProcess(RefSettings(ttft_s=0.02, itl_s=0.002, tokens=5)) as server:
        records = run_load(server.chat_url, _requests(12), SETTINGS, ctx, LoadShape("open", offsets_s=tuple(offsets)))
        log = server.fetch_log()
    assert all(r.ok for r in records), [r.error for r in records]
    start = records[0].send_mono - offsets[0]
    for r, offset in zip(records, offsets, strict=True):
        assert r.send_mono == pytest.approx(start + offset, abs=1e-9)  # planned times, drawn in advance
        assert r.rate == 40.0 and r.dispatch_lag_s >= 0
    by_id = {e["id"]: e for e in log["requests"]}
    for r in records:  # TTFT counts from the plan: it holds the dispatch lag and the server's TTFT
        assert r.ttft_s >= r.dispatch_lag_s + (by_id[r.request_id]["chunk_times"][0] - by_id[r.request_id]["parsed"])


def test_sends_planned_at_one_instant_are_built_ahead_and_leave_in_order(monkeypatch):
    """Trace rows share timestamps: an instant's requests are serialized before it comes, then written
    one after another in the order given, so the k-th waits for k-1 writes, not k-1 request builds."""
    from infbench.measure.client import StreamClient

    built: dict[str, float] = {}
    prepare = StreamClient.prepare

    def stamped_prepare(self, request, *args):
        built[request.request_id] = time.monotonic()
        return prepare(self, request, *args)

    monkeypatch.setattr(StreamClient, "prepare", stamped_prepare)
    offsets = tuple(0.05 * (i // 5) for i in range(15))  # three instants of five sends
    ctx = RunContext(engine="e", model="m", scenario="open", concurrency=0)
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.002, tokens=3)) as server:
        records = run_load(server.chat_url, _requests(15), SETTINGS, ctx, LoadShape("open", offsets_s=offsets))
    assert all(r.ok for r in records), [r.error for r in records]
    assert set(built) == {r.request_id for r in records}  # each built once
    for r in records:
        assert built[r.request_id] < r.send_mono  # built before its planned time
    for instant in range(3):
        lags = [r.dispatch_lag_s for r in records[instant * 5 : instant * 5 + 5]]
        assert len({r.send_mono for r in records[instant * 5 : instant * 5 + 5]}) == 1
        assert lags == sorted(lags)  # written in the order given


def test_a_send_that_cannot_be_built_at_its_instant_ends_the_open_loop_with_its_error(monkeypatch):
    from infbench.measure.client import StreamClient
    from infbench.procutil import free_port

    prepare = StreamClient.prepare

    def failing_prepare(self, request, *args):
        if request.request_id == "lg-0003":
            raise ValueError("cannot build lg-0003")
        return prepare(self, request, *args)

    monkeypatch.setattr(StreamClient, "prepare", failing_prepare)
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    ctx = RunContext(engine="e", model="m", scenario="open", concurrency=0)
    with pytest.raises(ValueError, match="cannot build lg-0003"):  # not a hang: a timer's error is raised
        run_load(url, _requests(4), SETTINGS, ctx, LoadShape("open", offsets_s=(0.0, 0.0, 0.05, 0.05)))


def test_workers_split_the_load_and_share_one_clock():
    ctx = RunContext(engine="e", model="m", scenario="closed", concurrency=4)
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.002, tokens=5)) as server:
        records = run_load(server.chat_url, _requests(12), SETTINGS, ctx, LoadShape("closed", concurrency=4, workers=2))
        log = server.fetch_log()
    assert [r.request_id for r in records] == [f"lg-{i:04d}" for i in range(12)]
    assert all(r.ok for r in records) and {r.worker for r in records} == {0, 1}
    by_id = {e["id"]: e for e in log["requests"]}
    for r in records:  # stamps from two processes against the server's log: one clock, causality holds
        entry = by_id[r.request_id]
        assert r.send_mono + r.dispatch_lag_s <= entry["parsed"] <= entry["chunk_times"][0] <= r.send_mono + r.ttft_s
    # Wall-clock times come from one offset taken in the parent.
    offsets = {round(r.send_time - r.send_mono, 9) for r in records}
    assert len(offsets) == 1


def test_a_worker_that_cannot_reach_the_server_reports_errors_not_a_hang():
    from infbench.procutil import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    ctx = RunContext(engine="e", model="m", scenario="closed", concurrency=2)
    records = run_load(url, _requests(4), SETTINGS, ctx, LoadShape("closed", concurrency=2, workers=2))
    assert len(records) == 4 and all("ConnectError" in r.error for r in records)


def test_sweep_doubles_until_the_slo_fails_then_bisects():
    ctx = RunContext(engine="e", model="m", scenario="sweep", concurrency=0)
    steps_seen = []
    # Loose: this is about the search, not saturation (a busy test machine can slow a short step).
    window = StepWindow(duration_s=1.5, warmup_s=0.3, saturation_margin=0.9, drain_s=30)
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.001, tokens=4)) as server:
        # Generous SLOs: every rate passes up to max_rate, nothing to refine.
        plan = SweepPlan(slo_ttft_s=5.0, slo_tpot_s=5.0, load=StepLoad(window), start_rate=20.0, max_rate=80.0)
        steps = run_sweep(
            server.chat_url, lambda step, n: _requests(n, f"sw{step}"), SETTINGS, ctx, plan, on_step=steps_seen.append
        )
        assert [s.rate for s in steps] == [20.0, 40.0, 80.0] and all(s.passed for s in steps), steps
        assert not any(s.saturated for s in steps)
        assert steps_seen == steps and best_step(steps).rate == 80.0
        assert all(r.slo_ttft_s == 5.0 and r.rate == s.rate for s in steps for r in s.records)
        assert all(s.goodput_rps and s.goodput_rps > 0 for s in steps)
        # An SLO below the server's own TTFT: the first rate fails, no request meets it.
        plan = SweepPlan(slo_ttft_s=0.005, slo_tpot_s=5.0, load=StepLoad(window), start_rate=20.0, max_rate=80.0)
        steps = run_sweep(server.chat_url, lambda step, n: _requests(n, f"sf{step}"), SETTINGS, ctx, plan)
        assert len(steps) == 1 and not steps[0].passed and steps[0].goodput_rps == 0
        assert best_step(steps) is None


def test_sweep_search_logic():
    """Pass below 30 req/s: doubling from 4 fails at 32, then three bisections between 16 and 32."""
    tried = []

    def passes(rate):
        tried.append(rate)
        return rate < 30

    bracket = bracket_search(passes, start_rate=4, max_rate=1000, refine_steps=3)
    assert tried == list(bracket.tried) == [4, 8, 16, 32, 24, 28, 30]
    assert (bracket.passed, bracket.failed) == (28, 30)


def test_bracket_search_halves_down_stops_at_max_and_at_precision():
    # The start fails: halve until a pass (capacity), then bisect.
    bracket = bracket_search(lambda r: r <= 3, start_rate=16, max_rate=64, refine_steps=10, min_rate=0.5, precision=0.1)
    assert bracket.tried[:4] == (16, 8, 4, 2) and (bracket.passed, bracket.failed) == (3.0, 3.25)
    assert (bracket.failed - bracket.passed) <= 0.1 * bracket.passed
    # Without min_rate (a sweep) a failing start ends the search.
    assert bracket_search(lambda r: False, 4, 64, 3).tried == (4,)
    # Everything passes: doubling stops at max_rate, nothing failed.
    bracket = bracket_search(lambda r: True, 1, 6, 3)
    assert bracket.tried == (1, 2, 4) and (bracket.passed, bracket.failed) == (4, None)
    # Nothing passes down to min_rate.
    assert bracket_search(lambda r: False, 4, 64, 3, min_rate=1).tried == (4, 2, 1)


# --- steps sized by duration ----------------------------------------------------------------------


def test_step_offsets_fill_the_duration_and_match_the_counted_schedule():
    offsets, window = StepWindow(10.0, warmup_s=1.0).offsets(20.0, "poisson", 1.0, seed=3)
    assert offsets == arrival_offsets(len(offsets), 20.0, "poisson", seed=3)
    assert offsets[-1] < 10.0 and len(offsets) == pytest.approx(200, rel=0.2)
    assert window == StepWindow(10.0, warmup_s=1.0)  # enough requests: not stretched
    assert StepWindow(1.0, warmup_s=0.0, min_requests=4).offsets(4.0, "constant", 1.0, 0)[0] == [0.0, 0.25, 0.5, 0.75]


def test_a_step_too_short_to_count_min_requests_runs_until_it_does():
    # 0.5/s constant: sends at 0, 2, 4, ... s; 1 s of warm-up, 8 s in all would count 3 (2, 4, 6).
    offsets, window = StepWindow(8.0, warmup_s=1.0, min_requests=5).offsets(0.5, "constant", 1.0, 0)
    assert offsets == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # 5 counted, from 2 s on
    assert window.duration_s == 12.0 and window.counted_s == 11.0  # ends where the next send would leave
    assert window.deadline_s == 12.0 + 12.0  # drain (default: the duration) follows it
    poisson, stretched = StepWindow(5.0, warmup_s=1.0, min_requests=30).offsets(1.0, "poisson", 1.0, 7)
    assert sum(t >= 1.0 for t in poisson) == 30 and stretched.duration_s > poisson[-1] > 5.0


def test_a_step_shorter_than_its_warmup_is_refused():
    with pytest.raises(ValueError, match="duration_s"):
        StepWindow(duration_s=5.0, warmup_s=5.0)


def test_a_timed_step_counts_only_after_its_warmup_and_is_not_saturated_when_the_server_keeps_up():
    ctx = RunContext(engine="e", model="m", scenario="open", concurrency=0)
    window = StepWindow(duration_s=3.0, warmup_s=0.5, drain_s=30)
    with RefServerProcess(RefSettings(ttft_s=0.005, itl_s=0.001, tokens=3)) as server:
        step = StepLoad(window, "constant").run(server.chat_url, _requests, SETTINGS, ctx, 10.0)
    # constant at 10/s for 3 s: 30 sends, those planned at 0.5 s and later are counted
    assert len(step.records) == 25 and all(r.ok for r in step.records)
    start = step.records[0].send_mono - 0.5
    assert all(r.send_mono - start >= 0.5 - 1e-9 for r in step.records)
    assert step.offered_rps == pytest.approx(10.0)
    # Completions in the window: the sends shifted by their ~10 ms latency (a busy test machine may
    # stall the client a little, hence the room).
    assert not step.saturated and step.achieved_rps == pytest.approx(10.0, abs=2.0), step
    assert all(r.rate == 10.0 and r.saturated is False and r.achieved_rate for r in step.records)
    assert {r.offered_rate for r in step.records} == {10.0}  # 25 planned in the 2.5 s counted window


def test_a_timed_step_beyond_the_server_is_saturated_and_its_stragglers_are_cut():
    """The reference server streams 50 tokens 20 ms apart (1 s each) to at most... everyone at once,
    so make the client the bottleneck instead: one connection can't be shared, but a server whose
    TTFT is longer than the step plus its drain never completes anything in the window."""
    ctx = RunContext(engine="e", model="m", scenario="open", concurrency=0)
    window = StepWindow(duration_s=0.6, warmup_s=0.1, drain_s=0.2)
    with RefServerProcess(RefSettings(ttft_s=0.7, itl_s=0.001, tokens=2)) as server:
        step = StepLoad(window, "constant").run(server.chat_url, _requests, SETTINGS, ctx, 20.0)
    assert step.saturated and step.achieved_rps < step.offered_rps
    assert all(r.saturated for r in step.records)
    # Sent at 0.1 s or later, still waiting at 0.8 s: cut, an error that says so.
    late = [r for r in step.records if r.error]
    assert late and all(r.error.startswith("cut: still running") for r in late)


# --- config ---------------------------------------------------------------------------------------


def _config(**scenarios):
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 4},
        "models": {"m": {"source": "local:/x"}},
        "engines": {"t": {"kind": "transformers", "env": "transformers"}},
        "sampling": {},
        "scenarios": scenarios,
    }


def test_open_loop_and_sweep_scenarios_are_validated_and_reach_the_spec():
    config = validate_config(
        _config(
            poisson={
                "kind": "open_loop",
                "rate": 2.5,
                "duration_s": 20,
                "warmup_s": 2,
                "arrival": "gamma",
                "burstiness": 0.5,
                "workers": "auto",
            },
            capacity={"kind": "sweep", "slo_ttft_s": 1.0, "slo_tpot_s": 0.1, "rates": [1, 2, 4], "duration_s": 30},
        )
    )
    open_loop = scenario_of(config, "poisson")
    assert (open_loop.kind, open_loop.rate, open_loop.arrival, open_loop.burstiness, open_loop.workers) == (
        "open_loop",
        2.5,
        "gamma",
        0.5,
        "auto",
    )
    sweep = scenario_of(config, "capacity")
    assert (
        sweep.rates == [1, 2, 4] and sweep.slo_ttft_s == 1.0 and sweep.plan().load.window == StepWindow(30.0, 10.0, 0.2)
    )
    assert open_loop.window() == StepWindow(20.0, 2.0, 0.2)
    shape = open_loop.load_shape(20)
    assert shape.kind == "open" and len(shape.offsets_s) == 20 and shape.workers == auto_workers(2)
    assert Scenario(name="t", kind="throughput", concurrency=6, requests=12, workers=2).load_shape(12) == LoadShape(
        "closed", concurrency=6, workers=2
    )


@pytest.mark.parametrize(
    "scenario, key",
    [
        ({"kind": "open_loop"}, "rate"),
        ({"kind": "sweep", "slo_ttft_s": 1.0}, "slo_tpot_s"),
        ({"kind": "open_loop", "rate": 1, "arrival": "uniform"}, "scenarios.s.arrival"),
        ({"kind": "throughput", "workers": 0}, "scenarios.s.workers"),
        ({"kind": "open_loop", "rate": 1, "duration_s": 5, "warmup_s": 5}, "scenarios.s.duration_s"),
        ({"kind": "sweep", "slo_ttft_s": 1, "slo_tpot_s": 1, "warmup_s": 90}, "scenarios.s.duration_s"),
        ({"kind": "open_loop", "rate": 1, "requests": 10}, "scenarios.s.requests"),
    ],
)
def test_bad_load_scenarios_name_the_key(scenario, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(_config(s=scenario))


# --- through the bench job and the tables ---------------------------------------------------------


def test_open_loop_and_sweep_scenarios_run_through_bench_and_reach_the_tables(tmp_path):
    from infbench.engines.spec import EngineSpec, ModelSpec
    from infbench.handoff import MergePlan
    from infbench.jobs.bench import _run_scenario
    from infbench.measure.recordfiles import write_records
    from infbench.pipeline.prompts import Prompt
    from infbench.results.tables import merge

    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": f"q{i}"},), source="t", source_index=i)
        for i in range(3)
    ]
    engine = EngineSpec(name="ref", kind="transformers", label="Ref", env="x", device="cpu")
    model = ModelSpec(name="m", path="x")
    loose = {"saturation_margin": 0.95}  # about the plumbing: a busy test machine must not stop the sweep
    open_loop = Scenario(name="poisson", kind="open_loop", rate=30.0, seed=2, duration_s=0.3, warmup_s=0.1, **loose)
    sweep = Scenario(
        name="capacity",
        kind="sweep",
        rates=[10.0, 20.0],
        slo_ttft_s=5.0,
        slo_tpot_s=5.0,
        arrival="constant",
        duration_s=1.0,
        warmup_s=0.2,
        **loose,
    )
    out = tmp_path / "raw" / "ref" / "m"
    out.mkdir(parents=True)
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.001, tokens=4)) as server:
        for scenario in (open_loop, sweep):
            records = _run_scenario(server.chat_url, prompts, scenario, SETTINGS, engine, model)
            write_records(out / f"{scenario.name}.jsonl", records)
    opened = [r for r in records if r.scenario == "capacity"]
    # Counted: after the warm-up; at 10/s the 0.8 s counted window plans 8, so the step runs on to 10
    # (min_requests' default), at 20/s it plans 16.
    assert len(opened) == 10 + 16 and {r.rate for r in opened} == {10.0, 20.0}
    assert len({r.request_id for r in opened}) == 26  # ids unique across steps
    plan = MergePlan(engines={"ref": "Ref"}, models={"m": "M"}, scenarios={"poisson": "open_loop", "capacity": "sweep"})
    df = merge(tmp_path / "raw", tmp_path / "tables", plan)
    assert set(df.select("scenario", "step_rate").iter_rows()) == {
        ("poisson", None),
        ("capacity", None),
        ("capacity", 10.0),
        ("capacity", 20.0),
    }
    summary_csv = (tmp_path / "tables" / "summary.csv").read_text()
    assert "step_rate" not in summary_csv and ",capacity@10," in summary_csv  # the files label a step NAME@RATE
    assert df.filter(df["scenario"] == "poisson")["rate"].item() == 30.0
    details = (tmp_path / "tables" / "details.md").read_text()
    sweeps = details.split("## Sweeps")[1]
    sweep_row = next(line for line in sweeps.splitlines() if line.startswith("ref | m | capacity |"))
    assert sweep_row.split(" | ")[5:7] == ["10, 20", "20.00"]  # rates tried, the best that met the SLOs


# --- capacity at an SLO -------------------------------------------------------------------------------


def test_capacity_finds_the_rate_the_reference_server_can_hold():
    """The reference server answers in ~30 ms at any of these rates: a loose SLO passes every step up
    to max_rate; a TTFT limit below the server's own fails every step, halving down to min_rate."""
    from infbench.measure.capacity import CapacityPlan, run_capacity

    ctx = RunContext(engine="e", model="m", scenario="cap", concurrency=0)
    plan = CapacityPlan(
        slo={"ttft_p90_s": 2.0, "error_rate": 0.0},
        load=StepLoad(StepWindow(duration_s=1.0, warmup_s=0.2, saturation_margin=0.9, drain_s=30), "constant"),
        start_rate=10,
        max_rate=40,
        min_rate=1,
        refine_steps=3,
        precision=0.1,
    )
    seen, gate = [], []
    with RefServerProcess(RefSettings(ttft_s=0.02, itl_s=0.002, tokens=5)) as server:
        steps, bracket = run_capacity(
            server.chat_url,
            lambda step, n: _requests(n, f"cap{step}"),
            SETTINGS,
            ctx,
            plan,
            on_step=seen.append,
            between_steps=lambda timeout_s: gate.append((len(seen), timeout_s)),
        )
        # A TTFT limit below the server's own 20 ms: the start fails, then every halving down to min_rate.
        tight = CapacityPlan(**{**plan.__dict__, "slo": {"ttft_p50_s": 0.01}, "start_rate": 8, "min_rate": 2})
        failed, none = run_capacity(server.chat_url, lambda step, n: _requests(n, f"t{step}"), SETTINGS, ctx, tight)
    assert [s.rate for s in steps] == [10, 20, 40] and all(s.passed for s in steps) and seen == steps
    assert gate == [(1, 30), (2, 30)]  # before every step but the first, for at most its drain time
    assert (bracket.passed, bracket.failed) == (40, None)
    assert all(r.step_passed and r.slo == '{"error_rate": 0.0, "ttft_p90_s": 2.0}' for s in steps for r in s.records)
    assert steps[0].measured["ttft_p90_s"] < 2.0 and steps[0].measured["error_rate"] == 0.0
    assert [s.rate for s in failed] == [8, 4, 2] and (none.passed, none.failed) == (None, 2)
    assert all(s.missed == ["ttft_p50_s"] for s in failed)


@pytest.mark.parametrize(
    "slo, message",
    [
        ({"ttft_p95_s": 1.0}, "scenarios.c.slo.ttft_p95_s: not an SLO this kind knows"),
        ({"error_rate": -1}, "scenarios.c.slo.error_rate: the limit must be a number >= 0"),
        ({}, "scenarios.c.slo: give at least one limit"),
    ],
)
def test_an_slo_key_the_capacity_kind_does_not_know_is_named(slo, message):
    from infbench.measure.capacity import check_slo

    with pytest.raises(ValueError, match=message):
        check_slo(slo, "scenarios.c.slo")

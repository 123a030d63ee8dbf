"""The load path's shape: scenario classes by kind, defaults from the schema, typed step records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infbench.defaults import load_schema, schema_default
from infbench.engines.base import ExtraRunContext
from infbench.engines.kinds.tgi import native_command
from infbench.engines.spec import BenchSettings, EngineSpec, ModelSpec, read_engine_spec, write_spec
from infbench.handoff import HandoffError, MemoryReport, MergePlan, ServerInfo
from infbench.measure.client import CLIENT_LAG_SHARE, RequestSettings
from infbench.measure.loadgen import StepLoad, StepWindow, SweepPlan
from infbench.measure.records import RequestRecord
from infbench.measure.scenarios import SCENARIO_KINDS, OpenLoop, Scenario, Single, Sweep, Throughput
from infbench.pipeline.config import engine_spec, validate_config
from infbench.results.routing import check_plan, scenario_class, scenarios_where


def _config(**extra) -> dict:
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 4},
        "models": {"m": {"source": "local:/x"}},
        "engines": {"t": {"kind": "transformers", "env": "transformers"}},
        "sampling": {},
        "scenarios": {
            "single": {"kind": "single"},
            "load": {"kind": "throughput"},
            "poisson": {"kind": "open_loop", "rate": 3.0},
            "capacity": {"kind": "sweep", "slo_ttft_s": 1.0, "slo_tpot_s": 0.1},
        },
        **extra,
    }


# --- scenario classes ------------------------------------------------------------------------------


def test_every_schema_kind_has_a_class_and_scenario_builds_it():
    kinds = load_schema()["properties"]["scenarios"]["additionalProperties"]["properties"]["kind"]["enum"]
    assert sorted(SCENARIO_KINDS) == sorted(kinds)
    assert type(Scenario(name="s", kind="single")) is Single
    assert type(Scenario(name="t", kind="throughput", concurrency=3, requests=6)) is Throughput
    assert type(Scenario(name="o", kind="open_loop", rate=2.0, duration_s=4)) is OpenLoop
    with pytest.raises(ValueError, match="unknown scenario kind 'soak'"):
        Scenario(name="x", kind="soak")
    with pytest.raises(ValueError, match="does not match"):
        Single(name="x", kind="sweep")


def test_scenarios_come_from_the_validated_config_and_survive_the_spec_file(tmp_path):
    spec = engine_spec(validate_config(_config()), "t")
    by_name = {s.name: s for s in spec.scenarios}
    assert [type(s) for s in spec.scenarios] == [Single, Throughput, OpenLoop, Sweep]
    # the schema's concurrency default (8) reaches every kind but single, which is always 1
    assert by_name["single"].concurrency == 1 and by_name["load"].concurrency == 8
    assert by_name["load"].requests == 16  # 2 x concurrency, at least the sample
    assert by_name["capacity"].max_rate == schema_default("scenarios.*.max_rate")
    write_spec(tmp_path / "t.json", spec)
    assert read_engine_spec(tmp_path / "t.json") == spec
    # a spec file from before the classes (every kind's keys on every scenario) still reads
    old = {
        "name": "single",
        "kind": "single",
        "concurrency": 1,
        "requests": None,
        "workers": 1,
        "rate": None,
        "arrival": "poisson",
        "burstiness": 1.0,
        "seed": 0,
        "rates": [],
        "start_rate": 1.0,
        "max_rate": 256.0,
        "refine_steps": 3,
        "slo_ttft_s": None,
        "slo_tpot_s": None,
    }
    assert Scenario.from_dict(old) == Single(name="single")


def test_each_kind_owns_its_load_shape_context_and_steps():
    single, loop = Single(name="s"), Throughput(name="t", concurrency=4, requests=8, workers=2)
    opened = OpenLoop(name="o", rate=5.0, requests=6, seed=1)
    assert single.load_shape(3).kind == "closed" and single.load_shape(3).concurrency == 1
    assert (loop.load_shape(8).concurrency, loop.load_shape(8).workers) == (4, 2)
    assert opened.load_shape(6).kind == "open" and len(opened.load_shape(6).offsets_s) == 6
    assert opened.run_context("e", "m").rate == 5.0 and loop.run_context("e", "m").rate is None
    records = [
        RequestRecord(
            request_id=str(i),
            prompt_id="p",
            engine="e",
            model="m",
            scenario="c",
            concurrency=1,
            send_time=0.0,
            rate=rate,
        )
        for i, rate in enumerate([2.0, 1.0, 2.0])
    ]
    assert [(rate, len(step)) for rate, step in Sweep.steps(records)] == [(1.0, 1), (2.0, 2)]
    assert Throughput.steps(records) == []


def test_the_merge_plan_asks_the_class_where_a_scenario_goes():
    plan = MergePlan(
        engines={"e": "E"},
        models={"m": "M"},
        scenarios={"s": "single", "t": "throughput", "o": "open_loop", "c": "sweep"},
    )
    assert scenarios_where(plan, "in_speed_table") == ["s"]
    assert scenarios_where(plan, "in_throughput_table") == ["t"]
    assert scenarios_where(plan, "in_load_plot") == ["t", "o"]
    assert scenarios_where(plan, "has_steps") == ["c"]
    assert [scenario_class(plan, name).loop for name in plan.scenarios] == ["closed", "closed", "open", "open"]


# --- defaults live in the schema -----------------------------------------------------------------


def test_code_defaults_are_the_schemas():
    assert CLIENT_LAG_SHARE == schema_default("bench.client_lag_share")
    assert RequestSettings(model_name="m", max_tokens=1).timeout_s == schema_default("bench.request_timeout_s")
    assert BenchSettings().client_lag_share == schema_default("bench.client_lag_share")
    assert EngineSpec(name="e", kind="vllm", label="E", env="x", device="cpu").startup_timeout_s == schema_default(
        "engines.*.startup_timeout_s"
    )
    plan = SweepPlan(slo_ttft_s=1.0, slo_tpot_s=1.0, load=StepLoad(StepWindow(duration_s=60.0)))
    assert (plan.start_rate, plan.max_rate, plan.refine_steps) == tuple(
        schema_default(f"scenarios.*.{key}") for key in ("start_rate", "max_rate", "refine_steps")
    )
    assert (plan.load.window.warmup_s, plan.load.window.saturation_margin, plan.load.arrival) == tuple(
        schema_default(f"scenarios.*.{key}") for key in ("warmup_s", "saturation_margin", "arrival")
    )
    with pytest.raises(KeyError, match="no default for scenarios.*.rate"):
        schema_default("scenarios.*.rate")


# --- loose ends --------------------------------------------------------------------------------------


def test_config_gpu_ids_reach_the_engine_spec():
    config = validate_config(
        {**_config(), "device": "cuda", "gpu_ids": [2, 3], "models": {"m": {"source": "local:/x", "gpus": 1}}}
    )
    assert engine_spec(config, "t").gpu_ids == [2, 3]
    assert engine_spec(validate_config(_config()), "t").gpu_ids == []


def test_the_tgi_native_client_gets_the_request_timeout(tmp_path):
    engine = EngineSpec(
        name="tgi", kind="tgi", label="TGI", env="tgi", device="cpu", bench=BenchSettings(request_timeout_s=42.0)
    )
    ctx = ExtraRunContext("http://127.0.0.1:1", engine, ModelSpec(name="m", path="/m"), tmp_path / "venv", [], tmp_path)
    command = native_command(ctx, tmp_path / "p")
    assert command[command.index("--timeout-s") + 1] == "42.0"
    assert command[command.index("--out") + 1] == str(tmp_path / "native-single.jsonl")


# --- typed records handed between steps ---------------------------------------------------------


def test_server_info_round_trips_and_tolerates_fields_a_newer_writer_added(tmp_path):
    info = ServerInfo(engine="e", kind="vllm", label="E", model="m", device="cpu", command=["serve"], startup_s=1.5)
    info.write(tmp_path / "server.json")
    data = json.loads((tmp_path / "server.json").read_text())
    assert data["command"] == ["serve"] and data["status"] == "ok" and data["finished_at"]
    data["hostname"] = "node7"  # added by another step's writer: read past, not refused
    (tmp_path / "server.json").write_text(json.dumps(data))
    assert ServerInfo.read(tmp_path / "server.json") == info


def test_a_bad_record_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"engine": "e", "startup_s": "slow"}))
    with pytest.raises(HandoffError, match=r"server.json: ServerInfo: field 'startup_s'.*'slow'"):
        ServerInfo.read(path)
    path.write_text("{not json")
    with pytest.raises(HandoffError, match="server.json: not valid JSON"):
        ServerInfo.read(path)
    with pytest.raises(HandoffError, match="missing field 'scenarios'"):
        MergePlan.from_json(json.dumps({"engines": {}, "models": {}}))
    with pytest.raises(HandoffError, match="merge plan: scenario x: unknown scenario kind 'soak'"):
        check_plan(MergePlan.from_json(json.dumps({"engines": {}, "models": {}, "scenarios": {"x": "soak"}})))


def test_memory_report_reads_back_with_its_gpus(tmp_path):
    data = {
        "engine": "e",
        "model": "m",
        "device": "cuda",
        "samples": 3,
        "future_field": 1,
        "gpus": [{"index": 0, "name": "H100", "total_bytes": 80, "used_peak_bytes": 40}],
    }
    Path(tmp_path / "memory.json").write_text(json.dumps(data))
    report = MemoryReport.read(tmp_path / "memory.json")
    assert report.samples == 3 and report.gpus[0].name == "H100" and report.gpus[0].used_peak_bytes == 40
    assert report.interval_s == schema_default("bench.memory_sample_interval_s")

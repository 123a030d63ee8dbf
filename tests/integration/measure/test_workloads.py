"""Every workload kind through its whole path, against the reference server: the prepare step (a real
tokenizer) writes each scenario's requests, the bench job's own scenario runner sends them, the merge
writes workloads.md and the plots draw them. The reference server counts a prompt as its words, so the
prompts' words are checked against the plan here; the real engines' token counts are checked by the
end-to-end test."""

from __future__ import annotations

import json
from dataclasses import asdict

import polars as pl
import pytest
from infbench.engines.base import engine_for
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling, write_spec
from infbench.fileio import write_json_atomic
from infbench.handoff import MergePlan
from infbench.jobs.bench import _run_scenario, prepared_scenario
from infbench.measure.client import ChatRequest, RequestSettings
from infbench.measure.prepared import PreparedRequests
from infbench.measure.recordfiles import write_records
from infbench.measure.refserver import RefServerProcess, RefSettings
from infbench.measure.scenarios import Scenario
from infbench.measure.trace import write_seeded_trace
from infbench.pipeline.prompts import Prompt
from infbench.pipeline.requestprep import main as prepare_main
from infbench.results.plots import PlotData
from infbench.results.tables import merge
from infbench.results.workloadplots import WORKLOAD_PLOT_FILES, write_workload_plots
from infbench.results.workloads import _cached, _per_group

SETTINGS = RequestSettings(model_name="m", max_tokens=6, timeout_s=60)
SCENARIOS = [
    Scenario(name="chat", kind="conversation", conversations=3, max_turns=2, concurrency=2),
    Scenario(name="prefix", kind="shared_prefix", groups=2, prompts_per_group=3, system_tokens=40, question_tokens=8),
    Scenario(name="sizes", kind="synthetic", sizes=[[30, 4], [60, 8]], requests=3, concurrency=2),
    Scenario(name="replay", kind="trace", window={"count": 10}, time_scale=0.05, length_scale=0.05),
    Scenario(
        name="cap",
        kind="capacity",
        slo={"ttft_p90_s": 2.0, "error_rate": 0.0},
        start_rate=10,
        max_rate=20,
        min_rate=5,
        duration_s=0.8,
        warmup_s=0.2,
        saturation_margin=0.9,
        arrival="constant",
    ),
]


@pytest.fixture
def prepared(tmp_path, tiny_tokenizer_dir, monkeypatch):
    """The prepare step's files for every prepared scenario (the seeded trace written as its rule does)."""
    monkeypatch.chdir(tmp_path)
    write_seeded_trace(tmp_path / "results" / "traces" / "seeded-0.jsonl", 0)
    model = ModelSpec(name="m", path=str(tiny_tokenizer_dir), max_model_len=512)
    write_spec(tmp_path / "model.json", model)
    requests_dir = tmp_path / "results" / "requests" / "m"
    for scenario in SCENARIOS:
        if not scenario.prepares:
            continue
        write_json_atomic(tmp_path / f"{scenario.name}.spec.json", asdict(scenario))
        args = ["--scenario-spec", f"{scenario.name}.spec.json", "--model-spec", "model.json", "--max-tokens", "6"]
        assert prepare_main([*args, "--out", str(requests_dir / f"{scenario.name}.json")]) == 0
    return model, requests_dir


def test_every_workload_kind_runs_and_reaches_workloads_md(tmp_path, prepared):
    model, requests_dir = prepared
    engine = EngineSpec(name="ref", kind="vllm", label="Ref", env="x", device="cuda", scenarios=SCENARIOS)
    plan_for = lambda spec: engine_for("vllm").plan(spec, model, tmp_path, "127.0.0.1", 1)  # noqa: E731
    prompts = [Prompt(f"p{i}", ({"role": "user", "content": f"question {i}"},), "t", i) for i in range(4)]
    out = tmp_path / "raw" / "ref" / "m"
    records = {}
    with RefServerProcess(RefSettings(ttft_s=0.01, itl_s=0.002, tokens=20)) as server:
        for scenario in SCENARIOS:
            ready, settings = prepared_scenario(scenario, SETTINGS, requests_dir, engine, plan_for)
            records[scenario.name] = _run_scenario(server.chat_url, prompts, ready, settings, engine, model)
            write_records(out / f"{scenario.name}.jsonl", records[scenario.name])
    for name, recs in records.items():
        assert recs and all(r.ok for r in recs), (name, [r.error for r in recs if not r.ok][:3])

    # Conversations: 3 conversations of 2 turns; turn 2 carries turn 1 and its 6-word answer.
    chat = records["chat"]
    assert sorted((r.conversation, r.turn) for r in chat) == sorted(
        (c, t) for c in {r.conversation for r in chat} for t in (1, 2)
    )
    for turn2 in (r for r in chat if r.turn == 2):
        turn1 = next(r for r in chat if r.conversation == turn2.conversation and r.turn == 1)
        assert turn2.prompt_tokens > turn1.prompt_tokens + 6
    # Prepared prompts: the words the plan says (the server counts words; the plan adds the template's tokens).
    for name in ("prefix", "sizes", "replay"):
        plan = PreparedRequests.read(requests_dir / f"{name}.json")
        words = {f"{name}-{r.id}": r.words() for r in plan.requests}
        assert {r.request_id: r.prompt_tokens for r in records[name]} == words
        assert all(r.planned_prompt_tokens == r.prompt_tokens + plan.template_tokens for r in records[name])
    # Fixed lengths: each trace and synthetic request generated exactly its own output length.
    for name in ("sizes", "replay"):
        assert all(r.output_length == "fixed" and r.completion_tokens == r.max_tokens for r in records[name])
    assert {r.max_tokens for r in records["sizes"]} == {4, 8}
    # Capacity: both rates pass the loose SLO; every counted record carries its step's verdict.
    assert {r.rate for r in records["cap"]} == {10.0, 20.0} and all(r.step_passed for r in records["cap"])

    kinds = {s.name: s.kind for s in SCENARIOS}
    write_json_atomic(out / "server.json", {"status": "ok", "version": "1", "command": ["ref"]})
    plan = MergePlan(engines={"ref": "Ref"}, models={"m": "M"}, scenarios=kinds)
    merge(tmp_path / "raw", tmp_path / "tables", plan)
    text = (tmp_path / "tables" / "workloads.md").read_text()
    for title in ("Capacity (requests/min at the SLO)", "Conversations", "Shared prefix", "Synthetic sizes", "Trace"):
        assert f"## {title}" in text, title
    capacity_row = next(line for line in text.splitlines() if line.startswith("M | "))
    assert capacity_row == "M | 1200.0 (none failed)"  # 20 req/s passed, nothing above it was tried
    turn_rows = [
        line for line in text.splitlines() if line.startswith("Ref | M | 1 |") or line.startswith("Ref | M | 2 |")
    ]
    assert len(turn_rows) == 2
    # A conversation is warm unless declared cold; the reference server says nothing of its cache.
    assert all(line.endswith(" | n/a (warm)") for line in turn_rows), turn_rows
    size_rows = [
        line.split(" | ")[2]
        for line in text.splitlines()
        if line.startswith("Ref | M | 30/4") or line.startswith("Ref | M | 60/8")
    ]
    assert size_rows == ["30/4", "60/8"]
    paths = write_workload_plots(PlotData.load(tmp_path / "raw", plan), tmp_path / "plots")
    assert [p.name for p in paths] == list(WORKLOAD_PLOT_FILES) and all(p.stat().st_size > 5000 for p in paths)


def test_fixed_length_requests_get_the_engines_fields_for_their_own_length(tmp_path, prepared):
    model, requests_dir = prepared
    sizes = next(s for s in SCENARIOS if s.name == "sizes")
    engine = EngineSpec(name="v", kind="vllm", label="vLLM", env="x", device="cuda", sampling=Sampling(max_tokens=64))
    plan_for = lambda spec: engine_for("vllm").plan(spec, model, tmp_path, "127.0.0.1", 1)  # noqa: E731
    ready, settings = prepared_scenario(sizes, SETTINGS, requests_dir, engine, plan_for)
    assert ready.requests_file == str(requests_dir / "sizes.json") and settings.output_length == "fixed"
    body = settings.body([{"role": "user", "content": "x"}], ChatRequest("r", "p", [], max_tokens=8).max_tokens)
    assert (body["max_tokens"], body["min_tokens"], body["ignore_eos"]) == (8, 8, True)
    body = settings.body([{"role": "user", "content": "x"}], ChatRequest("r", "p", []).max_tokens)
    assert body["max_tokens"] == 6 and "min_tokens" not in body  # a request without its own length: as before
    chat = next(s for s in SCENARIOS if s.name == "chat")
    assert prepared_scenario(chat, SETTINGS, requests_dir, engine, plan_for)[1] is SETTINGS


def test_prepare_refuses_sizes_that_do_not_fit_and_names_the_key(tmp_path, prepared, capsys):
    too_long = Scenario(name="big", kind="synthetic", input_tokens=500, output_tokens=100, requests=1)
    write_json_atomic(tmp_path / "big.json", asdict(too_long))
    args = ["--scenario-spec", "big.json", "--model-spec", "model.json", "--max-tokens", "6", "--out", "x.json"]
    assert prepare_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: scenarios.big.input_tokens: 500 prompt tokens") and "context of 512" in err
    assert json.loads((tmp_path / "results" / "requests" / "m" / "sizes.json").read_text())["version"] == 1


def test_cached_prompt_share_counts_only_requests_that_said():
    """cached prompt %: tokens from the cache over the prompt tokens of the requests that reported it."""
    rows = [  # turn 2: 90 of 120 cached, 100 of 140 cached, one request that did not say
        {"turn": 2, "cached_prompt_tokens": 90, "prompt_tokens": 120},
        {"turn": 2, "cached_prompt_tokens": 100, "prompt_tokens": 140},
        {"turn": 2, "cached_prompt_tokens": None, "prompt_tokens": 500},
        {"turn": 1, "cached_prompt_tokens": None, "prompt_tokens": 40},
    ]
    frame = pl.DataFrame(
        [
            {
                **r,
                "ok": True,
                "cache": "warm",
                "ttft_s": 0.1,
                "latency_s": 1.0,
                "completion_tokens": 8,
                "send_time": 0.0,
                "planned_prompt_tokens": None,
            }
            for r in rows
        ],
        schema_overrides={"cached_prompt_tokens": pl.Int64, "planned_prompt_tokens": pl.Int64},
    )
    by_turn = {r["turn"]: _cached(r) for r in _per_group(frame, ["turn"]).iter_rows(named=True)}
    assert by_turn == {1: "n/a (warm)", 2: "73.1% (warm)"}

"""Repeats (scenarios.NAME.repeats): how passes are laid out, summarized, compared and recorded.

Runs are built with the pipeline's own code (fake_run): alpha and beta each ran three passes of a
single and a throughput scenario, each pass 3% slower than the one before; gamma was skipped.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from fake_run import build_run, fake_config
from infbench.cli import main
from infbench.fileio import write_json_atomic
from infbench.handoff import ServerInfo
from infbench.jobs.bench import failure_marker
from infbench.layout import repeat_dir, repeat_dirs, repeat_of
from infbench.measure.metrics import summarize_frame
from infbench.measure.recordframe import read_jsonl_frame
from infbench.pipeline.config import ConfigError, validate_config
from infbench.results import runstatus
from infbench.results.bundle_make import make_bundle
from infbench.results.redact import Redactor

PROMPTS = 6


@pytest.fixture
def three(tmp_path):
    root = tmp_path / "three"
    root.mkdir()
    build_run(root, prompts=PROMPTS, repeats=3)
    return root


def _pass_figure(root, engine: str, repeat: int, figure: str) -> float:
    folder = repeat_dir(root / "results" / "raw" / engine / "tiny", repeat)
    frame = read_jsonl_frame(folder / "throughput.jsonl")
    return getattr(summarize_frame(frame, engine, "tiny", "throughput")[0], figure)


def test_layout_names_each_pass_once(tmp_path):
    run = tmp_path / "raw" / "e" / "m"
    assert repeat_dir(run, 1) == run and repeat_dir(run, 3) == run / "repeat-3"
    for k in (2, 10):
        repeat_dir(run, k).mkdir(parents=True)
    (run / "repeat-1").mkdir()  # not a pass: repeat 1 is the folder itself
    (run / "repeat-x").mkdir()
    assert repeat_dirs(run) == [(1, run), (2, run / "repeat-2"), (10, run / "repeat-10")]
    assert repeat_of(run) is None and repeat_of(run / "repeat-2") == 2
    assert failure_marker(tmp_path / "results" / "raw" / "e" / "m" / "repeat-2") == (
        tmp_path / "results" / "failures" / "e" / "m" / "repeat-2.json"
    )
    assert (
        failure_marker(tmp_path / "results" / "raw" / "e" / "m") == tmp_path / "results" / "failures" / "e" / "m.json"
    )


def test_the_tables_pool_requests_and_average_each_pass_rate(three):
    summary = pl.read_csv(three / "results" / "tables" / "summary.csv")
    alpha = {row["scenario"]: row for row in summary.filter(pl.col("engine") == "alpha").iter_rows(named=True)}
    # requests/min is over a pass's own wall time: the mean of the passes', never the span across them
    passes = [_pass_figure(three, "alpha", k, "requests_per_min") for k in (1, 2, 3)]
    assert passes[0] > passes[1] > passes[2]  # each pass slower: three different figures
    assert alpha["throughput"]["requests_per_min"] == pytest.approx(sum(passes) / 3)
    assert alpha["throughput"]["n"] == 3 * 4  # the requests of every pass
    assert alpha["single"]["n"] == 3 * PROMPTS
    assert alpha["throughput"]["requests_per_min_ci_method"] == "t over 3 repeats"
    low, high = alpha["throughput"]["requests_per_min_ci_low"], alpha["throughput"]["requests_per_min_ci_high"]
    assert low < min(passes) and high > max(passes)
    assert alpha["single"]["tokens_per_s_mean_ci_method"] == f"t over {PROMPTS} prompts"
    table = (three / "results" / "tables" / "throughput.md").read_text()
    assert "t over the repeats" in table and "±" in table


def test_verify_recomputes_the_tables_of_a_run_with_repeats(three, tmp_path, capsys):
    made = make_bundle(three, tmp_path / "bundles", Redactor.from_sources(fake_config()))
    assert main(["verify", str(made.path)]) == 0, capsys.readouterr()


def test_compare_tests_load_scenarios_over_repeats(three, tmp_path, capsys):
    slower = tmp_path / "slower"
    slower.mkdir()
    build_run(slower, prompts=PROMPTS, repeats=3, slow={"beta": 1.5})
    out = tmp_path / "cmp"
    assert main(["compare", str(three), str(slower), "--out", str(out)]) == 0, capsys.readouterr()
    rows = pl.read_csv(out / "compare.csv")
    load = rows.filter((pl.col("scenario") == "throughput") & (pl.col("metric") == "requests/min"))
    by_engine = {row["engine"]: row for row in load.iter_rows(named=True)}
    assert by_engine["alpha"]["unit"] == "repeats" and by_engine["alpha"]["method"] == "Welch t over 3 and 3 repeats"
    assert by_engine["alpha"]["verdict"] == "no significant difference"
    assert by_engine["beta"]["verdict"] == "worse" and by_engine["beta"]["change_pct"] < -25


def test_the_provenance_lists_the_bench_jobs_in_the_order_they_ran(three):
    prov = json.loads((three / "results" / "provenance.json").read_text())
    order = [(job["engine"], job["repeat"]) for job in prov["bench_order"] if job["started_at"]]
    assert order == [("alpha", 1), ("beta", 1), ("alpha", 2), ("beta", 2), ("alpha", 3), ("beta", 3)]
    assert all(job["finished_at"] > job["started_at"] for job in prov["bench_order"] if job["started_at"])
    assert prov["times"]["measurement_finished_at"] > "2027"  # a later pass's records count too


def test_a_busy_or_failed_later_pass_is_marked(three):
    run = three / "results" / "raw" / "beta" / "tiny"
    second = ServerInfo.read(run / "repeat-2" / "server.json")
    second.machine_load = {"throughput": {"busy": True, "other_cpu_share": 0.4}}
    second.write(run / "repeat-2" / "server.json")
    write_json_atomic(
        run / "repeat-3" / "server.json",
        {"engine": "beta", "model": "tiny", "status": "failed", "reason": "server exited", "repeat": 3},
    )
    server = runstatus.with_passes(ServerInfo.read(run / "server.json"), run, lambda scenario: 3)
    assert runstatus.busy(server, "throughput") and not runstatus.busy(server, "single")
    assert server.machine_load["throughput"]["repeat"] == 2 and [p.repeat for p in server.failed_passes] == [3]
    (line,) = runstatus.failure_lines({("beta", "tiny"): server}, {"beta": "Beta"}, ["tiny"])
    assert "repeat 3: server exited" in line and "tiny.repeat-3.log" in line


def _config(**scenario) -> dict:
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 3},
        "sampling": {"max_tokens": 8},
        "models": {"m": {"source": "local:/nowhere/m"}},
        "engines": {"t": {"kind": "transformers", "env": "transformers"}},
        "scenarios": {"s": scenario},
    }


def test_repeats_default_to_one_and_a_sweep_cannot_repeat():
    assert validate_config(_config(kind="throughput"))["scenarios"]["s"]["repeats"] == 1
    assert validate_config(_config(kind="single", repeats=3))["scenarios"]["s"]["repeats"] == 3
    with pytest.raises(ConfigError, match="scenarios.s.repeats"):
        validate_config(_config(kind="single", repeats=0))
    with pytest.raises(ConfigError, match=r"scenarios\.s\.repeats: 2 repeats of a sweep"):
        validate_config(_config(kind="sweep", repeats=2, slo_ttft_s=1.0, slo_tpot_s=0.1))


def test_bench_refuses_a_pass_that_does_not_match_its_folder(tmp_path, capsys):
    args = ["bench", "--engine-spec", "e.json", "--model-spec", "m.json", "--prompts", "p.jsonl", "--venv", "v"]
    args += ["--lock", "l", "--server-log", str(tmp_path / "s.log")]
    assert main([*args, "--out-dir", str(tmp_path / "raw" / "e" / "m"), "--repeat", "2"]) == 2
    assert "--repeat 2" in capsys.readouterr().err
    assert main([*args, "--out-dir", str(tmp_path / "raw" / "e" / "m" / "repeat-3"), "--repeat", "2"]) == 2


def test_a_pass_the_plan_does_not_ask_for_is_not_merged(three, tmp_path):
    from dataclasses import replace

    from infbench.handoff import MergePlan
    from infbench.results.tables import merge

    plan = MergePlan.from_json((three / "results" / "tables" / "merge_plan.json").read_text())
    assert plan.repeats == {"single": 3, "throughput": 3}
    fewer = replace(plan, repeats={"throughput": 2})  # repeat-3 is left over from an earlier config
    summary = merge(three / "results" / "raw", tmp_path / "tables", fewer)
    n = {row["scenario"]: row["n"] for row in summary.filter(pl.col("engine") == "alpha").iter_rows(named=True)}
    assert n == {"single": PROMPTS, "throughput": 2 * 4}


def test_a_pass_runs_its_scenarios_on_the_server_every_pass_gets(tmp_path):
    from infbench.jobs.bench import BenchPaths, pass_scenarios
    from infbench.pipeline.config import engine_spec

    config = validate_config(_config(kind="single", repeats=2))
    config["scenarios"]["t"] = {"kind": "throughput", "concurrency": 2, "repeats": 1}
    engine = engine_spec(validate_config(config), "t")
    paths = BenchPaths(*(tmp_path / n for n in ("e", "m", "p", "v", "l", "o", "s")), scenarios=("s",))
    assert [s.name for s in pass_scenarios(engine, paths)] == ["s"]
    assert [s.name for s in engine.scenarios] == ["s", "t"]  # the server (and its cache plan) sees both
    with pytest.raises(ValueError, match="--scenarios: nope"):
        pass_scenarios(
            engine, BenchPaths(*(tmp_path / n for n in ("e", "m", "p", "v", "l", "o", "s")), scenarios=("nope",))
        )

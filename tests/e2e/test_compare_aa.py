"""A real A/A comparison: the default model on a real `transformers serve`, run twice by the pipeline,
compared with `infbench compare`. Nothing changed between the runs but the machine's state.

What the method can promise here, and what it cannot: a single-request verdict's unit is the prompt
within a run (paired by prompt id), which covers prompt-to-prompt variation, not drift of the machine
between two separate runs. With one run each, that drift reads as a change, and with 8 paired prompts
a few percent of it can be significant (CI, 2 cores, no mark: tokens/s -5.7% and TTFT p50 +24.2% in one
pair; tokens/s -14.0%, TPOT p50 +14.9%, latency p50 +16.0%, TTFT p50 +47.0% in another, all called
worse). So the test asserts what holds: a run compared with itself shows no change and no verdict
(exact); two runs are compared paired by prompt; every cell called better or worse is explained by a
mark (busy machine, client lag, failed requests) or its change stays within DRIFT_BOUND_PCT, the
drift of an unmarked shared machine (docs/compare.md, "Two runs on one machine"); and a CI guard at
that bound (`--fail-if-worse`) passes.

Slow (two pipeline runs on the session's prepared env and model): marked `slow`.
"""

from __future__ import annotations

import os
import subprocess

import polars as pl
import pytest
import yaml
from conftest import REPO, workdir_from_prepared

pytestmark = pytest.mark.slow

# Run-to-run drift of an unmarked shared 2-core machine, per metric, in % of A (evidence and reasoning
# in docs/compare.md): about 2-3x the largest change seen unmarked (tokens/s -14.0%, requests/min
# -19.4%, latency p50 +16.0%, TTFT p50 +47.0%). A TTFT of ~0.1 s is mostly scheduling and the first
# forward pass, so it moves most with the machine.
DRIFT_BOUND_PCT = {
    "tokens/s": 50.0,
    "requests/min": 50.0,
    "TPOT p50": 50.0,
    "latency p50": 50.0,
    "latency p99": 50.0,
    "TTFT p50": 100.0,
}


def _config() -> dict:
    """The default config (its model and its 8 builtin prompts) with the one engine prepared here,
    shorter completions and a smaller closed loop, so two runs fit the test's time on a busy machine."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["engines"] = {"transformers": config["engines"]["transformers"]}
    config["sampling"]["max_tokens"] = 32
    config["scenarios"]["throughput"].update(concurrency=2, requests=8)
    config["bench"] = {"warmup_requests": 1}
    return config


@pytest.fixture(scope="module")
def two_runs(snakemake, tmp_path_factory, prepared_transformers):
    runs = []
    for name in ("a", "b"):
        workdir = workdir_from_prepared(prepared_transformers, tmp_path_factory.mktemp("aa") / name)
        config_path = workdir / "aa.yaml"
        config_path.write_text(yaml.safe_dump(_config(), sort_keys=False))
        result = snakemake(workdir, "--configfile", str(config_path), timeout=2400)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        runs.append(workdir)
    return runs


def _compare(a, b, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["infbench", "compare", str(a), str(b), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
    )


def test_a_run_compared_with_itself_shows_no_change(two_runs, tmp_path):
    a, _ = two_runs
    out = tmp_path / "self"
    result = _compare(a, a, out, "--fail-if-worse", "0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = pl.read_csv(out / "compare.csv", schema_overrides={"marks_a": pl.String, "marks_b": pl.String})
    assert rows.height > 0
    assert rows["change_pct"].abs().max() == 0.0
    assert not rows["verdict"].is_in(["better", "worse"]).any()
    tested = rows.filter(pl.col("p").is_not_null())
    assert set(tested["verdict"]) == {"no significant difference"}


def test_two_runs_of_the_default_model_differ_only_within_drift(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "compare"
    result = _compare(a, b, out)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "compare.md").read_text()
    print(text)  # the comparison, for the record (pytest -s)
    assert "git commit" not in text.split("## Changes")[0]  # the same checkout ran both
    assert "paired by prompt id" in text  # the same prompt sample: paired
    assert "drift" in text  # the method text says what a verdict between two runs can and cannot tell
    rows = pl.read_csv(out / "compare.csv", schema_overrides={"marks_a": pl.String, "marks_b": pl.String})
    tested = rows.filter(pl.col("p").is_not_null())
    # tokens/s and the p50s of the single-request scenario, paired over the 8 builtin prompts.
    single = tested.filter(pl.col("scenario") == "single")
    assert set(single["metric"]) >= {"tokens/s", "TTFT p50", "latency p50"}
    assert set(single["method"].str.contains("paired")) == {True}
    called = rows.filter(pl.col("verdict").is_in(["better", "worse"]))
    marked = pl.col("marks_a").fill_null("").ne("") | pl.col("marks_b").fill_null("").ne("")
    beyond = called.filter(~marked).filter(
        pl.col("change_pct").abs() > pl.col("metric").replace_strict(DRIFT_BOUND_PCT, default=0.0)
    )
    assert beyond.is_empty(), f"called different beyond drift without a mark:\n{beyond}\n{text}"
    # A CI guard at the widest bound passes on an A/A pair; only a marked cell may be worse beyond it.
    bound = max(DRIFT_BOUND_PCT.values())
    higher_is_better = pl.col("metric").is_in(["tokens/s", "requests/min"])
    worse_by = pl.when(higher_is_better).then(-pl.col("change_pct")).otherwise(pl.col("change_pct"))
    beyond_guard = called.filter((pl.col("verdict") == "worse") & (worse_by > bound))
    assert beyond_guard.filter(~marked).is_empty(), f"worse beyond {bound}% without a mark:\n{beyond_guard}"
    guard = _compare(a, b, tmp_path / "guard", "--fail-if-worse", str(bound))
    assert guard.returncode == (1 if beyond_guard.height else 0), guard.stdout + guard.stderr

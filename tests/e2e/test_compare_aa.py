"""A real A/A comparison: the default model on a real `transformers serve`, run twice by the pipeline,
compared with `infbench compare`. Nothing changed between the runs, so no cell may be called better
or worse unless a mark explains it (a busy machine, client lag or failed requests in that cell).

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


def test_two_runs_of_the_default_model_are_not_called_different(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "compare"
    result = subprocess.run(
        ["infbench", "compare", str(a), str(b), "--out", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "compare.md").read_text()
    print(text)  # the comparison, for the record (pytest -s)
    assert "git commit" not in text.split("## Changes")[0]  # the same checkout ran both
    rows = pl.read_csv(out / "compare.csv", schema_overrides={"marks_a": pl.String, "marks_b": pl.String})
    tested = rows.filter(pl.col("p").is_not_null())
    # tokens/s and the p50s of the single-request scenario, paired over the 8 builtin prompts.
    assert set(tested.filter(pl.col("scenario") == "single")["metric"]) >= {"tokens/s", "TTFT p50", "latency p50"}
    called = rows.filter(pl.col("verdict").is_in(["better", "worse"]))
    unexplained = called.filter(pl.col("marks_a").fill_null("").eq("") & pl.col("marks_b").fill_null("").eq(""))
    assert unexplained.is_empty(), f"called different without a mark:\n{unexplained}\n{text}"

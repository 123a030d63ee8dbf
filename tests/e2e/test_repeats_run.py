"""Repeats on a real engine: the default model on a real `transformers serve`, its single-request
scenario run in two passes (scenarios.single.repeats: 2), each its own bench job and server; the
throughput scenario once. The passes land in results/raw/E/M and results/raw/E/M/repeat-2, the
tables pool them, the provenance lists the jobs in the order they ran, and a lost pass reruns alone.

Slow (one pipeline run on the session's prepared env and model): marked `slow`.
"""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml
from conftest import PREPARED_MODEL, REPO, workdir_from_prepared

pytestmark = pytest.mark.slow

ENGINE = "transformers"


def _config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["engines"] = {ENGINE: config["engines"][ENGINE]}
    config["sampling"]["max_tokens"] = 16
    config["scenarios"] = {
        "single": {"kind": "single", "repeats": 2},
        "throughput": {"kind": "throughput", "concurrency": 2, "requests": 4},
    }
    config["bench"] = {"warmup_requests": 1}
    return config


@pytest.fixture(scope="module")
def run(snakemake, tmp_path_factory, prepared_transformers):
    workdir = workdir_from_prepared(prepared_transformers, tmp_path_factory.mktemp("repeats") / "wd")
    config_path = workdir / "repeats.yaml"
    config_path.write_text(yaml.safe_dump(_config(), sort_keys=False))
    result = snakemake(workdir, "--configfile", str(config_path), timeout=2400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir, config_path


def test_each_pass_is_its_own_job_and_the_tables_pool_them(run):
    workdir, _ = run
    raw = workdir / "results" / "raw" / ENGINE / PREPARED_MODEL
    second = raw / "repeat-2"
    assert sorted(p.name for p in second.glob("*.jsonl")) == ["single.jsonl"]  # throughput: one pass
    servers = [json.loads((folder / "server.json").read_text()) for folder in (raw, second)]
    assert [s["repeat"] for s in servers] == [1, 2] and all(s["status"] == "ok" for s in servers)
    assert servers[0]["command"] and servers[1]["command"]  # a server of its own each
    prov = json.loads((workdir / "results" / "provenance.json").read_text())
    order = [(job["engine"], job["repeat"]) for job in prov["bench_order"]]
    assert order == [(ENGINE, 1), (ENGINE, 2)]
    first, then = prov["bench_order"]
    assert first["finished_at"] <= then["started_at"]  # one after the other, never overlapping
    summary = pl.read_csv(workdir / "results" / "tables" / "summary.csv")
    single = summary.filter((pl.col("engine") == ENGINE) & (pl.col("scenario") == "single")).row(0, named=True)
    prompts = len(pl.read_ndjson(raw / "single.jsonl")["prompt_id"].unique())
    assert single["n"] == 2 * prompts  # both passes' requests
    assert single["tokens_per_s_mean_ci_method"] == f"t over {prompts} prompts"
    throughput = summary.filter((pl.col("engine") == ENGINE) & (pl.col("scenario") == "throughput")).row(0, named=True)
    assert throughput["n"] == 4


def test_a_lost_pass_is_measured_again_alone(run, snakemake, job_counts):
    workdir, config_path = run
    shutil.rmtree(workdir / "results" / "raw" / ENGINE / PREPARED_MODEL / "repeat-2")
    said = snakemake(workdir, "--configfile", str(config_path), "-n").stdout
    counts = job_counts(said)
    assert counts.get("bench_repeat") == 1 and "bench" not in counts, said[-3000:]

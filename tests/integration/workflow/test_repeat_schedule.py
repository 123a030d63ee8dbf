"""How repeats are scheduled, read from Snakemake's own plan (a dry run, no engine started): one
bench job per (engine, model, pass), pass K waiting for pass K-1 of every engine on the model (so
engines interleave: A B, A B, not A A, B B), each pass running the scenarios repeated that often;
without repeats nothing changes."""

from __future__ import annotations

import re

import yaml
from conftest import REPO, copy_workflow


def _plan(tmp_path, snakemake, repeats: dict[str, int]) -> str:
    workdir = copy_workflow(tmp_path / "wd")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    transformers = config["engines"]["transformers"]
    config["engines"] = {"a": transformers, "b": dict(transformers)}
    for scenario, count in repeats.items():
        config["scenarios"][scenario]["repeats"] = count
    (workdir / "r.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(workdir, "-n", "-p", "--configfile", "r.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _jobs(plan: str, rule: str) -> list[dict]:
    """Each job of `rule` in a dry run: its inputs, output, wildcards and shell command."""
    jobs = []
    for block in (part.split("\n\n")[0] for part in plan.split(f"rule {rule}:\n")[1:]):
        fields = dict(re.findall(r"^    (input|output|wildcards): (.*)$", block, re.M))
        command = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs.append(
            {
                "inputs": fields["input"].split(", "),
                "output": fields["output"],
                "wildcards": dict(w.split("=") for w in fields["wildcards"].split(", ")),
                "command": command.group(1) if command else "",
            }
        )
    return jobs


def test_pass_k_waits_for_pass_k_minus_1_of_every_engine(tmp_path, snakemake, job_counts):
    plan = _plan(tmp_path, snakemake, {"single": 3, "throughput": 2})
    counts = job_counts(plan)
    assert counts["bench"] == 2 and counts["bench_repeat"] == 4  # passes 2 and 3 of a and b
    model = "smollm2-135m"
    for job in _jobs(plan, "bench_repeat"):
        engine, k = job["wildcards"]["engine"], int(job["wildcards"]["repeat"])
        assert job["output"] == f"results/raw/{engine}/{model}/repeat-{k}"
        before = [
            f"results/raw/{e}/{model}/server.json" if k == 2 else f"results/raw/{e}/{model}/repeat-{k - 1}"
            for e in ("a", "b")
        ]
        assert set(before) <= set(job["inputs"]), job
        # pass 2 runs both scenarios, pass 3 only the one repeated three times
        expected = "--scenarios single throughput " if k == 2 else "--scenarios single "
        assert expected in job["command"] and f"--repeat {k}" in job["command"], job["command"]
    merge = plan.split("rule merge:\n")[1].split("\n\n")[0]
    assert all(f"results/raw/{e}/{model}/repeat-{k}" in merge for e in ("a", "b") for k in (2, 3))


def test_without_repeats_there_is_one_bench_job_per_engine_and_model(tmp_path, snakemake, job_counts):
    counts = job_counts(_plan(tmp_path, snakemake, {}))
    assert counts["bench"] == 2 and "bench_repeat" not in counts

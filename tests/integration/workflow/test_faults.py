"""The fault matrix: each fault a user can meet, made real, and what the user sees afterwards.

Every test asserts the user-visible outcome: a clear message, no orphan process, no stale or partial
file accepted as done, the other engines' results intact, the failure visible in the tables, a rerun
that repeats only what failed, no secret in any file the pipeline wrote.

Three kinds of rig, cheapest first:
- no server (config, prompts, output folders, bundles): plain CLI and `snakemake -n` calls;
- the reference server (measure/refserver.py, a real HTTP server in its own process) standing in as
  a `transformers` engine through a venv whose `transformers` runs it: process faults (kill, stop,
  Ctrl-C, kill -9 of snakemake, a port taken) on a real server that starts in a second;
- the real transformers engine on SmolLM2, one prepared env and model for the whole module: a bad
  flag under -k, deleted records, secrets through a whole run and its bundle, a busy machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO, cell_number, copy_workflow, pipeline_env, write_built_files

WORKFLOW = REPO / "workflow"
# Looks like a Hugging Face token; never a real one. Built at run time so no file holds it whole.
SECRET = "hf_" + "faultMatrix7" * 3


def _infbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infbench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=pipeline_env(),
        timeout=300,
    )


def _leftovers(workdir: Path) -> list[str]:
    """Processes still running from this work directory (servers, bench jobs, load workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            if str(workdir) in " ".join(proc.info["cmdline"] or []) or proc.info["cwd"] == str(workdir):
                found.append(" ".join(proc.info["cmdline"] or []))
        except psutil.Error:
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_no_leftovers(workdir: Path, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = _leftovers(workdir)
        if not left:
            return []
        time.sleep(0.5)
    return _leftovers(workdir)


def _files_holding(root: Path, needle: str) -> list[str]:
    """Every file under root (results, logs, .snakemake, bundles, unpacked too) that holds needle."""
    hits = []
    data_needle = needle.encode()
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if data_needle in data:
            hits.append(str(path.relative_to(root)))
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if member.isfile() and data_needle in tar.extractfile(member).read():
                        hits.append(f"{path.relative_to(root)}:{member.name}")
    return hits


# --- faults without a server --------------------------------------------------------------------


def test_nested_config_overrides_of_numbers_are_read_as_numbers(snakemake, tmp_path):
    """Fault 1: `--config sampling='{max_tokens: 5}'` said `'5' is not of type 'integer'`."""
    workdir = copy_workflow(tmp_path / "wd")
    result = snakemake(workdir, "-n", "--config", "sampling={max_tokens: 5}", "bench={request_timeout_s: 20}")
    assert result.returncode == 0, result.stderr[-2000:]
    spec_params = result.stdout + result.stderr
    assert "is not of type" not in spec_params
    bad = snakemake(workdir, "-n", "--config", "sampling={max_tokens: many}")
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr
    assert "sampling.max_tokens" in said and "'many' is not of type 'integer'" in said


def test_override_strings_are_read_only_where_the_schema_wants_another_type():
    """As Snakemake hands nested --config values over: every scalar a string."""
    from infbench.pipeline.config import ConfigError, validate_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["sampling"].update(max_tokens="5", temperature="0.5")
    config["scenarios"]["throughput"].update(concurrency="3", workers="2")
    config["engines"]["vllm"]["server_env"]["VLLM_CPU_KVCACHE_SPACE"] = "2"  # a string stays a string
    config["engines"]["transformers"]["args"] = ["--port-offset", "7"]
    valid = validate_config(config)
    assert valid["sampling"]["max_tokens"] == 5 and valid["sampling"]["temperature"] == 0.5
    assert valid["scenarios"]["throughput"]["concurrency"] == 3 and valid["scenarios"]["throughput"]["workers"] == 2
    assert valid["engines"]["vllm"]["server_env"]["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert valid["engines"]["transformers"]["args"] == ["--port-offset", "7"]
    config["scenarios"]["throughput"]["workers"] = "auto"
    assert validate_config(config)["scenarios"]["throughput"]["workers"] == "auto"
    config["bench"] = {"request_timeout_s": "soon"}
    with pytest.raises(ConfigError, match="bench.request_timeout_s: 'soon' is not of type 'number'"):
        validate_config(config)


def test_hostile_config_names_are_refused_by_name(snakemake, tmp_path):
    """Engine, model and scenario names become paths and wildcards: `../x` or `a;rm` must not pass."""
    workdir = copy_workflow(tmp_path / "wd")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["engines"]["../../etc"] = config["engines"].pop("transformers")
    (workdir / "hostile.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "--configfile", "hostile.yaml")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "engines" in said and "../../etc" in said
    assert not (workdir / "results").exists() and not (tmp_path / "etc").exists()


def test_a_secret_value_in_the_config_is_refused_before_anything_runs(snakemake, tmp_path):
    """Fault 8, part one: a token written into server_env would reach spec files and Snakemake's logs."""
    workdir = copy_workflow(tmp_path / "wd")
    result = snakemake(workdir, "-n", "--config", f"engines={{vllm: {{server_env: {{HF_TOKEN: {SECRET}}}}}}}")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "engines.vllm.server_env.HF_TOKEN" in said and "from_env" in said
    assert SECRET not in said  # the refusal does not echo the value
    assert not _files_holding(workdir, SECRET)


def test_bad_dataset_rows_and_non_utf8_prompts_name_the_file_and_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": 3}\n')
    out = tmp_path / "sample.jsonl"
    result = _infbench("prompts", "--source", f"jsonl:{rows}", "--n", "1", "--out", str(out))
    assert result.returncode == 2 and "line 2" in result.stderr and str(rows) in result.stderr
    assert not out.exists()
    rows.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}]}\n{"prompt": "caf\xe9"}\n')
    result = _infbench("prompts", "--source", f"jsonl:{rows}", "--n", "1", "--out", str(out))
    assert result.returncode == 2 and "line 2" in result.stderr and "UTF-8" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_huge_prompt_is_sampled_whole_and_sent_over_real_http(tmp_path):
    import asyncio

    from infbench.measure.client import ChatRequest, RequestSettings, RunContext
    from infbench.measure.refserver import RefServerProcess, RefSettings
    from infbench.measure.runners import run_single

    huge = "word " * 400_000  # 2 MB in one message
    rows = tmp_path / "huge.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": huge}]}) + "\n")
    out = tmp_path / "sample.jsonl"
    result = _infbench("prompts", "--source", f"jsonl:{rows}", "--n", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    sampled = json.loads(out.read_text())
    assert sampled["messages"][0]["content"] == huge
    with RefServerProcess(RefSettings(ttft_s=0.0, itl_s=0.0, tokens=4)) as server:
        request = ChatRequest(request_id="huge-0", prompt_id=sampled["id"], messages=sampled["messages"])
        settings = RequestSettings(model_name="ref", max_tokens=4, timeout_s=30)
        records = asyncio.run(
            run_single(
                server.chat_url,
                [request],
                settings,
                RunContext(engine="ref", model="m", scenario="huge", concurrency=1),
            )
        )
    assert records[0].ok and records[0].completion_tokens == 4, records[0].error


def test_unwritable_output_folder_is_one_clear_line_before_any_server(tmp_path):
    """Fault 7: found before the server starts, said in one line; the traceback is in the log."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be\n")  # unwritable even for root
    log = tmp_path / "logs" / "bench.log"
    result = _infbench(
        "bench",
        "--engine-spec",
        str(tmp_path / "missing-spec.json"),
        "--model-spec",
        str(tmp_path / "m.json"),
        "--prompts",
        str(tmp_path / "p.jsonl"),
        "--venv",
        str(tmp_path / "venv"),
        "--lock",
        str(tmp_path / "l"),
        "--out-dir",
        str(blocker / "raw" / "e" / "m"),
        "--server-log",
        str(tmp_path / "logs" / "server.log"),
        "--log",
        str(log),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: bench: cannot write to ") and "results/raw/e/m" in lines[-1]
    assert "Traceback" not in result.stderr
    assert "Traceback" in log.read_text() and "NotWritableError" in log.read_text()
    assert not (tmp_path / "logs" / "server.log").exists()  # no server was started


def test_hostile_bundle_is_refused_before_extraction(tmp_path):
    bundle = tmp_path / "evil.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        data = b"owned\n"
        info = tarfile.TarInfo("run/../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = _infbench("verify", str(bundle), cwd=tmp_path)
    assert result.returncode == 2 and "REFUSED" in result.stderr and "escaped.txt" in result.stderr
    assert not (tmp_path.parent / "escaped.txt").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_server_identity_a_stand_in_on_our_port_is_not_benchmarked(tmp_path):
    """Fault 6, the server layer: health 200 from a process that is not ours never counts."""
    from infbench.engines.server import ManagedServer, PortClashError

    with _StandIn() as stand_in:
        server = ManagedServer(
            # Our process never binds the port, so only the stand-in answers: its 200 must not count.
            command=[sys.executable, "-c", "import time; time.sleep(60)"],
            log_path=tmp_path / "server.log",
            health_url=f"http://127.0.0.1:{stand_in.port}/health",
            env=pipeline_env(),
            startup_timeout_s=3,
            port=stand_in.port,
        )
        with server, pytest.raises(PortClashError, match=f"port {stand_in.port} answers, but not from the server"):
            server.wait_healthy()
        assert stand_in.health_hits > 0  # it did answer 200: the owner check, not luck, refused it
    assert server.process is None


def test_server_identity_a_real_server_that_loses_the_port_is_a_clash(tmp_path):
    """Fault 6, the other way it happens: our real server fails to bind a port a stand-in holds
    (it exits saying the address is in use, or the stand-in answers first): a clash, not a result."""
    from infbench.engines.server import ManagedServer, PortClashError

    with _StandIn() as stand_in:
        server = ManagedServer(
            command=[sys.executable, "-m", "infbench.measure.refserver", "--port", str(stand_in.port)],
            log_path=tmp_path / "server.log",
            health_url=f"http://127.0.0.1:{stand_in.port}/health",
            env=pipeline_env(),
            startup_timeout_s=20,
            port=stand_in.port,
        )
        with server, pytest.raises(PortClashError, match=f"port {stand_in.port}"):
            server.wait_healthy()
    assert server.process is None


class _StandIn:
    """A stand-in HTTP server that answers 200 to everything (a race cannot be produced on demand)."""

    def __init__(self) -> None:
        outer = self
        self.health_hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.health_hits += self.path == "/health"
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def __enter__(self) -> _StandIn:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_missing_model_is_one_line_naming_it_and_writes_nothing(tmp_path):
    out, meta = tmp_path / "models" / "ghost", tmp_path / "ghost.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infbench.pipeline.models",
            "--name",
            "ghost",
            "--source",
            "local:/nowhere/ghost",
            "--dtype",
            "bfloat16",
            "--out",
            str(out),
            "--meta",
            str(meta),
        ],
        capture_output=True,
        text=True,
        env=pipeline_env(),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: model ghost: local model /nowhere/ghost has no config.json: point local: at an HF-format directory"
    )
    assert not meta.exists() and not out.exists()


def test_busy_machine_cpu_outside_the_tree_is_counted_and_named():
    """Fault 9, the measurement: CPU used outside the bench job's tree, with its processes named;
    CPU used inside the tree (here: a child of the root) is the bench job's own."""
    from infbench.measure.busy import LoadWatch

    # The tree: a root that runs a CPU-bound child of its own (as a bench job runs its server).
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.time()\\n"
            "while time.time()-t<3: pass'])\ntime.sleep(30)",
        ]
    )
    try:
        time.sleep(0.5)
        inside = [p.pid for p in psutil.Process(root.pid).children()]
        watch = LoadWatch(limit=0.1, root_pid=root.pid)  # this test process is "someone else"
        watch.start()
        started = time.process_time()
        while time.process_time() - started < 1.0:
            pass
        load = watch.stop("single", top=1000)
    finally:
        for child in psutil.Process(root.pid).children():
            child.kill()
        root.kill()
        root.wait()
    assert inside and load.other_cpu_s >= 0.9 and load.busy
    culprits = {c["pid"]: c for c in load.culprits}
    assert culprits[os.getpid()]["cpu_s"] >= 0.9 and culprits[os.getpid()]["name"] and culprits[os.getpid()]["user"]
    assert not set(inside) & set(culprits)  # the tree's own CPU is not someone else's
    assert "other processes used" in load.summary() and f"pid {os.getpid()}" in load.summary()
    assert load.to_dict()["busy"] is True


def test_busy_machine_other_processes_on_a_leased_gpu_are_named():
    """NVML's lists of a leased GPU, with a stand-in NVML (no GPU here): processes outside the tree
    are named, the bench job's own are not, GPUs not leased are not looked at."""
    from types import SimpleNamespace

    from infbench.measure.busy import gpu_other_processes

    procs = {
        0: [SimpleNamespace(pid=os.getpid(), usedGpuMemory=2**30), SimpleNamespace(pid=11, usedGpuMemory=5)],
        1: [SimpleNamespace(pid=12, usedGpuMemory=7)],
    }
    nvml = SimpleNamespace(
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetComputeRunningProcesses=lambda handle: procs[handle],
        nvmlDeviceGetGraphicsRunningProcesses=lambda handle: [],
    )
    found = gpu_other_processes(nvml, ["0"], tree={11})
    assert found == [{"gpu": "0", "pid": os.getpid(), "name": psutil.Process().name(), "used_bytes": 2**30}]


def test_tables_show_a_failed_job_and_mark_a_busy_scenario(tmp_path):
    """Faults 2, 3 and 9 as the merge sees them: a failed job's cells say so (even when it left some
    records before dying), a busy scenario is marked and its culprits are named in details.md."""
    from fake_run import build_run
    from infbench.results.tables import merge

    run = build_run(tmp_path)
    raw = tmp_path / "results" / "raw"
    beta = json.loads((raw / "beta/tiny/server.json").read_text())
    beta.update(status="failed", reason="server exited with code -9 during scenario single")
    (raw / "beta/tiny/server.json").write_text(json.dumps(beta))
    alpha = json.loads((raw / "alpha/tiny/server.json").read_text())
    alpha["machine_load"] = {
        "single": {
            "scenario": "single",
            "wall_s": 10.0,
            "cpus": 2,
            "other_cpu_s": 9.0,
            "other_cpu_share": 0.45,
            "limit": 0.1,
            "busy": True,
            "gpu_others": [],
            "culprits": [{"pid": 4242, "name": "make", "user": "ci", "cpu_s": 8.5}],
        },
        "throughput": {
            "scenario": "throughput",
            "wall_s": 10.0,
            "cpus": 2,
            "other_cpu_s": 0.2,
            "other_cpu_share": 0.01,
            "limit": 0.1,
            "busy": False,
            "gpu_others": [],
            "culprits": [],
        },
    }
    (raw / "alpha/tiny/server.json").write_text(json.dumps(alpha))
    tables = tmp_path / "tables"
    merge(raw, tables, run["plan"])
    speed = (tables / "inference_speed.md").read_text()
    assert _cell_of(speed, "Tiny", "Beta") == "failed: server exited with code -9 during scenario single"
    alpha_cell = _cell_of(speed, "Tiny", "Transformers")
    assert alpha_cell.endswith("!") and cell_number(alpha_cell) > 0
    assert not alpha_cell.startswith("**")  # no "best" against a failed job's partial records
    assert "- FAILED: Beta (tiny): server exited with code -9" in speed
    assert "- WARNING (!): alpha/tiny/single: the machine was busy: other processes used 9.0 CPU s" in speed
    throughput = (tables / "throughput.md").read_text()
    assert not _cell_of(throughput, "Tiny", "Transformers").endswith("!")  # a quiet scenario is not marked
    details = (tables / "details.md").read_text()
    assert "## Machine load" in details and "make (pid 4242, ci) 8.5" in details


def _cell_of(table: str, row_label: str, column: str) -> str:
    lines = table.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("Model |")).split("|")]
    row = [c.strip() for c in next(line for line in lines if line.startswith(f"{row_label} |")).split("|")]
    return row[header.index(column)]


# --- the reference server as an engine: process faults ------------------------------------------

REF_SHIM = """#!/bin/sh
# Stands in for `transformers serve MODEL --host H --port P ...`: the reference server (a real HTTP
# server with known timing) on that host and port. The bench job clears PYTHONPATH for servers.
shift 2
while [ $# -gt 0 ]; do
  case "$1" in --host) host=$2; shift ;; --port) port=$2; shift ;; esac
  shift
done
PYTHONPATH={workflow} exec {python} -m infbench.measure.refserver --host "$host" --port "$port" \\
  --ttft {ttft} --itl {itl} --tokens 16
"""


def _ref_config(**bench) -> dict:
    return {
        "device": "cpu",
        "tools_env": "refserver",
        "prompts": {"source": "builtin", "n": 3, "seed": 1},
        "models": {"tiny": {"source": "local:/nowhere/tiny"}},
        "engines": {"ref": {"kind": "transformers", "env": "refserver", "startup_timeout_s": 30}},
        "sampling": {"max_tokens": 16},
        "scenarios": {
            "single": {"kind": "single"},
            "throughput": {"kind": "throughput", "concurrency": 2, "requests": 6},
        },
        "bench": {"warmup_requests": 0, "request_timeout_s": 30, **bench},
    }


def ref_workdir(root: Path, config: dict, ttft: float = 0.05, itl: float = 0.05) -> Path:
    """A copy of the pipeline whose engine `ref` runs the reference server; env and model are
    already "built" (files in the order Snakemake expects, oldest first), so only the bench runs."""
    workdir = copy_workflow(root)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    files = {
        "envs/refserver.txt": "# the reference server: no packages, see tests/integration/workflow/test_faults.py\n",
        ".venvs/refserver/bin/transformers": REF_SHIM.format(
            workflow=WORKFLOW, python=sys.executable, ttft=ttft, itl=itl
        ),
        ".venvs/refserver/.infbench-built": "stand-in\n",
        "results/envs/refserver.lock": "transformers==0.0+refserver\n",
        "resources/models/tiny/generation_config.json": json.dumps({"eos_token_id": 2}),
        "results/models/tiny.json": json.dumps({"name": "tiny", "source": "local:/nowhere/tiny", "files": {}}),
    }
    write_built_files(workdir, files)
    os.chmod(workdir / ".venvs/refserver/bin/transformers", 0o755)
    return workdir


REF_TARGET = "results/raw/ref/tiny/server.json"


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A failing test must not leave its snakemake (and bench job, server) running."""
    yield
    while _STARTED:
        snake = _STARTED.pop()
        if snake.poll() is None:
            os.killpg(snake.pid, signal.SIGKILL)  # its bench job stops itself when snakemake is gone
            snake.wait()


def _start_snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    snake = subprocess.Popen(
        ["snakemake", "--cores", "2", *args, "--configfile", "config.yaml"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or pipeline_env(),
        start_new_session=True,
    )
    _STARTED.append(snake)
    return snake


def _wait_for_server(
    snake: subprocess.Popen, workdir: Path, timeout_s: float = 120
) -> tuple[psutil.Process, psutil.Process]:
    """(bench job, server) once the bench log says the server is healthy."""
    log = workdir / "logs/bench/ref/tiny.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if snake.poll() is not None:
            raise AssertionError(f"snakemake ended early: {snake.stdout.read()[-3000:]}")
        if log.exists() and "server healthy" in log.read_text():
            tree = psutil.Process(snake.pid).children(recursive=True)
            bench = next(p for p in tree if "bench" in p.cmdline() and "--engine-spec" in p.cmdline())
            server = next(p for p in tree if "infbench.measure.refserver" in " ".join(p.cmdline()))
            return bench, server
        time.sleep(0.2)
    raise AssertionError("the server never became healthy")


@pytest.mark.slow
def test_clean_run_resolves_secrets_by_name_and_flags_a_busy_machine(tmp_path):
    """Faults 8 and 9 on the reference server, and listen addresses: the server gets the secret from
    the bench job's environment and no file holds it; a CPU hog outside the bench job is named."""
    config = _ref_config()
    config["engines"]["ref"]["server_env"] = {"HF_TOKEN": {"from_env": "INFBENCH_FAULT_TOKEN"}}
    workdir = ref_workdir(tmp_path / "wd", config, ttft=0.2, itl=0.05)
    hog = subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True)
    try:
        snake = _start_snakemake(workdir, REF_TARGET, env=pipeline_env(INFBENCH_FAULT_TOKEN=SECRET))
        bench, server = _wait_for_server(snake, workdir)
        assert f"HF_TOKEN={SECRET}" in open(f"/proc/{server.pid}/environ", "rb").read().decode(errors="replace").split(
            "\0"
        )
        listening = {c.laddr.ip for c in server.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}  # loopback only, as bench.host says
        output, _ = snake.communicate(timeout=300)
    finally:
        hog.kill()
        hog.wait()
    assert snake.returncode == 0, output[-3000:]
    server_json = json.loads((workdir / REF_TARGET).read_text())
    assert server_json["status"] == "ok"
    loads = server_json["machine_load"]
    assert set(loads) == {"single", "throughput"}
    for load in loads.values():
        assert load["busy"] and load["other_cpu_s"] > 0.3 * load["wall_s"]
        assert hog.pid in [c["pid"] for c in load["culprits"]]
    assert "the machine was busy" in (workdir / "logs/bench/ref/tiny.log").read_text()
    assert SECRET not in output
    assert not _files_holding(workdir, SECRET)
    spec = json.loads((workdir / "results/specs/engines/ref.json").read_text())
    assert spec["server_env_from"] == {"HF_TOKEN": "INFBENCH_FAULT_TOKEN"} and spec["server_env"] == {}
    assert not _wait_no_leftovers(workdir)


@pytest.mark.slow
def test_server_killed_mid_run_is_recorded_as_failed_and_repeated(job_counts, snakemake, tmp_path):
    """Fault 3: server.json said "ok" after the server died."""
    workdir = ref_workdir(tmp_path / "wd", _ref_config(), ttft=0.3, itl=0.05)
    snake = _start_snakemake(workdir, REF_TARGET)
    _, server = _wait_for_server(snake, workdir)
    time.sleep(1.0)  # inside the single scenario (3 requests of about a second)
    server.kill()
    output, _ = snake.communicate(timeout=300)
    assert snake.returncode == 1, output[-3000:]
    assert (
        "1 bench job(s) failed" in output and "ref on tiny: server exited with code -9 during scenario single" in output
    )
    server_json = json.loads((workdir / REF_TARGET).read_text())
    assert server_json["status"] == "failed" and "code -9 during scenario single" in server_json["reason"]
    single = [json.loads(line) for line in (workdir / "results/raw/ref/tiny/single.jsonl").read_text().splitlines()]
    assert any(r["error"] for r in single)
    assert (workdir / "results/raw/ref/tiny/throughput.jsonl").read_text() == ""  # nothing stale, nothing made up
    assert not _wait_no_leftovers(workdir)
    again = snakemake(workdir, "-n", REF_TARGET, "--configfile", "config.yaml")
    assert job_counts(again.stdout) == {"bench": 1, "total": 1} or job_counts(again.stdout).get("bench") == 1, (
        again.stdout
    )


@pytest.mark.slow
def test_hung_server_times_out_and_is_stopped(tmp_path):
    """A server that stops answering (SIGSTOP): requests end at request_timeout_s, the job ends,
    and the stopped server is still stopped (SIGTERM + SIGCONT)."""
    workdir = ref_workdir(tmp_path / "wd", _ref_config(request_timeout_s=1.5), ttft=0.2, itl=0.02)
    snake = _start_snakemake(workdir, REF_TARGET)
    _, server = _wait_for_server(snake, workdir)
    server.suspend()
    started = time.monotonic()
    output, _ = snake.communicate(timeout=300)
    assert time.monotonic() - started < 60
    assert snake.returncode == 0, output[-3000:]
    records = [
        json.loads(line) for line in (workdir / "results/raw/ref/tiny/throughput.jsonl").read_text().splitlines()
    ]
    assert records and all(r["error"] and "timeout" in r["error"].lower() for r in records)
    assert not _alive(server)
    assert not _wait_no_leftovers(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c to the process group", "bench job killed", "kill -9 of snakemake"])
def test_interrupted_runs_leave_no_process_and_no_partial_result(job_counts, snakemake, tmp_path, how):
    """Fault 5 (kill -9 of snakemake) and the ones that already passed: nothing runs on unsupervised,
    no output of the interrupted job is kept, and the next run repeats it."""
    config = _ref_config()
    config["scenarios"]["throughput"]["requests"] = 60  # long enough to interrupt
    workdir = ref_workdir(tmp_path / "wd", config)
    snake = _start_snakemake(workdir, REF_TARGET)
    bench, server = _wait_for_server(snake, workdir)
    if how == "ctrl-c to the process group":
        os.killpg(snake.pid, signal.SIGINT)
    elif how == "bench job killed":
        bench.kill()
    else:
        snake.kill()
    snake.communicate(timeout=120)
    assert snake.returncode != 0
    assert not _wait_no_leftovers(workdir, 30), f"left running after {how}"
    assert not _alive(server) and not _alive(bench)
    assert not (workdir / REF_TARGET).exists()  # no result of the interrupted job looks done
    again = snakemake(workdir, "-n", REF_TARGET, "--configfile", "config.yaml")
    said = again.stdout + again.stderr
    assert job_counts(said).get("bench") == 1 or "--rerun-incomplete" in said, said[-2000:]


@pytest.mark.slow
def test_port_taken_before_the_engine_binds_is_retried_on_another_port(snakemake, tmp_path):
    """Fault 6: a stand-in on the port free_port() gave was benchmarked and filed as transformers."""
    workdir = ref_workdir(tmp_path / "wd", _ref_config(), ttft=0.01, itl=0.01)
    assert (
        snakemake(
            workdir,
            "results/specs/engines/ref.json",
            "results/specs/models/tiny.json",
            "results/prompts/prompts.jsonl",
            "--configfile",
            "config.yaml",
        ).returncode
        == 0
    )
    with _StandIn() as stand_in:
        # The race made certain: the first port free_port() hands out is the stand-in's.
        script = (
            "import sys, infbench.jobs.bench as bench\n"
            f"ports = iter([{stand_in.port}])\n"
            "real = bench.free_port\n"
            "bench.free_port = lambda host: next(ports, None) or real(host)\n"
            "from infbench.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                "bench",
                "--engine-spec",
                "results/specs/engines/ref.json",
                "--model-spec",
                "results/specs/models/tiny.json",
                "--prompts",
                "results/prompts/prompts.jsonl",
                "--venv",
                ".venvs/refserver",
                "--lock",
                "results/envs/refserver.lock",
                "--out-dir",
                "out",
                "--server-log",
                "logs/server.log",
                "--log",
                "logs/bench.log",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=pipeline_env(),
            timeout=300,
        )
        stand_in_hits = stand_in.health_hits
    assert result.returncode == 0, result.stderr[-3000:]
    log = (workdir / "logs/bench.log").read_text()
    assert f"port {stand_in.port}" in log and "retrying on another port" in log
    server = json.loads((workdir / "out/server.json").read_text())
    assert server["status"] == "ok" and f"--port {stand_in.port}" not in " ".join(server["command"])
    records = [json.loads(line) for line in (workdir / "out/single.jsonl").read_text().splitlines()]
    assert records and all(r["error"] is None and r["output_text"].startswith(" tok") for r in records)
    assert stand_in_hits >= 0
    assert not _wait_no_leftovers(workdir)


# --- the real transformers engine: engines side by side -----------------------------------------

MODEL = "smollm2-135m"


def _real_config(b_args: list[str] = ()) -> dict:
    """Two transformers engines (A and B) on SmolLM2, a short single scenario; A's server gets a
    secret by environment variable name."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["prompts"]["n"] = 2
    config["sampling"]["max_tokens"] = 8
    config["scenarios"] = {"single": {"kind": "single"}}
    config["bench"] = {"warmup_requests": 0, "request_timeout_s": 120}
    config["engines"] = {
        "tfa": {
            "kind": "transformers",
            "env": "transformers",
            "label": "A",
            "startup_timeout_s": 300,
            "server_env": {"HF_TOKEN": {"from_env": "INFBENCH_FAULT_TOKEN"}},
        },
        "tfb": {
            "kind": "transformers",
            "env": "transformers",
            "label": "B",
            "startup_timeout_s": 300,
            "args": list(b_args),
        },
    }
    return config


def _cell(table: str, label: str) -> str:
    lines = table.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("Model |")).split("|")]
    row = [c.strip() for c in next(line for line in lines if line.startswith(f"{MODEL} |")).split("|")]
    return row[header.index(label)]


@pytest.fixture(scope="module")
def real_run(snakemake, prepared_transformers, tmp_path_factory):
    from conftest import workdir_from_prepared

    workdir = workdir_from_prepared(prepared_transformers, tmp_path_factory.mktemp("faults-real") / "wd")
    (workdir / "good.yaml").write_text(yaml.safe_dump(_real_config(), sort_keys=False))
    env = pipeline_env(INFBENCH_FAULT_TOKEN=SECRET)
    run = snakemake(workdir, "--configfile", "good.yaml", env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    bundle = snakemake(workdir, "bundle", "--configfile", "good.yaml", env=env)
    assert bundle.returncode == 0, bundle.stdout[-3000:] + bundle.stderr[-3000:]
    return workdir, env, run.stdout + run.stderr + bundle.stdout + bundle.stderr


@pytest.mark.slow
def test_real_run_secret_is_in_no_file_and_no_console_line(real_run):
    """Fault 8: the token reached params, the run log, .snakemake/metadata and the spec file."""
    workdir, _, console = real_run
    assert SECRET not in console
    assert not _files_holding(workdir, SECRET)  # results, logs, .snakemake, the bundle and its members
    assert list((workdir / "results/bundles").glob("*.tar.gz"))
    spec = json.loads((workdir / "results/specs/engines/tfa.json").read_text())
    assert spec["server_env_from"] == {"HF_TOKEN": "INFBENCH_FAULT_TOKEN"}


@pytest.mark.slow
def test_real_run_deleted_records_are_measured_again_and_never_bundled(job_counts, snakemake, real_run):
    """Fault 4: "Nothing to be done" after raw records were deleted, and a bundle that cannot verify."""
    workdir, env, _ = real_run
    record = workdir / f"results/raw/tfa/{MODEL}/single.jsonl"
    kept = workdir / "kept-single.jsonl"
    shutil.copy2(record, kept)
    record.unlink()
    try:
        planned = snakemake(workdir, "-n", "--configfile", "good.yaml", env=env)
        said = planned.stdout + planned.stderr
        assert "Nothing to be done" not in said
        assert job_counts(said).get("bench") == 1 and "engine=tfa" in said and "engine=tfb" not in said
        bundled = subprocess.run(["infbench", "bundle"], cwd=workdir, capture_output=True, text=True, env=env)
        assert bundled.returncode == 2
        assert "tables do not match the raw records" in bundled.stderr and "Traceback" not in bundled.stderr
    finally:
        shutil.copy2(kept, record)  # as it was, times included
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", "good.yaml", env=env).stdout


@pytest.mark.slow
def test_real_run_bad_flag_under_k_shows_the_failure_and_keeps_the_other_engine(job_counts, snakemake, real_run):
    """Fault 2: under -k the merge never ran, and the tables kept B's numbers from the previous run."""
    workdir, env, _ = real_run
    before = (workdir / "results/tables/inference_speed.md").read_text()
    a_before = _cell(before, "A").strip("*!")  # marks (* client lag, ! busy machine) and bold are not the number
    cell_number(_cell(before, "B"))  # B measured fine the first time
    (workdir / "bad.yaml").write_text(yaml.safe_dump(_real_config(["--no-such-flag"]), sort_keys=False))
    run = snakemake(workdir, "-k", "--configfile", "bad.yaml", env=env)
    said = run.stdout + run.stderr
    assert run.returncode == 1, said[-3000:]
    assert "1 bench job(s) failed" in said and f"tfb on {MODEL}: server exited with code" in said
    assert "engine=tfa" not in said  # A was not measured again
    server = json.loads((workdir / f"results/raw/tfb/{MODEL}/server.json").read_text())
    assert server["status"] == "failed" and "exited with code" in server["reason"]
    after = (workdir / "results/tables/inference_speed.md").read_text()
    assert _cell(after, "A").strip("*!") == a_before  # the other engine's result stands
    assert _cell(after, "B").startswith("failed")  # the failure is in the table, no stale number
    assert f"- FAILED: B ({MODEL}): server exited with code" in after
    assert not _wait_no_leftovers(workdir)
    # The same config again repeats only the failed job; the good config too (its spec changed back).
    for configfile in ("bad.yaml", "good.yaml"):
        planned = snakemake(workdir, "-n", "--configfile", configfile, env=env)
        said = planned.stdout + planned.stderr
        assert job_counts(said).get("bench") == 1 and "engine=tfb" in said and "engine=tfa" not in said, said[-3000:]

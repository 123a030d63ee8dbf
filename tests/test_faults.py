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
import re
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

from conftest import REPO, copy_workflow

WORKFLOW = REPO / "workflow"
# Looks like a Hugging Face token; never a real one. Built at run time so no file holds it whole.
SECRET = "hf_" + "faultMatrix7" * 3


def _env(**extra: str) -> dict[str, str]:
    """The environment of a pipeline run: this checkout's package first."""
    env = dict(os.environ, PYTHONPATH=str(WORKFLOW))
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def _snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _infbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(), timeout=300)


def _job_counts(dry_run_output: str) -> dict[str, int]:
    if "Job stats:" not in dry_run_output:
        return {}
    block = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


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


def test_nested_config_overrides_of_numbers_are_read_as_numbers(tmp_path):
    """Fault 1: `--config sampling='{max_tokens: 5}'` said `'5' is not of type 'integer'`."""
    workdir = copy_workflow(tmp_path / "wd")
    result = _snakemake(workdir, "-n", "--config", "sampling={max_tokens: 5}", "bench={request_timeout_s: 20}")
    assert result.returncode == 0, result.stderr[-2000:]
    spec_params = result.stdout + result.stderr
    assert "is not of type" not in spec_params
    bad = _snakemake(workdir, "-n", "--config", "sampling={max_tokens: many}")
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr
    assert "sampling.max_tokens" in said and "'many' is not of type 'integer'" in said


def test_hostile_config_names_are_refused_by_name(tmp_path):
    """Engine, model and scenario names become paths and wildcards: `../x` or `a;rm` must not pass."""
    workdir = copy_workflow(tmp_path / "wd")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["engines"]["../../etc"] = config["engines"].pop("transformers")
    (workdir / "hostile.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(workdir, "-n", "--configfile", "hostile.yaml")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "engines" in said and "../../etc" in said
    assert not (workdir / "results").exists() and not (tmp_path / "etc").exists()


def test_a_secret_value_in_the_config_is_refused_before_anything_runs(tmp_path):
    """Fault 8, part one: a token written into server_env would reach spec files and Snakemake's logs."""
    workdir = copy_workflow(tmp_path / "wd")
    result = _snakemake(workdir, "-n", "--config", f"engines={{vllm: {{server_env: {{HF_TOKEN: {SECRET}}}}}}}")
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
    from infbench.measure.client import ChatRequest, RequestSettings, RunContext, run_single
    from infbench.measure.refserver import RefServerProcess, RefSettings
    import asyncio

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
        records = asyncio.run(run_single(server.chat_url, [request], settings,
                                         RunContext(engine="ref", model="m", scenario="huge", concurrency=1)))
    assert records[0].ok and records[0].completion_tokens == 4, records[0].error


def test_unwritable_output_folder_is_one_clear_line_before_any_server(tmp_path):
    """Fault 7: found before the server starts, said in one line; the traceback is in the log."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be\n")  # unwritable even for root
    log = tmp_path / "logs" / "bench.log"
    result = _infbench(
        "bench", "--engine-spec", str(tmp_path / "missing-spec.json"), "--model-spec", str(tmp_path / "m.json"),
        "--prompts", str(tmp_path / "p.jsonl"), "--venv", str(tmp_path / "venv"), "--lock", str(tmp_path / "l"),
        "--out-dir", str(blocker / "raw" / "e" / "m"), "--server-log", str(tmp_path / "logs" / "server.log"),
        "--log", str(log))
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
            command=[sys.executable, "-m", "infbench.measure.refserver", "--port", str(stand_in.port)],
            log_path=tmp_path / "server.log", health_url=f"http://127.0.0.1:{stand_in.port}/health",
            env=_env(), startup_timeout_s=20, port=stand_in.port)
        with server, pytest.raises(PortClashError, match=f"port {stand_in.port}"):
            server.wait_healthy()
        assert stand_in.health_hits > 0  # it did answer 200: the owner check, not luck, refused it
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

    def __enter__(self) -> "_StandIn":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""kind openai through the whole DAG with real servers: the reference server (a real OpenAI-compatible
HTTP server in its own process) started from a `command:` template, the same server already running
and named by `base_url:` with a key from `api_key_env:`, and a `command:` that exits early.

The model and the tools env are laid out on disk beforehand (the tools env is this interpreter, which
has torch and transformers for the memory estimate), so the DAG runs prompts, specs, bench, merge,
memory, plots, provenance and report pages in well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cell_number, copy_workflow, pipeline_env, write_built_files

pytestmark = pytest.mark.slow

WORKFLOW = REPO / "workflow"
KEY_VARIABLE = "INFBENCH_TEST_ENDPOINT_KEY"
KEY = "sk-test-" + "7Qm2" * 8  # a made-up key: it must appear in no file the run writes


def _refserver_command(tokens: int = 8) -> list[str]:
    return [
        sys.executable,
        "-m",
        "infbench.measure.refserver",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--ttft",
        "0.02",
        "--itl",
        "0.005",
        "--tokens",
        str(tokens),
        "--model",
        "{served_model_name}",
    ]


def _config(engines: dict) -> dict:
    return {
        "device": "cpu",
        "tools_env": "tools",
        "prompts": {"source": "builtin", "n": 3, "seed": 1},
        "models": {"tiny": {"source": "local:/nowhere/tiny", "max_model_len": 512}},
        "engines": engines,
        "sampling": {"max_tokens": 8},
        "scenarios": {
            "single": {"kind": "single"},
            "throughput": {"kind": "throughput", "concurrency": 2, "requests": 4},
        },
        "bench": {"warmup_requests": 1, "request_timeout_s": 30},
    }


def _workdir(root: Path, config: dict) -> Path:
    """A copy of the pipeline with its tools env and model already in place (oldest first)."""
    workdir = copy_workflow(root)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    model_dir = workdir / "resources/models/tiny"
    files = {
        "envs/tools.txt": "# this interpreter stands in for the tools env (torch, transformers)\n",
        ".venvs/tools/.infbench-built": "stand-in\n",
        "results/envs/tools.lock": "torch==0\n",
        "resources/models/tiny/config.json": (REPO / "tests/data/smollm2-135m-config.json").read_text(),
        "resources/models/tiny/generation_config.json": json.dumps({"eos_token_id": 2}),
        "results/models/tiny.json": json.dumps(
            {
                "name": "tiny",
                "source": "local:/nowhere/tiny",
                "path": str(model_dir),
                "dtype": "bfloat16",
                "files": {},
                "size_bytes": 0,
            }
        ),
    }
    write_built_files(workdir, files)
    (workdir / ".venvs/tools/bin").mkdir(parents=True)
    (workdir / ".venvs/tools/bin/python").symlink_to(sys.executable)
    return workdir


def _env(workdir: Path, **extra: str) -> dict:
    # Its own lock folder: the node-wide CPU bench lock of other runs on this machine must not make
    # this correctness test wait for their measurements.
    return pipeline_env(INFBENCH_GPU_LOCK_DIR=str(workdir / "locks"), **extra)


def _row(table: str) -> list[str]:
    return [c.strip() for c in next(line for line in table.splitlines() if line.startswith("tiny |")).split("|")[1:]]


def test_command_and_base_url_through_the_whole_dag(snakemake, tmp_path):
    from infbench.measure.refserver import RefServerProcess, RefSettings

    with RefServerProcess(RefSettings(ttft_s=0.02, itl_s=0.005, tokens=8)) as endpoint:
        engines = {
            "ref": {
                "kind": "openai",
                "label": "Ref (command)",
                "command": _refserver_command(),
                "server_env": {"PYTHONPATH": str(WORKFLOW)},
                "startup_timeout_s": 60,
            },
            "remote": {
                "kind": "openai",
                "label": "Ref (base_url)",
                "base_url": endpoint.base_url + "/v1",  # the OpenAI SDK's spelling; readiness: GET /v1/models
                "api_key_env": KEY_VARIABLE,
                "metrics_url": "/metrics",  # the reference server has none: said, never a failure
            },
        }
        workdir = _workdir(tmp_path / "run", _config(engines))
        result = snakemake(
            workdir, "--configfile", "config.yaml", env=_env(workdir, **{KEY_VARIABLE: KEY}), timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    speed = (workdir / "results/tables/inference_speed.md").read_text()
    assert "Model | Ref (command) | Ref (base_url)" in speed
    started, external = _row(speed)
    assert cell_number(started) > 0
    assert "(external endpoint)" in external and cell_number(external) > 0

    server = json.loads((workdir / "results/raw/ref/tiny/server.json").read_text())
    assert server["status"] == "ok" and "infbench.measure.refserver" in server["command"]
    assert server["command"][server["command"].index("--model") + 1] == "tiny"  # {served_model_name}
    records = [json.loads(line) for line in (workdir / "results/raw/ref/tiny/single.jsonl").open()]
    assert len(records) == 3 and all(r["error"] is None and r["completion_tokens"] == 8 for r in records)
    memory = json.loads((workdir / "results/raw/ref/tiny/memory.json").read_text())
    assert memory["status"] == "ok" and memory["rss_peak_bytes"] > 0  # started here, so measured

    remote = json.loads((workdir / "results/raw/remote/tiny/server.json").read_text())
    assert remote["external"] is True and remote["command"] == [] and remote["base_url"].startswith("http://127.0.0.1")
    assert json.loads((workdir / "results/raw/remote/tiny/memory.json").read_text())["status"] == "skipped"
    provenance = (workdir / "results/provenance.json").read_text()
    assert "external endpoint" in provenance and endpoint.base_url in provenance
    details = (workdir / "results/tables/details.md").read_text()
    assert f"remote/tiny/single: server metrics missing: {endpoint.base_url}/metrics: answered HTTP 404" in details
    assert "ref: n/a: no metrics endpoint (set metrics_url)" in details

    # The key's value is in no file the run wrote: results, logs, Snakemake's own metadata.
    leaks = [p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink() and KEY.encode() in p.read_bytes()]
    assert not leaks, leaks


def test_external_endpoint_without_its_key_fails_naming_the_variable(tmp_path):
    engines = {"remote": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": KEY_VARIABLE}}
    workdir = _workdir(tmp_path / "run", _config(engines))
    env = {k: v for k, v in _env(workdir).items() if k != KEY_VARIABLE}
    result = subprocess.run(
        ["snakemake", "--cores", "2", "results/raw/remote/tiny/server.json", "--configfile", "config.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode != 0
    assert (
        f"environment variable {KEY_VARIABLE} (api_key_env) is not set"
        in (workdir / "logs/bench/remote/tiny.log").read_text()
    )


def test_a_command_that_exits_early_fails_its_job_and_the_others_stand(snakemake, tmp_path):
    crash = [sys.executable, "-c", "import sys; print('cannot start: no such device (port {port})'); sys.exit(3)"]
    engines = {
        "ref": {
            "kind": "openai",
            "label": "Ref",
            "command": _refserver_command(),
            "server_env": {"PYTHONPATH": str(WORKFLOW)},
            "startup_timeout_s": 60,
        },
        "broken": {"kind": "openai", "label": "Broken", "command": crash, "startup_timeout_s": 60},
    }
    workdir = _workdir(tmp_path / "run", _config(engines))
    result = snakemake(
        workdir,
        "-k",
        "results/raw/ref/tiny/server.json",
        "results/raw/broken/tiny/server.json",
        "--configfile",
        "config.yaml",
        env=_env(workdir),
        timeout=600,
    )
    assert result.returncode != 0
    log = (workdir / "logs/bench/broken/tiny.log").read_text()
    assert "exited with code 3 before it was healthy" in log and "cannot start: no such device" in log
    # The failure is recorded, not a stale or missing result: status failed with the reason, and the
    # marker that makes the next run repeat this job (the tables show the cell as failed).
    broken = json.loads((workdir / "results/raw/broken/tiny/server.json").read_text())
    assert broken["status"] == "failed" and "exited with code 3" in broken["reason"]
    assert (workdir / "results/failures/broken/tiny.json").exists()
    ref = json.loads((workdir / "results/raw/ref/tiny/server.json").read_text())
    assert ref["status"] == "ok" and (workdir / "results/raw/ref/tiny/throughput.jsonl").read_text().count("\n") == 4

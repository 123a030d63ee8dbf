"""Provenance: git state, redacted config, engines' locks/versions/commands, hashes, hardware, times."""

from __future__ import annotations

import json
import subprocess

from fake_run import FAKE_TOKEN, build_run, fake_config
from infbench.results.provenance import (
    SCHEMA,
    git_info,
    hardware_info,
    make_run_id,
    read_provenance,
    results_sha256,
)
from infbench.results.redact import REDACTED


def test_provenance_of_a_finished_run(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    build_run(root)
    prov = read_provenance(root / "results" / "provenance.json")
    assert prov["schema"] == SCHEMA
    # Not a git checkout: said so, not guessed.
    assert prov["git"] == {"commit": None, "dirty": None, "branch": None}
    assert prov["run_id"].startswith("20270115T080000Z-nogit-")
    assert prov["run_id"].endswith(prov["results_sha256"][:8])
    # The config, resolved and redacted.
    assert prov["config"]["engines"]["alpha"]["server_env"]["HF_TOKEN"] == REDACTED
    assert FAKE_TOKEN not in (root / "results" / "provenance.json").read_text()
    assert prov["config"]["sampling"]["max_tokens"] == 8 and prov["config"]["bench"]["warmup_requests"] == 2
    engines = {e["name"]: e for e in prov["engines"]}
    assert engines["beta"]["label"] == "Beta" and engines["beta"]["version"] == "5.23.0"
    assert engines["beta"]["lock"] == ["torch==2.13.0", "transformers==5.23.0"]
    assert len(engines["beta"]["lock_sha256"]) == 64
    assert engines["alpha"]["server_commands"]["tiny"][-1] == "30000"
    assert engines["gamma"]["env"] == "tgi" and engines["gamma"]["server_commands"] == {"tiny": []}
    # Which node and Slurm job ran each bench job (from its server.json); none recorded, none claimed.
    assert engines["alpha"]["bench_nodes"]["tiny"]["slurm_job_id"] == "500"
    assert engines["beta"]["bench_nodes"]["tiny"]["hostname"] == "gpu01" and engines["gamma"]["bench_nodes"] == {}
    assert prov["models"][0]["files"]["model.safetensors"] == "cd" * 32
    prompts = prov["prompts"][0]
    sample = (root / "results" / "prompts" / "prompts.jsonl").read_bytes()
    import hashlib

    assert prompts["sha256"] == hashlib.sha256(sample).hexdigest() and prompts["name"] == "prompts"
    assert prov["hardware"]["cpu_model"] == "Test CPU"
    assert prov["software"]["python"].count(".") == 2 and prov["software"]["snakemake"].startswith("9.")
    times = prov["times"]
    # Records of the fake run start at unix 1.8e9 (2027-01-15T08:00:00Z); beta's throughput runs last.
    assert times["measurement_started_at"] == "2027-01-15T08:00:00+00:00"
    assert times["measurement_finished_at"] > times["measurement_started_at"]
    assert times["bench_finished_at"] == "2027-01-15T08:02:00+0000"
    assert set(times["meaning"]) == {
        "measurement_started_at",
        "measurement_finished_at",
        "bench_finished_at",
        "written_at",
    }


def test_results_hash_changes_with_any_record(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n')
    b.write_text('{"x": 2}\n')
    before = results_sha256([a, b])
    assert results_sha256([b, a]) == before  # order of the arguments does not matter
    b.write_text('{"x": 3}\n')
    assert results_sha256([a, b]) != before


def test_git_commit_and_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "Snakefile").write_text("rule all:\n")
    git("add", "Snakefile")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = git_info(tmp_path)
    assert len(clean.commit) == 40 and clean.dirty is False
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    assert git_info(tmp_path).dirty is True
    run_id = make_run_id(1.8e9, clean, "f" * 64)
    assert run_id == f"20270115T080000Z-{clean.commit[:7]}-ffffffff"


def test_gpus_driver_and_cuda_from_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --query-gpu=*) printf '0, NVIDIA H100 80GB HBM3, 81559, 550.54.15\\n"
        "1, NVIDIA H100 80GB HBM3, 81559, 550.54.15\\n';;\n"
        "  *) printf '| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |\\n';;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    hw = hardware_info(nvidia_smi=str(fake), use_nvml=False)
    assert hw.gpu_source == "nvidia-smi"
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert hw.gpus[1].index == 1 and hw.gpus[0].memory_total_bytes == 81559 * 2**20
    assert hw.gpu_driver == "550.54.15" and hw.cuda_version == "12.4"
    assert hw.cpu_cores_logical >= 1 and hw.ram_bytes > 2**28 and hw.cpu_model


def test_no_gpu_tool_means_no_gpus(tmp_path):
    hw = hardware_info(nvidia_smi=str(tmp_path / "absent"), use_nvml=False)
    assert hw.gpus == [] and hw.gpu_source == "none" and hw.cuda_version is None


def test_cli_writes_provenance(tmp_path, monkeypatch):
    from infbench.cli import main

    root = tmp_path / "run"
    root.mkdir()
    build_run(root)
    monkeypatch.chdir(root)
    config = fake_config()
    tables = sorted(str(p.relative_to(root)) for p in (root / "results" / "tables").iterdir())
    code = main(
        [
            "provenance",
            "--config",
            json.dumps(config),
            "--tables",
            *tables,
            "--locks",
            "results/envs/transformers.lock",
            "results/envs/tgi.lock",
            "--models",
            "results/models/tiny.json",
            "--prompts-meta",
            "results/prompts/prompts.meta.json",
            "--servers",
            *sorted(str(p.relative_to(root)) for p in root.glob("results/raw/*/*/server.json")),
            "--records",
            *sorted(str(p.relative_to(root)) for p in root.glob("results/raw/*/*/*.jsonl")),
            "--out",
            "results/p2.json",
        ]
    )
    assert code == 0
    written = json.loads((root / "results" / "p2.json").read_text())
    assert FAKE_TOKEN not in json.dumps(written)  # redacted even when the caller passed it in clear
    assert written["engines"][0]["lock_file"] == "results/envs/transformers.lock"

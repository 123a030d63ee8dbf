"""Every script in bench_scripts/ runs, with tiny settings, so none rots unseen (vllm_cpu_tuning.py
once died on an import for months). Scripts that need an engine server run their dry run: every
import, argument and plan they build, without starting the server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPTS = REPO / "bench_scripts"
GOLDEN = REPO / "tests" / "data" / "merge_golden" / "natural"

# Scripts whose smoke runs live with their feature's tests (tests/integration/workflow/test_gpu_path.py).
ELSEWHERE = {
    "gpu_check.sh": "test_gpu_check_without_prepared_files_says_what_to_run",
    "gpu_check_prepare.py": "test_prepare_writes_specs_for_the_box",
    "gpu_check_summary.py": "test_summary_prints_key_figures_and_estimate_against_nvml",
    "gpu_check_requirements.txt": "read by gpu_check_prepare.py",
}


def _run(args: list[str], cwd: Path = REPO, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_bench_script_has_a_smoke_test():
    """A new script without a smoke run here (or in ELSEWHERE) fails this test."""
    here = Path(__file__).read_text()
    missing = [p.name for p in SCRIPTS.iterdir() if p.is_file() and p.name not in ELSEWHERE and p.name not in here]
    assert not missing, f"bench_scripts without a smoke test: {missing}"
    gpu_tests = (Path(__file__).parent / "test_gpu_path.py").read_text()
    for name, where in ELSEWHERE.items():
        assert (SCRIPTS / name).exists(), name
        assert where in gpu_tests or where.startswith("read by"), f"{name}: {where} not found"


def test_vllm_cpu_tuning_dry_run_builds_every_variant():
    result = _run([sys.executable, str(SCRIPTS / "vllm_cpu_tuning.py"), "--dry-run"])
    assert result.returncode == 0, result.stderr
    for variant in ("auto", "bind", "bind+iomp"):
        assert f"{variant}: " in result.stdout
    assert "vllm.entrypoints.openai.api_server" in result.stdout and "VLLM_CPU_OMP_THREADS_BIND" in result.stdout


def test_peer_check_vllm_dry_run_builds_both_commands():
    result = _run([sys.executable, str(SCRIPTS / "peer_check_vllm.py"), "--dry-run", "--n", "2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("server: ") and "--dataset-name custom" in result.stdout
    assert "2 prompts" in result.stdout


def test_client_fidelity_runs_our_side_against_the_reference_server():
    result = _run(
        [
            sys.executable,
            str(SCRIPTS / "client_fidelity.py"),
            "--concurrency",
            "1",
            "--requests-per-stream",
            "2",
            "--workers",
            "1",
            "--no-vllm",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "Verdicts:" in result.stdout


def test_merge_scale_times_a_tiny_set(tmp_path):
    result = _run([sys.executable, str(SCRIPTS / "merge_scale.py"), "--sizes", "200", "--work", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "| 200 |" in result.stdout


def test_gpu_check_merge_makes_tables_from_an_output_folder(tmp_path):
    """The CPU half of the GPU check on a folder shaped like gpu_check.sh's output (the golden raw set)."""
    out = tmp_path / "out"
    shutil.copytree(GOLDEN / "raw", out / "raw")
    shutil.copy(GOLDEN / "plan.json", out / "merge_plan.json")
    result = _run(["bash", str(SCRIPTS / "gpu_check_merge.sh"), str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "tables" / "details.md").exists() and "Generative inference speed" in result.stdout
    missing = _run(["bash", str(SCRIPTS / "gpu_check_merge.sh"), str(tmp_path / "none")])
    assert missing.returncode == 2 and "merge_plan.json not found" in missing.stderr


def test_cache_share_reports_each_scenario_and_warns_on_a_cold_hit(tmp_path):
    raw = tmp_path / "raw" / "vllm" / "m"
    raw.mkdir(parents=True)
    ok = {"error": None, "status": 200, "prompt_tokens": 100}
    lines = {
        "single": [{**ok, "cached_prompt_tokens": 0, "cache": "cold"}] * 2,
        "throughput": [{**ok, "cached_prompt_tokens": 50, "cache": "cold"}, {**ok, "cached_prompt_tokens": 0}],
        "warm": [{**ok, "cached_prompt_tokens": 75, "cache": "warm"}],
        "unknown": [{**ok, "cached_prompt_tokens": None, "cache": "cold"}],
    }
    for scenario, records in lines.items():
        (raw / f"{scenario}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = _run([sys.executable, str(SCRIPTS / "cache_share.py"), "--results", str(tmp_path)])
    assert result.returncode == 1  # a cold scenario served tokens from a cache
    rows = {line.split(" | ")[2]: line for line in result.stdout.splitlines()[2:]}
    assert rows["single"].endswith("| 0 | 0.0%") and rows["warm"].endswith("| 75 | 75.0%")
    assert rows["throughput"].endswith("| 50 | 25.0%") and rows["unknown"].endswith("| n/a | n/a")
    assert "vllm/m/throughput is declared cold but 50 prompt tokens came from the cache" in result.stderr
    assert _run([sys.executable, str(SCRIPTS / "cache_share.py"), "--results", str(tmp_path / "no")]).returncode == 2


def test_results_before_after_prints_both_runs_per_engine(tmp_path):
    """The golden merge as 'after', and a copy of it without the cache column as 'before' (a run
    from before issue 19): per engine both runs' figures, the length spread and the cells' marks."""
    before = tmp_path / "before"
    shutil.copytree(GOLDEN / "tables", before / "tables")
    rows = (before / "tables" / "summary.csv").read_text().splitlines()
    drop = rows[0].split(",").index("cached_prompt_share")
    old = "\n".join(",".join(c for i, c in enumerate(r.split(",")) if i != drop) for r in rows) + "\n"
    (before / "tables" / "summary.csv").write_text(old)
    result = _run([sys.executable, str(SCRIPTS / "results_before_after.py"), str(before), str(GOLDEN)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "vllm | smollm2-135m | single | before | 41.83 | 43 | 112.2 | not recorded | 11% | -" in lines
    assert "vllm | smollm2-135m | single | after | 41.83 | 43 | 112.2 | n/a | 11% | -" in lines
    llamacpp = next(line for line in lines if line.startswith("llamacpp | smollm2-135m | single | after"))
    assert llamacpp.endswith("| n/a: no llama-server on PATH")  # a cell that is no number says why
    missing = _run([sys.executable, str(SCRIPTS / "results_before_after.py"), str(tmp_path / "no"), str(GOLDEN)])
    assert missing.returncode == 2 and "not a finished run's results folder" in missing.stderr


def test_cache_before_after_dry_run_shows_the_plan():
    result = _run([sys.executable, str(SCRIPTS / "cache_before_after.py"), "--dry-run", "--rounds", "1"])
    assert result.returncode == 0, result.stderr
    assert "597ec75: git archive 597ec75" in result.stdout and "--forcerun bench" in result.stdout


def test_stats_error_rates_on_a_few_trials():
    args = ["--trials", "2", "--models", "1", "--engines", "2", "--prompts", "10", "--repeats", "2", "--json"]
    result = _run([sys.executable, str(SCRIPTS / "stats_error_rates.py"), *args])
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_memory_ground_truth_prints_every_case():
    result = _run([sys.executable, str(SCRIPTS / "memory_ground_truth.py")])
    assert result.returncode == 0, result.stderr
    cases = json.loads((REPO / "tests" / "data" / "vllm_ground_truth.json").read_text())
    cases = cases.get("cases", cases) if isinstance(cases, dict) else cases
    assert len([line for line in result.stdout.splitlines() if line.startswith("| ")]) >= len(cases)


def test_memory_estimate_speed_times_the_cli_and_the_page():
    pytest.importorskip("starlette", reason="the page needs infbench[web]")
    pytest.importorskip("torch")
    result = _run([sys.executable, str(SCRIPTS / "memory_estimate_speed.py"), "--runs", "1"])
    assert result.returncode == 0, result.stderr
    assert "CLI, warm  median" in result.stdout and "page       median" in result.stdout
    assert result.stdout.startswith("before: load average")


def test_capture_metrics_against_the_reference_server(tmp_path):
    """Its chats and scrapes against a real local server (the reference server has no /metrics: what it
    answers there is written as is)."""
    from infbench.measure.refserver import RefServerProcess, RefSettings

    with RefServerProcess(RefSettings(ttft_s=0.005, itl_s=0.001, tokens=4)) as server:
        result = _run(
            [sys.executable, str(SCRIPTS / "capture_metrics.py"), server.base_url, "m", str(tmp_path / "cap")]
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("8 responses")
    assert len(json.loads((tmp_path / "cap.usage.json").read_text())) == 8
    assert all((tmp_path / f"cap.{when}.prom").exists() for when in ("before", "during", "after"))


def test_scrape_overhead_imports_and_parses():
    """It needs a default run's engines; its imports (the bench job's internals it reuses) and
    arguments are checked here."""
    result = _run([sys.executable, str(SCRIPTS / "scrape_overhead.py"), "--help"], timeout=60)
    assert result.returncode == 0 and "--rounds" in result.stdout


def test_kind_mentions_counts_modules():
    result = _run(["bash", str(SCRIPTS / "kind_mentions.sh")], timeout=60)
    assert result.returncode == 0 and result.stdout.strip().isdigit()
    assert int(result.stdout.strip()) == len([line for line in result.stderr.splitlines() if line.strip()])


def test_estimate_bytes_writes_each_estimate_its_record_rewrites_identically(tmp_path):
    result = _run([sys.executable, str(SCRIPTS / "estimate_bytes.py"), str(tmp_path / "est")])
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "est").glob("*.json"))
    assert result.stdout.startswith(f"{len(written)} estimates") and len(written) >= 30


def test_handoff_key_reads_counts_a_diff():
    result = _run(["sh", str(SCRIPTS / "handoff_key_reads.sh"), "HEAD~1", "HEAD"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"key-string reads: removed \d+, added \d+ \(net -?\d+ fewer\)\n", result.stdout)


@pytest.mark.parametrize(
    "name", ["cache_before_after.py", "cache_share.py", "client_fidelity.py", "merge_scale.py", "estimate_bytes.py"]
)
def test_help_of_every_python_script(name):
    result = _run([sys.executable, str(SCRIPTS / name), "--help"], timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_compare_scale_times_a_tiny_pair_of_runs_and_bundles(tmp_path):
    args = ["--prompts", "6", "--repeats", "2", "--times", "1", "--bundles", "--work", str(tmp_path)]
    result = _run([sys.executable, str(SCRIPTS / "compare_scale.py"), *args])
    assert result.returncode == 0, result.stderr
    assert "| results folders | 1 |" in result.stdout and "| bundles (verified) | 1 |" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("(too few prompts, requests or repeats)")


def test_trace_schedule_replays_a_seeded_window_against_the_reference_server():
    args = ["--trace", "seeded", "--count", "12", "--time-scales", "0.05", "--length-scale", "0.05"]
    result = _run([sys.executable, str(SCRIPTS / "trace_schedule.py"), *args])
    assert result.returncode == 0, result.stderr
    (replay,) = json.loads(result.stdout)["replays"]
    assert replay["requests"] == 12 and replay["errors"] == 0 and replay["dispatch_lag_p99_ms"] is not None


def test_trace_build_prepares_and_renders_the_seeded_trace(tmp_path, tiny_tokenizer_dir):
    args = ["--trace", "seeded", "--model-dir", str(tiny_tokenizer_dir), "--length-scale", "0.1"]
    result = _run([sys.executable, str(SCRIPTS / "trace_build.py"), *args, "--out", str(tmp_path / "p.json")])
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["prepare"]["requests"] == figures["render"]["requests"] > 40
    assert figures["peak_rss_mb"] > 0 and figures["total_wall_s"] > 0


def test_scenario_times_reads_a_bench_log(tmp_path):
    log = tmp_path / "logs" / "bench" / "vllm" / "m.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "2026-01-01 00:00:00,000 INFO single: 8 requests, 0 failed, 31.3 s\n"
        "2026-01-01 00:01:00,000 INFO chat: 6 requests, 1 failed, 12.5 s\n"
    )
    server = tmp_path / "results" / "raw" / "vllm" / "m" / "server.json"
    server.parent.mkdir(parents=True)
    server.write_text(json.dumps({"machine_load": {"chat": {"other_cpu_share": 0.53}}}))
    result = _run([sys.executable, str(SCRIPTS / "scenario_times.py"), "--root", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "scenario | vllm/m" and "single | 31.3 s" in lines and "chat | 12.5 s (53% busy)" in lines
    assert "total | 43.8 s" in lines

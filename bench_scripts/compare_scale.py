"""Time `infbench compare` on two synthetic runs of the study's shape (issue 20: under 5 s on 2 cores).

    python bench_scripts/compare_scale.py                         # 6 models x 4 engines x 3 scenarios,
                                                                  # 100 prompts x 3 repeats, both runs
    python bench_scripts/compare_scale.py --repeats 1 --work /tmp/compare-scale-1

Writes two runs (A, and B with one engine 10% slower) as results folders under --work (kept and
reused): raw records as a bench job writes them (JSONL and its Parquet copy, chunk lists as long as
the completion), server.json, the merge plan and a provenance with the same prompt sample, repeats
K >= 2 under results/raw/E/M/repeat-K/. Then runs `infbench compare A B` in its own process, a few
times, and prints wall and CPU seconds, peak RSS and the machine's load beside each. With --bundles
it also merges each run's tables, packs each as a bundle and times `infbench compare` of the two
bundles (both verified first, as `infbench verify` does).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench_scripts"))

from infbench.fileio import write_json_atomic, write_jsonl_atomic  # noqa: E402
from merge_scale import set_copies  # noqa: E402

ENGINES = ("vllm", "tgi", "transformers", "llamacpp")
MODELS = ("mpt-7b-chat", "falcon-7b-instruct", "vicuna-7b-v1.3", "vicuna-13b-v1.5", "oasst-30b", "llama2-70b-chat")
SCENARIOS = {"single": "single", "throughput": "throughput", "poisson": "open_loop"}
PROMPT_SAMPLE = {"name": "lima", "source": "hf:GAIR/lima:train", "count": 100, "seed": 2024, "sha256": "ab" * 32}


def _records(rng, engine, model, scenario, repeat, prompts, speed, t0) -> list[dict]:
    kind = SCENARIOS[scenario]
    concurrency = {"single": 1, "throughput": 16, "open_loop": 8}[kind]
    rows, clock = [], t0
    for i in range(prompts):
        tokens = int(rng.integers(16, 257))
        ttft = float(rng.gamma(4.0, 0.02)) / speed
        gaps = rng.gamma(9.0, 0.004, size=tokens) / speed
        gaps[0] = ttft
        times = np.cumsum(gaps)
        rows.append(
            {
                "request_id": f"{scenario}-{repeat}-{i:05d}",
                "prompt_id": f"lima-{i:04d}",
                "engine": engine,
                "model": model,
                "scenario": scenario,
                "concurrency": concurrency,
                "send_time": clock,
                "ttft_s": ttft,
                "latency_s": float(times[-1]),
                "chunk_times_s": times.tolist(),
                "chunk_tokens": [1] * tokens,
                "chunk_tokens_counted_by": "usage",
                "prompt_tokens": 20 + i,
                "completion_tokens": tokens,
                "max_tokens": 256,
                "finish_reason": "stop",
                "status": 200,
                "rate": 2.0 if kind == "open_loop" else None,
                "client_lag_limit_s": 0.001,
                "dispatch_lag_s": 0.00005,
                "read_lag_p99_s": 0.00002,
                "output_text": "x" * tokens,
            }
        )
        clock += float(times[-1]) / concurrency
    return rows


def write_run(root: Path, seed: int, repeats: int, prompts: int, slow_engine: str | None) -> None:
    rng = np.random.default_rng(seed)
    results = root / "results"
    for e_index, engine in enumerate(ENGINES):
        for m_index, model in enumerate(MODELS):
            speed = (1.0 + 0.2 * e_index) / (1.0 + 0.4 * m_index) / (1.1 if engine == slow_engine else 1.0)
            base = results / "raw" / engine / model
            for repeat in range(1, repeats + 1):
                folder = base if repeat == 1 else base / f"repeat-{repeat}"
                for s_index, scenario in enumerate(SCENARIOS):
                    t0 = 1.8e9 + 10_000 * (repeat * 100 + s_index)
                    rows = _records(rng, engine, model, scenario, repeat, prompts, speed, t0)
                    write_jsonl_atomic(folder / f"{scenario}.jsonl", rows)
                write_json_atomic(folder / "server.json", {"engine": engine, "model": model, "status": "ok"})
    plan = {
        "engines": {e: e for e in ENGINES},
        "models": {m: m for m in MODELS},
        "scenarios": dict(SCENARIOS),
        "native_engines": [],
        "repeats": {s: repeats for s in SCENARIOS} if repeats > 1 else {},
    }
    write_json_atomic(results / "tables" / "merge_plan.json", plan)
    write_json_atomic(
        results / "provenance.json",
        {
            "run_id": f"synthetic-{seed}",
            "config": {"sampling": {"max_tokens": 256, "temperature": 0.0}, "scenarios": {}},
            "prompts": [PROMPT_SAMPLE],
            "engines": [],
            "models": [],
            "hardware": {},
            "git": {},
        },
    )
    set_copies(results / "raw", True)


def bundle(root: Path) -> Path:
    """The run's tables (merged as the merge rule does) and its bundle; returns the bundle's path."""
    from infbench.handoff import MergePlan
    from infbench.results.bounds import BoundFiles
    from infbench.results.bundle_make import make_bundle
    from infbench.results.redact import Redactor
    from infbench.results.tables import merge

    results = root / "results"
    made = list((root / "bundles").glob("*.tar.gz"))
    if made:
        return made[0]
    plan = MergePlan.from_json((results / "tables" / "merge_plan.json").read_text())
    merge(results / "raw", results / "tables", plan, BoundFiles.under(root, plan.engines, plan.models))
    return make_bundle(root, root / "bundles", Redactor()).path


def time_compare(a: Path, b: Path, out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infbench.cli", "compare", str(a), str(b), "--out", str(out)],
        env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(err[-2000:])
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "rss_mb": round(usage.ru_maxrss / 1024),
        "load_1min": round(os.getloadavg()[0], 1),
        "summary": err.strip().splitlines()[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/infbench-compare-scale"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--times", type=int, default=3, help="how many timed runs")
    parser.add_argument("--bundles", action="store_true", help="also time the comparison of the runs' bundles")
    args = parser.parse_args()
    a, b = args.work / "a", args.work / "b"
    for root, seed, slow in ((a, 1, None), (b, 2, "tgi")):
        if not (root / "results" / "provenance.json").exists():
            print(f"writing {root} ...", file=sys.stderr)
            write_run(root, seed, args.repeats, args.prompts, slow)
    records = sum(1 for p in (a / "results" / "raw").rglob("*.jsonl") for _ in p.open())
    print(
        f"{len(MODELS)} models x {len(ENGINES)} engines x {len(SCENARIOS)} scenarios x {args.prompts} prompts x "
        f"{args.repeats} repeats: {records} records a run; {os.cpu_count()} cores"
    )
    inputs = [("results folders", a, b)]
    if args.bundles:
        inputs.append(("bundles (verified)", bundle(a), bundle(b)))
    print("| A and B | run | wall s | CPU s | peak RSS MB | load (1 min) |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for what, first, second in inputs:
        for attempt in range(1, args.times + 1):
            row = time_compare(first, second, args.work / "compare")
            print(f"| {what} | {attempt} | {row['wall_s']} | {row['cpu_s']} | {row['rss_mb']} | {row['load_1min']} |")
    print(row["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

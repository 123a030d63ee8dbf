"""Time `infbench merge` and verify's recomputation on synthetic raw records at growing scale.

    python bench_scripts/merge_scale.py                      # 10^4, 10^5 and 10^6 records
    python bench_scripts/merge_scale.py --sizes 10000 100000 --work /tmp/merge-scale
    python bench_scripts/merge_scale.py --golden tests/data/merge_golden   # the frozen test set

The raw records look like a bench job's (same fields, same JSON writer): several engines (one
skipped, one with TGI's native scenario), models and scenarios (single, closed-loop throughput, open
loop, a sweep with SLOs), chunk lists as long as the completion (one token per chunk, or several with
cumulative usage, or several counted one per chunk), about 1% failed requests, client lag on some
runs. Generated sets are kept under --work and reused. Each measurement runs in its own process, so
its peak RSS (ru_maxrss) is its own, and the merge also times its merge() call alone (without starting
Python and importing polars); machine load (1-minute average) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from infbench.fileio import write_json_atomic, write_jsonl_atomic  # noqa: E402

# name -> (kind, how its chunks count tokens, tokens counted by, engine speed factor)
ENGINES = {
    "vllm": ("vllm", "usage", "usage", 1.0),
    "transformers": ("transformers", "token_ids", "usage", 1.7),
    "tgi": ("tgi", "one_per_chunk", "chunks", 1.3),
    "llamacpp": ("llamacpp", None, None, 0.0),  # skipped: no launcher here
}
MODELS = {"smollm2-135m": 0.6, "qwen2.5-0.5b": 1.0, "llama-3.2-1b": 1.8}
SCENARIOS = {"single": "single", "throughput": "throughput", "poisson": "open_loop", "sweep": "sweep"}
SWEEP_RATES = (1.0, 2.0, 4.0, 8.0)
LOREM = (
    "The capital of France is Paris, a city known for its museums, its cafes and the river Seine that runs through it. "
)


def plan_dict() -> dict:
    return {
        "engines": {e: e.capitalize() for e in ENGINES},
        "models": {m: m.upper() for m in MODELS},
        "scenarios": dict(SCENARIOS),
        "native_engines": ["tgi"],
    }


def _files() -> list[tuple[str, str, str]]:
    out = []
    for engine in ENGINES:
        for model in MODELS:
            for scenario in [*SCENARIOS, *(["native-single"] if engine == "tgi" else [])]:
                out.append((engine, model, scenario))
    return out


def _records(
    rng: np.random.Generator,
    engine: str,
    model: str,
    scenario: str,
    count: int,
    output_length: str,
    max_tokens: int,
    t0: float,
    lagged: bool,
) -> list[dict]:
    kind, chunk_counting, tokens_by, speed = ENGINES[engine]
    scale = MODELS[model] * speed
    native = scenario == "native-single"
    scenario_kind = "single" if native else SCENARIOS[scenario]
    concurrency = {"single": 1, "throughput": 8, "open_loop": 4, "sweep": 4}[scenario_kind]
    workers = 2 if scenario_kind in ("open_loop", "sweep") else 1
    rows = []
    clock = t0
    for i in range(count):
        tokens = max_tokens if output_length == "fixed" else int(rng.integers(8, max_tokens + 1))
        if output_length == "fixed" and rng.random() < 0.03:
            tokens = int(rng.integers(2, max_tokens))  # an engine that stopped early
        if chunk_counting == "usage" and not native:  # several tokens per chunk at times
            per_chunk = rng.choice([1, 1, 1, 2, 3], size=tokens)
        elif chunk_counting == "one_per_chunk" and not native:  # same, but not said
            per_chunk = rng.choice([1, 1, 2], size=tokens)
        else:
            per_chunk = np.ones(tokens, dtype=np.int64)
        per_chunk = per_chunk[np.cumsum(per_chunk) <= tokens]
        tokens = int(per_chunk.sum())
        ttft = float(rng.gamma(4.0, 0.02 * scale))
        gaps = rng.gamma(9.0, 0.004 * scale, size=len(per_chunk)) * per_chunk
        gaps[0] = ttft
        times = np.cumsum(gaps)
        latency = float(times[-1] + rng.gamma(2.0, 0.0005))
        rate = None
        if scenario_kind == "sweep":
            rate = SWEEP_RATES[min(i * len(SWEEP_RATES) // max(count, 1), len(SWEEP_RATES) - 1)]
        elif scenario_kind == "open_loop":
            rate = 2.0
        lag = float(rng.gamma(2.0, 0.0008 if lagged else 0.00004))
        failed = rng.random() < 0.01 or (scenario == "sweep" and rate == SWEEP_RATES[-1] and rng.random() < 0.2)
        record = {
            "request_id": f"{scenario}-{i:06d}",
            "prompt_id": f"builtin-{i % 40:04d}",
            "engine": engine,
            "model": model,
            "scenario": scenario,
            "concurrency": concurrency,
            "send_time": clock,
            "ttft_s": ttft,
            "latency_s": latency,
            "response_end_s": latency + 0.0002,
            "chunk_times_s": times.tolist(),
            "prompt_tokens": 18 + (i % 40) * 3 + (1 if engine == "tgi" and i % 40 == 7 else 0),
            "completion_tokens": tokens,
            "tokens_counted_by": tokens_by,
            "chunk_tokens": (
                np.ones(len(per_chunk), dtype=np.int64) if chunk_counting == "one_per_chunk" else per_chunk
            ).tolist(),
            "chunk_tokens_counted_by": "token_ids" if native else chunk_counting,
            "send_mono": 91234.5 + (clock - t0),
            "dispatch_lag_s": lag,
            "connect_s": 0.0 if i % 7 else 0.00021,
            "read_lag_p99_s": lag / 3,
            "read_lag_max_s": lag / 2,
            "client_lag_share_limit": 0.01,
            "worker": i % workers,
            "rate": rate,
            "slo_ttft_s": 0.25 if scenario_kind == "sweep" else None,
            "slo_tpot_s": 0.05 if scenario_kind == "sweep" else None,
            "max_tokens": max_tokens,
            "output_length": output_length,
            "finish_reason": "stop" if tokens < max_tokens else "length",
            "status": 200,
            "error": None,
            "output_text": (LOREM * (1 + tokens // 20))[: tokens * 4],
        }
        if i == 3:  # one token: no TPOT, no ITL
            record.update(completion_tokens=1, chunk_times_s=times[:1].tolist(), chunk_tokens=[1], latency_s=ttft)
        elif i == 5:  # a success whose stream carried no content: no TTFT, no tokens
            record.update(
                ttft_s=None, chunk_times_s=[], chunk_tokens=[], completion_tokens=0, output_text="", connect_s=None
            )
        if failed or (engine, model, scenario) == ("transformers", "llama-3.2-1b", "throughput"):
            record.update(
                ttft_s=None,
                latency_s=None,
                response_end_s=None,
                chunk_times_s=[],
                chunk_tokens=[],
                completion_tokens=None,
                prompt_tokens=None,
                status=500 if i % 2 else None,
                error="HTTP 500: internal error" if i % 2 else "timeout after 300 s",
                output_text="",
                finish_reason=None,
                chunk_tokens_counted_by=None,
            )
        rows.append(record)
        clock += (latency / concurrency) if scenario_kind != "open_loop" else float(rng.exponential(1 / 2.0))
    return rows


def write_raw_set(out: Path, total: int, seed: int = 7, output_length: str = "natural", max_tokens: int = 256) -> Path:
    """About `total` records spread over every (engine, model, scenario) file; returns the raw dir."""
    rng = np.random.default_rng(seed)
    raw = out / "raw"
    files = _files()
    ran = [f for f in files if f[0] != "llamacpp"]
    per_file, extra = divmod(total, len(ran))
    for index, (engine, model, scenario) in enumerate(files):
        run = raw / engine / model
        if engine == "llamacpp":
            write_jsonl_atomic(run / f"{scenario}.jsonl", [])
            write_json_atomic(
                run / "server.json",
                {"status": "skipped", "reason": "n/a: no llama-server on PATH", "command": [], "version": None},
            )
            continue
        count = per_file + (1 if ran.index((engine, model, scenario)) < extra else 0)
        rows = _records(
            rng,
            engine,
            model,
            scenario,
            count,
            output_length,
            max_tokens,
            t0=1_790_000_000.0 + 3600.0 * index,
            lagged=(engine, scenario) == ("transformers", "poisson"),
        )
        write_jsonl_atomic(run / f"{scenario}.jsonl", rows)
        write_json_atomic(
            run / "server.json",
            {"status": "ok", "version": "0.1.0", "command": [engine, "serve", f"/models/{model}", "--port", "8000"]},
        )
    (out / "plan.json").write_text(json.dumps(plan_dict(), indent=2) + "\n")
    return raw


def _run_measured(code: str, workflow: Path) -> tuple[float, float, float, str]:
    """Run `code` in a fresh Python with infbench from `workflow`.

    Returns wall s, CPU s (user + system), peak RSS MB and stdout."""
    env = dict(os.environ, PYTHONPATH=str(workflow))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"measurement failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


MERGE = """
import json, time
from pathlib import Path
from infbench.handoff import MergePlan
from infbench.results.tables import merge
plan = MergePlan.from_json(Path({plan!r}).read_text())
started = time.perf_counter()
merge(Path({raw!r}), Path({tables!r}), plan)
print(time.perf_counter() - started)  # the merge alone, without starting Python and importing polars
"""

VERIFY = """
from pathlib import Path
try:
    from infbench.results.bundle_verify import VerifyResult, check_results
except ImportError:  # an older checkout (--workflow): only the recomputation
    from infbench.results.bundle_verify import VerifyResult, _recompute_tables
    check_results = lambda folder, result: _recompute_tables(folder, result) or result
folder = Path({folder!r})
result = check_results(folder, VerifyResult(bundle=folder))
assert not result.problems, result.problems
print(len(result.recomputed_tables))
"""


def set_copies(raw: Path, wanted: bool) -> None:
    """Give every raw JSONL its Parquet copy, as the bench job does (made from the JSONL's bytes,
    as a bundle makes them), or remove them all (to time the merge from JSONL alone)."""
    from infbench.fileio import write_bytes_atomic
    from infbench.measure.recordframe import parquet_copy_of, parquet_path

    for jsonl in sorted(raw.rglob("*.jsonl")):
        copy = parquet_path(jsonl)
        if not wanted:
            copy.unlink(missing_ok=True)
        elif not copy.exists():
            write_bytes_atomic(copy, parquet_copy_of(jsonl.read_bytes(), str(jsonl)))


def measure(work: Path, sizes: list[int], workflow: Path, copies: bool) -> list[dict]:
    rows = []
    for size in sizes:
        root = work / f"n{size}"
        if not (root / "plan.json").exists():
            print(f"generating {size} records under {root} ...", file=sys.stderr)
            write_raw_set(root, size)
        set_copies(root / "raw", copies)
        records = sum(1 for p in (root / "raw").rglob("*.jsonl") for _ in p.open())
        jsonl_mb = sum(p.stat().st_size for p in (root / "raw").rglob("*.jsonl")) / 1e6
        # verify recomputes into a scratch folder and compares bytes with the archived tables: lay the
        # merged tables out as a bundle would (results/raw, results/tables) beside the raw records.
        bundle_like = root / "bundle" / "results"
        bundle_like.mkdir(parents=True, exist_ok=True)
        if not (bundle_like / "raw").exists():
            (bundle_like / "raw").symlink_to(root / "raw")
        merge_s, merge_cpu, merge_mb, merge_out = _run_measured(
            MERGE.format(plan=str(root / "plan.json"), raw=str(root / "raw"), tables=str(bundle_like / "tables")),
            workflow,
        )
        load_merge = os.getloadavg()[0]
        verify_s, verify_cpu, verify_mb, _ = _run_measured(VERIFY.format(folder=str(root / "bundle")), workflow)
        load_verify = os.getloadavg()[0]
        row = {
            "records": records,
            "jsonl_mb": jsonl_mb,
            "read_from": "Parquet copies" if copies else "JSONL",
            "merge_s": merge_s,
            "merge_call_s": float(merge_out.split()[-1]),
            "merge_cpu_s": merge_cpu,
            "merge_rss_mb": merge_mb,
            "load_merge": load_merge,
            "verify_s": verify_s,
            "verify_cpu_s": verify_cpu,
            "verify_rss_mb": verify_mb,
            "load_verify": load_verify,
        }
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| records | raw JSONL MB | merge reads | merge s (CPU s) | of which merge() s | merge peak RSS MB | "
        "verify checks s (CPU s) | verify peak RSS MB | load (1 min) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['records']:,} | {r['jsonl_mb']:.0f} | {r['read_from']} "
            f"| {r['merge_s']:.2f} ({r['merge_cpu_s']:.2f}) | {r.get('merge_call_s', float('nan')):.2f} "
            f"| {r['merge_rss_mb']:.0f} | {r['verify_s']:.2f} ({r['verify_cpu_s']:.2f}) | {r['verify_rss_mb']:.0f} | "
            f"{r['load_merge']:.1f} / {r['load_verify']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/infbench-merge-scale"))
    parser.add_argument(
        "--workflow",
        type=Path,
        default=REPO / "workflow",
        help="import infbench from here (e.g. an older checkout's workflow/, for a baseline)",
    )
    parser.add_argument(
        "--no-copies",
        action="store_true",
        help="remove the raw records' Parquet copies first: time the merge from JSONL alone",
    )
    parser.add_argument("--golden", type=Path, help="write the small fixed raw set of the table tests here and stop")
    args = parser.parse_args()
    if args.golden:
        write_raw_set(args.golden / "natural", 400, seed=11, max_tokens=48)
        write_raw_set(args.golden / "fixed", 120, seed=12, output_length="fixed", max_tokens=16)
        return 0
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"this process's RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        file=sys.stderr,
    )
    print(table(measure(args.work, args.sizes, args.workflow.resolve(), not args.no_copies)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

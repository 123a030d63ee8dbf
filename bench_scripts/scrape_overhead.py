"""Does reading the server's metrics change the measurement? (a benchmark, not a test)

    python bench_scripts/scrape_overhead.py [--rounds 3] [--engines vllm llamacpp] [--max-tokens N]
                                            [--out results/scrape_overhead]

Starts each engine's server once, from a default run's prepared specs, venvs and model
(`snakemake --cores all` first), holding the node's CPU lock as a bench job does; warms it up, then
runs the engine's scenarios (the default: single and throughput) with the server-metrics scrape on
and off, alternated over rounds (on/off, off/on, ...) so that a shared machine's load falls on both
alike. "on" is what the bench job does around a scenario: a scrape before the first request, the
sampler process reading the gauges (and energy counters) about once a second in between, a settled
scrape after the last.

Prints, per engine and scenario, tokens/s (mean of requests), requests/min, output tokens/s and
the client's lag (dispatch and read, p99) for each run, then the mean of each mode and the
difference in %, with the machine's load average and the other processes' share of the CPUs
during each run. Writes the same to OUT/scrape_overhead.md and the rows to OUT/scrape_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from infbench.engines.base import engine_for
from infbench.engines.gpus import GpuLease
from infbench.engines.metricmaps import metric_map
from infbench.engines.server import ManagedServer
from infbench.engines.spec import read_engine_spec, read_model_spec
from infbench.jobs.bench import _request_settings, _server_env, _warm_up, forced_output_length
from infbench.measure.busy import LoadWatch
from infbench.measure.metrics import summarize
from infbench.measure.scrape import ScenarioWatch
from infbench.pipeline.prompts import read_sample
from infbench.procutil import free_port

FIGURES = (
    ("tokens_per_s_mean", "tok/s", 2),
    ("requests_per_min", "req/min", 2),
    ("output_tokens_per_s", "out tok/s", 2),
    ("dispatch_lag_p99_s", "dispatch lag p99 ms", -3),
    ("read_lag_p99_s", "read lag p99 ms", -3),
)


def run_engine(engine_name: str, model_name: str, rounds: int, out: Path, max_tokens: int | None) -> list[dict]:
    engine = read_engine_spec(Path(f"results/specs/engines/{engine_name}.json"))
    model = read_model_spec(Path(f"results/specs/models/{model_name}.json"))
    engine = forced_output_length(engine, model)
    if max_tokens:  # shorter requests: quicker rounds, and the scrape's share of the work is larger
        engine = replace(engine, sampling=replace(engine.sampling, max_tokens=max_tokens))
    prompts = read_sample(next(Path("results/prompts").glob("*.jsonl")))
    adapter = engine_for(engine.kind)
    venv = Path(".venvs") / engine.env
    host, port = engine.bench.host, free_port(engine.bench.host)
    threads = len(os.sched_getaffinity(0))
    plan = adapter.plan(engine, model, venv, host, port, [], threads=threads)
    mapping = metric_map(engine.kind)
    server = ManagedServer(
        command=plan.command,
        log_path=out / f"{engine_name}.server.log",
        health_url=f"http://{host}:{port}{plan.health_path}",
        env=_server_env(engine, venv, {}, plan.env),
        startup_timeout_s=engine.startup_timeout_s,
        port=port,
    )
    rows = []
    server.start()
    with server:
        print(f"{engine_name}: healthy after {server.wait_healthy():.1f} s", flush=True)
        url = f"http://{host}:{port}/v1/chat/completions"
        metrics_url = f"http://{host}:{port}{mapping.path}" if mapping else None
        settings = _request_settings(engine, plan)
        _warm_up(url, prompts, settings, engine, model)
        for round_no in range(1, rounds + 1):
            for mode in ("on", "off") if round_no % 2 else ("off", "on"):
                for scenario in engine.scenarios:
                    load_before = os.getloadavg()[0]
                    busy = LoadWatch(engine.bench.busy_cpu_limit)
                    busy.start()
                    watch = None
                    if mode == "on":
                        watch = ScenarioWatch(
                            engine_name,
                            model.name,
                            scenario.name,
                            out / "metrics" / f"r{round_no}",
                            metrics_url,
                            mapping,
                        )
                        watch.begin()
                    ctx = scenario.run_context(engine_name, model.name)
                    records = scenario.run(url, prompts, settings, ctx)
                    if watch:
                        tokens = sum(r.completion_tokens or 0 for r in records if r.ok)
                        server_view = watch.end(tokens)
                    load = busy.stop(scenario.name)
                    figures = summarize(records, engine_name, model.name, scenario.name)
                    row = {
                        "engine": engine_name,
                        "scenario": scenario.name,
                        "round": round_no,
                        "mode": mode,
                        "errors": figures.errors,
                        "load_avg_1m": round((load_before + os.getloadavg()[0]) / 2, 2),
                        "other_cpu_share": load.other_cpu_share,
                        "server_metrics": server_view.status if watch else None,
                        "sampler_cpu_s": server_view.sampler_cpu_s if watch else None,
                        "wall_s": load.wall_s,
                        **{key: getattr(figures, key) for key, _, _ in FIGURES},
                    }
                    rows.append(row)
                    print(_row_text(row), flush=True)
    return rows


def _cell(value, digits) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1e3:.2f}" if digits < 0 else f"{value:.{digits}f}"


def _row_text(row: dict) -> str:
    figures = "  ".join(f"{label} {_cell(row[key], digits)}" for key, label, digits in FIGURES)
    return (
        f"{row['engine']}/{row['scenario']} round {row['round']} scrape {row['mode']:<3}: {figures}  "
        f"errors {row['errors']}  load {row['load_avg_1m']}  others {row['other_cpu_share']:.0%}"
        + (f"  sampler {row['sampler_cpu_s']} CPU s in {row['wall_s']} s" if row.get("sampler_cpu_s") else "")
    )


def report(rows: list[dict]) -> str:
    lines = [
        "# Server-metrics scrape on vs off",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs; means over rounds; "
        "difference = (on - off) / off.",
        "",
        "engine | scenario | figure | scrape on | scrape off | difference | load avg on / off | others' CPU on / off",
        "--- | --- | --- | --- | --- | --- | --- | ---",
    ]
    keys = sorted({(r["engine"], r["scenario"]) for r in rows}, key=lambda k: [r["engine"] for r in rows].index(k[0]))
    for engine, scenario in keys:
        part = {
            m: [r for r in rows if (r["engine"], r["scenario"], r["mode"]) == (engine, scenario, m)]
            for m in ("on", "off")
        }
        loads = " / ".join(f"{statistics.mean(r['load_avg_1m'] for r in part[m]):.2f}" for m in ("on", "off"))
        others = " / ".join(f"{statistics.mean(r['other_cpu_share'] for r in part[m]):.0%}" for m in ("on", "off"))
        for key, label, digits in FIGURES:
            means = {}
            for mode in ("on", "off"):
                values = [r[key] for r in part[mode] if r[key] is not None]
                means[mode] = statistics.mean(values) if values else None
            diff = (
                f"{(means['on'] - means['off']) / means['off']:+.1%}"
                if means["on"] is not None and means["off"]
                else "n/a"
            )
            lines.append(
                f"{engine} | {scenario} | {label} | {_cell(means['on'], digits)} | {_cell(means['off'], digits)} | "
                f"{diff} | {loads} | {others}"
            )
    lines += ["", "Runs:", ""] + [f"- {_row_text(r)}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["vllm", "llamacpp"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("results/scrape_overhead"))
    parser.add_argument("--max-tokens", type=int, default=None, help="sampling.max_tokens instead of the spec's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for engine in args.engines:
        with GpuLease(count=0, candidates=[]):  # the node's CPU lock: no bench job measures meanwhile
            rows += run_engine(engine, args.model, args.rounds, args.out, args.max_tokens)
        (args.out / "scrape_overhead.json").write_text(json.dumps(rows, indent=1))  # kept if a later engine fails
    text = report(rows)
    (args.out / "scrape_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

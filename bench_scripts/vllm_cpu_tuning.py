"""vLLM on the CPU, configured four ways (a benchmark, not a test): what thread binding and the
LD_PRELOAD of Intel OpenMP and tcmalloc change, run alternately (A B C D A B C D ...) so that a
shared machine's load falls on every variant alike.

    python bench_scripts/vllm_cpu_tuning.py [--rounds 2] [--n 8] [--max-tokens 64] [--concurrency 4]
    python bench_scripts/vllm_cpu_tuning.py --dry-run    # each variant's command and environment only

Needs .venvs/vllm-cpu and resources/models/smollm2-135m (a default run, or
`snakemake --cores all .venvs/vllm-cpu/.infbench-built results/models/smollm2-135m.json`).
Variants:
  auto              vLLM's own choice: OpenMP bound to one core, the other reserved for its front end
                    (VLLM_CPU_OMP_THREADS_BIND=auto), torch's libgomp preloaded by vLLM, glibc malloc
  bind              VLLM_CPU_OMP_THREADS_BIND = every core this process may run on
  bind+iomp         ... and LD_PRELOAD of libiomp5.so from the env (intel-openmp, a vllm-cpu dependency)
  bind+iomp+tcmalloc ... and libtcmalloc_minimal (Debian libtcmalloc-minimal4) when installed
  auto+preload      vLLM's own binding with tcmalloc and libiomp5 preloaded
  bind+preload      the same as bind+iomp+tcmalloc (what the adapter sets on the CPU)
Prints single-request tokens/s (mean), throughput (requests/min) and start-up time per run, the
load average around each, and what vLLM's log says about binding, preloads and its kernels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
from pathlib import Path

from infbench.engines.base import engine_for
from infbench.engines.kinds.vllm import vllm_cpu_best_env
from infbench.engines.server import ManagedServer
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import LoadShape, run_load
from infbench.measure.runners import run_single
from infbench.pipeline.prompts import load_source, sample_prompts
from infbench.procutil import free_port

VENV = Path(".venvs/vllm-cpu")
MODEL = ModelSpec(name="smollm2-135m", path="resources/models/smollm2-135m", dtype="float32", max_model_len=2048)
BASE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
LOG_PATTERNS = (
    "OpenMP thread binding",
    "core ids",
    "reserved_cpus",
    "LD_PRELOAD",
    "GEMM dispatch",
    "attention backend",
    "Using .* backend",
    "_C",
)


def variant_env(name: str) -> dict[str, str]:
    if name == "auto":
        return {}
    best = vllm_cpu_best_env(VENV, os.sched_getaffinity(0))
    if name == "auto+preload":  # vLLM's own binding, with tcmalloc and Intel OpenMP preloaded
        return {"LD_PRELOAD": best.get("LD_PRELOAD", "")}
    if name == "bind+preload":
        return best
    env = {"VLLM_CPU_OMP_THREADS_BIND": best["VLLM_CPU_OMP_THREADS_BIND"]}
    preload = best.get("LD_PRELOAD", "").split(":")
    if name == "bind+iomp":
        env["LD_PRELOAD"] = ":".join(p for p in preload if "iomp" in p)
    elif name == "bind+iomp+tcmalloc":
        if not any("tcmalloc" in p for p in preload):
            raise SystemExit("bind+iomp+tcmalloc: no libtcmalloc found (apt install libtcmalloc-minimal4)")
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def plan_variant(variant: str, args, port: int):
    """The server plan (adapter command line) and environment of one variant."""
    engine = EngineSpec(
        name="vllm",
        kind="vllm",
        label="vLLM",
        env="vllm-cpu",
        device="cpu",
        args=["--enforce-eager"],
        sampling=Sampling(max_tokens=args.max_tokens, output_length="fixed"),
    )
    plan = engine_for("vllm").plan(engine, MODEL, VENV, "127.0.0.1", port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "KMP_", "VLLM_CPU"))}
    env.pop("PYTHONPATH", None)
    env.update(BASE_ENV)
    env.update(variant_env(variant))
    return plan, env


def measure(variant: str, prompts, args) -> dict:
    port = free_port()
    plan, env = plan_variant(variant, args, port)
    log_path = Path(f"logs/bench_scripts/vllm_cpu_tuning.{variant}.{int(time.time())}.log")
    settings = RequestSettings(
        model_name=plan.model_name,
        max_tokens=args.max_tokens,
        output_length="fixed",
        extra_body=plan.extra_body,
        continuous_usage=True,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    load_before = os.getloadavg()[0]
    with ManagedServer(
        command=plan.command,
        log_path=log_path,
        health_url=f"http://127.0.0.1:{port}/health",
        env=env,
        startup_timeout_s=900,
    ) as server:
        startup_s = server.wait_healthy()
        warm = [
            ChatRequest(request_id=f"w{i}", prompt_id=prompts[i].id, messages=list(prompts[i].messages))
            for i in range(2)
        ]
        asyncio.run(
            run_single(
                url, warm, settings, RunContext(engine="vllm", model=MODEL.name, scenario="warmup", concurrency=1)
            )
        )
        single = [
            ChatRequest(request_id=f"s{i}", prompt_id=p.id, messages=list(p.messages)) for i, p in enumerate(prompts)
        ]
        records = asyncio.run(
            run_single(
                url, single, settings, RunContext(engine="vllm", model=MODEL.name, scenario="single", concurrency=1)
            )
        )
        loop = [
            ChatRequest(
                request_id=f"t{i}",
                prompt_id=prompts[i % len(prompts)].id,
                messages=list(prompts[i % len(prompts)].messages),
            )
            for i in range(args.requests)
        ]
        started = time.monotonic()
        loaded = run_load(
            url,
            loop,
            settings,
            RunContext(engine="vllm", model=MODEL.name, scenario="throughput", concurrency=args.concurrency),
            LoadShape(kind="closed", concurrency=args.concurrency),
        )
        elapsed = time.monotonic() - started
    ok = [r for r in records if r.ok and r.completion_tokens]
    speeds = [r.completion_tokens / r.latency_s for r in ok]
    lines = [
        line.strip()
        for line in log_path.read_text(errors="replace").splitlines()
        if any(re.search(p, line) for p in LOG_PATTERNS)
    ]
    return {
        "variant": variant,
        "env": variant_env(variant),
        "startup_s": round(startup_s, 1),
        "single_tok_s": round(statistics.mean(speeds), 2) if speeds else None,
        "single_errors": len(records) - len(ok),
        "throughput_req_min": round(sum(r.ok for r in loaded) / elapsed * 60, 1),
        "throughput_errors": sum(not r.ok for r in loaded),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "log": lines[:12],
        "server_log": str(log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="auto,bind,bind+iomp,bind+iomp+tcmalloc")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("results/bench_scripts/vllm_cpu_tuning.json"))
    parser.add_argument(
        "--dry-run", action="store_true", help="print each variant's command and environment, start nothing"
    )
    args = parser.parse_args()
    if args.dry_run:
        for variant in args.variants.split(","):
            try:
                plan, env = plan_variant(variant, args, port=0)
            except SystemExit as why:  # a variant this machine cannot run (no tcmalloc)
                print(f"{variant}: cannot run here: {why}")
                continue
            shown = {k: env[k] for k in sorted(env) if k in BASE_ENV or k.startswith(("VLLM_", "LD_PRELOAD"))}
            print(f"{variant}: {' '.join(plan.command)}\n    env: {shown}")
        return
    prompts = sample_prompts(load_source("builtin"), args.n, 2024)
    runs = []
    for round_ in range(args.rounds):
        for variant in args.variants.split(","):
            result = measure(variant, prompts, args) | {"round": round_}
            runs.append(result)
            print(
                f"round {round_} {variant:20s} startup {result['startup_s']:6.1f} s  "
                f"single {result['single_tok_s']} tok/s  throughput {result['throughput_req_min']} req/min  "
                f"load {result['load_before']}->{result['load_after']}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=2))
    print("\nper variant (mean over rounds):")
    for variant in args.variants.split(","):
        mine = [r for r in runs if r["variant"] == variant]
        print(
            f"  {variant:20s} single {statistics.mean(r['single_tok_s'] or 0 for r in mine):6.2f} tok/s  "
            f"throughput {statistics.mean(r['throughput_req_min'] for r in mine):6.1f} req/min"
        )
        for line in mine[0]["log"]:
            print(f"      {line[:160]}")


if __name__ == "__main__":
    main()

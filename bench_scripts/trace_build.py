"""Time and memory of building the requests of a whole trace replay (issue 21's target: the Mooncake
conversation trace, 12,031 requests of ~12k input tokens, at full lengths, in under 30 s and 2 GB on
2 cores).

    python bench_scripts/trace_build.py                       # ../shared's trace, SmolLM2's tokenizer
    python bench_scripts/trace_build.py --model-dir resources/models/smollm2-135m --length-scale 1
    python bench_scripts/trace_build.py --trace seeded         # the pipeline's own small seeded trace

Two phases, each in its own process so that its peak RSS (ru_maxrss) is its own, as the pipeline
runs them:
  prepare  (the prepare step, tools env): load the tokenizer, find its one-token words and check them,
           count the chat template, read and check the trace, lay every request out in blocks, write
           the prepared request file;
  render   (the bench job): read the prepared file and render every request's text (all held in
           memory at once, the worst case), with the total of words checked against the plan.
The tokenizer needs transformers: run with the tools env's Python (.venvs/transformers/bin/python)
or a Python that has it. Machine load (1-minute average) is printed beside the figures.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

DEFAULT_TRACE = REPO.parent / "shared" / "datasets" / "mooncake" / "conversation_trace.jsonl"
DEFAULT_MODEL = REPO / "resources" / "models" / "smollm2-135m"


def prepare(args) -> dict:
    from infbench.measure.prepared import PreparedRequests, trace_requests
    from infbench.measure.trace import TraceWindow, plan_replay, read_trace, scaled_block_tokens, write_seeded_trace
    from infbench.pipeline.requestprep import load_tokenizer

    times = {}
    started = time.perf_counter()
    tokenizer = load_tokenizer(args.model_dir)
    times["tokenizer_load_s"] = time.perf_counter() - started
    t = time.perf_counter()
    words = tokenizer.one_token_words()
    tokenizer.check_words(words, seed=args.seed)
    template, prefix = tokenizer.template_tokens(["user"], words)
    times["words_and_template_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trace = Path(args.out).with_suffix(".seeded.jsonl") if args.trace == "seeded" else Path(args.trace)
    if args.trace == "seeded":
        write_seeded_trace(trace, args.seed)
    rows = TraceWindow().select(read_trace(trace))
    times["trace_read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    planned = plan_replay(rows, 1.0, args.length_scale)
    requests, raised = trace_requests(planned, scaled_block_tokens(args.length_scale), template, prefix)
    prepared = PreparedRequests(
        "trace", "trace", "m", str(args.model_dir), template, tuple(words), "random", args.seed, requests
    )
    prepared.write(args.out)
    times["plan_and_write_s"] = time.perf_counter() - t
    return {
        "requests": len(requests),
        "words": len(words),
        "template_tokens": template,
        "prompt_tokens_total": sum(r.prompt_tokens for r in requests),
        "prepared_file_bytes": os.path.getsize(args.out),
        **{k: round(v, 3) for k, v in times.items()},
        "total_s": round(time.perf_counter() - started, 3),
    }


def render(args) -> dict:
    from infbench.measure.prepared import PreparedRequests

    started = time.perf_counter()
    prepared = PreparedRequests.read(args.out)
    read_s = time.perf_counter() - started
    t = time.perf_counter()
    chats = prepared.chat_requests()
    render_s = time.perf_counter() - t
    words = sum(m["content"].count(" ") + 1 for c in chats for m in c.messages)
    planned = sum(r.words() for r in prepared.requests)
    if words != planned:
        raise SystemExit(f"rendered {words} words, the plan says {planned}")
    return {
        "requests": len(chats),
        "words": words,
        "text_bytes": sum(len(m["content"]) for c in chats for m in c.messages),
        "read_s": round(read_s, 3),
        "render_s": round(render_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }


def _phase(args, phase: str) -> dict:
    """One phase in its own process: its wall time from the outside, its own peak RSS."""
    command = [sys.executable, __file__, "--phase", phase, *sys.argv[1:]]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=str(DEFAULT_TRACE), help="a Mooncake-format JSONL, or 'seeded'")
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL), help="a model folder with its tokenizer")
    parser.add_argument("--length-scale", type=float, default=1.0, help="1: full lengths")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/infbench-trace-build/prepared.json")
    parser.add_argument("--phase", choices=["prepare", "render"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        figures = prepare(args) if args.phase == "prepare" else render(args)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(figures))
        return
    if args.trace != "seeded" and not Path(args.trace).exists():
        raise SystemExit(f"trace {args.trace} not found (pass --trace PATH or --trace seeded)")
    if not Path(args.model_dir).is_dir():
        raise SystemExit(f"model folder {args.model_dir} not found: run the pipeline once, or pass --model-dir")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    phases = {phase: _phase(args, phase) for phase in ("prepare", "render")}
    total = sum(p["process_wall_s"] for p in phases.values())
    print(
        json.dumps(
            {
                "trace": args.trace,
                "length_scale": args.length_scale,
                "cpus": os.cpu_count(),
                "load_1min_before": round(load_before, 2),
                "load_1min_after": round(os.getloadavg()[0], 2),
                **phases,
                "total_wall_s": round(total, 3),
                "peak_rss_mb": max(p["peak_rss_mb"] for p in phases.values()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

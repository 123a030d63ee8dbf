"""How close a trace replay's sends stay to their plan (issue 21's target: within 1 ms at p99, at the
rates a 2-core machine can serve).

    python bench_scripts/trace_schedule.py                             # reference server, 3 rates
    python bench_scripts/trace_schedule.py --time-scales 1 0.25 --count 400
    python bench_scripts/trace_schedule.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --model smollm2-135m --count 60 --time-scales 4                # an engine already running

A window of the trace (../shared's Mooncake conversation trace, else the pipeline's seeded trace) is
replayed through the bench job's own path: the rows' prompts built from their hash ids (lengths and
blocks scaled by --length-scale), sent open loop at their timestamps x time scale with their own
output lengths. Per time scale it prints the offered rate and the dispatch lag (how late each send
left against its plan: the client's schedule error) at p50, p99 and max, and of the first send of each
planned instant alone (rows sharing a timestamp are built ahead and written one after another in one
pass, ~20 us each: the first shows the timer's accuracy, the rest that cost and the wakeup of the
server by the first write), the server-side figures the reference server logs (how late its chunks
left: its own saturation), errors, and the machine load. --pin gives the reference server a core of its
own: on 2 cores its wakeup otherwise lands on the client's core now and then and delays the next sends.
Words stand for tokens here (the reference server counts words); a real engine gets the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from infbench.measure.client import RequestSettings, RunContext  # noqa: E402
from infbench.measure.loadgen import LoadShape, run_load  # noqa: E402
from infbench.measure.prepared import PreparedRequests, trace_requests  # noqa: E402
from infbench.measure.recordmath import percentile  # noqa: E402
from infbench.measure.refserver import RefServerProcess, RefSettings  # noqa: E402
from infbench.measure.trace import (  # noqa: E402
    TraceWindow,
    plan_replay,
    read_trace,
    scaled_block_tokens,
    write_seeded_trace,
)

MOONCAKE = REPO.parent / "shared" / "datasets" / "mooncake" / "conversation_trace.jsonl"
WORDS = tuple(f"w{i:04d}" for i in range(5000))  # the reference server counts words; any will do


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1e3, 3)


def replay(url: str, model: str, trace: Path, args, time_scale: float) -> dict:
    rows = TraceWindow(start=args.start, count=args.count).select(read_trace(trace))
    planned = plan_replay(rows, time_scale, args.length_scale)
    requests, _ = trace_requests(planned, scaled_block_tokens(args.length_scale), 0, 0)
    prepared = PreparedRequests("replay", "trace", model, "words", 0, WORDS, "random", 0, requests)
    chats = prepared.chat_requests()
    offsets = tuple(r.at_s for r in requests)
    settings = RequestSettings(model_name=model, max_tokens=max(r.max_tokens for r in requests), timeout_s=600)
    ctx = RunContext(engine="replay", model=model, scenario="replay", concurrency=0)
    load_before = os.getloadavg()[0]
    records = run_load(url, chats, settings, ctx, LoadShape("open", offsets_s=offsets, workers=args.workers))
    lags = [r.dispatch_lag_s for r in records if r.dispatch_lag_s is not None]
    # Rows that share a timestamp are written one after another in one pass: the first of each planned
    # instant shows the timer's accuracy, the rest add the writes before them (~20 us each).
    offset_of = {chat.request_id: offset for chat, offset in zip(chats, offsets, strict=True)}
    by_instant: dict[float, list[float]] = {}
    for record in records:
        by_instant.setdefault(offset_of[record.request_id], []).append(record.dispatch_lag_s)
    firsts = [min(group) for group in by_instant.values()]
    span = offsets[-1] - offsets[0]
    return {
        "time_scale": time_scale,
        "requests": len(records),
        "offered_rps": round((len(offsets) - 1) / span, 3) if span > 0 else None,
        "mean_prompt_words": round(sum(r.words() for r in requests) / len(requests), 1),
        "errors": sum(not r.ok for r in records),
        "dispatch_lag_p50_ms": _ms(percentile(lags, 50)),
        "dispatch_lag_p99_ms": _ms(percentile(lags, 99)),
        "dispatch_lag_max_ms": _ms(max(lags)),
        "within_1ms_at_p99": percentile(lags, 99) <= 0.001,
        "planned_instants": len(by_instant),
        "most_sends_at_one_instant": max(len(group) for group in by_instant.values()),
        "first_send_of_instant_lag_p50_ms": _ms(percentile(firsts, 50)),
        "first_send_of_instant_lag_p99_ms": _ms(percentile(firsts, 99)),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=str(MOONCAKE) if MOONCAKE.exists() else "seeded")
    parser.add_argument("--start", type=int, default=2000, help="first row of the window")
    parser.add_argument("--count", type=int, default=600, help="rows in the window")
    parser.add_argument("--time-scales", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    parser.add_argument("--length-scale", type=float, default=1 / 16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--url", help="an engine already running (default: start the reference server)")
    parser.add_argument("--model", default="refserver", help="the model name the engine expects")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="reference server on the last CPU, this client on the others, so the server's wakeups run on a core"
        " of their own (reference server only; an engine given by --url is not moved)",
    )
    parser.add_argument("--ttft", type=float, default=0.02, help="reference server: TTFT (s)")
    parser.add_argument("--itl", type=float, default=0.005, help="reference server: between tokens (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(args.trace)
        if args.trace == "seeded":
            trace = Path(tmp) / "seeded.jsonl"
            write_seeded_trace(trace)
            args.start = 0
        results = []
        if args.url:
            results = [replay(args.url, args.model, trace, args, scale) for scale in args.time_scales]
            server = None
        else:
            with RefServerProcess(RefSettings(ttft_s=args.ttft, itl_s=args.itl, tokens=100_000)) as ref:
                if args.pin:
                    last = max(os.sched_getaffinity(0))
                    os.sched_setaffinity(ref.process.pid, {last})
                    os.sched_setaffinity(0, os.sched_getaffinity(0) - {last} or {last})
                for scale in args.time_scales:
                    ref.fetch_log(clear=True)
                    result = replay(ref.chat_url, args.model, trace, args, scale)
                    log = ref.fetch_log()
                    chunk_lags = [lag for entry in log["requests"] for lag in entry["chunk_lags"]]
                    result["server_chunk_lag_p99_ms"] = _ms(percentile(chunk_lags, 99))
                    results.append(result)
            server = {"reference_server": {"ttft_s": args.ttft, "itl_s": args.itl, "pinned": args.pin}}
    print(
        json.dumps(
            {
                "trace": str(args.trace),
                "window": {"start": args.start, "count": args.count},
                "length_scale": args.length_scale,
                "cpus": os.cpu_count(),
                **(server or {"url": args.url}),
                "replays": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

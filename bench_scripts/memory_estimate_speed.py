"""How fast "can I run it?" answers: the CLI (warm) and the page, for a 235B MoE model over the whole
GPU catalogue. Targets (issue 23): under 1 s for each, on 2 cores.

    PYTHONPATH=workflow python bench_scripts/memory_estimate_speed.py [--model CONFIG] [--runs 7]

(default model: tests/data/configs/qwen3-235b-a22b.json)

CLI warm: the second and later runs of `infbench estimate MODEL` (a fresh process each, the model's
facts read from the fact cache the first run wrote; a cache folder of this script's own is used).
Page: `infbench estimate --web` on a free port, then one POST per change of setting (all GPUs,
one GPU, another context, another quantization, --enforce-eager), timed from request to full
answer. The 1-minute load average is printed before and after: on a shared machine the figures
are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _cli(env: dict[str, str], model: str, runs: int) -> list[float]:
    cmd = [sys.executable, "-m", "infbench.cli", "estimate", model]
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # cold: fills the fact cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def _page(env: dict[str, str], model: str, runs: int) -> list[float]:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "infbench.cli", "estimate", "--web", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = proc.stdout.readline().split("serving on ")[1].split()[0]
        changes = [
            {"gpu": "all"},
            {"gpu": "H100-80GB", "tp": "4"},
            {"gpu": "all", "max_model_len": "32768"},
            {"gpu": "all", "dtype": "fp8"},
            {"gpu": "all", "enforce_eager": "1"},
        ]
        with httpx.Client(timeout=60) as client:
            client.post(url + "api/estimate", data={"model": model}).raise_for_status()  # cold
            times = []
            for i in range(runs):
                form = {"model": model, **changes[i % len(changes)]}
                start = time.perf_counter()
                reply = client.post(url + "api/estimate", data=form)
                reply.raise_for_status()
                reply.json()
                times.append(time.perf_counter() - start)
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "tests" / "data" / "configs" / "qwen3-235b-a22b.json"))
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "workflow"), XDG_CACHE_HOME=cache)
        print(f"before: {_load()} ({os.cpu_count()} CPUs)")
        for what, times in (
            ("CLI, warm", _cli(env, args.model, args.runs)),
            ("page", _page(env, args.model, args.runs)),
        ):
            print(
                f"{what:<10} median {statistics.median(times):.3f} s, max {max(times):.3f} s over {len(times)} runs "
                f"({Path(args.model).name}, whole catalogue)"
            )
        print(f"after:  {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TTFT and requests/min of vLLM-CPU and llama.cpp before and after the cache-state change (issue 19),
side by side on one machine: the default CPU run of two commits, alternately (A B A B ...), so a
shared machine's load falls on both alike.

    python bench_scripts/cache_before_after.py [--before 597ec75] [--after HEAD] [--rounds 2]
    python bench_scripts/cache_before_after.py --dry-run     # the plan and commands only

Before the change the engines served repeated prompts from their prefix caches (the warm-up sent the
first measured prompts; throughput cycled through the prompts single had just sent), so TTFT and
requests/min were partly the caches' figures; after it every scenario of the default config is
cold (`cache: cold`), and the records say how many prompt tokens came from a cache (0).

Each commit is exported (git archive) under --work, shares this checkout's built environments,
models and prompt sample (symlinks and copies: nothing is built again), and runs the pipeline's own
bench and merge jobs for the chosen engines (snakemake --forcerun bench). The figures come from each
run's results/tables/summary.csv; the machine's load average is printed beside each run.
Needs a finished default run in this checkout (.venvs/, resources/, results/).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_LINKS = (".venvs", "resources")  # built once in this checkout: the runs use the same ones
SHARED_COPIES = ("results/envs", "results/models", "results/prompts", "results/memory", "results/hardware")
SCENARIOS = ("single", "throughput")


def export(ref: str, work: Path) -> Path:
    """The commit's tree under work/REF, sharing this checkout's environments, models and sample."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True)
    target = work / sha.stdout.strip()
    if not (target / "Snakefile").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "archive", ref], cwd=REPO, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {ref} failed")
    for name in SHARED_LINKS:
        link = target / name
        if not link.exists() and (REPO / name).exists():
            link.symlink_to(REPO / name)
    for name in SHARED_COPIES:
        if (REPO / name).exists() and not (target / name).exists():
            shutil.copytree(REPO / name, target / name, copy_function=shutil.copy2)  # times kept: not rebuilt
    return target


def write_config(checkout: Path, engines: list[str]) -> Path:
    """The checkout's own default config, with only the chosen engines."""
    config = yaml.safe_load((checkout / "config" / "config.yaml").read_text())
    missing = [e for e in engines if e not in config["engines"]]
    if missing:
        raise SystemExit(f"{checkout.name}: engines {missing} not in its config/config.yaml")
    config["engines"] = {name: config["engines"][name] for name in engines}
    path = checkout / "config" / "before_after.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(config: Path) -> list[str]:
    return [
        "snakemake",
        "--cores",
        "all",
        "--configfile",
        str(config),
        "--rerun-triggers",
        "mtime",
        "--forcerun",
        "bench",
        "results/tables/summary.csv",
    ]


def run(checkout: Path, config: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "workflow")}
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    result = subprocess.run(command(config), cwd=checkout, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{checkout.name}: snakemake failed:\n{result.stderr[-3000:]}")
    return {
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.monotonic() - started, 1),
        "figures": figures(checkout / "results"),
    }


def figures(results: Path) -> dict:
    """(engine, scenario) -> TTFT p50, requests/min and tokens/s, with the cached-token share if recorded."""
    sys.path.insert(0, str(REPO / "bench_scripts"))
    from cache_share import shares

    cached = {(r["engine"], r["scenario"]): r["share"] for r in shares(results)}
    out = {}
    with open(results / "tables" / "summary.csv") as handle:
        for row in csv.DictReader(handle):
            if row["scenario"] in SCENARIOS:
                out[f"{row['engine']}/{row['scenario']}"] = {
                    "ttft_p50_ms": _float(row.get("ttft_p50_s"), 1000),
                    "requests_per_min": _float(row.get("requests_per_min")),
                    "tokens_per_s": _float(row.get("tokens_per_s_mean")),
                    "cached_share": cached.get((row["engine"], row["scenario"])),
                }
    return out


def _float(text: str | None, scale: float = 1.0) -> float | None:
    return None if text in (None, "") else float(text) * scale


def report(runs: dict[str, list[dict]], before: str, after: str) -> str:
    def mean(ref: str, key: str, metric: str) -> str:
        values = [r["figures"].get(key, {}).get(metric) for r in runs[ref]]
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        return f"{sum(values) / len(values):.1%}" if metric == "cached_share" else f"{sum(values) / len(values):.1f}"

    keys = sorted({k for ref in runs for r in runs[ref] for k in r["figures"]})
    lines = [
        f"| engine/scenario | TTFT p50 ms {before} | TTFT p50 ms {after} | req/min {before} | req/min {after} "
        f"| cached prompt % {after} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in keys:
        lines.append(
            f"| {key} | {mean(before, key, 'ttft_p50_ms')} | {mean(after, key, 'ttft_p50_ms')} | "
            f"{mean(before, key, 'requests_per_min')} | {mean(after, key, 'requests_per_min')} | "
            f"{mean(after, key, 'cached_share')} |"
        )
    loads = ", ".join(
        f"{ref}: " + " ".join(f"{r['load_before']}->{r['load_after']}" for r in runs[ref]) for ref in runs
    )
    return "\n".join(lines) + f"\n\n1-min load before->after each run: {loads}; {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="597ec75", help="the commit before the change")
    parser.add_argument("--after", default="HEAD", help="the commit after it")
    parser.add_argument("--engines", default="vllm,llamacpp")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/infbench-before-after"))
    parser.add_argument("--out", type=Path, help="also write the runs as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    if args.dry_run:
        for ref in (args.before, args.after):
            print(f"{ref}: git archive {ref} | tar -x -C {args.work}/<sha>; link {', '.join(SHARED_LINKS)}; ")
            print(f"    copy {', '.join(SHARED_COPIES)}; config: engines {engines}")
            print("    " + " ".join(command(Path("config/before_after.yaml"))))
        print(f"{args.rounds} rounds, alternating {args.before} and {args.after}")
        return 0
    checkouts = {}
    for ref in (args.before, args.after):
        checkout = export(ref, args.work)
        checkouts[ref] = (checkout, write_config(checkout, engines))
    runs: dict[str, list[dict]] = {ref: [] for ref in checkouts}
    for round_index in range(args.rounds):
        for ref, (checkout, config) in checkouts.items():
            print(f"round {round_index + 1}: {ref} ({checkout.name}) ...", file=sys.stderr, flush=True)
            runs[ref].append(run(checkout, config))
            print(json.dumps(runs[ref][-1]), file=sys.stderr, flush=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))
    print(report(runs, args.before, args.after))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

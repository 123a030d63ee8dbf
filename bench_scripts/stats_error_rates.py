"""The statistics' error rates on synthetic runs with a known truth (issue 20, item 5).

    python bench_scripts/stats_error_rates.py                 # 200 trials of the study's shape
    python bench_scripts/stats_error_rates.py --trials 50 --models 2 --engines 2 --json

Each trial draws a fresh prompt sample and two runs of it, A and B, through the same code as
`infbench compare` (compare.compare_runs on per-request and per-repeat frames, Benjamini-Hochberg
over all rows of the trial), and the intervals of single cells (sig.mean_interval,
sig.quantile_interval) as the tables show them:

- A/A: B drawn from the same distribution as A (same prompts, fresh noise): the share of tested rows
  whose verdict is "no significant difference", the share of trials with any false verdict, and
  how often the interval of the change covers 0;
- injected slowdown: B's latencies (TTFT, TPOT, latency) 10% longer and its rates (tokens/s,
  requests/min) 1/1.1 of A's: the share of rows called worse, and how often the interval covers the
  true change (+10% or -9.09%);
- coverage of a single cell's 95% interval against the population's true value (mean tokens/s over
  prompts, requests/min over repeats).

The model: a request's figure = engine speed x prompt effect (lognormal, sd 0.3: prompts differ a lot)
x noise (lognormal, sd --noise: 0.05 is a quiet machine); a load scenario's figure per repeat =
engine speed x noise (lognormal, sd --repeat-noise). Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from infbench.handoff import MergePlan  # noqa: E402
from infbench.results import significance as sig  # noqa: E402
from infbench.results.compare import PER_REPEAT, RunData, compare_runs  # noqa: E402

PROMPT_SD = 0.3
SLOWDOWN = 1.10
LATENCY_COLUMNS = ("ttft_s", "tpot_s", "latency_s")


def plan(models: int, engines: int) -> MergePlan:
    return MergePlan(
        engines={f"e{i}": f"E{i}" for i in range(engines)},
        models={f"m{i}": f"M{i}" for i in range(models)},
        scenarios={"single": "single", "throughput": "throughput", "poisson": "open_loop"},
    )


def draw_run(
    rng: np.random.Generator,
    the_plan: MergePlan,
    prompts: np.ndarray,
    repeats: int,
    noise: float,
    repeat_noise: float,
    slow: float = 1.0,
) -> RunData:
    """One synthetic run over the prompt effects `prompts`; `slow` multiplies every latency."""
    request_rows, repeat_rows = [], []
    n = len(prompts)
    for e_index, engine in enumerate(the_plan.engines):
        for m_index, model in enumerate(the_plan.models):
            speed = (1.0 + 0.1 * e_index) / (1.0 + 0.5 * m_index)  # engines and models differ
            ttft = 0.05 * prompts[:, None] * rng.lognormal(0, noise, (n, repeats)) / speed * slow
            tpot = 0.02 * prompts[:, None] * rng.lognormal(0, noise, (n, repeats)) / speed * slow
            tokens = 64.0
            latency = ttft + (tokens - 1) * tpot
            request_rows.append(
                pl.DataFrame(
                    {
                        "engine": engine,
                        "model": model,
                        "scenario": "single",
                        "repeat": np.tile(np.arange(repeats, dtype=np.int32), n),
                        "prompt_id": np.repeat([f"p{i:04d}" for i in range(n)], repeats),
                        "latency_s": latency.ravel(),
                        "tokens_per_s": (tokens / latency).ravel(),
                        "tpot_s": tpot.ravel(),
                        "ttft_s": ttft.ravel(),
                    }
                )
            )
            for scenario in ("throughput", "poisson"):
                for repeat in range(repeats):
                    factor = rng.lognormal(0, repeat_noise, len(PER_REPEAT))
                    figures = {
                        m.column: (base * f * slow if not m.higher_is_better else base * f / slow)
                        for m, base, f in zip(
                            PER_REPEAT, (600.0 * speed, 300.0 * speed, 0.2, 0.03, 2.0, 3.5), factor, strict=False
                        )
                    }
                    repeat_rows.append(
                        {"engine": engine, "model": model, "scenario": scenario, "repeat": repeat} | figures
                    )
    requests = pl.concat(request_rows).with_columns(pl.col("repeat").cast(pl.Int32))
    repeats_frame = pl.DataFrame(repeat_rows).with_columns(pl.col("repeat").cast(pl.Int32))
    units = {"single": "prompts", "throughput": "repeats", "poisson": "repeats"}
    return RunData("synthetic", the_plan, {}, requests, repeats_frame, units)


def true_change(metric_higher_is_better: bool, slow: float) -> float:
    return (1 / slow - 1) * 100 if metric_higher_is_better else (slow - 1) * 100


def comparison_trials(args) -> dict:
    the_plan = plan(args.models, args.engines)
    results = {"aa": [], "injected": []}
    aa_any_false = 0
    started = time.perf_counter()
    for trial in range(args.trials):
        rng = np.random.default_rng([args.seed, trial])
        prompts = rng.lognormal(0, PROMPT_SD, args.prompts)
        a = draw_run(rng, the_plan, prompts, args.repeats, args.noise, args.repeat_noise)
        b_same = draw_run(rng, the_plan, prompts, args.repeats, args.noise, args.repeat_noise)
        b_slow = draw_run(rng, the_plan, prompts, args.repeats, args.noise, args.repeat_noise, SLOWDOWN)
        aa_rows = compare_runs(a, b_same, paired=True)
        aa_any_false += any(r.change.verdict in (sig.BETTER, sig.WORSE) for r in aa_rows)
        results["aa"] += [(r, 0.0) for r in aa_rows]
        slow_rows = compare_runs(a, b_slow, paired=True)
        results["injected"] += [(r, true_change(r.change.higher_is_better, SLOWDOWN)) for r in slow_rows]
    elapsed = time.perf_counter() - started
    out = {"trials": args.trials, "seconds": round(elapsed, 1)}
    for name, rows in results.items():
        per_metric = {}
        for (unit, metric), part in _by_metric(rows).items():
            tested = [(r, truth) for r, truth in part if r.change.p is not None]
            covered = [r.change.low_pct <= truth <= r.change.high_pct for r, truth in tested]
            per_metric[f"{unit}: {metric}"] = {
                "tested": len(tested),
                "no_difference": _share([r.change.verdict == sig.SAME for r, _ in tested]),
                "worse": _share([r.change.verdict == sig.WORSE for r, _ in tested]),
                "better": _share([r.change.verdict == sig.BETTER for r, _ in tested]),
                "unadjusted_significant": _share([r.change.p < sig.ALPHA for r, _ in tested]),
                "coverage": _share(covered),
            }
        out[name] = per_metric
    out["aa_trials_with_any_false_verdict"] = _share([True] * aa_any_false + [False] * (args.trials - aa_any_false))
    return out


def _by_metric(rows):
    grouped: dict = {}
    for row, truth in rows:
        grouped.setdefault((row.unit, row.metric), []).append((row, truth))
    return grouped


def _share(flags) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def interval_coverage(args) -> dict:
    """Single-cell intervals against the population's true values."""
    sd = math.sqrt(PROMPT_SD**2 + args.noise**2)
    true_mean = math.exp(sd**2 / 2)  # the mean of lognormal(0, sd)
    hits = {"tokens/s mean over prompts (t)": [], "requests/min over repeats (t)": []}
    for trial in range(args.trials):
        rng = np.random.default_rng([args.seed, 10**6 + trial])
        prompts = rng.lognormal(0, PROMPT_SD, args.prompts)
        values = prompts[:, None] * rng.lognormal(0, args.noise, (args.prompts, args.repeats))
        interval = sig.mean_interval(values.mean(axis=1), "prompts")
        # The population mean of a prompt's mean over its repeats is that of one request.
        hits["tokens/s mean over prompts (t)"].append(interval.low <= true_mean <= interval.high)
        per_repeat = rng.lognormal(0, args.repeat_noise, args.repeats)
        interval = sig.mean_interval(per_repeat, "repeats")
        if interval.low is not None:
            hits["requests/min over repeats (t)"].append(
                interval.low <= math.exp(args.repeat_noise**2 / 2) <= interval.high
            )
    return {name: {"intervals": len(flags), "coverage": _share(flags)} for name, flags in hits.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.05, help="sd of a request's log figure (0.05: quiet)")
    parser.add_argument("--repeat-noise", type=float, default=0.03, help="sd of a repeat's log figure")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "load_1min": os.getloadavg()[0],
        "comparisons": comparison_trials(args),
        "intervals": interval_coverage(args),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    comparisons = report["comparisons"]
    print(
        f"{args.trials} trials of {args.models} models x {args.engines} engines x 3 scenarios, "
        f"{args.prompts} prompts x {args.repeats} repeats ({comparisons['seconds']} s, load {report['load_1min']:.1f})"
    )
    print(f"A/A trials with any false verdict: {comparisons['aa_trials_with_any_false_verdict']:.1%}")
    print(
        "\n| comparison | unit: metric | rows tested | no difference | worse | p<0.05 unadjusted "
        "| interval covers truth |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in ("aa", "injected"):
        for metric, figures in comparisons[name].items():
            print(
                f"| {name} | {metric} | {figures['tested']} | {_pct(figures['no_difference'])} | "
                f"{_pct(figures['worse'])} | {_pct(figures['unadjusted_significant'])} | {_pct(figures['coverage'])} |"
            )
    print("\n| single-cell interval | intervals | coverage |\n| --- | ---: | ---: |")
    for name, figures in report["intervals"].items():
        print(f"| {name} | {figures['intervals']} | {_pct(figures['coverage'])} |")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())

"""The main tables' uncertainty: each cell's 95% interval, and which engines of a row are bold.

A cell is a sample of independent units (results/significance.py): per-prompt tokens/s (a prompt's
mean over its repeats) in a single-request scenario, per-repeat requests/min under load. It shows
`estimate ±half-width`; a sample too small for an interval shows the estimate with NO_INTERVAL_MARK
and a footnote saying why, never a misleading interval.

Bold: the row's best engine alone only when it beats every other engine significantly (paired by
prompt where both measured the same prompts, Welch's t over repeats otherwise). Engines not
significantly different from the best are bold with it, and a footnote gives the p-value. A best cell
marked for failed requests, client lag or a busy machine never takes the bold alone: the runner-up
is bold beside it. When no test is possible (one repeat), nothing is bold and the footnote says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from infbench.handoff import MergePlan
from infbench.results import routing
from infbench.results import significance as sig

NO_INTERVAL_MARK = "†"  # a footnote mark: the cell stays a number for anyone parsing the table


@dataclass(frozen=True)
class CellSample:
    """One cell's units: values[i] is unit i's figure (keys[i] its prompt id; no keys for repeats)."""

    values: np.ndarray
    unit: str  # prompts | repeats
    keys: tuple[str, ...] = ()
    marked: tuple[str, ...] = ()  # failed requests, client lag, busy: why it may not win alone

    @property
    def interval(self) -> sig.Interval:
        return sig.mean_interval(self.values, self.unit)


def cell_text(estimate: float | None, interval: sig.Interval | None, digits: int = 2) -> str:
    """`45.50 ±0.83`, or `45.50†` when the sample gives no interval (see the footnote)."""
    if estimate is None:
        return "n/a"
    if interval is None or interval.half_width is None:
        return f"{estimate:.{digits}f}{NO_INTERVAL_MARK}"
    return f"{estimate:.{digits}f} ±{interval.half_width:.{digits}f}"


@dataclass(frozen=True)
class RowBold:
    bold: tuple[str, ...]  # engines shown bold
    note: str | None  # the row's footnote (ties, a marked best cell, no test possible)


def _paired(best: CellSample, other: CellSample) -> tuple[np.ndarray, np.ndarray] | None:
    """The two cells' values on the prompts both measured, in one order (None: not paired by prompt)."""
    if best.unit != "prompts" or not best.keys or not other.keys:
        return None
    index = {key: i for i, key in enumerate(other.keys)}
    common = [(i, index[key]) for i, key in enumerate(best.keys) if key in index]
    return best.values[[i for i, _ in common]], other.values[[j for _, j in common]]


def against_best(best: CellSample, other: CellSample, higher_is_better: bool = True) -> sig.Change:
    """The other engine against the best: paired by prompt where possible, else Welch over the units."""
    paired = _paired(best, other)
    if paired is not None:
        return sig.compare_means(paired[0], paired[1], best.unit, higher_is_better, paired=True)
    return sig.compare_means(best.values, other.values, best.unit, higher_is_better, paired=False)


def row_bold(
    estimates: dict[str, float | None],
    samples: dict[str, CellSample],
    labels: dict[str, str],
    higher_is_better: bool = True,
) -> RowBold:
    """Which engines of one row are bold (see the module doc); estimates None: no number in the cell."""
    present = {e: v for e, v in estimates.items() if v is not None and e in samples}
    if len(present) < 2:
        return RowBold((), None)
    ranked = sorted(present, key=lambda e: present[e], reverse=higher_is_better)
    best = ranked[0]
    tests = {e: against_best(samples[best], samples[e], higher_is_better) for e in ranked[1:]}
    untested = [e for e, change in tests.items() if change.p is None]
    if untested:
        why = tests[untested[0]].note or "no test"
        return RowBold((), f"no engine bold: {labels[best]} against {labels[untested[0]]}: {why}")
    tied = [e for e in ranked[1:] if tests[e].p >= sig.ALPHA]
    if tied:
        ps = ", ".join(f"{labels[e]} p={tests[e].p:.2g}" for e in tied)
        names = [labels[e] for e in (best, *tied)]
        together = f"{', '.join(names[:-1])} and {names[-1]}"
        return RowBold((best, *tied), f"{together}: not significantly different from the best ({ps})")
    runner_up = ranked[1]
    if samples[best].marked:
        return RowBold(
            (best, runner_up),
            f"{labels[best]} is best but marked ({', '.join(samples[best].marked)}): bold beside "
            f"{labels[runner_up]}, not alone (p={tests[runner_up].p:.2g})",
        )
    return RowBold(
        (best,),
        f"{labels[best]} best: significantly ahead of {labels[runner_up]} "
        f"({tests[runner_up].method}, p={tests[runner_up].p:.2g})",
    )


# --- from the merge's frames ----------------------------------------------------------------------

# The main tables' figures, the unit each varies over, and the request or repeat column behind it.
MAIN_FIGURES = {
    "tokens_per_s_mean": ("prompts", "tokens_per_s"),  # speed table: mean of per-request tokens/s
    "requests_per_min": ("repeats", "requests_per_min"),  # throughput table: one figure per repeat
}


def cell_samples(
    requests: pl.DataFrame, repeats: pl.DataFrame, scenario: str, figure: str
) -> dict[tuple[str, str], CellSample]:
    """(engine, model) -> its units for one scenario's main figure.

    requests: one row per request (engine, model, scenario, prompt_id, ok and the request column);
    a prompt's unit value is its mean over its successful requests (its repeats). repeats: one row
    per (engine, model, scenario, repeat) with the per-repeat figure."""
    unit, column = MAIN_FIGURES[figure]
    if unit == "prompts":
        per_prompt = (
            requests.filter((pl.col("scenario") == scenario) & pl.col("ok") & pl.col(column).is_not_null())
            .group_by("engine", "model", "prompt_id")
            .agg(pl.col(column).mean())
            .sort("engine", "model", "prompt_id")
            .group_by("engine", "model", maintain_order=True)
            .agg("prompt_id", column)
        )
        return {
            (engine, model): CellSample(np.asarray(values, dtype=float), unit, tuple(keys))
            for engine, model, keys, values in per_prompt.iter_rows()
        }
    per_repeat = (
        repeats.filter((pl.col("scenario") == scenario) & pl.col(column).is_not_null())
        .sort("engine", "model", "repeat")
        .group_by("engine", "model", maintain_order=True)
        .agg(column)
    )
    return {
        (engine, model): CellSample(np.asarray(values, dtype=float), unit)
        for engine, model, values in per_repeat.iter_rows()
    }


def interval_columns(
    summaries: pl.DataFrame, requests: pl.DataFrame, repeats: pl.DataFrame, tables: dict[str, list[str]]
) -> pl.DataFrame:
    """The summaries with each main figure's 95% interval where a main table shows it
    (tables: figure -> its scenarios): {figure}_ci_low, _ci_high and _ci_method (e.g. "t over 8
    prompts", or why there is none), for details.md and summary.csv. A sweep step's row gets none."""
    whole = summaries["step_rate"].is_null() if "step_rate" in summaries.columns else None
    added = {}
    for figure, scenarios in tables.items():
        samples = {}
        for scenario in scenarios:
            samples.update(
                {(*key, scenario): s for key, s in cell_samples(requests, repeats, scenario, figure).items()}
            )
        intervals = [
            samples[key].interval if key in samples and (whole is None or whole[row]) else None
            for row, key in enumerate(summaries.select("engine", "model", "scenario").iter_rows())
        ]
        added[f"{figure}_ci_low"] = pl.Series([i.low if i else None for i in intervals], dtype=pl.Float64)
        added[f"{figure}_ci_high"] = pl.Series([i.high if i else None for i in intervals], dtype=pl.Float64)
        added[f"{figure}_ci_method"] = pl.Series([i.describe() if i else None for i in intervals], dtype=pl.String)
    return summaries.with_columns(**added)


def repeat_figures(summaries: pl.DataFrame) -> pl.DataFrame:
    """Per (engine, model, scenario, repeat) the per-repeat figures, from the summaries of whole
    scenarios (today one repeat each: repeat 1)."""
    columns = [column for unit, column in MAIN_FIGURES.values() if unit == "repeats"]
    return summaries.select("engine", "model", "scenario", pl.lit(1, pl.Int32).alias("repeat"), *columns)


def main_intervals(summaries: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan) -> tuple[pl.DataFrame, dict]:
    """The summaries with the main figures' interval columns, and per scenario its cells' samples:
    tokens/s over prompts in single-request scenarios, requests/min over repeats under load."""
    whole = summaries.filter(pl.col("step_rate").is_null()) if "step_rate" in summaries.columns else summaries
    repeats = repeat_figures(whole)
    loads = routing.scenarios_where(plan, "in_throughput_table") + routing.scenarios_where(plan, "in_load_plot")
    shown = {
        "tokens_per_s_mean": routing.scenarios_where(plan, "in_speed_table"),
        "requests_per_min": list(dict.fromkeys(loads)),
    }
    samples = {
        scenario: cell_samples(requests, repeats, scenario, figure)
        for figure, scenarios in shown.items()
        for scenario in scenarios
    }
    return interval_columns(summaries, requests, repeats, shown), samples


UNIT_LINES = {
    "prompts": "95% intervals: t over the prompts (a prompt's tokens/s is the mean of its requests); engines "
    "compared paired by prompt. Bold: significantly best in its row (p < 0.05), or not significantly "
    "different from the best.",
    "repeats": "95% intervals: t over the repeats (requests under load wait for each other, so a repeat, not a "
    "request, is the independent unit); engines compared with Welch's t over their repeats. Bold: "
    "significantly best in its row (p < 0.05), or not significantly different from the best.",
}


def table_notes(
    unit: str, model_notes: list[tuple[str, str]], missing: dict[str, list[str]], numbers: int
) -> list[str]:
    """The lines under one main table: the unit and method, each row's bold decision, and each
    reason a cell shows no interval (with the cells it concerns, or "every cell" when all of them)."""
    lines = ["", UNIT_LINES[unit]]
    lines += [f"- {model}: {note}" for model, note in model_notes]
    lines += [
        f"- {NO_INTERVAL_MARK} {why}: {'every cell' if len(cells) == numbers else ', '.join(cells)}"
        for why, cells in missing.items()
    ]
    return lines


def ci_cell(row: dict, figure: str) -> str:
    """details.md: `low–high` of a main figure's 95% interval, or why there is none."""
    low, high, method = row.get(f"{figure}_ci_low"), row.get(f"{figure}_ci_high"), row.get(f"{figure}_ci_method")
    if low is None or high is None:
        return f"n/a ({method})" if method else "n/a"
    return f"{low:.2f}–{high:.2f}"


def interval_notes() -> list[str]:
    return [
        "",
        "tok/s 95% CI: t over prompts, for single-request scenarios (a prompt's tokens/s is the mean of its "
        "requests); req/min 95% CI: t over repeats, for closed loops. The method of each is in summary.csv "
        "(*_ci_method); fewer than 3 prompts or repeats give none.",
    ]

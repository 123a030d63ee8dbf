"""`infbench compare`: run the comparison (compare_paths) and write compare.md, compare.csv, forest.png
and compare.html under --out.

The markdown lists what differs between the runs, then one row per (engine, model, scenario, metric):
A, B, the change of B against A in %, its 95% interval, the verdict and the method. The forest plot
draws each row's change and interval, one panel per metric. The HTML page is the markdown with the
plot inlined, for the Snakemake report (it loads nothing from outside).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import polars as pl  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from infbench.fileio import write_bytes_atomic, write_text_atomic  # noqa: E402
from infbench.results import significance as sig  # noqa: E402
from infbench.results.bundle_verify import ExtractLimits  # noqa: E402
from infbench.results.compare import (  # noqa: E402
    Differences,
    Row,
    common_cells,
    compare_runs,
    opened_pair,
    provenance_differences,
    worse_beyond,
)
from infbench.results.reportpages import markdown_page  # noqa: E402

COLOURS = {sig.BETTER: "#2a9d3f", sig.WORSE: "#d62728", sig.SAME: "#555555", sig.UNKNOWN: "#bbbbbb"}
DPI = 110


@dataclass(frozen=True)
class Display:
    unit: str  # shown after the metric's name
    scale: float  # seconds shown as ms: 1000
    digits: int


DISPLAY = {
    "tokens/s": Display("", 1.0, 2),
    "requests/min": Display("", 1.0, 2),
    "TTFT p50": Display("ms", 1000.0, 1),
    "TPOT p50": Display("ms", 1000.0, 2),
    "latency p50": Display("s", 1.0, 3),
    "latency p99": Display("s", 1.0, 3),
}


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    shown = DISPLAY.get(metric, Display("", 1.0, 3))
    return f"{value * shown.scale:.{shown.digits}f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def metric_label(metric: str) -> str:
    unit = DISPLAY.get(metric, Display("", 1.0, 3)).unit
    return f"{metric} {unit}".strip()


def _marks(row: Row) -> str:
    parts = [f"A: {', '.join(row.marks_a)}"] if row.marks_a else []
    parts += [f"B: {', '.join(row.marks_b)}"] if row.marks_b else []
    return "; ".join(parts)


def verdict_counts(rows: list[Row]) -> dict[str, int]:
    counts = {v: 0 for v in (sig.BETTER, sig.WORSE, sig.SAME, sig.UNKNOWN)}
    for row in rows:
        counts[row.change.verdict] += 1
    return counts


def summary_line(rows: list[Row]) -> str:
    counts = verdict_counts(rows)
    return (
        f"{len(rows)} comparisons: {counts[sig.BETTER]} better, {counts[sig.WORSE]} worse, "
        f"{counts[sig.SAME]} no significant difference, {counts[sig.UNKNOWN]} without a test "
        "(too few prompts, requests or repeats)"
    )


def markdown(
    name_a: str, name_b: str, run_ids: tuple[str, str], differences: Differences, rows: list[Row], paired: bool
) -> str:
    tested = sum(row.change.p is not None for row in rows)
    lines = [
        "# Comparison: B against A",
        "",
        f"- A: `{name_a}` (run {run_ids[0]})",
        f"- B: `{name_b}` (run {run_ids[1]})",
        "",
        "## What differs between the runs",
        "",
    ]
    lines += [f"- {line}" for line in differences.lines] or [
        "Nothing recorded differs: commit, engine versions and locks, model files, prompt sample, sampling, "
        "scenarios and hardware are the same."
    ]
    lines += [
        "",
        "## Changes",
        "",
        "Change: (B - A) / A in %, with its 95% interval. tokens/s and requests/min: bigger is better; "
        "TTFT, TPOT and latency: smaller is better. Single-request scenarios: the unit is the prompt"
        + (" (paired by prompt id: both runs used the same prompt sample)" if paired else " (not paired)")
        + "; load scenarios: the unit is the repeat (requests under load are not independent). Verdicts: "
        f"p-values adjusted over all {tested} tests (Benjamini-Hochberg, 5% false discovery rate). "
        "A single-request verdict weighs the change against prompt-to-prompt variation within a run, "
        "not against drift of the machine between the two runs: with one run each, drift reads as a "
        "change (two unmarked runs of one checkout on a shared 2-core machine: tokens/s -5.7%, TTFT p50 "
        "+24.2%, both called worse). Guard CI with --fail-if-worse above that drift, and make claims "
        "about runs with repeats (docs/compare.md).",
        "",
        summary_line(rows) + ".",
        "",
        "engine | model | scenario | metric | A | B | change % | 95% interval % | verdict | method | marks",
        "--- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ---",
    ]
    notes = []
    for row in rows:
        change = row.change
        interval = f"[{_signed(change.low_pct)}, {_signed(change.high_pct)}]" if change.low_pct is not None else "n/a"
        verdict = change.verdict
        if change.excludes_zero_unadjusted:
            notes.append(row)
            verdict += f" ({len(notes)})"
        lines.append(
            " | ".join(
                [
                    row.engine,
                    row.model,
                    row.scenario,
                    metric_label(row.metric),
                    _value(row.metric, change.a),
                    _value(row.metric, change.b),
                    _signed(change.change_pct),
                    interval,
                    verdict,
                    change.note or change.method,
                    _marks(row),
                ]
            )
        )
    if notes:
        lines += [""]
        lines += [
            f"({i}) {row.engine}/{row.model}/{row.scenario} {row.metric}: its own interval excludes 0 "
            f"(p={row.change.p:.3g}), but not after adjusting for {tested} tests "
            f"(adjusted p={row.change.p_adjusted:.3g})"
            for i, row in enumerate(notes, start=1)
        ]
    if any(row.marks_a or row.marks_b for row in rows):
        lines += [
            "",
            "Marks: failed requests (some requests of the cell failed), client lag (the client's own delay passed "
            "its limit), busy (other processes used the machine meanwhile): a difference in a marked cell may "
            "come from them rather than the engine.",
        ]
    return "\n".join(lines) + "\n"


def csv(rows: list[Row]) -> str:
    return pl.DataFrame(
        [
            {
                "engine": r.engine,
                "model": r.model,
                "scenario": r.scenario,
                "metric": r.metric,
                "unit": r.unit,
                "a": r.change.a,
                "b": r.change.b,
                "change_pct": r.change.change_pct,
                "low_pct": r.change.low_pct,
                "high_pct": r.change.high_pct,
                "p": r.change.p,
                "p_adjusted": r.change.p_adjusted,
                "verdict": r.change.verdict,
                "method": r.change.method,
                "note": r.change.note,
                "marks_a": "; ".join(r.marks_a),
                "marks_b": "; ".join(r.marks_b),
            }
            for r in rows
        ],
        infer_schema_length=None,
    ).write_csv()


def forest_plot(rows: list[Row]) -> bytes:
    """One panel per metric, one line per cell: the change in % and its interval, coloured by verdict.

    Each panel draws all its intervals as one collection and all its points as one scatter, and the
    margins are set by hand (no tight_layout): hundreds of rows stay fast."""
    metrics = list(dict.fromkeys(row.metric for row in rows))
    cells = list(dict.fromkeys((row.engine, row.model, row.scenario) for row in rows))
    position = {cell: y for y, cell in enumerate(cells)}
    label_width = max(len("/".join(cell)) for cell in cells) * 0.075 + 0.3  # inches for the cell names
    width, height = 2.4 * len(metrics) + label_width, max(2.5, 0.2 * len(cells) + 1.3)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width, height), squeeze=False)
    for index, (ax, metric) in enumerate(zip(axes[0], metrics, strict=True)):
        ax.set_ylim(len(cells) - 0.5, -0.5)
        if index:  # the cell names only once, on the left: no tick objects per row on the other panels
            ax.yaxis.set_major_locator(NullLocator())
        ax.axvline(0, color="#999999", linewidth=0.8)
        shown = [r for r in rows if r.metric == metric and r.change.change_pct is not None]
        ys = [position[(r.engine, r.model, r.scenario)] for r in shown]
        colours = [COLOURS[r.change.verdict] for r in shown]
        bounded = [(y, r, c) for y, r, c in zip(ys, shown, colours, strict=True) if r.change.low_pct is not None]
        if bounded:
            ax.hlines(
                [y for y, _, _ in bounded],
                [r.change.low_pct for _, r, _ in bounded],
                [r.change.high_pct for _, r, _ in bounded],
                colors=[c for _, _, c in bounded],
                linewidth=1.6,
            )
        ax.scatter([r.change.change_pct for r in shown], ys, c=colours, s=10, zorder=3)
        ax.set_title(metric_label(metric), fontsize=9)
        ax.set_xlabel("change %", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(cells)), ["/".join(cell) for cell in cells])
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=1.6, label=v) for v, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle("B against A: change in % with 95% interval", fontsize=10)
    fig.subplots_adjust(left=label_width / width, right=0.98, top=1 - 0.55 / height, bottom=0.9 / height, wspace=0.15)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_report(out_dir: Path, text: str, rows: list[Row]) -> list[Path]:
    """compare.md, compare.csv, forest.png and compare.html under out_dir."""
    plot = forest_plot(rows) if rows else b""
    page = markdown_page("Comparison", text)
    if plot:  # inlined after rendering: the page loads nothing from outside
        image = f'<p><img alt="forest plot" src="data:image/png;base64,{base64.b64encode(plot).decode()}"></p>'
        page = page.replace("\n</body>", f"\n{image}\n</body>", 1)
    outputs = {"compare.md": text.encode(), "compare.csv": csv(rows).encode(), "compare.html": page.encode()}
    if plot:
        outputs["forest.png"] = plot
    written = []
    for name, data in outputs.items():
        target = out_dir / name
        if name.endswith((".md", ".csv", ".html")):
            write_text_atomic(target, data.decode())
        else:
            write_bytes_atomic(target, data)
        written.append(target)
    return written


# --- the command ----------------------------------------------------------------------------------

NO_COMMON = 2
REFUSED = 2
WORSE_EXIT = 1


@dataclass
class Outcome:
    code: int
    message: str  # one line for the console
    text: str = ""  # the markdown, when a comparison was made
    rows: list[Row] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def compare_paths(
    path_a: Path,
    path_b: Path,
    out_dir: Path | None,
    fail_if_worse: float | None = None,
    allow_different_workload: bool = False,
    limits: ExtractLimits | None = None,
) -> Outcome:
    """Open, check and compare two runs; write the report under out_dir (when given)."""
    with opened_pair(path_a, path_b, limits) as (a, b):
        differences = provenance_differences(a.provenance, b.provenance)
        if differences.refusals and not allow_different_workload:
            listed = "".join(f"\n  - {line}" for line in differences.lines)
            return Outcome(
                REFUSED,
                "refused: " + "; and ".join(differences.refusals) + ". Pass --allow-different-workload to compare "
                f"anyway (nothing is then paired by prompt). What differs:{listed}",
            )
        if not common_cells(a, b):
            return Outcome(
                NO_COMMON, f"{a.name} and {b.name} have no (engine, model, scenario) in common: nothing to compare"
            )
        paired = differences.same_prompts
        rows = compare_runs(a, b, paired)
        run_ids = (str(a.provenance.get("run_id")), str(b.provenance.get("run_id")))
        text = markdown(a.name, b.name, run_ids, differences, rows, paired)
    written = write_report(out_dir, text, rows) if out_dir else []
    message = summary_line(rows)
    code = 0
    if fail_if_worse is not None:
        worse = worse_beyond(rows, fail_if_worse)
        if worse:
            code = WORSE_EXIT
            cells = ", ".join(
                f"{r.engine}/{r.model}/{r.scenario} {r.metric} {r.change.change_pct:+.1f}%" for r in worse[:5]
            )
            message += f"; FAIL: {len(worse)} significantly worse by more than {fail_if_worse:g}%: {cells}"
            message += " ..." if len(worse) > 5 else ""
    return Outcome(code, message, text, rows, written)

"""Plots of a run, from the raw records (matplotlib, Agg backend), written to results/plots/.

tokens_per_s.png   mean tokens/s of a single request per model and engine (bars, 95% interval over prompts)
ttft_cdf.png       distribution (CDF) of the time to first token per engine and model, per scenario
latency_cdf.png    distribution (CDF) of the full round-trip latency, per scenario
throughput.png     requests/min (95% interval over repeats) and output tokens/s per engine under load
server_timeline.png  the engine's running/waiting requests and KV usage beside the client's in flight
                   (results/serverplots.py), per scenario whose server metrics were sampled

Every engine keeps one colour across the plots. An engine without successful requests (skipped, or
every request failed) gets no bar and says so, rather than a zero that reads like a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import polars as pl  # noqa: E402

from infbench.fileio import write_bytes_atomic  # noqa: E402
from infbench.handoff import MergePlan  # noqa: E402
from infbench.results import routing, tablestats  # noqa: E402
from infbench.results.serverplots import TIMELINE_FILE, plot_server_timeline  # noqa: E402
from infbench.results.tables import load_summaries  # noqa: E402

PLOT_FILES = ("tokens_per_s.png", "ttft_cdf.png", "latency_cdf.png", "throughput.png", TIMELINE_FILE)
DPI = 110


@dataclass(frozen=True)
class PlotData:
    plan: MergePlan
    summaries: pl.DataFrame  # one row per (engine, model, scenario) and sweep step (tables.load_summaries)
    requests: pl.DataFrame  # one row per request (tables.REQUEST_COLUMNS under engine, model, scenario)
    skipped: dict[tuple[str, str], str]  # (engine, model) -> why it did not run

    @classmethod
    def load(cls, raw_dir: Path, plan: MergePlan) -> PlotData:
        df, servers, requests, passes = load_summaries(raw_dir, routing.check_plan(plan))
        df, _ = tablestats.main_intervals(df, requests, passes, plan)  # the error bars: the tables' 95% intervals
        skipped = {key: s.reason or "skipped" for key, s in servers.items() if s.status == "skipped"}
        return cls(plan, df, requests, skipped)

    def colour(self, engine: str) -> str:
        names = list(self.plan.engines)
        return plt.get_cmap("tab10")(names.index(engine) % 10)

    def value(self, engine: str, model: str, scenario: str, column: str) -> float | None:
        row = self.summaries.filter(
            (pl.col("engine") == engine)
            & (pl.col("model") == model)
            & (pl.col("scenario") == scenario)
            & pl.col("step_rate").is_null()  # the whole scenario, not one of a sweep's steps
        )
        return row[column].item() if row.height and column in row.columns else None

    def scenarios(self, flag: str) -> list[str]:
        """The scenarios whose kind's class sets `flag` (measure.scenarios), in the config's order."""
        return routing.scenarios_where(self.plan, flag)

    def all_scenarios(self) -> list[str]:
        return self.plan.all_runs()


def _save(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    # No software/date metadata: the same records give the same bytes.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _grouped_bars(ax, data: PlotData, scenario: str, column: str) -> None:
    """Bars per model and engine; the 95% interval as the error bar where the tables give one."""
    models = list(data.plan.models)
    engines = list(data.plan.engines)
    width = 0.8 / max(len(engines), 1)
    for e_index, engine in enumerate(engines):
        for m_index, model in enumerate(models):
            x = m_index + (e_index - (len(engines) - 1) / 2) * width
            value = data.value(engine, model, scenario, column)
            if value is None:  # why is said under the figure (_note_skipped) and in the tables
                ax.text(x, 0, " n/a", ha="center", va="bottom", fontsize=8, rotation=90, color="dimgray")
                continue
            low = data.value(engine, model, scenario, f"{column}_ci_low")
            high = data.value(engine, model, scenario, f"{column}_ci_high")
            error = [[value - low], [high - value]] if low is not None and high is not None else None
            ax.bar(
                x,
                value,
                width,
                yerr=error,
                capsize=3,
                color=data.colour(engine),
                label=data.plan.engines[engine] if m_index == 0 else None,
            )
            ax.text(x, max(value, high or value), f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(models)), [data.plan.models[m] for m in models], rotation=20, ha="right")
    ax.set_xlim(-0.5, len(models) - 0.5)  # every engine's slot shows, an n/a one included
    ax.grid(axis="y", alpha=0.3)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # no engine with a bar: no empty legend box
        ax.legend(fontsize=8)


def _no_data(ax, text: str = "no measured scenario of this kind") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_tokens_per_s(data: PlotData, path: Path) -> None:
    singles = data.scenarios("in_speed_table")
    fig, axes = plt.subplots(
        1, max(len(singles), 1), figsize=(max(6, 1.6 * len(data.plan.models) + 4), 4.2), squeeze=False
    )
    for ax, scenario in zip(axes[0], singles or [None], strict=True):
        if scenario is None:
            _no_data(ax)
            continue
        _grouped_bars(ax, data, scenario, "tokens_per_s_mean")
        ax.set_title(f"Inference speed, scenario {scenario} (concurrency 1)")
        ax.set_ylabel("tokens/s (mean; error bar: 95% interval over prompts)")
        _legend(ax)
    _note_skipped(fig, data)
    _save(fig, path)


def _ecdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[0], *ordered], [0.0, *((i + 1) / n for i in range(n))]


def _plot_cdf(data: PlotData, path: Path, column: str, scale: float, unit: str, title: str) -> None:
    scenarios = data.all_scenarios()
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.2 * len(scenarios), 4.2), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        drawn = 0
        for engine in data.plan.engines:
            for m_index, model in enumerate(data.plan.models):
                values = (
                    data.requests.filter(
                        (pl.col("engine") == engine)
                        & (pl.col("model") == model)
                        & (pl.col("scenario") == scenario)
                        & pl.col("ok")
                    )[column].drop_nulls()
                    * scale
                ).to_list()
                if not values:
                    continue
                xs, ys = _ecdf(values)
                ax.step(
                    xs,
                    ys,
                    where="post",
                    color=data.colour(engine),
                    linestyle=styles[m_index % len(styles)],
                    label=f"{data.plan.engines[engine]} / {data.plan.models[model]} (n={len(values)})",
                )
                drawn += 1
        if not drawn:
            _no_data(ax, "no successful request")
        else:
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(unit)
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{title}, scenario {scenario}")
    _note_skipped(fig, data)
    _save(fig, path)


def plot_throughput(data: PlotData, path: Path) -> None:
    # Fixed-load scenarios; a sweep's steps are in details.md (one bar per rate would crowd this).
    loads = data.scenarios("in_load_plot")
    rows = max(len(loads), 1)
    width = max(6, 1.2 * len(data.plan.engines) * len(data.plan.models) + 3)
    fig, axes = plt.subplots(rows, 2, figsize=(2 * width, 4.2 * rows), squeeze=False)
    for row, scenario in enumerate(loads or [None]):
        if scenario is None:
            _no_data(axes[row][0])
            _no_data(axes[row][1])
            continue
        ran = data.requests.filter(pl.col("scenario") == scenario)
        if routing.scenario_class(data.plan, scenario).loop == "closed":
            load = f"closed loop, concurrency {ran['concurrency'].max() or 0}"
        else:
            rates = ran["rate"].drop_nulls().unique().sort().to_list()
            load = "open loop" + (f", {rates[0]:g} req/s offered" if len(rates) == 1 else "")
        for ax, column, label in (
            (axes[row][0], "requests_per_min", "requests/min"),
            (axes[row][1], "output_tokens_per_s", "output tokens/s"),
        ):
            _grouped_bars(ax, data, scenario, column)
            ax.set_title(f"{label}, scenario {scenario} ({load})", fontsize=10)
            ax.set_ylabel(label + (" (error bar: 95% interval over repeats)" if column == "requests_per_min" else ""))
            _legend(ax)
    _note_skipped(fig, data)
    _save(fig, path)


def _note_skipped(fig, data: PlotData) -> None:
    if data.skipped:
        lines = [
            f"not measured: {data.plan.engines.get(e, e)} on {data.plan.models.get(m, m)}: {why.removeprefix('n/a: ')}"
            for (e, m), why in sorted(data.skipped.items())
        ]
        fig.text(0.01, -0.02, "\n".join(lines), fontsize=7, va="top", color="grey", wrap=True)


def write_plots(raw_dir: Path, plan: MergePlan, out_dir: Path, data: PlotData | None = None) -> list[Path]:
    data = data or PlotData.load(raw_dir, plan)
    paths = [out_dir / name for name in PLOT_FILES]
    plot_tokens_per_s(data, paths[0])
    _plot_cdf(data, paths[1], "ttft_s", 1000.0, "TTFT (ms)", "Time to first token")
    _plot_cdf(data, paths[2], "latency_s", 1.0, "latency (s)", "Request latency")
    plot_throughput(data, paths[3])
    plot_server_timeline(raw_dir, plan.engines, plan.models, plan.scenarios, paths[4])
    return paths

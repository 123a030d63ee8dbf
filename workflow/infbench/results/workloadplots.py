"""Plots of the workloads (results/plots/), beside plots.py's:

latency_throughput.png  per engine, latency against throughput at every load level measured: a line
                        through each sweep's or capacity search's rates, a point for each other loaded
                        scenario (closed loop, open loop, conversation, trace...): TTFT p90 against
                        completed requests/s, TPOT p90 against output tokens/s.
conversation_turns.png  per conversation scenario, median TTFT per turn for each engine.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from infbench.results import routing
from infbench.results.plots import PlotData, _no_data, _note_skipped, _save, plt

WORKLOAD_PLOT_FILES = ("latency_throughput.png", "conversation_turns.png")
STYLES = ["-", "--", ":", "-."]


def load_levels(data: PlotData, engine: str, model: str) -> dict[str, pl.DataFrame]:
    """Per loaded scenario (not the single-request one), the load levels an engine ran on a model: a
    sweep's or capacity search's steps (a curve of one workload at rising rates), else its one run."""
    stepped = set(routing.scenarios_where(data.plan, "has_steps"))
    levels = {}
    for scenario in data.plan.scenarios:
        if routing.scenario_class(data.plan, scenario).in_speed_table:
            continue
        rows = data.summaries.filter(
            (pl.col("engine") == engine)
            & (pl.col("model") == model)
            & (pl.col("scenario") == scenario)
            & (pl.col("step_rate").is_not_null() if scenario in stepped else pl.col("step_rate").is_null())
            & pl.col("requests_per_min").is_not_null()
        )
        if rows.height:
            levels[scenario] = rows.with_columns(requests_per_s=pl.col("requests_per_min") / 60).sort("requests_per_s")
    return levels


def plot_latency_throughput(data: PlotData, path: Path) -> None:
    """A line through each stepped scenario's rates; one marked point per other loaded scenario (their
    prompts and outputs differ, so they are levels of different workloads, not one curve)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    drawn = 0
    markers = "osD^v<>PX*"
    for engine in data.plan.engines:
        for m_index, model in enumerate(data.plan.models):
            for s_index, (scenario, rows) in enumerate(load_levels(data, engine, model).items()):
                label = f"{data.plan.engines[engine]} / {data.plan.models[model]}: {scenario}"
                style = {
                    "color": data.colour(engine),
                    "linestyle": STYLES[m_index % len(STYLES)] if rows.height > 1 else "none",
                    "marker": markers[s_index % len(markers)],
                }
                ttft = rows.filter(pl.col("ttft_p90_s").is_not_null())
                left.plot(ttft["requests_per_s"], ttft["ttft_p90_s"] * 1e3, label=label, **style)
                tpot = rows.filter(pl.col("tpot_p90_s").is_not_null()).sort("output_tokens_per_s")
                right.plot(tpot["output_tokens_per_s"], tpot["tpot_p90_s"] * 1e3, label=label, **style)
                drawn += 1
    if not drawn:
        _no_data(left, "no loaded scenario measured")
        _no_data(right, "no loaded scenario measured")
    else:
        for ax, x, y in (
            (left, "completed requests/s", "TTFT p90 (ms, log)"),
            (right, "output tokens/s", "TPOT p90 (ms, log)"),
        ):
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
        left.set_title("Time to first token against requests/s")
        right.set_title("Time per output token against output tokens/s")
        right.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    _note_skipped(fig, data)
    _save(fig, path)


def plot_conversation_turns(data: PlotData, path: Path) -> None:
    scenarios = [
        n
        for n in data.plan.scenarios
        if getattr(routing.scenario_class(data.plan, n), "section", None) == "conversation"
    ]
    fig, axes = plt.subplots(1, max(len(scenarios), 1), figsize=(6 * max(len(scenarios), 1), 4.2), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios or [None], strict=True):
        if scenario is None:
            _no_data(ax, "no conversation scenario in this run")
            continue
        turns = (
            data.requests.filter((pl.col("scenario") == scenario) & pl.col("ok") & pl.col("turn").is_not_null())
            .group_by("engine", "model", "turn")
            .agg(ttft=pl.col("ttft_s").quantile(0.5, "linear"), n=pl.len())
            .sort("turn")
        )
        drawn = 0
        for engine in data.plan.engines:
            for m_index, model in enumerate(data.plan.models):
                part = turns.filter((pl.col("engine") == engine) & (pl.col("model") == model))
                if part.is_empty():
                    continue
                ax.plot(
                    part["turn"],
                    part["ttft"] * 1e3,
                    marker="o",
                    color=data.colour(engine),
                    linestyle=STYLES[m_index % len(STYLES)],
                    label=f"{data.plan.engines[engine]} / {data.plan.models[model]}",
                )
                drawn += 1
        if not drawn:
            _no_data(ax, "no successful turn")
            continue
        ax.set_xlabel("turn")
        ax.set_ylabel("TTFT p50 (ms)")
        ax.set_xticks(sorted(set(turns["turn"].to_list())))
        ax.set_title(f"TTFT per turn, scenario {scenario}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _note_skipped(fig, data)
    _save(fig, path)


def write_workload_plots(data: PlotData, out_dir: Path) -> list[Path]:
    paths = [out_dir / name for name in WORKLOAD_PLOT_FILES]
    plot_latency_throughput(data, paths[0])
    plot_conversation_turns(data, paths[1])
    return paths

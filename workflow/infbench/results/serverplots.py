"""server_timeline.png: per (engine, model) and scenario, the engine's running and waiting requests
and KV cache usage (sampled about once a second from its metrics endpoint) beside the client's
requests in flight (from the records), on one time axis from the scenario's first send.

Both clocks are CLOCK_MONOTONIC on the bench job's machine: the records' send_mono and the
sampler's `t`, so the lines line up without any offset.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from infbench import layout  # noqa: E402
from infbench.fileio import read_jsonl, write_bytes_atomic  # noqa: E402
from infbench.measure.scrape import read_samples  # noqa: E402

TIMELINE_FILE = "server_timeline.png"
DPI = 110


def in_flight(records: list[dict]) -> tuple[list[float], list[int]]:
    """A step function: (times, requests in flight from that time on), from planned send to stream end."""
    events = []
    for r in records:
        start, latency = r.get("send_mono"), r.get("latency_s")
        if start is None:
            continue
        end = start + (latency if latency is not None else r.get("response_end_s") or 0.0)
        events += [(start, 1), (end, -1)]
    times, counts, current = [], [], 0
    for t, step in sorted(events, key=lambda e: (e[0], e[1])):
        current += step
        times.append(t)
        counts.append(current)
    return times, counts


def timeline_runs(raw_dir: Path, engines, models, scenarios) -> list[tuple[str, str, str, list[dict], list[dict]]]:
    """(engine, model, scenario, records, samples) for every scenario that has gauge samples."""
    runs = []
    for engine in engines:
        for model in models:
            for scenario in scenarios:
                samples = read_samples(raw_dir / engine / model / "metrics" / f"{scenario}.samples.jsonl")
                if not any("values" in row for row in samples):
                    continue
                records_path = layout.records_in(raw_dir / engine / model, scenario)
                records = list(read_jsonl(records_path)) if records_path.exists() else []
                runs.append((engine, model, scenario, records, samples))
    return runs


def plot_server_timeline(raw_dir: Path, engines, models, scenarios, out: Path) -> None:
    runs = timeline_runs(raw_dir, engines, models, scenarios)
    if not runs:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no server gauge samples in this run (no engine with a metrics endpoint)", ha="center")
        _save(fig, out)
        return
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.8 * len(runs)), squeeze=False)
    for ax, (engine, model, scenario, records, samples) in zip(axes[:, 0], runs, strict=True):
        times, counts = in_flight(records)
        t0 = min([*times, *(row["t"] for row in samples)])
        if times:
            ax.step([t - t0 for t in times], counts, where="post", label="client: in flight", color="black")
        ok = [row for row in samples if "values" in row]
        for role, style in (("running", "-"), ("waiting", "--")):
            points = [(row["t"] - t0, row["values"].get(role)) for row in ok if row["values"].get(role) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker=".", label=f"engine: {role}")
        ax.set_ylabel("requests")
        ax.set_title(f"{engine} / {model} / {scenario}", fontsize=10)
        kv = [(row["t"] - t0, row["values"].get("kv_usage")) for row in ok if row["values"].get("kv_usage") is not None]
        if kv:
            right = ax.twinx()
            right.plot(*zip(*kv, strict=True), ":", color="tab:red", label="engine: KV usage")
            right.set_ylabel("KV usage (fraction)")
            right.set_ylim(0, max(1e-3, max(v for _, v in kv) * 1.2))
            right.legend(loc="upper right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("seconds from the scenario's first sample or send")
    fig.tight_layout()
    _save(fig, out)


def _save(fig, out: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(out, buffer.getvalue())

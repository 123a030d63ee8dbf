"""Key figures of a gpu_check.sh output folder, without polars (it runs on the GPU box too).

    python bench_scripts/gpu_check_summary.py gpu_check/out

Prints, per (engine, model): the server's status, version and start-up time, each scenario's
requests, errors, mean tokens/s, requests/min, TTFT and TPOT p50 and mean completion tokens, its
energy (joules per output token from NVML's counter over the scenario's window, or why not) and the
server's counts against the client's; then
the memory estimate beside what was measured (NVML per GPU on CUDA, process-tree RSS on the CPU)
with the error in %. Writes the same text to OUT/summary.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from infbench.measure.reconcile import ClientCounts, reconcile  # noqa: E402
from infbench.measure.recordmath import percentile, tokens_per_second  # noqa: E402
from infbench.measure.records import RequestRecord, read_records  # noqa: E402
from infbench.measure.servermetrics import ServerMetrics  # noqa: E402
from infbench.memory.table import compare, read_inputs  # noqa: E402

GIB = 2**30


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def key_figures(records: list[RequestRecord]) -> dict[str, float | int | None]:
    """The tables' headline figures with docs/metrics.md's definitions (metrics.py computes them with polars
    for the tables; this box may not have it): tokens/s of a request = completion tokens / latency,
    requests/min over first send to last end, TPOT = (latency - TTFT) / (completion tokens - 1)."""
    ok = [r for r in records if r.ok]
    wall = (max(r.send_time + r.latency_s for r in ok) - min(r.send_time for r in ok)) if ok else 0.0
    tpots = [
        (r.latency_s - r.ttft_s) / (r.completion_tokens - 1)
        for r in ok
        if r.ttft_s is not None and (r.completion_tokens or 0) >= 2
    ]
    return {
        "n": len(records),
        "errors": len(records) - len(ok),
        "concurrency": max((r.concurrency for r in records), default=0),
        "tokens_per_s": _mean([t for t in map(tokens_per_second, ok) if t is not None]),
        "requests_per_min": len(ok) / wall * 60 if wall > 0 else None,
        "output_tokens_per_s": sum(r.completion_tokens or 0 for r in ok) / wall if wall > 0 else None,
        "ttft_p50_s": percentile([r.ttft_s for r in ok if r.ttft_s is not None], 50),
        "tpot_p50_s": percentile(tpots, 50),
        "completion_tokens": _mean([r.completion_tokens for r in ok if r.completion_tokens is not None]),
        "prompt_tokens": _mean([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
    }


def server_view_lines(path: Path, records: list[RequestRecord]) -> list[str]:
    """The scenario's energy (J per output token, average W, method) and the server's counts beside
    the client's, from the metrics/{scenario}.json the bench job wrote."""
    if not path.exists():
        return [f"    energy: n/a (no {path.name}: server metrics not read)"]
    server = ServerMetrics.read(path)
    energy = server.energy or {}
    if energy.get("joules") is not None:
        lines = [
            f"    energy: {energy['joules']:.1f} J, {_num(energy.get('joules_per_output_token'), 1, 4)} J per output "
            f"token, {_num(energy.get('average_watts'))} W average over {_num(energy.get('window_s'))} s "
            f"[{energy['method']}]"
        ]
    else:
        lines = [f"    energy: n/a ({energy.get('reason') or 'not measured'})"]
    rec = reconcile(ClientCounts.of(records), server)
    verdict = "MISMATCH: " + "; ".join(rec.lines()) if rec.mismatch else "match" if rec.judged else rec.note
    ttft = server.quantiles("ttft")[0.5]
    lines.append(
        f"    server: {server.status}, counts {verdict}, server TTFT p50 {_num(ttft, 1e3)} ms (bucket-interpolated), "
        f"peak running {_num(server.gauges.running_max, digits=0)}, waiting {_num(server.gauges.waiting_max, digits=0)}"
    )
    return lines


def summary_lines(out: Path) -> list[str]:
    plan = json.loads((out / "merge_plan.json").read_text())
    lines = []
    for engine in plan["engines"]:
        for model, label in plan["models"].items():
            folder = out / "raw" / engine / model
            server_path = folder / "server.json"
            if not server_path.exists():
                lines.append(f"{engine} / {label}: no result (see {out}/logs/bench/{engine}/{model}.log)")
                continue
            server = json.loads(server_path.read_text())
            gpus = ",".join(server.get("gpu_ids") or []) or "none"
            lines.append(
                f"{engine} / {label}: {server['status']}"
                f"{': ' + server['reason'] if server.get('reason') else ''}, "
                f"version {server.get('version')}, device {server['device']} (GPUs {gpus}), "
                f"start-up {_num(server.get('startup_s'))} s, output_length "
                f"{server.get('sampling', {}).get('output_length')}"
            )
            for scenario in plan["scenarios"]:
                path = folder / f"{scenario}.jsonl"
                if not path.exists():
                    continue
                records = read_records(path)
                f = key_figures(records)
                lines.append(
                    f"  {scenario:<11} n={f['n']} errors={f['errors']} c={f['concurrency']}"
                    f"  tokens/s {_num(f['tokens_per_s'])}"
                    f"  req/min {_num(f['requests_per_min'])}  out tok/s {_num(f['output_tokens_per_s'])}"
                    f"  TTFT p50 {_num(f['ttft_p50_s'], 1e3)} ms  TPOT p50 {_num(f['tpot_p50_s'], 1e3, 2)} ms"
                    f"  completion tokens {_num(f['completion_tokens'])}  prompt tokens {_num(f['prompt_tokens'])}"
                )
                lines += server_view_lines(folder / "metrics" / f"{scenario}.json", records)
    lines += ["", "memory: estimate vs measured (GiB; error = (estimate - measured) / measured)"]
    for engine in plan["engines"]:
        for model, label in plan["models"].items():
            measured_path = out / "raw" / engine / model / "memory.json"
            estimate_path = out / "memory" / f"{model}.json"
            if not measured_path.exists():
                continue
            try:
                # As the memory table reads them: typed records, engine and model from the path if absent.
                estimates, (measured,) = read_inputs([estimate_path] if estimate_path.exists() else [], [measured_path])
                c = compare(estimates[0] if estimates else None, measured)
            except Exception as err:  # a measurement without GPU figures: say so, keep the others
                lines.append(f"  {engine} / {label}: {err}")
                continue
            source = (
                "NVML " + ",".join(f"GPU{g.index} {g.name}" for g in measured.gpus)
                if measured.gpus
                else "process-tree RSS"
            )
            lines.append(
                f"  {engine} / {label} [{source}]: idle: estimate {_gib(c.estimate_idle)}, measured "
                f"{_gib(c.measured_idle)}, error {_pct(c.error_pct)}; peak: estimate "
                f"{_gib(c.estimate_loaded)}, measured {_gib(c.measured_peak)}, error {_pct(c.peak_error_pct)}"
                f"  ({c.compared})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the output folder of gpu_check.sh")
    args = parser.parse_args(argv)
    lines = summary_lines(args.out)
    text = "\n".join(lines) + "\n"
    (args.out / "summary.txt").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

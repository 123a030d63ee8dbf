"""How long each scenario of a run took, per engine, from the bench jobs' own logs, with the busy
share the bench job recorded beside it (so a figure from a loaded machine says so).

    python bench_scripts/scenario_times.py                  # this folder's logs/bench and results/raw
    python bench_scripts/scenario_times.py --root /tmp/run  # another run folder

The bench job logs `NAME: N requests, M failed, T s` after each scenario (jobs/bench.py) and records
what other processes used meanwhile in server.json (machine_load). Prints a markdown table: one row per
scenario, one column per engine, the total per engine, and the machine's 1-minute load now.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

LINE = re.compile(r"INFO (?P<scenario>[\w.-]+): (?P<n>\d+) requests, (?P<failed>\d+) failed, (?P<s>[\d.]+) s$")


def scenario_times(root: Path) -> dict[str, dict[str, tuple[float, str]]]:
    """{engine/model: {scenario: (seconds, busy share or "")}} from logs/bench/ENGINE/MODEL.log."""
    out: dict[str, dict[str, tuple[float, str]]] = {}
    for log in sorted((root / "logs" / "bench").glob("*/*.log")):
        if log.name.endswith(".server.log"):
            continue
        engine, model = log.parent.name, log.stem
        server = root / "results" / "raw" / engine / model / "server.json"
        loads = json.loads(server.read_text()).get("machine_load", {}) if server.exists() else {}
        times = {}
        for line in log.read_text(errors="replace").splitlines():
            match = LINE.search(line)
            if match:
                share = loads.get(match["scenario"], {}).get("other_cpu_share")
                busy = f"{share:.0%} busy" if isinstance(share, (int, float)) else ""
                times[match["scenario"]] = (float(match["s"]), busy)  # the last run of each scenario
        if times:
            out[f"{engine}/{model}"] = times
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the run folder (holds logs/ and results/)")
    args = parser.parse_args()
    times = scenario_times(args.root)
    if not times:
        raise SystemExit(f"no bench logs with scenario times under {args.root / 'logs' / 'bench'}")
    runs = list(times)
    scenarios = list(dict.fromkeys(s for run in runs for s in times[run]))
    print("scenario | " + " | ".join(runs))
    print(" | ".join("---" for _ in range(len(runs) + 1)))
    for scenario in scenarios:
        cells = []
        for run in runs:
            seconds, busy = times[run].get(scenario, (None, ""))
            cells.append("n/a" if seconds is None else f"{seconds:.1f} s" + (f" ({busy})" if busy else ""))
        print(f"{scenario} | " + " | ".join(cells))
    print("total | " + " | ".join(f"{sum(s for s, _ in times[run].values()):.1f} s" for run in runs))
    print(f"\nmachine load now (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

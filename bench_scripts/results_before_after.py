"""Two finished runs' results side by side, per engine: what the closing note of issue 19 quotes.

    python bench_scripts/results_before_after.py BEFORE_RESULTS AFTER_RESULTS
    python bench_scripts/results_before_after.py /work/baseline_results_597ec75 results

For each (model, scenario) of the main tables and each engine, from each run's
tables/summary.csv and its main tables (inference_speed.md, throughput.md): single-request tokens/s
and TTFT p50, requests/min of a closed loop, the share of prompt tokens the engine said it served
from its cache (`cached prompt %`: `not recorded` where the run predates the column, `n/a` where the
engine cannot say), the spread of mean completion lengths across the row's engines (max / min - 1:
in natural mode each engine stops where it likes), and the marks of the main-table cell
(* client lag, ! busy, ≠ server count, † no interval, ‡ cache not cold). Nothing is measured here:
run the two pipelines (or bench_scripts/cache_before_after.py) first, on one machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

MARKS = "*!≠†‡"
TABLES = {"inference_speed.md": "single", "throughput.md": "throughput"}
COLUMNS = ["tok/s", "TTFT p50 ms", "req/min", "cached %", "length spread", "marks"]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def summary_rows(results: Path) -> dict[tuple[str, str, str], dict]:
    """summary.csv by (engine, model, scenario)."""
    path = results / "tables" / "summary.csv"
    with path.open() as f:
        return {(r["engine"], r["model"], r["scenario"]): r for r in csv.DictReader(f)}


def table_marks(results: Path) -> dict[tuple[str, str, str], str]:
    """The marks of each main-table cell, by (engine label, model, scenario)."""
    marks: dict[tuple[str, str, str], str] = {}
    for name in TABLES:
        path = results / "tables" / name
        if not path.exists():
            continue
        scenario, header = None, None
        for line in path.read_text().splitlines():
            title = re.match(r"## .*scenario (\S+?),", line)
            if title:
                scenario, header = title.group(1), None
            elif line.startswith("Model |"):
                header = [c.strip() for c in line.split("|")[1:]]
            elif header and scenario and " | " in line and not line.startswith("---"):
                model, *cells = (c.strip() for c in line.split("|"))
                for label, cell in zip(header, cells, strict=False):
                    cell = cell.replace("**", "")  # bold: significantly best, not a mark
                    number = cell.split(" ±")[0].split(" (")[0]
                    marks[(label, model, scenario)] = "".join(ch for ch in cell if ch in MARKS) or (
                        "" if re.match(r"[\d.]+", number) else cell[:60]  # a cell that is no number says why
                    )
    return marks


def labels(results: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Engine and model keys -> the labels the tables use (the merge plan written beside them)."""
    path = results / "tables" / "merge_plan.json"
    plan = json.loads(path.read_text()) if path.exists() else {}
    models = {name: label or name for name, label in plan.get("models", {}).items()}
    return plan.get("engines", {}), models


def length_spreads(rows: dict[tuple[str, str, str], dict]) -> dict[tuple[str, str], float | None]:
    """Per (model, scenario): max / min - 1 of the engines' mean completion lengths."""
    lengths: dict[tuple[str, str], list[float]] = {}
    for (_, model, scenario), row in rows.items():
        value = _number(row.get("completion_tokens_mean"))
        if value:
            lengths.setdefault((model, scenario), []).append(value)
    return {key: (max(v) / min(v) - 1 if len(v) > 1 else None) for key, v in lengths.items()}


def figures(results: Path) -> dict[tuple[str, str, str], list[str]]:
    """Per (engine, model, scenario) of the main tables, the COLUMNS as text."""
    rows, marks, (engines, models) = summary_rows(results), table_marks(results), labels(results)
    spreads = length_spreads(rows)
    out = {}
    for (engine, model, scenario), row in rows.items():
        if scenario not in TABLES.values():
            continue
        tok_s, ttft = _number(row.get("tokens_per_s_mean")), _number(row.get("ttft_p50_s"))
        rpm = _number(row.get("requests_per_min"))
        if "cached_prompt_share" not in row:
            cached = "not recorded"
        else:
            share = _number(row["cached_prompt_share"])
            cached = "n/a" if share is None else f"{share * 100:.1f}%"
        spread = spreads.get((model, scenario))
        out[(engine, model, scenario)] = [
            f"{tok_s:.2f}" if tok_s is not None else "n/a",
            f"{ttft * 1000:.0f}" if ttft is not None else "n/a",
            f"{rpm:.1f}" if rpm is not None else "n/a",
            cached,
            f"{spread:.0%}" if spread is not None else "n/a",
            marks.get((engines.get(engine, engine), models.get(model, model), scenario), "") or "-",
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the earlier run's results folder")
    parser.add_argument("after", type=Path, help="the later run's results folder")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not (folder / "tables" / "summary.csv").exists():
            print(f"no tables/summary.csv under {folder}: not a finished run's results folder", file=sys.stderr)
            return 2
    before, after = figures(args.before), figures(args.after)
    print(f"before: {args.before}\nafter:  {args.after}\n")
    print(" | ".join(["engine", "model", "scenario", "run", *COLUMNS]))
    print(" | ".join("---" for _ in range(4 + len(COLUMNS))))
    for key in sorted(set(before) | set(after), key=lambda k: (k[1], k[2], k[0])):
        for run, got in (("before", before), ("after", after)):
            cells = got.get(key, ["not run"] + [""] * (len(COLUMNS) - 1))
            print(" | ".join([*key, run, *cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

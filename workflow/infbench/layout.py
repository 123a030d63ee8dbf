"""The run folder's layout: where each step's files go, named once (stdlib only: the TGI native
client imports it in the TGI venv)."""

from __future__ import annotations

from pathlib import Path

# The record file of TGI's native-route measurement, beside the scenarios' (results/raw/E/M/NAME.jsonl).
NATIVE_RUN = "native-single"

# Repeats of a (engine, model): repeat 1 writes results/raw/E/M/ itself (as a run without repeats);
# repeat K >= 2 writes results/raw/E/M/repeat-K/, one bench job each (scenarios.NAME.repeats).
REPEAT_PREFIX = "repeat-"


def repeat_dir(run_dir: Path, repeat: int) -> Path:
    """Where repeat `repeat` of the run in run_dir (results/raw/E/M) writes."""
    return run_dir if repeat == 1 else run_dir / f"{REPEAT_PREFIX}{repeat}"


def repeat_of(folder: Path) -> int | None:
    """K for a folder results/raw/E/M/repeat-K (K >= 2), else None."""
    number = folder.name.removeprefix(REPEAT_PREFIX)
    if folder.name.startswith(REPEAT_PREFIX) and number.isdigit() and int(number) >= 2:
        return int(number)
    return None


def repeat_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(repeat, folder) of every repeat present, in order: repeat 1 is run_dir itself."""
    found = [(1, run_dir)]
    if run_dir.is_dir():
        found += [(k, child) for child in run_dir.iterdir() if child.is_dir() and (k := repeat_of(child))]
    return sorted(found)

"""The run folder's layout: where each step's files go, named once (stdlib only: the TGI native
client imports it in the TGI venv).

Paths are POSIX strings relative to the workflow directory, as Snakemake rules need them; a
wildcard passed as an argument (`raw_dir("{engine}", "{model}")`) gives the rule's pattern. Code
that works under another root (a bundle's extracted folder) joins them onto it, or uses RunFolder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RESULTS = "results"
RAW = f"{RESULTS}/raw"
MEMORY = f"{RESULTS}/memory"
HARDWARE = f"{RESULTS}/hardware"
FAILURES = f"{RESULTS}/failures"
SPECS = f"{RESULTS}/specs"
ENVS = f"{RESULTS}/envs"
MODELS = f"{RESULTS}/models"
PROMPTS = f"{RESULTS}/prompts"
REQUESTS = f"{RESULTS}/requests"  # the prepare step's request files (rule requests)
TRACES = f"{RESULTS}/traces"  # traces the pipeline writes itself (rule seeded_trace)
TABLES = f"{RESULTS}/tables"
PLOTS = f"{RESULTS}/plots"
REPORT = f"{RESULTS}/report"
BUNDLES = f"{RESULTS}/bundles"
COMPARE = f"{RESULTS}/compare"  # `infbench compare`'s report
PROVENANCE = f"{RESULTS}/provenance.json"
LOGS = "logs"

BANDWIDTH = f"{HARDWARE}/bandwidth.json"  # the memory_bandwidth rule's measurement
MERGE_PLAN = f"{TABLES}/merge_plan.json"  # the plan the tables were merged with
MEMORY_TABLE = f"{TABLES}/memory.md"

# The record file of TGI's native-route measurement, beside the scenarios' (results/raw/E/M/NAME.jsonl).
NATIVE_RUN = "native-single"
SERVER_INFO = "server.json"  # in each raw run folder
MEMORY_REPORT = "memory.json"  # in each raw run folder


def raw_dir(engine: str, model: str) -> str:
    """One bench job's folder: its records, server.json and memory.json."""
    return f"{RAW}/{engine}/{model}"


def records(engine: str, model: str, run: str) -> str:
    """The records of one scenario (or an engine's extra run, such as NATIVE_RUN)."""
    return f"{raw_dir(engine, model)}/{run}.jsonl"


def records_in(folder: Path, run: str) -> Path:
    """A run's records in a bench job's folder (results/raw/{engine}/{model}, or a folder under it)."""
    return folder / f"{run}.jsonl"


def server_info(engine: str, model: str) -> str:
    return f"{raw_dir(engine, model)}/{SERVER_INFO}"


def memory_report(engine: str, model: str) -> str:
    return f"{raw_dir(engine, model)}/{MEMORY_REPORT}"


def failure_marker(engine: str, model: str) -> str:
    """Written when a bench job fails, so a rerun measures it again."""
    return f"{FAILURES}/{engine}/{model}.json"


def failure_marker_of(run_dir: Path) -> Path:
    """failure_marker for a bench job's folder (.../raw/{engine}/{model}), in the same results folder."""
    results = run_dir.parent.parent.parent
    return results / Path(FAILURES).name / run_dir.parent.name / f"{run_dir.name}.json"


def requests_dir(model: str) -> str:
    """The prepared scenarios' request files for one model (the bench job's --requests-dir)."""
    return f"{REQUESTS}/{model}"


def request_file(model: str, scenario: str) -> str:
    """One prepared scenario's requests for one model (rule requests writes it)."""
    return f"{requests_dir(model)}/{scenario}.json"


def seeded_trace(seed: str | int) -> str:
    """The small seeded trace (Mooncake format) a trace scenario with source seeded replays."""
    return f"{TRACES}/seeded-{seed}.jsonl"


def memory_estimate(model: str) -> str:
    return f"{MEMORY}/{model}.json"


def memory_table_inputs(engines: Iterable[str], models: Iterable[str]) -> tuple[list[str], list[str]]:
    """The memory table's inputs in the order the memory_table rule passes them and verify reads
    them: (one estimate per model, one measurement per engine and model, engine-major)."""
    engines, models = list(engines), list(models)
    return (
        [memory_estimate(m) for m in models],
        [memory_report(e, m) for e in engines for m in models],
    )


@dataclass(frozen=True)
class RunFolder:
    """One (engine, model) bench job's folder under a root (the workflow directory or a bundle's)."""

    root: Path
    engine: str
    model: str

    @property
    def dir(self) -> Path:
        return self.root / raw_dir(self.engine, self.model)

    @property
    def server_info(self) -> Path:
        return self.root / server_info(self.engine, self.model)

    @property
    def memory_report(self) -> Path:
        return self.root / memory_report(self.engine, self.model)

    @property
    def failure_marker(self) -> Path:
        return self.root / failure_marker(self.engine, self.model)

    def records(self, run: str) -> Path:
        return self.root / records(self.engine, self.model, run)

    @classmethod
    def of(cls, raw: Path) -> RunFolder:
        """The run folder of results/raw/{engine}/{model} (any root above it)."""
        raw = Path(raw)
        return cls(raw.parent.parent.parent.parent, raw.parent.name, raw.name)


# Repeats (scenarios.NAME.repeats): pass 1 of a (engine, model) writes raw_dir(E, M) itself, as a run
# without repeats; pass K >= 2 writes raw_dir(E, M)/repeat-K, one bench job each.
REPEAT_PREFIX = "repeat-"


def repeat_raw_dir(engine: str, model: str, repeat: int | str) -> str:
    """Pass `repeat`'s folder: raw_dir itself for pass 1 (a wildcard "{repeat}" gives the pattern of K >= 2)."""
    return raw_dir(engine, model) if repeat == 1 else f"{raw_dir(engine, model)}/{REPEAT_PREFIX}{repeat}"


def repeat_failure_marker(engine: str, model: str, repeat: int) -> str:
    """As failure_marker, for pass K >= 2: results/failures/E/M/repeat-K.json."""
    return f"{FAILURES}/{engine}/{model}/{REPEAT_PREFIX}{repeat}.json"


def repeat_dir(run_dir: Path, repeat: int) -> Path:
    """Where pass `repeat` of the run in run_dir (results/raw/E/M under any root) writes."""
    return run_dir if repeat == 1 else run_dir / f"{REPEAT_PREFIX}{repeat}"


def repeat_of(folder: Path) -> int | None:
    """K for a folder results/raw/E/M/repeat-K (K >= 2), else None."""
    number = folder.name.removeprefix(REPEAT_PREFIX)
    if folder.name.startswith(REPEAT_PREFIX) and number.isdigit() and int(number) >= 2:
        return int(number)
    return None


def repeat_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(repeat, folder) of every pass present, in order: pass 1 is run_dir itself."""
    found = [(1, run_dir)]
    if run_dir.is_dir():
        found += [(k, child) for child in run_dir.iterdir() if child.is_dir() and (k := repeat_of(child))]
    return sorted(found)

"""`infbench compare A B`: is B different from A, cell by cell, beyond noise?

A and B are result bundles (checked first by the same checks as `infbench verify`) or results
folders (a workflow directory holding results/, or results/ itself). For every (engine, model,
scenario) both hold and every main metric, the rows give A, B, the change of B against A in %, its
95% interval and a verdict (better / worse / no significant difference), with the methods of
infbench.results.stats: per prompt in single-request scenarios (paired by prompt id when both runs
used the same prompt sample), per repeat in load scenarios; Benjamini-Hochberg over all rows.

Before comparing, `provenance_differences` lists what differs between the two runs (engine versions
and locks, model files, prompt sample, sampling, hardware, commit); a comparison whose prompts or
sampling differ is refused unless asked for (then nothing is paired). Sweeps are not compared: a
sweep's whole mixes its rates.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from infbench import layout
from infbench.handoff import MergePlan
from infbench.layout import NATIVE_RUN, records_in, repeat_dirs
from infbench.measure.metrics import RUN, SUMMARY_FIELDS, request_metrics, summarize_runs
from infbench.measure.recordframe import read_runs
from infbench.results import routing, runstatus
from infbench.results import significance as sig
from infbench.results.bundle_verify import ExtractLimits, opened_bundle, plan_name_problems


class CompareError(RuntimeError):
    """A run that cannot be compared (not a bundle or results folder, refused, failed verify): names the file."""


@dataclass(frozen=True)
class Metric:
    label: str
    column: str  # a request column (per-prompt unit) or a summary column (per-repeat unit)
    higher_is_better: bool
    q: float | None = None  # per prompt: the quantile of the request column; None: its mean


# Single-request scenarios: figures over requests, compared per prompt.
PER_PROMPT = (
    Metric("tokens/s", "tokens_per_s", True),
    Metric("TTFT p50", "ttft_s", False, 0.5),
    Metric("TPOT p50", "tpot_s", False, 0.5),
    Metric("latency p50", "latency_s", False, 0.5),
    Metric("latency p99", "latency_s", False, 0.99),
)
# Load scenarios: one figure per repeat (the run's summary), compared over repeats.
PER_REPEAT = (
    Metric("requests/min", "requests_per_min", True),
    Metric("tokens/s", "output_tokens_per_s", True),
    Metric("TTFT p50", "ttft_p50_s", False),
    Metric("TPOT p50", "tpot_p50_s", False),
    Metric("latency p50", "latency_p50_s", False),
    Metric("latency p99", "latency_p99_s", False),
)
NATIVE = NATIVE_RUN  # TGI's extra measurement over its native route: a single-request scenario
CELL = ["engine", "model", "scenario"]


@dataclass
class RunData:
    """What a comparison needs of one run, read once from its raw records."""

    name: str  # as the user gave it
    plan: MergePlan
    provenance: dict
    requests: pl.DataFrame  # per-prompt scenarios: CELL, repeat, prompt_id, and PER_PROMPT columns (ok requests)
    repeats: pl.DataFrame  # per-repeat scenarios: CELL, repeat, and PER_REPEAT columns (one row per repeat)
    units: dict[str, str]  # scenario -> "prompts" | "repeats"
    marks: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # cell -> failed requests, lag, busy
    absent: dict[tuple[str, str], str] = field(default_factory=dict)  # (engine, model) -> skipped or failed, why


@dataclass(frozen=True)
class Row:
    engine: str
    model: str
    scenario: str
    metric: str
    unit: str
    change: sig.Change
    marks_a: tuple[str, ...] = ()
    marks_b: tuple[str, ...] = ()


def unit_of(plan: MergePlan, scenario: str) -> str | None:
    """prompts for a single-request scenario, repeats for a load scenario, None for a sweep."""
    if scenario == NATIVE:
        return "prompts"
    cls = routing.scenario_class(plan, scenario)
    if cls.has_steps:
        return None
    return "prompts" if cls.in_speed_table else "repeats"


@dataclass(frozen=True)
class RunFile:
    engine: str
    model: str
    scenario: str
    repeat: int
    path: Path


def run_files(raw_dir: Path, plan: MergePlan) -> list[RunFile]:
    """Each raw file of the plan's runs, one per (engine, model, scenario, repeat)."""
    files = []
    for engine in plan.engines:
        for model in plan.models:
            scenarios = plan.runs(engine)
            for repeat, folder in repeat_dirs(raw_dir / engine / model):
                for scenario in scenarios:
                    path = records_in(folder, scenario)
                    if path.exists() and repeat <= plan.passes(scenario):
                        files.append(RunFile(engine, model, scenario, repeat, path))
    return files


def load_results(root: Path, name: str) -> RunData:
    """A run from its workflow directory (root/results/...), its records read once."""
    plan_file, provenance_file = root / layout.MERGE_PLAN, root / layout.PROVENANCE
    for needed in (plan_file, provenance_file):
        if not needed.is_file():
            raise CompareError(f"{name}: {needed.relative_to(root)} is missing (run the workflow to the end first)")
    plan = MergePlan.from_json(plan_file.read_text())
    unsafe = plan_name_problems(plan)
    if unsafe:
        raise CompareError(f"{name}: {unsafe[0]}")
    provenance = json.loads(provenance_file.read_text())
    units = {s: u for s in [*plan.scenarios, NATIVE] if (u := unit_of(plan, s))}
    files = [f for f in run_files(root / layout.RAW, plan) if f.scenario in units]
    frame = _read(files)
    keys = pl.DataFrame(
        {
            RUN: range(len(files)),
            "engine": [f.engine for f in files],
            "model": [f.model for f in files],
            "scenario": [f.scenario for f in files],
            "repeat": [f.repeat for f in files],
        },
        schema_overrides={RUN: pl.Int32, "repeat": pl.Int32},
    )
    servers = runstatus.read_servers(root / layout.RAW, plan.engines, plan.models, plan.passes)
    data = RunData(name, plan, provenance, _requests(frame, keys, files, units), _empty_repeats(), units)
    data.repeats, data.marks = _repeats_and_marks(frame, keys, files, units, servers)
    data.absent = {
        key: server.reason or server.status for key, server in servers.items() if server.status in ("skipped", "failed")
    }
    return data


CHUNK_COLUMNS = ("chunk_times_s", "chunk_tokens")  # ITL is not compared: its chunk lists are not read


def _read(files: list[RunFile]) -> pl.DataFrame | None:
    """The records of every file (RUN: the file's position), without their chunk lists."""
    if not files:
        return None
    columns = ["prompt_id", *(c for c in SUMMARY_FIELDS if c not in CHUNK_COLUMNS)]
    frame = read_runs([f.path for f in files], columns, RUN)
    return frame.with_columns(chunk_times_s=pl.lit([], pl.List(pl.Float64)), chunk_tokens=pl.lit([], pl.List(pl.Int64)))


def _requests(frame, keys: pl.DataFrame, files: list[RunFile], units: dict[str, str]) -> pl.DataFrame:
    runs = [i for i, f in enumerate(files) if units[f.scenario] == "prompts"]
    columns = sorted({m.column for m in PER_PROMPT})
    if frame is None or not runs:
        return pl.DataFrame(
            schema={**{c: pl.String for c in CELL}, "repeat": pl.Int32, "prompt_id": pl.String}
            | {c: pl.Float64 for c in columns}
        )
    return (
        request_metrics(frame.lazy().filter(pl.col(RUN).is_in(runs)))
        .filter(pl.col("ok"))
        .join(keys.lazy(), on=RUN)
        .select(*CELL, "repeat", "prompt_id", *(pl.col(c).cast(pl.Float64) for c in columns))
        .collect()
    )


def _empty_repeats() -> pl.DataFrame:
    return pl.DataFrame(
        schema={**{c: pl.String for c in CELL}, "repeat": pl.Int32} | {m.column: pl.Float64 for m in PER_REPEAT}
    )


def _repeats_and_marks(frame, keys, files, units, servers) -> tuple[pl.DataFrame, dict]:
    """Per repeat of a load scenario its summary figures; per cell its marks (from every scenario's summary)."""
    if frame is None:
        return _empty_repeats(), {}
    summaries = summarize_runs(frame.lazy(), [])
    rows, marks = [], {}
    for run, f in enumerate(files):
        summary = summaries.get((run, None)) or {}
        cell = (f.engine, f.model, f.scenario)
        cell_marks = marks.setdefault(cell, [])
        errors = (summary.get("n") or 0) - (summary.get("ok_n") or 0)
        if errors and "failed requests" not in cell_marks:
            cell_marks.append("failed requests")
        if summary.get("client_lag_flag") and "client lag" not in cell_marks:
            cell_marks.append("client lag")
        server = servers[(f.engine, f.model)]
        if runstatus.busy(server, f.scenario) and "busy" not in cell_marks:
            cell_marks.append("busy")
        if server.failed_passes and "failed pass" not in cell_marks:
            cell_marks.append("failed pass")
        if units[f.scenario] == "repeats":
            rows.append(
                {"engine": f.engine, "model": f.model, "scenario": f.scenario, "repeat": f.repeat}
                | {m.column: summary.get(m.column) for m in PER_REPEAT}
            )
    repeats = pl.DataFrame(rows, schema=_empty_repeats().schema) if rows else _empty_repeats()
    return repeats, {cell: m for cell, m in marks.items() if m}


# --- opening what the user named ----------------------------------------------------------------


@contextlib.contextmanager
def opened_run(path: Path, limits: ExtractLimits | None = None) -> Iterator[RunData]:
    """A bundle (verified, extracted to a scratch folder for the duration) or a results folder."""
    path, limits = Path(path), limits or ExtractLimits()
    if path.is_dir():
        root = path.parent if (path / "tables").is_dir() and not (path / layout.RESULTS).is_dir() else path
        if not (root / layout.RESULTS).is_dir():
            raise CompareError(f"{path}: neither a bundle (.tar.gz) nor a results folder (no results/ in it)")
        yield load_results(root, str(path))
        return
    if not path.is_file():
        raise CompareError(f"{path}: no such bundle or results folder")
    with opened_bundle(path, limits) as (result, folder):
        if not result.ok:
            raise CompareError(
                f"{path}: the bundle fails verification (`infbench verify {path}` says the same): "
                + "; ".join(result.problems[:5])
                + (f"; and {len(result.problems) - 5} more" if len(result.problems) > 5 else "")
            )
        yield load_results(folder, str(path))


@contextlib.contextmanager
def opened_pair(path_a: Path, path_b: Path, limits: ExtractLimits | None = None) -> Iterator[tuple[RunData, RunData]]:
    """Both runs, opened (bundles verified) side by side in two threads: the checks are mostly polars
    and hashing, which release the GIL. The same path twice is opened once. A's error comes first."""
    if Path(path_a).resolve() == Path(path_b).resolve():
        with opened_run(path_a, limits) as run:
            yield run, run
        return
    managers = [opened_run(path_a, limits), opened_run(path_b, limits)]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        runs, errors = [], []
        for manager, future in zip(managers, futures, strict=True):
            try:
                runs.append(future.result())
                stack.push(manager.__exit__)  # left (the scratch folder removed) with the stack
            except Exception as err:  # noqa: PERF203  (each side's error is kept; A's is raised)
                errors.append(err)
        if errors:
            raise errors[0]
        yield runs[0], runs[1]


# --- what differs between the two runs ---------------------------------------------------------


@dataclass(frozen=True)
class Differences:
    lines: list[str]  # everything that differs, one line each
    refusals: list[str]  # why the comparison is refused without --allow-different-workload
    same_prompts: bool  # the same prompt sample: rows are paired by prompt id


def _prompt_samples(provenance: dict) -> dict[str, dict]:
    return {p.get("name", ""): p for p in provenance.get("prompts", [])}


def provenance_differences(a: dict, b: dict) -> Differences:
    """What differs between two provenance files, and whether prompts and sampling match."""
    lines, refusals = [], []

    def differ(what: str, left, right) -> bool:
        if left != right:
            lines.append(f"{what}: A {_short(left)}, B {_short(right)}")
            return True
        return False

    differ("git commit", _git(a), _git(b))
    engines_a = {e["name"]: e for e in a.get("engines", [])}
    engines_b = {e["name"]: e for e in b.get("engines", [])}
    for name in sorted(engines_a.keys() & engines_b.keys()):
        ea, eb = engines_a[name], engines_b[name]
        differ(f"engine {name} version", ea.get("version"), eb.get("version"))
        if ea.get("lock_sha256") != eb.get("lock_sha256"):
            changed = sorted(set(ea.get("lock", [])) ^ set(eb.get("lock", [])))
            packages = sorted({line.split("==")[0].split(" @ ")[0] for line in changed})
            lines.append(
                f"engine {name} lock ({Path(ea.get('lock_file') or '?').name}): differs"
                + (f" in {', '.join(packages[:8])}{' ...' if len(packages) > 8 else ''}" if packages else "")
            )
        differ(f"engine {name} server commands", ea.get("server_commands"), eb.get("server_commands"))
    models_a = {m["name"]: m for m in a.get("models", [])}
    models_b = {m["name"]: m for m in b.get("models", [])}
    for name in sorted(models_a.keys() & models_b.keys()):
        differ(f"model {name} source", models_a[name].get("source"), models_b[name].get("source"))
        differ(f"model {name} dtype", models_a[name].get("dtype"), models_b[name].get("dtype"))
        if models_a[name].get("files") != models_b[name].get("files"):
            lines.append(f"model {name} files: their sha256 differ (other weights)")
    prompts_a, prompts_b = _prompt_samples(a), _prompt_samples(b)
    sample_a = sorted((p.get("sha256"), p.get("count"), p.get("source"), p.get("seed")) for p in prompts_a.values())
    sample_b = sorted((p.get("sha256"), p.get("count"), p.get("source"), p.get("seed")) for p in prompts_b.values())
    same_prompts = bool(sample_a) and sample_a == sample_b
    if not same_prompts:
        lines.append(f"prompt sample: A {_describe_prompts(prompts_a)}, B {_describe_prompts(prompts_b)}")
        refusals.append(
            "the prompt samples differ (their sha256), so the two runs did not measure the same requests: a "
            "difference could come from the prompts, not the engines, and nothing can be paired by prompt"
        )
    sampling_a = (a.get("config") or {}).get("sampling")
    sampling_b = (b.get("config") or {}).get("sampling")
    if differ("sampling", sampling_a, sampling_b):
        refusals.append(
            "the sampling settings differ (max_tokens, temperature, output length...), so the completions differ "
            "in length and kind: tokens/s and latency are not comparable"
        )
    scenarios_a = (a.get("config") or {}).get("scenarios") or {}
    scenarios_b = (b.get("config") or {}).get("scenarios") or {}
    for name in sorted(scenarios_a.keys() & scenarios_b.keys()):
        differ(f"scenario {name}", scenarios_a[name], scenarios_b[name])
    hardware_keys = ("cpu_model", "cpu_cores_logical", "cpu_cores_physical", "ram_bytes", "gpus", "gpu_driver")
    for key in hardware_keys:
        differ(f"hardware {key}", (a.get("hardware") or {}).get(key), (b.get("hardware") or {}).get(key))
    differ("device", (a.get("config") or {}).get("device"), (b.get("config") or {}).get("device"))
    return Differences(lines, refusals, same_prompts)


def _git(provenance: dict) -> str | None:
    git = provenance.get("git") or {}
    commit = git.get("commit")
    return None if commit is None else commit[:12] + (" (with uncommitted changes)" if git.get("dirty") else "")


def _describe_prompts(samples: dict[str, dict]) -> str:
    if not samples:
        return "none recorded"
    return "; ".join(
        f"{name}: {p.get('count')} from {p.get('source')} seed {p.get('seed')} sha256 {str(p.get('sha256'))[:12]}"
        for name, p in sorted(samples.items())
    )


def _short(value) -> str:
    if value is None:
        return "none recorded"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


# --- the comparison -----------------------------------------------------------------------------


def common_cells(a: RunData, b: RunData) -> list[tuple[str, str, str]]:
    """(engine, model, scenario) both runs measured (in A's order), with the same unit in both."""
    cells = []
    for engine in a.plan.engines:
        for model in a.plan.models:
            for scenario, unit in a.units.items():
                if b.units.get(scenario) != unit or engine not in b.plan.engines or model not in b.plan.models:
                    continue
                if (engine, model) in a.absent or (engine, model) in b.absent:
                    continue
                if _has(a, engine, model, scenario, unit) and _has(b, engine, model, scenario, unit):
                    cells.append((engine, model, scenario))
    return cells


def _has(run: RunData, engine: str, model: str, scenario: str, unit: str) -> bool:
    frame = run.requests if unit == "prompts" else run.repeats
    return (
        frame.filter(
            (pl.col("engine") == engine) & (pl.col("model") == model) & (pl.col("scenario") == scenario)
        ).height
        > 0
    )


def compare_runs(a: RunData, b: RunData, paired: bool) -> list[Row]:
    """Every metric of every common cell, B against A, adjusted together (sig.adjust)."""
    cells = common_cells(a, b)
    parts_a = _partitions(a)
    parts_b = _partitions(b)
    rows = []
    for cell in cells:
        unit = a.units[cell[2]]
        part_a, part_b = parts_a[unit].get(cell), parts_b[unit].get(cell)
        marks = (tuple(a.marks.get(cell, ())), tuple(b.marks.get(cell, ())))
        if unit == "prompts":
            changes = _prompt_changes(part_a, part_b, paired, cell)
        else:
            changes = _repeat_changes(part_a, part_b)
        rows += [Row(*cell, metric, unit, change, *marks) for metric, change in changes]
    adjusted = sig.adjust([row.change for row in rows])
    return [replace(row, change=change) for row, change in zip(rows, adjusted, strict=True)]


def _partitions(run: RunData) -> dict[str, dict[tuple, pl.DataFrame]]:
    return {
        "prompts": run.requests.partition_by(CELL, as_dict=True, maintain_order=True),
        "repeats": run.repeats.partition_by(CELL, as_dict=True, maintain_order=True),
    }


def _prompt_groups(part: pl.DataFrame, prompts: list[str]) -> dict[str, list[np.ndarray]]:
    """Per PER_PROMPT column, each prompt's values over its repeats, in `prompts` order."""
    columns = sorted({m.column for m in PER_PROMPT})
    grouped = part.group_by("prompt_id").agg(pl.col(c).drop_nulls() for c in columns)
    by_prompt = {row[0]: row[1:] for row in grouped.iter_rows()}
    empty = [[] for _ in columns]
    return {
        column: [np.asarray(by_prompt.get(p, empty)[i], dtype=float) for p in prompts]
        for i, column in enumerate(columns)
    }


def _prompt_changes(part_a: pl.DataFrame, part_b: pl.DataFrame, paired: bool, cell) -> list[tuple[str, sig.Change]]:
    prompts_a = part_a["prompt_id"].unique(maintain_order=True).to_list()
    prompts_b = part_b["prompt_id"].unique(maintain_order=True).to_list()
    if paired:
        common = set(prompts_b)
        prompts_a = prompts_b = [p for p in prompts_a if p in common]
    groups_a, groups_b = _prompt_groups(part_a, prompts_a), _prompt_groups(part_b, prompts_b)
    quantiles = [m for m in PER_PROMPT if m.q is not None]
    changes = sig.compare_quantiles(
        groups_a,
        groups_b,
        [sig.QuantileMetric(m.column, m.q, m.higher_is_better) for m in quantiles],
        "prompts",
        paired,
        sig.seed_of(*cell),
    )
    by_label = {m.label: change for m, change in zip(quantiles, changes, strict=True)}
    for metric in PER_PROMPT:
        if metric.q is None:
            by_label[metric.label] = sig.compare_means(
                _means(groups_a[metric.column]),
                _means(groups_b[metric.column]),
                "prompts",
                metric.higher_is_better,
                paired,
            )
    return [(m.label, by_label[m.label]) for m in PER_PROMPT]


def _means(groups: list[np.ndarray]) -> np.ndarray:
    """Each prompt's mean over its repeats (NaN for a prompt without a value)."""
    return np.array([g.mean() if len(g) else np.nan for g in groups])


def _repeat_changes(part_a: pl.DataFrame, part_b: pl.DataFrame) -> list[tuple[str, sig.Change]]:
    return [
        (
            metric.label,
            sig.compare_means(
                part_a[metric.column].drop_nulls().to_numpy(),
                part_b[metric.column].drop_nulls().to_numpy(),
                "repeats",
                metric.higher_is_better,
                paired=False,
            ),
        )
        for metric in PER_REPEAT
    ]


def worse_beyond(rows: list[Row], pct: float) -> list[Row]:
    """Rows significantly worse (adjusted) with the estimated change worse than pct percent."""
    out = []
    for row in rows:
        change = row.change
        if change.verdict != sig.WORSE or change.change_pct is None:
            continue
        worse_by = -change.change_pct if change.higher_is_better else change.change_pct
        if worse_by > pct:
            out.append(row)
    return out

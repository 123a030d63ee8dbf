"""What the tables say about how a bench job went, from its server.json: failed, and busy machine.

A failed bench job (server did not start, died, failed its warm-up) shows as `failed: REASON` in
its cells, never as a number; a scenario during which other processes used the machine (see
measure/busy.py) is marked BUSY_MARK, like client lag, and details.md names the busiest processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from infbench.handoff import ServerInfo
from infbench.layout import SERVER_INFO, repeat_dirs
from infbench.measure.busy import culprit_text, load_summary

BUSY_MARK = "!"  # a footnote mark: the cell stays a number for anyone parsing the table


@dataclass(frozen=True)
class FailedPass:
    repeat: int
    reason: str | None


@dataclass
class MergedServer(ServerInfo):
    """One (engine, model)'s server.json of pass 1 as the merge reads it: with what its further
    passes (repeat-K) add (with_passes). Never written: server.json stays the bench job's ServerInfo."""

    failed_passes: list[FailedPass] = field(default_factory=list)


Servers = dict[tuple[str, str], MergedServer]  # (engine, model) -> its server, for every pair of a plan


def failed_cell(server: ServerInfo) -> str | None:
    """The cell text of a failed bench job, or None when it did not fail."""
    if server.status != "failed":
        return None
    return f"failed: {server.reason or 'see the bench log'}"


def machine_load(server: ServerInfo, scenario: str) -> dict | None:
    return server.machine_load.get(scenario)


def busy(server: ServerInfo, scenario: str) -> bool:
    load = machine_load(server, scenario)
    return bool(load and load.get("busy"))


def with_passes(server: ServerInfo, run_dir: Path, passes: Callable[[str], int]) -> MergedServer:
    """server.json of pass 1 (results/raw/E/M) with what its further passes (repeat-K) add: a
    scenario busy in any pass is busy (that pass's machine_load, with its repeat), and each failed
    pass under failed_passes (repeat, reason). passes(scenario): the passes the plan merges (a
    folder left by an earlier config with more repeats is not read)."""
    merged = MergedServer(**{f.name: getattr(server, f.name) for f in fields(ServerInfo)})
    merged.machine_load = dict(merged.machine_load)  # filled below: the record read stays as read
    for repeat, folder in repeat_dirs(run_dir)[1:]:
        if not (folder / SERVER_INFO).exists():
            continue
        info = ServerInfo.read(folder / SERVER_INFO)
        if info.status == "failed" and any(repeat <= passes(p.stem) for p in folder.glob("*.jsonl")):
            merged.failed_passes.append(FailedPass(repeat, info.reason))
        for scenario, load in info.machine_load.items():
            if repeat <= passes(scenario) and load.get("busy") and not busy(merged, scenario):
                merged.machine_load[scenario] = load | {"repeat": repeat}
    return merged


def read_servers(raw_dir: Path, engines: Iterable[str], models: Iterable[str], passes: Callable[[str], int]) -> Servers:
    """(engine, model) -> its MergedServer, for every pair; a run folder without server.json (records
    put there by hand) reads as a default ServerInfo: status ok, nothing more to say."""
    servers = {}
    for engine in engines:
        for model in models:
            run_dir = raw_dir / engine / model
            info = ServerInfo.read(run_dir / SERVER_INFO) if (run_dir / SERVER_INFO).exists() else ServerInfo()
            servers[(engine, model)] = with_passes(info, run_dir, passes)
    return servers


def failure_lines(servers: Servers, engines: dict[str, str], models: list[str]) -> list[str]:
    """Under a main table: one line per failed bench job (a failed pass of a repeat too), with where to look."""
    lines = []
    for engine, label in engines.items():
        for model in models:
            server = servers[(engine, model)]
            if server.status == "failed":
                lines.append(
                    f"- FAILED: {label} ({model}): {server.reason} "
                    f"(logs/bench/{engine}/{model}.log and .server.log); the next run repeats this job"
                )
            lines += [
                f"- FAILED: {label} ({model}) repeat {failed.repeat}: {failed.reason} (logs/bench/{engine}/"
                f"{model}.repeat-{failed.repeat}.log); the cell shows the other passes; the next run repeats it"
                for failed in server.failed_passes
            ]
    return lines


def busy_warnings(servers: Servers, engines: dict[str, str], models: list[str], scenarios: list[str]) -> list[str]:
    """Under a main table: one line per marked cell."""
    return [
        f"- WARNING ({BUSY_MARK}): {engine}/{model}/{scenario}: the machine was busy: "
        f"{load_summary(machine_load(servers[(engine, model)], scenario))}; see details.md"
        for engine in engines
        for model in models
        for scenario in scenarios
        if busy(servers[(engine, model)], scenario)
    ]


def machine_load_section(servers: Servers, engines: dict[str, str], models: list[str]) -> list[str]:
    """details.md: every scenario's share of the machine used by others, and who used it."""
    lines = [
        "",
        "## Machine load",
        "",
        "CPU time used by processes outside the bench job (the bench job, its load workers, the server and "
        "the containers it started are its own), and other processes on the leased GPUs. A scenario is "
        f"marked {BUSY_MARK} in the main tables when others used more than its share of the machine "
        "(bench.busy_cpu_limit), when any one other process used more than its share of one core "
        "(bench.busy_core_limit), or when another process used a leased GPU. The culprits add up to the "
        "others' CPU seconds: processes, their children that ended meanwhile, interrupts, hypervisor "
        "steal, and exited processes that could not be named.",
        "",
        "engine | model | scenario | others' CPU share | busiest one (of a core) | busy | who (CPU s)",
        "--- | --- | --- | --- | --- | --- | ---",
    ]
    rows = 0
    for engine in engines:
        for model in models:
            for scenario, load in servers[(engine, model)].machine_load.items():
                culprits = ", ".join(culprit_text(c) for c in load.get("culprits", [])) or "none"
                gpus = (
                    "; GPU: " + ", ".join(f"{g['name']} (pid {g['pid']})" for g in load["gpu_others"])
                    if load.get("gpu_others")
                    else ""
                )
                lines.append(
                    " | ".join(
                        [
                            engine,
                            model,
                            scenario,
                            f"{load['other_cpu_share']:.0%}",
                            f"{load.get('busiest_core_share', 0.0):.0%}",
                            "BUSY" if load.get("busy") else "ok",
                            culprits + gpus,
                        ]
                    )
                )
                rows += 1
    if not rows:
        return []
    return lines

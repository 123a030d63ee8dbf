"""What the tables say about how a bench job went, from its server.json: failed, and busy machine.

A failed bench job (server did not start, died, failed its warm-up) shows as `failed: REASON` in
its cells, never as a number; a scenario during which other processes used the machine (see
measure/busy.py) is marked BUSY_MARK, like client lag, and details.md names the busiest processes.
"""

from __future__ import annotations

BUSY_MARK = "!"  # a footnote mark: the cell stays a number for anyone parsing the table


def failed_cell(server: dict) -> str | None:
    """The cell text of a failed bench job, or None when it did not fail."""
    if server.get("status") != "failed":
        return None
    return f"failed: {server.get('reason') or 'see the bench log'}"


def machine_load(server: dict, scenario: str) -> dict | None:
    return (server.get("machine_load") or {}).get(scenario)


def busy(server: dict, scenario: str) -> bool:
    load = machine_load(server, scenario)
    return bool(load and load.get("busy"))


def failure_lines(servers: dict, engines: dict[str, str], models: list[str]) -> list[str]:
    """Under a main table: one line per failed bench job, with where to look."""
    return [
        f"- FAILED: {label} ({model}): {servers[(engine, model)].get('reason')} "
        f"(logs/bench/{engine}/{model}.log and .server.log); the next run repeats this job"
        for engine, label in engines.items()
        for model in models
        if servers.get((engine, model), {}).get("status") == "failed"
    ]


def _load_summary(load: dict) -> str:
    text = (
        f"other processes used {load['other_cpu_s']:.1f} CPU s in {load['wall_s']:.1f} s "
        f"({load['other_cpu_share']:.0%} of {load['cpus']} CPUs, limit {load['limit']:.0%})"
    )
    if load.get("gpu_others"):
        text += "; on the leased GPUs: " + ", ".join(
            f"{g['name']} (pid {g['pid']}) on GPU {g['gpu']}" for g in load["gpu_others"]
        )
    return text


def busy_warnings(servers: dict, engines: dict[str, str], models: list[str], scenarios: list[str]) -> list[str]:
    """Under a main table: one line per marked cell."""
    return [
        f"- WARNING ({BUSY_MARK}): {engine}/{model}/{scenario}: the machine was busy: "
        f"{_load_summary(machine_load(servers[(engine, model)], scenario))}; see details.md"
        for engine in engines
        for model in models
        for scenario in scenarios
        if busy(servers.get((engine, model), {}), scenario)
    ]


def machine_load_section(servers: dict, engines: dict[str, str], models: list[str]) -> list[str]:
    """details.md: every scenario's share of the machine used by others, and who used it."""
    lines = [
        "",
        "## Machine load",
        "",
        "CPU time used by processes outside the bench job (the bench job, its load workers and the server "
        f"are its own), and other processes on the leased GPUs. Scenarios over the limit are marked "
        f"{BUSY_MARK} in the main tables.",
        "",
        "engine | model | scenario | others' CPU share | busy | busiest other processes (CPU s)",
        "--- | --- | --- | --- | --- | ---",
    ]
    rows = 0
    for engine in engines:
        for model in models:
            for scenario, load in ((servers.get((engine, model)) or {}).get("machine_load") or {}).items():
                culprits = (
                    ", ".join(
                        f"{c['name']} (pid {c['pid']}, {c['user']}) {c['cpu_s']:.1f}" for c in load.get("culprits", [])
                    )
                    or "none"
                )
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
                            "BUSY" if load.get("busy") else "ok",
                            culprits + gpus,
                        ]
                    )
                )
                rows += 1
    if not rows:
        return []
    return lines

"""Was the machine busy while a scenario ran? CPU time of processes outside the bench job's own,
and other processes on the leased GPUs (NVML).

A benchmark taken while something else uses the CPUs reports that contention as the engine's
slowness. Two snapshots per scenario (before its first request, after its last), so sampling never
competes with the measurement:

- the bench job's own: its process tree (the bench job, its load workers, the server and its
  workers) and every process in the containers it started (a TGI container's processes are
  children of the container runtime, not of the bench job: they are found by their cgroup);
- other CPU seconds = the machine's busy CPU time (/proc/stat) minus the bench job's own;
- who used them, adding up to that figure: each other process's own CPU time between the
  snapshots, the CPU time of its children that ended and were reaped meanwhile (a shell's or a
  build's short-lived commands), the kernel's interrupt time and the hypervisor's steal time, and
  what is left: processes that started and ended between the snapshots whose parent did not
  outlive them either (named "exited processes");
- busy: others used more than `limit` of the machine, or one other process (or the reaped children
  of one) used more than `core_limit` of one core: a single spinning thread on a 32-core machine is
  3% of it, yet it stalls an engine that runs a thread on every core;
- GPUs: processes on a leased GPU that are not the bench job's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

import psutil

TOP_CULPRITS = 5
NAMED_MIN_CPU_S = 0.05  # below this a process is not listed by name (it goes into "other processes")


@dataclass
class MachineLoad:
    """One scenario's view of everything else on the machine."""

    scenario: str
    wall_s: float
    cpus: int
    other_cpu_s: float  # CPU seconds used outside the bench job's own processes
    other_cpu_share: float  # other_cpu_s / (wall_s * cpus): 0.5 = half the machine was someone else's
    limit: float  # bench.busy_cpu_limit: share of the machine
    # Who used other_cpu_s, most first; the entries add up to it. Each: {pid, name, user, cpu_s, what}
    # with `what` one of: process (its own CPU time), children (of that process: ended and reaped
    # meanwhile), kernel (interrupts), steal (the hypervisor ran other guests), others (the processes
    # beyond the top ones, summed), exited (processes that came and went unseen).
    culprits: list[dict] = field(default_factory=list)
    gpu_others: list[dict] = field(default_factory=list)  # {gpu, pid, name, used_bytes}
    core_limit: float = 1.0  # bench.busy_core_limit: share of one core for any one other process
    busiest_core_share: float = 0.0  # the most of one core any one other process (or its children) used

    @property
    def busy(self) -> bool:
        return self.other_cpu_share > self.limit or self.busiest_core_share > self.core_limit or bool(self.gpu_others)

    def to_dict(self) -> dict:
        return {**asdict(self), "busy": self.busy}

    def summary(self) -> str:
        return load_summary(self.to_dict())


def culprit_text(culprit: dict) -> str:
    """One culprit as the logs and details.md name it."""
    what = culprit.get("what", "process")
    if what == "children":
        return f"children of {culprit['name']} (pid {culprit['pid']}, {culprit['user']}) {culprit['cpu_s']:.1f} s"
    if what in ("process",):
        return f"{culprit['name']} (pid {culprit['pid']}, {culprit['user']}) {culprit['cpu_s']:.1f} s"
    return f"{culprit['name']} {culprit['cpu_s']:.1f} s"


def load_summary(load: dict) -> str:
    """A scenario's machine load in one line (server.json's machine_load entry or MachineLoad.to_dict())."""
    parts = [
        f"other processes used {load['other_cpu_s']:.1f} CPU s in {load['wall_s']:.1f} s "
        f"({load['other_cpu_share']:.0%} of {load['cpus']} CPUs, limit {load['limit']:.0%})"
    ]
    core_limit = load.get("core_limit")
    busiest = load.get("busiest_core_share") or 0.0
    if core_limit is not None and busiest > core_limit:
        parts.append(f"one of them used {busiest:.0%} of a core (limit {core_limit:.0%})")
    if load.get("culprits"):
        parts.append("by: " + ", ".join(culprit_text(c) for c in load["culprits"]))
    if load.get("gpu_others"):
        parts.append(
            "on the leased GPUs: "
            + ", ".join(f"{g['name']} (pid {g['pid']}) on GPU {g['gpu']}" for g in load["gpu_others"])
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class _Machine:
    busy_s: float  # user + nice + system + irq + softirq + steal
    kernel_s: float  # irq + softirq: interrupt handling, no process to name
    steal_s: float  # the hypervisor ran something else on our virtual CPUs


def _machine_times() -> _Machine:
    t = psutil.cpu_times()
    # guest time is already inside user time; idle and iowait are not busy
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    kernel = getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return _Machine(busy, kernel, getattr(t, "steal", 0.0))


def tree_pids(root_pid: int) -> set[int]:
    try:
        root = psutil.Process(root_pid)
        return {root_pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def container_pids(container_ids: Iterable[str], proc: Path = Path("/proc")) -> set[int]:
    """Processes whose cgroup path names one of the containers (docker's and podman's cgroups carry
    the full container id: /docker/ID, /system.slice/docker-ID.scope, libpod-ID.scope)."""
    ids = [cid for cid in container_ids if cid]
    if not ids:
        return set()
    found = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            groups = (entry / "cgroup").read_text()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if any(cid in groups for cid in ids):
            found.add(int(entry.name))
    return found


@dataclass(frozen=True)
class _Proc:
    name: str
    user: str
    own_s: float  # user + system CPU seconds of the process itself
    children_s: float  # CPU seconds of its children that ended and were reaped
    ppid: int = 0


def _process_cpu() -> dict[tuple[int, float], _Proc]:
    """(pid, start time) -> its CPU figures, for every process we can read."""
    table = {}
    for proc in psutil.process_iter(["name", "username", "cpu_times", "create_time", "ppid"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None:
            continue
        table[(proc.pid, info.get("create_time") or 0.0)] = _Proc(
            info.get("name") or "?",
            info.get("username") or "?",
            times.user + times.system,
            getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0),
            info.get("ppid") or 0,
        )
    return table


@dataclass
class _Snapshot:
    at: float
    machine: _Machine
    processes: dict[tuple[int, float], _Proc]
    ours: set[int]
    gpu: list[dict]


class LoadWatch:
    """Snapshot before a scenario, snapshot after, compare. `root_pid`: the bench job (its tree holds
    the server and the load workers); `container_ids`: containers it started (add_container)."""

    def __init__(
        self,
        limit: float,
        root_pid: int | None = None,
        gpu_ids: Iterable[str] = (),
        nvml=None,
        core_limit: float = 1.0,
        container_ids: Iterable[str] = (),
    ):
        self.limit = limit
        self.core_limit = core_limit
        self.root_pid = root_pid or os.getpid()
        self.gpu_ids = list(gpu_ids)
        self.container_ids = list(container_ids)
        self.nvml = nvml if nvml is not None else (_load_nvml() if self.gpu_ids else None)
        self._start: _Snapshot | None = None

    def add_container(self, container_id: str) -> None:
        """Count a container's processes as the bench job's own (call before start())."""
        self.container_ids.append(container_id)

    def _ours(self) -> set[int]:
        return tree_pids(self.root_pid) | container_pids(self.container_ids)

    def _snapshot(self) -> _Snapshot:
        ours = self._ours()
        # The machine's counters are read on both sides of the process scan (which takes a while on
        # a busy machine) and averaged, so they match the process table's moment.
        before = _machine_times()
        processes = _process_cpu()
        after = _machine_times()
        machine = _Machine(*((a + b) / 2 for a, b in zip(astuple(before), astuple(after), strict=True)))
        return _Snapshot(
            time.monotonic(),
            machine,
            processes,
            ours,
            gpu_other_processes(self.nvml, self.gpu_ids, ours) if self.nvml else [],
        )

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self, scenario: str, top: int = TOP_CULPRITS) -> MachineLoad:
        assert self._start is not None, "start() first"
        start, end = self._start, self._snapshot()
        ours = start.ours | end.ours
        own_cpu = 0.0
        for snap, sign in ((end, 1.0), (start, -1.0)):  # reaped workers move into their parent's children time
            own_cpu += sign * sum(p.own_s + p.children_s for (pid, _), p in snap.processes.items() if pid in ours)
        wall = max(end.at - start.at, 1e-9)
        other = max(0.0, (end.machine.busy_s - start.machine.busy_s) - own_cpu)
        cpus = psutil.cpu_count() or 1
        named = _other_processes(start, end, ours)
        culprits = sorted(named, key=lambda c: -c["cpu_s"])
        shown, rest = culprits[:top], culprits[top:]
        if rest:
            shown.append(_entry(f"{len(rest)} other processes", sum(c["cpu_s"] for c in rest), "others"))
        kernel = end.machine.kernel_s - start.machine.kernel_s
        steal = end.machine.steal_s - start.machine.steal_s
        for name, seconds, what in (("kernel interrupts", kernel, "kernel"), ("hypervisor steal", steal, "steal")):
            if seconds >= NAMED_MIN_CPU_S:
                shown.append(_entry(name, seconds, what))
        unexplained = other - sum(c["cpu_s"] for c in shown)
        if unexplained >= NAMED_MIN_CPU_S:
            shown.append(_entry("exited processes (started and ended between the snapshots)", unexplained, "exited"))
        busiest = max((c["cpu_s"] for c in culprits), default=0.0) / wall
        seen = {(g["gpu"], g["pid"]) for g in end.gpu}
        gpu_others = end.gpu + [g for g in start.gpu if (g["gpu"], g["pid"]) not in seen]
        return MachineLoad(
            scenario=scenario,
            wall_s=round(wall, 3),
            cpus=cpus,
            other_cpu_s=round(other, 2),
            other_cpu_share=round(other / (wall * cpus), 4),
            limit=self.limit,
            culprits=[{**c, "cpu_s": round(c["cpu_s"], 2)} for c in shown],
            gpu_others=gpu_others,
            core_limit=self.core_limit,
            busiest_core_share=round(busiest, 4),
        )


def _entry(name: str, cpu_s: float, what: str) -> dict:
    return {"pid": None, "name": name, "user": None, "cpu_s": cpu_s, "what": what}


def _other_processes(start: _Snapshot, end: _Snapshot, ours: set[int]) -> list[dict]:
    """Every process outside ours that used CPU between the snapshots: its own time, and apart from
    it the time of its children that ended meanwhile. A process new since the first snapshot counts
    from zero (it started in between)."""
    # A child that ended meanwhile adds its whole life's CPU to its parent's children time (through
    # every parent that ended too, up to the first one still running): what it had used by the
    # first snapshot was before the scenario, so it is taken off there again.
    earlier = {key[0]: (key, proc) for key, proc in start.processes.items()}
    used_before: dict[tuple[int, float], float] = {}
    for key, proc in start.processes.items():
        if key in end.processes:
            continue
        parent, hops = proc.ppid, 0
        while parent in earlier and earlier[parent][0] not in end.processes and hops < 64:
            parent, hops = earlier[parent][1].ppid, hops + 1  # that parent ended too: its own parent reaped it
        alive = earlier.get(parent, (None,))[0]
        if alive in end.processes:
            used_before[alive] = used_before.get(alive, 0.0) + proc.own_s + proc.children_s
    found = []
    for key, proc in end.processes.items():
        if key[0] in ours:
            continue
        before = start.processes.get(key)
        own = proc.own_s - (before.own_s if before else 0.0)
        children = proc.children_s - (before.children_s if before else 0.0) - used_before.get(key, 0.0)
        for seconds, what in ((own, "process"), (children, "children")):
            if seconds >= NAMED_MIN_CPU_S:
                found.append({"pid": key[0], "name": proc.name, "user": proc.user, "cpu_s": seconds, "what": what})
    return found


def _load_nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no nvidia-ml-py or no driver: no GPU figures
        return None


def gpu_other_processes(nvml, gpu_ids: list[str], tree: set[int]) -> list[dict]:
    """Processes on the leased GPUs that are not the bench job's (NVML's compute and graphics lists)."""
    found = []
    for gpu in gpu_ids:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(gpu))
        except Exception:
            continue
        procs = []
        for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs += list(getattr(nvml, query)(handle))
            except Exception:
                pass
        for proc in procs:
            if proc.pid in tree or any(f["gpu"] == str(gpu) and f["pid"] == proc.pid for f in found):
                continue
            try:
                name = psutil.Process(proc.pid).name()
            except psutil.Error:
                name = "?"
            found.append(
                {"gpu": str(gpu), "pid": proc.pid, "name": name, "used_bytes": getattr(proc, "usedGpuMemory", None)}
            )
    return found

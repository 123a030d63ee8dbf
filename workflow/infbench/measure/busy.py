"""Was the machine busy while a scenario ran? CPU time of processes outside the bench job's tree,
and other processes on the leased GPUs (NVML).

A benchmark taken while something else uses the CPUs reports that contention as the engine's
slowness. Two snapshots per scenario (before its first request, after its last), so sampling never
competes with the measurement:

- other CPU seconds = the machine's busy CPU time (/proc/stat) minus what the bench job's own tree
  (the bench job, its load workers, the server and its workers) used; processes that started and
  ended between the snapshots are counted too, they only cannot be named;
- culprits: the processes outside the tree that used the most CPU between the snapshots;
- GPUs: processes on a leased GPU that are not in the tree.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import psutil

TOP_CULPRITS = 5


@dataclass
class MachineLoad:
    """One scenario's view of everything else on the machine."""

    scenario: str
    wall_s: float
    cpus: int
    other_cpu_s: float  # CPU seconds used outside the bench job's tree
    other_cpu_share: float  # other_cpu_s / (wall_s * cpus): 0.5 = half the machine was someone else's
    limit: float  # bench.busy_cpu_limit
    culprits: list[dict] = field(default_factory=list)  # {pid, name, user, cpu_s}, most CPU first
    gpu_others: list[dict] = field(default_factory=list)  # {gpu, pid, name, used_bytes}

    @property
    def busy(self) -> bool:
        return self.other_cpu_share > self.limit or bool(self.gpu_others)

    def to_dict(self) -> dict:
        return {**asdict(self), "busy": self.busy}

    def summary(self) -> str:
        parts = [
            f"other processes used {self.other_cpu_s:.1f} CPU s in {self.wall_s:.1f} s "
            f"({self.other_cpu_share:.0%} of {self.cpus} CPUs; limit {self.limit:.0%})"
        ]
        if self.culprits:
            parts.append(
                "top: "
                + ", ".join(f"{c['name']} (pid {c['pid']}, {c['user']}) {c['cpu_s']:.1f} s" for c in self.culprits)
            )
        if self.gpu_others:
            parts.append(
                "on the leased GPUs: "
                + ", ".join(f"{g['name']} (pid {g['pid']}) on GPU {g['gpu']}" for g in self.gpu_others)
            )
        return "; ".join(parts)


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    # guest time is already inside user time; idle and iowait are not busy
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def tree_pids(root_pid: int) -> set[int]:
    try:
        root = psutil.Process(root_pid)
        return {root_pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _process_cpu() -> dict[tuple[int, float], tuple[str, str, float, float]]:
    """(pid, start time) -> (name, user, own CPU s, CPU s of reaped children), for every process we can read."""
    table = {}
    for proc in psutil.process_iter(["name", "username", "cpu_times", "create_time"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None:
            continue
        table[(proc.pid, info.get("create_time") or 0.0)] = (
            info.get("name") or "?",
            info.get("username") or "?",
            times.user + times.system,
            getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0),
        )
    return table


@dataclass
class _Snapshot:
    at: float
    busy_s: float
    processes: dict
    tree: set[int]
    gpu: list[dict]


class LoadWatch:
    """Snapshot before a scenario, snapshot after, compare. `root_pid`: the bench job (its tree holds
    the server and the load workers)."""

    def __init__(self, limit: float, root_pid: int | None = None, gpu_ids: list[str] = (), nvml=None):
        self.limit = limit
        self.root_pid = root_pid or os.getpid()
        self.gpu_ids = list(gpu_ids)
        self.nvml = nvml if nvml is not None else (_load_nvml() if self.gpu_ids else None)
        self._start: _Snapshot | None = None

    def _snapshot(self) -> _Snapshot:
        tree = tree_pids(self.root_pid)
        return _Snapshot(
            time.monotonic(),
            _busy_seconds(),
            _process_cpu(),
            tree,
            gpu_other_processes(self.nvml, self.gpu_ids, tree) if self.nvml else [],
        )

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self, scenario: str, top: int = TOP_CULPRITS) -> MachineLoad:
        assert self._start is not None, "start() first"
        start, end = self._start, self._snapshot()
        tree = start.tree | end.tree
        ours = 0.0
        for snap, sign in ((end, 1.0), (start, -1.0)):  # reaped workers move into their parent's children time
            ours += sign * sum(
                own + children for (pid, _), (_, _, own, children) in snap.processes.items() if pid in tree
            )
        wall = max(end.at - start.at, 1e-9)
        other = max(0.0, (end.busy_s - start.busy_s) - ours)
        cpus = psutil.cpu_count() or 1
        culprits = []
        for key, (name, user, own, _) in end.processes.items():
            if key[0] in tree:
                continue
            before = start.processes.get(key)
            used = own - (before[2] if before else 0.0)
            if used > 0.05:
                culprits.append({"pid": key[0], "name": name, "user": user, "cpu_s": round(used, 2)})
        culprits.sort(key=lambda c: -c["cpu_s"])
        seen = {(g["gpu"], g["pid"]) for g in end.gpu}
        gpu_others = end.gpu + [g for g in start.gpu if (g["gpu"], g["pid"]) not in seen]
        return MachineLoad(
            scenario=scenario,
            wall_s=round(wall, 3),
            cpus=cpus,
            other_cpu_s=round(other, 2),
            other_cpu_share=round(other / (wall * cpus), 4),
            limit=self.limit,
            culprits=culprits[:top],
            gpu_others=gpu_others,
        )


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

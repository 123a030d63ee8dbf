"""Energy over a scenario's measured window, from the hardware's own cumulative counters.

- GPUs: NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption, millijoules since the
  driver loaded), read per leased GPU and summed. Never since boot: only the difference over the
  window between the first request and the last, so loading and warm-up are never counted.
- CPUs: RAPL through Linux's powercap (/sys/class/powercap/intel-rapl:N/energy_uj, microjoules):
  every package domain, and its DRAM sub-domain where present. The counter wraps at
  max_energy_range_uj; readings taken about once a second in between (by the gauge sampler) let a
  window longer than one wrap period be summed piece by piece. RAPL measures the whole socket: other
  processes' energy is in it (the busy mark says when there were any).

Where a counter cannot be read, the result says `n/a` and why (no powercap on this machine, no
permission, no NVML), never a number from another method. Each result names its method; the tables
show it per cell.
"""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass, field
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Counter:
    """One cumulative energy counter: its name, the unit's size in joules, and where it wraps (None: never)."""

    name: str  # gpu0, package-0, package-0/dram
    joules_per_unit: float
    wraps_at: int | None = None  # the counter runs 0..wraps_at-1 (max_energy_range_uj + 1)


def counter_growth(readings: list[int], wraps_at: int | None) -> int:
    """Total growth over successive readings of one counter, counting a wrap wherever a reading is
    below the one before it. A counter that never wraps (NVML) and goes down was reset (a driver
    reload): that raises, as the window's energy is then unknown."""
    total = 0
    for before, after in zip(readings, readings[1:], strict=False):
        if after >= before:
            total += after - before
        elif wraps_at is not None:
            total += after + wraps_at - before
        else:
            raise ValueError(f"energy counter went down from {before} to {after} (reset)")
    return total


@dataclass
class EnergyResult:
    """A scenario's energy: total joules over the window and the method, or why there is none."""

    method: str  # "NVML total energy, GPUs 0,1" | "RAPL package+dram (powercap)" | "n/a"
    joules: float | None = None
    window_s: float | None = None
    reason: str | None = None  # why n/a
    per_counter_j: dict[str, float] = field(default_factory=dict)
    joules_per_output_token: float | None = None
    average_watts: float | None = None

    def per_token(self, output_tokens: int | float | None) -> EnergyResult:
        if self.joules is not None and output_tokens:
            self.joules_per_output_token = self.joules / output_tokens
        if self.joules is not None and self.window_s:
            self.average_watts = self.joules / self.window_s
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class EnergyMeter:
    """Reads a set of energy counters; `result()` turns the readings of one window into joules."""

    method = "n/a"

    def __init__(self) -> None:
        self.counters: list[Counter] = []
        self.unavailable: str | None = None

    def read(self) -> dict[str, int]:
        return {}

    def result(self, readings: list[dict[str, int]], window_s: float) -> EnergyResult:
        if self.unavailable:
            return EnergyResult(method="n/a", reason=self.unavailable)
        if len(readings) < 2:
            return EnergyResult(method="n/a", reason="fewer than two readings of the energy counters")
        per_counter = {}
        try:
            for counter in self.counters:
                values = [r[counter.name] for r in readings if counter.name in r]
                if len(values) < 2:
                    return EnergyResult(method="n/a", reason=f"{counter.name}: not read at both ends of the window")
                per_counter[counter.name] = counter_growth(values, counter.wraps_at) * counter.joules_per_unit
        except ValueError as err:
            return EnergyResult(method="n/a", reason=str(err))
        return EnergyResult(
            method=self.method,
            joules=sum(per_counter.values()),
            window_s=window_s,
            per_counter_j={k: round(v, 6) for k, v in per_counter.items()},
        )


class RaplMeter(EnergyMeter):
    """Package (and DRAM) RAPL domains through powercap; `root` is /sys/class/powercap."""

    def __init__(self, root: Path = POWERCAP) -> None:
        super().__init__()
        self.files: dict[str, Path] = {}
        if not root.exists():
            self.unavailable = f"no RAPL: {root} is absent (a VM or a CPU without powercap)"
            return
        for zone in sorted(glob.glob(str(root / "intel-rapl:*"))):
            zone_path = Path(zone)
            name = _read_text(zone_path / "name")
            if name is None:
                continue
            depth = zone_path.name.count(":")
            if depth == 1 and name.startswith("package"):
                key = name
            elif depth == 2 and name == "dram":
                package_zone = zone_path.name.rsplit(":", 1)[0]  # intel-rapl:0:1 is in intel-rapl:0
                key = f"{_read_text(root / package_zone / 'name') or package_zone}/dram"
            else:
                continue  # core/uncore sub-domains are inside the package figure
            self.files[key] = zone_path / "energy_uj"
            max_range = _read_text(zone_path / "max_energy_range_uj")
            wraps = int(max_range) + 1 if max_range and max_range.isdigit() else None
            self.counters.append(Counter(key, 1e-6, wraps))
        if not self.files:
            self.unavailable = f"no RAPL package domain under {root}"
            return
        try:
            self.read()
        except PermissionError:
            self.unavailable = f"RAPL counters not readable ({next(iter(self.files.values()))}: permission denied)"
        except (OSError, ValueError) as err:
            self.unavailable = f"RAPL counters not readable: {err}"
        has_dram = any(c.name.endswith("/dram") for c in self.counters)
        self.method = "RAPL package" + ("+dram" if has_dram else "") + " (powercap, whole socket)"

    def read(self) -> dict[str, int]:
        return {key: int(path.read_text().strip()) for key, path in self.files.items()}


class NvmlMeter(EnergyMeter):
    """NVML's total-energy counter of each leased GPU (millijoules; 64 bits, it does not wrap)."""

    def __init__(self, gpu_ids: list[str], nvml=None) -> None:
        super().__init__()
        self.handles: dict[str, object] = {}
        if not gpu_ids:
            self.unavailable = "no GPUs leased"
            return
        try:
            if nvml is None:
                import pynvml as nvml

                nvml.nvmlInit()
            self.nvml = nvml
            for gpu in gpu_ids:
                handle = (
                    nvml.nvmlDeviceGetHandleByIndex(int(gpu))
                    if str(gpu).isdigit()
                    else nvml.nvmlDeviceGetHandleByUUID(gpu)
                )
                self.handles[f"gpu{gpu}"] = handle
            self.read()
        except Exception as err:  # no library, no driver, or a GPU without the counter (pre-Volta)
            self.unavailable = f"NVML total energy not readable: {type(err).__name__}: {err}"
            return
        self.counters = [Counter(name, 1e-3, None) for name in self.handles]
        self.method = f"NVML total energy counter, GPUs {','.join(map(str, gpu_ids))} summed"

    def read(self) -> dict[str, int]:
        return {name: int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for name, h in self.handles.items()}


def meter_for(gpu_ids: list[str], powercap: Path = POWERCAP) -> EnergyMeter:
    """NVML for a GPU job, RAPL for a CPU job."""
    return NvmlMeter(gpu_ids) if gpu_ids else RaplMeter(powercap)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None

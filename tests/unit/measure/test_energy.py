"""Energy over a window: counter arithmetic and wrap, RAPL through a powercap tree, NVML through a test
double of the library (no GPU here: only the arithmetic and the calls' shape are covered; the real
counter was not read on a GPU by these tests), and what this machine gives (no powercap)."""

from __future__ import annotations

from pathlib import Path

import pytest
from infbench.measure.energy import POWERCAP, NvmlMeter, RaplMeter, counter_growth, meter_for

MAX_RANGE_UJ = 262143328850  # a typical package's max_energy_range_uj


def test_growth_counts_a_wrap_where_a_reading_falls():
    wraps_at = MAX_RANGE_UJ + 1
    assert counter_growth([100, 250, 400], wraps_at) == 300
    # 100 J before the wrap, 50 J after
    assert counter_growth([wraps_at - 100_000_000, 50_000_000], wraps_at) == 150_000_000
    # two wraps in one window, seen through the readings in between
    readings = [wraps_at - 10, 5, wraps_at - 20, 7]
    assert counter_growth(readings, wraps_at) == 15 + (wraps_at - 25) + 27


def test_a_counter_that_never_wraps_and_goes_down_was_reset():
    with pytest.raises(ValueError, match="reset"):
        counter_growth([5_000, 4_000], None)


def _powercap(root: Path, packages: dict[str, tuple[int, int | None]]) -> Path:
    """A powercap tree as Linux lays it out: intel-rapl:N (package) and intel-rapl:N:M (dram)."""
    for index, (package, (energy, dram)) in enumerate(packages.items()):
        zone = root / f"intel-rapl:{index}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"{package}\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        core = root / f"intel-rapl:{index}:0"
        core.mkdir()
        (core / "name").write_text("core\n")
        (core / "energy_uj").write_text("1\n")
        if dram is not None:
            sub = root / f"intel-rapl:{index}:1"
            sub.mkdir()
            (sub / "name").write_text("dram\n")
            (sub / "energy_uj").write_text(f"{dram}\n")
            (sub / "max_energy_range_uj").write_text("65532610987\n")
    return root


def test_rapl_sums_packages_and_dram_over_a_window_with_a_wrap(tmp_path):
    root = _powercap(tmp_path / "powercap", {"package-0": (MAX_RANGE_UJ - 1_000_000, 10), "package-1": (0, None)})
    meter = RaplMeter(root)
    assert meter.unavailable is None
    assert meter.method == "RAPL package+dram (powercap, whole socket)"
    first = meter.read()
    assert set(first) == {"package-0", "package-0/dram", "package-1"}  # core is inside the package figure
    (root / "intel-rapl:0" / "energy_uj").write_text("2000000\n")  # wrapped: 1 J before, 2 J after
    (root / "intel-rapl:0:1" / "energy_uj").write_text("500010\n")
    (root / "intel-rapl:1" / "energy_uj").write_text("4000000\n")
    result = meter.result([first, meter.read()], window_s=2.0).per_token(70)
    assert result.per_counter_j == {"package-0": pytest.approx(3.000001), "package-0/dram": 0.5, "package-1": 4.0}
    assert result.joules == pytest.approx(7.500001)
    assert result.average_watts == pytest.approx(7.500001 / 2.0)
    assert result.joules_per_output_token == pytest.approx(7.500001 / 70)


def test_rapl_unreadable_says_why(tmp_path):
    root = _powercap(tmp_path / "powercap", {"package-0": (1, None)})
    (root / "intel-rapl:0" / "energy_uj").write_text("not a number\n")
    meter = RaplMeter(root)
    assert meter.unavailable.startswith("RAPL counters not readable")
    result = meter.result([], 1.0)
    assert result.method == "n/a" and result.joules is None and result.reason == meter.unavailable


def test_this_machine_has_no_powercap_and_says_so():
    if POWERCAP.exists():
        pytest.skip(f"{POWERCAP} exists on this machine: RAPL may be readable here")
    meter = meter_for([])
    assert meter.unavailable == f"no RAPL: {POWERCAP} is absent (a VM or a CPU without powercap)"
    assert meter.result([{}, {}], 1.0).to_dict()["method"] == "n/a"


class FakeNvml:
    """Stands in for pynvml: per-GPU total-energy counters in millijoules, as the library returns them."""

    def __init__(self, counters: dict[int, list[int]]):
        self.counters = counters
        self.calls: list[int] = []

    def nvmlDeviceGetHandleByIndex(self, index: int):
        if index not in self.counters:
            raise RuntimeError(f"NVML_ERROR_INVALID_ARGUMENT for GPU {index}")
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.calls.append(handle)
        values = self.counters[handle]
        return values.pop(0) if len(values) > 1 else values[0]


def test_nvml_sums_the_leased_gpus_over_the_window_only():
    # The counters hold what each GPU used since the driver loaded; only the window's growth counts.
    nvml = FakeNvml({0: [9_000_000, 9_000_000, 9_600_000], 1: [4_000_000, 4_000_000, 4_300_000]})
    meter = NvmlMeter(["0", "1"], nvml=nvml)  # reads once on construction, to check the counter exists
    assert meter.unavailable is None and meter.method == "NVML total energy counter, GPUs 0,1 summed"
    start, end = meter.read(), meter.read()
    result = meter.result([start, end], window_s=3.0).per_token(900)
    assert result.per_counter_j == {"gpu0": 600.0, "gpu1": 300.0}
    assert result.joules == 900.0 and result.average_watts == 300.0 and result.joules_per_output_token == 1.0


def test_nvml_counter_reset_and_missing_gpu_are_n_a():
    meter = NvmlMeter(["0"], nvml=FakeNvml({0: [5_000, 5_000, 4_000]}))
    result = meter.result([meter.read(), meter.read()], 1.0)
    assert result.method == "n/a" and "reset" in result.reason
    missing = NvmlMeter(["3"], nvml=FakeNvml({0: [1]}))
    assert missing.unavailable.startswith("NVML total energy not readable")
    assert NvmlMeter([]).unavailable == "no GPUs leased"

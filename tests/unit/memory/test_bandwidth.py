"""The pipeline's memory-bandwidth measurement (a read benchmark and a STREAM triad) and where it is recorded."""

from __future__ import annotations

import json

import pytest
from infbench.cli import main
from infbench.memory.bandwidth import measure_read_bandwidth, write_measurement
from infbench.memory.triad import measure_triad_bandwidth
from infbench.results.provenance import HardwareInfo, collect


def test_read_benchmark_measures_a_plausible_bandwidth(tmp_path):
    m = measure_read_bandwidth(buffer_mib=16, repeats=2, threads=2)
    assert m.threads == 2 and m.repeats == 2 and len(m.samples_bytes_s) == 2
    assert m.bandwidth_bytes_s == max(m.samples_bytes_s)
    # Any machine that runs this reads faster than 100 MB/s and slower than 10 TB/s.
    assert 1e8 < m.bandwidth_bytes_s < 1e13
    with pytest.raises(ValueError, match="positive"):
        measure_read_bandwidth(buffer_mib=0)
    write_measurement(tmp_path / "bw.json", m)
    assert json.loads((tmp_path / "bw.json").read_text())["bandwidth_bytes_s"] == m.bandwidth_bytes_s


def test_triad_measures_a_plausible_bandwidth_and_checks_its_work():
    m = measure_triad_bandwidth(array_mib=16, repeats=2, threads=2)
    assert m.threads == 2 and len(m.samples_bytes_s) == 2 and m.bandwidth_bytes_s == max(m.samples_bytes_s)
    assert m.array_bytes == 16 * 2**20
    assert 1e8 < m.bandwidth_bytes_s < 1e13
    with pytest.raises(ValueError, match="positive"):
        measure_triad_bandwidth(array_mib=0)


def test_cli_and_provenance_record_the_measurement(tmp_path, capsys, monkeypatch):

    monkeypatch.setenv("INFBENCH_GPU_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "hardware" / "bandwidth.json"
    assert main(["memory-bandwidth", "--buffer-mib", "8", "--repeats", "1", "--out", str(out)]) == 0
    assert "GB/s" in capsys.readouterr().out
    assert (tmp_path / "locks").is_dir()  # it held the CPU lock of bench jobs while measuring
    assert main(["memory-bandwidth", "--repeats", "0", "--out", str(out)]) == 2
    measured = json.loads(out.read_text())
    # Both methods recorded; the bound uses the higher, and the file says which and why.
    read, triad = measured["read"]["bandwidth_bytes_s"], measured["triad"]["bandwidth_bytes_s"]
    assert measured["bandwidth_bytes_s"] == max(read, triad)
    assert measured["bound_method"] == ("read" if read >= triad else "triad") and "higher" in measured["why"]
    assert isinstance(measured["quiet"], bool) and "other_cpu_s" in measured["machine_load"]
    config = {"engines": {}, "device": "cpu", "models": {}}
    hw = HardwareInfo(cpu_model="x", cpu_cores_logical=2, cpu_cores_physical=2, ram_bytes=1)
    prov = collect(
        config, tables=[], locks=[], model_metas=[], prompt_metas=[], servers=[], records=[], hardware=hw, bandwidth=out
    )
    assert prov.to_dict()["memory_bandwidth"]["bandwidth_bytes_s"] == measured["bandwidth_bytes_s"]

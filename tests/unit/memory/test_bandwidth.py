"""The pipeline's memory-bandwidth measurement (a short read benchmark) and where it is recorded."""

from __future__ import annotations

import json

import pytest
from infbench.cli import main
from infbench.memory.bandwidth import measure_read_bandwidth, write_measurement
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


def test_cli_and_provenance_record_the_measurement(tmp_path, capsys):
    out = tmp_path / "hardware" / "bandwidth.json"
    assert main(["memory-bandwidth", "--buffer-mib", "8", "--repeats", "1", "--out", str(out)]) == 0
    assert "GB/s" in capsys.readouterr().out
    assert main(["memory-bandwidth", "--repeats", "0", "--out", str(out)]) == 2
    measured = json.loads(out.read_text())
    config = {"engines": {}, "device": "cpu", "models": {}}
    hw = HardwareInfo(cpu_model="x", cpu_cores_logical=2, cpu_cores_physical=2, ram_bytes=1)
    prov = collect(
        config, tables=[], locks=[], model_metas=[], prompt_metas=[], servers=[], records=[], hardware=hw, bandwidth=out
    )
    assert prov.to_dict()["memory_bandwidth"]["bandwidth_bytes_s"] == measured["bandwidth_bytes_s"]

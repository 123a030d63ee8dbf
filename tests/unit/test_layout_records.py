"""The run layout (infbench.layout) and the typed memory estimate (infbench.handoff.MemoryEstimate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA
from infbench import layout
from infbench.handoff import HandoffError, MemoryEstimate


def test_layout_names_each_path_once_and_rule_patterns_come_from_wildcards():
    assert layout.records("vllm", "m", "single") == "results/raw/vllm/m/single.jsonl"
    assert layout.server_info("{engine}", "{model}") == "results/raw/{engine}/{model}/server.json"
    assert layout.failure_marker("e", "m") == "results/failures/e/m.json"
    assert layout.memory_estimate("m") == "results/memory/m.json"
    estimates, measured = layout.memory_table_inputs(["a", "b"], ["x", "y"])
    assert estimates == ["results/memory/x.json", "results/memory/y.json"]
    # Engine-major: the order the memory_table rule passes and verify reads.
    assert measured == [layout.memory_report(e, m) for e in "ab" for m in "xy"]


def test_run_folder_from_its_raw_dir(tmp_path):
    run = layout.RunFolder.of(tmp_path / "results/raw/tgi/m")
    assert (run.root, run.engine, run.model) == (tmp_path, "tgi", "m")
    assert run.records(layout.NATIVE_RUN) == tmp_path / "results/raw/tgi/m/native-single.jsonl"
    assert run.memory_report == tmp_path / "results/raw/tgi/m/memory.json"
    assert run.failure_marker == tmp_path / "results/failures/tgi/m.json"


def test_an_estimate_file_reads_as_its_typed_record():
    from infbench.memory.estimate import build_estimate
    from infbench.memory.facts import model_facts

    est = build_estimate(model_facts(str(DATA / "smollm2-135m-config.json"), "smollm2-135m"), context=2048)
    data = json.loads(est.to_json_text())
    typed = MemoryEstimate.from_dict(data)
    assert typed.model == "smollm2-135m" and typed.context == 2048
    assert typed.kv_cache.bytes_per_token == data["kv_cache"]["bytes_per_token"]
    assert typed.overhead_bytes() == {o["name"]: o["bytes"] for o in data["overheads"]}
    assert [(f.gpu, f.tp, f.kv_pool_bytes) for f in typed.vllm.gpus] == [
        (g["gpu"], g["tp"], g["kv_pool_bytes"]) for g in data["vllm"]["gpus"]
    ]
    assert typed.parameters.total == data["parameters"]["total"]


def test_a_wrong_nested_field_names_the_file_and_the_field():
    with pytest.raises(HandoffError, match=r"memory/m.json: .*kv_cache.*EstimateKvCache: field 'kv_heads'"):
        MemoryEstimate.from_dict({"model": "m", "kv_cache": {"kv_heads": "eight"}}, str(Path("memory/m.json")))

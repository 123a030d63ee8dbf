"""The spec files as handoff records: EngineSpec and ModelSpec written and read by HandoffRecord, a
bad field named with its file."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from infbench.engines.kinds.tgi import TgiSettings
from infbench.engines.spec import BenchSettings, EngineSpec, ModelSpec, Sampling
from infbench.handoff import HandoffError
from infbench.measure.scenarios import Single, Throughput


def _spec() -> EngineSpec:
    return EngineSpec(
        name="tgi",
        kind="tgi",
        label="TGI",
        env="tgi",
        device="cpu",
        args=["--x"],
        settings=TgiSettings(launcher="docker"),
        sampling=Sampling(max_tokens=16),
        scenarios=[Single(name="single"), Throughput(name="load", concurrency=2, requests=4)],
        bench=BenchSettings(warmup_requests=0),
    )


def test_an_engine_spec_round_trips_with_its_kind_settings_and_scenario_classes(tmp_path):
    spec = _spec()
    spec.write(tmp_path / "tgi.json")
    # The bytes are the dataclass's: what the spec rule has always written.
    assert json.loads((tmp_path / "tgi.json").read_text()) == asdict(spec)
    read = EngineSpec.read(tmp_path / "tgi.json")
    assert read == spec and isinstance(read.settings, TgiSettings)
    assert [type(s) for s in read.scenarios] == [Single, Throughput]


def test_a_model_spec_round_trips(tmp_path):
    model = ModelSpec(name="m", path="/models/m", max_model_len=512, weights="random")
    model.write(tmp_path / "m.json")
    assert ModelSpec.read(tmp_path / "m.json") == model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"startup_timeout_s": "slow"}, r"e\.json: EngineSpec: field 'startup_timeout_s'"),
        ({"kind": "nonesuch"}, r"e\.json: EngineSpec: field 'kind': unknown engine kind 'nonesuch'"),
        ({"settings": {"launcher": 3}}, r"e\.json: EngineSpec\.settings: TgiSettings: field 'launcher'"),
        ({"sampling": {"seed": "x"}}, r"e\.json: EngineSpec\.sampling: Sampling: field 'seed'"),
        ({"scenarios": [{"name": "s"}]}, r"e\.json: EngineSpec\.scenarios\[0\]: KeyError"),
    ],
)
def test_a_bad_engine_spec_names_the_file_and_field(tmp_path, change, message):
    (tmp_path / "e.json").write_text(json.dumps(asdict(_spec()) | change))
    with pytest.raises(HandoffError, match=message):
        EngineSpec.read(tmp_path / "e.json")


def test_a_bad_model_spec_names_the_file_and_field(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "path": "/p", "gpus": "two"}))
    with pytest.raises(HandoffError, match=r"m\.json: ModelSpec: field 'gpus'"):
        ModelSpec.read(tmp_path / "m.json")
    (tmp_path / "m.json").write_text(json.dumps({"name": "m"}))
    with pytest.raises(HandoffError, match=r"m\.json: ModelSpec: missing field 'path'"):
        ModelSpec.read(tmp_path / "m.json")

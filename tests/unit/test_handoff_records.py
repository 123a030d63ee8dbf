"""The small handoff records (infbench.handoff): the failure marker, the prepared model's and
prompts' meta files, the host bandwidth and the GGUF record. Each round-trips through its file, a
bad file names the file and the field, and the bytes are what the hand-built dicts wrote before."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from infbench.handoff import Bandwidth, FailureMarker, GgufMeta, HandoffError, ModelMeta, PromptsMeta

MODEL = ModelMeta(
    name="m", path="resources/models/m", source="hf:org/m", dtype="bfloat16", files={"a": "00"}, size_bytes=3
)
PROMPTS = PromptsMeta(source="builtin", n=12, seed=42, count=12, sha256="ab" * 32)
BANDWIDTH = Bandwidth(
    bandwidth_bytes_s=8e9,
    bound_method="triad",
    why="higher",
    read={"bandwidth_bytes_s": 7e9},
    load_1min=0.5,
    quiet=True,
)
GGUF = GgufMeta("m", "ok", None, "results/models/m.gguf", "BF16", "bfloat16", "gpt2", "smollm", "cd" * 32, 10)


@pytest.mark.parametrize(
    "record", [FailureMarker("server exited", "2026-01-01T00:00:00+0000"), MODEL, PROMPTS, BANDWIDTH, GGUF]
)
def test_each_record_round_trips_through_its_file(tmp_path, record):
    record.write(tmp_path / "r.json")
    assert type(record).read(tmp_path / "r.json") == record


def test_the_bytes_are_those_the_dicts_wrote(tmp_path):
    # What bench.py, prompts.py and models.py wrote by hand before: indent 2, keys sorted, one newline.
    marker = FailureMarker("warm-up failed", "2026-01-01T00:00:00+0000")
    marker.write(tmp_path / "f.json")
    old = {"reason": "warm-up failed", "at": "2026-01-01T00:00:00+0000"}
    assert (tmp_path / "f.json").read_text() == json.dumps(old, sort_keys=True, indent=2) + "\n"
    PROMPTS.write(tmp_path / "p.json")
    old = {"source": "builtin", "n": 12, "seed": 42, "count": 12, "sha256": "ab" * 32}
    assert (tmp_path / "p.json").read_bytes() == (json.dumps(old, sort_keys=True, indent=2) + "\n").encode()
    MODEL.write(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == asdict(MODEL)


def test_a_marker_says_when_by_default():
    assert FailureMarker("x").at[:2] == "20"


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (FailureMarker, {"at": "now"}, r"x\.json: FailureMarker: missing field 'reason'"),
        (ModelMeta, {"name": "m", "path": 3}, r"x\.json: ModelMeta: field 'path'"),
        (PromptsMeta, {**PROMPTS.to_dict(), "count": "twelve"}, r"x\.json: PromptsMeta: field 'count'"),
        (Bandwidth, {"bandwidth_bytes_s": "fast"}, r"x\.json: Bandwidth: field 'bandwidth_bytes_s'"),
        (Bandwidth, {"quiet": True}, r"x\.json: Bandwidth: missing field 'bandwidth_bytes_s'"),
        (GgufMeta, {**GGUF.to_dict(), "size_bytes": "big"}, r"x\.json: GgufMeta: field 'size_bytes'"),
    ],
)
def test_a_bad_file_names_the_file_and_field(tmp_path, cls, data, message):
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(HandoffError, match=message):
        cls.read(tmp_path / "x.json")


def test_older_or_partial_files_still_read(tmp_path):
    # A bandwidth file of the read benchmark alone, a model meta written by hand with only its path.
    (tmp_path / "bw.json").write_text(json.dumps({"bandwidth_bytes_s": 4e9, "threads": 2}))
    bandwidth = Bandwidth.read(tmp_path / "bw.json")
    assert bandwidth.bandwidth_bytes_s == 4e9 and bandwidth.bound_method == "" and bandwidth.quiet is None
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "path": "/models/m"}))
    assert ModelMeta.read(tmp_path / "m.json").dtype == ""


def test_the_memory_estimate_is_written_and_read_as_its_record_in_its_own_key_order(tmp_path):
    from conftest import DATA
    from infbench.memory.estimate import estimate

    est = estimate(str(DATA / "smollm2-135m-config.json"), name="smollm2-135m", context=2048)
    record = est.to_record()
    record.write(tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert text == est.to_json_text() + "\n"  # what `infbench memory-estimate --json` prints
    assert list(json.loads(text))[:4] == ["model", "source", "model_type", "parameters"]  # not sorted
    read = type(record).read(tmp_path / "m.json")
    assert read == record and read.to_json_text() + "\n" == text
    assert read.vllm.gpus[0].setup == f"{read.vllm.gpus[0].tp}x {read.vllm.gpus[0].gpu}"

"""Bundles: a good one verifies; a changed byte, a missing file, a tampered table and unsafe paths fail,
each naming the file; secrets never reach the archive; weights and venvs are never in it."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import PurePosixPath

import pytest
from fake_run import FAKE_TOKEN, build_run, fake_config
from infbench.cli import main
from infbench.results.bundle import UnsafeArchiveError
from infbench.results.bundle_make import RunScope, make_bundle
from infbench.results.bundle_verify import verify_bundle
from infbench.results.redact import REDACTED, Redactor, redact_config
from infbench.secrets import is_secret_env_name, is_secret_key


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    root = tmp_path / "run"
    root.mkdir()
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    build_run(root)
    return root


def _bundle(root):
    return make_bundle(root, root / "results" / "bundles", Redactor.from_sources(fake_config()))


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _rewrite(path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)


def _verify_cli(path, capsys) -> tuple[int, str]:
    code = main(["verify", str(path)])
    return code, capsys.readouterr().err


def test_good_bundle_verifies(run_dir, capsys):
    made = _bundle(run_dir)
    assert made.path.name == f"{made.run_id}.tar.gz" and made.path.parent == run_dir / "results" / "bundles"
    result = verify_bundle(made.path)
    assert result.ok, result.problems
    assert result.checked_files == made.files - 1  # every member but the manifest itself
    assert "results/tables/inference_speed.md" in result.recomputed_tables
    assert "results/tables/details.md" in result.recomputed_tables
    code, err = _verify_cli(made.path, capsys)
    assert code == 0 and err.startswith("OK ")


def test_bundle_holds_results_and_logs_but_no_weights_or_venvs(run_dir):
    made = _bundle(run_dir)
    names = {name.split("/", 1)[1] for name in _members(made.path)}
    for expected in (
        "manifest.json",
        "results/provenance.json",
        "results/tables/inference_speed.md",
        "results/tables/merge_plan.json",
        "results/raw/alpha/tiny/single.jsonl",
        "results/raw/alpha/tiny/memory.json",
        "results/envs/transformers.lock",
        "results/models/tiny.json",
        "logs/bench/alpha/tiny.log",
    ):
        assert expected in names
    assert not [n for n in names if "safetensors" in n or ".venvs" in n or n.startswith("resources")]
    assert not [n for n in names if n.startswith("results/bundles")]


def test_bundle_holds_only_this_runs_engines_and_models(run_dir):
    """Files an earlier config left behind (an engine since removed) stay out."""
    stale = run_dir / "results/raw/retired/tiny"
    stale.mkdir(parents=True)
    (stale / "single.jsonl").write_text("{}\n")
    (run_dir / "results/specs/engines/retired.json").write_text("{}\n")
    (run_dir / "logs/bench/retired").mkdir(parents=True)
    (run_dir / "logs/bench/retired/tiny.log").write_text("old\n")
    (run_dir / "results/envs/vllm-cpu.lock").write_text("vllm==0\n")
    names = {name.split("/", 1)[1] for name in _members(_bundle(run_dir).path)}
    assert not [n for n in names if "retired" in n or "vllm" in n], names
    assert "results/raw/gamma/tiny/native-single.jsonl" in names and "results/envs/tgi.lock" in names


def test_bundle_holds_the_prepared_requests_and_seeded_traces_of_this_runs_scenarios(run_dir):
    """What was sent is part of the record: the prepare step's request files of the run's (model,
    scenario) pairs, and the seeded traces its trace scenarios replayed; files of others stay out."""
    requests = run_dir / "results/requests/tiny"
    requests.mkdir(parents=True)
    scenario = next(iter(fake_config()["scenarios"]))
    (requests / f"{scenario}.json").write_text("{}\n")
    (requests / "retired.json").write_text("{}\n")
    (run_dir / "results/traces").mkdir()
    (run_dir / "results/traces/seeded-0.jsonl").write_text("{}\n")  # no trace scenario in this run
    names = {name.split("/", 1)[1] for name in _members(_bundle(run_dir).path)}
    assert f"results/requests/tiny/{scenario}.json" in names
    assert not [n for n in names if "retired" in n or n.startswith("results/traces")], names
    scope = RunScope.from_provenance(
        {"config": {"engines": {"e": {}}, "models": {"m": {}}, "scenarios": {"r": {"kind": "trace", "seed": 3}}}}
    )
    assert scope.seeded_traces == {"seeded-3.jsonl"} and scope.holds(PurePosixPath("results/traces/seeded-3.jsonl"))


def test_bundle_bytes_are_reproducible(run_dir):
    first = _bundle(run_dir).path.read_bytes()
    second = _bundle(run_dir).path.read_bytes()
    assert first == second


def test_planted_token_is_absent_from_every_member(run_dir):
    made = _bundle(run_dir)
    token = FAKE_TOKEN.encode()
    # The token was really planted: in a log, in an engine spec, and in the environment.
    assert token in (run_dir / "logs/bench/alpha/tiny.log").read_bytes()
    assert token in (run_dir / "results/specs/engines/alpha.json").read_bytes()
    members = _members(made.path)
    assert members
    for name, data in members.items():
        assert token not in data, name
        assert token[3:] not in data, name
    assert token not in gzip.decompress(made.path.read_bytes())
    log = next(data for name, data in members.items() if name.endswith("logs/bench/alpha/tiny.log"))
    assert REDACTED.encode() in log
    manifest = json.loads(next(data for name, data in members.items() if name.endswith("/manifest.json")))
    assert "logs/bench/alpha/tiny.log" in manifest["redacted"]
    assert verify_bundle(made.path).ok  # redaction happens before the checksums


def test_short_secret_under_a_secret_key_is_redacted_in_json(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    root = tmp_path / "run"
    root.mkdir()
    build_run(root, token="s3cr")  # too short to search for as bare text
    made = make_bundle(root, root / "results" / "bundles", Redactor.from_sources({}, environ={}))
    spec = next(d for n, d in _members(made.path).items() if n.endswith("specs/engines/alpha.json"))
    assert json.loads(spec)["server_env"]["HF_TOKEN"] == REDACTED


def test_changed_byte_fails_naming_the_file(run_dir, capsys):
    made = _bundle(run_dir)
    members = _members(made.path)
    name = next(n for n in members if n.endswith("results/raw/beta/tiny/single.jsonl"))
    members[name] = members[name].replace(b'"Paris."', b'"Paris!"', 1)
    _rewrite(made.path, members)
    result = verify_bundle(made.path)
    assert not result.ok
    assert any(p.startswith("results/raw/beta/tiny/single.jsonl: checksum mismatch") for p in result.problems)
    code, err = _verify_cli(made.path, capsys)
    assert code == 1 and "results/raw/beta/tiny/single.jsonl" in err


def test_missing_file_fails_naming_it(run_dir, capsys):
    made = _bundle(run_dir)
    members = _members(made.path)
    del members[next(n for n in members if n.endswith("results/raw/alpha/tiny/throughput.jsonl"))]
    _rewrite(made.path, members)
    result = verify_bundle(made.path)
    assert (
        "results/raw/alpha/tiny/throughput.jsonl: missing from the bundle (listed in manifest.json)" in result.problems
    )
    code, err = _verify_cli(made.path, capsys)
    assert code == 1 and "throughput.jsonl" in err


def test_tampered_table_with_a_matching_checksum_still_fails(run_dir, capsys):
    """A better number in the table, and the manifest updated to match: only the recomputation sees it."""
    made = _bundle(run_dir)
    members = _members(made.path)
    table = next(n for n in members if n.endswith("results/tables/inference_speed.md"))
    manifest_name = next(n for n in members if n.endswith("/manifest.json"))
    text = members[table].decode()
    row = next(line for line in text.splitlines() if line.startswith("Tiny |"))
    members[table] = text.replace(row, row.replace("|", "| 999.99 |", 1).rsplit("|", 1)[0]).encode()
    assert members[table] != text.encode()
    manifest = json.loads(members[manifest_name])
    import hashlib

    manifest["files"]["results/tables/inference_speed.md"] = {
        "sha256": hashlib.sha256(members[table]).hexdigest(),
        "size": len(members[table]),
    }
    members[manifest_name] = json.dumps(manifest).encode()
    _rewrite(made.path, members)
    result = verify_bundle(made.path)
    assert [p for p in result.problems if p.startswith("results/tables/inference_speed.md: differs")], result.problems
    assert not [p for p in result.problems if "checksum" in p]
    code, err = _verify_cli(made.path, capsys)
    assert code == 1 and "inference_speed.md" in err


def test_extra_file_not_in_manifest_fails(run_dir):
    made = _bundle(run_dir)
    members = _members(made.path)
    members[f"{made.run_id}/results/raw/alpha/tiny/extra.jsonl"] = b"{}\n"
    _rewrite(made.path, members)
    assert (
        "results/raw/alpha/tiny/extra.jsonl: in the bundle but not in manifest.json"
        in verify_bundle(made.path).problems
    )


def _unsafe(kind: str) -> tarfile.TarInfo:
    if kind == "absolute":
        info = tarfile.TarInfo("/tmp/infbench-evil.txt")
    elif kind == "parent":
        info = tarfile.TarInfo("run/../../infbench-evil.txt")
    elif kind == "symlink":
        info = tarfile.TarInfo("run/results/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info = tarfile.TarInfo("run/results/hard")
        info.type, info.linkname = tarfile.LNKTYPE, "run/manifest.json"
    else:
        info = tarfile.TarInfo("run/results/dev")
        info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("kind", ["absolute", "parent", "symlink", "hardlink", "device"])
def test_unsafe_member_is_refused_before_anything_is_extracted(tmp_path, kind, capsys):
    bundle = tmp_path / "sub" / "evil.tar.gz"
    bundle.parent.mkdir()
    # A harmless member first, so that a refusal after extracting it would show.
    _rewrite(bundle, {"run/manifest.json": b'{"files": {}, "run_id": "run"}'}, extra=[_unsafe(kind)])
    with pytest.raises(UnsafeArchiveError) as err:
        verify_bundle(bundle)
    assert _unsafe(kind).name in str(err.value)
    code, out = _verify_cli(bundle, capsys)
    assert code == 2 and "REFUSED" in out and repr(_unsafe(kind).name) in out
    assert not (tmp_path / "infbench-evil.txt").exists()


def test_not_a_bundle_is_an_error(tmp_path, capsys):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    code, err = _verify_cli(junk, capsys)
    assert code == 2 and "not a readable .tar.gz" in err


def test_secret_names_and_config_redaction():
    assert is_secret_key("HF_TOKEN") and is_secret_key("api_key") and is_secret_key("apiKey")
    assert not is_secret_key("max_tokens") and not is_secret_key("prompt_tokens") and not is_secret_key("secrets")
    assert is_secret_env_name("HUGGING_FACE_HUB_TOKEN") and is_secret_env_name("MY_PASSWORD_FILE")
    config = fake_config(secrets=["engines.beta.args", "SOME_ENV"])
    redacted = redact_config(config)
    assert redacted["engines"]["alpha"]["server_env"]["HF_TOKEN"] == REDACTED
    assert redacted["engines"]["beta"]["args"] == [REDACTED]  # marked secret by the config's `secrets:`
    assert redacted["sampling"]["max_tokens"] == 8
    assert config["engines"]["alpha"]["server_env"]["HF_TOKEN"] == FAKE_TOKEN  # the original is untouched
    redactor = Redactor.from_sources(config, environ={"SOME_ENV": "listed-by-name-1234", "PATH": "/usr/bin"})
    text, count = redactor.redact_bytes(b"a listed-by-name-1234 b --x c hf_" + b"A1" * 20 + b" /usr/bin")
    assert count == 2 and b"listed-by-name" not in text and b"A1A1" not in text and b"/usr/bin" in text


def test_bundle_cli_prints_the_path_and_needs_a_finished_run(run_dir, tmp_path, capsys):
    code = main(["bundle", "--root", str(run_dir), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert (
        code == 0
        and out.strip().endswith(".tar.gz")
        and (tmp_path / "out").joinpath(out.strip().split("/")[-1]).exists()
    )
    assert "redacted 1 secret(s) in logs/bench/alpha/tiny.log" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bundle", "--root", str(empty)]) == 2
    assert "provenance.json is missing" in capsys.readouterr().err


def test_parquet_copies_are_made_from_the_redacted_jsonl_and_checked(run_dir, capsys):
    """A secret in a raw record is redacted in its JSONL and absent from the bundled Parquet copy
    (compressed bytes hide it from a text search); a forged copy fails verify by name."""
    from infbench.measure.recordfiles import write_records
    from infbench.measure.records import read_records

    path = run_dir / "results" / "raw" / "alpha" / "tiny" / "single.jsonl"
    records = read_records(path)
    records[0].output_text = f"the token is {FAKE_TOKEN}"
    write_records(path, records)
    made = _bundle(run_dir)
    assert verify_bundle(made.path).ok
    members = _members(made.path)
    copy_name = next(n for n in members if n.endswith("raw/alpha/tiny/single.parquet"))
    import polars as pl

    texts = pl.read_parquet(io.BytesIO(members[copy_name]))["output_text"].to_list()
    assert not any(FAKE_TOKEN in t for t in texts) and "the token is" in texts[0]
    # A copy with a better latency and the manifest updated to match: the records comparison sees it.
    frame = pl.read_parquet(io.BytesIO(members[copy_name])).with_columns(pl.col("latency_s") / 2)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, metadata=pl.read_parquet_metadata(io.BytesIO(members[copy_name])))
    members[copy_name] = buffer.getvalue()
    manifest_name = next(n for n in members if n.endswith("/manifest.json"))
    manifest = json.loads(members[manifest_name])
    import hashlib

    relative = copy_name.split("/", 1)[1]
    manifest["files"][relative] = {
        "sha256": hashlib.sha256(members[copy_name]).hexdigest(),
        "size": len(members[copy_name]),
    }
    members[manifest_name] = json.dumps(manifest).encode()
    _rewrite(made.path, members)
    result = verify_bundle(made.path)
    assert any(
        p.startswith("results/raw/alpha/tiny/single.jsonl: single.parquet holds other records") for p in result.problems
    ), result.problems

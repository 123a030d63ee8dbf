"""Bundles as untrusted input (compare reads other people's): each test builds a hostile bundle or
config and checks it is refused, or its secret never written.

- a merge plan whose names leave the bundle (`../..`) is refused before any table is recomputed;
- a decompression bomb (too many bytes in one file or in all, too many members) is refused from the
  headers, before anything is extracted;
- a key on an engine's command line or in a URL is refused by the config, and redacted from spec
  files, server commands, tables, provenance and bundles when it got into a file some other way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import asdict

import pytest
from fake_run import build_run, fake_config, fake_plan
from infbench.cli import main
from infbench.handoff import MergePlan
from infbench.pipeline.config import ConfigError, validate_config
from infbench.results.bundle import UnsafeArchiveError
from infbench.results.bundle_make import make_bundle
from infbench.results.bundle_verify import ExtractLimits, verify_bundle
from infbench.results.provenance import read_provenance
from infbench.results.redact import REDACTED, Redactor, redact_argv, redact_url
from infbench.results.tables import merge


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _write(path, members: dict[str, bytes], directories: tuple[str, ...] = ()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _with_manifest(members: dict[str, bytes], run_id: str) -> dict[str, bytes]:
    """The members with a manifest whose checksums match them (a forger's manifest)."""
    name = f"{run_id}/manifest.json"
    files = {
        n.split("/", 1)[1]: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
        for n, d in members.items()
        if n != name
    }
    manifest = {"format": "infbench-bundle/1", "run_id": run_id, "files": files, "redacted": {}}
    return {**members, name: json.dumps(manifest).encode()}


# --- names in the merge plan --------------------------------------------------------------------


def test_merge_plan_naming_files_outside_the_bundle_is_refused(tmp_path, capsys):
    """A bundle with no raw records whose merge plan points the engine at a folder outside it, and
    tables computed from that folder: verify used to recompute the same tables from there and pass."""
    root = tmp_path / "run"
    root.mkdir()
    build_run(root)
    outside = tmp_path / "elsewhere"  # records that are not in the bundle
    (outside / "tiny").mkdir(parents=True)
    for name in ("single.jsonl", "throughput.jsonl", "server.json", "memory.json"):
        (outside / "tiny" / name).write_bytes((root / "results/raw/alpha/tiny" / name).read_bytes())
    escape = "../" * 40 + str(outside).lstrip("/")  # from any extraction folder up to / and down again
    plan = fake_plan(fake_config())
    crafted = MergePlan(engines={escape: "Alpha"}, models=plan.models, scenarios=plan.scenarios)
    mirror = tmp_path / "mirror" / "results" / "raw"  # a raw folder the crafted names resolve from
    mirror.mkdir(parents=True)
    tables = tmp_path / "forged-tables"
    merge(mirror, tables, crafted)
    assert "Alpha" in (tables / "inference_speed.md").read_text()  # the forgery computes

    made = make_bundle(root, tmp_path / "bundles", Redactor.from_sources(fake_config()))
    run_id = made.run_id
    members = {
        name: data
        for name, data in _members(made.path).items()
        if "/results/raw/" not in name and not name.endswith(("manifest.json", "memory.md"))
    }
    for table in tables.iterdir():
        members[f"{run_id}/results/tables/{table.name}"] = table.read_bytes()
    forged = tmp_path / "forged.tar.gz"
    _write(forged, _with_manifest(members, run_id), directories=(f"{run_id}/results/raw",))

    result = verify_bundle(forged)
    assert not result.ok
    assert any(
        p.startswith("results/tables/merge_plan.json: engine name '../") and "not a plain name" in p
        for p in result.problems
    ), result.problems
    assert not result.recomputed_tables  # nothing was computed from outside
    code = main(["verify", str(forged)])
    err = capsys.readouterr().err
    assert code == 1 and "merge_plan.json: engine name" in err and "OK " not in err


@pytest.mark.parametrize("field", ["models", "scenarios"])
def test_merge_plan_with_a_path_for_a_model_or_scenario_is_refused(tmp_path, field):
    root = tmp_path / "run"
    root.mkdir()
    build_run(root)
    made = make_bundle(root, tmp_path / "bundles", Redactor.from_sources(fake_config()))
    members = {n: d for n, d in _members(made.path).items() if not n.endswith("manifest.json")}
    plan_name = f"{made.run_id}/results/tables/merge_plan.json"
    plan = json.loads(members[plan_name])
    plan[field] = {"/etc/passwd" if field == "models" else "sub/single": "single"}
    members[plan_name] = json.dumps(plan).encode()
    forged = tmp_path / "forged.tar.gz"
    _write(forged, _with_manifest(members, made.run_id))
    problems = verify_bundle(forged).problems
    assert any("merge_plan.json" in p and "not a plain name" in p for p in problems), problems


# --- size limits --------------------------------------------------------------------------------


def _never_extract(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("extractall called on a refused archive")

    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse)


def test_a_member_over_the_per_file_limit_is_refused_from_its_header(tmp_path, monkeypatch, capsys):
    """A header claiming 64 GiB (the archive itself is a few hundred bytes): refused at the header,
    before a byte of it is read or written."""
    header = tarfile.TarInfo("run/results/raw/huge.jsonl")
    header.size = 64 * 2**30
    small = tarfile.TarInfo("run/manifest.json")
    small.size = 2
    body = small.tobuf(format=tarfile.PAX_FORMAT) + b"{}".ljust(512, b"\0") + header.tobuf(format=tarfile.PAX_FORMAT)
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(body))
    _never_extract(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match=r"'run/results/raw/huge.jsonl' unpacks to 64.0 GiB.*per file"):
        verify_bundle(bomb)
    code = main(["verify", str(bomb)])
    err = capsys.readouterr().err
    assert code == 2 and "REFUSED" in err and "huge.jsonl" in err and "nothing was extracted" in err


def test_a_bomb_over_the_total_limit_is_refused(tmp_path, monkeypatch, capsys):
    """Real zeros this time (3 x 2 MiB compress to a few KiB), against a 4 MiB total limit."""
    zeros = b"\0" * (2 * 2**20)
    bomb = tmp_path / "bomb.tar.gz"
    _write(bomb, {f"run/results/raw/z{i}.jsonl": zeros for i in range(3)})
    assert bomb.stat().st_size < 100_000
    _never_extract(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match=r"more than 0.0 GiB \(at member 'run/results/raw/z2.jsonl'\)"):
        verify_bundle(bomb, ExtractLimits(total_bytes=4 * 2**20, file_bytes=3 * 2**20))
    code = main(["verify", "--max-gib", str(4 / 1024), str(bomb)])
    err = capsys.readouterr().err
    assert code == 2 and "raise the limit with --max-gib" in err


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    bomb = tmp_path / "many.tar.gz"
    _write(bomb, {f"run/results/logs/{i}.log": b"x" for i in range(60)})
    _never_extract(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match="more than 50 members"):
        verify_bundle(bomb, ExtractLimits(members=50))


def test_a_genuine_bundle_is_within_the_default_limits(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    build_run(root)
    made = make_bundle(root, tmp_path / "bundles", Redactor.from_sources(fake_config()))
    assert verify_bundle(made.path).ok
    with pytest.raises(UnsafeArchiveError):
        verify_bundle(made.path, ExtractLimits(members=made.files - 1))


# --- secrets outside server_env -----------------------------------------------------------------

KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c"


def _config(**engine) -> dict:
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 3},
        "sampling": {"max_tokens": 8},
        "models": {"tiny": {"source": "local:/nowhere/tiny"}},
        "engines": {"e": {"kind": "openai", **engine}},
        "scenarios": {"single": {"kind": "single"}},
    }


@pytest.mark.parametrize(
    "engine, where",
    [
        ({"command": ["srv", "--port", "{port}", "--api-key", KEY]}, "engines.e.command[4]"),
        ({"command": ["srv", "--port", "{port}", f"--hf-token={KEY}"]}, "engines.e.command[3]"),
        ({"command": ["srv", "--port", "{port}"], "args": ["--api-key", KEY]}, "engines.e.args[1]"),
        ({"command": ["srv", "--port", "{port}"], "args": ["--x", "hf_" + "Ab1" * 12]}, "engines.e.args[1]"),
        ({"base_url": f"https://bob:{KEY}@llm.example.com/v1"}, "engines.e.base_url"),
        ({"base_url": f"https://llm.example.com/v1?api_key={KEY}"}, "engines.e.base_url"),
        ({"base_url": "https://llm.example.com/v1", "health_path": f"/health?token={KEY}"}, "engines.e.health_path"),
    ],
)
def test_a_secret_on_a_command_line_or_in_a_url_is_refused_by_the_config(engine, where):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**engine))
    message = str(err.value)
    assert message.startswith(f"config error at {where}:") and KEY not in message


def test_what_is_not_a_secret_passes():
    valid = validate_config(
        _config(command=["srv", "--port", "{port}", "--max-tokens", "64", "--tokenizer", "x", "--ssl-keyfile", "k.pem"])
    )
    assert valid["engines"]["e"]["command"][-1] == "k.pem"
    assert validate_config(_config(base_url="http://127.0.0.1:8000/v1?model=x"))["engines"]["e"]["base_url"]


def test_redaction_of_command_lines_and_urls():
    assert redact_argv(["srv", "--api-key", KEY, f"--token={KEY}", "--max-tokens", "8"]) == [
        "srv",
        "--api-key",
        REDACTED,
        f"--token={REDACTED}",
        "--max-tokens",
        "8",
    ]
    assert redact_url(f"https://bob:{KEY}@h:8000/v1?x=1&access_token={KEY}&y=2") == (
        f"https://{REDACTED}@h:8000/v1?x=1&access_token={REDACTED}&y=2"
    )
    text, count = Redactor().redact_bytes(f"GET https://u:pw@h/v1?key={KEY} 200".encode())
    assert count == 2 and KEY.encode() not in text and b"pw" not in text


def test_a_key_that_got_into_a_run_never_reaches_tables_provenance_or_bundle(tmp_path):
    """Planted after validation (as an older run or a hand-edited spec would hold it): an API key in
    an engine's args (so in its spec file and server command) and a base_url with credentials in the
    config. The tables, the provenance and every member of the bundle are without both."""
    config = fake_config()
    config["engines"]["beta"]["args"] = ["--api-key", KEY]
    url_secret = "pw-9e8d7c6b5a"
    config["engines"]["alpha"]["base_url_note"] = f"https://bob:{url_secret}@llm.example.com/v1"
    root = tmp_path / "run"
    root.mkdir()
    build_run(root, config=config)
    spec = json.loads((root / "results/specs/engines/beta.json").read_text())
    assert KEY in spec["args"]  # really planted
    server = json.loads((root / "results/raw/beta/tiny/server.json").read_text())
    assert KEY in server["command"]
    tables = root / "results" / "tables"
    for table in tables.glob("*.md"):
        assert KEY not in table.read_text(), table.name
    assert f"--api-key {REDACTED}" in (tables / "inference_speed.md").read_text()
    provenance = json.dumps(read_provenance(root / "results" / "provenance.json"))
    assert KEY not in provenance and url_secret not in provenance
    made = make_bundle(root, tmp_path / "bundles", Redactor.from_sources({}, environ={}))
    for name, data in _members(made.path).items():
        assert KEY.encode() not in data and url_secret.encode() not in data, name
    assert verify_bundle(made.path).ok
    bundled_spec = next(d for n, d in _members(made.path).items() if n.endswith("specs/engines/beta.json"))
    assert json.loads(bundled_spec)["args"] == ["--api-key", REDACTED]
    assert asdict(fake_plan(config))  # the plan itself holds no secret

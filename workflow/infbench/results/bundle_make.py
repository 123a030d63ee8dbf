"""Making a bundle: results/bundles/{run_id}.tar.gz (`infbench bundle`, the bundle rule).

It never holds model weights, venvs or earlier bundles. Secrets (see infbench.results.redact) are
redacted from every member before its checksum is taken. The archive is deterministic: sorted
members, fixed owner, mode and time, gzip without a timestamp, so bundling the same results twice
gives the same bytes. The tables must match the raw records beside them (the check verify makes).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from infbench import layout
from infbench.defaults import schema_default
from infbench.fileio import write_bytes_atomic
from infbench.results.bundle import FORMAT, MANIFEST, RUN_ID_RE, BundleError, sha256_bytes
from infbench.results.bundle_verify import VerifyResult, _recompute_tables
from infbench.results.redact import Redactor

# What a bundle holds, relative to the workflow directory.
INCLUDE = (
    layout.PROVENANCE,
    layout.TABLES,
    layout.RAW,
    layout.MEMORY,
    layout.HARDWARE,
    layout.SPECS,
    layout.ENVS,
    layout.MODELS,
    layout.PROMPTS,
    layout.REQUESTS,
    layout.TRACES,
    layout.PLOTS,
    layout.REPORT,
    layout.LOGS,
)
# Never in a bundle, wherever it sits: weights, archives, temp files.
EXCLUDED_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".whl",
    ".tar",
    ".gz",
    ".zip",
    ".tmp",
)
EXCLUDED_DIRS = {".venvs", "resources", "bundles", "__pycache__", ".snakemake"}
EXCLUDED_FILES = {"logs/bundle.log"}  # written while bundling: it would differ between two bundles


@dataclass
class BundleResult:
    path: Path
    run_id: str
    files: int
    size_bytes: int
    redacted: dict[str, int]  # member -> replacements made
    short_secrets: int  # secrets too short to search for as bare text


def _excluded(relative: PurePosixPath) -> bool:
    return (
        str(relative) in EXCLUDED_FILES
        or any(part in EXCLUDED_DIRS for part in relative.parts)
        or relative.name.endswith(EXCLUDED_SUFFIXES)
        or relative.name.startswith(".")
    )


@dataclass(frozen=True)
class RunScope:
    """The engines, models, envs and prompt sample of one run (from its provenance's config).

    results/ and logs/ may still hold files of engines or models an earlier config had; a bundle
    holds only this run's."""

    engines: frozenset[str]
    models: frozenset[str]
    envs: frozenset[str]
    prompts: str
    scenarios: frozenset[str] = frozenset()
    seeded_traces: frozenset[str] = frozenset()  # file names of the seeded traces its trace scenarios replay

    @classmethod
    def from_provenance(cls, provenance: dict) -> RunScope | None:
        config = provenance.get("config") or {}
        if not config.get("engines") or not config.get("models"):
            return None
        envs = {e.get("env") for e in provenance.get("engines", [])} | {
            config.get("tools_env", schema_default("tools_env"))
        }
        scenarios = config.get("scenarios") or {}
        seeded = {
            PurePosixPath(layout.seeded_trace(s.get("seed", schema_default("scenarios.*.seed")))).name
            for s in scenarios.values()
            if isinstance(s, dict) and s.get("kind") == "trace" and s.get("source", "seeded") == "seeded"
        }
        return cls(
            frozenset(config["engines"]),
            frozenset(config["models"]),
            frozenset(e for e in envs if e),
            (config.get("prompts") or {}).get("name", "prompts"),
            frozenset(scenarios),
            frozenset(seeded),
        )

    def holds(self, relative: PurePosixPath) -> bool:
        p, name = relative.parts, relative.name

        def files(names, *suffixes):
            return name in {f"{n}{s}" for n in names for s in suffixes}

        if p[:2] in (("results", "raw"), ("logs", "bench")):
            if len(p) < 4 or p[2] not in self.engines:
                return False
            return (
                p[3] in self.models
                if p[0] == "results"
                else (len(p) == 4 and files(self.models, ".log", ".server.log"))
            )
        if p[:2] == ("results", "requests"):  # results/requests/{model}/{scenario}.json
            return len(p) == 4 and p[2] in self.models and files(self.scenarios, ".json")
        if p[:2] == ("results", "traces"):
            return len(p) == 3 and name in self.seeded_traces
        scoped = {
            ("results", "specs", "engines"): (self.engines, ".json"),
            ("results", "specs", "models"): (self.models, ".json"),
            ("results", "envs"): (self.envs, ".lock"),
            ("results", "models"): (self.models, ".json"),
            ("results", "memory"): (self.models, ".json"),
            ("results", "prompts"): ({self.prompts}, ".jsonl", ".meta.json"),
            ("logs", "specs", "engines"): (self.engines, ".log"),
            ("logs", "specs", "models"): (self.models, ".log"),
            ("logs", "envs"): (self.envs, ".log"),
            ("logs", "models"): (self.models, ".log"),
            ("logs", "memory"): (self.models | {"table"}, ".log"),
            ("logs", "prompts"): ({self.prompts}, ".log"),
        }
        for prefix, (names, *suffixes) in scoped.items():
            if p[: len(prefix)] == prefix:
                return len(p) == len(prefix) + 1 and files(names, *suffixes)
        return True


def bundle_files(root: Path, scope: RunScope | None = None) -> list[str]:
    """The files a bundle of this workflow directory holds, as sorted POSIX paths relative to root.

    Symlinks are skipped, not followed: a linked file can be anything (a local model's weights)."""
    found = set()
    for entry in INCLUDE:
        path = root / entry
        candidates = [path] if path.is_file() else (sorted(path.rglob("*")) if path.is_dir() else [])
        for item in candidates:
            relative = PurePosixPath(item.relative_to(root).as_posix())
            if item.is_symlink() or not item.is_file() or _excluded(relative):
                continue
            if scope is not None and not scope.holds(relative):
                continue
            found.add(str(relative))
    return sorted(found)


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _mtime_of(provenance: dict) -> int:
    """The provenance's written_at: a fixed time for every member, the same on every rebuild."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(provenance["times"]["written_at"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return 0


def _is_raw_copy(name: str) -> bool:
    return name.startswith(f"{layout.RAW}/") and name.endswith(".parquet")


def _copies_from_bundled_jsonl(raw: dict[str, bytes], contents: dict[str, bytes]) -> None:
    """Each raw Parquet copy, made again from its JSONL as bundled (secrets redacted): a copy of
    the bundle's record of truth, with nothing redacted there left in it."""
    from infbench.measure.recordframe import parquet_copy_of

    for name in sorted(n for n in raw if _is_raw_copy(n)):
        jsonl = name.removesuffix(".parquet") + ".jsonl"
        if jsonl in contents:
            contents[name] = parquet_copy_of(contents[jsonl], jsonl)


def make_bundle(root: Path, out_dir: Path, redactor: Redactor) -> BundleResult:
    """Write out_dir/{run_id}.tar.gz from the workflow directory root; run_id from its provenance."""
    provenance_path = root / layout.PROVENANCE
    if not provenance_path.exists():
        raise BundleError(f"{provenance_path} is missing: run the workflow first (snakemake --cores all)")
    provenance = json.loads(provenance_path.read_text())
    run_id = str(provenance.get("run_id", ""))
    if not RUN_ID_RE.fullmatch(run_id):  # it names a file and the archive's folder
        raise BundleError(f"{provenance_path}: run_id {run_id!r} is not a plain name (letters, digits, . _ -)")
    check_tables_match_raw(root)
    files = bundle_files(root, RunScope.from_provenance(provenance))
    raw = {name: (root / name).read_bytes() for name in files}
    for name, data in raw.items():  # first pass: learn secrets that sit under secret keys in JSON files
        redactor.collect_json_secrets(name, data)
    contents, redacted = {}, {}
    for name, data in raw.items():
        if _is_raw_copy(name):  # made below from the redacted JSONL, never redacted as bytes
            continue
        count = 0
        if name.endswith((".json", ".jsonl")):
            data, count = redactor.redact_json_file(name, data)
        data, more = redactor.redact_bytes(data)
        if count + more:
            redacted[name] = count + more
        contents[name] = data
    _copies_from_bundled_jsonl(raw, contents)
    manifest = {
        "format": FORMAT,
        "run_id": run_id,
        "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in contents.items()},
        "redacted": redacted,
    }
    contents[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

    mtime = _mtime_of(provenance)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(contents):
                data = contents[name]
                tar.addfile(_tarinfo(f"{run_id}/{name}", len(data), mtime), io.BytesIO(data))
    target = out_dir / f"{run_id}.tar.gz"
    write_bytes_atomic(target, buffer.getvalue())
    return BundleResult(
        path=target,
        run_id=run_id,
        files=len(contents),
        size_bytes=len(buffer.getvalue()),
        redacted=redacted,
        short_secrets=redactor.short_values,
    )


def check_tables_match_raw(root: Path) -> None:
    """Refuse to pack tables that the raw records beside them no longer give (deleted or changed
    records): the same recomputation `infbench verify` does, before the bundle exists."""
    probe = VerifyResult(bundle=root)
    _recompute_tables(root, probe)
    if probe.problems:
        raise BundleError(
            "the tables do not match the raw records, so they would not verify; run "
            "`snakemake --cores all` to measure again what is missing: " + "; ".join(probe.problems)
        )


def bundle_for_snakemake(config: dict, log_path: Path) -> None:
    """The `bundle` rule: pack with the resolved config's secrets redacted, and say where it went.

    It takes the config itself (with --config overrides), not config files, and never puts it on a
    command line, where secret values would show in process lists and Snakemake's log.
    """
    made = make_bundle(Path("."), Path(layout.BUNDLES), Redactor.from_sources(config))
    message = f"bundle {made.path}: run {made.run_id}, {made.files} files, {made.size_bytes / 1e6:.2f} MB"
    if made.redacted:
        message += "\nredacted: " + ", ".join(f"{name} ({n})" for name, n in sorted(made.redacted.items()))
    log_path.write_text(message + "\n")
    print(message)
    print(f"check it with: infbench verify {made.path}")

"""Result bundles: results/bundles/{run_id}.tar.gz, and `infbench verify` to check one.

A bundle holds one run's tables, raw records, memory results, specs, locks, model and prompt
metadata, plots, report pages, provenance and logs, under a single folder named after the run id,
with manifest.json listing the sha256 and size of every other member. It never holds model weights,
venvs or earlier bundles. Secrets (see infbench.results.redact) are redacted from every member before its
checksum is taken. The archive is deterministic: sorted members, fixed owner, mode and time, gzip
without a timestamp, so bundling the same results twice gives the same bytes.

verify refuses unsafe members (absolute paths, `..`, links, devices) and archives over the size
limits (ExtractLimits: a decompression bomb must not fill the disk) before it extracts anything,
checks every checksum, and recomputes the tables from the bundle's raw records with the bundle's
own merge plan, whose engine, model and scenario names must be plain names (they become paths: a
crafted name must not make verify read files outside the bundle); it passes only when everything matches.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from infbench.defaults import schema_default
from infbench.fileio import write_bytes_atomic
from infbench.results.redact import Redactor

FORMAT = "infbench-bundle/1"
MANIFEST = "manifest.json"
# What a bundle holds, relative to the workflow directory.
INCLUDE = (
    "results/provenance.json",
    "results/tables",
    "results/raw",
    "results/memory",
    "results/hardware",
    "results/specs",
    "results/envs",
    "results/models",
    "results/prompts",
    "results/plots",
    "results/report",
    "logs",
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
MEMORY_TABLE = "results/tables/memory.md"
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Engine, model and scenario names, as the config schema allows them (env_name): one path component.
PLAIN_NAME_RE = RUN_ID_RE


@dataclass(frozen=True)
class ExtractLimits:
    """What verify extracts at most, checked from the members' headers before anything is written.

    A real run's bundle is far below these (the study's 72 runs of 300 records: ~150 MB unpacked)."""

    total_bytes: int = 8 * 2**30
    file_bytes: int = 4 * 2**30
    members: int = 100_000


class BundleError(RuntimeError):
    pass


class UnsafeArchiveError(BundleError):
    pass


@dataclass
class BundleResult:
    path: Path
    run_id: str
    files: int
    size_bytes: int
    redacted: dict[str, int]  # member -> replacements made
    short_secrets: int  # secrets too short to search for as bare text


@dataclass
class VerifyResult:
    bundle: Path
    run_id: str | None = None
    checked_files: int = 0
    recomputed_tables: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    @classmethod
    def from_provenance(cls, provenance: dict) -> RunScope | None:
        config = provenance.get("config") or {}
        if not config.get("engines") or not config.get("models"):
            return None
        envs = {e.get("env") for e in provenance.get("engines", [])} | {
            config.get("tools_env", schema_default("tools_env"))
        }
        return cls(
            frozenset(config["engines"]),
            frozenset(config["models"]),
            frozenset(e for e in envs if e),
            (config.get("prompts") or {}).get("name", "prompts"),
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
    return name.startswith("results/raw/") and name.endswith(".parquet")


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
    provenance_path = root / "results" / "provenance.json"
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


# --- verify --------------------------------------------------------------------------------------


def check_members(members: list[tarfile.TarInfo]) -> str:
    """Refuse anything that could write outside the extraction folder or is not a plain file.

    Returns the single top-level folder every member sits in (the run id)."""
    tops = set()
    for member in members:
        name = member.name
        path = PurePosixPath(name)
        if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchiveError(f"unsafe member {name!r}: absolute path")
        if ".." in path.parts or "\\" in name:
            raise UnsafeArchiveError(f"unsafe member {name!r}: path leaves the bundle folder")
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"unsafe member {name!r}: link to {member.linkname!r}")
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnsafeArchiveError(f"unsafe member {name!r}: device or fifo")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"unsafe member {name!r}: not a regular file")
        if member.isfile() and len(path.parts) < 2:
            raise UnsafeArchiveError(f"unsafe member {name!r}: outside the bundle's run folder")
        tops.add(path.parts[0])
    if len(tops) != 1:
        raise UnsafeArchiveError(f"a bundle holds one run folder; found {sorted(tops) or 'none'}")
    return tops.pop()


def read_members(tar: tarfile.TarFile, limits: ExtractLimits) -> list[tarfile.TarInfo]:
    """The archive's members, read one header at a time: stops at the first that passes a limit, so
    neither a bomb's bytes nor millions of members are ever read past the limit."""
    members, total = [], 0
    for member in tar:
        if len(members) >= limits.members:
            raise UnsafeArchiveError(f"more than {limits.members} members (a bundle of a real run holds far fewer)")
        if member.issparse():
            raise UnsafeArchiveError(f"unsafe member {member.name!r}: a sparse file")
        if member.size > limits.file_bytes:
            raise UnsafeArchiveError(
                f"member {member.name!r} unpacks to {member.size / 2**30:.1f} GiB, over the limit of "
                f"{limits.file_bytes / 2**30:.1f} GiB per file"
            )
        total += member.size
        if total > limits.total_bytes:
            raise UnsafeArchiveError(
                f"unpacks to more than {limits.total_bytes / 2**30:.1f} GiB (at member {member.name!r}); "
                "if the bundle is genuine, raise the limit with --max-gib"
            )
        members.append(member)
    return members


def check_free_space(members: list[tarfile.TarInfo], folder: Path) -> None:
    """Refuse before extracting when the members would not fit on the scratch disk."""
    needed = sum(m.size for m in members)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise BundleError(f"unpacks to {needed / 2**20:.0f} MiB but {folder} has {free / 2**20:.0f} MiB free")


def plan_name_problems(plan) -> list[str]:
    """Names of the merge plan that are not plain names (letters, digits, . _ -, one path component):
    the merge joins them into paths under results/raw, so `../x` would read files outside the bundle."""
    named = [
        *(("engine", n) for n in plan.engines),
        *(("model", n) for n in plan.models),
        *(("scenario", n) for n in plan.scenarios),
        *(("native engine", n) for n in plan.native_engines),
    ]
    return [
        f"results/tables/merge_plan.json: {what} name {name!r} is not a plain name (letters, digits, . _ -), "
        "so the tables are not recomputed from it"
        for what, name in named
        if not PLAIN_NAME_RE.fullmatch(str(name))
    ]


def _first_difference(expected: bytes, actual: bytes) -> str:
    left, right = expected.decode(errors="replace").splitlines(), actual.decode(errors="replace").splitlines()
    for number, (a, b) in enumerate(zip(left, right, strict=False), start=1):
        if a != b:
            return f"line {number}: archived {b[:120]!r}, recomputed {a[:120]!r}"
    return f"archived {len(right)} lines, recomputed {len(left)}"


def _recompute_tables(folder: Path, result: VerifyResult) -> None:
    from infbench.handoff import MergePlan
    from infbench.results.tables import merge

    tables = folder / "results" / "tables"
    plan_file = tables / "merge_plan.json"
    if not plan_file.exists():
        result.problems.append("results/tables/merge_plan.json: missing, so the tables cannot be recomputed")
        return
    with tempfile.TemporaryDirectory(prefix="infbench-verify-") as scratch:
        out = Path(scratch)
        try:
            plan = MergePlan.from_json(plan_file.read_text())
            unsafe = plan_name_problems(plan)
            if unsafe:
                result.problems.extend(unsafe)
                return
            # From the Parquet copies where usable: _check_parquet_copies proves they hold the JSONL's records.
            merge(folder / "results" / "raw", out, plan)
        except Exception as err:  # a missing or broken raw file: say which, do not crash
            why = str(err).replace(f"{folder}/", "")  # paths as the bundle names them
            result.problems.append(f"results/tables: cannot recompute from results/raw ({type(err).__name__}: {why})")
            return
        for made in sorted(out.iterdir()):
            if made.name == "merge_plan.json":  # the input of the recomputation, not a result of it
                continue
            name = f"results/tables/{made.name}"
            archived = tables / made.name
            if not archived.exists():
                result.problems.append(f"{name}: missing from the bundle")
            elif archived.read_bytes() != made.read_bytes():
                result.problems.append(
                    f"{name}: differs from the table recomputed from results/raw "
                    f"({_first_difference(made.read_bytes(), archived.read_bytes())})"
                )
            result.recomputed_tables.append(name)
        _recompute_memory_table(folder, plan, result)


def _check_parquet_copies(folder: Path, result: VerifyResult) -> None:
    """Each raw JSONL's Parquet copy (what a merge reads for speed) holds the same records."""
    from infbench.measure.recordframe import copy_disagreement

    raw = folder / "results" / "raw"
    for jsonl in sorted(raw.rglob("*.jsonl")) if raw.is_dir() else []:
        why = copy_disagreement(jsonl)
        if why:
            result.problems.append(f"{jsonl.relative_to(folder)}: {why}")


def _recompute_memory_table(folder: Path, plan, result: VerifyResult) -> None:
    """memory.md from the bundle's estimates and measurements, in the order the memory_table rule uses."""
    archived = folder / MEMORY_TABLE
    if not archived.exists():
        return
    from infbench.memory.table import render

    try:
        estimates = [json.loads((folder / "results" / "memory" / f"{m}.json").read_text()) for m in plan.models]
        measured = []
        for engine in plan.engines:
            for model in plan.models:
                meas = json.loads((folder / "results" / "raw" / engine / model / "memory.json").read_text())
                meas.setdefault("model", model)
                meas.setdefault("engine", engine)
                measured.append(meas)
        made = render(estimates, measured).encode()
    except Exception as err:
        result.problems.append(f"{MEMORY_TABLE}: cannot recompute ({type(err).__name__}: {err})")
        return
    if made != archived.read_bytes():
        result.problems.append(
            f"{MEMORY_TABLE}: differs from the table recomputed from results/memory and "
            f"results/raw ({_first_difference(made, archived.read_bytes())})"
        )
    result.recomputed_tables.append(MEMORY_TABLE)


def verify_bundle(bundle: Path, limits: ExtractLimits = ExtractLimits()) -> VerifyResult:
    """Check a bundle; raise UnsafeArchiveError (nothing extracted) or BundleError when unreadable."""
    with opened_bundle(bundle, limits) as (result, _):
        return result


@contextlib.contextmanager
def opened_bundle(bundle: Path, limits: ExtractLimits = ExtractLimits()) -> Iterator[tuple[VerifyResult, Path]]:
    """Extract a bundle to a scratch folder and check it: (the verify result, the run folder), the
    folder removed on leaving. Raises UnsafeArchiveError (nothing extracted) or BundleError."""
    result = VerifyResult(bundle=bundle)
    try:
        tar = tarfile.open(bundle, "r:gz")
    except (OSError, tarfile.TarError) as err:
        raise BundleError(f"{bundle}: not a readable .tar.gz ({err})") from None
    with tar, tempfile.TemporaryDirectory(prefix="infbench-bundle-") as scratch:
        try:
            members = read_members(tar, limits)
        except (OSError, tarfile.TarError, EOFError) as err:
            raise BundleError(f"{bundle}: damaged archive ({err})") from None
        run_folder = check_members(members)  # before anything is written to disk
        check_free_space(members, Path(scratch))
        result.run_id = run_folder
        try:
            try:
                tar.extractall(scratch, members=members, filter="data")
            except TypeError:  # Python before 3.11.4 has no filter; check_members did the checks
                tar.extractall(scratch, members=members)
        except (OSError, tarfile.TarError, EOFError) as err:
            raise BundleError(f"{bundle}: damaged archive ({err})") from None
        folder = Path(scratch) / run_folder
        _check_manifest(folder, run_folder, members, result)
        yield result, folder


def _check_manifest(folder: Path, run_folder: str, members: list[tarfile.TarInfo], result: VerifyResult) -> None:
    """Every member against the manifest's checksums, then check_results (unless the manifest is unreadable)."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        result.problems.append(f"{MANIFEST}: missing, so no checksum can be checked")
        return
    try:
        manifest = json.loads(manifest_file.read_text())
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        result.problems.append(f"{MANIFEST}: unreadable ({err})")
        return
    if manifest.get("format") != FORMAT:
        result.problems.append(f"{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("run_id") != run_folder:
        result.problems.append(f"{MANIFEST}: run id {manifest.get('run_id')!r} is not the folder {run_folder!r}")
    present = {PurePosixPath(m.name).relative_to(run_folder).as_posix() for m in members if m.isfile()}
    for name in sorted(listed):
        path = folder / name
        if name not in present or not path.is_file():
            result.problems.append(f"{name}: missing from the bundle (listed in {MANIFEST})")
            continue
        digest = sha256_bytes(path.read_bytes())
        if digest != listed[name].get("sha256"):
            result.problems.append(f"{name}: checksum mismatch (manifest {listed[name].get('sha256')}, file {digest})")
        result.checked_files += 1
    for name in sorted(present - set(listed) - {MANIFEST}):
        result.problems.append(f"{name}: in the bundle but not in {MANIFEST}")
    check_results(folder, result)


def check_results(folder: Path, result: VerifyResult) -> VerifyResult:
    """What verify checks beyond checksums, on an extracted run folder: the tables recomputed from
    results/raw match the archived ones, and every raw JSONL's Parquet copy holds its records."""
    _recompute_tables(folder, result)
    _check_parquet_copies(folder, result)
    return result


def bundle_for_snakemake(config: dict, log_path: Path) -> None:
    """The `bundle` rule: pack with the resolved config's secrets redacted, and say where it went.

    It takes the config itself (with --config overrides), not config files, and never puts it on a
    command line, where secret values would show in process lists and Snakemake's log.
    """
    made = make_bundle(Path("."), Path("results/bundles"), Redactor.from_sources(config))
    message = f"bundle {made.path}: run {made.run_id}, {made.files} files, {made.size_bytes / 1e6:.2f} MB"
    if made.redacted:
        message += "\nredacted: " + ", ".join(f"{name} ({n})" for name, n in sorted(made.redacted.items()))
    log_path.write_text(message + "\n")
    print(message)
    print(f"check it with: infbench verify {made.path}")

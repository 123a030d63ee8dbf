"""Verifying a bundle: `infbench verify`.

verify refuses unsafe members (absolute paths, `..`, links, devices) and archives over the size
limits (ExtractLimits: a decompression bomb must not fill the disk) before it extracts anything,
checks every checksum, and recomputes the tables from the bundle's raw records with the bundle's
own merge plan, whose engine, model and scenario names must be plain names (they become paths: a
crafted name must not make verify read files outside the bundle); it passes only when everything matches.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from infbench import layout
from infbench.results.bundle import FORMAT, MANIFEST, PLAIN_NAME_RE, BundleError, UnsafeArchiveError, sha256_bytes

MEMORY_TABLE = layout.MEMORY_TABLE


@dataclass(frozen=True)
class ExtractLimits:
    """What verify extracts at most, checked from the members' headers before anything is written.

    A real run's bundle is far below these (the study's 72 runs of 300 records: ~150 MB unpacked)."""

    total_bytes: int = 8 * 2**30
    file_bytes: int = 4 * 2**30
    members: int = 100_000


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
    from infbench.results.bounds import BoundFiles
    from infbench.results.tables import merge

    tables = folder / layout.TABLES
    plan_file = folder / layout.MERGE_PLAN
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
            merge(folder / layout.RAW, out, plan, BoundFiles.under(folder, plan.engines, plan.models))
        except Exception as err:  # a missing or broken raw file: say which, do not crash
            why = str(err).replace(f"{folder}/", "")  # paths as the bundle names them
            result.problems.append(f"results/tables: cannot recompute from results/raw ({type(err).__name__}: {why})")
            return
        for made in sorted(out.iterdir()):
            if made.name == "merge_plan.json":  # the input of the recomputation, not a result of it
                continue
            name = f"{layout.TABLES}/{made.name}"
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

    raw = folder / layout.RAW
    for jsonl in sorted(raw.rglob("*.jsonl")) if raw.is_dir() else []:
        why = copy_disagreement(jsonl)
        if why:
            result.problems.append(f"{jsonl.relative_to(folder)}: {why}")


def _recompute_memory_table(folder: Path, plan, result: VerifyResult) -> None:
    """memory.md from the bundle's estimates and measurements, in the order the memory_table rule uses."""
    archived = folder / MEMORY_TABLE
    if not archived.exists():
        return
    from infbench.memory.table import read_inputs, render

    estimates, measured = layout.memory_table_inputs(plan.engines, plan.models)
    try:
        made = render(*read_inputs([folder / p for p in estimates], [folder / p for p in measured])).encode()
    except Exception as err:
        why = str(err).replace(f"{folder}/", "")  # paths as the bundle names them
        result.problems.append(f"{MEMORY_TABLE}: cannot recompute ({type(err).__name__}: {why})")
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

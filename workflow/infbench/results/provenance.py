"""Provenance of a run, written to results/provenance.json by the `provenance` rule.

What ran (git commit, resolved config with secrets redacted, each engine's lock, version and server
command), on what inputs (model file hashes, the prompt sample's hash), on which machine (CPU, RAM,
GPUs with driver and CUDA through NVML or nvidia-smi), with which software (Python, Snakemake), and
when. The run id names the run's bundle: measurement start, short commit and a hash of the results.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from infbench import __version__
from infbench.fileio import read_jsonl, write_json_atomic
from infbench.handoff import Bandwidth, ModelMeta, PromptsMeta, ServerInfo
from infbench.pipeline.config import engine_label, existing_python, resolve_env
from infbench.results.redact import redact_argv, redact_config, redact_url

SCHEMA = "infbench-provenance/1"

# What each time means; written into provenance.json beside the times themselves.
TIME_MEANINGS = {
    "measurement_started_at": "first measured request sent (earliest send_time in results/raw; warm-up excluded)",
    "measurement_finished_at": "last measured request finished (latest send_time + latency in results/raw)",
    "bench_finished_at": "last bench job wrote its results (latest finished_at of results/raw/*/*/server.json "
    "and results/raw/*/*/repeat-*/server.json)",
    "written_at": "this file was written (the provenance rule ran, after the merge)",
}


@dataclass(frozen=True)
class GitInfo:
    commit: str | None  # None outside a git checkout
    dirty: bool | None  # uncommitted changes to tracked or untracked, not ignored, files
    branch: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    name: str
    kind: str
    label: str
    env: str
    lock_file: str
    lock_sha256: str | None
    lock: list[str]  # the env's pip freeze, one requirement a line
    version: str | None  # the engine package's version, from the lock (as the bench job recorded it)
    server_commands: dict[str, list[str]]  # model -> the exact command line of its server
    # False for an existing interpreter (env: {python: PATH}): the pipeline installed nothing into it.
    env_built_by_pipeline: bool = True
    env_python: str | None = None  # that interpreter
    # model -> the settings that matter for speed (threads, binding, batching, KV cache); an
    # endpoint that was already running says "external endpoint" and its base_url
    server_settings: dict[str, dict] = field(default_factory=dict)
    # model -> where its bench job ran: hostname, slurm_job_id, slurm_node, slurm_partition (server.json)
    bench_nodes: dict[str, dict[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    dtype: str
    size_bytes: int
    files: dict[str, str]  # relative path -> sha256


@dataclass(frozen=True)
class PromptsInfo:
    name: str
    source: str
    count: int
    seed: int
    sha256: str  # of the sample file results/prompts/NAME.jsonl


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class HardwareInfo:
    cpu_model: str
    cpu_cores_logical: int | None
    cpu_cores_physical: int | None
    ram_bytes: int | None
    gpus: list[GpuInfo] = field(default_factory=list)
    gpu_driver: str | None = None
    cuda_version: str | None = None  # the highest CUDA version the driver supports
    gpu_source: str = "none"  # nvml | nvidia-smi | none
    note: str = (
        "the host that ran the provenance rule; in a local run, bench jobs ran on it too; "
        "on a cluster, engines[].bench_nodes says which node and Slurm job ran each bench job"
    )


@dataclass(frozen=True)
class SoftwareInfo:
    python: str
    snakemake: str | None
    infbench: str
    platform: str


@dataclass(frozen=True)
class Times:
    measurement_started_at: str | None
    measurement_finished_at: str | None
    bench_finished_at: str | None
    written_at: str
    meaning: dict[str, str] = field(default_factory=lambda: dict(TIME_MEANINGS))


@dataclass(frozen=True)
class BenchJob:
    """One bench job (one pass of an engine on a model), as its server.json says it ran."""

    engine: str
    model: str
    repeat: int  # 1, or K >= 2: results/raw/E/M/repeat-K (scenarios.NAME.repeats)
    started_at: str | None
    finished_at: str | None
    status: str


@dataclass(frozen=True)
class Provenance:
    run_id: str
    results_sha256: str  # over the tables, raw records and server.json files (paths and contents)
    git: GitInfo
    config: dict[str, Any]  # resolved, validated, defaults filled, secrets redacted
    engines: list[EngineInfo]
    models: list[ModelInfo]
    prompts: list[PromptsInfo]
    hardware: HardwareInfo
    software: SoftwareInfo
    times: Times
    schema: str = SCHEMA
    # This machine's memory bandwidth as measured by the pipeline (infbench memory-bandwidth):
    # the CPU decode bounds in details.md / summary.csv are computed from it.
    memory_bandwidth: dict[str, Any] | None = None
    # Every bench job in the order they started: how the passes of the engines interleaved.
    bench_order: list[BenchJob] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- collectors ---------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], cwd: str | Path | None = None) -> str | None:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_info(repo: str | Path = ".") -> GitInfo:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit is None:
        return GitInfo(commit=None, dirty=None)
    status = _run(["git", "status", "--porcelain"], cwd=repo)
    branch = _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=repo)
    return GitInfo(
        commit=commit.strip(),
        dirty=None if status is None else bool(status.strip()),
        branch=branch.strip() if branch else None,
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out.strip()
    return platform.processor() or platform.machine() or "unknown"


def _gpus_from_nvml() -> tuple[list[GpuInfo], str | None, str | None] | None:
    try:
        import pynvml  # nvidia-ml-py, when installed
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVMLError_LibraryNotFound and friends
        return None
    try:

        def text(value):
            return value.decode() if isinstance(value, bytes) else str(value)

        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040
        return gpus, driver, f"{cuda // 1000}.{cuda % 1000 // 10}"
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _gpus_from_nvidia_smi(nvidia_smi: str = "nvidia-smi") -> tuple[list[GpuInfo], str | None, str | None] | None:
    out = _run([nvidia_smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    if out is None:
        return None
    gpus, driver = [], None
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        index, name, memory_mib, driver = parts[0], parts[1], parts[2], parts[3]
        memory = int(float(memory_mib) * 2**20) if re.fullmatch(r"[\d.]+", memory_mib) else None
        gpus.append(GpuInfo(index=int(index) if index.isdigit() else len(gpus), name=name, memory_total_bytes=memory))
    banner = _run([nvidia_smi]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return gpus, driver, match.group(1) if match else None


def hardware_info(nvidia_smi: str = "nvidia-smi", use_nvml: bool = True) -> HardwareInfo:
    import psutil

    found, source = None, "none"
    if use_nvml and (found := _gpus_from_nvml()) is not None:
        source = "nvml"
    elif (found := _gpus_from_nvidia_smi(nvidia_smi)) is not None:
        source = "nvidia-smi"
    gpus, driver, cuda = found or ([], None, None)
    return HardwareInfo(
        cpu_model=cpu_model(),
        cpu_cores_logical=psutil.cpu_count(logical=True),
        cpu_cores_physical=psutil.cpu_count(logical=False),
        ram_bytes=psutil.virtual_memory().total,
        gpus=gpus,
        gpu_driver=driver,
        cuda_version=cuda,
        gpu_source=source,
    )


def software_info() -> SoftwareInfo:
    try:
        snakemake = metadata.version("snakemake")
    except metadata.PackageNotFoundError:
        snakemake = None
    return SoftwareInfo(
        python=platform.python_version(), snakemake=snakemake, infbench=__version__, platform=platform.platform()
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def measurement_window(record_files: list[Path]) -> tuple[float | None, float | None]:
    starts, ends = [], []
    for path in record_files:
        for row in read_jsonl(path):
            if row.get("send_time") is None:
                continue
            starts.append(row["send_time"])
            if row.get("latency_s") is not None:
                ends.append(row["send_time"] + row["latency_s"])
    return (min(starts) if starts else None), (max(ends) if ends else None)


def results_sha256(files: list[Path]) -> str:
    """One hash over the results' paths and contents, independent of the order they are given in."""
    digest = hashlib.sha256()
    for path in sorted(set(map(Path, files)), key=str):
        digest.update(f"{path.as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def make_run_id(started: float | None, git: GitInfo, results_hash: str) -> str:
    """UTC measurement start, short commit and the results hash: stable for one run's results."""
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%SZ") if started else "unstarted"
    commit = git.commit[:7] if git.commit else "nogit"
    return f"{stamp}-{commit}-{results_hash[:8]}"


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def collect(
    config: Mapping[str, Any],
    *,
    tables: list[Path],
    locks: list[Path],
    model_metas: list[Path],
    prompt_metas: list[Path],
    servers: list[Path],
    records: list[Path],
    repo: str | Path = ".",
    hardware: HardwareInfo | None = None,
    now: datetime | None = None,
    bandwidth: Path | None = None,
    repeat_dirs: list[Path] = (),
) -> Provenance:
    servers_by_engine: dict[str, dict[str, dict]] = {}
    jobs = []
    for path in servers:
        server = _read_json(path)
        ServerInfo.from_dict(server, str(path))  # checked; kept whole, with any fields newer writers added
        engine = server.get("engine") or Path(path).parent.parent.name
        model = server.get("model") or Path(path).parent.name
        servers_by_engine.setdefault(engine, {})[model] = server
        jobs.append(_bench_job(server, engine, model))
    records = list(records)
    for folder in map(Path, repeat_dirs):  # passes 2 and up: their records and jobs; commands as pass 1's
        path = folder / "server.json"
        if path.exists():
            server = _read_json(path)
            ServerInfo.from_dict(server, str(path))
            jobs.append(_bench_job(server, folder.parent.parent.name, folder.parent.name))
            servers = [*servers, path]
        records += sorted(folder.glob("*.jsonl"))
    locks_by_env = {Path(p).stem: Path(p) for p in locks}

    engines = []
    for name, engine in config["engines"].items():
        env = resolve_env(engine, config["device"], name) or ""  # "": an openai engine without an env
        lock = locks_by_env.get(env)
        runs = servers_by_engine.get(name, {})
        versions = sorted({s["version"] for s in runs.values() if s.get("version")})
        engines.append(
            EngineInfo(
                name=name,
                kind=engine["kind"],
                label=engine_label(dict(config), name),
                env=env,
                lock_file=str(lock) if lock else f"results/envs/{env}.lock",
                lock_sha256=sha256_file(lock) if lock and lock.exists() else None,
                lock=lock.read_text().splitlines() if lock and lock.exists() else [],
                version=", ".join(versions) or None,
                server_commands={model: redact_argv(s.get("command", [])) for model, s in sorted(runs.items())},
                env_built_by_pipeline=existing_python(engine) is None,
                env_python=existing_python(engine),
                server_settings={
                    model: {
                        **s.get("settings", {}),
                        **({"base_url": redact_url(s["base_url"])} if s.get("external") else {}),
                    }
                    for model, s in sorted(runs.items())
                },
                bench_nodes={model: s["node"] for model, s in sorted(runs.items()) if s.get("node")},
            )
        )

    models = []
    for path in model_metas:
        meta = ModelMeta.read(path)
        models.append(
            ModelInfo(
                name=meta.name, source=meta.source, dtype=meta.dtype, size_bytes=meta.size_bytes, files=meta.files
            )
        )

    prompts = []
    for path in prompt_metas:
        meta = PromptsMeta.read(path)
        prompts.append(
            PromptsInfo(
                name=Path(path).name.removesuffix(".meta.json"),
                source=meta.source,
                count=meta.count,
                seed=meta.seed,
                sha256=meta.sha256,
            )
        )

    git = git_info(repo)
    started, finished = measurement_window([Path(p) for p in records])
    finished_at = sorted(job.finished_at for job in jobs if job.finished_at)
    content = results_sha256([*map(Path, tables), *map(Path, records), *map(Path, servers)])
    now = now or datetime.now(timezone.utc)
    return Provenance(
        run_id=make_run_id(started, git, content),
        results_sha256=content,
        git=git,
        config=redact_config(config),
        engines=engines,
        models=models,
        prompts=prompts,
        hardware=hardware or hardware_info(),
        software=software_info(),
        times=Times(
            measurement_started_at=_iso(started),
            measurement_finished_at=_iso(finished),
            bench_finished_at=finished_at[-1] if finished_at else None,
            written_at=now.isoformat(timespec="seconds"),
        ),
        memory_bandwidth=Bandwidth.read(bandwidth).to_dict() if bandwidth else None,
        bench_order=sorted(jobs, key=lambda job: (job.started_at or "", job.finished_at or "")),
    )


def _bench_job(server: dict, engine: str, model: str) -> BenchJob:
    return BenchJob(
        engine=server.get("engine") or engine,
        model=server.get("model") or model,
        repeat=server.get("repeat", 1),
        started_at=server.get("started_at"),
        finished_at=server.get("finished_at"),
        status=server.get("status", "ok"),
    )


def write_provenance(path: str | Path, provenance: Provenance) -> None:
    write_json_atomic(path, provenance.to_dict())


def read_provenance(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an infbench provenance file (schema {data.get('schema')!r}, want {SCHEMA})")
    return data

"""One bench job: lease GPUs, start the engine's server, warm up, run every scenario, always stop.

Writes results/raw/{engine}/{model}/{scenario}.jsonl (one record per request), server.json (the
exact command line, version, start-up time, when the job started and ended) and memory.json (what
the server used). Repeat K >= 2 of a scenario (scenarios.NAME.repeats) is its own job, with its own
server, writing results/raw/{engine}/{model}/repeat-K/ (the scenarios repeated that often; no extra
runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infbench import layout
from infbench.engines.base import Engine, ExtraRunContext, ServerPlan, engine_for
from infbench.engines.endpoints import endpoint_urls
from infbench.engines.gpus import GpuLease, this_node, visible_gpu_ids
from infbench.engines.metricmaps import METRIC_MAPS, metric_map
from infbench.engines.server import ManagedServer, PortClashError, ServerError, log_tail
from infbench.engines.spec import EngineSpec, ModelSpec
from infbench.fileio import check_writable
from infbench.handoff import FailureMarker, MemoryReport, ServerInfo, now_iso
from infbench.layout import RunFolder, repeat_failure_marker, repeat_of
from infbench.measure.busy import LoadWatch
from infbench.measure.client import RequestSettings, RunContext
from infbench.measure.memwatch import MemoryWatcher
from infbench.measure.reconcile import ClientCounts, reconcile
from infbench.measure.recordfiles import write_records
from infbench.measure.recordmath import tokens_per_second
from infbench.measure.records import RequestRecord
from infbench.measure.runners import run_single
from infbench.measure.scenarios import RunHooks, Scenario, warmup_requests
from infbench.measure.scrape import ScenarioWatch
from infbench.pipeline.prompts import read_sample
from infbench.procutil import exit_when_parent_dies, free_port

log = logging.getLogger("infbench.jobs.bench")

THREAD_COUNT_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@dataclass(frozen=True)
class BenchPaths:
    engine_spec: Path
    model_spec: Path
    prompts: Path
    venv: Path
    lock: Path  # the engine env's pip freeze, for its version
    out_dir: Path  # results/raw/{engine}/{model}
    server_log: Path
    threads: int = 1  # the bench job's CPU threads: engines that take a thread count get this
    repeat: int = 1  # which pass: 1 writes results/raw/E/M, K >= 2 results/raw/E/M/repeat-K
    scenarios: tuple[str, ...] | None = None  # the scenarios this pass runs (None: all)
    requests_dir: Path | None = None  # results/requests/{model}: prepared scenarios' request files


def _terminate_on_sigterm() -> None:
    """Snakemake stops jobs with SIGTERM: turn it into an exception so `finally` stops the server."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def version_from_lock(lock: Path, package: str) -> str | None:
    if not lock.exists():
        return None
    for line in lock.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower().replace("_", "-") == package:
            return version.strip()
    return None


class BenchFailure(RuntimeError):
    """The engine could not be measured (server did not start, died, failed its warm-up, a secret
    was missing): recorded in server.json as status "failed", shown in the tables, repeated next run."""


class ServerDied(BenchFailure):
    pass


PORT_TRIES = 3  # free_port() can lose the port to another process before the engine binds it


def failure_marker(out_dir: Path) -> Path:
    """results/failures/{engine}/{model}.json for results/raw/{engine}/{model} (and
    results/failures/{engine}/{model}/repeat-K.json for its repeat K): written when a bench job
    fails; the bench rule takes it as an input when present, so its newer time makes the next run
    repeat exactly that job."""
    repeat = repeat_of(out_dir)
    if repeat:
        run = RunFolder.of(out_dir.parent)
        return run.root / repeat_failure_marker(run.engine, run.model, repeat)
    return layout.failure_marker_of(out_dir)


def pass_scenarios(engine: EngineSpec, paths: BenchPaths) -> list[Scenario]:
    """The scenarios this pass runs. The server is planned from all of the engine's scenarios (its
    cache settings depend on them), so every pass of a scenario runs on the same server setup."""
    if paths.scenarios is None:
        return list(engine.scenarios)
    unknown = sorted(set(paths.scenarios) - {s.name for s in engine.scenarios})
    if unknown:
        raise ValueError(f"bench --scenarios: {', '.join(unknown)} not in {paths.engine_spec}")
    return [s for s in engine.scenarios if s.name in paths.scenarios]


def extra_runs(plugin: Engine, paths: BenchPaths) -> tuple[str, ...]:
    """The runs only this kind measures (TGI: its native route): in the first pass only."""
    return tuple(plugin.extra_runs) if paths.repeat == 1 else ()


def run_bench_pass(paths: BenchPaths) -> None:
    """run_bench, then its server.json stamped with the pass (repeat) and when the job started: the
    provenance lists the bench jobs in the order they ran (interleaved engines, docs/compare.md)."""
    started_at = now_iso()
    try:
        run_bench(paths)
    finally:
        server_file = paths.out_dir / layout.SERVER_INFO
        if server_file.exists():
            info = ServerInfo.read(server_file)
            replace(info, repeat=paths.repeat, started_at=started_at).write(server_file)


def run_bench(paths: BenchPaths) -> None:
    _terminate_on_sigterm()
    # Every folder this job writes, checked before anything starts: not after a scenario ran.
    check_writable([paths.out_dir, paths.server_log.parent, failure_marker(paths.out_dir).parent])
    watched = exit_when_parent_dies()
    if watched:
        log.info("stops when its parent (pid %d) ends", watched)
    model = ModelSpec.read(paths.model_spec)
    engine = forced_output_length(EngineSpec.read(paths.engine_spec), model)
    pass_scenarios(engine, paths)  # an unknown name is refused before any server starts
    prompts = read_sample(paths.prompts)
    plugin = engine_for(engine.kind)
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    node = this_node()
    log.info("node %s, Slurm job %s", node.hostname, node.slurm_job_id or "none (not under Slurm)")
    reason = plugin.unavailable_reason(engine, model)
    if reason:
        _write_skipped(paths, engine, model, reason)
        return
    try:
        base_url = plugin.external_endpoint(engine)
        if base_url:
            run_external(paths, engine, model, prompts, plugin.plan(engine, model, paths.venv, "", 0), base_url)
            return
        _measure(paths, engine, model, prompts, plugin)
    except (ServerError, BenchFailure) as err:
        _write_failed(paths, engine, model, err)
        raise


@dataclass(frozen=True)
class _Job:
    """One bench job's inputs, once its GPUs are leased: what every step below reads."""

    paths: BenchPaths
    engine: EngineSpec
    model: ModelSpec
    prompts: list
    plugin: Engine
    gpu_ids: list[str]


@dataclass(frozen=True)
class _Running:
    """The job's server, healthy: its plan, where it listens, how long it took to start."""

    server: ManagedServer
    plan: ServerPlan
    env: dict[str, str]
    host: str
    port: int
    startup_s: float

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def chat_url(self) -> str:
        return f"{self.root}/v1/chat/completions"


def _measure(paths: BenchPaths, engine: EngineSpec, model: ModelSpec, prompts, plugin: Engine) -> None:
    """Start the server, warm it up, measure every scenario and extra run, then write memory.json,
    server.json and (when the server died) the failure marker."""
    with GpuLease(count=model.gpus, candidates=visible_gpu_ids(engine.gpu_ids) if model.gpus else []) as lease:
        log.info("engine %s, model %s, GPUs %s", engine.name, model.name, lease.ids or "none (CPU)")
        job = _Job(paths, engine, model, prompts, plugin, lease.ids)
        running = _start_server(job, lease.env())
        with running.server:  # started above; leaving this block always stops it
            log.info("server healthy after %.1f s", running.startup_s)
            watcher = _watch_memory(job, running)
            try:
                settings = _request_settings(engine, running.plan)
                _warm_up(running.chat_url, prompts, settings, engine, model, running.server)
                loads, died = _measure_scenarios(job, running, settings)
                _measure_extra_runs(job, running, died)
                version = None if died else _server_version(running.root, running.plan)
                version = version or version_from_lock(paths.lock, plugin.package)
            finally:
                memory = watcher.stop()
        plugin.after_stop(engine, paths.server_log, memory)  # what the server left behind (vLLM: its log)
        _write_measured(job, running, memory, loads, died, version)


def _start_server(job: _Job, lease_env: dict[str, str]) -> _Running:
    """The server on a free port, healthy; another port when one is taken before the engine binds it."""
    engine, host = job.engine, job.engine.bench.host
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port(host)
        plan = job.plugin.plan(engine, job.model, job.paths.venv, host, port, job.gpu_ids, threads=job.paths.threads)
        env = _server_env(engine, job.paths.venv, lease_env, plan.env)
        log.info("server command: %s", " ".join(plan.command))
        server = ManagedServer(
            command=plan.command,
            log_path=job.paths.server_log,
            health_url=f"http://{host}:{port}{plan.health_path}",
            env=env,
            startup_timeout_s=engine.startup_timeout_s,
            port=port if plan.owns_port else None,  # a container's proxy is not our child
        )
        server.start()
        try:
            return _Running(server, plan, env, host, port, server.wait_healthy())
        except PortClashError as err:
            server.stop()
            if attempt == PORT_TRIES:
                raise
            log.warning("%s; retrying on another port (%d of %d)", err, attempt + 1, PORT_TRIES)
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _watch_memory(job: _Job, running: _Running) -> MemoryWatcher:
    """The server's memory sampled from now on (idle first) into its MemoryReport."""
    engine = job.engine
    memory = MemoryReport(
        engine=engine.name,
        model=job.model.name,
        device=engine.device,
        kind=engine.kind,
        interval_s=engine.bench.memory_sample_interval_s,
        kv_cache_bytes=job.plugin.kv_pool_bytes(engine, running.env),
    )
    watcher = MemoryWatcher(running.server.process.pid, memory, job.gpu_ids)
    watcher.mark_idle()
    watcher.start()
    return watcher


def _measure_scenarios(job: _Job, running: _Running, settings: RequestSettings) -> tuple[dict[str, dict], str | None]:
    """Each scenario of this pass in turn, its records written as it ends: what others used of the
    machine meanwhile per scenario, and why the server died (None while it lives). Once it has died,
    each remaining scenario gets an empty file, so no stale record survives."""
    loads: dict[str, dict] = {}
    died: str | None = None
    for scenario in pass_scenarios(job.engine, job.paths):
        if died:
            write_records(layout.records_in(job.paths.out_dir, scenario.name), [])
            continue
        loads[scenario.name] = _measure_scenario(job, running, settings, scenario)
        code = running.server.process.poll()
        if code is not None:
            died = f"server exited with code {code} during scenario {scenario.name}"
            log.error("%s (last lines of %s:\n%s)", died, job.paths.server_log, log_tail(job.paths.server_log, 10))
    return loads, died


def _measure_scenario(job: _Job, running: _Running, settings: RequestSettings, scenario: Scenario) -> dict:
    """One scenario under a load watch and the server's own metrics; its records written. Returns
    what others used of the machine meanwhile (busy.MachineLoad.to_dict())."""
    engine, model, paths = job.engine, job.model, job.paths
    watch = LoadWatch(
        engine.bench.busy_cpu_limit,
        gpu_ids=job.gpu_ids,
        core_limit=engine.bench.busy_core_limit,
        container_ids=_container_ids(running.plan),  # a container's processes are this job's own
    )
    watch.start()
    view = server_view(engine, model, scenario.name, paths.out_dir, running.root, running.plan, gpu_ids=job.gpu_ids)
    view.begin()  # the engine's own metrics and energy, just before the first request

    def plan_for(spec: EngineSpec) -> ServerPlan:
        return job.plugin.plan(spec, model, paths.venv, running.host, running.port, job.gpu_ids, threads=paths.threads)

    ready, ready_settings = prepared_scenario(scenario, settings, paths.requests_dir, engine, plan_for)
    records = _run_scenario(running.chat_url, job.prompts, ready, ready_settings, engine, model, view)
    end_server_view(view, records, scenario.records_every_send)
    load = watch.stop(scenario.name)
    if load.busy:
        log.warning("%s: the machine was busy: %s; see details.md", scenario.name, load.summary())
    write_records(layout.records_in(paths.out_dir, scenario.name), records)
    return load.to_dict()


def _measure_extra_runs(job: _Job, running: _Running, died: str | None) -> None:
    """Runs only this kind measures (TGI: its native route); empty files when the server died."""
    runs = extra_runs(job.plugin, job.paths)
    if died:  # as for the scenarios: empty files, so no stale record survives
        for run in runs:
            write_records(layout.records_in(job.paths.out_dir, run), [])
    elif runs:
        context = ExtraRunContext(running.root, job.engine, job.model, job.paths.venv, job.prompts, job.paths.out_dir)
        job.plugin.measure_extra(context)


def _write_measured(
    job: _Job, running: _Running, memory: MemoryReport, loads: dict[str, dict], died: str | None, version: str | None
) -> None:
    """memory.json and server.json of a job that measured; when its server died, the failure marker
    too (the next run repeats the job) and ServerDied."""
    engine, plan = job.engine, running.plan
    memory.write(job.paths.out_dir / layout.MEMORY_REPORT)
    _server_info(
        engine,
        job.model,
        gpu_ids=list(job.gpu_ids),
        command=plan.command,
        version=version,
        startup_s=round(running.startup_s, 3),
        fixed_length_control=plan.fixed_length_control,
        notes=plan.notes,
        settings=plan.settings,
        server_env=_shown_env(plan.env),
        cache=job.plugin.cache_plan(engine).to_dict(),
        status="failed" if died else "ok",
        reason=died,
        machine_load=loads,
    ).write(job.paths.out_dir / layout.SERVER_INFO)
    if died:
        FailureMarker(died).write(failure_marker(job.paths.out_dir))
        raise ServerDied(died)


def _write_failed(paths: BenchPaths, engine: EngineSpec, model: ModelSpec, err: Exception) -> None:
    """A bench job that could not measure: every output says so (no stale record from an earlier
    run survives), the tables show it, and the failure marker makes the next run repeat this job."""
    if isinstance(err, ServerDied):
        return  # _measure wrote what was measured before the server died
    reason = str(err).splitlines()[0].split("; last lines of")[0]  # the log's tail stays in the log
    log.error("%s on %s failed: %s", engine.name, model.name, reason)
    _write_unmeasured(paths, engine, model, "failed", reason)
    FailureMarker(reason).write(failure_marker(paths.out_dir))


def _container_ids(plan: ServerPlan) -> list[str]:
    """The id of the container the server runs in (docker --cidfile), once docker has written it."""
    if not plan.container_id_file:
        return []
    try:
        return [Path(plan.container_id_file).read_text().strip()]
    except OSError:
        return []


def _shown_env(env: dict[str, str]) -> dict[str, str]:
    """The variables the engine's plug-in set for the engine's best setup, as server.json records them."""
    return {key: value for key, value in sorted(env.items())}


def run_external(
    paths: BenchPaths, engine: EngineSpec, model: ModelSpec, prompts, plan: ServerPlan, base_url: str
) -> None:
    """An endpoint already running (base_url): not started, not leased, its memory not measured.
    Its key is read from the variable api_key_env names, here only, and sent as a bearer token."""
    urls = endpoint_urls(base_url, plan.health_path, plan.metrics_url)  # with or without /v1
    base = urls.root
    api_key = os.environ.get(plan.api_key_env) if plan.api_key_env else None
    if plan.api_key_env and not api_key:
        raise ServerError(f"engine {engine.name}: environment variable {plan.api_key_env} (api_key_env) is not set")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(urls.ready, headers=headers, timeout=30, trust_env=False)
    except httpx.HTTPError as err:
        raise ServerError(f"engine {engine.name}: external endpoint {base} unreachable: {type(err).__name__}") from None
    if reply.status_code != 200:
        raise ServerError(
            f"engine {engine.name}: {urls.ready} answered {reply.status_code} (readiness: "
            + (f"health_path {plan.health_path})" if plan.health_path else "GET {base_url}/models; set health_path)")
        )
    log.info("engine %s, model %s: external endpoint %s", engine.name, model.name, urls.api_base)
    settings = _request_settings(engine, plan, api_key)
    _warm_up(urls.chat, prompts, settings, engine, model)
    for scenario in pass_scenarios(engine, paths):
        view = server_view(engine, model, scenario.name, paths.out_dir, base, plan, urls.metrics, headers)
        view.begin()
        plan_for = lambda spec: engine_for(engine.kind).plan(spec, model, paths.venv, "", 0)  # noqa: E731
        ready, ready_settings = prepared_scenario(scenario, settings, paths.requests_dir, engine, plan_for)
        records = _run_scenario(urls.chat, prompts, ready, ready_settings, engine, model, view)
        end_server_view(view, records, scenario.records_every_send)
        write_records(layout.records_in(paths.out_dir, scenario.name), records)
    version = _server_version(base, plan)
    MemoryReport(
        engine=engine.name,
        model=model.name,
        device=engine.device,
        kind=engine.kind,
        status="skipped",
        reason="external endpoint: memory not measured",
        # Its machine's bandwidth, when the config gives it: the decode bound's (results/bounds.py).
        bandwidth_bytes_s=_given_bandwidth(engine),
    ).write(paths.out_dir / layout.MEMORY_REPORT)
    _server_info(
        engine,
        model,
        version=version,
        fixed_length_control=plan.fixed_length_control,
        notes=plan.notes,
        settings=plan.settings,
        cache=engine_for(engine.kind).cache_plan(engine).to_dict(),
        external=True,
        base_url=base,
    ).write(paths.out_dir / layout.SERVER_INFO)


def server_view(
    engine: EngineSpec,
    model: ModelSpec,
    scenario: str,
    out_dir: Path,
    root: str,
    plan: ServerPlan,
    metrics_url: str | None = None,
    headers: dict | None = None,
    gpu_ids: list[str] = (),
) -> ScenarioWatch:
    """What reads the engine's own metrics (and the energy counters) around one scenario, into
    out_dir/metrics/. An engine without an endpoint, or with server_metrics off, says why; energy is
    read from the leased GPUs (NVML), or the CPU packages (RAPL) when there are none."""
    mapping = metric_map(engine.kind)
    path = plan.metrics_url or (mapping.path if mapping else None)
    url = metrics_url or (path if path and "://" in path else f"{root}{path}" if path else None)
    reason = None
    if not engine.bench.server_metrics:
        url, reason = None, "n/a: server metrics not read (bench.server_metrics: false)"
    elif url is None:
        settable = hasattr(engine.settings, "metrics_url")  # a kind whose metrics endpoint is configured
        reason = "n/a: no metrics endpoint" + (" (set metrics_url)" if settable else "")
    return ScenarioWatch(
        engine.name,
        model.name,
        scenario,
        out_dir / "metrics",
        url,
        mapping,
        gpu_ids=list(gpu_ids),
        no_endpoint_reason=reason,
        headers=headers,
        candidates=tuple(METRIC_MAPS.values()),
    )


def end_server_view(view: ScenarioWatch, records: list[RequestRecord], records_every_send: bool = True) -> None:
    """Right after the scenario's last request: the after-scrape, the deltas and the energy; a count
    that differs from the server's in an error-free scenario is logged (the tables mark it)."""
    server = view.end(sum(r.completion_tokens or 0 for r in records if r.ok))
    check = reconcile(ClientCounts.of(records, unrecorded_sends=not records_every_send), server)
    if check.mismatch:
        log.warning("%s: the server counted otherwise: %s", view.scenario, "; ".join(check.lines()))
    elif check.judged:
        log.info("%s: client and server counts match", view.scenario)


def forced_output_length(engine: EngineSpec, model: ModelSpec) -> EngineSpec:
    """Random weights never stop at EOS meaningfully: their runs always generate max_tokens."""
    if model.weights != "random" or engine.sampling.output_length == "fixed":
        return engine
    log.info(
        "model %s has random weights: output_length forced to fixed (%d tokens)", model.name, engine.sampling.max_tokens
    )
    return replace(engine, sampling=replace(engine.sampling, output_length="fixed"))


def _write_skipped(paths: BenchPaths, engine: EngineSpec, model: ModelSpec, reason: str) -> None:
    """An engine that cannot run here: empty records and a server.json that says why (the table cell
    shows it); the run goes on and the other engines' results stand."""
    log.warning("%s skipped on %s: %s", engine.name, model.name, reason)
    _write_unmeasured(paths, engine, model, "skipped", reason)


def _write_unmeasured(paths: BenchPaths, engine: EngineSpec, model: ModelSpec, status: str, reason: str) -> None:
    """Empty records for every scenario, and memory.json and server.json with the status and reason."""
    for scenario in pass_scenarios(engine, paths):
        write_records(layout.records_in(paths.out_dir, scenario.name), [])
    for run in extra_runs(engine_for(engine.kind), paths):
        write_records(layout.records_in(paths.out_dir, run), [])
    MemoryReport(
        engine=engine.name, model=model.name, device=engine.device, kind=engine.kind, status=status, reason=reason
    ).write(paths.out_dir / layout.MEMORY_REPORT)
    _server_info(engine, model, status=status, reason=reason).write(paths.out_dir / layout.SERVER_INFO)


def _server_info(engine: EngineSpec, model: ModelSpec, **run) -> ServerInfo:
    """server.json: the engine and model it ran, plus what this run adds (command, version, ...)."""
    return ServerInfo(
        engine=engine.name,
        kind=engine.kind,
        label=engine.label,
        model=model.name,
        device=engine.device,
        sampling=vars(engine.sampling),
        weights=model.weights,
        node=asdict(this_node()),
        **run,
    )


def _server_version(base_url: str, plan: ServerPlan) -> str | None:
    """The running server's own word (vLLM /version, TGI /info), else None (the lock is used)."""
    if not plan.version_path:
        return None
    try:
        reply = httpx.get(base_url + plan.version_path, timeout=10, trust_env=False)
        return str(reply.json().get("version")) if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _server_env(
    engine: EngineSpec, venv: Path, gpu_env: dict[str, str], plan_env: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            # Models are prepared beforehand: a server must never reach out to a hub mid-benchmark.
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("PYTHONPATH", None)  # the server runs in its own venv, not on the harness's path
    # Snakemake sets these to the job's threads; an engine picks its own threading (vLLM-CPU keeps a
    # core for its front end: forced to 2 OpenMP threads on 2 cores its decode is ~50x slower).
    # Set them in the engine's server_env to choose.
    for name in THREAD_COUNT_VARIABLES:
        env.pop(name, None)
    env.update(gpu_env)
    env.update(plan_env or {})  # the engine's documented setup (binding, preloads); server_env overrides it
    env.update(engine.server_env)
    for name, source in engine.server_env_from.items():  # secrets: resolved here, at server start, only
        if source not in os.environ:
            raise BenchFailure(
                f"engines.{engine.name}.server_env.{name}: environment variable {source} is not set; "
                f"export it before running snakemake"
            )
        env[name] = os.environ[source]
    return env


def _given_bandwidth(engine: EngineSpec) -> float | None:
    """An external endpoint's memory bandwidth, when its config gives it (bytes/s): its decode bound."""
    given = getattr(engine.settings, "bandwidth_gb_s", None)
    return given * 1e9 if given else None


def _request_settings(engine: EngineSpec, plan: ServerPlan, api_key: str | None = None) -> RequestSettings:
    s = engine.sampling
    extra = {"api_key": api_key} if api_key else {}
    plugin = engine_for(engine.kind)
    cache = plugin.cache_plan(engine)
    return RequestSettings(
        **extra,
        model_name=plan.model_name,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        output_length=s.output_length,
        extra_body=plan.extra_body,
        timeout_s=engine.bench.request_timeout_s,
        client_lag_share_limit=engine.bench.client_lag_share,
        continuous_usage=plan.continuous_usage,
        # every sampling field in the engine's own spelling, and how a cold request asks it to stay cold
        sampling_fields=plugin.request_fields(engine),
        cold_fields=cache.cold_fields,
        cold_salt_field=cache.cold_salt_field,
        cached_tokens_absent_is_zero=cache.cached_tokens_absent_is_zero,
    )


def prepared_scenario(
    scenario: Scenario,
    settings: RequestSettings,
    requests_dir: Path | None,
    engine: EngineSpec,
    plan_for: Callable[[EngineSpec], ServerPlan],
) -> tuple[Scenario, RequestSettings]:
    """A prepared kind reads its request file (results/requests/{model}/{scenario}.json). A fixed-length
    kind's requests carry their own output lengths: each is sent as output_length fixed, with the
    engine's own fields for its length (the engine's plan at that max_tokens)."""
    if not scenario.prepares:
        return scenario, settings
    if requests_dir is None:
        raise BenchFailure(f"scenario {scenario.name}: its requests are prepared, but no --requests-dir was given")
    scenario = replace(scenario, requests_file=str(requests_dir / f"{scenario.name}.json"))
    if not scenario.fixed_lengths:
        return scenario, settings
    fixed = replace(engine, sampling=replace(engine.sampling, output_length="fixed"))
    bodies = {
        n: plan_for(replace(fixed, sampling=replace(fixed.sampling, max_tokens=n))).extra_body
        for n in sorted(scenario.output_lengths())
    }
    return scenario, replace(settings, output_length="fixed", extra_body_by_max_tokens=bodies)


def _warm_up(url, prompts, settings, engine: EngineSpec, model: ModelSpec, server: ManagedServer | None = None) -> None:
    count = engine.bench.warmup_requests
    if count == 0:
        return
    requests = warmup_requests(count)  # never the measured prompts: they would be served from a cache
    ctx = RunContext(engine=engine.name, model=model.name, scenario="warmup", concurrency=1, cache="cold")
    records = asyncio.run(run_single(url, requests, settings, ctx))
    failed = [r for r in records if not r.ok]
    if failed:
        code = server.process.poll() if server and server.process else None
        died = f" (the server exited with code {code})" if code is not None else ""
        raise BenchFailure(f"warm-up request failed, so the server cannot be measured{died}: {failed[0].error}")
    log.info("warm-up: %d request(s) done", len(records))


def _run_scenario(
    url, prompts, scenario: Scenario, settings, engine: EngineSpec, model: ModelSpec, view: ScenarioWatch | None = None
) -> list[RequestRecord]:
    ctx = scenario.run_context(engine.name, model.name)

    said_blind = False

    def between_steps(timeout_s: float) -> float | None:
        """A rate search's next step waits for the engine to finish the last one's requests."""
        nonlocal said_blind
        waited = view.wait_idle(timeout_s) if view else None
        if waited is None and not said_blind:
            said_blind = True
            log.info("%s: steps start without waiting: the engine has no running/waiting gauge to ask", scenario.name)
        elif waited is not None and waited >= 0.5:
            log.info("%s: next step after %.1f s, once the engine had no request left", scenario.name, waited)
        return waited

    tokens = 0
    started = time.monotonic()
    with Progress(
        TextColumn(f"[bold]{engine.name}/{model.name}[/] {scenario.name} ({scenario.load_label})"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("requests", total=scenario.progress_total(prompts), rate="")

        def on_done(record: RequestRecord) -> None:
            nonlocal tokens
            tokens += record.completion_tokens or 0 if record.ok else 0
            speed = tokens_per_second(record)
            aggregate = tokens / max(time.monotonic() - started, 1e-9)
            rate = f"{aggregate:.1f} tok/s" + (f" (last {speed:.1f})" if speed else " (last failed)")
            progress.update(task, advance=1, rate=rate)

        records = scenario.run(url, prompts, settings, ctx, RunHooks(on_done, between_steps))
    errors = sum(not r.ok for r in records)
    log.info("%s: %d requests, %d failed, %.1f s", scenario.name, len(records), errors, time.monotonic() - started)
    if errors:
        log.warning("%s: first error: %s", scenario.name, next(r.error for r in records if not r.ok))
    try:  # the merge flags client lag too; a box without polars (gpu_check.sh) skips this early word
        from infbench.measure.metrics import summarize
    except ImportError:
        return records
    lag = summarize(records, engine.name, model.name, scenario.name)
    if lag.client_lag_flag:
        log.warning(
            "%s: the client's own lag could move latency-based figures by up to %.1f%% (TTFT %.1f%%; limit "
            "%.1f%%; dispatch p99 %s ms, read p99 %s ms); see details.md",
            scenario.name,
            (lag.client_lag_share or 0) * 100,
            (lag.client_lag_ttft_share or 0) * 100,
            (lag.client_lag_share_limit or 0) * 100,
            _ms(lag.dispatch_lag_p99_s),
            _ms(lag.read_lag_p99_s),
        )
    return records


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f}"

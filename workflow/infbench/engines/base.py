"""Engine kinds as plug-ins: the base class every kind subclasses, its settings, and the registry.

One module per kind under engines/kinds/ (transformers, vllm, tgi, llamacpp, openai, sglang), each a
subclass of Engine registered by kind with @register, the way scenario kinds are. A kind owns its
config keys (its Settings dataclass) and their checks, its column label, the server it starts and
how requests must look (plan), what its environment must import, and hooks for what only some kinds
do; the rules, the config and the bench job ask the class and never name a kind.

Adding a kind: docs/engines.md, "Adding an engine".
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from infbench.engines import sampling as contract
from infbench.engines.cache import CachePlan, openai_plan
from infbench.handoff import HandoffRecord
from infbench.memory.cpu_runtime import CpuRuntime

if TYPE_CHECKING:
    from infbench.engines.spec import EngineSpec, ModelSpec
    from infbench.handoff import MemoryReport

# Config keys every kind has (engines.NAME.*); a kind's own keys are the fields of its Settings.
COMMON_CONFIG_KEYS = ("kind", "env", "label", "args", "server_env", "startup_timeout_s")


class EngineConfigError(ValueError):
    """A kind's own check of its config keys failed; the message names the key (engines.NAME.KEY)."""


@dataclass(frozen=True)
class EngineSettings(HandoffRecord):
    """A kind's own config keys, with their defaults: subclassed by each kind (a kind without keys
    of its own uses this one). Stored under `settings` in the engine's spec file."""


@dataclass(frozen=True)
class ServerPlan:
    command: list[str]
    health_path: str
    model_name: str  # the "model" field the OpenAI route expects
    extra_body: dict  # engine-specific request fields (sampling controls)
    version_path: str | None = None  # a route that reports the server's version, if any
    # How the engine meets output_length "fixed"; None when it has no control (results are flagged).
    fixed_length_control: str | None = None
    # Cumulative usage in every chunk (vLLM's continuous_usage_stats): exact tokens per chunk, so
    # inter-token latency is per token even when a chunk carries several.
    continuous_usage: bool = False
    notes: list[str] = field(default_factory=list)
    # Environment variables the engine's documented best setup needs (thread binding, preloads);
    # the engine's server_env still overrides them.
    env: dict[str, str] = field(default_factory=dict)
    # The settings that matter for speed, listed under the tables beside the command.
    settings: dict[str, str] = field(default_factory=dict)
    # An endpoint that is already running: nothing is started, leased or measured for memory.
    external: bool = False
    api_key_env: str | None = None  # the variable that holds its key (never written anywhere)
    # The server's Prometheus metrics: a path on the server's root or a full URL; None: none known
    # (transformers serve has none). The metric names are in engines/metricmaps.py.
    metrics_url: str | None = None
    # Whether the started process tree binds the port itself: a container's proxy does not, so who
    # holds the port is not checked (engines.server.ManagedServer's port check).
    owns_port: bool = True
    # A container's id file (docker --cidfile): its processes are the bench job's own (measure/busy.py).
    container_id_file: str | None = None


@dataclass(frozen=True)
class ExtraRunContext:
    """What an extra measured run (Engine.measure_extra) gets: the healthy server and the job's files."""

    base_url: str  # http://HOST:PORT of the running server
    spec: EngineSpec
    model: ModelSpec
    venv: Path
    prompts: list  # the prompt sample as the job read it (pipeline.prompts.Prompt: id, messages)
    out_dir: Path  # results/raw/{engine}/{model}: where its records go, one file per extra run


class Engine:
    """One engine kind. Subclasses set the class attributes and implement plan(); every other method
    has a default that does nothing special, so a kind overrides only what it does differently."""

    kind: ClassVar[str] = ""  # engines.NAME.kind
    label: ClassVar[str] = ""  # the tables' default column label
    package: ClassVar[str] = ""  # the pip package whose version (from the env's lock) the results carry
    Settings: ClassVar[type[EngineSettings]] = EngineSettings  # the kind's own config keys
    needs_env: ClassVar[bool] = True  # engines.NAME.env required (a venv or an existing interpreter)
    env_modules: ClassVar[tuple[str, ...]] = ()  # what an existing interpreter must import
    env_install_hint: ClassVar[str | None] = None  # what to pip install there (default: the missing modules)
    # Record files this kind measures beside the scenarios' (TGI: its native route), one per name.
    extra_runs: ClassVar[tuple[str, ...]] = ()
    # CPU memory beside the weights (the memory estimate and table); None: memory's python fallback.
    cpu_runtime: ClassVar[CpuRuntime | None] = None

    # --- config time (pipeline/config.py) ---------------------------------------------------------

    def check_config(self, name: str, engine: dict) -> None:
        """Checks of this kind's keys beyond the schema; raise EngineConfigError naming the key."""
        if self.needs_env and "env" not in engine:
            raise EngineConfigError(f"config error at engines.{name}.env: required for kind {self.kind}")

    def settings_from_config(self, engine: dict) -> EngineSettings:
        """The kind's Settings from its validated config entry (keys not set keep their defaults)."""
        return self.Settings(**{f.name: engine[f.name] for f in fields(self.Settings) if f.name in engine})

    # --- plan time (the bench job, before a server starts) ----------------------------------------

    def unavailable_reason(self, spec: EngineSpec, model: ModelSpec | None = None) -> str | None:
        """Why this engine cannot run on this machine (the table cell says so), or None."""
        return None

    def external_endpoint(self, spec: EngineSpec) -> str | None:
        """The base URL of an endpoint already running (nothing to start), or None."""
        return None

    def plan(
        self,
        spec: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        """The server's command line and request controls; `threads` is the bench job's CPU share."""
        raise NotImplementedError

    def extra_inputs(self, model: str) -> dict[str, str]:
        """Files a bench job of this kind needs beyond the common ones, by name (Snakemake inputs)."""
        return {}

    def request_fields(self, spec: EngineSpec) -> dict:
        """Every sampling field of the contract (engines/sampling.py) in this engine's own spelling, so
        it falls back on none of its own or the model's defaults. Default: the fields OpenAI defines."""
        return contract.openai_fields(spec.sampling)

    def cache_plan(self, spec: EngineSpec) -> CachePlan:
        """How this engine keeps its scenarios' cache states (engines/cache.py): server flags, fields of
        a cold request, whether it reports cached tokens. plan() puts its server flags on the command
        line; the bench job gives its request fields to the client. Default: no control, not assured."""
        return openai_plan(None, None)

    # --- bench time (jobs/bench.py) ---------------------------------------------------------------

    def kv_pool_bytes(self, spec: EngineSpec, env: dict[str, str]) -> int | None:
        """A KV cache the server preallocates on the CPU, in bytes (the memory table subtracts it)."""
        return None

    def measure_extra(self, ctx: ExtraRunContext) -> None:
        """Measure the extra runs (extra_runs) against the healthy server, after the scenarios."""

    def after_stop(self, spec: EngineSpec, server_log: Path, memory: MemoryReport) -> None:
        """Read what the server left behind (its log) into the memory record, once it has stopped."""


ENGINE_KINDS: dict[str, Engine] = {}
_loaded = False


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: one instance of the kind, found by engine_for(kind)."""
    ENGINE_KINDS[cls.kind] = cls()
    return cls


def _load_kinds() -> None:
    """Import every module under engines/kinds/: each registers its kind (adding one is one module)."""
    global _loaded
    from infbench.engines import kinds

    for module in pkgutil.iter_modules(kinds.__path__):
        importlib.import_module(f"{kinds.__name__}.{module.name}")
    _loaded = True


def engine_kinds() -> dict[str, Engine]:
    """Every registered kind, by kind."""
    if not _loaded:
        _load_kinds()
    return ENGINE_KINDS


def engine_for(kind: str) -> Engine:
    """The plug-in of a kind; a clear error for an unknown one."""
    try:
        return engine_kinds()[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(sorted(engine_kinds()))}") from None


def cpu_runtimes() -> dict[str, CpuRuntime]:
    """Each kind's CPU memory figures, for the memory estimate (kinds without any are left out)."""
    return {kind: engine.cpu_runtime for kind, engine in engine_kinds().items() if engine.cpu_runtime}

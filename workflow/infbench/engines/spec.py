"""Spec files: the only way settings reach a bench job.

results/specs/engines/{engine}.json holds one engine's settings plus the shared bench settings;
results/specs/models/{model}.json holds how a model is served. An engine's kind-specific keys are
its kind's Settings dataclass (engines/base.py, engines/kinds/), under `settings`. Editing one engine's settings changes
only its own spec file, so Snakemake reruns only that engine's bench jobs (and the merge).
Defaults are the schema's (infbench/defaults.py); scenarios are measure/scenarios.py's classes.
Each file is a handoff record (infbench/handoff.py): written and read as EngineSpec or ModelSpec, a
bad field named with the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infbench.defaults import schema_default
from infbench.engines.base import Engine, EngineSettings, engine_for
from infbench.handoff import HandoffError, HandoffRecord
from infbench.measure.scenarios import Scenario


@dataclass(frozen=True)
class Sampling(HandoffRecord):
    temperature: float = schema_default("sampling.temperature")
    top_p: float = schema_default("sampling.top_p")
    seed: int = schema_default("sampling.seed")
    max_tokens: int = schema_default("sampling.max_tokens")
    output_length: str = schema_default("sampling.output_length")


@dataclass(frozen=True)
class BenchSettings(HandoffRecord):
    warmup_requests: int = schema_default("bench.warmup_requests")
    request_timeout_s: float = schema_default("bench.request_timeout_s")
    memory_sample_interval_s: float = schema_default("bench.memory_sample_interval_s")
    host: str = schema_default("bench.host")
    client_lag_share: float = schema_default("bench.client_lag_share")  # flag lag that could move latency more
    busy_cpu_limit: float = schema_default("bench.busy_cpu_limit")  # flag a scenario when others used more of the CPUs
    busy_core_limit: float = schema_default("bench.busy_core_limit")  # ... or any one other process more of a core
    server_metrics: bool = schema_default("bench.server_metrics")  # read the engine's metrics around each scenario


@dataclass(frozen=True)
class EngineSpec(HandoffRecord):
    name: str
    kind: str
    label: str
    env: str  # resolved for the device: envs/{env}.txt, .venvs/{env}/
    device: str
    args: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    # Server variable -> the bench job's environment variable it is taken from at server start:
    # secrets travel by name, so no spec file, Snakemake param or log holds their value.
    server_env_from: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = schema_default("engines.*.startup_timeout_s")
    # The kind's own keys: its Settings dataclass (engines/kinds/KIND.py); its defaults when not given.
    settings: EngineSettings | None = None
    gpu_ids: list[int] = field(default_factory=list)  # config gpu_ids: GPUs a job may lease (empty: all visible)
    sampling: Sampling = Sampling()
    scenarios: list[Scenario] = field(default_factory=list)
    bench: BenchSettings = BenchSettings()

    def __post_init__(self) -> None:
        settings_class = engine_for(self.kind).Settings
        if self.settings is None:
            object.__setattr__(self, "settings", settings_class())
        elif not isinstance(self.settings, settings_class):
            raise TypeError(f"engine {self.name}: settings {type(self.settings).__name__} are not kind {self.kind}'s")

    @property
    def engine(self) -> Engine:
        """The plug-in of this engine's kind."""
        return engine_for(self.kind)

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> EngineSpec:
        """The kind's own Settings and the scenarios' own classes first (both chosen by a `kind`
        field), then the rest as any handoff record."""
        if not isinstance(data, dict):
            return super().from_dict(data, source)
        where = f"{source}: EngineSpec" if source else "EngineSpec"
        try:
            settings_class = engine_for(data.get("kind")).Settings
        except ValueError as err:
            raise HandoffError(f"{where}: field 'kind': {err}") from None
        scenarios = data.get("scenarios", [])
        if not isinstance(scenarios, list):
            raise HandoffError(f"{where}: field 'scenarios' should be a list, got {scenarios!r}")
        return super().from_dict(
            data
            | {
                "settings": settings_class.from_dict(data.get("settings") or {}, f"{where}.settings"),
                "scenarios": [_scenario(s, f"{where}.scenarios[{i}]") for i, s in enumerate(scenarios)],
            },
            source,
        )


def _scenario(data: Any, where: str) -> Scenario:
    try:
        return Scenario.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise HandoffError(f"{where}: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class ModelSpec(HandoffRecord):
    name: str
    path: str  # HF-format directory prepared by the models rule
    dtype: str = "bfloat16"
    gpus: int = 0
    max_model_len: int = 2048
    weights: str = "real"  # real | random (seeded random weights: output length forced to fixed)


def write_spec(path: str | Path, spec: EngineSpec | ModelSpec) -> None:
    spec.write(path)


def read_engine_spec(path: str | Path) -> EngineSpec:
    return EngineSpec.read(path)


def read_model_spec(path: str | Path) -> ModelSpec:
    return ModelSpec.read(path)

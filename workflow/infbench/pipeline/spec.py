"""Spec files: the only way settings reach a bench job.

results/specs/engines/{engine}.json holds one engine's settings plus the shared bench settings;
results/specs/models/{model}.json holds how a model is served. Editing one engine's settings changes
only its own spec file, so Snakemake reruns only that engine's bench jobs (and the merge).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infbench.fileio import write_json_atomic


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_tokens: int = 128
    output_length: str = "natural"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # single | throughput (closed loop) | open_loop | sweep
    concurrency: int = 1
    requests: int | None = None  # a sweep: per step
    workers: int | str = 1  # client processes, or "auto"
    # open_loop and sweep: arrivals drawn in advance (loadgen.arrival_offsets)
    rate: float | None = None  # requests/s
    arrival: str = "poisson"  # poisson | gamma | constant
    burstiness: float = 1.0  # gamma shape
    seed: int = 0
    # sweep: explicit rates, else doubling from start_rate then bisection; SLOs on p99
    rates: list[float] = field(default_factory=list)
    start_rate: float = 1.0
    max_rate: float = 256.0
    refine_steps: int = 3
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None


@dataclass(frozen=True)
class BenchSettings:
    warmup_requests: int = 2
    request_timeout_s: float = 300.0
    memory_sample_interval_s: float = 0.25
    host: str = "127.0.0.1"
    client_lag_limit_s: float = 0.001  # flag a run whose client lag p99 passes this


@dataclass(frozen=True)
class EngineSpec:
    name: str
    kind: str
    label: str
    env: str  # resolved for the device: envs/{env}.txt, .venvs/{env}/
    device: str
    args: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 600.0
    launcher: str | None = None  # TGI: native | docker | apptainer
    image: str | None = None  # TGI: container image for docker/apptainer
    # llamacpp: threads (default: the bench job's), parallel slots (default: the largest scenario
    # concurrency) and context size (default: max_model_len per slot)
    threads: int | None = None
    parallel: int | None = None
    ctx_size: int | None = None
    continuous_batching: bool = False  # transformers: `transformers serve --continuous-batching`
    # openai: a server started from a command template, or an endpoint already running at base_url
    command: list[str] = field(default_factory=list)
    health_path: str = "/health"
    version_path: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # the variable's name; its value is read at bench time only
    served_model_name: str | None = None
    sampling: Sampling = Sampling()
    scenarios: list[Scenario] = field(default_factory=list)
    bench: BenchSettings = BenchSettings()

    @classmethod
    def from_dict(cls, data: dict) -> "EngineSpec":
        data = dict(data)
        data["sampling"] = Sampling(**data.get("sampling", {}))
        data["scenarios"] = [Scenario(**s) for s in data.get("scenarios", [])]
        data["bench"] = BenchSettings(**data.get("bench", {}))
        return cls(**data)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str  # HF-format directory prepared by the models rule
    dtype: str = "bfloat16"
    gpus: int = 0
    max_model_len: int = 2048

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return cls(**data)


def write_spec(path: str | Path, spec: EngineSpec | ModelSpec) -> None:
    write_json_atomic(path, asdict(spec))


def read_engine_spec(path: str | Path) -> EngineSpec:
    return EngineSpec.from_dict(json.loads(Path(path).read_text()))


def read_model_spec(path: str | Path) -> ModelSpec:
    return ModelSpec.from_dict(json.loads(Path(path).read_text()))

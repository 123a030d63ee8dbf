"""`transformers serve MODEL_DIR`: Hugging Face transformers' own OpenAI-compatible server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.base import Engine, EngineSettings, ServerPlan, register
from infbench.memory.cpu_runtime import CpuRuntime
from infbench.memory.gpus import MIB


@dataclass(frozen=True)
class TransformersSettings(EngineSettings):
    continuous_batching: bool = False  # `transformers serve --continuous-batching` (paged attention)


def model_eos_ids(model_dir: Path) -> tuple[list[int] | int | None, int | None]:
    """EOS and pad ids from the model's own files, so that explicit configs still stop at EOS."""
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("eos_token_id") is not None:
                return data["eos_token_id"], data.get("pad_token_id")
    return None, None


@register
class Transformers(Engine):
    """`transformers serve MODEL_DIR`: pinned to one model, whose OpenAI name is its path."""

    kind = "transformers"
    label = "Transformers"
    package = "transformers"
    Settings = TransformersSettings
    # transformers serve's serving extras, checked in an existing interpreter (env: {python: PATH})
    env_modules = ("transformers", "torch", "fastapi", "uvicorn", "pydantic", "openai")
    env_install_hint = "transformers[serving]"
    cpu_runtime = CpuRuntime(
        452 * MIB,
        False,
        (
            "`transformers serve` process tree ~452 MiB besides the weights (measured: RSS after "
            "one request minus the weights; transformers 5.23, torch 2.13 CPU); safetensors are "
            "memory-mapped, so the weights are resident only after the first request, unless they "
            "are cast to another dtype at load (served dtype != stored dtype)"
        ),
    )

    def request_fields(self, spec) -> dict:
        return contract.transformers_fields(spec.sampling)  # the rest in the generation_config below

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.transformers_plan(spec.settings.continuous_batching)

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        settings: TransformersSettings = spec.settings
        # Several GPUs: device_map "auto" splits the layers over them (transformers has no tensor parallel here).
        device = "cpu" if model.gpus == 0 else "cuda" if model.gpus == 1 else "auto"
        command = [
            str(venv / "bin" / "transformers"),
            "serve",
            str(model.path),
            "--host",
            host,
            "--port",
            str(port),
            "--device",
            device,
            "--dtype",
            model.dtype,
            "--log-level",
            "info",
            *(["--continuous-batching"] if settings.continuous_batching else []),
            *spec.args,
        ]
        # A full generation_config replaces the model's generation_config.json defaults (which may
        # carry sampling or repetition penalties) with the benchmark's explicit settings.
        eos, pad = model_eos_ids(Path(model.path))
        sampling = spec.sampling
        generation = contract.transformers_generation_config(
            sampling, eos, pad, sampling.max_tokens, sampling.output_length == "fixed"
        )
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=str(model.path),
            extra_body={"generation_config": json.dumps(generation, sort_keys=True)},
            fixed_length_control="generation_config.min_new_tokens",
            settings={
                "prefix cache": self.cache_plan(spec).control,
                "continuous batching": "on (paged attention)"
                if settings.continuous_batching
                else "off (transformers serve's default; continuous_batching: true turns it on)",
                "threads": "torch's default (all cores)",
            },
        )

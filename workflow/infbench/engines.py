"""Engine adapters: how to start each engine's server and how to ask it for the same thing.

An adapter builds the server command line (run from the engine's own venv), names its health route
and the model name its OpenAI route expects, and turns the shared sampling settings into the
engine's own request controls (the fairness contract: explicit greedy sampling, same max_tokens,
and for fixed output lengths the engine's own way of ignoring EOS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infbench.spec import EngineSpec, ModelSpec


@dataclass(frozen=True)
class ServerPlan:
    command: list[str]
    health_path: str
    model_name: str  # the "model" field the OpenAI route expects
    extra_body: dict  # engine-specific request fields (sampling controls)


class EngineAdapter:
    kind = ""
    package = ""  # the pip package whose version (from the env's lock) the results carry

    def plan(self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int) -> ServerPlan:
        raise NotImplementedError


def _model_eos_ids(model_dir: Path) -> tuple[list[int] | int | None, int | None]:
    """EOS and pad ids from the model's own files, so that explicit configs still stop at EOS."""
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("eos_token_id") is not None:
                return data["eos_token_id"], data.get("pad_token_id")
    return None, None


class TransformersAdapter(EngineAdapter):
    """`transformers serve MODEL_DIR`: pinned to one model, whose OpenAI name is its path."""

    kind = "transformers"
    package = "transformers"

    def plan(self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int) -> ServerPlan:
        device = "cuda" if model.gpus > 0 else "cpu"
        command = [
            str(venv / "bin" / "transformers"), "serve", str(model.path),
            "--host", host, "--port", str(port),
            "--device", device, "--dtype", model.dtype,
            "--log-level", "info",
            *engine.args,
        ]
        # A full generation_config replaces the model's generation_config.json defaults (which may
        # carry sampling or repetition penalties) with the benchmark's explicit settings.
        eos, pad = _model_eos_ids(Path(model.path))
        sampling = engine.sampling
        generation = {
            "do_sample": sampling.temperature > 0,
            "max_new_tokens": sampling.max_tokens,
            "repetition_penalty": 1.0,
            "eos_token_id": eos,
            "pad_token_id": pad if pad is not None else eos,
        }
        if sampling.temperature > 0:
            generation.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.output_length == "fixed":
            generation["min_new_tokens"] = sampling.max_tokens
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=str(model.path),
            extra_body={"generation_config": json.dumps(generation, sort_keys=True)},
        )


ADAPTERS: dict[str, EngineAdapter] = {a.kind: a for a in (TransformersAdapter(),)}


def adapter_for(kind: str) -> EngineAdapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(sorted(ADAPTERS))}") from None

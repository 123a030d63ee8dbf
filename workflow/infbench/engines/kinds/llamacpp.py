"""llama.cpp's own C++ server (the `xllamacpp` wheel), serving a GGUF written from the prepared weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infbench.engines.base import Engine, EngineSettings, ServerPlan, register
from infbench.handoff import gguf_meta_path, read_gguf_meta


def max_concurrency(spec) -> int:
    """The most requests any scenario keeps in flight (an open loop or sweep: its concurrency)."""
    return max([1, *(s.concurrency for s in spec.scenarios if s.kind != "single")])


# The launcher script the env's python runs (engines/llamacpp_server.py: stdlib and xllamacpp only).
LLAMACPP_LAUNCHER = Path(__file__).resolve().parent.parent / "llamacpp_server.py"


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

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        meta = read_gguf_meta(model.name)
        if meta is None or meta.status != "ok":
            raise ValueError(f"llama.cpp: no GGUF file for model {model.name}")
        threads = spec.settings.threads or threads
        parallel = spec.settings.parallel or max_concurrency(spec)
        # llama.cpp splits n_ctx between its slots: each slot gets the model's full context length.
        ctx_size = spec.settings.ctx_size or model.max_model_len * parallel
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
            *spec.args,
        ]
        sampling = spec.sampling
        # llama.cpp's sampler chain has its own defaults (top_k 40, min_p 0.05, ...): neutralise them
        # so temperature/top_p mean what they mean for the other engines.
        extra: dict = {
            "top_k": 0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
        }
        if sampling.output_length == "fixed":
            extra["ignore_eos"] = True
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
            },
        )

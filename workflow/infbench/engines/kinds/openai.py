"""Any OpenAI-compatible server: started from a `command` template like the built-in engines, or an
endpoint already running at `base_url`. The worked example of docs/engines.md, "Adding an engine"."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from infbench.engines import cache as cachectl
from infbench.engines.base import Engine, EngineConfigError, EngineSettings, ServerPlan, register

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


@dataclass(frozen=True)
class OpenAISettings(EngineSettings):
    # A server started from a command template, or an endpoint already running at base_url.
    command: list[str] = field(default_factory=list)
    health_path: str | None = "/health"  # None: an external endpoint whose readiness is GET {base_url}/models
    version_path: str | None = None
    base_url: str | None = None
    metrics_url: str | None = None  # its Prometheus metrics (a URL, or a path on the server's root)
    api_key_env: str | None = None  # the variable's name; its value is read at bench time only
    served_model_name: str | None = None
    # The server's own controls for cold scenarios (engines/cache.py), and the memory bandwidth (GB/s
    # per device) of the machine behind an external endpoint, for its decode bound.
    cold_fields: dict = field(default_factory=dict)
    cold_salt_field: str | None = None
    bandwidth_gb_s: float | None = None


@register
class OpenAI(Engine):
    """Any OpenAI-compatible server: started from a `command` template like the built-in engines, or
    an endpoint already running at `base_url` (not started, not leased, memory not measured)."""

    kind = "openai"
    label = "OpenAI-compatible"
    package = ""
    Settings = OpenAISettings
    needs_env = False  # a command on PATH, or an endpoint already running

    def check_config(self, name: str, engine: dict) -> None:
        """Exactly one of command and base_url; a command's placeholders known and {port} in it."""
        if ("command" in engine) == ("base_url" in engine):
            raise EngineConfigError(
                f"config error at engines.{name}: kind openai needs exactly one of command (a server "
                "the pipeline starts) or base_url (an endpoint already running)"
            )
        if "base_url" in engine:
            if "env" in engine:
                raise EngineConfigError(
                    f"config error at engines.{name}.env: a base_url endpoint is not started, so it has no env"
                )
            return
        try:
            fill_command(engine["command"], {key: "x" for key in OPENAI_PLACEHOLDERS})
        except ValueError as err:
            raise EngineConfigError(f"config error at engines.{name}.command: {err}") from None
        if not any("{port}" in part for part in engine["command"]):
            raise EngineConfigError(
                f"config error at engines.{name}.command: it must contain {{port}} (the pipeline picks a free port)"
            )

    def settings_from_config(self, engine: dict) -> OpenAISettings:
        settings = replace(super().settings_from_config(engine), command=list(engine.get("command", [])))
        if "base_url" in engine and "health_path" not in engine:
            # an external endpoint without a health_path is checked at GET {base_url}/models (OpenAI's route)
            settings = replace(settings, health_path=None)
        return settings

    def external_endpoint(self, spec) -> str | None:
        return spec.settings.base_url

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.openai_plan(spec.settings.cold_fields, spec.settings.cold_salt_field)

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        extra: dict = {}
        if spec.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": spec.sampling.max_tokens}
        model_name = spec.settings.served_model_name or model.name
        if spec.settings.base_url:
            return ServerPlan(
                command=[],
                health_path=spec.settings.health_path,
                metrics_url=spec.settings.metrics_url,
                model_name=model_name,
                extra_body=extra,
                version_path=spec.settings.version_path,
                fixed_length_control="ignore_eos + min_tokens (if honoured)",
                notes=["external endpoint: not started by infbench, memory not measured"],
                settings={"endpoint": "external endpoint", "prefix cache": self.cache_plan(spec).control},
                external=True,
                api_key_env=spec.settings.api_key_env,
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
        command = fill_command(spec.settings.command, values)
        if spec.env and not Path(command[0]).is_absolute() and (venv / "bin" / command[0]).exists():
            command[0] = str(venv / "bin" / command[0])  # the env's own console script
        return ServerPlan(
            command=[*command, *spec.args],
            health_path=spec.settings.health_path or "/health",
            metrics_url=spec.settings.metrics_url,
            model_name=model_name,
            extra_body=extra,
            version_path=spec.settings.version_path,
            fixed_length_control="ignore_eos + min_tokens (if honoured)",
            api_key_env=spec.settings.api_key_env,
            settings={"prefix cache": self.cache_plan(spec).control},
        )

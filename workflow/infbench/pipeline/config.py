"""Load and validate the pipeline config against the schema (infbench/data/config.schema.yaml), filling defaults.

Errors name the key (e.g. `engines.transformers.kind`), so a user knows what to fix.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import jsonschema
import yaml

from infbench.defaults import load_schema
from infbench.engines.base import COMMON_CONFIG_KEYS, EngineConfigError, engine_for, engine_kinds
from infbench.engines.spec import BenchSettings, EngineSpec, ModelSpec, Sampling, Scenario
from infbench.measure.scenarios import scenario_class
from infbench.secrets import HF_TOKEN_SHAPE, argv_secrets, is_secret_env_name, url_secrets


class ConfigError(ValueError):
    pass


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return f"config error at {_key_path(error)}: {error.message} (check the spelling; see config/README.md)"
    if error.validator == "oneOf":
        description = error.schema.get("description", error.message)
        return f"config error at {_key_path(error)}: {error.instance!r} is not valid: {description}"
    return f"config error at {_key_path(error)}: {error.message}"


def _fill_defaults(instance: object, schema: dict, root: dict) -> None:
    """Set schema defaults for missing keys, recursively (jsonschema validates but never fills)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    return schema


def _branch_for(instance: object, schema: dict, root: dict) -> dict:
    """The schema that describes a container: itself, or its oneOf/anyOf branch of the same type."""
    schema = _resolve(schema, root)
    wanted = "object" if isinstance(instance, dict) else "array"
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        branch = _resolve(branch, root)
        if branch.get("type") == wanted:
            return branch
    return schema


def coerce_strings(instance: object, schema: dict, root: dict, validator: jsonschema.Validator) -> object:
    """Read as YAML the strings the schema does not accept as strings.

    `snakemake --config sampling='{max_tokens: 5}'` parses nested values with YAML's BaseLoader, so
    every nested scalar arrives as a string ('5'). A string that fails its schema but whose YAML
    reading (5) passes it is replaced by that reading; anything else is left for validation to name.
    """
    if isinstance(instance, dict):
        schema = _branch_for(instance, schema, root)
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = schema.get("properties", {}).get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                instance[key] = coerce_strings(value, sub, root, validator)
        return instance
    if isinstance(instance, list):
        items = _branch_for(instance, schema, root).get("items")
        return [coerce_strings(v, items, root, validator) for v in instance] if isinstance(items, dict) else instance
    if isinstance(instance, str):
        check = validator.evolve(schema=schema)
        if check.is_valid(instance):
            return instance
        try:
            reading = yaml.safe_load(instance)
        except yaml.YAMLError:
            return instance
        if not isinstance(reading, str) and check.is_valid(reading):
            return reading
    return instance


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of config with defaults filled; raise ConfigError naming the key."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    validator = jsonschema.Draft202012Validator(schema)
    config = coerce_strings(config, schema, schema, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e) for e in errors))
    _fill_defaults(config, schema, schema)
    _check_cross_references(config)
    return config


def _check_cross_references(config: dict) -> None:
    for name, engine in config["engines"].items():
        _check_engine_kind_keys(name, engine)
        resolve_env(engine, config["device"], name)
        _check_no_secret_values(name, engine)
    for name, settings in config["scenarios"].items():
        try:
            scenario_class(settings["kind"]).check_settings(name, settings, config)
        except ValueError as err:
            raise ConfigError(f"config error at {err}") from None
        _check_conversation_source(config, name)
    for name, model in config["models"].items():
        _check_random_source(name, model)
        if config["device"] == "cpu" and model["gpus"] > 0:
            raise ConfigError(f"config error at models.{name}.gpus: {model['gpus']} GPUs asked for, but device is cpu")
        if config["device"] == "cuda" and model["gpus"] < 1:
            raise ConfigError(f"config error at models.{name}.gpus: device is cuda, so gpus must be at least 1")


def _check_conversation_source(config: dict, name: str) -> None:
    """A conversation scenario's source is read at start-up (a file, or the bundled one): a row with no
    user turn stops the run naming the file and line before anything is built or started."""
    scenario = scenario_of(config, name)
    if not scenario.prepares or not scenario.reads_conversations or scenario.source.startswith("hf:"):
        return
    from infbench.pipeline.conversations import load_conversations
    from infbench.pipeline.prompts import PromptSourceError

    try:
        conversations = load_conversations(scenario.source)
    except PromptSourceError as err:
        raise ConfigError(f"config error at scenarios.{name}.source: {err}") from None
    if scenario.conversations and scenario.conversations > len(conversations):
        raise ConfigError(
            f"config error at scenarios.{name}.conversations: {scenario.conversations} asked for, but "
            f"{scenario.source} has {len(conversations)}"
        )


def _check_no_secret_values(name: str, engine: dict) -> None:
    """A secret written into the config would reach the spec file, the command under the tables,
    Snakemake's params and logs, the provenance and the bundle: it must be referenced by the name of
    an environment variable instead (server_env from_env, api_key_env)."""
    for var, value in engine["server_env"].items():
        if isinstance(value, str) and (is_secret_env_name(var) or HF_TOKEN_SHAPE.search(value)):
            raise ConfigError(
                f"config error at engines.{name}.server_env.{var}: looks like a secret, and its value would be "
                f"written to spec files and Snakemake's logs; write `{var}: {{from_env: {var}}}` and export "
                f"{var} before running (the bench job reads it when it starts the server)"
            )
    for key in ("args", "command"):
        for position, _ in argv_secrets(engine.get(key, []))[:1]:
            raise ConfigError(
                f"config error at engines.{name}.{key}[{position}]: looks like a secret (a key, token or "
                "password on the command line), and it would be written to spec files, the command under the "
                "tables, the provenance and bundles; pass it through the environment instead: "
                "`server_env: {VAR: {from_env: VAR}}` with a variable the server reads (e.g. VLLM_API_KEY), "
                "exported before running"
            )
    for key in ("base_url", "health_path", "version_path", "metrics_url"):
        if url_secrets(str(engine.get(key) or "")):
            raise ConfigError(
                f"config error at engines.{name}.{key}: holds credentials (user:password@ or a token, key or "
                "password query parameter), which would be written to spec files, the tables, the provenance "
                "and bundles; remove them and name the variable that holds the key in api_key_env "
                "(sent as a Bearer token, never written)"
            )


def _check_random_source(name: str, model: dict) -> None:
    """A random: model needs an architecture config it can be built from: say which, at start-up."""
    if not is_random(model):
        return
    from infbench.pipeline.randommodel import RandomModelError, read_architecture

    architecture = model_architecture(model)
    if not architecture:
        raise ConfigError(
            f"config error at models.{name}.source: model {name!r} has random weights but no "
            "architecture config: write random:PATH/config.json (e.g. random:config/models/"
            f"vicuna-7b-v1.3.json) or set models.{name}.architecture"
        )
    try:
        read_architecture(Path(architecture))
    except RandomModelError as err:
        raise ConfigError(f"config error at models.{name}.source: model {name!r}: {err}") from None


def is_random(model: dict) -> bool:
    """Seeded random weights (source random or random:CONFIG.json)."""
    return model["source"] == "random" or model["source"].startswith("random:")


def model_architecture(model: dict) -> str | None:
    """The architecture config.json of a model: random:PATH's path, else the architecture key."""
    if model["source"].startswith("random:") and model["source"] != "random:":
        return model["source"][len("random:") :]
    return model.get("architecture") or None


def model_source(model: dict) -> str:
    """The source the model rule builds from (random resolved to random:ARCHITECTURE)."""
    return f"random:{model_architecture(model)}" if is_random(model) else model["source"]


def existing_python(engine: dict) -> str | None:
    """The interpreter of an existing environment (env: {python: PATH}), else None."""
    env = engine.get("env")  # an openai engine may have none
    return env["python"] if isinstance(env, dict) and "python" in env else None


def _check_engine_kind_keys(name: str, engine: dict) -> None:
    """Keys of another kind, and the kind's own checks (openai: command or base_url), named at
    start-up (not mid-run). Which keys a kind has is its Settings dataclass (engines/kinds/)."""
    kind = engine["kind"]
    plugin = engine_for(kind)
    own = {f.name for f in fields(plugin.Settings)}
    for key in engine:
        if key not in COMMON_CONFIG_KEYS and key not in own:
            kinds = [k for k, e in engine_kinds().items() if key in {f.name for f in fields(e.Settings)}]
            raise ConfigError(
                f"config error at engines.{name}.{key}: only for kind {' or '.join(kinds)} (this engine is kind {kind})"
            )
    try:
        plugin.check_config(name, engine)
    except EngineConfigError as err:
        raise ConfigError(str(err)) from None


def resolve_env(engine: dict, device: str, engine_name: str = "?") -> str | None:
    """The env an engine runs from; None for an openai engine without one (its command is on PATH,
    or it is an endpoint already running)."""
    env = engine.get("env")
    if env is None:
        return None
    if isinstance(env, str):
        return env
    if "python" in env:  # an existing interpreter: its name only names the lock and the .venvs/ shim
        return env.get("name") or f"{engine_name}-python"
    if device not in env:
        raise ConfigError(f"config error at engines.{engine_name}.env: no environment for device {device!r}")
    return env[device]


def engine_spec(config: dict, name: str) -> EngineSpec:
    engine = config["engines"][name]
    return EngineSpec(
        name=name,
        kind=engine["kind"],
        label=engine_label(config, name),
        env=resolve_env(engine, config["device"], name) or "",
        device=config["device"],
        args=list(engine["args"]),
        server_env={k: v for k, v in engine["server_env"].items() if isinstance(v, str)},
        server_env_from={k: v["from_env"] for k, v in engine["server_env"].items() if isinstance(v, dict)},
        startup_timeout_s=engine["startup_timeout_s"],
        settings=engine_for(engine["kind"]).settings_from_config(engine),
        gpu_ids=list(config.get("gpu_ids", [])),
        sampling=Sampling(**config["sampling"]),
        scenarios=[scenario_of(config, s) for s in config["scenarios"]],
        bench=BenchSettings(**config["bench"]),
    )


def scenario_of(config: dict, name: str) -> Scenario:
    return Scenario.from_config(config, name)


def model_spec(config: dict, name: str) -> ModelSpec:
    model = config["models"][name]
    return ModelSpec(
        name=name,
        path=f"resources/models/{name}",
        dtype=model.get("serve_dtype") or model["dtype"],
        gpus=model["gpus"],
        max_model_len=model["max_model_len"],
        weights="random" if is_random(model) else "real",
    )


def model_label(config: dict, name: str) -> str:
    label = config["models"][name].get("label") or name
    # Random weights measure speed and memory only: every table row of such a model says so.
    return f"{label} (random weights)" if is_random(config["models"][name]) else label


def engine_label(config: dict, name: str) -> str:
    engine = config["engines"][name]
    return engine.get("label") or engine_for(engine["kind"]).label

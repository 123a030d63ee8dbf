"""Default settings, read from the one place they are written: the config schema.

The schema ships inside the package (infbench/data/config.schema.yaml), so an installed infbench
finds it as well as a clone does; config/README.md documents its keys.

A validated config has every default filled in already (config.validate_config); this module is for
code that needs a default outside one: a dataclass field, a command-line flag, a test.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "config.schema.yaml"


@functools.cache
def load_schema(path: Path = SCHEMA_PATH) -> dict:
    # libyaml's loader where PyYAML has it: modules read defaults at import, and it parses ~5x faster.
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema_default(key: str):
    """The schema's default for a dotted key; `*` stands for any name in a mapping of named entries,
    e.g. "bench.client_lag_share", "scenarios.*.max_rate", "engines.*.startup_timeout_s"."""
    node = load_schema()
    for part in key.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    if "default" not in node:
        raise KeyError(f"{SCHEMA_PATH.name} has no default for {key}")
    return node["default"]

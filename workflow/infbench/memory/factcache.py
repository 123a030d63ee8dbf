"""A cache of model facts, keyed by the bytes they were read from.

Counting parameters builds the model on torch's meta device, which needs torch and transformers
(seconds to import). The facts depend only on the config (and, for local weights, the safetensors
headers), so they are stored once per content under $XDG_CACHE_HOME/infbench/facts (default
~/.cache/infbench/facts) and a second estimate of the same model reads them back in milliseconds.
Hub ids are not cached here (transformers keeps their config in its own cache). A cache entry
that cannot be read is ignored and rewritten; INFBENCH_FACT_CACHE=off disables the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from infbench.fileio import write_text_atomic

# Bumped whenever ModelFacts or the way it is read changes, so old entries are not reused.
FACTS_FORMAT = 2


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "infbench" / "facts"


def _enabled() -> bool:
    return os.environ.get("INFBENCH_FACT_CACHE", "on").lower() not in ("0", "off", "no", "false")


def key_for(model: str) -> str | None:
    """A content key for a local config file or model directory; None for hub ids."""
    if not _enabled():
        return None
    path = Path(model)
    digest = hashlib.sha256(f"facts-{FACTS_FORMAT}-transformers-{_transformers_version()}".encode())
    try:
        if path.is_file():
            digest.update(path.read_bytes())
        elif path.is_dir() and (path / "config.json").is_file():
            digest.update((path / "config.json").read_bytes())
            for extra in sorted(path.glob("*.safetensors")) + sorted(path.glob("hf_quant_config.json")):
                stat = extra.stat()
                digest.update(f"{extra.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            return None
    except OSError:
        return None
    return digest.hexdigest()


def key_for_bytes(data: bytes) -> str:
    """The key of a config given as bytes (an upload)."""
    digest = hashlib.sha256(f"facts-{FACTS_FORMAT}-transformers-{_transformers_version()}".encode())
    digest.update(data)
    return digest.hexdigest()


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "none"


def load(key: str) -> dict[str, Any] | None:
    """The cached facts (ModelFacts.to_dict()) for a key, or None."""
    try:
        data = json.loads((cache_dir() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def store(key: str, facts: dict[str, Any]) -> None:
    try:
        write_text_atomic(cache_dir() / f"{key}.json", json.dumps(facts))
    except OSError:
        pass  # a read-only home only costs the next run its speed

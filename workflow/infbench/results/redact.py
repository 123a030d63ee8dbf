"""Keep secrets out of everything a run hands on: provenance, bundles, the report.

What counts as a secret:
- the value of an environment variable named HF_TOKEN, HUGGING_FACE_HUB_TOKEN, OPENAI_API_KEY, or any
  name containing TOKEN, KEY, SECRET or PASSWORD;
- in the config, a string under a key that names a secret (`HF_TOKEN`, `api_key`, `password`, ...;
  `max_tokens` is not one), and every value the config's `secrets:` list points at: a dotted config
  path (`engines.vllm.server_env.MY_CREDENTIAL`) or an environment variable name;
- in a JSON file, a string under such a key (e.g. an engine spec's server_env);
- anything that looks like a Hugging Face token: hf_ followed by 30 or more letters and digits;
- in a command line (an engine's args or command, a server's command): the value of a flag that names
  a secret (`--api-key VALUE`, `--hf-token=VALUE`);
- in a URL: the credentials (`https://user:pass@host`) and the value of a query parameter that names a
  secret (`?token=...`, `&api_key=...`).

Values shorter than MIN_LITERAL_LEN are redacted where they sit under a secret key, but not searched
for as bare text everywhere (`true` or `1` would wreck every file); the bundle reports them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infbench.secrets import (
    HF_TOKEN_RE,
    REDACTED,
    URL_CREDENTIALS_RE,
    URL_SECRET_QUERY_RE,
    argv_secrets,
    is_secret_env_name,
    is_secret_flag,
    is_secret_key,
    url_secrets,
)

MIN_LITERAL_LEN = 8


def redact_argv(argv: list[Any]) -> list[Any]:
    """A command line with its secrets (argv_secrets) replaced by REDACTED, flags kept."""
    out = list(argv)
    for i, value in argv_secrets(argv):
        flag, equals, _ = out[i].partition("=")
        out[i] = f"{flag}={REDACTED}" if equals and is_secret_flag(flag) else out[i].replace(value, REDACTED)
    return out


def redact_url(url: str) -> str:
    data, _ = _redact_url_bytes(url.encode("utf-8"))
    return data.decode("utf-8")


def _redact_url_bytes(data: bytes) -> tuple[bytes, int]:
    data, userinfo = URL_CREDENTIALS_RE.subn(REDACTED.encode() + b"@", data)
    data, query = URL_SECRET_QUERY_RE.subn(lambda m: m.group(1) + REDACTED.encode(), data)
    return data, userinfo + query


def _walk_secret_strings(value: Any, under_secret: bool = False) -> Iterable[str]:
    """Every string that sits under a secret-named key, at any depth, and every secret of a list
    read as a command line (argv_secrets)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_secret_strings(item, under_secret or is_secret_key(key))
    elif isinstance(value, list):
        if not under_secret:
            yield from (secret for _, secret in argv_secrets(value))
        for item in value:
            yield from _walk_secret_strings(item, under_secret)
    elif isinstance(value, str) and value != REDACTED:
        if under_secret:
            yield value
        else:
            yield from url_secrets(value)


def _redact_keys(value: Any, under_secret: bool = False) -> Any:
    if isinstance(value, dict):
        return {key: _redact_keys(item, under_secret or is_secret_key(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_keys(item, under_secret) for item in (value if under_secret else redact_argv(value))]
    if isinstance(value, str) and under_secret:
        return REDACTED
    if isinstance(value, str) and url_secrets(value):
        return redact_url(value)
    return value


def _lookup(config: Any, path: str) -> tuple[Any, Any, Any] | None:
    """(parent, key, value) of a dotted path in the config, or None when it is not there."""
    parent, key = None, None
    node = config
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            parent, key, node = node, part, node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            parent, key, node = node, int(part), node[int(part)]
        else:
            return None
    return parent, key, node


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def redact_config(config: Mapping[str, Any]) -> dict:
    """A copy of the config with every secret value replaced by REDACTED (see the module doc)."""
    redacted = _redact_keys(copy.deepcopy(dict(config)))
    for path in config.get("secrets", []) or []:
        found = _lookup(redacted, path)
        if found and found[0] is not None:
            parent, key, value = found
            parent[key] = _redact_keys(value, under_secret=True)
    return redacted


def config_secret_values(config: Mapping[str, Any]) -> set[str]:
    values = set(_walk_secret_strings(dict(config)))
    for path in config.get("secrets", []) or []:
        found = _lookup(dict(config), path)
        if found:
            values.update(_strings(found[2]))
    return values


def env_secret_values(environ: Mapping[str, str], extra_names: Iterable[str] = ()) -> set[str]:
    names = set(extra_names)
    return {value for name, value in environ.items() if value and (is_secret_env_name(name) or name in names)}


@dataclass
class Redactor:
    """Replaces known secret values and HF-token look-alikes in bytes, counting what it replaced."""

    values: set[str] = field(default_factory=set)

    @classmethod
    def from_sources(
        cls, config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Redactor:
        config = config or {}
        environ = os.environ if environ is None else environ
        listed_env = [name for name in config.get("secrets", []) or [] if "." not in name]
        return cls(config_secret_values(config) | env_secret_values(environ, listed_env))

    def add(self, values: Iterable[str]) -> None:
        self.values.update(v for v in values if v and v != REDACTED)

    @property
    def short_values(self) -> int:
        """How many known secrets are too short to be searched for as bare text."""
        return sum(len(v) < MIN_LITERAL_LEN for v in self.values)

    def _needles(self) -> list[bytes]:
        needles = set()
        for value in self.values:
            if len(value) < MIN_LITERAL_LEN:
                continue
            needles.add(value.encode("utf-8"))
            needles.add(json.dumps(value)[1:-1].encode("utf-8"))  # as it appears inside a JSON string
        return sorted(needles, key=len, reverse=True)  # longest first: no half-replaced secret

    def redact_bytes(self, data: bytes) -> tuple[bytes, int]:
        count = 0
        for needle in self._needles():
            hits = data.count(needle)
            if hits:
                data = data.replace(needle, REDACTED.encode())
                count += hits
        data, hf_hits = HF_TOKEN_RE.subn(b"hf_" + REDACTED.encode(), data)
        data, url_hits = _redact_url_bytes(data)
        return data, count + hf_hits + url_hits

    def redact_json_file(self, name: str, data: bytes) -> tuple[bytes, int]:
        """Redact strings under secret keys of a .json or .jsonl file (rewritten only when one is found)."""
        try:
            text = data.decode("utf-8")
            if name.endswith(".jsonl"):
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                rows = [json.loads(text)]
        except (UnicodeDecodeError, json.JSONDecodeError):
            return data, 0
        found = [s for row in rows for s in _walk_secret_strings(row)]
        if not found:
            return data, 0
        self.add(found)  # the same value elsewhere (a log, a command line) goes too
        rows = [_redact_keys(row) for row in rows]
        if name.endswith(".jsonl"):
            out = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)
        else:
            out = json.dumps(rows[0], indent=2, sort_keys=True) + "\n"
        return out.encode("utf-8"), len(found)

    def collect_json_secrets(self, name: str, data: bytes) -> None:
        """First pass over a bundle: learn secret values that sit under secret keys in JSON files."""
        if name.endswith((".json", ".jsonl")):
            self.redact_json_file(name, data)

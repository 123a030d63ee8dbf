"""What counts as a secret: environment variable names, config keys, command-line flags, URL
credentials and token shapes.

One list, used by the config check (a secret written into the config stops the run, naming the key)
and by results/redact.py (secrets never reach provenance, the tables, bundles or the report).
"""

from __future__ import annotations

import re
from typing import Any

# What a redacted value reads as (a value already redacted is not a secret any more).
REDACTED = "***REDACTED***"
SECRET_ENV_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
SECRET_ENV_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
# A config or JSON key names a secret when one of its words (split at _ - . and spaces) is one of these.
SECRET_KEY_WORDS = {"TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
HF_TOKEN_RE = re.compile(rb"hf_[A-Za-z0-9]{30,}")
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")
# In any text: a URL's user:password@ and a secret-named query parameter's value (what follows = up to & or a quote).
URL_CREDENTIALS_RE = re.compile(rb"(?<=://)[^/\s:@\"']+:[^/\s@\"']*@")
URL_SECRET_QUERY_RE = re.compile(
    rb"(?i)(?<=[?&])((?:access_|api_?|auth_?|private_)?(?:token|key|secret|password|passwd|signature|sig)=)[^&#\s\"']+"
)


def is_secret_env_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_ENV_NAMES or any(word in upper for word in SECRET_ENV_WORDS)


def is_secret_key(key: str) -> bool:
    words = re.split(r"[_\-.\s]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key)))
    return any(word.upper() in SECRET_KEY_WORDS for word in words if word)


def is_secret_flag(arg: str) -> bool:
    """A command-line flag whose value is a secret: `--api-key`, `--hf-token`, `-token` (not `--max-tokens`)."""
    return arg.startswith("-") and is_secret_key(arg.lstrip("-").split("=", 1)[0])


def argv_secrets(argv: list[Any]) -> list[tuple[int, str]]:
    """(position, value) of every secret in a command line: a secret flag's value (`--api-key VALUE`
    or `--api-key=VALUE`), an HF-token look-alike, a URL's credentials or secret query parameter."""
    found = []
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            continue
        if is_secret_flag(arg) and "=" in arg:
            found.append((i, arg.split("=", 1)[1]))
        elif i > 0 and isinstance(argv[i - 1], str) and is_secret_flag(argv[i - 1]) and "=" not in argv[i - 1]:
            found.append((i, arg))
        else:
            found += [(i, secret) for secret in HF_TOKEN_SHAPE.findall(arg) + url_secrets(arg)]
    return [(i, v) for i, v in found if v and v != REDACTED and not v.startswith("-")]


def url_secrets(text: str) -> list[str]:
    """The credentials and secret query parameter values in the URLs of a text (none: [])."""
    data = text.encode("utf-8", "replace")
    userinfo = [m.group(0)[:-1].decode() for m in URL_CREDENTIALS_RE.finditer(data)]
    query = [m.group(0)[len(m.group(1)) :].decode() for m in URL_SECRET_QUERY_RE.finditer(data)]
    return userinfo + query

"""What counts as a secret: environment variable names, config keys and token shapes.

One list, used by the config check (a secret written into server_env stops the run) and by
results/redact.py (secrets never reach provenance, bundles or the report).
"""

from __future__ import annotations

import re

SECRET_ENV_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
SECRET_ENV_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
# A config or JSON key names a secret when one of its words (split at _ - . and spaces) is one of these.
SECRET_KEY_WORDS = {"TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
HF_TOKEN_RE = re.compile(rb"hf_[A-Za-z0-9]{30,}")
# The same Hugging Face token shape, for text (the config check) rather than bytes (redaction).
HF_TOKEN_SHAPE = re.compile(HF_TOKEN_RE.pattern.decode())


def is_secret_env_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_ENV_NAMES or any(word in upper for word in SECRET_ENV_WORDS)


def is_secret_key(key: str) -> bool:
    words = re.split(r"[_\-.\s]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key)))
    return any(word.upper() in SECRET_KEY_WORDS for word in words if word)

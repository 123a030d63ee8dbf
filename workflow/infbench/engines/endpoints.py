"""The URLs of an external OpenAI-compatible endpoint, from `base_url` as users write it.

The OpenAI SDK's convention is a base URL that ends in the API version (`http://host:8000/v1`,
`https://api.openai.com/v1`, or another prefix such as Gemini's `.../v1beta/openai`), to which
`/chat/completions` and `/models` are appended. Many users write the server's root instead
(`http://host:8000`). Both are accepted: a base URL without a path gets `/v1`; one with a path is
the API base as written.

Readiness: `GET {api base}/models`, the OpenAI-standard route every such server and hosted API
answers, unless the config names a `health_path` (then `GET {server root}{health_path}`, as for the
engines infbench starts). The server's Prometheus metrics: `metrics_url` when given (a full URL, or
a path on the server root), else none.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class EndpointUrls:
    root: str  # scheme://host[:port]
    api_base: str  # where /chat/completions and /models hang
    chat: str
    ready: str  # answers 200 when the endpoint can take requests
    metrics: str | None  # Prometheus text, if the endpoint has it


def endpoint_urls(base_url: str, health_path: str | None = None, metrics_url: str | None = None) -> EndpointUrls:
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url {base_url!r}: expected http(s)://HOST[:PORT][/PATH]")
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = parts.path.rstrip("/")
    api_base = root + (path or "/v1")
    ready = f"{root}/{health_path.lstrip('/')}" if health_path else f"{api_base}/models"
    metrics = None
    if metrics_url:
        metrics = metrics_url if urlsplit(metrics_url).scheme else f"{root}/{metrics_url.lstrip('/')}"
    return EndpointUrls(root=root, api_base=api_base, chat=f"{api_base}/chat/completions", ready=ready, metrics=metrics)

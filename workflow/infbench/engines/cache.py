"""How each engine kind keeps a scenario's prefix cache cold (or leaves it warm), and how it says what
it served from its cache: the facts of docs/cache-and-sampling.md as plans the plug-ins return.

A scenario declares `cache: cold | warm`. Cold means no request is served from a prefix an earlier
request of the run computed (beyond what one request shares with itself). Each kind uses its own
control, chosen so that one server can run cold and warm scenarios side by side where the engine
allows it:

- vLLM: a `cache_salt` unique to each cold request (blocks are hashed with the salt: nothing is
  shared); `--enable-prompt-tokens-details` so that `usage` says how many prompt tokens were cached.
- llama.cpp: `"cache_prompt": false` on each cold request (its slot and host-RAM prompt caches are
  then neither read nor reused); its `usage` and `timings` always say what was reused.
- SGLang and TGI: their prefix cache is one switch per server (`--disable-radix-cache`,
  `PREFIX_CACHING=0`), so one server cannot run both: a config that asks for cold and warm scenarios
  on one SGLang or TGI engine is refused at start-up, naming the scenarios (declare two engines).
- transformers serve: keeps no KV cache between requests (nothing to control), except with
  `--continuous-batching`, whose block sharing has no switch: cold cannot be assured there, and its
  cold cells are marked rather than refused (the engine, not the config, lacks the control).
- openai (any server): cold if its config names the server's own controls (`cold_fields`,
  `cold_salt_field`), else not assured and marked the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field


class CacheConfigError(ValueError):
    """The scenarios ask for a cache state the engine cannot give them on one server."""


@dataclass(frozen=True)
class CachePlan:
    """What a server and its requests need for the scenarios' cache states, and what the tables say."""

    server_args: list[str] = field(default_factory=list)  # added to the server's command line
    server_env: dict[str, str] = field(default_factory=dict)  # added to its environment
    cold_fields: dict = field(default_factory=dict)  # added to every cold request
    cold_salt_field: str | None = None  # set to a value unique to each cold request
    cached_tokens_absent_is_zero: bool = False  # the engine leaves the field out at 0
    reports_cached_tokens: bool = False  # usage says how many prompt tokens came from the cache
    # How cold is kept (the settings line under the tables), and why it cannot be assured (None: it is).
    control: str = ""
    not_assured: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def states(scenarios: Iterable) -> set[str]:
    """The cache states the scenarios declare (objects with a `cache` attribute, or dicts)."""
    return {s["cache"] if isinstance(s, dict) else s.cache for s in scenarios}


def _names(scenarios: Iterable, state: str) -> str:
    return ", ".join(
        s["name"] if isinstance(s, dict) else s.name
        for s in scenarios
        if (s["cache"] if isinstance(s, dict) else s.cache) == state
    )


def one_switch_per_server(engine: str, kind: str, scenarios: list, switch: str) -> None:
    """SGLang, TGI: refuse cold and warm scenarios on one server, naming both sides."""
    if states(scenarios) == {"cold", "warm"}:
        raise CacheConfigError(
            f"engines.{engine}: {kind}'s prefix cache is one switch per server ({switch}), so it cannot run "
            f"cold scenarios ({_names(scenarios, 'cold')}) and warm ones ({_names(scenarios, 'warm')}) on one "
            f"server: declare a second engine of kind {kind} for the warm ones"
        )


def vllm_plan() -> CachePlan:
    return CachePlan(
        server_args=["--enable-prompt-tokens-details"],
        cold_salt_field="cache_salt",
        reports_cached_tokens=True,
        control="prefix cache on (vLLM's default); cold scenarios: a cache_salt unique to each request",
    )


def llamacpp_plan() -> CachePlan:
    return CachePlan(
        cold_fields={"cache_prompt": False},
        reports_cached_tokens=True,
        control="slot and host-RAM prompt caches on (llama.cpp's default); cold scenarios: cache_prompt false "
        "on each request",
    )


def sglang_plan(engine: str, scenarios: list) -> CachePlan:
    one_switch_per_server(engine, "sglang", scenarios, "--disable-radix-cache")
    cold = "cold" in states(scenarios)
    return CachePlan(
        server_args=["--enable-cache-report", *(["--disable-radix-cache"] if cold else [])],
        cached_tokens_absent_is_zero=True,
        reports_cached_tokens=True,
        control="radix cache off (--disable-radix-cache)" if cold else "radix cache on (SGLang's default)",
    )


def tgi_plan(engine: str, scenarios: list) -> CachePlan:
    one_switch_per_server(engine, "tgi", scenarios, "PREFIX_CACHING=0")
    cold = "cold" in states(scenarios)
    return CachePlan(
        server_env={"PREFIX_CACHING": "0"} if cold else {},
        control="prefix caching off (PREFIX_CACHING=0)" if cold else "prefix caching on (TGI's default)",
    )


def transformers_plan(continuous_batching: bool) -> CachePlan:
    if not continuous_batching:
        return CachePlan(control="no prefix cache (transformers serve keeps no KV cache between requests)")
    return CachePlan(
        control="continuous batching shares KV blocks between requests",
        not_assured="transformers serve --continuous-batching shares KV blocks between requests and has no "
        "switch to turn it off",
    )


def openai_plan(cold_fields: dict | None, cold_salt_field: str | None) -> CachePlan:
    if cold_fields or cold_salt_field:
        said = ", ".join(
            [
                *(f"{k}={v!r}" for k, v in (cold_fields or {}).items()),
                *([f"{cold_salt_field} unique per request"] if cold_salt_field else []),
            ]
        )
        return CachePlan(
            cold_fields=dict(cold_fields or {}),
            cold_salt_field=cold_salt_field,
            control=f"cold scenarios: {said} on each request (from the config)",
        )
    return CachePlan(
        control="unknown server: its prefix cache is not controlled",
        not_assured="an openai engine's cache is not controlled unless its config gives cold_fields or cold_salt_field",
    )

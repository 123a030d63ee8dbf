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
  `PREFIX_CACHING=0`): off when every scenario is cold; with warm scenarios beside cold ones it stays
  on, and the cold ones are marked as not assured (declare a second engine for them).
- transformers serve: keeps no KV cache between requests (nothing to control), except with
  `--continuous-batching`, whose block sharing has no switch: cold cannot be assured there.
- openai (any server): cold if its config names the server's own controls (`cold_fields`,
  `cold_salt_field`), else not assured.

Where cold is not assured the run goes on and the cells are marked (results/conditions.py), with the
reason under the table, rather than stopping: a run is a matrix of engines, and one engine's missing
control must not cost the others' figures (as an engine that cannot start here shows n/a).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace


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
    """The names of the scenarios (objects or dicts) that declare `state`."""
    return ", ".join(
        s["name"] if isinstance(s, dict) else s.name
        for s in scenarios
        if (s["cache"] if isinstance(s, dict) else s.cache) == state
    )


def _one_switch(kind: str, scenarios: list, switch: str, off: CachePlan, on: CachePlan) -> CachePlan:
    """SGLang, TGI: the cache is one switch per server. All cold: off; any warm: on, and then the cold
    scenarios beside them are not assured (marked in the tables, with how to fix it)."""
    declared = states(scenarios)
    if "warm" not in declared:
        return off
    if "cold" not in declared:
        return on
    return replace(
        on,
        not_assured=f"{kind}'s prefix cache is one switch per server ({switch}): it stays on for the warm "
        f"scenarios ({_names(scenarios, 'warm')}), so the cold ones ({_names(scenarios, 'cold')}) may be served "
        f"from it; declare a second engine of kind {kind} for them",
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


def sglang_plan(scenarios: list) -> CachePlan:
    report = {"cached_tokens_absent_is_zero": True, "reports_cached_tokens": True}  # left out at 0
    off = CachePlan(
        server_args=["--enable-cache-report", "--disable-radix-cache"],
        control="radix cache off (--disable-radix-cache)",
        **report,
    )
    on = CachePlan(server_args=["--enable-cache-report"], control="radix cache on (SGLang's default)", **report)
    return _one_switch("sglang", scenarios, "--disable-radix-cache", off, on)


def tgi_plan(scenarios: list) -> CachePlan:
    off = CachePlan(server_env={"PREFIX_CACHING": "0"}, control="prefix caching off (PREFIX_CACHING=0)")
    on = CachePlan(control="prefix caching on (TGI's default)")
    return _one_switch("tgi", scenarios, "PREFIX_CACHING=0", off, on)


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

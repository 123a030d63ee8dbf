"""The engine plug-ins (engines/kinds/) and the schema agree: the same kinds, and every config key of
an engine either common to all kinds or a field of exactly the kinds' Settings its description names."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from infbench.defaults import load_schema
from infbench.engines.base import COMMON_CONFIG_KEYS, Engine, EngineSettings, engine_for, engine_kinds

ENGINE_SCHEMA = load_schema()["properties"]["engines"]["additionalProperties"]


def _own_keys(engine: Engine) -> set[str]:
    return {f.name for f in fields(engine.Settings)}


def test_the_schema_lists_exactly_the_registered_kinds():
    assert sorted(ENGINE_SCHEMA["properties"]["kind"]["enum"]) == sorted(engine_kinds())


def test_every_engine_key_in_the_schema_is_common_or_some_kinds_own():
    own = set().union(*(_own_keys(e) for e in engine_kinds().values()))
    assert set(ENGINE_SCHEMA["properties"]) == set(COMMON_CONFIG_KEYS) | own
    assert not set(COMMON_CONFIG_KEYS) & own, "a kind's Settings repeats a common key"


@pytest.mark.parametrize("kind", sorted(engine_kinds()))
def test_a_kinds_keys_are_described_as_its_own(kind):
    """`threads` says "llamacpp only: ...": the description names the kinds whose Settings have it."""
    for key in _own_keys(engine_for(kind)):
        owners = sorted(k for k, e in engine_kinds().items() if key in _own_keys(e))
        described = re.match(r"([\w ,]+?) only:", ENGINE_SCHEMA["properties"][key].get("description", ""))
        assert described, f"engines.*.{key}: its description should start with '{' or '.join(owners)} only:'"
        assert sorted(re.split(r",\s*|\s+or\s+", described.group(1))) == owners, key


@pytest.mark.parametrize("kind", sorted(engine_kinds()))
def test_each_kind_is_complete(kind):
    engine = engine_for(kind)
    assert engine.kind == kind and engine.label
    assert issubclass(engine.Settings, EngineSettings)
    assert type(engine).plan is not Engine.plan, f"{kind}: no plan()"
    engine.Settings()  # every key of a kind has a default: an engine entry may leave it out


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown engine kind 'mlc-llm'; known: llamacpp, openai"):
        engine_for("mlc-llm")

"""An installed (non-editable) infbench has what it reads at run time: the schema and the builtin
prompts are package data inside infbench/, listed in pyproject.toml's package-data."""

from __future__ import annotations

import fnmatch

import pytest
from conftest import REPO
from infbench.defaults import SCHEMA_PATH, load_schema

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
PACKAGE = REPO / "workflow" / "infbench"


def test_the_schema_is_package_data_and_the_only_copy():
    assert SCHEMA_PATH.resolve().parent == (PACKAGE / "data").resolve()
    assert load_schema()["properties"]["engines"]
    copies = [p for folder in ("config", "workflow") for p in (REPO / folder).rglob("config.schema.yaml")]
    assert [p.relative_to(REPO).as_posix() for p in copies] == ["workflow/infbench/data/config.schema.yaml"]


def test_every_data_file_is_listed_as_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["infbench"]
    data = [p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "data").iterdir()]
    assert data and all(any(fnmatch.fnmatch(name, g) for g in globs) for name in data), (data, globs)

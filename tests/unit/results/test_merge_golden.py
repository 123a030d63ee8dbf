"""The merge writes the same bytes as before for a fixed raw record set (tests/data/merge_golden).

The tables were frozen with the merge as it was before it became polars-native; any change of a
figure, a rounding or a float's last digit in summary.csv fails here."""

from __future__ import annotations

import pytest
from conftest import DATA
from infbench.handoff import MergePlan
from infbench.results.tables import merge

GOLDEN = DATA / "merge_golden"
TABLES = ("inference_speed.md", "throughput.md", "details.md", "workloads.md", "summary.csv", "merge_plan.json")


@pytest.mark.parametrize("name", ["natural", "fixed"])
def test_merge_reproduces_the_frozen_tables_byte_for_byte(tmp_path, name):
    case = GOLDEN / name
    plan = MergePlan.from_json((case / "plan.json").read_text())
    merge(case / "raw", tmp_path, plan)
    for table in TABLES:
        made, frozen = (tmp_path / table).read_bytes(), (case / "tables" / table).read_bytes()
        assert made == frozen, f"{name}/{table} differs from the frozen table"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TABLES)

"""Where each scenario of a merge plan goes: the scenario kind's class (measure/scenarios.py) says
which study table and plot show it and whether it has steps. The plan itself (handoff.MergePlan) is
only data; asking the scenario registry is the results layer's job."""

from __future__ import annotations

from infbench.handoff import HandoffError, MergePlan
from infbench.measure.scenarios import Scenario
from infbench.measure.scenarios import scenario_class as kind_class


def scenario_class(plan: MergePlan, name: str) -> type[Scenario]:
    """The scenario kind's class, which says where its summary goes."""
    try:
        return kind_class(plan.scenarios[name])
    except ValueError as err:
        raise HandoffError(f"merge plan: scenario {name}: {err}") from None


def scenarios_where(plan: MergePlan, flag: str) -> list[str]:
    """The scenarios whose class sets `flag`, e.g. "in_speed_table", "in_load_plot", "has_steps"."""
    return [name for name in plan.scenarios if getattr(scenario_class(plan, name), flag)]


def check_plan(plan: MergePlan) -> MergePlan:
    """Every scenario's kind is known: an unknown one is named here, not deep inside the merge."""
    for name in plan.scenarios:
        scenario_class(plan, name)
    return plan

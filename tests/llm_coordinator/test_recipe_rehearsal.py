"""The demo cell's main recipe rehearses cleanly in the twin: every step, the hand-over included."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_coordinator import wiring
from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.guardrails import check
from llm_coordinator.plan import RecipeIntent
from llm_coordinator.rehearsal import Rehearser
from plant.config import PlantDescription


@pytest.mark.slow
async def test_machine_part_rehearses_in_the_twin(demo_plant: PlantDescription, tmp_path: Path) -> None:
    """Feed, machine, hand the part from the UR5e to the Panda, inspect and sort it: the Panda
    takes the part without running into the UR5e's gripper, nothing touches a machine or a
    person, and the Panda works far enough from the walkway that nobody walking there stops it."""
    protos, notes = expand_recipe(demo_plant, RecipeIntent(goal="recipe", recipe="machine_part", params={}))
    plan = finish_plan(
        demo_plant, protos, work_order="machine one part", mode="intent", recipe="machine_part", notes=notes
    )
    assert check(plan, demo_plant).ok
    report = await Rehearser(demo_plant, wiring.twin_factory(render=False)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    assert [s["status"] for s in report.steps] == ["done"] * len(plan.steps)
    assert "hand_over" in [s["step"] for s in report.steps]
    assert report.observations.collisions == []
    assert report.observations.safety_stops == []

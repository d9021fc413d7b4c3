"""The demo cell's main recipe rehearses cleanly in the twin: every step, the hand-over included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
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


@pytest.mark.slow
@pytest.mark.parametrize("parts", [2, 5])
async def test_several_parts_rehearse_clean(demo_plant: PlantDescription, tmp_path: Path, parts: int) -> None:
    """``machine_part`` for several parts: the belt is fed from the magazine when it runs empty,
    the Panda sets each part down on a free place in the output bin it can reach, and nothing
    collides or stops. Every part ends in the bin, none on top of another."""
    protos, notes = expand_recipe(demo_plant, RecipeIntent(goal="recipe", recipe="machine_part", count=parts))
    plan = finish_plan(
        demo_plant, protos, work_order=f"machine {parts} parts", mode="intent", recipe="machine_part", notes=notes
    )
    assert check(plan, demo_plant).ok
    seen: dict[str, object] = {}
    factory = wiring.twin_factory(render=False)

    @asynccontextmanager
    async def watching(plant: PlantDescription) -> AsyncIterator[object]:
        async with factory(plant) as session:
            yield session
            seen["parts"] = session.twin.part_positions()

    report = await Rehearser(demo_plant, watching).rehearse(plan, tmp_path)  # type: ignore[arg-type]
    assert report.ok, report.reason
    assert report.observations.collisions == [] and report.observations.safety_stops == []
    out = demo_plant.bins()["output_bin"]
    (bx, by, bz), (sx, sy, _) = out.pose.xyz_m, out.size_m
    where = seen["parts"]
    assert isinstance(where, dict)
    in_bin = [xyz for xyz in where.values() if abs(xyz[0] - bx) < sx / 2 and abs(xyz[1] - by) < sy / 2]
    assert len(in_bin) == parts, where
    side = max(demo_plant.part_types["blank_al"].size_m)
    for i, a in enumerate(in_bin):
        assert a[2] < bz + 0.01 + side, f"a part lies on another: {where}"
        for b in in_bin[i + 1 :]:
            assert np.hypot(a[0] - b[0], a[1] - b[1]) > side * 0.9, where

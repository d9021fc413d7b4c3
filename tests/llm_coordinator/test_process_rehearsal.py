"""Rehearsal in a worker process, starting from a captured twin state (as the console does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_coordinator.plan import Plan, Step
from llm_coordinator.rehearsal import ProcessRehearser
from plant.config import PlantDescription
from plant.packml import Command
from sim.session import twin_factory
from sim.twin import Twin

pytestmark = pytest.mark.slow


async def test_the_rehearsal_starts_where_the_plant_is(demo_plant: PlantDescription, tmp_path: Path) -> None:
    plan = Plan(
        work_order="run a cycle on the CNC",
        mode="direct",
        steps=[Step(id="cycle", agent="cnc_1", skill="run_cycle", args={"program": 3})],
    )
    live = Twin(demo_plant)
    live.step(2500)  # 10 s
    rehearser = ProcessRehearser(demo_plant, twin_factory, render=False, start=live.capture)
    from_zero = ProcessRehearser(demo_plant, twin_factory, render=False)
    try:
        fresh = await from_zero.rehearse(plan, tmp_path / "fresh")
        assert fresh.ok, fresh.reason
        assert fresh.observations.sim_time_s < live.time_s + 8.0
        as_is = await rehearser.rehearse(plan, tmp_path / "as_is")
        assert as_is.ok, as_is.reason
        assert as_is.observations.sim_time_s >= live.time_s + 8.0  # began at the live twin's time
        # Someone opened the CNC's door in the plant: the same plan now fails in rehearsal.
        live.machines["cnc_1"].command(Command.OPEN_DOOR)
        live.step(500)
        door_open = await rehearser.rehearse(plan, tmp_path / "door_open")
        assert not door_open.ok and "door" in door_open.reason, door_open.reason
    finally:
        rehearser.close()
        from_zero.close()

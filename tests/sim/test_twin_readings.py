"""A twin started from what the agents of a live plant read (machine statuses, joint positions,
parts seen), as a console over a real plant rehearses; and the picks a plan cannot serve with the
parts where they are."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.plan import RecipeIntent
from plant.config import PlantDescription
from plant.packml import Command, State
from robots.parts import missing_parts
from sim.twin import MachineReading, PlantReadings, Twin


def _readings_of(twin: Twin, parts: bool = True) -> PlantReadings:
    """What agents reading ``twin`` over the network would see."""
    machines = {
        n: MachineReading(
            int(tm.state),
            tm.state_model.door_closed if tm.state_model.has_door else None,
            tm.state_model.cycle_count,
            tm.state_model.part_count,
            tm.state_model.fault_code,
            tm.state_model.fault_text,
        )
        for n, tm in twin.machines.items()
    }
    robots = {r: tuple(float(q) for q in twin.joint_positions(r)) for r in twin.robot_names()}
    return PlantReadings(
        twin.plant.name,
        machines,
        robots,
        {r: twin.gripper_closure(r) for r in twin.robot_names()},
        twin.part_positions() if parts else {},
    )


def test_a_twin_starts_where_the_readings_put_the_plant(demo_plant: PlantDescription) -> None:
    live = Twin(demo_plant)
    live.machines["cnc_1"].command(Command.RESET)
    live.step(200)
    live.machines["cnc_1"].command(Command.OPEN_DOOR)
    live.machines["conveyor_1"].command(Command.ABORT)
    live.set_joint_targets("ur5e_1", live.joint_positions("ur5e_1") + 0.3)
    live.step(600)
    state = live.capture()
    live.restore(state)  # (the readings of a twin at rest, whatever it did before)
    readings = pickle.loads(pickle.dumps(_readings_of(live)))  # as it crosses to a rehearsal's worker

    twin = Twin(demo_plant)
    twin.apply_readings(readings)
    assert twin.time_s == 0.0
    assert twin.machines["cnc_1"].state == State.IDLE and not twin.machines["cnc_1"].state_model.door_closed
    assert twin.machines["conveyor_1"].state == State.ABORTED
    np.testing.assert_allclose(twin.joint_positions("ur5e_1"), live.joint_positions("ur5e_1"), atol=1e-9)
    np.testing.assert_allclose(twin.joint_targets("ur5e_1"), live.joint_positions("ur5e_1"), atol=1e-9)
    for name, xyz in live.part_positions().items():
        np.testing.assert_allclose(twin.part_positions()[name], xyz, atol=1e-6)
    twin.step(250)  # held where it was read: nothing drifts, the door stays open, commands work
    np.testing.assert_allclose(twin.joint_positions("ur5e_1"), live.joint_positions("ur5e_1"), atol=0.01)
    twin.machines["cnc_1"].command(Command.CLOSE_DOOR)
    twin.step(500)
    assert twin.machines["cnc_1"].state_model.door_closed


def test_parts_known_absent_leave_the_cell_and_unknown_ones_stay_where_the_plant_puts_them(
    demo_plant: PlantDescription,
) -> None:
    fresh = Twin(demo_plant).part_positions()
    twin = Twin(demo_plant)
    readings = PlantReadings(demo_plant.name, parts={"part_2": (3.95, 1.6, 0.8)}, absent=frozenset({"part_1"}))
    twin.apply_readings(readings)
    where = twin.part_positions()
    assert where["part_2"] == pytest.approx((3.95, 1.6, 0.8))
    assert where["part_1"][0] < 0 and where["part_1"][1] < 0  # out of the cell
    twin.apply_readings(PlantReadings(demo_plant.name))
    for name, xyz in fresh.items():
        assert twin.part_positions()[name] == pytest.approx(xyz)


def test_readings_of_another_plant_are_refused(demo_plant: PlantDescription) -> None:
    twin = Twin(demo_plant)
    with pytest.raises(ValueError, match="other_cell"):
        twin.apply_readings(PlantReadings("other_cell"))
    with pytest.raises(ValueError, match="machine lathe_9"):
        twin.apply_readings(PlantReadings(demo_plant.name, machines={"lathe_9": MachineReading(int(State.IDLE))}))


def _steps(plant: PlantDescription, recipe: str, count: int = 1) -> list[tuple[str, str, str, dict[str, object]]]:
    protos, notes = expand_recipe(plant, RecipeIntent(goal="recipe", recipe=recipe, count=count))
    plan = finish_plan(plant, protos, work_order="test", mode="intent", recipe=recipe, notes=notes)
    return [(s.id, s.agent, s.skill, dict(s.args)) for s in plan.steps]


def test_picks_without_a_part_are_named_with_where_the_parts_are(demo_plant: PlantDescription) -> None:
    fresh = Twin(demo_plant).part_positions()
    blanks = [n for n, p in demo_plant.parts.items() if p.type == "blank_al"]
    n = len(blanks)
    # One blank per run, from the belt or, once it is fed, from the magazine that feeds it.
    assert missing_parts(demo_plant, fresh, _steps(demo_plant, "machine_part", n)) == []
    (extra,) = missing_parts(demo_plant, fresh, _steps(demo_plant, "machine_part", n + 1))
    assert extra.startswith(f"step pick_blank_{n + 1} (ur5e_1 picks a blank_al at conveyor_pick) would find none")
    # After runs, both blanks lie in the output bin: the recipe is refused, saying where they are.
    used = {"part_1": (3.96, 1.59, 0.80), "part_2": (3.91, 1.64, 0.79)}
    (why,) = missing_parts(demo_plant, used, _steps(demo_plant, "machine_part"))
    assert "on the belt of conveyor_1" in why and "part_1 at output_bin; part_2 at output_bin" in why
    (gone,) = missing_parts(demo_plant, {}, _steps(demo_plant, "machine_part"))
    assert "part_1 not in the cell; part_2 not in the cell" in gone
    # A pick served by a part an earlier step of the plan puts there needs no part now.
    put = ("put", "ur5e_1", "place", {"location": "handover_point"})
    take = ("take", "panda_1", "pick", {"part_type": "blank_al", "location": "handover_point"})
    assert missing_parts(demo_plant, {}, [put, take]) == []
    assert missing_parts(demo_plant, {}, [take]) != []

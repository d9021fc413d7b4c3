"""A twin's state captured and restored into another twin of the plant (rehearsals start from
the live twin's state this way, in another process)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from plant.config import PlantDescription
from plant.packml import Command, State
from sim.twin import Twin


def _busy(plant: PlantDescription) -> Twin:
    twin = Twin(plant)
    twin.step(100)
    twin.machines["conveyor_1"].command(Command.RESET)
    twin.step(100)
    twin.machines["conveyor_1"].command(Command.START)
    twin.machines["cnc_1"].command(Command.OPEN_DOOR)
    twin.set_joint_targets("ur5e_1", twin.joint_positions("ur5e_1") + 0.2)
    twin.step(300)
    return twin


def test_a_restored_twin_goes_on_exactly_as_the_original(demo_plant: PlantDescription) -> None:
    original = _busy(demo_plant)
    state = pickle.loads(pickle.dumps(original.capture()))  # as it crosses to a worker process
    copy = Twin(demo_plant)
    copy.restore(state)
    assert copy.time_s == original.time_s
    assert copy.machines["conveyor_1"].state == State.EXECUTE
    assert copy.machines["conveyor_1"].belt_speed_m_s > 0
    for twin in (original, copy):
        twin.step(400)
    np.testing.assert_array_equal(copy.joint_positions("ur5e_1"), original.joint_positions("ur5e_1"))
    assert copy.part_positions() == original.part_positions()
    assert copy.people_positions() == original.people_positions()
    for name, tm in original.machines.items():
        twin_machine = copy.machines[name]
        assert (twin_machine.state, twin_machine.state_model.door_closed, twin_machine.state_model.cycle_count) == (
            tm.state,
            tm.state_model.door_closed,
            tm.state_model.cycle_count,
        )
    # The capture is a copy: stepping the original does not change it.
    assert state.physics[0] < original.time_s


@pytest.mark.parametrize("robot", ["ur5e_1", "panda_1"])
def test_a_grasp_or_a_release_under_way_goes_on_in_the_restored_twin(demo_plant: PlantDescription, robot: str) -> None:
    """Captured while the fingers close round a part (not yet touching it), then while they open
    round it (not yet let go): the restored twin takes the part, and lets go of it, at the same
    tick as the original."""
    original = Twin(demo_plant)
    original.step(50)
    part = sorted(original.part_positions())[0]
    original.put_part(part, tuple(original.tool_position(robot)))
    original.set_gripper(robot, 1.0)
    assert original.held_part(robot) is None
    for when in ("grasping", "letting go"):
        copy = Twin(demo_plant)
        copy.restore(pickle.loads(pickle.dumps(original.capture())))
        for twin in (original, copy):
            twin.step(12)
        assert copy.held_part(robot) == original.held_part(robot) == part, when
        if when == "grasping":
            original.set_gripper(robot, 0.0)  # opens; lets go release_s later
            continue
        for twin in (original, copy):
            twin.step(40)
        assert copy.held_part(robot) is original.held_part(robot) is None
        assert copy.part_positions() == original.part_positions()


def test_a_state_of_another_plant_is_refused(demo_plant: PlantDescription) -> None:
    state = _busy(demo_plant).capture()
    data = demo_plant.model_dump()
    data["name"] = "other_cell"
    other = Twin(PlantDescription.model_validate(data))
    with pytest.raises(ValueError, match="another plant"):
        other.restore(state)

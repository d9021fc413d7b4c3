"""The twin of the demo cell: it builds, steps, carries parts, walks people, reports contacts
and poses, and follows robot and machine commands."""

from __future__ import annotations

import numpy as np
import pytest

from plant.config import PlantDescription
from plant.packml import Command, CommandRefused, State
from sim.twin import Twin


@pytest.fixture(scope="module")
def twin(demo_plant: PlantDescription) -> Twin:
    return Twin(demo_plant)


@pytest.fixture
def fresh(twin: Twin) -> Twin:
    twin.reset()
    return twin


def test_structure(fresh: Twin) -> None:
    names = {fresh.model.body(i).name for i in range(fresh.model.nbody)}
    assert {"conveyor_1", "cnc_1", "cnc_1/door", "insp_1", "part_1", "walker_1", "quarantine_bin"} <= names
    # Real arm kinematics: the UR5e and Panda joints with their published limits.
    assert len(fresh.joint_positions("ur5e_1")) == 6
    assert len(fresh.joint_positions("panda_1")) == 7
    assert fresh.model.nmesh > 20  # meshes, not boxes
    assert {fresh.model.camera(i).name for i in range(fresh.model.ncam)} >= {"overview", "top"}


def test_robots_hold_home_and_follow_targets(fresh: Twin, demo_plant: PlantDescription) -> None:
    home = np.array(demo_plant.robots["panda_1"].home())
    fresh.step(250)
    assert np.allclose(fresh.joint_positions("panda_1"), home, atol=0.01)
    target = home + np.array([0.3, 0.2, 0, 0.2, 0, 0, 0])
    fresh.set_joint_targets("panda_1", target)
    tool_before = fresh.tool_position("panda_1")
    fresh.step(500)
    assert np.allclose(fresh.joint_positions("panda_1"), target, atol=0.02)
    assert np.linalg.norm(fresh.tool_position("panda_1") - tool_before) > 0.05


def test_conveyor_carries_parts_and_completes(fresh: Twin) -> None:
    belt = fresh.machine("conveyor_1")
    x0 = fresh.part_positions()["part_2"][0]
    belt.command(Command.RESET)
    fresh.step(100)
    belt.command(Command.START)
    fresh.step(500)  # 2 s
    x1 = fresh.part_positions()["part_2"][0]
    assert 0.15 < x1 - x0 < 0.45  # 0.15 m/s for ~1.7 s of running
    fresh.step(2500)
    assert belt.state in (State.COMPLETING, State.COMPLETE)
    assert belt.part_at_end()
    assert belt.belt_speed_m_s == 0.0
    texts = [e.text for e in fresh.events if e.source == "conveyor_1"]
    assert "EXECUTE -> COMPLETING" in texts


def test_machine_door_interlock_and_cycle(fresh: Twin) -> None:
    cnc = fresh.machine("cnc_1")
    cnc.command(Command.RESET)
    fresh.step(100)
    cnc.command(Command.OPEN_DOOR)
    fresh.step(300)
    door_z = fresh.body_pose("cnc_1/door")[0][2]
    with pytest.raises(CommandRefused, match="door is open"):
        cnc.command(Command.START)
    cnc.command(Command.CLOSE_DOOR)
    fresh.step(300)
    assert fresh.body_pose("cnc_1/door")[0][2] < door_z - 0.3
    cnc.command(Command.START)
    fresh.step(round(9.0 / fresh.config.ctrl_dt_s))
    assert cnc.state == State.COMPLETE and cnc.state_model.cycle_count == 1


def test_people_walk_the_walkway(fresh: Twin, demo_plant: PlantDescription) -> None:
    zone = demo_plant.zones["walkway_east"].shape
    seen = []
    for _ in range(20):
        fresh.step(100)
        x, y, _v = fresh.people_positions()["walker_1"]
        assert zone.contains_xy(x, y)
        seen.append(y)
    assert max(seen) - min(seen) > 2.0
    # Kinematic: the body is where the script puts it.
    pos, _ = fresh.body_pose("walker_1")
    assert pos[1] == pytest.approx(seen[-1])


def test_contacts_report_touches(fresh: Twin) -> None:
    fresh.step(50)
    pairs = {(c.body1, c.body2) for c in fresh.contacts()}
    assert ("conveyor_1", "part_1") in pairs or ("part_1", "conveyor_1") in pairs
    # Swing the UR5e down over the conveyor: its forearm must be reported touching the belt.
    q = fresh.joint_positions("ur5e_1") + np.array([-1.57, 1.4, 0, 0, 0, 0])
    fresh.set_joint_targets("ur5e_1", q)
    fresh.step(500)
    touches = {frozenset((c.body1, c.body2)) for c in fresh.contacts()}
    assert frozenset(("conveyor_1", "ur5e_1/forearm_link")) in touches


def test_same_seed_same_run(demo_plant: PlantDescription, twin: Twin) -> None:
    twin.reset()
    twin.machine("conveyor_1").command(Command.RESET)
    twin.step(300)
    a = twin.data.qpos.copy()
    twin.reset()
    twin.machine("conveyor_1").command(Command.RESET)
    twin.step(300)
    assert np.array_equal(a, twin.data.qpos)

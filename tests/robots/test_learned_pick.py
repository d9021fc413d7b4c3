"""A pick from the running conveyor: its approach phase runs the shipped policy, every command
of the phase through the safety supervisor; a corrupt checkpoint leaves the scripted approach."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from plant.config import PlantDescription
from plant.packml import Command
from policies.checkpoint import ONNX_FILE
from robots.interface import FloatArray, Outcome, SkillGoal, SkillResult
from robots.learned import ApproachInput, LearnedApproach, shipped_checkpoint
from robots.runtime import RobotRuntime
from robots.safety import Applied
from sim.hardware import build_runtime
from sim.twin import Twin

# The 1 ms budget is measured by bench/bench_policy.py on a pinned core; tests share a busy
# machine, so they give the runtime room.
ROOMY = 0.05
START_X_M = 2.05  # the pick starts when the part passes here, 0.4 m before the pick location


@pytest.fixture(scope="module")
def twin(demo_plant: PlantDescription) -> Twin:
    return Twin(demo_plant)


class SupervisorSpy:
    """Records, per phase, each command handed to the supervisor and what it let through."""

    def __init__(self, rt: RobotRuntime, belt_speed: Callable[[], float]) -> None:
        self.rt = rt
        self.belt_speed = belt_speed
        self.calls: list[tuple[str, FloatArray | None, Applied]] = []
        self.belt: list[tuple[str, float]] = []  # (phase, belt speed) at every call
        self._filter = rt.supervisor.filter
        rt.supervisor.filter = self.filter  # type: ignore[method-assign]

    def filter(self, command: FloatArray | None, now_s: float) -> Applied:
        applied = self._filter(command, now_s)
        self.calls.append((self.rt.phase, None if command is None else np.array(command), applied))
        self.belt.append((self.rt.phase, self.belt_speed()))
        return applied

    def phase(self, label: str) -> list[tuple[FloatArray | None, Applied]]:
        return [(c, a) for p, c, a in self.calls if p == label]


def _pick_moving_part(twin: Twin, rt: RobotRuntime) -> SkillResult:
    twin.reset()
    rt.step()
    belt = twin.machine("conveyor_1")
    belt.command(Command.RESET)
    for _ in range(100):
        twin.step(1)
        rt.step()
    belt.command(Command.START)
    for _ in range(20_000):
        twin.step(1)
        rt.step()
        if twin.part_positions()["part_2"][0] >= START_X_M:
            break
    assert belt.belt_speed_m_s > 0, "the belt runs"
    goal = SkillGoal("pick-moving", rt.robot, "pick", {"part_type": "blank_al", "location": "conveyor_pick"})
    assert rt.submit(goal) == (True, "")
    res = rt.run_lockstep(lambda: twin.step(1), 15.0)
    assert res is not None
    return res


def test_the_ur5e_picks_a_moving_part_with_the_learned_approach(twin: Twin) -> None:
    rt = build_runtime(twin, "ur5e_1", policy_budget_s=ROOMY)
    assert rt.tracking is not None and rt.tracking.approach.kind == "learned", rt.tracking
    spy = SupervisorSpy(rt, lambda: twin.machine("conveyor_1").belt_speed_m_s)
    speeds: list[tuple[float, float]] = []  # (belt speed seen by the phase, the twin's belt speed)
    approach = rt.tracking.approach
    asked: list[FloatArray] = []
    command = approach.command

    def record(sensed: ApproachInput, q_applied: FloatArray) -> FloatArray:
        q = command(sensed, q_applied)
        asked.append(q)
        speeds.append((float(sensed.goal_vel_m_s[0]), twin.machine("conveyor_1").belt_speed_m_s))
        return q

    approach.command = record  # type: ignore[method-assign,assignment]
    res = _pick_moving_part(twin, rt)
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    assert twin.held_part("ur5e_1") == "part_2" and rt.holding == "blank_al"
    assert twin.part_positions()["part_2"][2] > 0.9  # lifted off the belt
    # The approach phase ran the policy the whole way, on a part moving on the running belt.
    assert ("approach", "learned", approach.reason) in rt.track_log and "policy" in approach.reason
    assert isinstance(approach, LearnedApproach) and not approach.handed_over
    # ... closing in on the part while the belt carried it, the belt speed reaching the policy.
    assert asked and all(seen == pytest.approx(0.15) and belt == pytest.approx(0.15) for seen, belt in speeds)
    # Every command of the phase went to the supervisor, and only what it let through went out.
    during = spy.phase("approach")
    assert len(during) == len(asked)
    for (cmd, applied), q in zip(during, asked, strict=True):
        assert cmd is not None and np.array_equal(cmd, q)
        assert applied.mode == "run" and not applied.refused
        lim = rt.supervisor.config.limits
        assert np.all(applied.position_rad >= lim.lower_rad) and np.all(applied.position_rad <= lim.upper_rad)
        assert np.all(np.abs(applied.velocity_rad_s) <= lim.max_speed_rad_s + 1e-9)
    assert spy.phase("descend") and spy.phase("lift")
    import itertools

    print([(p, len(list(g))) for p, g in itertools.groupby(spy.belt, key=lambda x: (x[0], x[1]))])
    # The gripper closed on the part while the belt still carried it.
    assert next(v for p, v in spy.belt if p == "grasp") == pytest.approx(0.15)


def test_a_corrupt_checkpoint_leaves_the_scripted_approach(twin: Twin, tmp_path: Path) -> None:
    shipped = shipped_checkpoint("ur5e")
    assert shipped is not None
    ckpt = tmp_path / "ckpt"
    shutil.copytree(shipped, ckpt)
    data = bytearray((ckpt / ONNX_FILE).read_bytes())
    data[-10] ^= 0x55
    (ckpt / ONNX_FILE).write_bytes(bytes(data))
    rt = build_runtime(twin, "ur5e_1", checkpoint=ckpt, policy_budget_s=ROOMY)
    assert rt.tracking is not None
    approach = rt.tracking.approach
    assert approach.kind == "scripted" and "policy refused" in approach.reason and "corrupt" in approach.reason
    spy = SupervisorSpy(rt, lambda: twin.machine("conveyor_1").belt_speed_m_s)
    res = _pick_moving_part(twin, rt)
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    assert twin.held_part("ur5e_1") == "part_2" and rt.holding == "blank_al"
    assert ("approach", "scripted", approach.reason) in rt.track_log
    assert spy.phase("approach")

"""The learned approach phase: chosen when its checkpoint fits, refused (scripted stays) when
not, and in the twin it closes in on a moving part through an ordinary command filter."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.envs  # noqa: F401
from plant.config import PlantDescription
from policies.checkpoint import ONNX_FILE
from robots.learned import (
    ApproachInput,
    ArmLimits,
    LearnedApproach,
    ScriptedApproach,
    limit_joint_velocity,
    make_approach,
    shipped_checkpoint,
)
from sim.envs import TaskConfig
from sim.envs.arm_tasks import ROBOT_NAME, TrackConveyorPartEnv

SHIPPED = shipped_checkpoint("ur5e")
CONTROL_DT = 0.004
# The 1 ms budget is measured by bench/bench_policy.py on a pinned core; tests share a busy
# machine, so they give the runtime room (the budget logic itself is tested with explicit values).
ROOMY = 0.05


def _env(**kw: Any) -> TrackConveyorPartEnv:
    env = gymnasium.make("atelier/TrackConveyorPart-UR5e-v0", **kw).unwrapped
    assert isinstance(env, TrackConveyorPartEnv)
    return env


@settings(max_examples=200, deadline=None)
@given(
    qd_des=st.lists(st.floats(-50, 50), min_size=6, max_size=6),
    prev_frac=st.lists(st.floats(-1, 1), min_size=6, max_size=6),
    q_frac=st.lists(st.floats(0, 1), min_size=6, max_size=6),
)
def test_joint_velocity_limits_hold(qd_des: list[float], prev_frac: list[float], q_frac: list[float]) -> None:
    lim = ArmLimits(
        lower_rad=np.array([-3.0, -2.0, -1.0, -3.0, -3.0, -3.0]),
        upper_rad=np.array([3.0, 2.0, 1.0, 3.0, 3.0, 3.0]),
        max_speed_rad_s=np.array([3.1, 3.1, 2.0, 2.5, 2.5, 2.5]),
        max_accel_rad_s2=np.array([8.0, 8.0, 5.0, 10.0, 10.0, 10.0]),
        max_tcp_speed_m_s=1.0,
    )
    prev = np.array(prev_frac) * lim.max_speed_rad_s
    q = lim.lower_rad + np.array(q_frac) * (lim.upper_rad - lim.lower_rad)
    qd = limit_joint_velocity(np.array(qd_des), prev, q, CONTROL_DT, lim)
    assert np.all(np.abs(qd) <= lim.max_speed_rad_s + 1e-9)
    q_next = q + qd * CONTROL_DT
    assert np.all(q_next >= lim.lower_rad - 1e-9) and np.all(q_next <= lim.upper_rad + 1e-9)
    # Acceleration holds unless a position limit forced a harder stop.
    free = (q_next > lim.lower_rad + 1e-9) & (q_next < lim.upper_rad - 1e-9)
    assert np.all(np.abs(qd - prev)[free] <= lim.max_accel_rad_s2[free] * CONTROL_DT + 1e-9)


def test_the_shipped_checkpoint_drives_the_ur5e(demo_plant: PlantDescription) -> None:
    assert SHIPPED is not None, "policies/checkpoints/track_conveyor_part_ur5e is shipped"
    env = _env()
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, SHIPPED, budget_s=ROOMY)
    assert isinstance(approach, LearnedApproach), approach.reason
    assert approach.runtime.info.env_id == "atelier/TrackConveyorPart-UR5e-v0"


def test_without_a_policy_the_scripted_approach_runs(demo_plant: PlantDescription) -> None:
    env = _env()
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, None)
    assert isinstance(approach, ScriptedApproach) and approach.reason == "no policy configured"


def test_a_policy_for_another_arm_leaves_the_scripted_skill(demo_plant: PlantDescription) -> None:
    panda = gymnasium.make("atelier/TrackConveyorPart-Panda-v0").unwrapped
    approach = make_approach(demo_plant.robots["panda_1"], panda.make_kinematics(), CONTROL_DT, SHIPPED)
    assert isinstance(approach, ScriptedApproach)
    assert "policy refused" in approach.reason and "shape (19,)" in approach.reason and "(20,)" in approach.reason


def test_a_corrupt_checkpoint_leaves_the_scripted_skill(demo_plant: PlantDescription, tmp_path: Path) -> None:
    assert SHIPPED is not None
    ckpt = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, ckpt)
    data = bytearray((ckpt / ONNX_FILE).read_bytes())
    data[-10] ^= 0x55
    (ckpt / ONNX_FILE).write_bytes(bytes(data))
    env = _env()
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, ckpt)
    assert isinstance(approach, ScriptedApproach)
    assert "corrupt" in approach.reason


def _supervisor_standin(q_cmd: np.ndarray, q_prev: np.ndarray, lim: ArmLimits) -> np.ndarray:
    """What a safety supervisor does to any command (joint limits, joint speed), returning what
    it let through. The real one is robots.safety; this keeps the test independent of it."""
    step = np.clip(q_cmd - q_prev, -lim.max_speed_rad_s * CONTROL_DT, lim.max_speed_rad_s * CONTROL_DT)
    return np.clip(q_prev + step, lim.lower_rad, lim.upper_rad)


def _close_in(env: TrackConveyorPartEnv, approach: LearnedApproach | ScriptedApproach, seconds: float) -> float | None:
    """Drive the twin at its control rate with the approach, every command through a filter;
    the time (s) at which the tool has stayed within the task's tolerance of the pre-grasp point
    for the task's hold time (the end of the phase), or None."""
    twin = env.twin
    q_applied = env.commanded_q
    approach.reset(q_applied)
    hover = np.array([0.0, 0.0, env.config.hover_m])
    belt = np.array([env._belt_speed, 0.0, 0.0])
    hold = round(env.config.hold_s / CONTROL_DT)
    inside = 0
    for tick in range(round(seconds / CONTROL_DT)):
        goal = np.asarray(twin.part_positions()["part"]) + hover
        sensed = ApproachInput(twin.joint_positions(ROBOT_NAME), twin.joint_velocities(ROBOT_NAME), goal, belt)
        q_cmd = approach.command(sensed, q_applied)
        q_applied = _supervisor_standin(q_cmd, q_applied, env.limits)
        twin.set_joint_targets(ROBOT_NAME, q_applied)
        twin.step(1)
        dist = float(np.linalg.norm(twin.tool_position(ROBOT_NAME) - goal))
        inside = inside + 1 if dist < env.config.goal_tolerance_m else 0
        if inside >= hold:
            return (tick + 1) * CONTROL_DT
    return None


def test_learned_approach_closes_in_on_a_moving_part_in_the_twin(demo_plant: PlantDescription) -> None:
    env = _env()
    env.reset(seed=5)
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, SHIPPED, budget_s=ROOMY)
    assert isinstance(approach, LearnedApproach), approach.reason
    t = _close_in(env, approach, 2.0)
    assert t is not None and t < 2.0
    assert not approach.handed_over


def test_a_late_policy_hands_over_to_the_scripted_approach(demo_plant: PlantDescription) -> None:
    env = _env(config=TaskConfig(belt_speed_m_s=(0.05, 0.05)))
    env.reset(seed=5)
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, SHIPPED, budget_s=ROOMY)
    assert isinstance(approach, LearnedApproach), approach.reason
    approach.runtime.budget_s = 0.0  # every answer is now late
    t = _close_in(env, approach, 3.0)
    assert approach.handed_over and "over the 0.0 ms budget" in approach.reason
    assert t is not None  # the scripted approach carried on and reached the slow part


def test_a_sensor_fault_hands_over(demo_plant: PlantDescription) -> None:
    env = _env()
    env.reset(seed=1)
    approach = make_approach(demo_plant.robots["ur5e_1"], env.make_kinematics(), CONTROL_DT, SHIPPED, budget_s=ROOMY)
    assert isinstance(approach, LearnedApproach), approach.reason
    q = env.commanded_q
    approach.reset(q)
    bad = ApproachInput(q, np.zeros(6), np.array([np.nan, 0.0, 1.0]), np.zeros(3))
    out = approach.command(bad, q)
    assert approach.handed_over and "non-finite" in approach.reason
    assert out.shape == (6,)

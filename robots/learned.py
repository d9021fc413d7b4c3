"""Learned phases of a skill, and the tool-velocity layer shared with the twin's training tasks.

A learned phase (today: closing in on a part that moves on the conveyor, before a grasp) asks a
small policy for a tool velocity at the policy rate and turns it into joint position commands
at the control rate. Those commands are ordinary commands: the runtime passes every one of them
through the safety supervisor, exactly like a scripted skill's.

This module also holds the pieces the twin's training environments (``sim.envs``) use, so that
training and the robot run the same code:

- :class:`ArmLimits`: a robot's joint and tool limits from its plant description (the limits
  the safety supervisor enforces);
- :func:`limit_joint_velocity`: speed, acceleration and position limits applied to a joint
  velocity for one control period;
- :class:`ToolVelocityController`: tool velocity (m/s, world frame) to joint velocities, holding
  the tool orientation (damped least squares on the arm Jacobian);
- :class:`ApproachObservation` and :func:`approach_spaces`: the observation a policy sees and its
  Gymnasium spaces;
- :class:`IKChase`: the scripted approach (inverse kinematics to the last seen goal), which is
  both the baseline a policy is measured against and the fallback when a policy is refused.

The phase controllers themselves are :class:`LearnedApproach` and :class:`ScriptedApproach`;
:func:`make_approach` picks one and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import gymnasium
import mujoco
import numpy as np
from numpy.typing import NDArray

from plant.config import Robot
from robots.kinematics import ArmKinematics

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

log = logging.getLogger(__name__)

# Bounds of the observation entries that are not joint angles. Wide enough that a working cell
# never reaches them (values beyond are clipped, and the policy normalises what it sees).
GOAL_OFFSET_MAX_M = 2.0  # tool-to-goal vector, per axis
TOOL_SPEED_MAX_M_S = 3.0  # measured tool velocity, per axis (UR5e and Panda TCPs stay under 2 m/s)
PART_SPEED_MAX_M_S = 1.0  # conveyor belts of the cell run at 0.5 m/s at most (the Modbus tag's max)
MEASUREMENT_AGE_MAX_S = 0.25  # older part measurements are stale; the supervisor's watchdog is shorter
#: Entries of the observation after the joint angles: goal offset (3), tool velocity (3), part
#: velocity (3), age of the part measurement (1), previous action (3).
OBS_EXTRA = 13


@dataclass(frozen=True)
class ArmLimits:
    """A robot's limits as the safety supervisor enforces them (rad, rad/s, rad/s^2, m/s)."""

    lower_rad: FloatArray
    upper_rad: FloatArray
    max_speed_rad_s: FloatArray
    max_accel_rad_s2: FloatArray
    max_tcp_speed_m_s: float

    @classmethod
    def from_robot(cls, robot: Robot) -> ArmLimits:
        """The resolved limits of a robot of a plant description (its own, else its model's)."""
        lim = np.asarray(robot.limits(), dtype=float)
        return cls(
            lower_rad=lim[:, 0].copy(),
            upper_rad=lim[:, 1].copy(),
            max_speed_rad_s=np.asarray(robot.joint_speeds(), dtype=float),
            max_accel_rad_s2=np.asarray(robot.joint_accels(), dtype=float),
            max_tcp_speed_m_s=float(robot.max_tcp_speed_m_s),
        )

    @property
    def dof(self) -> int:
        return len(self.lower_rad)


def limit_joint_velocity(
    qd_des: FloatArray, qd_prev: FloatArray, q_cmd: FloatArray, dt_s: float, limits: ArmLimits
) -> FloatArray:
    """The joint velocity (rad/s) to command for the next ``dt_s`` seconds.

    ``qd_des`` is scaled down as a whole when a joint would exceed its speed limit (so the tool
    keeps its direction), then each joint's change from ``qd_prev`` is bounded by its
    acceleration limit, and finally no joint may move past its position limit from ``q_cmd``
    within the period. Pure function; never fails for finite inputs (non-finite entries count
    as zero).
    """
    qd = np.nan_to_num(np.asarray(qd_des, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    over = float(np.max(np.abs(qd) / limits.max_speed_rad_s))
    if over > 1.0:
        qd = qd / over
    dv = limits.max_accel_rad_s2 * dt_s
    qd = np.clip(qd, qd_prev - dv, qd_prev + dv)
    return np.clip(qd, (limits.lower_rad - q_cmd) / dt_s, (limits.upper_rad - q_cmd) / dt_s)


def rotation_error(target_rot: FloatArray, rot: FloatArray) -> FloatArray:
    """Rotation vector (rad, world frame) that turns ``rot`` onto ``target_rot``."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (np.asarray(target_rot) @ np.asarray(rot).T).flatten())
    out = np.zeros(3)
    mujoco.mju_quat2Vel(out, quat, 1.0)
    return out


class ToolVelocityController:
    """Joint velocities that move the tool at a commanded linear velocity, orientation held.

    Damped least squares on the 6 x dof Jacobian: the linear rows follow the command, the
    angular rows turn the tool back to ``target_rot`` with gain ``rot_gain_1_s``; a redundant arm
    (Panda) also drifts toward ``rest_rad`` in the null space. Not thread-safe (the kinematics
    keep scratch data); about 30-60 us per call.
    """

    def __init__(
        self,
        kinematics: ArmKinematics,
        target_rot: FloatArray,
        rest_rad: Sequence[float] | FloatArray,
        rot_gain_1_s: float = 5.0,
        null_gain_1_s: float = 1.0,
        damping: float = 0.03,
    ) -> None:
        self.kin = kinematics
        self.target_rot = np.asarray(target_rot, dtype=float)
        self.rest = np.asarray(rest_rad, dtype=float)
        self.rot_gain = rot_gain_1_s
        self.null_gain = null_gain_1_s
        self.damping = damping

    def joint_velocity(self, q: FloatArray, tool_velocity_m_s: FloatArray) -> FloatArray:
        """Joint velocities (rad/s) at joint angles ``q`` for a tool velocity (m/s, world)."""
        _, rot = self.kin.fk(q)
        jac = self.kin.jacobian(q)
        task = np.concatenate(
            [np.asarray(tool_velocity_m_s, dtype=float), self.rot_gain * rotation_error(self.target_rot, rot)]
        )
        jjt = jac @ jac.T + (self.damping**2) * np.eye(6)
        qd = jac.T @ np.linalg.solve(jjt, task)
        if self.kin.dof > 6:
            null = np.eye(self.kin.dof) - np.linalg.pinv(jac) @ jac
            qd = qd + null @ (self.null_gain * (self.rest - q))
        return np.asarray(qd, dtype=float)


@dataclass(frozen=True)
class ApproachObservation:
    """What a robot knows when it closes in on a goal, at one policy step.

    ``goal_pos_m`` is where the goal was seen ``age_s`` seconds ago (for a part on a belt: the
    pre-grasp point above it), ``goal_vel_m_s`` how fast it moves (the belt speed the conveyor
    reports, along the belt), ``tool_pos_m``/``tool_vel_m_s`` the tool's grip point from the joint
    encoders, ``prev_action`` the policy's previous output. World frame, metres and seconds.
    """

    q_rad: FloatArray
    tool_pos_m: FloatArray
    tool_vel_m_s: FloatArray
    goal_pos_m: FloatArray
    goal_vel_m_s: FloatArray
    age_s: float
    prev_action: FloatArray

    def vector(self, limits: ArmLimits) -> Float32Array:
        """The flat observation (float32) in the layout of :func:`approach_spaces`, clipped to it."""
        v = np.concatenate(
            [
                np.clip(self.q_rad, limits.lower_rad, limits.upper_rad),
                np.clip(self.goal_pos_m - self.tool_pos_m, -GOAL_OFFSET_MAX_M, GOAL_OFFSET_MAX_M),
                np.clip(self.tool_vel_m_s, -TOOL_SPEED_MAX_M_S, TOOL_SPEED_MAX_M_S),
                np.clip(self.goal_vel_m_s, -PART_SPEED_MAX_M_S, PART_SPEED_MAX_M_S),
                [min(max(self.age_s, 0.0), MEASUREMENT_AGE_MAX_S)],
                np.clip(self.prev_action, -1.0, 1.0),
            ]
        )
        return v.astype(np.float32)


def approach_spaces(limits: ArmLimits) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    """Observation and action spaces of an approach phase for an arm with these limits.

    Observation: joint angles (rad, bounded by the joint limits), then the entries listed at
    :data:`OBS_EXTRA`. Action: tool velocity as a fraction of ``max_tcp_speed_m_s`` per axis, in
    [-1, 1]^3 (the norm is capped at 1 too).
    """
    n = limits.dof
    low = np.concatenate(
        [
            limits.lower_rad,
            [-GOAL_OFFSET_MAX_M] * 3,
            [-TOOL_SPEED_MAX_M_S] * 3,
            [-PART_SPEED_MAX_M_S] * 3,
            [0.0],
            [-1.0] * 3,
        ]
    ).astype(np.float32)
    high = np.concatenate(
        [
            limits.upper_rad,
            [GOAL_OFFSET_MAX_M] * 3,
            [TOOL_SPEED_MAX_M_S] * 3,
            [PART_SPEED_MAX_M_S] * 3,
            [MEASUREMENT_AGE_MAX_S],
            [1.0] * 3,
        ]
    ).astype(np.float32)
    assert low.shape == (n + OBS_EXTRA,)
    obs = gymnasium.spaces.Box(low=low, high=high, dtype=np.float32)
    act = gymnasium.spaces.Box(low=-1.0, high=1.0, shape=(3,), dtype=np.float32)
    return obs, act


def tool_velocity_command(action: FloatArray, limits: ArmLimits) -> FloatArray:
    """Tool velocity (m/s) of a policy action: a fraction of the robot's TCP speed limit per axis,
    the norm capped at that limit."""
    v = np.clip(np.nan_to_num(np.asarray(action, dtype=float)), -1.0, 1.0) * limits.max_tcp_speed_m_s
    speed = float(np.linalg.norm(v))
    if speed > limits.max_tcp_speed_m_s:
        v *= limits.max_tcp_speed_m_s / speed
    return v


class IKChase:
    """The scripted approach: inverse kinematics to the last seen goal, then a joint velocity
    toward that solution: proportional (``gain_1_s``) far out, and never faster than lets each
    joint brake to a stop at the solution within its acceleration limit (no overshoot).

    This is what a scripted skill does when its target moves: it re-plans to where the target
    was seen, so it trails a moving part by the measurement age and the servo lag. Warm-started
    IK, about 0.1-2 ms per call.
    """

    def __init__(
        self, kinematics: ArmKinematics, limits: ArmLimits, target_rot: FloatArray, gain_1_s: float = 10.0
    ) -> None:
        self.kin = kinematics
        self.limits = limits
        self.target_rot = np.asarray(target_rot, dtype=float)
        self.gain = gain_1_s

    def joint_velocity(self, q_cmd: FloatArray, goal_pos_m: FloatArray) -> FloatArray:
        """Desired joint velocities (rad/s) from the commanded joint angles ``q_cmd`` toward the
        goal (m, world frame)."""
        res = self.kin.ik(goal_pos_m, self.target_rot, q0=q_cmd, max_iter=60, tol_m=5e-4)
        err = res.q - q_cmd
        mag = np.abs(err)
        speed = np.minimum(self.gain * mag, np.sqrt(2.0 * self.limits.max_accel_rad_s2 * mag))
        return np.asarray(np.sign(err) * speed, dtype=float)


# --------------------------------------------------------------------------- phase controllers


class ApproachController(Protocol):
    """A controller of the approach phase, called once per control tick by the robot runtime."""

    kind: str  # "learned" or "scripted"

    def reset(self, q_cmd_rad: FloatArray) -> None:
        """Start the phase from the joint command last applied (rad)."""

    def command(self, observation: ApproachObservation, q_applied_rad: FloatArray) -> FloatArray:
        """The next joint position command (rad). ``q_applied_rad`` is what the safety supervisor
        let through last tick; the result goes through the supervisor like any command."""


@dataclass
class _Integrator:
    """Holds a joint velocity for one policy period and integrates it tick by tick, within limits."""

    limits: ArmLimits
    dt_s: float
    qd: FloatArray = field(default_factory=lambda: np.zeros(0))

    def reset(self) -> None:
        self.qd = np.zeros(self.limits.dof)

    def next(self, qd_des: FloatArray, q_applied: FloatArray) -> FloatArray:
        if self.qd.shape != q_applied.shape:
            self.qd = np.zeros_like(q_applied)
        self.qd = limit_joint_velocity(qd_des, self.qd, q_applied, self.dt_s, self.limits)
        return np.asarray(q_applied + self.qd * self.dt_s, dtype=float)


def _ticks(policy_dt_s: float, control_dt_s: float) -> int:
    n = policy_dt_s / control_dt_s
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ValueError(f"the policy period {policy_dt_s} s is not a whole number of control periods {control_dt_s} s")
    return round(n)


def down_rotation(kinematics: ArmKinematics, home_rad: Sequence[float] | FloatArray) -> FloatArray:
    """The tool orientation held during an approach: the tool's orientation at the home pose
    (pointing down on the shipped arms, so a top-down grasp can follow)."""
    _, rot = kinematics.fk(np.asarray(home_rad, dtype=float))
    return rot

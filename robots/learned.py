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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import gymnasium
import mujoco
import numpy as np
from numpy.typing import NDArray

import policies
from plant.config import Robot
from policies.checkpoint import CheckpointError
from policies.runtime import LatencyBudgetError, PolicyRuntime, SpaceMismatchError
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
#: velocity (3), age of the part measurement (1), previous action (3, tool velocity in m/s).
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
    within the period. Pure function of finite inputs (callers clean what a network or a
    sensor hands them); runs every control tick, so it stays plain numpy.
    """
    over = float(np.max(np.abs(qd_des) / limits.max_speed_rad_s))
    qd = qd_des / over if over > 1.0 else qd_des
    dv = limits.max_accel_rad_s2 * dt_s
    qd = np.minimum(np.maximum(qd, qd_prev - dv), qd_prev + dv)
    return np.minimum(np.maximum(qd, (limits.lower_rad - q_cmd) / dt_s), (limits.upper_rad - q_cmd) / dt_s)


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
                np.clip(self.prev_action, -limits.max_tcp_speed_m_s, limits.max_tcp_speed_m_s),
            ]
        )
        return v.astype(np.float32)


def sense_approach(
    kinematics: ArmKinematics,
    q_rad: FloatArray,
    qd_rad_s: FloatArray,
    goal_pos_m: FloatArray,
    goal_vel_m_s: FloatArray,
    age_s: float,
    prev_action: FloatArray,
) -> ApproachObservation:
    """The observation from joint measurements and the goal as seen: the tool's position and
    velocity come from the encoders through the arm's kinematics (as in training)."""
    tool_pos, _ = kinematics.fk(q_rad)
    jac = kinematics.jacobian(q_rad)
    return ApproachObservation(
        q_rad=np.asarray(q_rad, dtype=float),
        tool_pos_m=tool_pos,
        tool_vel_m_s=jac[:3] @ np.asarray(qd_rad_s, dtype=float),
        goal_pos_m=np.asarray(goal_pos_m, dtype=float),
        goal_vel_m_s=np.asarray(goal_vel_m_s, dtype=float),
        age_s=float(age_s),
        prev_action=np.asarray(prev_action, dtype=float),
    )


def approach_spaces(limits: ArmLimits) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    """Observation and action spaces of an approach phase for an arm with these limits.

    Observation: joint angles (rad, bounded by the joint limits), then the entries listed at
    :data:`OBS_EXTRA`. Action: tool velocity (m/s, world frame), each axis bounded by the robot's
    ``max_tcp_speed_m_s`` (and the norm capped at it by :func:`tool_velocity_command`). Both spaces
    carry the robot's limits, so a policy trained for other limits does not pass a space check.
    """
    n = limits.dof
    low = np.concatenate(
        [
            limits.lower_rad,
            [-GOAL_OFFSET_MAX_M] * 3,
            [-TOOL_SPEED_MAX_M_S] * 3,
            [-PART_SPEED_MAX_M_S] * 3,
            [0.0],
            [-limits.max_tcp_speed_m_s] * 3,
        ]
    ).astype(np.float32)
    high = np.concatenate(
        [
            limits.upper_rad,
            [GOAL_OFFSET_MAX_M] * 3,
            [TOOL_SPEED_MAX_M_S] * 3,
            [PART_SPEED_MAX_M_S] * 3,
            [MEASUREMENT_AGE_MAX_S],
            [limits.max_tcp_speed_m_s] * 3,
        ]
    ).astype(np.float32)
    assert low.shape == (n + OBS_EXTRA,)
    obs = gymnasium.spaces.Box(low=low, high=high, dtype=np.float32)
    v = limits.max_tcp_speed_m_s
    act = gymnasium.spaces.Box(low=-v, high=v, shape=(3,), dtype=np.float32)
    return obs, act


def tool_velocity_command(action: FloatArray, limits: ArmLimits) -> FloatArray:
    """Tool velocity (m/s) of a policy action: each axis within the robot's TCP speed limit, and
    the norm capped at it (non-finite entries count as zero)."""
    vmax = limits.max_tcp_speed_m_s
    v = np.clip(np.nan_to_num(np.asarray(action, dtype=float), nan=0.0, posinf=0.0, neginf=0.0), -vmax, vmax)
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


@dataclass(frozen=True)
class ApproachInput:
    """What the robot runtime hands a phase controller every control tick.

    ``q_rad``/``qd_rad_s``: measured joint positions and velocities; ``goal_pos_m``: where the goal
    (the pre-grasp point above the part) was seen, ``age_s`` seconds ago; ``goal_vel_m_s``: its
    velocity (the conveyor's reported belt speed along the belt; zeros for a still goal). World
    frame; metres, seconds, radians.
    """

    q_rad: FloatArray
    qd_rad_s: FloatArray
    goal_pos_m: FloatArray
    goal_vel_m_s: FloatArray
    age_s: float = 0.0


class ApproachController(Protocol):
    """A controller of the approach phase, called once per control tick by the robot runtime.

    ``command`` returns the next joint position command (rad). It is a request like any other:
    the runtime passes it through the safety supervisor and gives back, next tick, the command
    the supervisor let through as ``q_applied_rad``.
    """

    kind: str  # "learned" or "scripted"
    reason: str  # why this controller runs (for logs and the skill's feedback)

    def reset(self, q_applied_rad: FloatArray) -> None:
        """Start the phase from the joint command last applied (rad)."""

    def command(self, sensed: ApproachInput, q_applied_rad: FloatArray) -> FloatArray:
        """The next joint position command (rad)."""


class _Integrator:
    """Holds a joint velocity between decisions and integrates it tick by tick, within limits."""

    def __init__(self, limits: ArmLimits, dt_s: float) -> None:
        self.limits, self.dt_s = limits, dt_s
        self.qd = np.zeros(limits.dof)

    def reset(self) -> None:
        self.qd = np.zeros(self.limits.dof)

    def next(self, qd_des: FloatArray, q_applied: FloatArray) -> FloatArray:
        self.qd = limit_joint_velocity(qd_des, self.qd, q_applied, self.dt_s, self.limits)
        return np.asarray(q_applied + self.qd * self.dt_s, dtype=float)


def _ticks(decision_dt_s: float, control_dt_s: float) -> int:
    n = decision_dt_s / control_dt_s
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ValueError(f"a decision period of {decision_dt_s} s is not a whole number of {control_dt_s} s ticks")
    return round(n)


class ScriptedApproach:
    """The scripted approach phase (:class:`IKChase`), re-planned every ``decision_dt_s``.

    The same controller the policies are measured against in the twin
    (``sim.envs.baselines.ScriptedBaseline``), at the same decision rate.
    """

    kind = "scripted"

    def __init__(
        self,
        kinematics: ArmKinematics,
        limits: ArmLimits,
        target_rot: FloatArray,
        control_dt_s: float,
        decision_dt_s: float = 0.02,
        gain_1_s: float = 80.0,
        reason: str = "scripted approach",
    ) -> None:
        self.chase = IKChase(kinematics, limits, target_rot, gain_1_s)
        self._every = _ticks(decision_dt_s, control_dt_s)
        self._integrator = _Integrator(limits, control_dt_s)
        self._tick = 0
        self._qd_des = np.zeros(limits.dof)
        self.reason = reason

    def reset(self, q_applied_rad: FloatArray) -> None:
        self._integrator.reset()
        self._tick = 0

    def command(self, sensed: ApproachInput, q_applied_rad: FloatArray) -> FloatArray:
        if self._tick % self._every == 0:
            goal = np.asarray(sensed.goal_pos_m, dtype=float)
            if np.all(np.isfinite(goal)):
                self._qd_des = self.chase.joint_velocity(np.asarray(q_applied_rad, dtype=float), goal)
            else:  # no goal to chase: brake (within the acceleration limits) and hold
                self._qd_des = np.zeros_like(self._qd_des)
        self._tick += 1
        return self._integrator.next(self._qd_des, np.asarray(q_applied_rad, dtype=float))


class LearnedApproach:
    """The approach phase driven by a trained policy through a :class:`policies.runtime.PolicyRuntime`.

    Every ``policy_dt_s`` (from the checkpoint) it builds the observation exactly as the twin's
    training task does, asks the policy for a tool velocity, and maps it to joint velocities
    (:class:`ToolVelocityController`); every control tick it integrates that velocity within the
    limits. It hands over to ``fallback`` for the rest of the phase when the policy cannot
    answer (bad input, an exception) or answers late ``max_late`` times in a row; ``reason``
    then says why.
    """

    kind = "learned"

    def __init__(
        self,
        runtime: PolicyRuntime,
        kinematics: ArmKinematics,
        limits: ArmLimits,
        target_rot: FloatArray,
        rest_rad: Sequence[float] | FloatArray,
        control_dt_s: float,
        fallback: ScriptedApproach,
        max_late: int = 3,
    ) -> None:
        dt = runtime.info.policy_dt_s
        if dt is None:
            raise ValueError(f"checkpoint of {runtime.info.env_id} does not say its policy period")
        self.runtime = runtime
        self.kin = kinematics
        self.limits = limits
        self.tool = ToolVelocityController(kinematics, target_rot, rest_rad)
        self.fallback = fallback
        self.max_late = max_late
        self._every = _ticks(dt, control_dt_s)
        self._integrator = _Integrator(limits, control_dt_s)
        self._tick = 0
        self._late_in_row = 0
        self._prev_action = np.zeros(3)
        self._qd_des = np.zeros(limits.dof)
        self.handed_over = False
        self.reason = f"policy {runtime.info.env_id} on {runtime.backend}"

    def reset(self, q_applied_rad: FloatArray) -> None:
        self._integrator.reset()
        self._tick = 0
        self._late_in_row = 0
        self._prev_action = np.zeros(3)
        self.handed_over = False
        self.fallback.reset(q_applied_rad)

    def _hand_over(self, why: str, q_applied: FloatArray) -> None:
        log.warning("learned approach hands over to the scripted one: %s", why)
        self.handed_over = True
        self.reason = f"scripted approach after the policy: {why}"
        self.fallback.reset(q_applied)
        self.fallback._integrator.qd = self._integrator.qd.copy()  # continue at the current velocity

    def command(self, sensed: ApproachInput, q_applied_rad: FloatArray) -> FloatArray:
        q_applied = np.asarray(q_applied_rad, dtype=float)
        if self.handed_over:
            return self.fallback.command(sensed, q_applied)
        if self._tick % self._every == 0:
            obs = sense_approach(
                self.kin,
                sensed.q_rad,
                sensed.qd_rad_s,
                sensed.goal_pos_m,
                sensed.goal_vel_m_s,
                sensed.age_s,
                self._prev_action,
            )
            try:
                decision = self.runtime.act(obs.vector(self.limits))
            except Exception as exc:  # any failure of the policy leaves the robot with its scripted skill
                self._hand_over(f"no answer ({exc})", q_applied)
                return self.fallback.command(sensed, q_applied)
            self._late_in_row = 0 if decision.on_time else self._late_in_row + 1
            if self._late_in_row >= self.max_late:
                self._hand_over(
                    f"{self._late_in_row} answers in a row over the {self.runtime.budget_s * 1e3:.1f} ms budget",
                    q_applied,
                )
                return self.fallback.command(sensed, q_applied)
            v = tool_velocity_command(decision.action.astype(float), self.limits)
            self._prev_action = v
            self._qd_des = self.tool.joint_velocity(np.asarray(sensed.q_rad, dtype=float), v)
        self._tick += 1
        return self._integrator.next(self._qd_des, q_applied)


def make_approach(
    robot: Robot,
    kinematics: ArmKinematics,
    control_dt_s: float,
    checkpoint: Path | str | None,
    backend: Literal["auto", "eager", "torchscript", "onnx"] = "auto",
    budget_s: float = 1e-3,
    prefer: Literal["eager", "torchscript", "onnx"] | None = None,
) -> LearnedApproach | ScriptedApproach:
    """The approach-phase controller for ``robot``: learned when ``checkpoint`` loads, is intact,
    fits this robot's spaces (joint count, joint, speed and TCP limits) and answers within
    ``budget_s``; scripted otherwise, with ``reason`` saying why. Never raises for a bad
    checkpoint; loading takes about a second (the runtime times its backends). ``prefer``: the
    backend kept once every one is checked (see :meth:`PolicyRuntime.load`)."""
    limits = ArmLimits.from_robot(robot)
    home = np.asarray(robot.home(), dtype=float)
    target_rot = down_rotation(kinematics, home)
    scripted = ScriptedApproach(kinematics, limits, target_rot, control_dt_s, reason="no policy configured")
    if checkpoint is None:
        return scripted
    obs_space, act_space = approach_spaces(limits)
    try:
        runtime = PolicyRuntime.load(
            Path(checkpoint), obs_space, act_space, backend=backend, budget_s=budget_s, prefer=prefer
        )
        learned = LearnedApproach(runtime, kinematics, limits, target_rot, home, control_dt_s, scripted)
    except (CheckpointError, SpaceMismatchError, LatencyBudgetError, ValueError) as exc:
        log.warning("policy %s refused, the scripted approach stays: %s", checkpoint, exc)
        scripted.reason = f"policy refused: {exc}"
        return scripted
    return learned


def shipped_checkpoint(robot_model: str, task: str = "track_conveyor_part") -> Path | None:
    """The checkpoint shipped in ``policies/checkpoints`` for a task and robot model, if any."""
    path = Path(policies.__file__).parent / "checkpoints" / f"{task}_{robot_model}"
    return path if path.is_dir() else None


def down_rotation(kinematics: ArmKinematics, home_rad: Sequence[float] | FloatArray) -> FloatArray:
    """The tool orientation held during an approach: the tool's orientation at the home pose
    (pointing down on the shipped arms, so a top-down grasp can follow)."""
    _, rot = kinematics.fk(np.asarray(home_rad, dtype=float))
    return rot

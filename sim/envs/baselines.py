"""The scripted baseline of the arm tasks: what a scripted skill does, as a Gymnasium actor."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from robots.learned import IKChase
from sim.envs.arm_tasks import ArmTaskEnv, Float32Array


class ScriptedBaseline:
    """Inverse kinematics to the goal as last seen, then a proportional joint velocity toward it
    (:class:`robots.learned.IKChase`, the robot's scripted approach).

    It acts in an environment made with ``action_mode="joint_velocity"`` and uses what the
    observation gives (the tool-to-goal offset) and what a robot runtime knows of itself (its
    last joint command): it does not use the goal's velocity, which is the point of the
    comparison with a policy. ``gain_1_s`` is the proportional
    gain on the joint error (1/s); 10/s is the best of 5, 10, 20 and 40 on seeds apart from the
    evaluation's (``atelier policy eval`` keeps the comparison).
    """

    def __init__(self, env: gymnasium.Env[Any, Any], gain_1_s: float = 80.0) -> None:
        u = env.unwrapped
        if not isinstance(u, ArmTaskEnv):
            raise TypeError(f"the scripted baseline drives atelier arm tasks, not {type(u).__name__}")
        if u.action_mode != "joint_velocity":
            raise ValueError("the scripted baseline needs the environment made with action_mode='joint_velocity'")
        self.env = u
        self.kin = u.make_kinematics()
        self.chase = IKChase(self.kin, u.limits, u.target_rot, gain_1_s)
        self.dof = u.limits.dof

    def __call__(self, obs: Float32Array) -> Float32Array:
        """The joint-velocity action (fractions of each joint's speed limit) for an observation."""
        q = np.asarray(obs[: self.dof], dtype=float)
        tool, _ = self.kin.fk(q)
        goal = tool + np.asarray(obs[self.dof : self.dof + 3], dtype=float)
        qd = self.chase.joint_velocity(self.env.commanded_q, goal)
        return np.clip(qd / self.env.limits.max_speed_rad_s, -1.0, 1.0).astype(np.float32)


class VelocityTeacher:
    """A teacher for warm-starting policies (``atelier policy train --teacher velocity``): a
    proportional tool-velocity controller on the goal offset, with the goal's velocity fed
    forward and the goal extrapolated over the measurement's age plus the servos' lag.

    ``a = gain * (offset + v_goal * (age + lag_s)) + v_goal`` (m/s, clipped to the action bounds).
    It acts in the policies' ``tool_velocity`` mode and uses only the observation. Gain 6/s and
    lag 0.07 s (the joint servos' kv/kp is 0.067 s) were set by hand on a few episodes; the
    policy cloned from it is then fine-tuned by reinforcement learning.
    """

    def __init__(self, env: gymnasium.Env[Any, Any], gain_1_s: float = 6.0, lag_s: float = 0.07) -> None:
        u = env.unwrapped
        if not isinstance(u, ArmTaskEnv):
            raise TypeError(f"the teacher drives atelier arm tasks, not {type(u).__name__}")
        if u.action_mode != "tool_velocity":
            raise ValueError("the teacher needs the environment in action_mode='tool_velocity'")
        self.dof = u.limits.dof
        self.vmax = u.limits.max_tcp_speed_m_s
        self.gain, self.lag = gain_1_s, lag_s

    def __call__(self, obs: Float32Array) -> Float32Array:
        """The tool-velocity action for an observation."""
        n = self.dof
        offset = np.asarray(obs[n : n + 3], dtype=float)
        v_goal = np.asarray(obs[n + 6 : n + 9], dtype=float)
        age = float(obs[n + 9])
        a = self.gain * (offset + v_goal * (age + self.lag)) + v_goal
        return np.asarray(np.clip(a, -self.vmax, self.vmax), dtype=np.float32)

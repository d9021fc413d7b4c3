"""Arm tasks in the twin for training and measuring control policies (Gymnasium environments).

Each task builds a small cell with the twin's own builder: one robot of the plant (same model,
tool, joint, speed, acceleration and TCP limits as in the plant description) 0.55 m beside the
plant's conveyor, and for the tracking task one part on the belt. The policy acts at
``TaskConfig.policy_dt_s``; between its steps the commanded velocity is held and integrated at
the twin's control rate through :func:`robots.learned.limit_joint_velocity`, the limits the
safety supervisor enforces.

Two action modes share one observation (:func:`robots.learned.approach_spaces`):

- ``tool_velocity`` (the policies'): a tool velocity (m/s) within the robot's TCP speed limit,
  turned into joint velocities with the orientation held
  (:class:`robots.learned.ToolVelocityController`), exactly as on the robot;
- ``joint_velocity``: a fraction of each joint's speed limit; the scripted IK baseline acts here.

Not thread-safe; one environment owns one twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import gymnasium
import mujoco
import numpy as np
from numpy.typing import NDArray

from plant import load_plant
from plant.catalog import ROBOT_MODELS
from plant.config import PlantDescription, Pose, Robot
from plant.packml import ACTING_TIME_S, Command
from robots.kinematics import ArmKinematics
from robots.learned import (
    ArmLimits,
    ToolVelocityController,
    approach_spaces,
    down_rotation,
    limit_joint_velocity,
    sense_approach,
    tool_velocity_command,
)
from sim._types import FloatArray
from sim.assets import TOOL_ASSETS
from sim.config import TwinConfig
from sim.envs.config import TaskConfig
from sim.twin import Twin

ActionMode = Literal["tool_velocity", "joint_velocity"]
#: Observations and actions are float32 arrays (typed loosely: Gymnasium's Box is generic over any dtype).
Float32Array = NDArray[Any]

#: The task cell: the robot stands this far beside the belt's centre line, at the middle of the belt.
ROBOT_OFFSET_FROM_BELT_M = 0.55
#: The waiting pose over the belt is this high above the belt, in front of the robot.
READY_HEIGHT_M = 0.3
ROBOT_NAME = "arm"
CONVEYOR_NAME = "conveyor"
PART_NAME = "part"


def task_robot(plant: PlantDescription, robot_model: str, robot: str | None = None) -> Robot:
    """The robot of ``plant`` a task is built around: ``robot`` by name, else the first of the model.

    Raises ``ValueError`` naming the robots there are when none fits.
    """
    if robot is not None:
        if robot not in plant.robots:
            raise ValueError(f"plant {plant.name} has no robot {robot!r}; robots: {', '.join(plant.robots)}")
        found = plant.robots[robot]
        if found.model != robot_model:
            raise ValueError(f"robot {robot!r} is a {found.model}, the task needs a {robot_model}")
        return found
    for r in plant.robots.values():
        if r.model == robot_model:
            return r
    raise ValueError(
        f"plant {plant.name} has no {robot_model} robot; robots: "
        + ", ".join(f"{n} ({r.model})" for n, r in plant.robots.items())
    )


def task_plant(plant: PlantDescription, robot: Robot, with_part: bool) -> PlantDescription:
    """A one-robot cell: the plant's first conveyor, and ``robot`` (its limits unchanged) beside it."""
    conveyors = [m for m in plant.machines.values() if m.kind == "conveyor"]
    if not conveyors:
        raise ValueError(f"plant {plant.name} has no conveyor to build the task cell around")
    conv = conveyors[0]
    assert conv.belt is not None
    belt = conv.belt
    cx, cy = belt.length_m / 2 + 0.3, ROBOT_OFFSET_FROM_BELT_M + 0.6
    conveyor = conv.model_copy(update={"pose": Pose(xyz_m=(cx, cy, 0.0)), "station": None})
    arm = robot.model_copy(
        update={"base": Pose(xyz_m=(cx, cy + ROBOT_OFFSET_FROM_BELT_M, robot.base.xyz_m[2]), rpy_rad=(0.0, 0.0, 0.0))}
    )
    data: dict[str, Any] = {
        "name": "task_cell",
        "cell": {"size_m": [belt.length_m + 0.6, cy + ROBOT_OFFSET_FROM_BELT_M + 0.8]},
        "machines": {CONVEYOR_NAME: conveyor},
        "robots": {ROBOT_NAME: arm},
    }
    if with_part:
        part_type = next(iter(plant.part_types.items()), None)
        if part_type is None:
            raise ValueError(f"plant {plant.name} has no part type for the tracking task")
        data["part_types"] = {part_type[0]: part_type[1]}
        data["stations"] = {
            "infeed": {
                "kind": "infeed",
                "locations": {"belt_start": {"pose": {"xyz_m": [cx - 0.5, cy, belt.height_m]}}},
            }
        }
        data["parts"] = {PART_NAME: {"type": part_type[0], "at": "belt_start"}}
    return PlantDescription.model_validate(data)


class ArmTaskEnv(gymnasium.Env[Float32Array, Float32Array]):
    """Base of the arm tasks: bring the tool's grip point to a goal and hold it there.

    Observation and action: :func:`robots.learned.approach_spaces` for this robot. Reward: minus
    the distance to the goal (m) per step, plus the progress toward it, minus a smoothness
    term, plus a bonus on success
    (inside ``goal_tolerance_m`` for ``hold_s``; the episode ends) and minus a penalty when the arm
    touches the belt, the part or the floor (the episode ends). ``info`` carries ``distance_m``,
    ``is_success``, ``time_s`` and, on success, ``time_to_goal_s``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's class attribute)
    task = "reach"
    #: Where episodes start (plus jitter): ``home``, or ``ready``, the waiting pose
    #: ``READY_HEIGHT_M`` over the belt in front of the robot that a scripted move leaves the arm in.
    start = "home"

    def __init__(
        self,
        robot_model: str = "ur5e",
        action_mode: ActionMode = "tool_velocity",
        config: TaskConfig | dict[str, Any] | None = None,
        plant_file: str | Path | None = None,
        robot: str | None = None,
    ) -> None:
        if robot_model not in ROBOT_MODELS:
            raise ValueError(f"unknown robot model {robot_model!r}; known: {', '.join(sorted(ROBOT_MODELS))}")
        if action_mode not in ("tool_velocity", "joint_velocity"):
            raise ValueError(f"action_mode must be 'tool_velocity' or 'joint_velocity', not {action_mode!r}")
        # A dict is accepted so that a checkpoint's JSON metadata can carry the settings.
        self.config = TaskConfig.model_validate(config) if isinstance(config, dict) else (config or TaskConfig())
        self.action_mode: ActionMode = action_mode
        plant = load_plant(plant_file)
        self.robot = task_robot(plant, robot_model, robot)
        self.plant = task_plant(plant, self.robot, with_part=self.task == "track")
        self.twin = Twin(self.plant, TwinConfig())
        self.limits = ArmLimits.from_robot(self.robot)
        self.home = np.asarray(self.robot.home(), dtype=float)
        self.metadata = {**type(self).metadata, "policy_dt_s": self.config.policy_dt_s}

        ctrl_dt = self.twin.config.ctrl_dt_s
        n = self.config.policy_dt_s / ctrl_dt
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ValueError("policy_dt_s must be a whole number of the twin's control periods")
        self._ticks = round(n)
        self._ctrl_dt = ctrl_dt
        self._max_steps = round(self.config.episode_s / self.config.policy_dt_s)
        self._hold_steps = max(1, round(self.config.hold_s / self.config.policy_dt_s))

        m = self.twin.model
        joints = [m.joint(f"{ROBOT_NAME}/{j}") for j in ROBOT_MODELS[robot_model].joint_names]
        self._qpos_adr = [int(j.qposadr[0]) for j in joints]
        self._dof_adr = [int(j.dofadr[0]) for j in joints]
        self._site = m.site(f"{ROBOT_NAME}/tool/{TOOL_ASSETS[self.robot.tool.model].grip_site}").id
        self.kinematics = self.make_kinematics()
        self.target_rot = down_rotation(self.kinematics, self.home)
        self._tool_ctrl = ToolVelocityController(self.kinematics, self.target_rot, self.home)
        self.base_xyz = np.asarray(self.plant.robots[ROBOT_NAME].base.xyz_m, dtype=float)
        conveyor = self.plant.machines[CONVEYOR_NAME]
        assert conveyor.belt is not None
        self._belt_top_m = conveyor.belt.height_m
        self._belt_y = conveyor.pose.xyz_m[1]
        self.start_q = self.home if self.start == "home" else self.ready_pose()

        # Contacts that end an episode: any arm or tool geom against the conveyor, a part or the floor.
        robot_bodies = self.twin.robot_bodies(ROBOT_NAME)
        self._arm_geom = np.array([int(m.geom_bodyid[g]) in robot_bodies for g in range(m.ngeom)])
        bad_bodies = {0, m.body(CONVEYOR_NAME).id} | ({m.body(PART_NAME).id} if self.task == "track" else set())
        self._obstacle_geom = np.array([int(m.geom_bodyid[g]) in bad_bodies for g in range(m.ngeom)])

        self.observation_space, tool_space = approach_spaces(self.limits)
        if action_mode == "tool_velocity":
            self.action_space = tool_space
        else:
            self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(self.limits.dof,), dtype=np.float32)
        self._action_dim = 3 if action_mode == "tool_velocity" else self.limits.dof

        max_lag = round(self.config.latency_s[1] / ctrl_dt)
        self._history = np.zeros((max_lag + 1, 3))
        self._lag = 0
        self._head = 0  # ring buffer of the goal's true positions, one per control tick
        self._q_cmd = self.home.copy()
        self._qd = np.zeros(self.limits.dof)
        self._q_meas = self.home.copy()
        self._prev_action = np.zeros(self._action_dim)
        self._steps = 0
        self._inside = 0
        self._goal = np.zeros(3)
        self._goal_vel = np.zeros(3)
        self._last_dist = 0.0

    def make_kinematics(self) -> ArmKinematics:
        """Kinematics of the task's arm to its grip point, with its own scratch data."""
        return ArmKinematics(
            self.twin.model, self._qpos_adr, self._dof_adr, self._site, list(self.limits_pairs()), rest=list(self.home)
        )

    def ready_pose(self) -> FloatArray:
        """Joint angles of the waiting pose over the belt (tool down), solved once by IK from home."""
        target = np.array([self.base_xyz[0], self._belt_y, self._belt_top_m + READY_HEIGHT_M])
        res = self.kinematics.ik(target, self.target_rot, q0=self.home, max_iter=500)
        if not res.ok:
            raise ValueError(f"the {self.robot.model} cannot reach the waiting pose {target} over the belt")
        return res.q

    @property
    def commanded_q(self) -> FloatArray:
        """The joint position command last sent to the servos (rad), as the robot runtime knows it."""
        return self._q_cmd.copy()

    def limits_pairs(self) -> list[tuple[float, float]]:
        return [(float(lo), float(hi)) for lo, hi in zip(self.limits.lower_rad, self.limits.upper_rad, strict=True)]

    # ------------------------------------------------------------------ task hooks

    def _randomise_task(self, rng: np.random.Generator) -> None:
        """Reach: a still goal in a box over the belt in front of the robot."""
        c = self.config
        self._goal = self.base_xyz + np.array(
            [rng.uniform(*c.reach_goal_x_m), rng.uniform(*c.reach_goal_y_m), rng.uniform(*c.reach_goal_z_m)]
        )
        self._goal_vel = np.zeros(3)

    def _goal_now(self) -> FloatArray:
        return self._goal

    def _goal_velocity_seen(self, rng: np.random.Generator) -> FloatArray:
        return self._goal_vel

    # ------------------------------------------------------------------ Gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Start an episode: a new start pose and task draw from the episode's generator."""
        super().reset(seed=seed)
        rng = self.np_random
        c = self.config
        self.twin.reset()
        q0 = self.start_q + rng.uniform(-c.start_jitter_rad, c.start_jitter_rad, size=self.limits.dof)
        q0 = np.clip(q0, self.limits.lower_rad, self.limits.upper_rad)
        d = self.twin.data
        d.qpos[self._qpos_adr] = q0
        d.qvel[self._dof_adr] = 0.0
        self.twin.set_joint_targets(ROBOT_NAME, q0)
        self._lag = round(rng.uniform(*c.latency_s) / self._ctrl_dt)
        self._randomise_task(rng)
        mujoco.mj_forward(self.twin.model, d)
        self._history[:] = self._goal_now()
        self._head = 0
        self._q_cmd = q0.copy()
        self._qd = np.zeros(self.limits.dof)
        self._prev_action = np.zeros(self._action_dim)
        self._steps = 0
        self._inside = 0
        obs = self._observe()
        self._last_dist = self._distance()
        return obs, {"distance_m": self._last_dist, "is_success": False, "time_s": 0.0}

    def step(self, action: Float32Array) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """One policy step: hold the command for ``policy_dt_s`` of twin time."""
        if self.action_mode == "tool_velocity":
            a = tool_velocity_command(np.asarray(action, dtype=float), self.limits)
            qd_des = self._tool_ctrl.joint_velocity(self._q_meas, a)
        else:
            a = np.clip(np.nan_to_num(np.asarray(action, dtype=float)), -1.0, 1.0)
            qd_des = a * self.limits.max_speed_rad_s
        qd_des = np.nan_to_num(qd_des, nan=0.0, posinf=0.0, neginf=0.0)
        twin, limits, dt = self.twin, self.limits, self._ctrl_dt
        history, n_hist = self._history, len(self._history)
        for _ in range(self._ticks):
            self._qd = limit_joint_velocity(qd_des, self._qd, self._q_cmd, dt, limits)
            self._q_cmd = self._q_cmd + self._qd * dt
            twin.set_joint_targets(ROBOT_NAME, self._q_cmd)
            twin.step(1)
            self._head = (self._head + 1) % n_hist
            history[self._head] = self._goal_now()
        self._steps += 1
        c = self.config
        dist = self._distance()
        progress, self._last_dist = self._last_dist - dist, dist
        self._inside = self._inside + 1 if dist < c.goal_tolerance_m else 0
        success = self._inside >= self._hold_steps
        touched = self._arm_touches()
        reward = (
            -c.w_distance * dist + c.w_progress * progress - c.w_smooth * float(np.sum((a - self._prev_action) ** 2))
        )
        if success:
            reward += c.success_bonus
        if touched:
            reward -= c.contact_penalty
        self._prev_action = a
        obs = self._observe()
        t = self._steps * c.policy_dt_s
        info: dict[str, Any] = {"distance_m": dist, "is_success": success, "time_s": t, "contact": touched}
        if success:
            info["time_to_goal_s"] = t
        truncated = self._steps >= self._max_steps and not (success or touched)
        return obs, float(reward), bool(success or touched), truncated, info

    # ------------------------------------------------------------------ internals

    def _distance(self) -> float:
        return float(np.linalg.norm(self.twin.tool_position(ROBOT_NAME) - self._goal_now()))

    def _arm_touches(self) -> bool:
        d = self.twin.data
        if d.ncon == 0:
            return False
        g = np.asarray(d.contact.geom[: d.ncon])
        a, b = self._arm_geom[g[:, 0]], self._arm_geom[g[:, 1]]
        oa, ob = self._obstacle_geom[g[:, 0]], self._obstacle_geom[g[:, 1]]
        return bool(np.any((a & ob) | (b & oa)))

    def _observe(self) -> Float32Array:
        rng = self.np_random
        c = self.config
        twin = self.twin
        q = twin.joint_positions(ROBOT_NAME) + rng.normal(0.0, c.joint_noise_rad, self.limits.dof)
        qd = twin.joint_velocities(ROBOT_NAME) + rng.normal(0.0, c.joint_velocity_noise_rad_s, self.limits.dof)
        self._q_meas = q
        seen = sense_approach(
            self.kinematics,
            q,
            qd,
            goal_pos_m=self._history[(self._head - self._lag) % len(self._history)]
            + rng.normal(0.0, c.part_noise_m, 3),
            goal_vel_m_s=self._goal_velocity_seen(rng),
            age_s=self._lag * self._ctrl_dt,
            prev_action=self._prev_action[:3] if self.action_mode == "tool_velocity" else np.zeros(3),
        )
        return seen.vector(self.limits)


class ReachEnv(ArmTaskEnv):
    """Bring the tool's grip point to a still goal over the belt (``atelier/Reach-<Robot>-v0``)."""

    task = "reach"


class TrackConveyorPartEnv(ArmTaskEnv):
    """Close in on a part riding the belt: bring the grip point to the pre-grasp point
    ``hover_m`` above the moving part and stay with it (``atelier/TrackConveyorPart-<Robot>-v0``).

    Randomised per episode: the part's start along and across the belt and its yaw, the belt
    speed, the camera latency, and the noise of every measurement (see :class:`TaskConfig`).
    """

    task = "track"
    start = "ready"

    def __init__(
        self,
        robot_model: str = "ur5e",
        action_mode: ActionMode = "tool_velocity",
        config: TaskConfig | dict[str, Any] | None = None,
        plant_file: str | Path | None = None,
        robot: str | None = None,
    ) -> None:
        super().__init__(robot_model, action_mode, config, plant_file, robot)
        m = self.twin.model
        self._part_qpos = int(m.joint(PART_NAME).qposadr[0])
        self._part_dof = int(m.joint(PART_NAME).dofadr[0])
        self._part_body = m.body(PART_NAME).id
        part_type = self.plant.part_types[self.plant.parts[PART_NAME].type]
        self._part_half_h = part_type.size_m[2] / 2
        self._belt_speed = 0.0
        self._hover = np.array([0.0, 0.0, self.config.hover_m])

    def _randomise_task(self, rng: np.random.Generator) -> None:
        c = self.config
        self._belt_speed = float(rng.uniform(*c.belt_speed_m_s))
        x = self.base_xyz[0] + rng.uniform(*c.part_start_x_m)
        y = self._belt_y + rng.uniform(*c.part_start_y_m)
        yaw = rng.uniform(-np.pi, np.pi)
        d = self.twin.data
        d.qpos[self._part_qpos : self._part_qpos + 7] = [
            x,
            y,
            self._belt_top_m + self._part_half_h + 0.001,
            np.cos(yaw / 2),
            0.0,
            0.0,
            np.sin(yaw / 2),
        ]
        # The part already rides the belt at its speed: the phase starts mid-feed.
        d.qvel[self._part_dof : self._part_dof + 6] = [self._belt_speed, 0, 0, 0, 0, 0]
        belt = self.twin.machines[CONVEYOR_NAME]
        sm = belt.state_model
        # Through the PackML state model (its acting states take ACTING_TIME_S each); only the
        # state model's clock moves here, the physics does not.
        sm.command(Command.RESET)
        sm.tick(ACTING_TIME_S)
        sm.command(Command.START)
        sm.tick(ACTING_TIME_S)
        belt.belt_setpoint_m_s = self._belt_speed
        belt.tick(0.0)  # applies the belt speed to the belt's surface now
        self._goal_vel = np.array([self._belt_speed, 0.0, 0.0])

    def _goal_now(self) -> FloatArray:
        return np.asarray(self.twin.data.xpos[self._part_body] + self._hover, dtype=float)

    def _goal_velocity_seen(self, rng: np.random.Generator) -> FloatArray:
        return self._goal_vel * (1.0 + rng.normal(0.0, self.config.belt_speed_noise))

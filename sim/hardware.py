"""The twin's robots behind ``robots``' interfaces: hardware, part locator, people, runtimes.

- :class:`TwinHardware`: in-process, lockstep with a :class:`~sim.twin.Twin` the caller steps.
- :class:`LiveTwinHardware`: over a :class:`~sim.live.LiveTwin` stepping in real time; a
  listener hands each tick's joint state over, :meth:`LiveTwinHardware.wait` blocks for it.
- :func:`arm_kinematics`, :func:`link_points`: ``robots.kinematics`` objects for a robot of a
  compiled model (any model built by :func:`sim.builder.build_spec`, twin or not).
- :func:`build_runtime`: a :class:`~robots.runtime.RobotRuntime` wired to the twin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import mujoco
import numpy as np

from plant.catalog import ROBOT_MODELS
from plant.config import PlantDescription
from robots.interface import FloatArray, JointState, NewestState, SafetyEvent, SkillFeedback, SkillResult
from robots.kinematics import ArmKinematics, LinkPoints
from robots.learned import make_approach, shipped_checkpoint
from robots.runtime import RobotRuntime, RuntimeConfig, TrackControllers
from robots.safety import EstopLatch, SafetySupervisor, SsmConfig, TrackedPerson, safety_config_from_plant
from robots.skills import PeerView, Sighting, SkillPlanner
from sim.assets import TOOL_ASSETS
from sim.live import LiveTwin
from sim.twin import Twin

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- model addresses


def _joint_addresses(model: mujoco.MjModel, plant: PlantDescription, robot: str) -> tuple[list[int], list[int]]:
    names = ROBOT_MODELS[plant.robots[robot].model].joint_names
    joints = [model.joint(f"{robot}/{j}") for j in names]
    return [int(j.qposadr[0]) for j in joints], [int(j.dofadr[0]) for j in joints]


def _grip_site(model: mujoco.MjModel, plant: PlantDescription, robot: str) -> int:
    return int(model.site(f"{robot}/tool/{TOOL_ASSETS[plant.robots[robot].tool.model].grip_site}").id)


def arm_kinematics(model: mujoco.MjModel, plant: PlantDescription, robot: str) -> ArmKinematics:
    """Kinematics of ``robot`` to its grip site, on ``model`` (own scratch data)."""
    r = plant.robots[robot]
    qpos, dof = _joint_addresses(model, plant, robot)
    return ArmKinematics(model, qpos, dof, _grip_site(model, plant, robot), r.limits(), r.home())


def link_points(model: mujoco.MjModel, plant: PlantDescription, robot: str) -> LinkPoints:
    """The safety check points of ``robot``: its arm links from base to flange, and the tool."""
    qpos, _ = _joint_addresses(model, plant, robot)
    prefix = f"{robot}/"
    bodies = [
        i
        for i in range(model.nbody)
        if model.body(i).name.startswith(prefix)
        and not model.body(i).name.startswith(f"{robot}/tool/")
        and not model.body(i).name.endswith("/pedestal")
    ]
    return LinkPoints(model, qpos, bodies, _grip_site(model, plant, robot))


def compile_model(plant: PlantDescription) -> mujoco.MjModel:
    """The plant's MuJoCo model without a running twin (for a runtime beside a real robot)."""
    from sim.builder import build_spec
    from sim.config import TwinConfig

    return build_spec(plant, TwinConfig()).compile()


# --------------------------------------------------------------------------- hardware


class TwinHardware:
    """A robot of an in-process twin that the caller steps (lockstep). Not thread-safe."""

    def __init__(self, twin: Twin, robot: str) -> None:
        self.twin = twin
        self.robot = robot
        self.joint_names = ROBOT_MODELS[twin.plant.robots[robot].model].joint_names
        self.control_period_s = twin.config.ctrl_dt_s

    def read(self) -> JointState:
        tw = self.twin
        return JointState(tw.time_s, tw.joint_positions(self.robot), tw.joint_velocities(self.robot))

    def wait(self, timeout_s: float) -> JointState:
        """Lockstep: the state is always current."""
        return self.read()

    def write(self, position: FloatArray) -> None:
        self.twin.set_joint_targets(self.robot, position)

    def set_gripper(self, closed_fraction: float) -> None:
        self.twin.set_gripper(self.robot, closed_fraction)

    def gripper_closure(self) -> float:
        """The gripper's measured closure (0 open .. 1 closed)."""
        return self.twin.gripper_closure(self.robot)

    def gripper_holds(self) -> bool:
        """Whether the gripper holds an object (the twin's object detection)."""
        return self.twin.gripper_force_n(self.robot) > 0.0


class LiveTwinHardware(NewestState):
    """A robot of a live twin. ``read``/``wait`` return the state of the last twin tick;
    ``write`` queues a target that the twin applies before its next tick. Thread-safe."""

    def __init__(self, live: LiveTwin, robot: str) -> None:
        super().__init__(f"the twin for {robot}")
        self.live = live
        self.robot = robot
        self.joint_names = ROBOT_MODELS[live.twin.plant.robots[robot].model].joint_names
        self.control_period_s = live.twin.config.ctrl_dt_s
        live.add_listener(self._on_tick, name=f"hardware-{robot}")

    def _on_tick(self, tw: Twin) -> None:
        st = JointState(tw.time_s, tw.joint_positions(self.robot), tw.joint_velocities(self.robot))
        with self._cond:
            self._state = st
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        self.live.remove_listener(self._on_tick)

    def read(self) -> JointState:
        with self._cond:
            if self._state is None:
                self._cond.wait(10 * self.control_period_s)
            if self._state is None:
                raise TimeoutError(f"no joint state from the twin for {self.robot}")
            self._seen = self._seq
            return self._state

    def write(self, position: FloatArray) -> None:
        q = np.array(position, dtype=float)
        self.live.submit(lambda tw: tw.set_joint_targets(self.robot, q))

    def set_gripper(self, closed_fraction: float) -> None:
        self.live.submit(lambda tw: tw.set_gripper(self.robot, closed_fraction))

    def gripper_closure(self) -> float:
        """The gripper's measured closure (0 open .. 1 closed), now."""
        return self.live.read(lambda tw: tw.gripper_closure(self.robot))

    def gripper_holds(self) -> bool:
        """Whether the gripper holds an object (the twin's object detection), now."""
        return self.live.read(lambda tw: tw.gripper_force_n(self.robot)) > 0.0


# --------------------------------------------------------------------------- perception


def twin_people(twin: Twin) -> list[TrackedPerson]:
    """The twin's people as a tracker would report them (ground truth)."""
    return [TrackedPerson(n, x, y, v) for n, (x, y, v) in twin.people_positions().items()]


class TwinPartLocator:
    """Finds parts by type in the twin (ground truth), like a vision system would; a part on a
    conveyor moves at the belt speed the conveyor reports, along the belt.

    ``read`` runs a function on the twin safely (``LiveTwin.read``, or a direct call in lockstep).
    """

    def __init__(self, plant: PlantDescription, read: Callable[[Callable[[Twin], object]], object]) -> None:
        self._types = {name: p.type for name, p in plant.parts.items()}
        self._read = read
        # Belt footprints (x range, y centre, half width, top), the belt running along +x.
        self._belts: dict[str, tuple[float, float, float, float, float]] = {}
        for name, m in plant.machines.items():
            if m.belt is not None:
                x, y = m.pose.xyz_m[0], m.pose.xyz_m[1]
                half = m.belt.length_m / 2
                self._belts[name] = (x - half, x + half, y, m.belt.width_m / 2, m.belt.height_m)

    def _nearest(self, positions: object, part_type: str, near_m: FloatArray, radius_m: float) -> FloatArray | None:
        assert isinstance(positions, dict)
        best, best_d = None, radius_m
        for name, xyz in positions.items():
            if self._types.get(name) != part_type:
                continue
            d = float(np.linalg.norm(np.asarray(xyz) - np.asarray(near_m)))
            if d <= best_d:
                best, best_d = np.asarray(xyz, dtype=float), d
        return best

    def locate(self, part_type: str, near_m: FloatArray, radius_m: float) -> FloatArray | None:
        return self._nearest(self._read(lambda tw: tw.part_positions()), part_type, near_m, radius_m)

    def sight(self, part_type: str, near_m: FloatArray, radius_m: float) -> Sighting | None:
        def look(tw: Twin) -> tuple[object, dict[str, float]]:
            return tw.part_positions(), {n: tw.machine(n).belt_speed_m_s for n in self._belts}

        seen = self._read(look)
        assert isinstance(seen, tuple)
        positions, speeds = seen
        pos = self._nearest(positions, part_type, near_m, radius_m)
        if pos is None:
            return None
        vel = np.zeros(3)
        for name, (x0, x1, y, half_w, top) in self._belts.items():
            if x0 <= pos[0] <= x1 and abs(pos[1] - y) <= half_w and top - 0.01 <= pos[2] <= top + 0.2:
                vel = np.array([speeds[name], 0.0, 0.0])
        return Sighting(pos, vel, 0.0)


class LocalPeers:
    """Phases of the other runtimes in the same process (hand-overs in the twin)."""

    def __init__(self) -> None:
        self.runtimes: dict[str, RobotRuntime] = {}

    def phase(self, robot: str) -> str:
        rt = self.runtimes.get(robot)
        return rt.phase if rt is not None else ""


def build_runtime(
    twin: Twin,
    robot: str,
    *,
    live: LiveTwin | None = None,
    latch_path: Path | str | None = None,
    ssm: SsmConfig | None = None,
    peers: PeerView | None = None,
    on_event: Callable[[SafetyEvent], None] | None = None,
    on_feedback: Callable[[SkillFeedback], None] | None = None,
    on_result: Callable[[SkillResult], None] | None = None,
    config: RuntimeConfig | None = None,
    people: Callable[[], Sequence[TrackedPerson]] | None = None,
    checkpoint: Path | str | Literal["shipped"] | None = "shipped",
    policy_budget_s: float = 1e-3,
) -> RobotRuntime:
    """A runtime for ``robot`` on the twin: lockstep when ``live`` is None, else on the live twin.

    Its approach phase (picking a part off a running conveyor) runs the policy of ``checkpoint``
    (``"shipped"``: the one shipped for the robot's model, if any; None: none) when it loads,
    fits the robot and (live) answers within ``policy_budget_s``; else the scripted approach, the
    reason logged and kept in ``runtime.tracking.approach.reason``. Loading takes about a second.
    In lockstep the policy runs on its eager backend (every backend checked), with no budget: a
    rehearsal's run depends on its start alone, not on the machine's load.

    In lockstep, call ``runtime.step()`` after every ``twin.step(1)`` (or use
    ``runtime.run_lockstep``). Live, call ``runtime.start()``.
    """
    plant = twin.plant
    model = twin.model
    cfg = safety_config_from_plant(plant, robot, twin.config.ctrl_dt_s, ssm)
    latch = EstopLatch(latch_path) if latch_path is not None else None
    sup = SafetySupervisor(cfg, link_points(model, plant, robot), latch, on_event)

    def read(fn: Callable[[Twin], object]) -> object:
        return live.read(fn) if live is not None else fn(twin)

    locator = TwinPartLocator(plant, read)
    planner = SkillPlanner(plant, robot, arm_kinematics(model, plant, robot), locator, peers)
    if live is None:
        hw: TwinHardware | LiveTwinHardware = TwinHardware(twin, robot)
        people_fn = people or (lambda: twin_people(twin))
    else:
        hw = LiveTwinHardware(live, robot)
        people_fn = people or (lambda: live.read(twin_people))
    site = _grip_site(model, plant, robot)
    spec = plant.robots[robot]
    ckpt = shipped_checkpoint(spec.model) if checkpoint == "shipped" else checkpoint
    kin = arm_kinematics(model, plant, robot)
    if live is None:
        # A rehearsal is not real time: the network's own answers (eager, once every backend is
        # checked), and no latency budget to miss on a loaded machine, so that the same start
        # gives the same run in any process.
        approach = make_approach(spec, kin, hw.control_period_s, ckpt, budget_s=math.inf, prefer="eager")
    else:
        approach = make_approach(spec, kin, hw.control_period_s, ckpt, budget_s=policy_budget_s)
    log.info("%s: %s approach phase (%s)", robot, approach.kind, approach.reason)

    def tool() -> FloatArray:
        return np.asarray(read(lambda tw: tw.data.site_xpos[site].copy()), dtype=float)

    import time as _time

    if live is not None:
        # (its joint states come at the twin's speed: so many periods to the wall's second)
        config = dataclasses.replace(config or RuntimeConfig(), clock_speed=live.speed)
    return RobotRuntime(
        hw,
        sup,
        planner,
        people=people_fn,
        on_feedback=on_feedback,
        on_result=on_result,
        clock=None if live is None else _time.monotonic,
        config=config,
        plan_inline=live is None,
        tool_position=tool,
        tracking=TrackControllers.from_approach(approach, kin),
    )

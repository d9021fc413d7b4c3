"""The on-robot runtime as a ROS 2 node: skill goals in, feedback, results and safety events out.

:func:`serve_runtime` builds the whole runtime of one robot over ROS 2 (hardware through the
driver's topics, people and parts from the cell's topics, the e-stop latch file) and starts its
control loop. The process keeps running whatever the coordinator does: goals are messages, not
connections, and a goal's result is latched on ``skill/result`` for a coordinator that comes
back. Topic names: see :mod:`robots.ros2`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from action_msgs.msg import GoalInfo, GoalStatus, GoalStatusArray
from action_msgs.srv import CancelGoal
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from unique_identifier_msgs.msg import UUID

from plant.catalog import ROBOT_MODELS
from plant.config import PlantDescription
from robots.interface import FloatArray, Outcome, SafetyEvent, SkillFeedback, SkillGoal, SkillResult, StopCategory
from robots.kinematics import ArmKinematics, LinkPoints
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.driver import stamp_msg
from robots.ros2.hardware import RosHardware
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import EstopLatch, SafetySupervisor, SsmConfig, TrackedPerson, safety_config_from_plant
from robots.skills import SkillPlanner

_STATUS = {
    Outcome.SUCCEEDED: GoalStatus.STATUS_SUCCEEDED,
    Outcome.CANCELLED: GoalStatus.STATUS_CANCELED,
    Outcome.FAILED: GoalStatus.STATUS_ABORTED,
    Outcome.STOPPED_BY_SAFETY: GoalStatus.STATUS_ABORTED,
}


def goal_to_json(goal: SkillGoal) -> str:
    return json.dumps({"goal_id": goal.goal_id, "robot": goal.robot, "skill": goal.skill, "args": dict(goal.args)})


def goal_from_json(text: str) -> SkillGoal:
    d = json.loads(text)
    return SkillGoal(str(d["goal_id"]), str(d["robot"]), str(d["skill"]), dict(d.get("args", {})))


def result_to_json(r: SkillResult) -> str:
    return json.dumps(
        {"goal_id": r.goal_id, "outcome": r.outcome.value, "reason": r.reason, "duration_s": r.duration_s}
    )


def result_from_json(text: str) -> SkillResult:
    d = json.loads(text)
    return SkillResult(
        str(d["goal_id"]), Outcome(d["outcome"]), str(d.get("reason", "")), float(d.get("duration_s", 0))
    )


class RosPeople:
    """People tracked in the cell, from ``/cell/people`` and ``/cell/people_speeds``.

    Positions older than ``stale_after_s`` are still used (a person does not vanish because the
    tracker went quiet) but are reported by :attr:`stale`.
    """

    def __init__(self, host: RosHost, stale_after_s: float = 0.1) -> None:
        self._people: list[TrackedPerson] = []
        self._speeds: list[float] = []
        self._received_s = 0.0
        self.stale_after_s = stale_after_s
        # 250 Hz each: on the fast lane, not the executor.
        host.subscribe_fast(Float64MultiArray, "/cell/people_speeds", self._on_speeds, STREAM_QOS)
        host.subscribe_fast(PoseArray, "/cell/people", self._on_poses, STREAM_QOS)

    def _on_speeds(self, msg: Float64MultiArray) -> None:
        self._speeds = list(msg.data)

    def _on_poses(self, msg: PoseArray) -> None:
        names = msg.header.frame_id.split("|")[1:] if "|" in msg.header.frame_id else []
        speeds = self._speeds
        out = []
        for i, pose in enumerate(msg.poses):
            name = names[i] if i < len(names) else f"person_{i}"
            v = speeds[i] if i < len(speeds) else 0.0
            out.append(TrackedPerson(name, float(pose.position.x), float(pose.position.y), float(v)))
        self._people = out
        self._received_s = time.monotonic()

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._received_s > self.stale_after_s

    def __call__(self) -> Sequence[TrackedPerson]:
        return self._people


class RosPartLocator:
    """Parts seen by the cell's vision (``/cell/parts/<part_type>``, geometry_msgs/PoseArray)."""

    def __init__(self, host: RosHost, part_types: Sequence[str]) -> None:
        self.node = host.node("parts", namespace="/cell")
        self._seen: dict[str, list[FloatArray]] = {t: [] for t in part_types}
        for t in part_types:
            self.node.create_subscription(PoseArray, f"/cell/parts/{t}", self._cb(t), STREAM_QOS)

    def _cb(self, part_type: str):  # type: ignore[no-untyped-def]
        def on(msg: PoseArray) -> None:
            self._seen[part_type] = [np.array([p.position.x, p.position.y, p.position.z]) for p in msg.poses]

        return on

    def locate(self, part_type: str, near_m: FloatArray, radius_m: float) -> FloatArray | None:
        best, best_d = None, radius_m
        for p in self._seen.get(part_type, []):
            d = float(np.linalg.norm(p - np.asarray(near_m)))
            if d <= best_d:
                best, best_d = p, d
        return best


class RosPeers:
    """The phases of other robots' runtimes, from their ``skill/feedback``."""

    def __init__(self, host: RosHost, robots: Sequence[str]) -> None:
        self.node = host.node("peers")
        self._phase: dict[str, str] = {}
        for r in robots:
            self.node.create_subscription(String, f"/{r}/skill/feedback", self._cb(r), STREAM_QOS)

    def _cb(self, robot: str):  # type: ignore[no-untyped-def]
        def on(msg: String) -> None:
            d = json.loads(msg.data)
            self._phase[robot] = "" if d.get("phase") == "done" else str(d.get("phase", ""))

        return on

    def phase(self, robot: str) -> str:
        return self._phase.get(robot, "")


class RuntimeNode:
    """ROS 2 endpoints of one robot's runtime (see :mod:`robots.ros2` for the names)."""

    def __init__(self, host: RosHost, robot: str) -> None:
        self.robot = robot
        self.node = host.node("runtime", namespace=f"/{robot}")
        n = self.node
        self._feedback = n.create_publisher(String, "skill/feedback", STREAM_QOS)
        self._result = n.create_publisher(String, "skill/result", LATCHED_QOS)
        self._status = n.create_publisher(GoalStatusArray, "skill/status", LATCHED_QOS)
        self._events = n.create_publisher(DiagnosticArray, "safety/events", LATCHED_QOS)
        self.runtime: RobotRuntime | None = None
        self._uuids: dict[bytes, str] = {}
        self._statuses: dict[str, GoalStatus] = {}
        self._lock = threading.Lock()
        n.create_subscription(String, "skill/goal", self._on_goal, STREAM_QOS)
        host.subscribe_fast(JointTrajectory, f"/{robot}/stream_command", self._on_stream, STREAM_QOS)
        n.create_service(CancelGoal, "skill/cancel", self._on_cancel)
        n.create_service(Trigger, "estop", self._on_estop)
        n.create_service(Trigger, "operator/estop_reset", self._on_reset)
        # The latch file is shared with the operator's command line, which writes it itself
        # when no runtime answers: follow it (a trip there stops this robot within 0.1 s).
        n.create_timer(0.1, self._follow_latch)

    # ------------------------------------------------------------------ runtime callbacks

    def on_feedback(self, fb: SkillFeedback) -> None:
        self._feedback.publish(
            String(data=json.dumps({"goal_id": fb.goal_id, "progress": fb.progress, "phase": fb.phase}))
        )

    def on_result(self, result: SkillResult) -> None:
        self._result.publish(String(data=result_to_json(result)))
        self._set_status(result.goal_id, _STATUS[result.outcome])

    def on_event(self, ev: SafetyEvent) -> None:
        level = {
            "protective_stop": DiagnosticStatus.ERROR,
            "estop": DiagnosticStatus.ERROR,
            "watchdog": DiagnosticStatus.ERROR,
            "refuse": DiagnosticStatus.ERROR,
            "resume": DiagnosticStatus.OK,
            "reset": DiagnosticStatus.OK,
        }.get(ev.kind, DiagnosticStatus.WARN)
        arr = DiagnosticArray()
        arr.header.stamp = stamp_msg(time.time())
        cat = "" if ev.stop_category is None else str(int(ev.stop_category))
        arr.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.robot}/safety",
                message=ev.reason,
                hardware_id=self.robot,
                values=[
                    KeyValue(key="kind", value=ev.kind),
                    KeyValue(key="stop_category", value=cat),
                    KeyValue(key="stamp_s", value=repr(ev.stamp_s)),
                ],
            )
        ]
        self._events.publish(arr)

    def _set_status(self, goal_id: str, status: int) -> None:
        with self._lock:
            gs = GoalStatus(status=status)
            gs.goal_info = GoalInfo(goal_id=UUID(uuid=list(goal_uuid(goal_id))))
            gs.goal_info.stamp = stamp_msg(time.time())
            self._statuses[goal_id] = gs
            if len(self._statuses) > 100:
                for k in list(self._statuses)[:20]:
                    del self._statuses[k]
            arr = GoalStatusArray(status_list=list(self._statuses.values()))
        self._status.publish(arr)

    # ------------------------------------------------------------------ ROS callbacks

    def _on_goal(self, msg: String) -> None:
        rt = self.runtime
        if rt is None:
            return
        try:
            goal = goal_from_json(msg.data)
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._uuids[goal_uuid(goal.goal_id)] = goal.goal_id
            known = goal.goal_id in self._statuses
        if known:
            self._set_status(goal.goal_id, self._statuses[goal.goal_id].status)  # a repeated goal: answer again
            return
        self._set_status(goal.goal_id, GoalStatus.STATUS_ACCEPTED)
        ok, _ = rt.submit(goal)
        if ok:
            self._set_status(goal.goal_id, GoalStatus.STATUS_EXECUTING)

    def _on_cancel(self, req: CancelGoal.Request, resp: CancelGoal.Response) -> CancelGoal.Response:
        rt = self.runtime
        uid = bytes(req.goal_info.goal_id.uuid)
        goal_id = None if not any(uid) else self._uuids.get(uid)
        ok = rt is not None and (goal_id is not None or not any(uid)) and rt.cancel(goal_id)
        resp.return_code = CancelGoal.Response.ERROR_NONE if ok else CancelGoal.Response.ERROR_UNKNOWN_GOAL_ID
        if ok and rt is not None:
            active = rt.active_goal
            if active is not None:
                info = GoalInfo(goal_id=UUID(uuid=list(goal_uuid(active.goal_id))))
                resp.goals_canceling = [info]
                self._set_status(active.goal_id, GoalStatus.STATUS_CANCELING)
        return resp

    def _on_stream(self, msg: JointTrajectory) -> None:
        rt = self.runtime
        if rt is None or not msg.points:
            return
        rt.stream(np.asarray(msg.points[-1].positions, dtype=float), msg.header.frame_id or "stream")

    def _follow_latch(self) -> None:
        rt = self.runtime
        if rt is not None:
            rt.supervisor.sync_estop(time.monotonic())

    def _on_estop(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        rt = self.runtime
        if rt is None:
            resp.success = False
            resp.message = "runtime not started"
            return resp
        rt.supervisor.trip_estop("e-stop requested over ROS 2", "ros2", time.monotonic())
        resp.success = True
        resp.message = "e-stop latched"
        return resp

    def _on_reset(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """The operator's reset (``atelier robot estop-reset``). No plan or model calls this."""
        rt = self.runtime
        if rt is None:
            resp.success = False
            resp.message = "runtime not started"
            return resp
        rt.supervisor.reset_estop("operator (ros2)", time.monotonic())
        resp.success = True
        resp.message = "e-stop reset"
        return resp


def serve_runtime(
    host: RosHost,
    plant: PlantDescription,
    robot: str,
    kinematics: ArmKinematics,
    points: LinkPoints,
    latch_path: Path | str,
    control_period_s: float = 0.004,
    ssm: SsmConfig | None = None,
    config: RuntimeConfig | None = None,
) -> tuple[RuntimeNode, RobotRuntime]:
    """Build and start the runtime of ``robot`` over ROS 2. ``kinematics`` and ``points`` are
    the caller's (built on the plant's MuJoCo model, each with its own scratch data). Returns the
    node and the running runtime; stop with ``runtime.stop()`` then ``host.close()``."""
    joint_names = ROBOT_MODELS[plant.robots[robot].model].joint_names
    # People first: the fast lane serves ready subscriptions in the order they were made, so a
    # control period woken by a joint state already sees the people of the same twin tick.
    people = RosPeople(host)
    hw = RosHardware(host, robot, joint_names, control_period_s)
    locator = RosPartLocator(host, list(plant.part_types))
    peers = RosPeers(host, [r for r in plant.robots if r != robot])
    node = RuntimeNode(host, robot)
    cfg = safety_config_from_plant(plant, robot, control_period_s, ssm)
    sup = SafetySupervisor(cfg, points, EstopLatch(latch_path), node.on_event)
    planner = SkillPlanner(plant, robot, kinematics, locator, peers)
    fk = ArmKinematics(
        kinematics.model,
        list(kinematics.qpos_adr),
        list(kinematics.dof_adr),
        kinematics.site_id,
        list(zip(kinematics.lower, kinematics.upper, strict=True)),
    )

    def tool() -> FloatArray:
        st = runtime.last_state
        return fk.fk(st.position)[0] if st is not None else np.zeros(3)

    runtime = RobotRuntime(
        hw,
        sup,
        planner,
        people=people,
        on_feedback=node.on_feedback,
        on_result=node.on_result,
        clock=time.monotonic,
        config=config,
        plan_inline=False,
        tool_position=tool,
    )
    node.runtime = runtime
    if sup.estopped:
        node.on_event(
            SafetyEvent(time.monotonic(), robot, "estop", sup.stop_causes()["estop"], StopCategory(cfg.estop_category))
        )
    runtime.start()
    return node, runtime

"""The on-robot runtime as a ROS 2 node: skill goals in, feedback, results and safety events out.

:func:`serve_runtime` builds the whole runtime of one robot over ROS 2 (hardware through the
driver's topics, people and parts from the cell's topics, the e-stop latch file) and starts its
control loop. The process keeps running whatever the coordinator does: goals are messages, not
connections, and a goal's result is latched on ``skill/result`` for a coordinator that comes
back. Topic names and the signed protocol: see :mod:`robots.ros2`.

Every command that reaches it over the network is admitted by a
:class:`~plant.trust.ReplayGuard`: goals and cancels (``skill/goal``) under the robot's command
key, e-stop resets (``operator/estop_reset_request``) under its reset key. A refused one is
recorded (:meth:`robots.runtime.RobotRuntime.refuse`: a ``refuse`` safety event and a log line)
and otherwise ignored: it gets no result, so a forged goal cannot fail a real one. Results go out
signed with the command key and name the nonce of the goal message they answer.
:class:`EstopResetClient` is the operator's side of a reset.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
from plant.text import safe_text
from plant.trust import (
    KeyStore,
    MessageRefused,
    ReplayGuard,
    StreamGuard,
    authentic,
    reset_key_name,
    robot_key_name,
    seal,
)
from robots.interface import FloatArray, Outcome, SafetyEvent, SkillFeedback, SkillGoal, SkillResult, StopCategory
from robots.kinematics import ArmKinematics, LinkPoints
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.driver import stamp_msg, stamp_s
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


log = logging.getLogger(__name__)

#: Kinds of the signed messages (:func:`plant.trust.seal`) of a robot's endpoints.
GOAL, CANCEL, RESULT = "goal", "cancel", "result"
RESET, RESET_REPLY = "estop_reset", "estop_reset_reply"


def goal_body(goal: SkillGoal) -> dict[str, Any]:
    """What a goal message says (signed by :func:`plant.trust.seal` with kind ``goal``)."""
    return {
        "goal_id": goal.goal_id,
        "robot": goal.robot,
        "skill": goal.skill,
        "args": dict(goal.args),
        "plan_hash": goal.plan_hash,
        "step_id": goal.step_id,
    }


def goal_from_message(d: Mapping[str, Any]) -> SkillGoal:
    """The goal of an admitted goal message; raises ``KeyError``, ``TypeError`` or
    ``ValueError`` if it is malformed."""
    args = d.get("args", {})
    if not isinstance(args, dict):
        raise TypeError("args is not an object")
    fields = [d["goal_id"], d["robot"], d["skill"], d.get("plan_hash", ""), d.get("step_id", "")]
    if not all(isinstance(f, str) for f in fields):
        raise TypeError("goal_id, robot, skill, plan_hash and step_id must be strings")
    return SkillGoal(fields[0], fields[1], fields[2], args, fields[3], fields[4])


def result_body(robot: str, r: SkillResult, goal_nonce: str) -> dict[str, Any]:
    """What a result message says (signed with kind ``result``): ``goal_nonce`` is the nonce of
    the goal message that started the goal, so that only its sender takes the result."""
    return {
        "robot": robot,
        "goal_id": r.goal_id,
        "goal_nonce": goal_nonce,
        "outcome": r.outcome.value,
        "reason": r.reason,
        "duration_s": r.duration_s,
    }


def result_from_message(d: Mapping[str, Any]) -> SkillResult:
    """The result of an authentic result message; raises ``KeyError``, ``TypeError`` or
    ``ValueError`` if it is malformed."""
    return SkillResult(
        str(d["goal_id"]), Outcome(d["outcome"]), str(d.get("reason", "")), float(d.get("duration_s", 0))
    )


def _shown(d: object, key: str) -> str:
    """A field of a (possibly forged) message, safe to put in a log line or an event."""
    value = d.get(key, "?") if isinstance(d, dict) else "?"
    return safe_text(str(value), 80)


class RosPeople:
    """People tracked in the cell, from ``/cell/people`` and ``/cell/people_speeds``. The last
    positions stay in use when the tracker goes quiet (a person does not vanish with it)."""

    def __init__(self, host: RosHost) -> None:
        self._people: list[TrackedPerson] = []
        self._speeds: list[float] = []
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
    """ROS 2 endpoints of one robot's runtime (see :mod:`robots.ros2` for the names).

    ``keys`` holds the robot's command key and reset key (:func:`plant.trust.robot_key_name`,
    :func:`plant.trust.reset_key_name`); both must exist (raises
    :class:`plant.trust.TrustError` otherwise: a runtime on ROS 2 never runs unauthenticated).
    """

    def __init__(self, host: RosHost, robot: str, keys: KeyStore) -> None:
        self.robot = robot
        self._key = keys.key(robot_key_name(robot), create=False)
        self._reset_key = keys.key(reset_key_name(robot), create=False)
        self._commands = ReplayGuard(self._key)
        self._resets = ReplayGuard(self._reset_key)
        self._streams = StreamGuard(self._key, "stream_command", robot)
        self.node = host.node("runtime", namespace=f"/{robot}")
        n = self.node
        self._feedback = n.create_publisher(String, "skill/feedback", STREAM_QOS)
        self._result = n.create_publisher(String, "skill/result", LATCHED_QOS)
        self._status = n.create_publisher(GoalStatusArray, "skill/status", LATCHED_QOS)
        self._events = n.create_publisher(DiagnosticArray, "safety/events", LATCHED_QOS)
        self._reset_reply = n.create_publisher(String, "operator/estop_reset_reply", LATCHED_QOS)
        self.runtime: RobotRuntime | None = None
        self._uuids: dict[bytes, str] = {}
        self._statuses: dict[str, GoalStatus] = {}
        self._nonces: dict[str, str] = {}  # goal id -> nonce of the goal message that started it
        self._lock = threading.Lock()
        n.create_subscription(String, "skill/goal", self._on_command, STREAM_QOS)
        host.subscribe_fast(JointTrajectory, f"/{robot}/stream_command", self._on_stream, STREAM_QOS)
        n.create_service(CancelGoal, "skill/cancel", self._on_cancel)
        n.create_service(Trigger, "estop", self._on_estop)
        n.create_subscription(String, "operator/estop_reset_request", self._on_reset_request, STREAM_QOS)
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
        with self._lock:
            nonce = self._nonces.get(result.goal_id, "")
        msg = seal(self._key, RESULT, result_body(self.robot, result, nonce))
        self._result.publish(String(data=json.dumps(msg)))
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

    def _on_command(self, msg: String) -> None:
        """A signed goal or cancel on ``skill/goal``: admitted, or refused and recorded."""
        rt = self.runtime
        if rt is None:
            return  # not started: the sender sends it again
        try:
            d: Any = json.loads(msg.data)
        except ValueError:
            rt.refuse("a skill command", "not JSON")
            return
        kind = CANCEL if isinstance(d, dict) and d.get("kind") == CANCEL else GOAL
        what = f"a skill {kind} {_shown(d, 'goal_id')}"
        try:
            self._commands.admit(d, kind)
            if d.get("robot") != self.robot:
                raise MessageRefused(f"addressed to {_shown(d, 'robot')}, not {self.robot}")
            if kind == CANCEL:
                self._cancel(rt, d)
                return
            goal = goal_from_message(d)
        except MessageRefused as exc:
            rt.refuse(what, str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            rt.refuse(what, f"malformed ({type(exc).__name__}: {safe_text(str(exc), 200)})")
            return
        with self._lock:
            self._uuids[goal_uuid(goal.goal_id)] = goal.goal_id
            known = goal.goal_id in self._statuses
            if not known:
                self._nonces[goal.goal_id] = str(d["nonce"])
                if len(self._nonces) > 600:
                    for k in list(self._nonces)[:100]:
                        del self._nonces[k]
        if known:
            self._set_status(goal.goal_id, self._statuses[goal.goal_id].status)  # sent again: answer again
            return
        log.info(
            "%s: goal %s admitted (%s, plan %s, step %s)",
            self.robot,
            safe_text(goal.goal_id, 120),
            safe_text(goal.skill, 40),
            safe_text(goal.plan_hash[:12] or "-", 12),
            safe_text(goal.step_id or "-", 80),
        )
        self._set_status(goal.goal_id, GoalStatus.STATUS_ACCEPTED)
        ok, _ = rt.submit(goal)
        if ok:
            self._set_status(goal.goal_id, GoalStatus.STATUS_EXECUTING)

    def _cancel(self, rt: RobotRuntime, d: Mapping[str, Any]) -> None:
        goal_id = d.get("goal_id")
        if isinstance(goal_id, str) and rt.cancel(goal_id):
            self._set_status(goal_id, GoalStatus.STATUS_CANCELING)

    def _on_cancel(self, req: CancelGoal.Request, resp: CancelGoal.Response) -> CancelGoal.Response:
        """The action-style cancel service carries no signature: refused and recorded (cancels are
        signed messages on ``skill/goal``)."""
        rt = self.runtime
        if rt is not None:
            rt.refuse("a cancel on skill/cancel", "unsigned (cancels are signed messages on skill/goal)")
        resp.return_code = CancelGoal.Response.ERROR_REJECTED
        return resp

    def _on_stream(self, msg: JointTrajectory) -> None:
        """A teleoperation or policy stream: each command signed by a :class:`StreamSigner`
        under the robot's command key (the token in the header's ``frame_id``); any other is
        refused and recorded, and moves nothing."""
        rt = self.runtime
        if rt is None or not msg.points:
            return
        values = msg.points[-1].positions
        try:
            session = self._streams.admit(msg.header.frame_id, stamp_s(msg.header.stamp), values)
        except MessageRefused as exc:
            rt.refuse("a command on stream_command", str(exc))
            return
        rt.stream(np.asarray(values, dtype=float), f"stream {session}")

    def _follow_latch(self) -> None:
        rt = self.runtime
        if rt is not None:
            was = rt.supervisor.estopped
            rt.supervisor.sync_estop(time.monotonic())
            if rt.supervisor.estopped and not was:
                rt.stop_now()

    def _on_estop(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        rt = self.runtime
        if rt is None:
            resp.success = False
            resp.message = "runtime not started"
            return resp
        rt.trip_estop("e-stop requested over ROS 2", "ros2")
        resp.success = True
        resp.message = "e-stop latched"
        return resp

    def _on_reset(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """A Trigger carries no credential: an unsigned reset is refused and recorded."""
        rt = self.runtime
        if rt is not None:
            rt.refuse("an e-stop reset on operator/estop_reset", "unsigned")
        resp.success = False
        resp.message = (
            "refused: an e-stop reset must be signed with the robot's reset key "
            "(atelier robot estop-reset, on operator/estop_reset_request)"
        )
        return resp

    def _on_reset_request(self, msg: String) -> None:
        """The operator's signed reset (``atelier robot estop-reset``). No plan or model sends it.
        Admitted: the e-stop is reset in the name of the signed operator. Refused: recorded, and
        an authentic request (stale, replayed) is answered, signed, with the reason."""
        rt = self.runtime
        if rt is None:
            log.warning("%s: an e-stop reset request before the runtime started: ignored", self.robot)
            return
        try:
            d: Any = json.loads(msg.data)
        except ValueError:
            rt.refuse("an e-stop reset", "not JSON")
            return
        operator = d.get("operator") if isinstance(d, dict) else None
        what = f"an e-stop reset in the name of {_shown(d, 'operator')}"
        try:
            self._resets.admit(d, RESET)
            if d.get("robot") != self.robot:
                raise MessageRefused(f"addressed to {_shown(d, 'robot')}, not {self.robot}")
            if not isinstance(operator, str) or not operator:
                raise MessageRefused("it names no operator")
        except MessageRefused as exc:
            rt.refuse(what, str(exc))
            if isinstance(d, dict) and authentic(self._reset_key, d):
                self._reply(d, False, f"refused: {exc}")
            return
        who = safe_text(operator, 80)
        rt.supervisor.reset_estop(f"{who} (signed reset over ros2)", time.monotonic())
        self._reply(d, True, f"e-stop reset by {who}")

    def _reply(self, request: Mapping[str, Any], success: bool, message: str) -> None:
        body = {"robot": self.robot, "request_nonce": request.get("nonce"), "success": success, "message": message}
        self._reset_reply.publish(String(data=json.dumps(seal(self._reset_key, RESET_REPLY, body))))


class EstopResetClient:
    """The operator's side of a signed e-stop reset of ``robot`` (nodes on ``host``), with the
    robot's reset key from ``keys`` (raises :class:`plant.trust.TrustError` if it is missing)."""

    def __init__(self, host: RosHost, robot: str, keys: KeyStore) -> None:
        self.robot = robot
        self._key = keys.key(reset_key_name(robot), create=False)
        self.node = host.node(f"operator_{secrets.token_hex(4)}", namespace=f"/{robot}")
        self._pub = self.node.create_publisher(String, "operator/estop_reset_request", STREAM_QOS)
        self._replies: dict[str, tuple[bool, str]] = {}
        self._arrived = threading.Condition()
        self.node.create_subscription(String, "operator/estop_reset_reply", self._on_reply, LATCHED_QOS)

    def _on_reply(self, msg: String) -> None:
        try:
            d: Any = json.loads(msg.data)
        except ValueError:
            return
        if not (isinstance(d, dict) and authentic(self._key, d) and d.get("kind") == RESET_REPLY):
            return  # not the runtime's (forged replies change nothing)
        if d.get("robot") != self.robot or not isinstance(d.get("request_nonce"), str):
            return
        with self._arrived:
            self._replies.setdefault(d["request_nonce"], (d.get("success") is True, str(d.get("message", ""))))
            self._arrived.notify_all()

    def reset(self, operator: str, timeout_s: float = 3.0) -> tuple[bool, str] | None:
        """Ask the runtime to reset the e-stop in the name of ``operator`` (whose credential the
        caller checked), and wait for its signed answer. Blocks up to ``timeout_s`` twice (for a
        runtime to listen, then for its answer). None: no runtime listens (nothing was sent);
        else (reset, the runtime's message), (False, ...) if it did not answer in time."""
        end = time.monotonic() + timeout_s
        while self._pub.get_subscription_count() == 0:
            if time.monotonic() > end:
                return None
            time.sleep(0.01)
        request = seal(self._key, RESET, {"robot": self.robot, "operator": operator})
        self._pub.publish(String(data=json.dumps(request)))
        end = time.monotonic() + timeout_s
        with self._arrived:
            while request["nonce"] not in self._replies:
                left = end - time.monotonic()
                if left <= 0:
                    return False, f"the runtime of {self.robot} listens but did not answer in {timeout_s:g} s"
                self._arrived.wait(left)
            return self._replies[request["nonce"]]


def serve_runtime(
    host: RosHost,
    plant: PlantDescription,
    robot: str,
    kinematics: ArmKinematics,
    points: LinkPoints,
    latch_path: Path | str,
    keys: KeyStore,
    control_period_s: float = 0.004,
    ssm: SsmConfig | None = None,
    config: RuntimeConfig | None = None,
) -> tuple[RuntimeNode, RobotRuntime]:
    """Build and start the runtime of ``robot`` over ROS 2. ``kinematics`` and ``points`` are
    the caller's (built on the plant's MuJoCo model, each with its own scratch data); ``keys``
    holds the robot's keys (see :class:`RuntimeNode`; raises :class:`plant.trust.TrustError`
    before anything starts if one is missing). Returns the node and the running runtime; stop
    with ``runtime.stop()`` then ``host.close()``."""
    joint_names = ROBOT_MODELS[plant.robots[robot].model].joint_names
    keys.key(robot_key_name(robot), create=False)
    keys.key(reset_key_name(robot), create=False)
    # People first: the fast lane serves ready subscriptions in the order they were made, so a
    # control period woken by a joint state already sees the people of the same twin tick.
    people = RosPeople(host)
    hw = RosHardware(host, robot, joint_names, control_period_s, key=keys.key(robot_key_name(robot), create=False))
    locator = RosPartLocator(host, list(plant.part_types))
    peers = RosPeers(host, [r for r in plant.robots if r != robot])
    node = RuntimeNode(host, robot, keys)
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

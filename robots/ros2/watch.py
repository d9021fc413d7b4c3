"""Watching robots from outside over ROS 2, as a console or a dashboard does: nothing here moves
a robot or resets an e-stop.

- :class:`RobotWatcher`: one robot's joints (``joint_states`` of its driver, on the host's fast
  lane), its safety state and e-stop (``safety/events`` of its runtime, latched, read by a
  :class:`SafetyTracker`) and the skill it performs (``skill/status`` of its runtime, latched,
  named from the goals seen on ``skill/goal``). :meth:`RobotWatcher.reading` returns a
  :class:`RobotReading`.
- :class:`CellWatcher`: the cell's people (``/cell/people``) and parts (``/cell/parts/<type>``).
- :class:`EstopTrigger`: trips a robot's e-stop through its runtime's ``estop`` service (anyone
  may stop a robot). A reset is the operator's signed request:
  :class:`robots.ros2.runtime_node.EstopResetClient`, as ``atelier robot estop-reset`` sends it.

Topic names: see :mod:`robots.ros2`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from action_msgs.msg import GoalStatus, GoalStatusArray
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robots.interface import SafetyState
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.driver import GRIPPER_JOINT
from robots.ros2.runtime_node import RosPeople

#: Goal statuses of a goal the runtime still works on.
_ACTIVE = frozenset({GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_EXECUTING, GoalStatus.STATUS_CANCELING})


class SafetyTracker:
    """A robot's safety state as its supervisor's events tell it (pure logic, any thread under
    the caller's lock).

    The supervisor reports each stop cause once when it becomes active (an event with a stop
    category: ``estop``, ``protective_stop``, ``watchdog``, ``refuse``, ``sensor_fault``,
    ``internal_fault``) and once when it clears (``resume``); an operator's reset is ``reset``.
    So the open causes are counted, the e-stop is latched from its ``estop`` to the next
    ``reset``, and ``slow`` (speed scaled for a person near) shows as reduced speed for
    ``slow_shown_s`` (the supervisor reports entering it, not leaving it). An event without a
    stop category (a refused network message, a clamp, the e-stop's latch file not written)
    opens nothing. A watcher that joins late sees the runtime's last 50 events only.
    """

    def __init__(self, slow_shown_s: float = 1.0) -> None:
        self.slow_shown_s = slow_shown_s
        self.open_causes = 0
        self.estop = False
        self.estop_reason = ""
        self.events = 0
        self._slow_until = -1.0

    def event(self, kind: str, reason: str, stop_category: str, now_s: float) -> None:
        """One safety event (``stop_category`` "" when it has none; ``now_s`` monotonic, s)."""
        self.events += 1
        if kind == "reset":
            self.estop, self.estop_reason = False, ""
        elif kind == "resume":
            self.open_causes = max(0, self.open_causes - 1)
        elif kind == "slow":
            self._slow_until = now_s + self.slow_shown_s
        if stop_category:
            self.open_causes += 1
            if kind == "estop" and not self.estop:
                self.estop, self.estop_reason = True, reason
        elif kind == "estop" and not self.estop:  # latched, reported without a new stop (file not written)
            self.estop, self.estop_reason = True, reason

    def state(self, now_s: float) -> SafetyState:
        """The safety state at ``now_s`` (monotonic, s)."""
        if self.estop:
            return "estop"
        if self.open_causes > 0:
            return "protective_stop"
        return "reduced_speed" if now_s < self._slow_until else "ok"


@dataclass(frozen=True)
class RobotReading:
    """A robot as watched: joints (rad, rad/s, in the model's joint order; None before the first
    joint state), how old they are (s; None before the first), the gripper's measured closure
    (0 open .. 1 closed; None if its driver publishes none), the safety state and e-stop, and the
    skill being performed (None when idle). ``runtime_seen``: whether any event or goal status
    of its runtime has arrived (a robot whose runtime never spoke shows ``ok`` for want of news)."""

    robot: str
    position_rad: tuple[float, ...] | None
    velocity_rad_s: tuple[float, ...]
    age_s: float | None
    gripper_closure: float | None
    safety: SafetyState
    estop: bool
    estop_reason: str
    skill: str | None
    runtime_seen: bool


class RobotWatcher:
    """Watches ``robot`` (nodes on ``host``; see the module docstring). ``joint_names``: the
    model's joints, the order of :attr:`RobotReading.position_rad`. ``on_change()`` is called (on
    a ROS thread; it must not block) after a safety event or a change of the skill performed.
    Thread-safe; :meth:`reading` never blocks for long."""

    def __init__(
        self,
        host: RosHost,
        robot: str,
        joint_names: Sequence[str],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.robot = robot
        self.joint_names = tuple(joint_names)
        self.on_change = on_change
        self.safety = SafetyTracker()
        self._lock = threading.Lock()
        self._msg: JointStateMsg | None = None
        self._received_s = 0.0
        self._order: tuple[tuple[str, ...], list[int], int | None] | None = None
        self._skills: dict[bytes, str] = {}  # goal uuid -> skill, from the goals seen
        self._active: bytes | None = None
        self._status_seen = False
        self.node = host.node(f"watch_{robot}")
        n = self.node
        n.create_subscription(DiagnosticArray, f"/{robot}/safety/events", self._on_events, LATCHED_QOS)
        n.create_subscription(GoalStatusArray, f"/{robot}/skill/status", self._on_status, LATCHED_QOS)
        n.create_subscription(String, f"/{robot}/skill/goal", self._on_goal, STREAM_QOS)
        # 250 Hz: on the fast lane; the callback keeps the message and returns.
        host.subscribe_fast(JointStateMsg, f"/{robot}/joint_states", self._on_joints, STREAM_QOS)

    def _on_joints(self, msg: JointStateMsg) -> None:
        now = time.monotonic()
        with self._lock:
            self._msg, self._received_s = msg, now

    def _on_events(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        with self._lock:
            for st in msg.status:
                values = {kv.key: kv.value for kv in st.values}
                self.safety.event(values.get("kind", ""), st.message, values.get("stop_category", ""), now)
        self._changed()

    def _on_goal(self, msg: String) -> None:
        try:
            d: Any = json.loads(msg.data)
        except ValueError:
            return
        # Display only: the runtime decides what runs (a goal it refuses gets a terminal status).
        if isinstance(d, dict) and isinstance(d.get("goal_id"), str) and isinstance(d.get("skill"), str):
            with self._lock:
                self._skills[goal_uuid(d["goal_id"])] = d["skill"][:40]
                if len(self._skills) > 200:
                    for k in list(self._skills)[:50]:
                        del self._skills[k]

    def _on_status(self, msg: GoalStatusArray) -> None:
        active = [s for s in msg.status_list if s.status in _ACTIVE]
        newest = max(active, key=lambda s: (s.goal_info.stamp.sec, s.goal_info.stamp.nanosec), default=None)
        uid = bytes(newest.goal_info.goal_id.uuid) if newest is not None else None
        with self._lock:
            changed = uid != self._active or not self._status_seen
            self._active, self._status_seen = uid, True
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _joints(self, msg: JointStateMsg) -> tuple[tuple[float, ...] | None, tuple[float, ...], float | None]:
        names = tuple(msg.name)
        if self._order is None or self._order[0] != names:
            if not set(self.joint_names) <= set(names):
                return None, (), None
            grip = names.index(GRIPPER_JOINT) if GRIPPER_JOINT in names else None
            self._order = (names, [names.index(j) for j in self.joint_names], grip)
        _, order, grip = self._order
        if len(msg.position) != len(names):
            return None, (), None
        pos = tuple(float(msg.position[i]) for i in order)
        vel = tuple(float(msg.velocity[i]) for i in order) if len(msg.velocity) == len(names) else ()
        closure = float(msg.position[grip]) if grip is not None else None
        return pos, vel, closure

    def reading(self) -> RobotReading:
        """The robot as last heard of."""
        now = time.monotonic()
        with self._lock:
            msg, received = self._msg, self._received_s
            pos, vel, closure = self._joints(msg) if msg is not None else (None, (), None)
            skill = None
            if self._active is not None:
                skill = self._skills.get(self._active, "a skill")
            return RobotReading(
                self.robot,
                pos,
                vel,
                now - received if msg is not None else None,
                closure,
                self.safety.state(now),
                self.safety.estop,
                self.safety.estop_reason,
                skill,
                self.safety.events > 0 or self._status_seen,
            )


class CellWatcher:
    """The cell's people (``/cell/people`` with ``/cell/people_speeds``: name, x, y in m, speed
    in m/s) and parts (``/cell/parts/<type>``: positions in m, cell frame) as a tracker and a
    vision system publish them. Thread-safe."""

    def __init__(self, host: RosHost, part_types: Sequence[str]) -> None:
        self._people = RosPeople(host)
        self._lock = threading.Lock()
        self._parts: dict[str, list[tuple[float, float, float]]] = {}
        self.node = host.node("watch_cell")
        for t in part_types:
            self.node.create_subscription(PoseArray, f"/cell/parts/{t}", self._on_parts(t), STREAM_QOS)

    def _on_parts(self, part_type: str) -> Callable[[PoseArray], None]:
        def on(msg: PoseArray) -> None:
            seen = [(float(p.position.x), float(p.position.y), float(p.position.z)) for p in msg.poses]
            with self._lock:
                self._parts[part_type] = seen

        return on

    def people(self) -> list[tuple[str, float, float, float]]:
        """(name, x_m, y_m, speed_m_s) of every person tracked (names ``person_<i>`` when the
        tracker gives none)."""
        return [(p.name, p.x_m, p.y_m, p.speed_m_s) for p in self._people()]

    def parts(self) -> dict[str, list[tuple[float, float, float]]]:
        """Positions of the parts seen, by part type; a type missing has not been published yet
        (an empty list: published, none seen)."""
        with self._lock:
            return {t: list(v) for t, v in self._parts.items()}


class EstopTrigger:
    """Trips robots' e-stops through their runtimes' ``/<robot>/estop`` services (std_srvs/Trigger;
    the runtime stops the arm, latches and writes its latch file). Thread-safe."""

    def __init__(self, host: RosHost) -> None:
        self.node = host.node("estop_trigger")
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def trip(self, robot: str, timeout_s: float = 3.0, resend_s: float = 1.0) -> str | None:
        """Ask ``robot``'s runtime to trip its e-stop; blocks up to ``timeout_s`` twice (for the
        service, then for the answer). A request unanswered after ``resend_s`` is sent again
        (tripping is idempotent; a request sent just as the service is discovered may be lost
        while the runtime's reply channel is still being matched). The runtime's answer, or None
        when no runtime answered (the caller then trips the latch file, as ``atelier robot
        estop`` does)."""
        with self._lock:
            client = self._clients.get(robot)
            if client is None:
                client = self._clients[robot] = self.node.create_client(Trigger, f"/{robot}/estop")
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        resend_s = max(resend_s, 0.05)
        done = threading.Event()
        end = time.monotonic() + timeout_s
        futures: list[Any] = []
        while not done.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            future = client.call_async(Trigger.Request())
            future.add_done_callback(lambda _f: done.set())
            futures.append(future)
            done.wait(min(resend_s, left))
        answered = [f for f in futures if f.done()]
        for f in futures:
            if not f.done():
                client.remove_pending_request(f)
        result = answered[0].result() if answered else None
        return None if result is None or not result.success else str(result.message)

"""A robot driver node: publishes ``sensor_msgs/JointState`` and follows joint commands.

Generic over where the joints are: the owner hands each new state to :meth:`RobotDriverNode.publish`
from any thread (the twin's stepping thread, a fieldbus thread); publishing happens on the rclpy
executor thread, woken by a guard condition, so the caller never waits for ROS. Commands
arriving on ``joint_command`` and ``gripper_command`` go to the callbacks given, on the
executor thread. A watchdog reports (``driver/events``) and holds the last command when
commands stop arriving after they had started, as a real driver's external-control timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Time  # type: ignore[import-untyped]
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.node import Node
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory

from robots.interface import FloatArray, JointState
from robots.ros2._host import STREAM_QOS, RosHost


def stamp_msg(t_s: float) -> Time:
    """A builtin_interfaces/Time from seconds (wall clock, epoch)."""
    sec = int(t_s)
    return Time(sec=sec, nanosec=int((t_s - sec) * 1e9))


def stamp_s(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


class RobotDriverNode:
    """The ROS 2 face of one robot's joints, in namespace ``/<robot>``.

    ``on_command(position_rad)`` and ``on_gripper(closed_fraction)`` are called on the executor
    thread and must not block. ``watchdog_timeout_s``: commands silent this long after they
    started count as a lost command source (the robot holds its last command: a position servo
    at rest; an event goes out on ``driver/events``).
    """

    def __init__(
        self,
        host: RosHost,
        robot: str,
        joint_names: Sequence[str],
        on_command: Callable[[FloatArray], None],
        on_gripper: Callable[[float], None],
        watchdog_timeout_s: float = 0.1,
    ) -> None:
        self.robot = robot
        self.joint_names = list(joint_names)
        self.node: Node = host.node("driver", namespace=f"/{robot}")
        self._pub = self.node.create_publisher(JointStateMsg, "joint_states", STREAM_QOS)
        self._events = self.node.create_publisher(DiagnosticArray, "driver/events", STREAM_QOS)
        self.node.create_subscription(JointTrajectory, "joint_command", self._on_command, STREAM_QOS)
        self.node.create_subscription(Float64, "gripper_command", self._on_gripper, STREAM_QOS)
        self._on_command_cb = on_command
        self._on_gripper_cb = on_gripper
        self._lock = threading.Lock()
        self._latest: JointState | None = None
        self._gc = self.node.create_guard_condition(self._publish_latest)
        self._msg = JointStateMsg()
        self._msg.name = self.joint_names
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self.watchdog_timeout_s = watchdog_timeout_s
        self._last_cmd_s: float | None = None
        self.watchdog_tripped = False
        self.commands_received = 0
        self.published = 0
        self.node.create_timer(0.01, self._check_watchdog)

    def publish(self, state: JointState) -> None:
        """Hand over a new joint state (any thread, never blocks on ROS)."""
        with self._lock:
            self._latest = state
        with contextlib.suppress(InvalidHandle):  # the node is being destroyed
            self._gc.trigger()

    def _publish_latest(self) -> None:
        with self._lock:
            st, self._latest = self._latest, None
        if st is None:
            return
        msg = self._msg
        msg.header.stamp = stamp_msg(time.time())
        msg.position = st.position.tolist()
        msg.velocity = st.velocity.tolist()
        self._pub.publish(msg)
        self.published += 1

    def _on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        pts = msg.points[-1].positions
        names = list(msg.joint_names) or self.joint_names
        if len(pts) != len(names):
            return
        q = np.full(len(self.joint_names), np.nan)
        for name, value in zip(names, pts, strict=True):
            i = self._index.get(name)
            if i is not None:
                q[i] = value
        if np.any(np.isnan(q)):
            return  # a command must name every joint
        self._last_cmd_s = time.monotonic()
        self.commands_received += 1
        if self.watchdog_tripped:
            self.watchdog_tripped = False
            self._event(DiagnosticStatus.OK, "commands resumed")
        self._on_command_cb(q)

    def _on_gripper(self, msg: Float64) -> None:
        self._on_gripper_cb(float(msg.data))

    def _check_watchdog(self) -> None:
        last = self._last_cmd_s
        if last is None or self.watchdog_tripped:
            return
        silent = time.monotonic() - last
        if silent > self.watchdog_timeout_s:
            self.watchdog_tripped = True
            self._event(DiagnosticStatus.ERROR, f"watchdog: no joint command for {silent:.3f} s; holding")

    def _event(self, level: bytes, message: str) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = stamp_msg(time.time())
        arr.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.robot}/driver",
                message=message,
                hardware_id=self.robot,
                values=[KeyValue(key="kind", value="watchdog" if level != DiagnosticStatus.OK else "resume")],
            )
        ]
        self._events.publish(arr)

"""A robot driver node: publishes ``sensor_msgs/JointState`` and follows joint commands.

Generic over where the joints are: the owner calls :meth:`RobotDriverNode.publish` with each new
state from the thread that has it (the twin's stepping thread, a fieldbus thread), once per servo
cycle. It publishes right there (about 40 us; rclpy publishers are thread-safe) and never waits
for the executor: waking the executor for every state costs it a whole wait-set rebuild, and at
250 Hz per robot that was what held the rate under 200 Hz. Commands arriving on
``joint_command`` and ``gripper_command`` go to the callbacks given, on the host's fast lane.

The watchdog runs on the same servo cycle: when commands stop arriving after they had started
(the runtime died, the network went), the robot holds its last command, a position servo at
rest, and an event goes out on ``driver/events`` (latched), as a real driver's external-control
timeout does.

A driver that starts moves nothing. Its owner holds the arm where it is (the servo target is
the measured position), and the driver follows only fresh commands:

- the command topics are volatile (:data:`COMMAND_QOS`): a command a latched (transient-local)
  publisher kept from before the driver started is never delivered to it;
- a joint command stamped before the driver started (or not stamped at all) is ignored: it was
  meant for the arm as it was then;
- while the driver holds on its own (since it started, or since its watchdog tripped more than
  ``rejoin_window_s`` ago), it takes up a command source only when the source's first command
  lies within
  ``resume_tolerance_rad`` of the measured position: a runtime that kept streaming its old
  hold through a driver restart would otherwise drag the arm from where it is back to where it
  was. A command source that (re)starts begins from the measured position, as ours does.

Given the robot's command key, the driver follows only commands its runtime signed
(:class:`plant.trust.StreamSigner`; the token in the header's ``frame_id``, the gripper's command
a one-joint trajectory like the arm's): a stranger on the ROS 2 graph, or a copy of the
runtime's own commands replayed, moves nothing. Without a key (a twin served where no robot
keys were made) it follows any command and says so once when it starts.

Every kind of refusal is reported once per episode on
``driver/events`` (kind ``stale_command``, ``command_jump`` or ``unauthenticated_command``).

The joint states carry the gripper too, as one more joint named :data:`GRIPPER_JOINT`:
position = its measured closure (0 open .. 1 closed, where the fingers are), effort = the grip
force (N) on an object it detects between its fingers, 0 when it detects none. A runtime that
starts reads what the gripper holds from there, not from memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.node import Node
from sensor_msgs.msg import JointState as JointStateMsg
from trajectory_msgs.msg import JointTrajectory

from plant.trust import MessageRefused, StreamGuard
from robots.interface import FloatArray, JointState
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost

#: The command topics' QoS: reliable, keep the last few, and volatile on purpose: a volatile
#: subscription is never handed what a transient-local publisher kept from before it joined.
COMMAND_QOS = STREAM_QOS
#: Name of the gripper's entry in ``joint_states`` (see the module docstring).
GRIPPER_JOINT = "gripper"


def stamp_msg(t_s: float) -> Time:
    """A builtin_interfaces/Time from seconds (wall clock, epoch)."""
    sec = int(t_s)
    return Time(sec=sec, nanosec=int((t_s - sec) * 1e9))


def stamp_s(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


class RobotDriverNode:
    """The ROS 2 face of one robot's joints, in namespace ``/<robot>``.

    ``on_command(position_rad)`` and ``on_gripper(closed_fraction)`` are called on the host's
    fast-lane thread and must not block. ``watchdog_timeout_s``: commands silent this long after
    they started count as a lost command source (the robot holds its last command; an event
    goes out on ``driver/events``). The watchdog is checked in :meth:`publish`, on the servo cycle.
    ``rejoin_window_s``: a command source silent for less than this (a runtime late by a few
    periods on a loaded host; the watchdog held the arm meanwhile) is followed again at once; one
    silent for longer, like one the driver never followed since it started, must start from the
    measured position.
    ``resume_tolerance_rad``: how far (per joint) the first command a holding driver takes up may
    lie from the measured position (see the module docstring). ``started_s`` (wall clock,
    ``time.time()``) is when the driver started: commands stamped earlier are ignored.
    """

    def __init__(
        self,
        host: RosHost,
        robot: str,
        joint_names: Sequence[str],
        on_command: Callable[[FloatArray], None],
        on_gripper: Callable[[float], None],
        watchdog_timeout_s: float = 0.1,
        resume_tolerance_rad: float = 0.05,
        rejoin_window_s: float = 0.5,
        key: bytes | None = None,
    ) -> None:
        self.started_s = time.time()
        self._guards = (
            None
            if key is None
            else (StreamGuard(key, "joint_command", robot), StreamGuard(key, "gripper_command", robot))
        )
        self.robot = robot
        self.joint_names = list(joint_names)
        self.resume_tolerance_rad = resume_tolerance_rad
        self.rejoin_window_s = rejoin_window_s
        self.node: Node = host.node("driver", namespace=f"/{robot}")
        self._pub = self.node.create_publisher(JointStateMsg, "joint_states", STREAM_QOS)
        self._events = self.node.create_publisher(DiagnosticArray, "driver/events", LATCHED_QOS)
        self._on_command_cb = on_command
        self._on_gripper_cb = on_gripper
        self._msg = JointStateMsg()
        self._msg.name = self.joint_names
        self._names_with_gripper = [*self.joint_names, GRIPPER_JOINT]
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self.watchdog_timeout_s = watchdog_timeout_s
        self._last_cmd_s: float | None = None
        self.watchdog_tripped = False
        self.published = 0
        self._measured: FloatArray | None = None  # the arm's last published position
        self._following = False  # a command source was taken up (since start or the last watchdog trip)
        self._reported: set[str] = set()  # refusal kinds already reported in this episode
        host.subscribe_fast(JointTrajectory, f"/{robot}/joint_command", self._on_command, COMMAND_QOS)
        host.subscribe_fast(JointTrajectory, f"/{robot}/gripper_command", self._on_gripper, COMMAND_QOS)
        if key is None:
            self._event(
                DiagnosticStatus.WARN, "unauthenticated_commands", "no command key: any joint command is followed"
            )

    def publish(
        self, state: JointState, gripper: tuple[float, float] | None = None, stamp_s: float | None = None
    ) -> None:
        """Publish a new joint state now, on the calling thread, and check the watchdog.

        ``gripper`` is the gripper's measured (closure 0..1, grip force in N on a detected
        object, 0 for none), published as the :data:`GRIPPER_JOINT` entry; None for a robot
        whose gripper reports nothing. ``stamp_s`` is when the state was sampled (epoch s;
        default now): a runtime judges how fast the joints moved by the stamps, so a burst of
        late samples must carry their own times. Call it once per servo cycle from one thread. Does not
        block on ROS (the middleware queues the message); a node being destroyed is ignored.
        """
        msg = self._msg
        msg.header.stamp = stamp_msg(time.time() if stamp_s is None else stamp_s)
        position = np.asarray(state.position, dtype=float)
        self._measured = position
        if gripper is None:
            msg.name = self.joint_names
            msg.position = position.tolist()
            msg.velocity = np.asarray(state.velocity, dtype=float).tolist()
            msg.effort = []
        else:
            closure, force = gripper
            nan = float("nan")  # the arm's joint torques: not measured here
            msg.name = self._names_with_gripper
            msg.position = [*position.tolist(), float(closure)]
            msg.velocity = [*np.asarray(state.velocity, dtype=float).tolist(), 0.0]
            msg.effort = [*([nan] * len(self.joint_names)), float(force)]
        with contextlib.suppress(InvalidHandle):  # the node is being destroyed
            self._pub.publish(msg)
            self.published += 1
            self._check_watchdog()

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
        stamp = stamp_s(msg.header.stamp)
        if not self._authentic(msg, 0, stamp, "a joint command"):
            return
        if stamp < self.started_s:
            ago = self.started_s - stamp
            what = "not stamped" if stamp == 0.0 else f"stamped {ago:.3f} s before the driver started"
            self._ignore("stale_command", f"ignored a joint command {what}; holding")
            return
        silent_s = None if self._last_cmd_s is None else time.monotonic() - self._last_cmd_s
        if not self._following or (silent_s is not None and silent_s > self.rejoin_window_s):
            measured = self._measured
            if measured is None:
                self._ignore("stale_command", "ignored a joint command before the first joint state; holding")
                return
            jump = float(np.max(np.abs(q - measured)))
            if jump > self.resume_tolerance_rad:
                self._ignore(
                    "command_jump",
                    f"ignored a joint command {jump:.3f} rad from where the arm is (more than "
                    f"{self.resume_tolerance_rad:g}); holding until a command source starts from the measured position",
                )
                return
            self._following = True
            self._reported.clear()
        self._last_cmd_s = time.monotonic()
        self._on_command_cb(q)

    def _ignore(self, kind: str, message: str) -> None:
        if kind not in self._reported:
            self._reported.add(kind)
            self._event(DiagnosticStatus.WARN, kind, message)

    def _on_gripper(self, msg: JointTrajectory) -> None:
        if not msg.points or len(msg.points[-1].positions) != 1:
            return
        if self._authentic(msg, 1, stamp_s(msg.header.stamp), "a gripper command"):
            self._on_gripper_cb(float(msg.points[-1].positions[0]))

    def _authentic(self, msg: JointTrajectory, which: int, stamp: float, what: str) -> bool:
        if self._guards is None:
            return True
        try:
            self._guards[which].admit(msg.header.frame_id, stamp, msg.points[-1].positions)
        except MessageRefused as exc:
            self._ignore("unauthenticated_command", f"ignored {what}: {exc}; holding")
            return False
        return True

    def _check_watchdog(self) -> None:
        last = self._last_cmd_s
        if last is None:
            return
        silent = time.monotonic() - last
        if self.watchdog_tripped:
            if silent <= self.watchdog_timeout_s:
                self.watchdog_tripped = False
                self._event(DiagnosticStatus.OK, "resume", "joint commands resumed")
        elif silent > self.watchdog_timeout_s:
            self.watchdog_tripped = True
            self._event(DiagnosticStatus.ERROR, "watchdog", f"watchdog: no joint command for {silent:.3f} s; holding")

    def _event(self, level: bytes, kind: str, message: str) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = stamp_msg(time.time())
        arr.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.robot}/driver",
                message=message,
                hardware_id=self.robot,
                values=[KeyValue(key="kind", value=kind), KeyValue(key="stamp_s", value=repr(time.time()))],
            )
        ]
        self._events.publish(arr)

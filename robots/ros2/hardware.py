"""The :class:`~robots.interface.HardwareInterface` over ROS 2 topics to a robot driver.

Joint states arrive on ``/<robot>/joint_states`` (sensor_msgs/JointState) on the host's fast
lane (a thread of their own, not the executor); :meth:`RosHardware.wait` blocks the control
loop until the next one. Commands go out on
``/<robot>/joint_command`` (trajectory_msgs/JointTrajectory, one point reached in one control
period, stamped when sent: a driver ignores a command stamped before it started) and
``/<robot>/gripper_command`` (std_msgs/Float64), both volatile (:data:`~robots.ros2.driver.COMMAND_QOS`:
never kept for a driver that joins later). Publishing does not block.

The gripper's measured closure and grip force come in the joint states, as the
:data:`~robots.ros2.driver.GRIPPER_JOINT` entry: :meth:`RosHardware.gripper_closure` and
:meth:`RosHardware.gripper_holds` (None while the driver publishes no gripper entry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState as JointStateMsg
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from plant.trust import StreamSigner
from robots.interface import FloatArray, JointState, NewestState
from robots.ros2._host import STREAM_QOS, RosHost
from robots.ros2.driver import COMMAND_QOS, GRIPPER_JOINT, stamp_msg, stamp_s

log = logging.getLogger(__name__)


class RosHardware(NewestState):
    """One robot's joints through its ROS 2 driver. Thread-safe.

    ``read`` raises ``TimeoutError`` when no joint state arrived within ``stale_after_s``.
    ``latencies_s`` keeps receive time minus header stamp of the last states (wall clock).
    """

    def __init__(
        self,
        host: RosHost,
        robot: str,
        joint_names: Sequence[str],
        control_period_s: float = 0.004,
        stale_after_s: float = 0.1,
        key: bytes | None = None,
    ) -> None:
        super().__init__(f"{robot}'s driver")
        self.robot = robot
        # Signed joint and gripper commands (the driver follows only its runtime's; see
        # robots.ros2.driver), or unsigned ones to a driver that has no key.
        self._signers = (
            None
            if key is None
            else (StreamSigner(key, "joint_command", robot), StreamSigner(key, "gripper_command", robot))
        )
        self.joint_names = tuple(joint_names)
        self.control_period_s = control_period_s
        self.stale_after_s = stale_after_s
        self.node = host.node("hardware", namespace=f"/{robot}")
        self._cmd = self.node.create_publisher(JointTrajectory, "joint_command", COMMAND_QOS)
        self._grip = self.node.create_publisher(JointTrajectory, "gripper_command", COMMAND_QOS)
        self._received_s = 0.0
        self._order: list[int] | None = None
        self._bad_shapes: set[tuple[int, int, int]] = set()  # malformed joint states logged
        self._names_seen: list[str] = []
        self._grip_index: int | None = None
        self._gripper: tuple[float, float] | None = None  # (closure, grip force N), measured
        self.latencies_s: list[float] = []
        self._traj = JointTrajectory()
        self._traj.joint_names = list(self.joint_names)
        ns = int(control_period_s * 1e9)
        self._duration = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        host.subscribe_fast(JointStateMsg, f"/{robot}/joint_states", self._on_state, STREAM_QOS)

    def _on_state(self, msg: JointStateMsg) -> None:
        now = time.time()
        if self._order is None or len(msg.name) != len(self._names_seen):
            # (again when the names change: a restarted driver may publish the gripper or not)
            names = list(msg.name)
            if not set(self.joint_names) <= set(names):
                return
            self._order = [names.index(n) for n in self.joint_names]
            self._names_seen = names
            self._grip_index = names.index(GRIPPER_JOINT) if GRIPPER_JOINT in names else None
        pos, vel = self._arrays(msg, self._order)
        st = JointState(stamp_s(msg.header.stamp), pos, vel)
        gi = self._grip_index
        gripper = None
        if gi is not None:
            force = float(msg.effort[gi]) if len(msg.effort) > gi else 0.0
            gripper = (float(msg.position[gi]), force)
        if len(self.latencies_s) < 100_000:
            self.latencies_s.append(now - st.stamp_s)
        with self._cond:
            self._state = st
            self._gripper = gripper
            self._received_s = time.monotonic()
            self._seq += 1
            self._cond.notify_all()

    def _arrays(self, msg: JointStateMsg, order: list[int]) -> tuple[FloatArray, FloatArray]:
        """The positions and velocities (rad, rad/s) of the robot's joints in ``msg``, in the
        order of ``joint_names``. A message whose arrays do not match its names is not dropped
        (that would hide it): it comes through as NaN for the safety supervisor to refuse, and
        is logged once per shape."""
        names, n_pos, n_vel = len(msg.name), len(msg.position), len(msg.velocity)
        if n_pos == names and n_vel in (0, names):
            pos = np.asarray(msg.position, dtype=float)[order]
            return pos, (np.asarray(msg.velocity, dtype=float)[order] if n_vel else np.zeros(len(pos)))
        shape = (names, n_pos, n_vel)
        if shape not in self._bad_shapes and len(self._bad_shapes) < 10:
            self._bad_shapes.add(shape)
            log.warning(
                "%s: joint state with %d names, %d positions and %d velocities: taken as NaN",
                self.robot,
                *shape,
            )
        nan = np.full(len(self.joint_names), np.nan)
        return nan, nan.copy()

    def connected(self) -> bool:
        """True once the driver's joint states arrive and it listens to commands."""
        return self._state is not None and self._cmd.get_subscription_count() > 0

    def read(self) -> JointState:
        with self._cond:
            if self._state is None or time.monotonic() - self._received_s > self.stale_after_s:
                raise TimeoutError(f"no joint state from {self.robot}'s driver for {self.stale_after_s} s")
            self._seen = self._seq
            return self._state

    def gripper_closure(self) -> float | None:
        """The gripper's measured closure (0 open .. 1 closed) in the last joint state; None
        when the driver publishes no gripper entry (or no state came yet)."""
        with self._cond:
            return None if self._gripper is None else self._gripper[0]

    def gripper_holds(self) -> bool | None:
        """Whether the gripper detects an object between its fingers (grip force above 0) in
        the last joint state; None when the driver publishes no gripper entry (or no state yet)."""
        with self._cond:
            return None if self._gripper is None else self._gripper[1] > 0.0

    def write(self, position: FloatArray) -> None:
        self._cmd.publish(self._signed(self._traj, np.asarray(position, dtype=float).tolist(), 0))

    def set_gripper(self, closed_fraction: float) -> None:
        msg = JointTrajectory()
        msg.joint_names = [GRIPPER_JOINT]
        self._grip.publish(self._signed(msg, [float(closed_fraction)], 1))

    def _signed(self, msg: JointTrajectory, values: list[float], which: int) -> JointTrajectory:
        msg.header.stamp = stamp_msg(time.time())
        msg.points = [JointTrajectoryPoint(positions=values, time_from_start=self._duration)]
        if self._signers is not None:
            msg.header.frame_id = self._signers[which].token(stamp_s(msg.header.stamp), values)
        return msg

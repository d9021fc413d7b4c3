"""The live twin's robots on ROS 2: one driver node per robot, and the cell's people and parts.

:func:`start_robot_drivers` is what ``atelier twin serve`` (or a test) calls next to the
OPC-UA/Modbus servers: every robot of the plant gets a :class:`~robots.ros2.driver.RobotDriverNode`
under ``/<robot>`` publishing ``sensor_msgs/JointState`` every twin tick (250 Hz) and following
``joint_command``; the people the twin walks are published on ``/cell/people`` (with speeds on
``/cell/people_speeds``) every tick, like a tracker would, and parts on ``/cell/parts/<type>``
every 10 ticks, like a vision system would. All of it is published by the twin's listener, on
the twin thread, right after the tick (about 0.2 ms a tick for the demo cell): rclpy
publishers are thread-safe, and waking the executor for every tick instead is what held the
joint-state rate under 200 Hz (see :mod:`robots.ros2._host`).

Drivers that start move nothing: before they listen, every arm's servo target is set to where
the arm is (:meth:`~sim.twin.Twin.hold_robots`), and the driver nodes follow only fresh
commands (:mod:`robots.ros2.driver`). Each joint state carries the gripper's measured closure and
grip force (the twin's object detection: the part it holds), so a runtime that starts knows
what the gripper holds.

    python -m sim.robot_drivers [PLANT.yaml] [--seconds N]   # a live twin with its robot drivers
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import numpy as np
from geometry_msgs.msg import Pose, PoseArray
from rclpy._rclpy_pybind11 import InvalidHandle
from std_msgs.msg import Float64MultiArray

from plant.catalog import ROBOT_MODELS
from plant.trust import KeyStore, robot_key_name, robot_keys
from plant.workers import REALTIME_PRIORITY
from robots.interface import FloatArray, JointState
from robots.ros2._host import STREAM_QOS, RosHost
from robots.ros2.driver import RobotDriverNode, stamp_msg
from sim.live import LiveTwin
from sim.twin import Twin

log = logging.getLogger(__name__)


class RobotDrivers:
    """The running driver nodes of a live twin; :meth:`close` removes them (the twin keeps running)."""

    def __init__(
        self,
        live: LiveTwin,
        host: RosHost,
        owns_host: bool,
        parts_every_ticks: int = 10,
        keys: KeyStore | None = None,
    ) -> None:
        self.live = live
        self.host = host
        self._owns_host = owns_host
        tw = live.twin
        # Hold every arm where it is before any command can arrive: drivers that start on a
        # running twin (a driver restart) must not carry on with the previous driver's command.
        if live.running:
            live.submit(lambda t: t.hold_robots()).result(10.0)
        else:
            live.read(lambda t: t.hold_robots())
        self.drivers: dict[str, RobotDriverNode] = {}
        for robot, spec in tw.plant.robots.items():
            self.drivers[robot] = RobotDriverNode(
                host,
                robot,
                ROBOT_MODELS[spec.model].joint_names,
                on_command=self._command(robot),
                on_gripper=self._gripper(robot),
                key=_command_key(keys, robot),
            )
        self._node = host.node("twin_tracker", namespace="/cell")
        self._people_pub = self._node.create_publisher(PoseArray, "/cell/people", STREAM_QOS)
        self._speeds_pub = self._node.create_publisher(Float64MultiArray, "/cell/people_speeds", STREAM_QOS)
        self._types = {name: p.type for name, p in tw.plant.parts.items()}
        self._parts_pub = {
            t: self._node.create_publisher(PoseArray, f"/cell/parts/{t}", STREAM_QOS) for t in tw.plant.part_types
        }
        self._parts_every = parts_every_ticks
        self._robots = list(tw.plant.robots)
        live.add_listener(self._on_tick, name="robot-drivers")

    def _command(self, robot: str):  # type: ignore[no-untyped-def]
        def on(q: FloatArray) -> None:
            self.live.submit(lambda tw: tw.set_joint_targets(robot, q))

        return on

    def _gripper(self, robot: str):  # type: ignore[no-untyped-def]
        def on(f: float) -> None:
            self.live.submit(lambda tw: tw.set_gripper(robot, f))

        return on

    def _on_tick(self, tw: Twin) -> None:
        # On the twin thread, under its lock: publish this tick's people, then the joint states
        # (a runtime's control period starts on a joint state: it then sees this tick's people,
        # which takes a tick off the reaction to an intrusion), and return.
        with contextlib.suppress(InvalidHandle):  # closing
            self._publish_cell(tw)
        t = tw.time_s
        sampled = self.live.tick_wall_s  # the tick's own time, also when ticks come late
        for robot in self._robots:
            self.drivers[robot].publish(
                JointState(t, tw.joint_positions(robot), tw.joint_velocities(robot)),
                (tw.gripper_closure(robot), tw.gripper_force_n(robot)),
                stamp_s=sampled,
            )

    def _publish_cell(self, tw: Twin) -> None:
        stamp = stamp_msg(self.live.tick_wall_s)
        people = tw.people_positions()
        arr = PoseArray()
        arr.header.stamp = stamp
        arr.header.frame_id = "cell"
        arr.poses = [_pose(x, y, 0.0) for x, y, _ in people.values()]
        # Speeds first: the runtime pairs each pose array with the speeds it last received.
        self._speeds_pub.publish(Float64MultiArray(data=[v for _, _, v in people.values()]))
        self._people_pub.publish(arr)
        if tw.ticks % self._parts_every == 0:
            grouped: dict[str, list[tuple[float, float, float]]] = {}
            for name, xyz in tw.part_positions().items():
                grouped.setdefault(self._types[name], []).append(xyz)
            for part_type, pub in self._parts_pub.items():
                pa = PoseArray()
                pa.header.stamp = stamp
                pa.header.frame_id = "cell"
                pa.poses = [_pose(*xyz) for xyz in grouped.get(part_type, [])]
                pub.publish(pa)

    def close(self) -> None:
        self.live.remove_listener(self._on_tick)
        if self._owns_host:
            self.host.close()


def _pose(x: float, y: float, z: float) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = float(x), float(y), float(z)
    p.orientation.w = 1.0
    return p


def _command_key(keys: KeyStore | None, robot: str) -> bytes | None:
    name = robot_key_name(robot)
    if keys is None or not keys.exists(name):
        log.warning("%s: no command key (atelier robot keys): its driver follows unsigned joint commands", robot)
        return None
    return keys.key(name, create=False)


def start_robot_drivers(
    live: LiveTwin, host: RosHost | None = None, domain_id: int | None = None, keys: KeyStore | None = None
) -> RobotDrivers:
    """Serve every robot of the live twin as a ROS 2 driver node (and the cell's people and parts).

    Pass a ``host`` to share an rclpy context with other nodes of the process; otherwise one is
    made (``domain_id`` or ``ROS_DOMAIN_ID``) and closed with the returned object. Each driver
    follows only the joint commands its runtime signed with the robot's key in ``keys``
    (default: the robots' state folder, :func:`plant.trust.robot_keys`); a robot without a key
    there follows unsigned commands (logged). A host made here schedules its receiving threads
    as the live twin's thread is (real-time where permitted, :class:`~sim.live.LiveTwin`): the
    joint commands of a stop reach the twin at once. Non-blocking.
    """
    own = host is None
    host = host or RosHost(domain_id, realtime_priority=live.realtime_priority)
    return RobotDrivers(live, host, own, keys=keys if keys is not None else robot_keys())


def main() -> None:
    from plant import load_plant

    ap = argparse.ArgumentParser(description="a live twin serving its robots as ROS 2 driver nodes")
    ap.add_argument("plant", nargs="?", default=None)
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: run until killed)")
    ap.add_argument("--speed", type=float, default=1.0)
    args = ap.parse_args()
    twin = Twin(load_plant(args.plant) if args.plant else load_plant())
    with LiveTwin(twin, speed=args.speed, realtime_priority=REALTIME_PRIORITY) as live:
        drivers = start_robot_drivers(live)
        print("ready", flush=True)
        try:
            end = time.monotonic() + args.seconds if args.seconds > 0 else np.inf
            while time.monotonic() < end:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            drivers.close()


if __name__ == "__main__":
    main()

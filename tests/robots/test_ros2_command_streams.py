"""The streams that move an arm, attacked from a foreign process over ROS 2: the driver's joint
and gripper commands and the runtime's teleoperation stream follow only what the robot's key
signed (issue 12's first attack, through the topics the goals' signatures left open)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plant.config import PlantDescription
from plant.trust import MessageRefused, StreamGuard, StreamSigner
from robots.interface import Outcome, SkillGoal
from robots.ros2._host import RosHost
from robots.ros2.agent import RosRobotAgent
from robots.testing import make_robot_keys
from sim.live import LiveTwin
from sim.robot_drivers import RobotDrivers, start_robot_drivers
from sim.twin import Twin
from tests.robots.test_ros2 import ROOT, _Events, _kill, _start_runtime

ROBOT = "ur5e_1"

# A stranger's node: streams joint targets turning the base on the arm's three command topics,
# unsigned, and with a token copied from nowhere (a made-up one), for the seconds given.
_STRANGER = """
import sys, time
from robots.ros2._host import RosHost, STREAM_QOS
from robots.ros2.driver import COMMAND_QOS, GRIPPER_JOINT, stamp_msg
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
robot, seconds = sys.argv[1], float(sys.argv[2])
with RosHost() as h:
    n = h.node('stranger')
    qos = {'joint_command': COMMAND_QOS, 'gripper_command': COMMAND_QOS, 'stream_command': STREAM_QOS}
    pubs = {t: n.create_publisher(JointTrajectory, f'/{robot}/{t}', q) for t, q in qos.items()}
    end = time.monotonic() + 10
    while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < end:
        time.sleep(0.01)
    print('streaming', flush=True)
    q = [0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0]
    t0 = time.monotonic(); i = 0
    while time.monotonic() - t0 < seconds:
        i += 1
        q[0] = 0.02 + 0.5 * (time.monotonic() - t0)
        grip = ('gripper_command', [1.0], [GRIPPER_JOINT])
        for topic, values, names in (('joint_command', q, []), ('stream_command', q, []), grip):
            m = JointTrajectory(); m.header.stamp = stamp_msg(time.time()); m.joint_names = names
            m.header.frame_id = '' if i % 2 else f'0123456789abcdef.{i}.' + '0' * 32
            m.points = [JointTrajectoryPoint(positions=list(values))]
            pubs[topic].publish(m)
        time.sleep(0.004)
    print('done', flush=True)
"""

Cell = tuple[LiveTwin, RobotDrivers, RosHost, Path]


@pytest.fixture
def keyed_cell(demo_plant: PlantDescription, tmp_path: Path) -> Iterator[Cell]:
    """A live twin whose drivers hold the robots' keys (as ``atelier twin serve`` does where
    ``atelier robot keys`` made them), the runtime's keys the same."""
    keys = make_robot_keys(tmp_path, list(demo_plant.robots))
    host = RosHost()
    live = LiveTwin(Twin(demo_plant)).start()
    drivers = start_robot_drivers(live, host, keys=keys)
    yield live, drivers, host, tmp_path
    drivers.close()
    live.stop()
    host.close()


def _q(live: LiveTwin) -> np.ndarray[Any, np.dtype[np.float64]]:
    return live.read(lambda tw: tw.joint_positions(ROBOT).copy())


def _stranger(seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STRANGER, ROBOT, str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and "streaming" in proc.stdout.readline()
    return proc


def test_a_stream_token_binds_its_values_receiver_and_order() -> None:
    key = b"k" * 32
    signer = StreamSigner(key, "joint_command", ROBOT)
    now = time.time()

    def guard_of(key: bytes = key, kind: str = "joint_command", to: str = ROBOT) -> StreamGuard:
        return StreamGuard(key, kind, to, clock=lambda: now)

    t1 = signer.token(now, [0.1, 0.2])
    guard = guard_of()
    assert guard.admit(t1, now, [0.1, 0.2]) == signer.session
    with pytest.raises(MessageRefused, match="replayed"):
        guard.admit(t1, now, [0.1, 0.2])
    t2 = signer.token(now, [0.1, 0.2])
    with pytest.raises(MessageRefused, match="wrong MAC"):
        guard_of().admit(t2, now, [0.1, 0.3])  # altered values
    with pytest.raises(MessageRefused, match="wrong MAC"):
        guard_of(to="panda_1").admit(t2, now, [0.1, 0.2])  # meant for another robot
    with pytest.raises(MessageRefused, match="wrong MAC"):
        guard_of(kind="stream_command").admit(t2, now, [0.1, 0.2])  # another topic
    with pytest.raises(MessageRefused, match="wrong MAC"):
        guard_of(key=b"m" * 32).admit(t2, now, [0.1, 0.2])  # another key
    with pytest.raises(MessageRefused, match="not signed"):
        guard_of().admit("", now, [0.1, 0.2])
    assert guard_of().admit(t2, now, [0.1, 0.2]) == signer.session
    old = signer.token(now - 5.0, [0.0])
    with pytest.raises(MessageRefused, match="stale"):
        guard_of().admit(old, now - 5.0, [0.0])


@pytest.mark.slow
async def test_a_strangers_joint_gripper_and_stream_commands_move_nothing(keyed_cell: Cell) -> None:
    live, _, host, state_dir = keyed_cell
    runtime = _start_runtime(ROBOT, state_dir)
    try:
        driver_events = _Events(host, f"/{ROBOT}/driver/events")
        safety_events = _Events(host, f"/{ROBOT}/safety/events")
        agent = RosRobotAgent(host, ROBOT, make_robot_keys(state_dir, [ROBOT]))
        assert await agent.wait_ready(20)
        # The runtime's own signed commands are followed: a goal moves the arm.
        res = await agent.run_skill(SkillGoal("cs-home", ROBOT, "home"), 30)
        assert res.outcome == Outcome.SUCCEEDED, res
        await asyncio.sleep(0.5)
        q0, grip0 = _q(live), live.read(lambda tw: tw.gripper_closure(ROBOT))
        stranger = _stranger(1.5)
        assert stranger.stdout is not None and "done" in await asyncio.to_thread(stranger.stdout.readline)
        _kill(stranger)
        await asyncio.sleep(0.3)
        assert np.max(np.abs(_q(live) - q0)) < 0.01, "a stranger's commands moved the arm"
        assert abs(live.read(lambda tw: tw.gripper_closure(ROBOT)) - grip0) < 0.05, "the gripper closed"
        assert "unauthenticated_command" in driver_events.kinds(), driver_events.items
        assert any("stream_command" in m for _, k, m in safety_events.items if k == "refuse"), safety_events.items
        # With the runtime gone, the driver still follows no stranger (the review's second path).
        _kill(runtime)
        await asyncio.sleep(0.5)
        q1 = _q(live)
        stranger = _stranger(1.0)
        assert stranger.stdout is not None and "done" in await asyncio.to_thread(stranger.stdout.readline)
        _kill(stranger)
        await asyncio.sleep(0.3)
        assert np.max(np.abs(_q(live) - q1)) < 0.01, "a stranger moved the arm with no runtime running"
    finally:
        _kill(runtime)

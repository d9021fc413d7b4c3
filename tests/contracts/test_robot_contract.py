"""One contract, every robot hardware backend: the in-process MuJoCo twin (lockstep and live,
``sim.hardware``), ROS 2 topics to the live twin's driver node (``robots.ros2.hardware``) and the
fake of ``robots.testing``. The same checks run on each (:func:`robots.testing.check_robot`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator

import pytest

# ROS 2 on a domain of this process's own (as tests/robots/conftest.py does), before any node.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
with warnings.catch_warnings():  # rclpy's type support imports the deprecated sre_parse once
    warnings.simplefilter("ignore", DeprecationWarning)
    import rosidl_generator_py  # type: ignore[import-untyped]  # noqa: F401

from plant.catalog import ROBOT_MODELS
from plant.config import PlantDescription
from robots.interface import FloatArray, HardwareInterface, JointState
from robots.ros2._host import RosHost
from robots.ros2.hardware import RosHardware
from robots.testing import FakeHardware, check_robot
from sim.hardware import LiveTwinHardware, TwinHardware
from sim.live import LiveTwin
from sim.robot_drivers import RobotDrivers, start_robot_drivers
from sim.twin import Twin

BACKENDS = [
    ("fake", "ur5e_1"),
    ("twin", "ur5e_1"),
    ("twin", "panda_1"),
    ("live", "panda_1"),
    ("ros2", "ur5e_1"),
    ("ros2", "panda_1"),
]


@pytest.fixture(scope="module")
def live_cell(demo_plant: PlantDescription) -> Iterator[tuple[LiveTwin, RobotDrivers, RosHost]]:
    host = RosHost()
    live = LiveTwin(Twin(demo_plant)).start()
    drivers = start_robot_drivers(live, host)
    yield live, drivers, host
    drivers.close()
    live.stop()
    host.close()


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{r}" for b, r in BACKENDS])
def backend(
    request: pytest.FixtureRequest, demo_plant: PlantDescription
) -> Iterator[tuple[HardwareInterface, Callable[[], None] | None]]:
    kind, robot = request.param
    if kind == "fake":
        fake = FakeHardware(
            robot, ROBOT_MODELS[demo_plant.robots[robot].model].joint_names, demo_plant.robots[robot].home()
        )
        yield fake, fake.step
    elif kind == "twin":
        twin = Twin(demo_plant)
        yield TwinHardware(twin, robot), lambda: twin.step(1)
    elif kind == "live":
        live, _, _ = request.getfixturevalue("live_cell")
        hw = LiveTwinHardware(live, robot)
        yield hw, None
        hw.close()
    else:
        live, _, host = request.getfixturevalue("live_cell")
        ros = RosHardware(host, robot, ROBOT_MODELS[demo_plant.robots[robot].model].joint_names)
        ros.wait(10.0)
        yield ros, None


def test_every_backend_passes_the_robot_contract(
    backend: tuple[HardwareInterface, Callable[[], None] | None],
) -> None:
    hw, step = backend
    report = check_robot(hw, step)
    assert report.robot == hw.robot
    assert report.tracking_error_rad < 0.01


def test_the_contract_catches_a_backend_that_drops_commands(demo_plant: PlantDescription) -> None:
    class Deaf(FakeHardware):
        def write(self, position: FloatArray) -> None:
            pass  # what a backend that lost its command topic does

    names = ROBOT_MODELS[demo_plant.robots["ur5e_1"].model].joint_names
    deaf = Deaf("ur5e_1", names, demo_plant.robots["ur5e_1"].home())
    with pytest.raises(AssertionError, match="velocity never showed the commanded motion"):
        check_robot(deaf, deaf.step)


def test_the_contract_catches_stale_states(demo_plant: PlantDescription) -> None:
    class Frozen(FakeHardware):
        def read(self) -> JointState:
            st = super().read()
            return JointState(0.0, st.position, st.velocity)  # the stamp never moves

    names = ROBOT_MODELS[demo_plant.robots["ur5e_1"].model].joint_names
    frozen = Frozen("ur5e_1", names, demo_plant.robots["ur5e_1"].home())
    with pytest.raises(AssertionError, match="not newer than the last"):
        check_robot(frozen, frozen.step)

"""The threads that clock the robots run real-time (SCHED_FIFO) where the process is permitted:
the runtime's control loop, the fast lane and the middleware's receive threads its joint states
come through (``bench/bench_robots.py`` measures what it does to the control period). Where it
is not permitted, they keep normal scheduling and say so (``tests/plant/test_workers.py``)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import mujoco
import pytest
from std_msgs.msg import Float64MultiArray

from plant.config import PlantDescription
from plant.workers import REALTIME_PRIORITY, realtime
from robots.interface import JointState, SkillGoal
from robots.ros2._host import RosHost, _receive_threads
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import SafetySupervisor, safety_config_from_plant
from robots.skills import SkillPlanner
from robots.testing import FakeHardware
from sim.hardware import arm_kinematics, compile_model, link_points

ROBOT = "ur5e_1"


def _permitted() -> str:
    """Why this process may not schedule a thread real-time ("" when it may), tried on a thread
    of its own that ends at once."""
    said: list[str] = []
    probe = threading.Thread(target=lambda: said.append(realtime(REALTIME_PRIORITY)))
    probe.start()
    probe.join()
    return "" if said[0].startswith("real-time") else said[0]


needs_realtime = pytest.mark.skipif(
    bool(_permitted()), reason=f"this process may not schedule real-time: {_permitted()}"
)


def _policy(tid: int) -> int:
    return os.sched_getscheduler(tid)


class _Clocked(FakeHardware):
    """Fake joints whose ``wait`` gives a state every control period, as a driver does."""

    def wait(self, timeout_s: float) -> JointState:
        time.sleep(self.control_period_s)
        self.step()
        return self.read()


@pytest.fixture(scope="module")
def model(demo_plant: PlantDescription) -> mujoco.MjModel:
    return compile_model(demo_plant)


def _runtime(model: mujoco.MjModel, plant: PlantDescription, config: RuntimeConfig) -> RobotRuntime:
    cfg = safety_config_from_plant(plant, ROBOT)
    hw = _Clocked(ROBOT, cfg.joint_names, plant.robots[ROBOT].home())
    sup = SafetySupervisor(cfg, link_points(model, plant, ROBOT))
    return RobotRuntime(hw, sup, SkillPlanner(plant, ROBOT, arm_kinematics(model, plant, ROBOT)), config=config)


def _started(rt: RobotRuntime) -> threading.Thread:
    rt.start()
    end = time.monotonic() + 10
    while rt.scheduling == "not started" and time.monotonic() < end:
        time.sleep(0.01)
    thread = rt._thread
    assert thread is not None and thread.native_id is not None
    return thread


def test_a_priority_outside_the_range_is_refused_before_anything_changes() -> None:
    with pytest.raises(ValueError, match="outside"):
        realtime(os.sched_get_priority_max(os.SCHED_FIFO) + 1)
    assert realtime(None) == "normal scheduling"
    assert _policy(threading.get_native_id()) == os.SCHED_OTHER


@needs_realtime
def test_the_live_control_loop_runs_real_time(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    rt = _runtime(model, demo_plant, RuntimeConfig())
    try:
        thread = _started(rt)
        assert rt.scheduling == f"real-time (SCHED_FIFO {REALTIME_PRIORITY})"
        assert _policy(thread.native_id or 0) == os.SCHED_FIFO
        assert os.sched_getparam(thread.native_id or 0).sched_priority == REALTIME_PRIORITY
        assert _policy(threading.get_native_id()) == os.SCHED_OTHER  # only the loop's thread
    finally:
        rt.stop()


@needs_realtime
def test_planning_asked_for_by_a_real_time_thread_runs_at_normal_scheduling(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    """A goal may come from a real-time thread (a hand-over's peer on its control loop): the
    planning thread it starts must not inherit the real-time policy (IK takes milliseconds)."""
    rt = _runtime(model, demo_plant, RuntimeConfig())
    policies: list[int] = []
    plan = rt.planner.plan

    def recorded(*args: Any) -> Any:
        policies.append(os.sched_getscheduler(0))
        return plan(*args)

    rt.planner.plan = recorded  # type: ignore[method-assign]
    try:
        _started(rt)
        end = time.monotonic() + 10
        while not rt.synced and time.monotonic() < end:
            time.sleep(0.01)
        said: list[object] = []

        def submit() -> None:
            said.append(realtime(REALTIME_PRIORITY))
            said.append(rt.submit(SkillGoal("home-from-a-real-time-thread", ROBOT, "home")))

        asker = threading.Thread(target=submit)
        asker.start()
        asker.join()
        assert said == [f"real-time (SCHED_FIFO {REALTIME_PRIORITY})", (True, "")]
        assert rt.wait_idle(20)
        assert policies == [os.SCHED_OTHER]
    finally:
        rt.stop()


def test_a_control_loop_configured_without_it_keeps_normal_scheduling(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    rt = _runtime(model, demo_plant, RuntimeConfig(realtime_priority=None))
    try:
        thread = _started(rt)
        assert rt.scheduling == "normal scheduling"
        assert _policy(thread.native_id or 0) == os.SCHED_OTHER
    finally:
        rt.stop()


def _lane_and_receivers(host: RosHost, before: set[int]) -> tuple[int, list[int]]:
    """The native ids of ``host``'s fast-lane thread and of the receive threads its middleware
    started (those not in ``before``)."""
    host.subscribe_fast(Float64MultiArray, "/realtime_test/data", lambda _m: None)
    lane = host._lane
    assert lane is not None and lane._scheduled.wait(5)
    tid = lane._thread.native_id
    assert tid is not None
    return tid, [t for t in _receive_threads() if t not in before]


@needs_realtime
def test_the_fast_lane_and_the_middleware_receivers_run_real_time_on_a_real_time_host() -> None:
    before = set(_receive_threads())
    with RosHost(realtime_priority=REALTIME_PRIORITY) as host:
        lane, receivers = _lane_and_receivers(host, before)
        assert receivers, "no middleware receive thread found"
        assert _policy(lane) == os.SCHED_FIFO
        assert all(_policy(tid) == os.SCHED_FIFO for tid in receivers)
        assert host.scheduling.startswith(f"fast lane real-time (SCHED_FIFO {REALTIME_PRIORITY}); ")
        assert f"{len(receivers)} middleware receive threads real-time" in host.scheduling
        # The executor's thread (goals, services) keeps normal scheduling.
        assert _policy(host._thread.native_id or 0) == os.SCHED_OTHER


def test_a_host_made_without_a_priority_keeps_normal_scheduling() -> None:
    before = set(_receive_threads())
    with RosHost() as host:
        lane, receivers = _lane_and_receivers(host, before)
        assert receivers
        assert _policy(lane) == os.SCHED_OTHER
        assert all(_policy(tid) == os.SCHED_OTHER for tid in receivers)
        assert host.scheduling == "normal scheduling"

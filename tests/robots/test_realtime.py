"""The threads that clock the robots run real-time (SCHED_FIFO) where the process is permitted
and they are asked to: the runtime's control loop, the fast lane and the middleware's threads
that receive user data, and a live twin standing in for the robots' controllers (at real-time
speed, while it keeps up). ``bench/bench_robots.py`` measures what it does to the control
period. Where it is not permitted, they keep normal scheduling and say so
(``tests/plant/test_workers.py``)."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import mujoco
import pytest
from std_msgs.msg import Float64MultiArray

from plant.config import PlantDescription
from plant.workers import REALTIME_PRIORITY, policy_of, realtime
from robots.interface import JointState, SkillGoal
from robots.ros2._host import RosHost, _carries_user_data, _receive_threads
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import SafetySupervisor, safety_config_from_plant
from robots.skills import SkillPlanner
from robots.testing import FakeHardware
from sim.hardware import arm_kinematics, compile_model, link_points
from sim.live import REALTIME_MAX_BEHIND_TICKS, LiveTwin
from sim.twin import Twin

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
    return policy_of(tid)


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
    frozen = gc.get_freeze_count()
    with pytest.raises(ValueError, match="outside"):
        realtime(os.sched_get_priority_max(os.SCHED_FIFO) + 1)
    assert realtime(None) == "normal scheduling"
    assert _policy(threading.get_native_id()) == os.SCHED_OTHER
    assert gc.get_freeze_count() == frozen


def test_a_real_time_thread_takes_the_objects_alive_now_out_of_full_collections() -> None:
    # A full collection of a process with the robot stack loaded held every thread for 70 to
    # 115 ms (plant.workers.realtime); what is alive when a control loop starts is frozen.
    gc.unfreeze()
    alive = [[] for _ in range(1000)]
    said: list[str] = []
    probe = threading.Thread(target=lambda: said.append(realtime(REALTIME_PRIORITY)))
    probe.start()
    probe.join()
    try:
        assert said and gc.get_freeze_count() >= len(alive)  # (refused or not: the heap is frozen)
    finally:
        gc.unfreeze()


@needs_realtime
def test_the_live_control_loop_runs_real_time(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    rt = _runtime(model, demo_plant, RuntimeConfig(realtime_priority=REALTIME_PRIORITY))
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
    rt = _runtime(model, demo_plant, RuntimeConfig(realtime_priority=REALTIME_PRIORITY))
    policies: list[int] = []
    plan = rt.planner.plan

    def recorded(*args: Any) -> Any:
        policies.append(policy_of())
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


def test_a_control_loop_keeps_normal_scheduling_unless_configured(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    rt = _runtime(model, demo_plant, RuntimeConfig())
    try:
        thread = _started(rt)
        assert rt.scheduling == "normal scheduling"
        assert _policy(thread.native_id or 0) == os.SCHED_OTHER
    finally:
        rt.stop()


def _lane(host: RosHost) -> int:
    host.subscribe_fast(Float64MultiArray, "/realtime_test/data", lambda _m: None)
    lane = host._lane
    assert lane is not None and lane._scheduled.wait(5)
    tid = lane._thread.native_id
    assert tid is not None
    return tid


@needs_realtime
def test_a_real_time_host_schedules_its_fast_lane_and_its_user_data_receivers_only() -> None:
    with RosHost() as plain:
        _lane(plain)
        others = set(_receive_threads())
        assert others, "no middleware receive thread found"
        with RosHost(realtime_priority=REALTIME_PRIORITY) as host:
            lane = _lane(host)
            own = {t: n for t, n in _receive_threads().items() if t not in others}
            data = [t for t, n in own.items() if _carries_user_data(n, host.domain_id)]
            assert data and len(data) < len(own), own  # user data and discovery both
            assert sorted(host.realtime_threads) == sorted([*data, lane])
            assert all(_policy(t) == os.SCHED_FIFO for t in host.realtime_threads)
            # Discovery (traffic from anyone on the network), the executor's thread and the
            # other host's threads keep normal scheduling.
            assert all(_policy(t) == os.SCHED_OTHER for t in own if t not in data)
            assert all(_policy(t) == os.SCHED_OTHER for t in others)
            assert _policy(host._thread.native_id or 0) == os.SCHED_OTHER
            assert host.scheduling.startswith(f"fast lane real-time (SCHED_FIFO {REALTIME_PRIORITY}); ")
            assert f"{len(data)} middleware receive threads of user data real-time" in host.scheduling


def test_a_host_made_without_a_priority_keeps_normal_scheduling() -> None:
    before = set(_receive_threads())
    with RosHost() as host:
        lane = _lane(host)
        receivers = [t for t in _receive_threads() if t not in before]
        assert receivers
        assert _policy(lane) == os.SCHED_OTHER
        assert all(_policy(t) == os.SCHED_OTHER for t in receivers)
        assert host.scheduling == "normal scheduling" and host.realtime_threads == []


def test_the_ports_of_user_data_are_told_from_those_of_discovery() -> None:
    # RTPS well-known ports, domain 0: 7400 discovery multicast, 7401 user multicast, 7410 + 2p
    # discovery unicast, 7411 + 2p user unicast; domain 3 adds 750.
    assert [_carries_user_data(f"dds.udp.{p}", 0) for p in (7400, 7401, 7410, 7411, 7412, 7413)] == [
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert _carries_user_data("dds.shm.8161", 3) and not _carries_user_data("dds.udp.8160", 3)
    assert not _carries_user_data("dds.shm.7000", 0) and not _carries_user_data("dds.udp.7411", 1)
    assert not _carries_user_data("dds.udp.x", 0)


def _twin_thread(live: LiveTwin) -> int:
    end = time.monotonic() + 10
    while live.scheduling == "not started" and time.monotonic() < end:
        time.sleep(0.01)
    thread = live._thread
    assert thread is not None and thread.native_id is not None
    return thread.native_id


@needs_realtime
def test_a_live_twin_runs_real_time_only_at_real_time_speed(demo_plant: PlantDescription) -> None:
    with LiveTwin(Twin(demo_plant), realtime_priority=REALTIME_PRIORITY) as live:
        assert _policy(_twin_thread(live)) == os.SCHED_FIFO
        assert live.scheduling == f"real-time (SCHED_FIFO {REALTIME_PRIORITY})"
    with LiveTwin(Twin(demo_plant), speed=2.0, realtime_priority=REALTIME_PRIORITY) as live:
        assert _policy(_twin_thread(live)) == os.SCHED_OTHER  # faster than real time: batch work
    with LiveTwin(Twin(demo_plant)) as live:
        assert _policy(_twin_thread(live)) == os.SCHED_OTHER


@needs_realtime
def test_a_real_time_twin_that_cannot_keep_up_drops_to_normal_scheduling(demo_plant: PlantDescription) -> None:
    twin = Twin(demo_plant)
    step = twin.step

    def slow(n: int = 1) -> None:  # a tick takes longer than the control period
        time.sleep(twin.config.ctrl_dt_s * 1.5)
        step(n)

    twin.step = slow  # type: ignore[method-assign]
    with LiveTwin(twin, realtime_priority=REALTIME_PRIORITY) as live:
        tid = _twin_thread(live)
        end = time.monotonic() + 30
        while live.scheduling.startswith("real-time") and time.monotonic() < end:
            time.sleep(0.05)
        assert (
            live.scheduling
            == f"normal scheduling (it fell {REALTIME_MAX_BEHIND_TICKS} ticks behind real time in a row)"
        )
        assert _policy(tid) == os.SCHED_OTHER


def test_a_live_loop_on_joints_whose_wait_does_not_block_never_spins(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    """A hardware whose ``wait`` returns at once with no newer state (``FakeHardware``'s, a
    repeated message) gets a period's pause before each period: at real-time priority a
    spinning loop would take its core (53 000 periods in 0.5 s were seen)."""
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    hw = FakeHardware(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT))
    rt = RobotRuntime(hw, sup, SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT)))
    rt.start()
    time.sleep(0.5)
    rt.stop()
    assert 10 <= len(rt.period_log) <= 0.5 / hw.control_period_s + 10


class _Flood(FakeHardware):
    """Joint states 20 times a control period, each newer than the last by a period (plausible
    ones: the arm at rest), as a broken driver or anyone on the network could publish them
    (joint states are not signed); ``wait`` gives the newest, as the ROS 2 hardware does."""

    RATE = 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t0 = time.monotonic()
        self.sent = 0

    def wait(self, timeout_s: float) -> JointState:
        self.sent = 1 + int((time.monotonic() - self.t0) * self.RATE / self.control_period_s)
        self.time_s = self.sent * self.control_period_s
        return self.read()


def _flooded(model: mujoco.MjModel, demo_plant: PlantDescription, config: RuntimeConfig) -> tuple[RobotRuntime, _Flood]:
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    hw = _Flood(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT))
    rt = RobotRuntime(hw, sup, SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT)), config=config)
    rt.start()
    time.sleep(0.5)
    rt.stop()
    return rt, hw


def test_a_flood_of_joint_states_runs_no_more_periods_than_the_clock_allows(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    """Each period moves the command by up to a period's worth of the speed limits: a period per
    state of a flood would move the arm faster than its limits (and take the core at real-time
    priority). The loop runs at the control rate and takes the newest state, not a backlog."""
    rt, hw = _flooded(model, demo_plant, RuntimeConfig())
    dt = hw.control_period_s
    periods = len(rt.period_log)
    assert 10 <= periods <= 0.5 / dt + RuntimeConfig().period_burst + 10
    assert hw.sent > 5 * periods  # (the flood came faster than the clock)
    # The newest state at the last period (a few of the flood's 20 a period came since).
    assert rt.last_state is not None and rt.last_state.stamp_s >= (hw.sent - 3 * _Flood.RATE) * dt
    assert not rt.supervisor.stopped  # (plausible states: no fault, only fewer periods)
    # Over any stretch, at most the burst more than one period per control period.
    log = rt.period_log
    for i in range(len(log)):
        j = i
        while j + 1 < len(log) and log[j + 1] - log[i] < 20 * dt:
            j += 1
        assert j - i + 1 <= 20 + RuntimeConfig().period_burst + 1 + 2  # (+2: the wait's own timing)


def test_a_twin_run_faster_than_real_time_gets_its_periods(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    """A twin at 4x real time sends a period's state 4 times as often: each is a period of its
    time, and the loop runs them all, up to 4 a control period of the wall."""
    rt, hw = _flooded(model, demo_plant, RuntimeConfig(clock_speed=4.0))
    periods = len(rt.period_log)
    assert 0.5 / hw.control_period_s + 20 < periods <= 4 * 0.5 / hw.control_period_s + 10


@pytest.mark.parametrize(
    ("field", "value"), [("clock_speed", 0.0), ("clock_speed", float("nan")), ("period_burst", -1)]
)
def test_a_runtime_config_with_no_clock_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RuntimeConfig(**{field: value})


class _FloodThatFails(_Flood):
    """A flood whose driver fails when asked again at once (the newest state, after a pause)."""

    def wait(self, timeout_s: float) -> JointState:
        if timeout_s == 0.0:
            raise RuntimeError("driver gone")
        return super().wait(timeout_s)


def test_a_driver_that_fails_during_the_flood_pause_does_not_end_the_loop(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    hw = _FloodThatFails(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT))
    rt = RobotRuntime(hw, sup, SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT)))
    rt.start()
    time.sleep(0.3)
    alive = rt._thread is not None and rt._thread.is_alive()
    periods = len(rt.period_log)
    rt.stop()
    assert alive and periods >= 10

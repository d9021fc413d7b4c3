"""An e-stop tripped from outside the control loop (its service, the console, the latch file)
goes out at once, not at the next joint state: :meth:`RobotRuntime.trip_estop` and
:meth:`RobotRuntime.stop_now`, on the runtime's own thread, with joints whose states come only
when the test lets them (a control period of 25 ms, so that the test's own timing has margins)."""

from __future__ import annotations

import threading
import time

import mujoco
import numpy as np
import pytest

from plant.config import PlantDescription
from robots.interface import FloatArray, JointState, Outcome, SafetyEvent, SkillGoal
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import SafetySupervisor, safety_config_from_plant
from robots.skills import SkillPlanner
from robots.testing import FakeHardware
from sim.hardware import arm_kinematics, compile_model, link_points

ROBOT = "ur5e_1"
FAR = [-2.5, -2.2, 1.0, -1.5, -1.5, 2.5]
PERIOD_S = 0.025


class GatedJoints(FakeHardware):
    """Fake joints whose next state comes when the test calls :meth:`release`; ``interrupt``
    makes a ``wait`` return the last state at once, as the ROS 2 and twin hardware do."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.cond = threading.Condition()
        self.released = 0
        self._given = 0
        self._interrupted = False
        self.writes: list[tuple[int, FloatArray]] = []  # (states released before it, command)

    def release(self) -> None:
        with self.cond:
            self.step()
            self.released += 1
            self.cond.notify_all()

    def wait(self, timeout_s: float) -> JointState:
        with self.cond:
            if not self.cond.wait_for(lambda: self.released > self._given or self._interrupted, timeout_s):
                raise TimeoutError(f"no joint state in {timeout_s:.3f} s")
            self._interrupted = False
            self._given = self.released
            return self.read()

    def interrupt(self) -> None:
        with self.cond:
            self._interrupted = True
            self.cond.notify_all()

    def write(self, position: FloatArray) -> None:
        with self.cond:
            self.writes.append((self.released, np.array(position, dtype=float)))
            super().write(position)
            self.cond.notify_all()

    def wait_writes(self, n: int, timeout_s: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.writes) >= n, timeout_s), f"{len(self.writes)} writes, not {n}"

    def step_and_wait(self) -> float:
        """Release one state and wait for its period's command; the wall time it took (s)."""
        t = time.monotonic()
        n = len(self.writes)
        self.release()
        self.wait_writes(n + 1)
        return time.monotonic() - t


@pytest.fixture(scope="module")
def model(demo_plant: PlantDescription) -> mujoco.MjModel:
    return compile_model(demo_plant)


def test_an_estop_from_outside_the_loop_goes_out_before_the_next_joint_state(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    import dataclasses

    cfg = dataclasses.replace(safety_config_from_plant(demo_plant, ROBOT), control_period_s=PERIOD_S)
    hw = GatedJoints(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home(), control_period_s=PERIOD_S, lag_s=0.3)
    events: list[SafetyEvent] = []
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT), None, events.append)
    planner = SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT))
    rt = RobotRuntime(hw, sup, planner, config=RuntimeConfig(state_timeout_periods=400)).start()
    try:
        for _ in range(3):
            hw.step_and_wait()
        assert rt.submit(SkillGoal("far", ROBOT, "move_joints", {"joints_rad": FAR}))[0]
        for _ in range(200):
            hw.step_and_wait()
            if float(np.max(np.abs(sup.velocity_rad_s))) > 1.0:
                break
        moving = sup.velocity_rad_s.copy()
        assert float(np.max(np.abs(moving))) > 1.0, "the arm never got going"
        released, writes = hw.released, len(hw.writes)

        rt.trip_estop("test", "test")
        hw.wait_writes(writes + 1, timeout_s=1.0)  # (no state released meanwhile; the state timeout is 10 s)
        at, first = hw.writes[writes]
        assert at == released, "the stop waited for the next joint state"
        assert sup.estopped and sup.mode == "stopping"
        braked = sup.velocity_rad_s.copy()
        # One braking step from where the arm was commanded to be, within the deceleration limit.
        assert float(np.max(np.abs(braked))) < float(np.max(np.abs(moving)))
        assert np.all(np.abs(braked - moving) <= cfg.limits.max_accel_rad_s2 * PERIOD_S + 1e-9)

        # The state that period stood in for gets no period of its own (it came within the period),
        # so the next braking step comes one period later, not at once.
        t = time.monotonic()
        hw.release()
        time.sleep(PERIOD_S / 4)
        if time.monotonic() - t < PERIOD_S / 2:  # (on a machine that stalled longer, the state is late)
            assert len(hw.writes) == writes + 1, "the state the early period stood in for ran a period too"
        hw.step_and_wait()
        assert len(hw.writes) == writes + 2
        second = sup.velocity_rad_s.copy()
        assert np.all(np.abs(second - braked) <= cfg.limits.max_accel_rad_s2 * PERIOD_S + 1e-9)
        assert not np.array_equal(first, hw.writes[-1][1])

        # Anyone may trip it again, as often as they like: no more early periods, no faster braking.
        n = len(hw.writes)
        for _ in range(20):
            rt.trip_estop("again", "a stranger")
        time.sleep(0.2)
        assert len(hw.writes) == n, "a repeated trip ran another braking step ahead of its joint state"

        for _ in range(200):
            if sup.mode == "stopped":
                break
            hw.step_and_wait()
        assert sup.mode == "stopped"
        for _ in range(5):
            hw.step_and_wait()
        res = rt.result_of("far")
        assert res is not None and res.outcome == Outcome.STOPPED_BY_SAFETY
        assert [e.kind for e in events].count("estop") == 1
    finally:
        rt.stop()

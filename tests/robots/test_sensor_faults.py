"""Bad sensor data stops the robot: the supervisor's joint-state check and the runtime's fault
handling, on :class:`~robots.testing.FakeHardware` (lockstep, and once on the runtime's own thread).

The incident these hold off: a driver published joint states with NaN positions and 1e9 rad/s
velocities; the runtime raised ``ValueError`` in every control period (2,555 tracebacks), with no
protective stop, no latch and no safety event.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plant.config import PlantDescription
from robots.interface import FloatArray, JointState, Outcome, SafetyEvent, SkillGoal, SkillResult, StopCategory
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import SafetySupervisor, TrackedPerson, safety_config_from_plant
from robots.skills import SkillPlanner
from robots.testing import FakeHardware
from sim.hardware import arm_kinematics, compile_model, link_points

ROBOT = "ur5e_1"
FAR = [-2.5, -2.2, 1.0, -1.5, -1.5, 2.5]  # a move of about two seconds from home


@pytest.fixture(scope="module")
def model(demo_plant: PlantDescription) -> mujoco.MjModel:
    return compile_model(demo_plant)


@dataclasses.dataclass
class Rig:
    """A runtime on fake joints, with everything it reported."""

    rt: RobotRuntime
    hw: FakeHardware
    events: list[SafetyEvent]
    results: list[SkillResult]

    @property
    def sup(self) -> SafetySupervisor:
        return self.rt.supervisor

    def kinds(self, kind: str) -> list[SafetyEvent]:
        return [e for e in self.events if e.kind == kind]

    def run(self, periods: int, bad: Callable[[JointState], JointState] | None = None) -> None:
        """``periods`` control periods; ``bad`` turns each good reading into what the runtime gets."""
        for _ in range(periods):
            self.hw.step()
            st = self.hw.read()
            self.rt.step(bad(st) if bad is not None else None)

    def goal(self, goal_id: str, joints: Sequence[float] = FAR) -> SkillGoal:
        goal = SkillGoal(goal_id, ROBOT, "move_joints", {"joints_rad": list(joints)})
        ok, why = self.rt.submit(goal)
        assert ok, why
        return goal

    def finish(self, goal: SkillGoal, periods: int = 2000) -> SkillResult:
        for _ in range(periods):
            self.run(1)
            res = self.rt.result_of(goal.goal_id)
            if res is not None:
                return res
        raise AssertionError(f"{goal.goal_id} did not end")


def _rig(
    model: mujoco.MjModel,
    plant: PlantDescription,
    *,
    people: Callable[[], Sequence[TrackedPerson]] | None = None,
    config: RuntimeConfig | None = None,
    hw: FakeHardware | None = None,
) -> Rig:
    cfg = safety_config_from_plant(plant, ROBOT)
    events: list[SafetyEvent] = []
    results: list[SkillResult] = []
    sup = SafetySupervisor(cfg, link_points(model, plant, ROBOT), None, events.append)
    hw = hw or FakeHardware(ROBOT, cfg.joint_names, plant.robots[ROBOT].home())
    planner = SkillPlanner(plant, ROBOT, arm_kinematics(model, plant, ROBOT))
    rt = RobotRuntime(hw, sup, planner, people=people, on_result=results.append, config=config)
    rig = Rig(rt, hw, events, results)
    rig.run(5)
    return rig


def _replace(st: JointState, joint: int, position: float | None = None, velocity: float | None = None) -> JointState:
    q, v = st.position.copy(), st.velocity.copy()
    if position is not None:
        q[joint] = position
    if velocity is not None:
        v[joint] = velocity
    return JointState(st.stamp_s, q, v)


# One bad reading of each kind (from a good one), and what its event must name.
BAD: dict[str, tuple[Callable[[JointState], JointState], tuple[str, ...]]] = {
    "nan position": (lambda s: _replace(s, 1, position=math.nan), ("shoulder_lift_joint", "nan", "limits")),
    "1e9 velocity": (lambda s: _replace(s, 2, velocity=1e9), ("elbow_joint", "1e+09 rad/s", "limit 3.142 rad/s")),
    "inf velocity": (lambda s: _replace(s, 0, velocity=-math.inf), ("shoulder_pan_joint", "-inf", "rad/s")),
    "out of range": (lambda s: _replace(s, 2, position=3.3), ("elbow_joint", "3.3 rad", "-3.142..3.142")),
    "jump": (lambda s: _replace(s, 3, position=float(s.position[3]) + 0.2), ("wrist_1_joint", "jumped +0.2", "rad/s")),
    "wrong length": (lambda s: JointState(s.stamp_s, s.position[:4], s.velocity), ("4 positions", "6 joints")),
    "stamp back": (lambda s: JointState(s.stamp_s - 1.0, s.position, s.velocity), ("before the last good one",)),
    "stamp nan": (lambda s: JointState(math.nan, s.position, s.velocity), ("stamp nan",)),
    "not numbers": (
        lambda s: JointState(s.stamp_s, np.array(["a"] * 6), s.velocity),  # type: ignore[arg-type]
        ("not numbers",),
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_one_bad_reading_stops_a_moving_robot_until_the_operator_resets_it(
    model: mujoco.MjModel, demo_plant: PlantDescription, kind: str
) -> None:
    make_bad, words = BAD[kind]
    rig = _rig(model, demo_plant)
    goal = rig.goal("far")
    rig.run(100)
    assert np.max(np.abs(rig.sup.velocity_rad_s)) > 0.3  # moving
    q_before = rig.sup.position_rad
    rig.run(1, make_bad)  # one bad reading among good ones
    [ev] = rig.kinds("sensor_fault")
    assert all(w in ev.reason for w in words), ev.reason
    assert ev.stop_category == StopCategory.CAT1 and "latched until an operator resets it" in ev.reason
    # The supervisor went on with the last good reading: its commands stay finite.
    assert q_before is not None and np.all(np.isfinite(rig.sup.position_rad))  # type: ignore[arg-type]
    # The goal ends stopped by safety once the arm is at rest (braked within the limits),
    # power off (category 1).
    res = rig.finish(goal)
    assert res.outcome == Outcome.STOPPED_BY_SAFETY and "sensor fault" in res.reason, res
    assert rig.sup.mode == "stopped" and not rig.sup.power_on
    # Good readings do not clear it; a new goal is stopped at once; one event in all.
    rig.run(500)
    assert "sensor_fault" in rig.sup.stop_causes()
    assert rig.finish(rig.goal("again")).outcome == Outcome.STOPPED_BY_SAFETY
    assert len(rig.kinds("sensor_fault")) == 1
    # The operator's reset clears it, and the robot works again.
    rig.sup.reset_estop("alice", rig.hw.time_s)
    assert not rig.sup.stopped
    assert rig.finish(rig.goal("after-reset")).outcome == Outcome.SUCCEEDED
    assert [e.kind for e in rig.events].count("sensor_fault") == 1


def test_a_robot_at_rest_holds_with_power_on(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    rig = _rig(model, demo_plant)
    rig.run(1, BAD["nan position"][0])
    [ev] = rig.kinds("sensor_fault")
    assert ev.stop_category == StopCategory.CAT2
    rig.run(100)
    assert rig.sup.mode == "stopped" and rig.sup.power_on


def test_the_incident_nan_and_1e9_every_period(
    model: mujoco.MjModel, demo_plant: PlantDescription, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN positions and 1e9 rad/s from the driver for 2,555 periods while a person is tracked
    (the SSM formula rejected the non-finite speeds with ValueError every period): one stop, one
    event, one log line; the runtime commands a finite braking motion and never raises."""
    person = [TrackedPerson("walker", 5.6, 3.6, 1.0)]  # 3.6 m from the robot's base
    rig = _rig(model, demo_plant, people=lambda: person)
    goal = rig.goal("far")
    rig.run(100)

    def garbage(s: JointState) -> JointState:
        return JointState(s.stamp_s, np.full(6, math.nan), np.full(6, 1e9))

    caplog.set_level(logging.INFO)
    caplog.clear()
    written: list[FloatArray] = []
    for _ in range(2555):
        rig.hw.step()
        applied = rig.rt.step(garbage(rig.hw.read()))
        written.append(rig.hw.target.copy())
        assert np.all(np.isfinite(applied.position_rad))
    assert np.all(np.isfinite(written))
    assert [e.kind for e in rig.events if e.kind not in ("slow", "clamp")] == ["sensor_fault"], rig.events
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "sensor fault" in errors[0].getMessage(), [r.getMessage() for r in errors]
    res = rig.rt.result_of(goal.goal_id)
    assert res is not None and res.outcome == Outcome.STOPPED_BY_SAFETY
    assert rig.sup.mode == "stopped"


def test_stale_joint_states_stop_after_the_state_timeout(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    """The driver repeats its last reading (the stamp stands still): the runtime's state timeout
    (``state_timeout_periods``) makes it a sensor fault."""
    config = RuntimeConfig(state_timeout_periods=25)
    rig = _rig(model, demo_plant, config=config)
    goal = rig.goal("far")
    rig.run(100)
    frozen = rig.hw.read()
    for _ in range(24):
        rig.rt.step(frozen)
    assert not rig.kinds("sensor_fault")
    rig.rt.step(frozen)
    [ev] = rig.kinds("sensor_fault")
    assert "no new joint state for 25 control periods (0.100 s)" in ev.reason
    assert ev.stop_category == StopCategory.CAT1
    for _ in range(1000):
        rig.rt.step(frozen)
    res = rig.rt.result_of(goal.goal_id)
    assert res is not None and res.outcome == Outcome.STOPPED_BY_SAFETY
    assert rig.sup.mode == "stopped" and len(rig.kinds("sensor_fault")) == 1


def test_where_the_plant_says_auto_it_clears_after_good_data(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    robots = dict(demo_plant.robots)
    robots[ROBOT] = robots[ROBOT].model_copy(update={"sensor_fault_reset": "auto"})
    plant = demo_plant.model_copy(update={"robots": robots})
    assert not safety_config_from_plant(plant, ROBOT).sensor_fault_latched
    assert safety_config_from_plant(demo_plant, ROBOT).sensor_fault_latched  # the default latches
    rig = _rig(model, plant)
    rig.run(1, BAD["jump"][0])
    [ev] = rig.kinds("sensor_fault")
    assert "clears after 1 s of good readings" in ev.reason
    # Bad readings now and then keep it stopped (each one starts the second again); a fault of
    # another kind is reported too, once.
    for _ in range(5):
        rig.run(200)
        rig.run(1, BAD["nan position"][0])
    assert rig.sup.stopped and len(rig.kinds("sensor_fault")) == 2
    second = rig.kinds("sensor_fault")[1]
    assert "position nan" in second.reason and "the stop holds" in second.reason, second
    assert second.stop_category is None  # (no new stop: a watcher counting stops is not misled)
    rig.run(240)
    assert rig.sup.stopped
    rig.run(20)
    assert not rig.sup.stopped
    assert rig.events[-1].kind == "resume" and "good joint states again" in rig.events[-1].reason
    assert rig.finish(rig.goal("after")).outcome == Outcome.SUCCEEDED


def test_the_first_reading_bad_writes_nothing(
    model: mujoco.MjModel, demo_plant: PlantDescription, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    events: list[SafetyEvent] = []
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT), None, events.append)
    hw = FakeHardware(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    written: list[FloatArray] = []
    write = hw.write
    monkeypatch.setattr(hw, "write", lambda q: (written.append(q), write(q)))
    rt = RobotRuntime(hw, sup, SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT)))
    out = rt.step(BAD["nan position"][0](hw.read()))
    assert not sup.has_position and np.all(np.isnan(out.position_rad)) and not out.power_on
    assert not written
    assert [e.kind for e in events] == ["sensor_fault"]
    sup.reset_estop("alice", 0.0)
    hw.step()
    out = rt.step()
    assert sup.has_position and np.allclose(out.position_rad, demo_plant.robots[ROBOT].home())
    assert len(written) == 1


# --------------------------------------------------------------------------- exceptions


class _Flaky(FakeHardware):
    """Fake joints whose read or write raises while ``fail`` names it."""

    fail: str = ""

    def read(self) -> JointState:
        if self.fail == "read":
            raise OSError("bus error")
        return super().read()

    def write(self, position: FloatArray) -> None:
        if self.fail == "write":
            raise RuntimeError("publisher gone")
        super().write(position)


@pytest.mark.parametrize(
    ("where", "kind"),
    [("read", "sensor_fault"), ("write", "internal_fault"), ("people", "internal_fault"), ("skill", "internal_fault")],
)
def test_no_exception_escapes_a_control_period(
    model: mujoco.MjModel, demo_plant: PlantDescription, caplog: pytest.LogCaptureFixture, where: str, kind: str
) -> None:
    failing = {"people": False}

    def people() -> Sequence[TrackedPerson]:
        if failing["people"]:
            raise ValueError("tracker returned garbage")
        return ()

    cfg = safety_config_from_plant(demo_plant, ROBOT)
    hw = _Flaky(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    rig = _rig(model, demo_plant, people=people, hw=hw)
    goal = rig.goal("far")
    rig.run(100)
    caplog.set_level(logging.INFO)
    caplog.clear()
    if where in ("read", "write"):
        hw.fail = where
    elif where == "people":
        failing["people"] = True
    else:

        def broken(*_: object) -> None:
            raise KeyError("a skill's bug")

        rig.rt._skill_command = broken  # type: ignore[method-assign,assignment]
    outs = []
    for _ in range(1000):
        hw.step()
        outs.append(rig.rt.step())  # never raises
    [ev] = rig.kinds(kind)
    assert "failed" in ev.reason and ev.stop_category == StopCategory.CAT1, ev
    res = rig.rt.result_of(goal.goal_id)
    assert res is not None and res.outcome == Outcome.STOPPED_BY_SAFETY and "failed" in res.reason, res
    # One log line for the fault that repeated 1000 times (and one for the stop).
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(lines) <= 2, lines
    if where != "write":
        # The stop was commanded: braking within the acceleration limits, then at rest.
        v = np.array([o.velocity_rad_s for o in outs])
        amax = cfg.limits.max_accel_rad_s2
        assert np.all(np.abs(np.diff(v, axis=0)) <= amax * cfg.control_period_s * (1 + 1e-6) + 1e-9)
        assert outs[-1].mode == "stopped" and np.allclose(hw.position, outs[-1].position_rad, atol=1e-3)
    # Latched until the operator's reset; with the cause gone, the robot works again.
    hw.fail = ""
    failing["people"] = False
    if where == "skill":
        del rig.rt._skill_command  # type: ignore[attr-defined]
    rig.run(100)
    assert kind in rig.sup.stop_causes()
    rig.sup.reset_estop("alice", hw.time_s)
    assert rig.finish(rig.goal("after")).outcome == Outcome.SUCCEEDED


class _LiveFake(FakeHardware):
    """Fake joints on the wall clock: ``wait`` gives a new state every period until ``silent``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.silent = threading.Event()
        self.writes = 0
        self._lock = threading.Lock()

    def wait(self, timeout_s: float) -> JointState:
        if self.silent.is_set():
            time.sleep(timeout_s)
            raise TimeoutError(f"no joint state in {timeout_s:.3f} s")
        time.sleep(self.control_period_s)
        with self._lock:
            self.step()
            return self.read()

    def write(self, position: FloatArray) -> None:
        with self._lock:
            self.writes += 1
            super().write(position)


def test_the_live_loop_stops_and_holds_when_the_driver_falls_silent(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    hw = _LiveFake(ROBOT, cfg.joint_names, demo_plant.robots[ROBOT].home())
    events: list[SafetyEvent] = []
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT), None, events.append)
    rt = RobotRuntime(
        hw, sup, SkillPlanner(demo_plant, ROBOT, arm_kinematics(model, demo_plant, ROBOT)), clock=time.monotonic
    ).start()
    try:
        time.sleep(0.1)
        assert rt.submit(SkillGoal("far", ROBOT, "move_joints", {"joints_rad": FAR}))[0]
        end = time.monotonic() + 5
        while float(np.max(np.abs(sup.velocity_rad_s))) < 0.3 and time.monotonic() < end:
            time.sleep(0.01)
        hw.silent.set()
        silent_at = time.monotonic()
        while not [e for e in events if e.kind == "sensor_fault"] and time.monotonic() < end:
            time.sleep(0.005)
        [ev] = [e for e in events if e.kind == "sensor_fault"]
        assert "no joint state from the driver" in ev.reason and ev.stop_category == StopCategory.CAT1
        timeout_s = rt.config.state_timeout_periods * cfg.control_period_s
        assert ev.stamp_s - silent_at < timeout_s + 0.1
        writes = hw.writes
        assert rt.wait_idle(3.0)  # the goal ended once the commanded motion was braked to rest
        res = rt.result_of("far")
        assert res is not None and res.outcome == Outcome.STOPPED_BY_SAFETY
        assert hw.writes > writes and sup.mode == "stopped"  # it kept commanding the stop
    finally:
        rt.stop()


# --------------------------------------------------------------------------- the check alone


@settings(max_examples=200, deadline=None)
@given(
    u=st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),
    speed=st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6),
    joint=st.integers(0, 5),
    field=st.sampled_from(["position", "velocity"]),
    value=st.sampled_from([math.nan, math.inf, -math.inf, 1e9, -1e9, 1e300]),
)
def test_any_non_finite_or_huge_value_is_refused_and_never_reaches_the_commands(
    model: mujoco.MjModel,
    demo_plant: PlantDescription,
    u: list[float],
    speed: list[float],
    joint: int,
    field: str,
    value: float,
) -> None:
    cfg = safety_config_from_plant(demo_plant, ROBOT)
    lim = cfg.limits
    sup = SafetySupervisor(cfg, link_points(model, demo_plant, ROBOT))
    q = lim.lower_rad + (lim.upper_rad - lim.lower_rad) * np.array(u)
    v = lim.max_speed_rad_s * np.array(speed)
    sup.observe(JointState(0.0, q, v))  # within the limits: good
    assert not sup.stopped
    bad = JointState(0.004, q.copy(), v.copy())
    getattr(bad, field)[joint] = value
    sup.observe(bad, [TrackedPerson("p", 1.0, 1.0, 1.0)])
    assert list(sup.stop_causes()) == ["sensor_fault"]
    assert cfg.joint_names[joint] in sup.stop_causes()["sensor_fault"]
    out = sup.filter(q + 0.1, 0.004)
    assert np.all(np.isfinite(out.position_rad)) and np.all(np.isfinite(out.velocity_rad_s))
    assert math.isfinite(sup.ssm.robot_speed_m_s)

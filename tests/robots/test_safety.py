"""The safety supervisor's pure logic: the ISO/TS 15066 distance, limits, geofence, latch."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plant.config import PlantDescription
from robots.interface import JointState, StopCategory
from robots.safety import (
    BoxVolume,
    CylinderVolume,
    EstopLatch,
    SafetySupervisor,
    TrackedPerson,
    protective_separation_distance_m,
    safety_config_from_plant,
)
from sim.hardware import compile_model, link_points

nonneg = st.floats(0.0, 10.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(nonneg, nonneg, st.floats(0, 1), st.floats(0, 2), nonneg, st.floats(0, 1), st.floats(0, 0.5), st.floats(0, 0.5))
def test_separation_distance_terms(
    vh: float, vr: float, tr: float, ts: float, ss: float, c: float, zd: float, zr: float
) -> None:
    sp = protective_separation_distance_m(vh, vr, tr, ts, ss, c, zd, zr)
    # ISO/TS 15066 formula (1) with constant speeds, term by term.
    assert sp == pytest.approx(vh * (tr + ts) + vr * tr + ss + c + zd + zr)
    assert sp >= c + zd + zr
    # Faster people or robots, longer reactions and stops never shrink the distance.
    assert protective_separation_distance_m(vh + 0.1, vr, tr, ts, ss, c, zd, zr) >= sp
    assert protective_separation_distance_m(vh, vr + 0.1, tr, ts, ss, c, zd, zr) >= sp
    assert protective_separation_distance_m(vh, vr, tr + 0.01, ts, ss, c, zd, zr) >= sp
    assert protective_separation_distance_m(vh, vr, tr, ts + 0.01, ss, c, zd, zr) >= sp


def test_separation_distance_refuses_bad_terms() -> None:
    with pytest.raises(ValueError):
        protective_separation_distance_m(-1.0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        protective_separation_distance_m(1.6, math.nan, 0, 0, 0, 0, 0, 0)
    # A worked example: 1.6 m/s walker, 1 m/s robot, 20 ms reaction, 0.25 s / 0.125 m stop.
    assert protective_separation_distance_m(1.6, 1.0, 0.02, 0.25, 0.125, 0.2, 0.05, 0.02) == pytest.approx(
        1.6 * 0.27 + 0.02 + 0.125 + 0.27
    )


@settings(max_examples=200, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-1, 3), st.floats(-math.pi, math.pi))
def test_volume_distances(x: float, y: float, z: float, yaw: float) -> None:
    box = BoxVolume("b", (0.5, 0.5, 1.0), (0.3, 0.2, 1.0), yaw)
    p = np.array([x, y, z])
    d = box.distance_m(p)
    # Inside exactly when the point, turned into the box frame, lies within the half sizes.
    c, s = math.cos(-yaw), math.sin(-yaw)
    lx, ly = c * (x - 0.5) - s * (y - 0.5), s * (x - 0.5) + c * (y - 0.5)
    inside = abs(lx) <= 0.3 and abs(ly) <= 0.2 and 0 <= z <= 2.0
    # (Points within a nanometre of a face may go either way.)
    if abs(d) > 1e-9:
        assert (d < 0) == inside
    cyl = CylinderVolume("c", (0.0, 0.0), 0.5, 0.0, 1.0)
    dc = cyl.distance_m(p)
    # The vectorised form (the supervisor's, every period) agrees with the scalar one.
    pts = np.array([p, p + 0.1, p - 0.2])
    assert np.allclose(box.distances_m(pts), [box.distance_m(q) for q in pts], atol=1e-12)
    assert np.allclose(cyl.distances_m(pts), [cyl.distance_m(q) for q in pts], atol=1e-12)
    if abs(dc) > 1e-9:
        assert (dc < 0) == (math.hypot(x, y) <= 0.5 and 0 <= z <= 1)


@pytest.fixture(scope="module")
def model(demo_plant: PlantDescription) -> mujoco.MjModel:
    return compile_model(demo_plant)


def _sup(
    model: mujoco.MjModel, plant: PlantDescription, robot: str = "ur5e_1", latch: EstopLatch | None = None
) -> SafetySupervisor:
    cfg = safety_config_from_plant(plant, robot)
    sup = SafetySupervisor(cfg, link_points(model, plant, robot), latch)
    sup.observe(JointState(0.0, np.array(plant.robots[robot].home()), np.zeros(len(cfg.joint_names))))
    return sup


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(-8.0, 8.0), min_size=6, max_size=6), min_size=1, max_size=30))
def test_filter_never_passes_a_limit(
    model: mujoco.MjModel, demo_plant: PlantDescription, commands: list[list[float]]
) -> None:
    sup = _sup(model, demo_plant)
    lim = sup.config.limits
    dt = sup.config.control_period_s
    q_prev, v_prev = sup.position_rad, np.zeros(6)
    assert q_prev is not None
    t = 0.0
    for cmd in commands:
        for _ in range(5):  # the same command held for a few periods
            t += dt
            out = sup.filter(np.array(cmd), t)
            assert np.all(out.position_rad >= lim.lower_rad - 1e-9) and np.all(out.position_rad <= lim.upper_rad + 1e-9)
            v = (out.position_rad - q_prev) / dt
            assert np.all(np.abs(v) <= lim.max_speed_rad_s * (1 + 1e-6))
            assert np.all(np.abs(v - v_prev) <= lim.max_accel_rad_s2 * dt * (1 + 1e-6) + 1e-9)
            # Whatever went through keeps every point in the fence and out of keep-out zones.
            assert sup._violation(sup.points.at(out.position_rad)) is None
            q_prev, v_prev = out.position_rad, v


def test_far_command_is_clamped_then_refused_at_the_fence(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    sup = _sup(model, demo_plant)
    q0 = sup.position_rad
    assert q0 is not None
    # Shoulder and elbow folded down: the tool would reach into the floor beside the pedestal.
    target = q0 + np.array([0.0, 2.5, -1.5, 0.0, 0.0, 0.0])
    outs = [sup.filter(target, 0.004 * (i + 1)) for i in range(600)]
    assert outs[0].clamped  # a jump of 1.6 rad in one period is slowed to the limits
    kinds = [e.kind for e in sup.events]
    assert "clamp" in kinds
    # Before leaving the geofence the supervisor refuses, stops and holds.
    assert any(o.refused for o in outs) and "refuse" in kinds
    assert outs[-1].mode == "stopped"
    assert not np.any(outs[-1].velocity_rad_s)
    refusal = next(e for e in sup.events if e.kind == "refuse")
    assert "geofence" in refusal.reason and refusal.stop_category == StopCategory.CAT2
    for o in outs:
        assert sup._violation(sup.points.at(o.position_rad)) is None


def test_protective_stop_and_resume(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    sup = _sup(model, demo_plant)
    q0 = sup.position_rad
    assert q0 is not None
    dt = sup.config.control_period_s
    target = q0 + np.array([1.0, 0, 0, 0, 0, 0])
    near = [TrackedPerson("p", 3.3, 1.3, 1.2)]  # beside the UR5e's tool
    t = 0.0
    for _ in range(20):
        t += dt
        sup.observe(JointState(t, sup.position_rad, sup.velocity_rad_s))  # type: ignore[arg-type]
        sup.filter(target, t)
    assert sup.mode == "run"
    sup.observe(JointState(t, sup.position_rad, sup.velocity_rad_s), near)  # type: ignore[arg-type]
    t += dt
    out = sup.filter(target, t)
    assert sup.stopped and out.mode in ("stopping", "stopped")
    assert sup.last_stop_trigger_s == t  # within the same period
    ev = sup.events[-1]
    assert ev.kind == "protective_stop" and ev.stop_category == StopCategory.CAT2
    # Stays stopped while the person is near; resumes after they left and the cell stayed clear.
    for _ in range(300):
        t += dt
        sup.observe(JointState(t, sup.position_rad, sup.velocity_rad_s), near)  # type: ignore[arg-type]
        sup.filter(target, t)
    assert sup.mode == "stopped" and sup.power_on
    for _ in range(200):
        t += dt
        sup.observe(JointState(t, sup.position_rad, sup.velocity_rad_s), [TrackedPerson("p", 5.9, 0.2, 0.0)])  # type: ignore[arg-type]
        sup.filter(target, t)
    assert not sup.stopped and "resume" in [e.kind for e in sup.events]


def test_estop_latch_survives_and_only_reset_clears(
    tmp_path: Path, model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    path = tmp_path / "estop.json"
    sup = _sup(model, demo_plant, latch=EstopLatch(path))
    sup.trip_estop("button pressed", "test")
    assert sup.estopped and EstopLatch(path).tripped
    # A new supervisor (a restarted runtime) reads the latch and starts stopped, power off.
    sup2 = _sup(model, demo_plant, latch=EstopLatch(path))
    assert sup2.estopped
    out = sup2.filter(sup2.position_rad + 0.1, 0.004)  # type: ignore[operator]
    assert out.mode == "stopped" and not out.power_on
    # A new goal acknowledges watchdog and refusal stops, never the e-stop.
    sup2.acknowledge(0.008)
    assert sup2.estopped
    sup2.reset_estop("alice", 0.012)
    assert not sup2.estopped and not EstopLatch(path).tripped
    assert [e.kind for e in sup2.events][-2:] == ["resume", "reset"]
    # A corrupt latch file counts as tripped (fail safe).
    path.write_text("{not json", encoding="utf-8")
    assert EstopLatch(path).tripped


def test_latch_file_written_elsewhere_is_followed(
    tmp_path: Path, model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    """The operator's command line writes the latch file itself when no runtime answers it."""
    path = tmp_path / "estop.json"
    sup = _sup(model, demo_plant, latch=EstopLatch(path))
    sup.sync_estop(0.0)
    assert not sup.stopped
    EstopLatch(path).trip("pressed at the panel", "cli")
    sup.sync_estop(0.1)
    assert sup.estopped and "pressed at the panel" in sup.stop_causes()["estop"]
    EstopLatch(path).reset("alice")
    sup.sync_estop(0.2)
    assert not sup.estopped and [e.kind for e in sup.events][-2:] == ["resume", "reset"]


def test_estop_holds_when_the_latch_file_cannot_be_written(
    tmp_path: Path, model: mujoco.MjModel, demo_plant: PlantDescription, monkeypatch: pytest.MonkeyPatch
) -> None:
    latch = EstopLatch(tmp_path / "estop.json")
    sup = _sup(model, demo_plant, latch=latch)

    def disk_full(state: dict[str, object]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(latch, "_write", disk_full)
    sup.trip_estop("button pressed", "test", 0.0)  # the write fails: the stop still holds
    assert sup.estopped
    assert "not written" in sup.events[-1].reason
    # The file never showed the trip, so following it does not clear the e-stop.
    sup.sync_estop(0.1)
    assert sup.estopped


def test_stop_categories(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    dt = 0.004
    for cat in StopCategory:
        sup = _sup(model, demo_plant)
        q0 = sup.position_rad
        assert q0 is not None
        target = q0 + np.array([1.0, 0, 0, 0, 0, 0])
        t = 0.0
        for _ in range(100):
            t += dt
            sup.filter(target, t)
        moving = sup.velocity_rad_s
        assert np.any(moving)
        measured = sup.position_rad - 0.01  # type: ignore[operator]
        sup.observe(JointState(t, measured, moving))
        sup.protective_stop("light curtain", t, cat)
        out = sup.filter(target, t + dt)
        if cat == StopCategory.CAT0:
            # Power off at once: the brakes hold the robot where it is measured.
            assert np.allclose(out.position_rad, measured) and not out.power_on and out.mode == "stopped"
            continue
        # Controlled stop: decelerate within the limits, then (1) power off or (2) hold powered.
        assert out.mode == "stopping" and out.power_on
        for _ in range(200):
            t += dt
            out = sup.filter(target, t)
        assert out.mode == "stopped"
        assert out.power_on == (cat == StopCategory.CAT2)

"""The safety supervisor's pure logic: the plant's safety model read, limits, geofence, SSM, latch."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plant import safety_model
from plant.config import PlantDescription
from robots.interface import FloatArray, JointState, StopCategory
from robots.safety import (
    _CLEAR_EPS_M,
    Applied,
    BoxVolume,
    CylinderVolume,
    EstopLatch,
    SafetySupervisor,
    SsmConfig,
    SsmReading,
    TrackedPerson,
    Volume,
    _Clearance,
    _stop_time_and_offset,
    protective_separation_distance_m,
    safety_config_from_plant,
    separation_m,
)
from robots.trajectory import JointMove, brake_step, stopping_offset
from sim.hardware import compile_model, link_points


def test_the_supervisor_reads_the_plants_safety_model(demo_plant: PlantDescription) -> None:
    """One model: the zones, the geofence, the SSM parameters and formula, and the tool's radius
    the supervisor enforces are the ones the guardrails check plans against (``plant.safety_model``,
    whose own tests hold the formula and the zone rules)."""
    assert protective_separation_distance_m is safety_model.protective_separation_distance_m
    assert (SsmConfig, BoxVolume, CylinderVolume) == (
        safety_model.SsmConfig,
        safety_model.BoxVolume,
        safety_model.CylinderVolume,
    )
    model = compile_model(demo_plant)
    for robot in demo_plant.robots:
        cfg = safety_config_from_plant(demo_plant, robot)
        assert cfg.keep_out == safety_model.keep_out_volumes(demo_plant)
        assert (cfg.geofence_low_m, cfg.geofence_high_m) == safety_model.geofence_m(demo_plant)
        assert cfg.ssm == SsmConfig()
        assert link_points(model, demo_plant, robot).radius_m[-1] == safety_model.TOOL_RADIUS_M
        sup = SafetySupervisor(cfg, link_points(model, demo_plant, robot))
        assert sup._sp_rest == safety_model.robot_separation(demo_plant.robots[robot], cfg.ssm, 0.0).distance_m


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


# --------------------------------------------------------------------------- fast path = reference
#
# The supervisor's per-period computation is vectorised, reuses the points of a configuration
# and clears most poses with a conservative bounding-box test (``_Clearance``) before the exact
# geofence and keep-out check. These tests hold it to the straightforward implementation it
# replaced: ``_ReferenceSupervisor`` below is that implementation, verbatim (``filter``,
# ``_limit``, ``_violation``, ``_ssm``, ``_category``), on the same state.


class _ReferenceSupervisor(SafetySupervisor):
    """The supervisor as it was before the per-period work was made fast: the reference."""

    def _category(self) -> StopCategory | None:
        with self._lock:
            return min((c for c, _ in self._causes.values()), default=None)

    def _violation(self, pts: FloatArray) -> str | None:  # type: ignore[override]
        r = self.points.radius_m
        low = pts - r[:, None] < self._fence_lo
        high = pts + r[:, None] > self._fence_hi
        if np.any(low) or np.any(high):
            i = int(np.argmax(np.any(low | high, axis=1)))
            return f"point {i} at {np.round(pts[i], 3).tolist()} leaves the geofence"
        for vol in self.config.keep_out:
            inside = vol.distances_m(pts) < r
            if np.any(inside):
                i = int(np.argmax(inside))
                return f"point {i} at {np.round(pts[i], 3).tolist()} enters keep-out zone {vol.name}"
        return None

    def _ssm(self, now_s: float, pts: FloatArray, q: FloatArray, v: FloatArray) -> None:  # type: ignore[override]
        cfg = self.config.ssm
        if self._p_prev is None:
            self._p_prev = pts
        speed = float(np.max(np.linalg.norm(pts - self._p_prev, axis=1))) / self._dt
        self._p_prev = pts
        # The arm lags its command (servo tracking): it is somewhere between the measured and
        # the commanded pose and still has the lag to travel. Count the lag as robot position
        # uncertainty, and the measured speed when it is the larger.
        meas = self._measured
        lag_m = 0.0
        if meas is not None:
            meas_pts = self.points.at(np.asarray(meas.position, dtype=float))
            lag_m = float(np.max(np.linalg.norm(pts - meas_pts, axis=1)))
            if self._meas_prev is not None:
                speed = max(speed, float(np.max(np.linalg.norm(meas_pts - self._meas_prev, axis=1))) / self._dt)
            self._meas_prev = meas_pts
            pts = np.vstack([pts, meas_pts])
        radius = np.concatenate([self.points.radius_m] * (2 if meas is not None else 1))
        if not self._people:
            self.ssm = SsmReading(math.inf, 0.0, speed)
            self._scale = 1.0
            if self._ssm_clear_since is None:
                self._ssm_clear_since = now_s
            if "protective_stop" in self._causes and now_s - self._ssm_clear_since >= cfg.resume_clear_s:
                self._clear(now_s, "protective_stop", "cell clear of people")
            return
        t_stop = float(np.max(np.abs(v) / self._amax))
        n = len(self.points.radius_m)
        stop_pts = self.points.at(q + stopping_offset(v, self._amax)) if t_stop > 0 else pts[:n]
        s_stop = float(np.max(np.linalg.norm(stop_pts - pts[:n], axis=1)))
        worst_margin = math.inf
        reading = SsmReading()
        for person in self._people:
            sep = separation_m(pts, radius, person, cfg.person_radius_m)
            sp = protective_separation_distance_m(
                max(cfg.human_speed_m_s, person.speed_m_s),
                speed,
                cfg.reaction_time_s,
                t_stop + (cfg.servo_settle_time_s if lag_m > cfg.servo_lag_moving_m else 0.0),
                s_stop,
                cfg.intrusion_distance_m,
                cfg.human_uncertainty_m,
                cfg.robot_uncertainty_m + lag_m,
            )
            if sep - sp < worst_margin:
                worst_margin = sep - sp
                reading = SsmReading(sep, sp, speed, person.name)
        self.ssm = reading
        moving = speed > cfg.standstill_speed_m_s or t_stop > 0 or lag_m > cfg.servo_lag_moving_m
        if worst_margin <= 0 and moving and "protective_stop" not in self._causes:
            self._stop(
                now_s,
                "protective_stop",
                self.config.protective_stop_category,
                f"{reading.person} at {reading.separation_m:.3f} m, inside the protective separation "
                f"distance {reading.protective_distance_m:.3f} m (robot {speed:.2f} m/s)",
                "protective_stop",
            )
        # The band is measured from the distance needed at rest: a stopped robot resumes only
        # once the person is out of the band.
        sp_rest = (
            max(cfg.human_speed_m_s, 0.0) * cfg.reaction_time_s
            + cfg.intrusion_distance_m
            + cfg.human_uncertainty_m
            + cfg.robot_uncertainty_m
        )
        if worst_margin <= 0 or reading.separation_m <= sp_rest:
            self._ssm_clear_since = None
        elif self._ssm_clear_since is None:
            self._ssm_clear_since = now_s
        if "protective_stop" in self._causes:
            clear_for = 0.0 if self._ssm_clear_since is None else now_s - self._ssm_clear_since
            if reading.separation_m > sp_rest + cfg.warning_band_m and clear_for >= cfg.resume_clear_s:
                self._clear(now_s, "protective_stop", f"{reading.person} left the separation distance")
        band = reading.separation_m - max(reading.protective_distance_m, sp_rest)
        scale = min(1.0, max(cfg.min_speed_scale, band / cfg.warning_band_m)) if band < cfg.warning_band_m else 1.0
        if scale < 1.0 and self._scale >= 1.0 and not self._causes:
            self._emit(now_s, "slow", f"{reading.person} at {reading.separation_m:.2f} m: speed scaled to {scale:.2f}")
        self._scale = scale

    def filter(self, command: FloatArray | None, now_s: float) -> Applied:
        """The joint position command (rad) allowed for the next control period.

        ``command`` None means "hold" (no source is commanding). Call :meth:`observe` first.
        Never raises for a bad command: it clamps or refuses and reports an event.
        """
        if self._q is None or self._measured is None:
            raise RuntimeError("observe() a joint state before filtering commands")
        dt = self._dt
        if self._stream_source is not None and now_s - self._stream_last_s > self.config.watchdog_timeout_s:
            src = self._stream_source
            self._stream_source = None
            self._stop(
                now_s,
                "watchdog",
                self.config.watchdog_category,
                f"no command from {src} for {now_s - self._stream_last_s:.3f} s",
                "watchdog",
            )
        q_a, v_a = self._q, self._v
        clamped = refused = False
        q_new, v_new = q_a, np.zeros_like(q_a)
        category = self._category()
        if category is None:
            target = q_a if command is None else np.asarray(command, dtype=float)
            if target.shape != q_a.shape or not np.all(np.isfinite(target)):
                self._stop(now_s, "refuse", StopCategory.CAT2, f"malformed command {target!r}", "refuse")
                category = StopCategory.CAT2
            else:
                q_new, v_new, clamped = self._limit(target, q_a, v_a)
        if category is None:
            pts = self.points.at(q_new)
            why = self._violation(pts)
            if why is None and np.any(v_new != 0):
                why = self._violation(self.points.at(q_new + stopping_offset(v_new, self._amax)))
                if why is not None:
                    why = f"a stop begun now would end with {why.split(' ', 2)[2]}"
            if why is not None:
                refused = True
                self._stop(now_s, "refuse", StopCategory.CAT2, f"command refused: {why}", "refuse")
                category = StopCategory.CAT2
            else:
                self._ssm(now_s, pts, q_new, v_new)
                category = self._category()
        elif self._people or "protective_stop" in self._causes:
            # Keep the SSM reading fresh while stopped, so a protective stop can clear.
            self._ssm(now_s, self.points.at(q_a), q_a, v_a)
            category = self._category()
        if category is not None:
            self._last_target = None
            if category == StopCategory.CAT0:
                q_new = np.asarray(self._measured.position, dtype=float).copy()
                v_new = np.zeros_like(q_new)
                self._power_on = False
            else:
                q_new, v_new = brake_step(q_a, v_a, self._amax, dt)
                at_rest = not np.any(v_new)
                if at_rest and category == StopCategory.CAT1:
                    self._power_on = False
            self._mode = "stopped" if not np.any(v_new) else "stopping"
        else:
            self._power_on = True
            self._mode = "slow" if self._scale < 1.0 else "run"
        if clamped and now_s - self._last_clamp_s > 0.5:
            self._emit(now_s, "clamp", "command clamped to the joint position, speed or acceleration limits")
        if clamped:
            self._last_clamp_s = now_s
        self._q, self._v = q_new, v_new
        return Applied(q_new.copy(), v_new.copy(), self._mode, self._scale, self._power_on, clamped, refused)

    def _limit(self, target: FloatArray, q_a: FloatArray, v_a: FloatArray) -> tuple[FloatArray, FloatArray, bool]:
        """Clamp a target to the position limits, then the step to the speed and acceleration limits."""
        dt, amax = self._dt, self._amax
        tgt = np.clip(target, self._lo, self._hi)
        clamped = bool(np.any(np.abs(tgt - target) > 1e-9))
        prev = self._last_target if self._last_target is not None else tgt
        self._last_target = tgt
        err = tgt - q_a
        v = err / dt
        cap = self._vmax * self._scale
        # A command that stands still is approached with the square-root law, so the joint
        # brakes in time and does not overshoot; a moving command (a timed trajectory) is
        # followed at its own speed.
        cmd_speed = np.abs(tgt - prev) / dt
        cap = np.minimum(cap, cmd_speed + np.sqrt(2 * amax * np.abs(err)))
        # Never so fast that the joint could not stop before its position limit.
        room = np.where(v > 0, self._hi - q_a, q_a - self._lo)
        cap = np.minimum(cap, np.sqrt(2 * amax * np.maximum(room, 0.0)) + amax * dt)
        over = np.abs(v) > cap * (1 + 1e-6) + 1e-9
        if np.any(over):
            # Scale every joint alike, so the motion keeps its direction.
            k = float(np.min(np.where(np.abs(v) > 1e-12, cap / np.maximum(np.abs(v), 1e-12), 1.0)))
            v = v * max(0.0, k)
            clamped = clamped or self._scale >= 1.0
        dv = v - v_a
        lim = amax * dt
        if np.any(np.abs(dv) > lim * (1 + 1e-6) + 1e-9):
            v = v_a + np.clip(dv, -lim, lim)
            clamped = clamped or self._scale >= 1.0
        q = np.clip(q_a + v * dt, self._lo, self._hi)
        v = (q - q_a) / dt
        return q, v, clamped


def _volume_near(point: FloatArray, data: st.DataObject) -> Volume:
    """A random keep-out box (turned) or cylinder beside ``point``: from overlapping it to a
    hand's breadth away, in a random direction."""
    d = np.array([data.draw(st.floats(-1.0, 1.0)) for _ in range(3)]) + np.array([1e-3, 0.0, 0.0])
    d /= np.linalg.norm(d)
    half = np.array([data.draw(st.floats(0.02, 0.3)) for _ in range(3)])
    cx, cy, cz = point + d * (float(np.linalg.norm(half)) + data.draw(st.floats(-0.1, 0.3)))
    if data.draw(st.booleans()):
        hx, hy, hz = half.tolist()
        return BoxVolume("test_box", (cx, cy, cz), (hx, hy, hz), data.draw(st.floats(-math.pi, math.pi)))
    return CylinderVolume("test_cyl", (cx, cy), float(half[0]), cz - half[2], cz + half[2])


def _fence_near(cfg: Any, point: FloatArray, data: st.DataObject) -> Any:
    """``cfg`` with one geofence face moved to a little way from ``point``."""
    k = data.draw(st.integers(0, 2))
    low, high = list(cfg.geofence_low_m), list(cfg.geofence_high_m)
    if data.draw(st.booleans()):
        high[k] = float(point[k]) + data.draw(st.floats(-0.05, 0.4))
    else:
        low[k] = float(point[k]) - data.draw(st.floats(-0.05, 0.4))
    return dataclasses.replace(
        cfg, geofence_low_m=(low[0], low[1], low[2]), geofence_high_m=(high[0], high[1], high[2])
    )


def _same(a: Applied, b: Applied) -> bool:
    return (
        a.position_rad.tobytes() == b.position_rad.tobytes()
        and a.velocity_rad_s.tobytes() == b.velocity_rad_s.tobytes()
        and (a.mode, a.speed_scale, a.power_on, a.clamped, a.refused)
        == (b.mode, b.speed_scale, b.power_on, b.clamped, b.refused)
    )


segments = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["move", "move", "move", "jump", "hold", "external"]),
            "offset": st.lists(st.floats(-2.5, 2.5), min_size=7, max_size=7),
            "people": st.lists(st.tuples(st.floats(0.0, 6.0), st.floats(0.0, 4.0), st.floats(0.0, 2.0)), max_size=2),
            "lag": st.floats(0.02, 1.0),
            "periods": st.integers(3, 50),
            "category": st.sampled_from(list(StopCategory)),
            # Read the reading every period, or only at the segment's end (periods decided by
            # bounds are then evaluated later, from what they kept).
            "watch": st.booleans(),
        }
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=30, deadline=None)
@given(robot=st.sampled_from(["ur5e_1", "panda_1"]), plan=segments, data=st.data())
def test_supervisor_matches_the_reference_bit_for_bit(
    model: mujoco.MjModel,
    demo_plant: PlantDescription,
    robot: str,
    plan: list[dict[str, Any]],
    data: st.DataObject,
) -> None:
    """Moves, jumps past the limits, across a geofence face and into keep-out volumes (one added
    near the tool, a face moved near it), people near and far, servo lag, outside stops of every
    category: every period the supervisor lets through exactly what the reference does, with the
    same readings and events."""
    cfg = safety_config_from_plant(demo_plant, robot)
    home = np.array(demo_plant.robots[robot].home())
    at_home = link_points(model, demo_plant, robot).at(home)
    if data.draw(st.booleans()):
        point = at_home[data.draw(st.integers(0, len(at_home) - 1))]
        cfg = dataclasses.replace(cfg, keep_out=(*cfg.keep_out, _volume_near(point, data)))
    if data.draw(st.booleans()):
        cfg = _fence_near(cfg, at_home[-1], data)
    ref = _ReferenceSupervisor(cfg, link_points(model, demo_plant, robot))
    fast = SafetySupervisor(cfg, link_points(model, demo_plant, robot))
    dof = len(home)
    lim = cfg.limits
    dt = cfg.control_period_s
    meas, vel = home.copy(), np.zeros(dof)
    t = 0.0
    for seg in plan:
        people = [TrackedPerson(f"p{i}", x, y, v) for i, (x, y, v) in enumerate(seg["people"])]
        goal = np.clip(home + np.array(seg["offset"][:dof]), lim.lower_rad, lim.upper_rad)
        for sup in (ref, fast):
            sup.acknowledge(t)
            if seg["kind"] == "external":
                sup.protective_stop("light curtain", t, seg["category"])
        move = None
        tau = 0.0
        for k in range(seg["periods"]):
            t += dt
            state = JointState(t, meas.copy(), vel.copy())
            command: FloatArray | None = None
            if seg["kind"] == "jump":
                command = home + np.array(seg["offset"][:dof])
            elif seg["kind"] != "hold":
                if move is None:
                    q_a = ref.position_rad
                    move = JointMove(home if q_a is None else q_a, goal, lim.max_speed_rad_s, lim.max_accel_rad_s2)
                tau += ref.speed_scale * dt
                command = move.sample(tau)[0]
            ref.observe(state, people)
            fast.observe(state, people)
            a = ref.filter(command, t)
            b = fast.filter(command, t)
            assert _same(a, b), (a, b)
            assert not fast.separation_floor_m > ref.ssm.separation_m
            if seg["watch"] or k == seg["periods"] - 1:
                assert repr(ref.ssm) == repr(fast.ssm)
            assert ref.events == fast.events
            assert ref.stop_causes() == fast.stop_causes()
            assert ref.last_stop_trigger_s == fast.last_stop_trigger_s
            # The servo follows with a lag, never faster than the joint can move (the lag of
            # a segment may differ from the last one's: the arm does not jump for that).
            step = np.clip((a.position_rad - meas) * seg["lag"], -lim.max_speed_rad_s * dt, lim.max_speed_rad_s * dt)
            new = meas + step
            vel = (new - meas) / dt
            meas = new
        for sup in (ref, fast):
            sup.clear_external(t)
    # The joint-state check of ``observe`` is inherited by the reference: where it refuses a
    # reading (a sensor fault), both stop alike, and the comparison above covers that too.


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    box=st.booleans(),
    yaw=st.floats(-math.pi, math.pi),
    radius=st.lists(st.floats(0.0, 0.15), min_size=8, max_size=8),
    local=st.lists(st.tuples(st.floats(-1.3, 1.3), st.floats(-1.3, 1.3), st.floats(-1.3, 1.3)), min_size=8, max_size=8),
    nudge=st.lists(st.floats(-2e-6, 2e-6), min_size=8, max_size=8),
)
def test_clearance_clears_only_what_the_exact_check_clears(
    data: st.DataObject,
    box: bool,
    yaw: float,
    radius: list[float],
    local: list[tuple[float, float, float]],
    nudge: list[float],
) -> None:
    """The early-out: a point it calls clear of the geofence or of a volume is clear by the exact
    check, also for points right at the faces (where rounding would matter) and at the
    bounding-box faces and corners of turned boxes."""
    hx, hy, hz = (data.draw(st.floats(0.05, 1.0)) for _ in range(3))
    center = (3.0, 2.0, 1.2)
    vol: Volume = (
        BoxVolume("b", center, (hx, hy, hz), yaw)
        if box
        else CylinderVolume("c", center[:2], hx, center[2] - hz, center[2] + hz)
    )
    r = np.array(radius)
    # Points in the volume's frame, scaled so that many land on or near a face (grown by the
    # radius and the early-out's margin), then turned and placed; a few near the geofence.
    half = np.array([hx, hy, hz]) if box else np.array([hx, hx, hz])
    pts = np.empty((8, 3))
    c, s = math.cos(yaw if box else 0.0), math.sin(yaw if box else 0.0)
    for i, ((u, v, w), e) in enumerate(zip(local, nudge, strict=True)):
        grow = half + r[i] + _CLEAR_EPS_M * data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        lx, ly, lz = np.clip([u, v, w], -1.0, 1.0) * grow + e
        pts[i] = (center[0] + c * lx - s * ly, center[1] + s * lx + c * ly, center[2] + lz)
    fence_lo, fence_hi = np.array([0.0, 0.0, 0.02]), np.array([6.0, 4.0, 2.5])
    if data.draw(st.booleans()):
        k = data.draw(st.integers(0, 2))
        pts[0, k] = fence_lo[k] + r[0] + data.draw(st.floats(-2e-6, 2e-6))
        pts[1, k] = fence_hi[k] - r[1] + data.draw(st.floats(-2e-6, 2e-6))
    clearance = _Clearance(fence_lo, fence_hi, [vol], r, copies=1)
    margins = clearance.margins([pts])  # (6 fence groups + 1 volume, points)
    exact_inside = vol.distances_m(pts) < r
    exact_out_of_fence = np.any(pts - r[:, None] < fence_lo, axis=1) | np.any(pts + r[:, None] > fence_hi, axis=1)
    for i in range(8):
        if margins[6, i] > 0:
            assert not exact_inside[i], (pts[i], r[i])
        if np.all(margins[:6, i] > 0):
            assert not exact_out_of_fence[i], (pts[i], r[i])
    # Far from everything it does clear (it is an early-out, not a refusal).
    far = np.tile([0.5, 0.5, 2.0], (8, 1))
    assert np.all(clearance.margins([far]) > 0) or np.any(vol.distances_m(far) < r + 0.1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-20.0, 20.0), min_size=6, max_size=6), st.sampled_from([0.0, 1e-300, 1.0]))
def test_stop_time_and_offset_is_stopping_offset(v: list[float], scale: float) -> None:
    vel = np.array(v) * scale
    amax = np.array([15.0, 15.0, 15.0, 20.0, 20.0, 20.0])
    t_stop, offset = _stop_time_and_offset(vel, amax)
    assert offset.tobytes() == stopping_offset(vel, amax).tobytes()
    assert t_stop == float(np.max(np.abs(vel) / amax))
    assert brake_step(np.zeros(6), vel, amax, 0.004)[1].shape == (6,)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["ur5e_1", "panda_1"]), st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7))
def test_link_points_are_the_bodies_their_midpoints_and_the_tool(
    model: mujoco.MjModel, demo_plant: PlantDescription, robot: str, u: list[float]
) -> None:
    lp = link_points(model, demo_plant, robot)
    lim = np.array(demo_plant.robots[robot].limits())
    q = lim[:, 0] + (np.array(u[: len(lim)]) + 1.0) / 2.0 * (lim[:, 1] - lim[:, 0])
    d = mujoco.MjData(model)
    d.qpos[lp.qpos_adr] = q
    mujoco.mj_kinematics(model, d)
    origins = d.xpos[lp.body_ids]
    want = np.vstack([origins, 0.5 * (origins[:-1] + origins[1:]), d.site_xpos[lp.site_id][None, :]])
    got = lp.at(q)
    assert got.tobytes() == want.tobytes() and got.shape == (lp.count, 3)
    # A new array every call: points kept from an earlier call do not change.
    kept = got.copy()
    lp.at(np.asarray(demo_plant.robots[robot].home()))
    assert got.tobytes() == kept.tobytes()


@pytest.mark.parametrize("robot", ["ur5e_1", "panda_1"])
def test_a_robot_at_rest_decides_by_bounds_only_what_the_exact_evaluation_decides(
    model: mujoco.MjModel, demo_plant: PlantDescription, robot: str
) -> None:
    """A robot held at rest, its measured joints jittering as a real servo's do, and a person
    who walks from far off into the protective distance and away again, while it is asked to
    move now and then: every period the supervisor lets through, reads and reports exactly what
    the reference does. Far off it decides by bounds and evaluates the reading only when asked
    (its floor then lies below the exact separation); near, it evaluates every period."""
    cfg = safety_config_from_plant(demo_plant, robot)
    ref = _ReferenceSupervisor(cfg, link_points(model, demo_plant, robot))
    fast = SafetySupervisor(cfg, link_points(model, demo_plant, robot))
    home = np.array(demo_plant.robots[robot].home())
    base = fast.points.at(home)[0]
    rng = np.random.default_rng(7)
    dt = cfg.control_period_s
    deferred = evaluated = 0
    meas = home.copy()
    for i in range(1500):
        t = (i + 1) * dt
        # From 4 m off to the robot's base and back, twice.
        r = 0.3 + 3.7 * abs(math.cos(i * math.pi / 750))
        people = [TrackedPerson("walker", base[0] + r, base[1] + 0.2, 1.2)]
        state = JointState(t, meas + rng.normal(0.0, 1e-12, len(home)), np.zeros(len(home)))
        command = None if i % 300 < 280 else home + 0.01 * ((i % 300) - 280)
        for sup in (ref, fast):
            sup.observe(state, people, t)
        a, b = ref.filter(command, t), fast.filter(command, t)
        assert _same(a, b), (i, a, b)
        floor = fast.separation_floor_m
        if i % 7 == 0:  # (read now and then: a deferred reading is evaluated from what it kept)
            exact = fast.ssm
            assert repr(exact) == repr(ref.ssm), i
            assert floor <= exact.separation_m
            deferred += floor < exact.separation_m
            evaluated += floor == exact.separation_m
        assert ref.events == fast.events and ref.stop_causes() == fast.stop_causes()
        meas = meas + 0.5 * (a.position_rad - meas)
    assert deferred > 20 and evaluated > 20, (deferred, evaluated)
    assert any(e.kind in ("slow", "protective_stop") for e in fast.events)


def test_a_reset_between_reading_and_filtering_leaves_no_bound_on_a_stale_reading(
    model: mujoco.MjModel, demo_plant: PlantDescription
) -> None:
    """An operator's reset (from another thread) between a period's reading and its filter
    forgets the last good reading; the next period's measured speed is still taken from the
    reading that period used, by the bounds as by the exact evaluation. (Found by a review: the
    bounds took no measured speed, and missed the stop the exact evaluation makes.)"""
    cfg = safety_config_from_plant(demo_plant, "ur5e_1")
    home = np.array(demo_plant.robots["ur5e_1"].home())
    dt = cfg.control_period_s
    for dx in np.arange(0.8, 3.0, 0.2):
        ref = _ReferenceSupervisor(cfg, link_points(model, demo_plant, "ur5e_1"))
        fast = SafetySupervisor(cfg, link_points(model, demo_plant, "ur5e_1"))
        base = fast.points.at(home)[0]
        people = [TrackedPerson("walker", base[0] + dx, base[1] - 1.0, 1.6)]
        meas, t = home.copy(), 0.0
        for i in range(17):
            t += dt
            if 5 <= i < 15:
                meas[0] += 0.03  # (pushed off its command)
            state = JointState(t, (home if i == 16 else meas).copy(), np.zeros(len(home)))
            for sup in (ref, fast):
                sup.observe(state, people, t)
                if i == 15:
                    sup.reset_estop("operator", t)
            a, b = ref.filter(None, t), fast.filter(None, t)
            assert _same(a, b), (dx, i, a, b)
            assert ref.stop_causes() == fast.stop_causes(), (dx, i)
            assert repr(ref.ssm) == repr(fast.ssm), (dx, i)


def test_no_people_and_rest_reuse_the_points(model: mujoco.MjModel, demo_plant: PlantDescription) -> None:
    """Holding still, the points of the commanded pose are placed once, not every period."""
    sup = _sup(model, demo_plant)
    calls = 0
    at = sup.points.at

    def counted(q: FloatArray) -> FloatArray:
        nonlocal calls
        calls += 1
        return at(q)

    sup.points.at = counted  # type: ignore[method-assign]
    q0 = sup.position_rad
    assert q0 is not None
    for i in range(50):
        sup.observe(JointState(0.004 * i, q0, np.zeros(6)))
        sup.filter(None, 0.004 * (i + 1))
    assert calls <= 2 and sup.mode == "run"
    assert isinstance(sup.ssm, SsmReading) and sup.ssm.separation_m == math.inf
    assert separation_m(sup.points.at(q0), sup.points.radius_m, TrackedPerson("p", 0.0, 0.0), 0.25) > 0


@settings(max_examples=400, deadline=None)
@given(
    robot=st.sampled_from(["ur5e_1", "panda_1"]),
    u=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
    vel=st.lists(st.floats(-3.0, 3.0), min_size=7, max_size=7),
    moving=st.booleans(),
    data=st.data(),
)
def test_fast_check_refuses_exactly_what_the_exact_check_refuses(
    model: mujoco.MjModel,
    demo_plant: PlantDescription,
    robot: str,
    u: list[float],
    vel: list[float],
    moving: bool,
    data: st.DataObject,
) -> None:
    """The geofence and keep-out check of a period (commanded pose, then the pose where a stop
    begun now would end), early-out first, against the exact check of both poses: the same
    verdict and the same reason, for random poses and speeds beside random volumes and faces."""
    cfg = safety_config_from_plant(demo_plant, robot)
    lp = link_points(model, demo_plant, robot)
    lim = cfg.limits
    q = lim.lower_rad + np.array(u[: lim.dof]) * (lim.upper_rad - lim.lower_rad)
    v = np.array(vel[: lim.dof]) if moving else np.zeros(lim.dof)
    pts = lp.at(q)
    stop_q = q + stopping_offset(v, lim.max_accel_rad_s2)
    for _ in range(data.draw(st.integers(0, 2))):
        near = lp.at(stop_q) if data.draw(st.booleans()) else pts
        point = near[data.draw(st.integers(0, len(near) - 1))]
        cfg = dataclasses.replace(cfg, keep_out=(*cfg.keep_out, _volume_near(point, data)))
    if data.draw(st.booleans()):
        cfg = _fence_near(cfg, pts[data.draw(st.integers(0, len(pts) - 1))], data)
    ref = _ReferenceSupervisor(cfg, lp)
    want = ref._violation(pts)
    if want is None and np.any(v != 0):
        why = ref._violation(lp.at(stop_q))
        want = None if why is None else f"a stop begun now would end with {why.split(' ', 2)[2]}"
    fast = SafetySupervisor(cfg, lp)
    stop_pts = fast._stop_pose(q, v)[1] if np.any(v) else None
    assert fast._check(pts, stop_pts) == want

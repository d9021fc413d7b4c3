"""The plant's one safety model: the ISO/TS 15066 distance, what each zone permits, the volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from plant.config import PlantDescription, Robot, Zone
from plant.safety_model import (
    CEILING_M,
    TOOL_RADIUS_M,
    BoxVolume,
    CylinderVolume,
    SsmConfig,
    braking_time_s,
    distance_to_zone_xy,
    entry_permit,
    geofence_m,
    keep_out_volumes,
    protective_separation_distance_m,
    robot_separation,
    walkway_clearance,
    walkway_speed_m_s,
)

nonneg = st.floats(0.0, 10.0, allow_nan=False)


# --------------------------------------------------------------------------- the formula


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


# --------------------------------------------------------------------------- a robot's figure


@st.composite
def robots(draw: st.DrawFn) -> Robot:
    """A UR5e or a Panda with its own speed limit and joint speeds and accelerations inside the
    model's hardware limits."""
    from plant.catalog import ROBOT_MODELS

    model = draw(st.sampled_from(["ur5e", "panda"]))
    spec = ROBOT_MODELS[model]
    speeds = [draw(st.floats(0.1, 1.0)) * v for v in spec.max_joint_speed_rad_s]
    accels = [draw(st.floats(1.0, 40.0)) for _ in spec.max_joint_accel_rad_s2]
    return Robot.model_validate(
        {
            "model": model,
            "base": {"xyz_m": (1.0, 1.0, 0.8)},
            "tool": {"model": "robotiq_2f140"},
            "max_joint_speed_rad_s": speeds,
            "max_joint_accel_rad_s2": accels,
            "max_tcp_speed_m_s": draw(st.floats(0.05, 2.0)),
        }
    )


@settings(max_examples=200, deadline=None)
@given(robots(), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 3.0))
def test_a_robots_figure_is_the_formula_and_grows_with_speed(robot: Robot, a: float, b: float, vh: float) -> None:
    lo, hi = sorted((a, b))
    cfg = SsmConfig()
    slow, fast = robot_separation(robot, cfg, lo, vh), robot_separation(robot, cfg, hi, vh)
    for sep in (slow, fast):
        # The terms add up to the figure, through the one formula the supervisor uses.
        total = sep.s_h_m + sep.s_r_m + sep.s_s_m + sep.c_m + sep.z_d_m + sep.z_r_m
        assert sep.distance_m == pytest.approx(total)
        assert sep.human_speed_m_s == max(cfg.human_speed_m_s, vh)
        assert sep.distance_m >= cfg.intrusion_distance_m + cfg.human_uncertainty_m + cfg.robot_uncertainty_m
    # A faster robot never needs less room.
    assert fast.distance_m >= slow.distance_m
    assert fast.robot_speed_m_s == pytest.approx(robot.max_tcp_speed_m_s * hi)
    # Its stop never takes longer than the longest joint's brake, and the servos' settling.
    assert fast.stopping_time_s <= braking_time_s(robot) + cfg.servo_settle_time_s + 1e-12
    # A faster walker never needs less room either.
    assert robot_separation(robot, cfg, hi, vh + 0.5).distance_m >= fast.distance_m


def test_a_robot_at_rest_needs_what_the_supervisor_needs_at_rest(demo_plant: PlantDescription) -> None:
    cfg = SsmConfig()
    rest = cfg.human_speed_m_s * cfg.reaction_time_s + cfg.intrusion_distance_m
    rest += cfg.human_uncertainty_m + cfg.robot_uncertainty_m
    for robot in demo_plant.robots.values():
        assert robot_separation(robot, cfg, 0.0).distance_m == rest
        with pytest.raises(ValueError):
            robot_separation(robot, cfg, 1.5)


def test_the_braking_time_is_the_slowest_joints() -> None:
    ur5e = Robot.model_validate({"model": "ur5e", "base": {"xyz_m": (1, 1, 0.8)}, "tool": {"model": "robotiq_2f140"}})
    assert braking_time_s(ur5e) == pytest.approx(math.pi / 8.0)


# --------------------------------------------------------------------------- walkways


@settings(max_examples=300, deadline=None)
@given(robots(), st.floats(0.0, 4.0), st.floats(0.0, 4.0), st.floats(0.0, 2.5))
def test_walkway_rules_only_ease_with_distance(robot: Robot, a: float, b: float, vh: float) -> None:
    near, far = sorted((a, b))
    order = {"stopped": 0, "slowed": 1, "clear": 2}
    cn, cf = walkway_clearance(robot, near, human_speed_m_s=vh), walkway_clearance(robot, far, human_speed_m_s=vh)
    assert order[cn.rule] <= order[cf.rule]
    # The rule is the separation a person on the walkway's edge would have, against the figures.
    cfg = SsmConfig()
    assert cn.separation_m == pytest.approx(near - TOOL_RADIUS_M - cfg.person_radius_m)
    assert cn.needed_m <= cn.full_speed_m
    if near < cn.needed_m - 1e-9:
        assert cn.rule == "stopped"
    elif near > cn.needed_m + 1e-9:
        assert cn.rule != "stopped"
    if near > cn.full_speed_m + 1e-9:
        assert cn.rule == "clear"


def test_walkway_speed_is_the_standards_or_a_faster_scripted_walkers(demo_plant: PlantDescription) -> None:
    assert walkway_speed_m_s(demo_plant, "walkway_east") == 1.6
    data = demo_plant.model_dump()
    data["people"]["walker_1"]["speed_m_s"] = 2.0
    assert walkway_speed_m_s(PlantDescription.model_validate(data), "walkway_east") == 2.0


# --------------------------------------------------------------------------- zones


def test_what_each_zone_permits(demo_plant: PlantDescription) -> None:
    assert {n: entry_permit(z) for n, z in demo_plant.zones.items()} == {
        "walkway_east": "never",
        "solvent_drum": "never",
        "electrical_cabinet": "never",
    }
    shape = {"type": "box", "center_m": (1, 1, 0), "size_m": (1, 1, 1)}
    hot = Zone.model_validate(
        {"kind": "hazard", "hazard_class": "hot_surface", "permits": "operator_confirmation", "shape": shape}
    )
    assert entry_permit(hot) == "operator_confirmation"
    # Safe default; and only a hazard zone may let a robot in.
    assert Zone.model_validate({"kind": "hazard", "hazard_class": "laser", "shape": shape}).permits == "never"
    for kind in ("keep_out", "walkway"):
        with pytest.raises(ValidationError, match="robots never enter"):
            Zone.model_validate({"kind": kind, "permits": "operator_confirmation", "shape": shape})


def test_keep_out_volumes_are_every_zone_unless_admitted(demo_plant: PlantDescription) -> None:
    vols = keep_out_volumes(demo_plant)
    assert [v.name for v in vols] == list(demo_plant.zones)
    # A walkway is a column up to the ceiling; other zones as drawn.
    walkway = next(v for v in vols if v.name == "walkway_east")
    assert isinstance(walkway, BoxVolume) and walkway.center_m[2] - walkway.half_m[2] == 0.0
    assert walkway.center_m[2] + walkway.half_m[2] == CEILING_M
    drum = next(v for v in vols if v.name == "solvent_drum")
    assert isinstance(drum, CylinderVolume) and (drum.z_low_m, drum.z_high_m) == (0.0, 1.0)
    # Only a zone that permits entry on a confirmation can be admitted.
    with pytest.raises(ValueError, match="permits no robot"):
        keep_out_volumes(demo_plant, ["solvent_drum"])
    with pytest.raises(ValueError, match="no zone"):
        keep_out_volumes(demo_plant, ["moon"])
    data = demo_plant.model_dump()
    data["zones"]["solvent_drum"]["permits"] = "operator_confirmation"
    plant = PlantDescription.model_validate(data)
    assert "solvent_drum" not in [v.name for v in keep_out_volumes(plant, ["solvent_drum"])]
    assert geofence_m(demo_plant) == ((0.0, 0.0, 0.02), (6.0, 4.0, CEILING_M))


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-2, 8),
    st.floats(-2, 6),
    st.floats(-1, 3),
    st.floats(-math.pi, math.pi),
    st.booleans(),
)
def test_plan_view_distance_agrees_with_the_volumes(x: float, y: float, z: float, yaw: float, box: bool) -> None:
    """Below the top of a zone and above its floor, the plan-view distance the guardrails use
    near walkways and hazard zones is the supervisor's volume distance (0 inside)."""
    shape = (
        {"type": "box", "center_m": (2.0, 1.5, 1.0), "size_m": (1.2, 0.6, 2.0), "yaw_rad": yaw}
        if box
        else {"type": "cylinder", "center_m": (2.0, 1.5, 0.0), "radius_m": 0.5, "height_m": 2.0}
    )
    zone = Zone.model_validate({"kind": "keep_out", "shape": shape})
    (vol,) = keep_out_volumes(
        PlantDescription.model_validate({"name": "p", "cell": {"size_m": (6.0, 4.0)}, "zones": {"z": zone}})
    )
    d3 = vol.distance_m((x, y, z))
    dxy = distance_to_zone_xy(zone, x, y)
    if 0.0 <= z <= 2.0:
        assert max(d3, 0.0) == pytest.approx(dxy, abs=1e-9)
    else:
        assert d3 >= dxy - 1e-9
    # The scalar and the vectorised distance (the supervisor's, every period) agree.
    pts = np.array([(x, y, z), (x + 0.1, y, z), (x, y - 0.2, z)])
    assert np.allclose(vol.distances_m(pts), [vol.distance_m(p) for p in pts], atol=1e-12)

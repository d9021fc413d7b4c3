"""One model of safety geometry, read by every safety layer from the plant description.

The guardrails (``llm_coordinator.guardrails``), the rehearsal in the twin (which runs the
robots' own supervisors) and the on-robot safety supervisor (``robots.safety``) all take their
distances from here, so that a plan the rules accept is not stopped at run time for a reason
the rules could have seen, and a plan they reject is rejected for the reason the robot would
stop it. What lives here:

- **Zone rules** (:func:`entry_permit`, :func:`keep_out_volumes`): what each kind of zone
  permits a robot. A ``keep_out`` zone: never enter. A ``walkway``: never enter (a column up to
  :data:`CEILING_M`), and keep the protective separation distance from the people in it (see
  below). A ``hazard`` zone: never enter, unless the plant declares ``permits:
  operator_confirmation`` and an operator confirmed the step (the ``admitted`` zones); a step
  within :data:`HAZARD_REACH_MARGIN_M` of a hazard zone needs an operator's confirmation.
- **The geofence** (:func:`geofence_m`): the cell's floor rectangle up to :data:`CEILING_M`.
- **The volumes** (:class:`BoxVolume`, :class:`CylinderVolume`): the exact distance of a point
  to a zone as the supervisor checks it, every control period and in a plan check alike.
- **Speed and separation monitoring** (ISO/TS 15066, 5.5.4): its parameters
  (:class:`SsmConfig`), the formula (:func:`protective_separation_distance_m`), which the
  supervisor evaluates every period at the speed it measures, and the figure a plan check uses
  for a robot working at its speed limit (:func:`robot_separation`) or at the lowest speed the
  supervisor slows it to (:func:`walkway_clearance`).

A person in a walkway: the tracker reports a person's centre, which may be anywhere in the
walkway (the plant's scripted people walk paths inside it, and people walk on the edge line);
the supervisor measures the gap to a cylinder of :attr:`SsmConfig.person_radius_m` around it.
So a robot point ``d`` metres (plan view) from a walkway, with its radius ``r``, may come as
close as ``d - r - person_radius_m`` to a person walking there: the separation the supervisor
measures to a person on the walkway's edge.

Pure functions of the plant description; no state, no I/O. Distances in m, speeds in m/s,
times in s.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from plant.config import BoxShape, CylinderShape, PlantDescription, Robot, Zone, ZonePermit

FloatArray = NDArray[np.float64]

#: Top of the supervised space (m): the geofence's ceiling and the height of a walkway's column.
CEILING_M = 2.5
#: Lowest height (m) a checked point may take: 2 cm above the floor.
FLOOR_CLEARANCE_M = 0.02
#: The radius (m) the supervisor gives the tool's point (``robots.kinematics.LinkPoints``): a
#: target closer than this to a zone's volume puts the tool inside it.
TOOL_RADIUS_M = 0.06
#: A target this close (m, plan view) to a hazard zone makes a robot step hazardous: a dropped
#: part or a swinging arm can reach that far (ISO 13857 reach distances start at 0.5 m).
HAZARD_REACH_MARGIN_M = 0.5


# --------------------------------------------------------------------------- zone rules


def entry_permit(zone: Zone) -> ZonePermit:
    """When a robot may enter ``zone``: ``never``, or ``operator_confirmation`` (a hazard zone
    whose plant entry says so, on a step an operator confirmed). Keep-out zones and walkways:
    never."""
    return zone.permits if zone.kind == "hazard" else "never"


def volume_of(name: str, zone: Zone) -> Volume:
    """The volume the supervisor keeps a robot out of for ``zone``: the shape as drawn, except a
    walkway, which is a column from the floor to :data:`CEILING_M` (people are that tall, and
    reach up)."""
    shape = zone.shape
    walkway = zone.kind == "walkway"
    if isinstance(shape, BoxShape):
        cz, hz = shape.center_m[2], shape.size_m[2] / 2
        if walkway:
            cz, hz = CEILING_M / 2, CEILING_M / 2
        return BoxVolume(
            name,
            (shape.center_m[0], shape.center_m[1], cz),
            (shape.size_m[0] / 2, shape.size_m[1] / 2, hz),
            shape.yaw_rad,
        )
    assert isinstance(shape, CylinderShape)
    top = CEILING_M if walkway else shape.center_m[2] + shape.height_m
    return CylinderVolume(name, shape.center_m[:2], shape.radius_m, shape.center_m[2], top)


def keep_out_volumes(plant: PlantDescription, admitted: Collection[str] = ()) -> tuple[Volume, ...]:
    """The volumes no point of a robot may enter, in the plant's zone order: every zone, unless
    it is in ``admitted`` (hazard zones that permit entry on an operator's confirmation, for a
    step an operator confirmed). Raises ``ValueError`` for an admitted zone that does not exist
    or does not permit entry."""
    for name in admitted:
        zone = plant.zones.get(name)
        if zone is None:
            raise ValueError(f"no zone named {name!r}")
        if entry_permit(zone) != "operator_confirmation":
            raise ValueError(f"zone {name} ({zone.kind}) permits no robot in it, confirmed or not")
    return tuple(volume_of(name, zone) for name, zone in plant.zones.items() if name not in admitted)


def geofence_m(plant: PlantDescription) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The axis-aligned box (low and high corners, m) every point of a robot, with its radius,
    must stay in: the cell's floor rectangle, from :data:`FLOOR_CLEARANCE_M` to :data:`CEILING_M`."""
    w, h = plant.cell.size_m
    return (0.0, 0.0, FLOOR_CLEARANCE_M), (w, h, CEILING_M)


def distance_to_zone_xy(zone: Zone, x: float, y: float) -> float:
    """Plan-view distance (m) from a point to a zone's shape; 0 inside."""
    shape = zone.shape
    if isinstance(shape, CylinderShape):
        return max(0.0, math.hypot(x - shape.center_m[0], y - shape.center_m[1]) - shape.radius_m)
    lx, ly = shape.local_xy(x, y)
    ox = max(0.0, abs(lx) - shape.size_m[0] / 2)
    oy = max(0.0, abs(ly) - shape.size_m[1] / 2)
    return math.hypot(ox, oy)


# --------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class BoxVolume:
    """A box volume (m) centred at ``center_m`` with half sizes ``half_m``, turned ``yaw_rad`` about z."""

    name: str
    center_m: tuple[float, float, float]
    half_m: tuple[float, float, float]
    yaw_rad: float = 0.0

    @cached_property
    def _plan(self) -> BoxShape:
        # The box in plan view, whose frame the distances are taken in (built once, unchecked).
        size = (2 * self.half_m[0], 2 * self.half_m[1], 2 * self.half_m[2])
        return BoxShape.model_construct(type="box", center_m=self.center_m, size_m=size, yaw_rad=self.yaw_rad)

    def distance_m(self, p: FloatArray | tuple[float, float, float]) -> float:
        """Distance from the point ``p`` to the box (0 or negative inside: minus the depth)."""
        return float(self.distances_m(np.asarray([p], dtype=np.float64))[0])

    def distances_m(self, points: FloatArray) -> FloatArray:
        """:meth:`distance_m` of every row of ``points`` (n, 3), at once."""
        lx, ly = self._plan.local_xy(points[:, 0], points[:, 1])
        local = np.stack([np.abs(lx), np.abs(ly), np.abs(points[:, 2] - self.center_m[2])], axis=1) - np.asarray(
            self.half_m
        )
        outside = np.sqrt(np.sum(np.maximum(local, 0.0) ** 2, axis=1))
        return np.where(outside > 0, outside, np.max(local, axis=1))


@dataclass(frozen=True)
class CylinderVolume:
    """An upright cylinder (m): axis at ``center_xy_m``, from ``z_low_m`` to ``z_high_m``."""

    name: str
    center_xy_m: tuple[float, float]
    radius_m: float
    z_low_m: float
    z_high_m: float

    def distance_m(self, p: FloatArray | tuple[float, float, float]) -> float:
        """Distance from the point ``p`` to the cylinder (0 or negative inside: minus the depth)."""
        return float(self.distances_m(np.asarray([p], dtype=np.float64))[0])

    def distances_m(self, points: FloatArray) -> FloatArray:
        """:meth:`distance_m` of every row of ``points`` (n, 3), at once."""
        radial = np.hypot(points[:, 0] - self.center_xy_m[0], points[:, 1] - self.center_xy_m[1]) - self.radius_m
        zc = 0.5 * (self.z_low_m + self.z_high_m)
        axial = np.abs(points[:, 2] - zc) - 0.5 * (self.z_high_m - self.z_low_m)
        outside = np.hypot(np.maximum(radial, 0.0), np.maximum(axial, 0.0))
        return np.where(outside > 0, outside, np.maximum(radial, axial))


Volume = BoxVolume | CylinderVolume


# --------------------------------------------------------------------------- ISO/TS 15066


@dataclass(frozen=True)
class SsmConfig:
    """Speed and separation monitoring parameters (ISO/TS 15066, clause 5.5.4).

    The protective separation distance is ``S_p = v_h (T_r + T_s) + v_r T_r + S_s + C + Z_d + Z_r``.
    """

    # ISO 13855 walking speed: used unless the tracker reports a person moving faster.
    human_speed_m_s: float = 1.6
    # T_r: person tracking latency (one twin tick, 4 ms) + transport (<1 ms) + one control
    # period (4 ms), rounded up with margin.
    reaction_time_s: float = 0.02
    # C: how far a body part can reach past the tracked outline before it is detected.
    intrusion_distance_m: float = 0.2
    # Z_d: position uncertainty of the person tracker.
    human_uncertainty_m: float = 0.05
    # Z_r: robot position uncertainty (servo lag behind the command, encoder error).
    robot_uncertainty_m: float = 0.02
    # People are tracked as upright cylinders of this radius around the reported position.
    person_radius_m: float = 0.25
    # Slow down within this band outside S_p; speed scales linearly from min to 1 across it.
    warning_band_m: float = 0.5
    min_speed_scale: float = 0.25
    # A protective stop clears on its own once the cell stayed clear this long.
    resume_clear_s: float = 0.5
    # The drives' servos lag their command: after the command is at rest the arm still closes
    # the lag, for about this long (the twin's servos: ~2 time constants of 0.13 s).
    servo_settle_time_s: float = 0.25
    # Robots below this speed count as stopped (m/s).
    standstill_speed_m_s: float = 0.005
    # A lag (m) of the arm behind its command above this counts as moving: the stop then
    # also waits for the servos to settle (``servo_settle_time_s``).
    servo_lag_moving_m: float = 0.005
    # At a steady speed the arm trails its command by about this long (s): the lag the
    # supervisor measures, for a plan check that cannot (the twin's servo time constant).
    servo_lag_s: float = 0.13


def protective_separation_distance_m(
    human_speed_m_s: float,
    robot_speed_m_s: float,
    reaction_time_s: float,
    stopping_time_s: float,
    stopping_distance_m: float,
    intrusion_distance_m: float,
    human_uncertainty_m: float,
    robot_uncertainty_m: float,
) -> float:
    """ISO/TS 15066 (5.5.4, formula 1) protective separation distance S_p in m, constant speeds.

    ``S_h = v_h (T_r + T_s)``: the person keeps walking while the robot reacts and stops;
    ``S_r = v_r T_r``: the robot keeps moving while the system reacts; ``S_s``: the robot's
    stopping distance; ``C``: intrusion distance; ``Z_d``, ``Z_r``: position uncertainties.
    Raises ``ValueError`` for a negative or non-finite argument.
    """
    args = (
        human_speed_m_s,
        robot_speed_m_s,
        reaction_time_s,
        stopping_time_s,
        stopping_distance_m,
        intrusion_distance_m,
        human_uncertainty_m,
        robot_uncertainty_m,
    )
    # (in C, as this runs every control period: a NaN or an inf makes the sum fail ``< inf``)
    if not (min(args) >= 0.0 and sum(args) < math.inf):
        raise ValueError("every term of the separation distance must be finite and >= 0")
    s_h = human_speed_m_s * (reaction_time_s + stopping_time_s)
    s_r = robot_speed_m_s * reaction_time_s
    return s_h + s_r + stopping_distance_m + intrusion_distance_m + human_uncertainty_m + robot_uncertainty_m


def braking_time_s(robot: Robot) -> float:
    """The longest controlled stop (s) the supervisor commands for ``robot``: every joint brakes
    at its acceleration limit and all stop together, so a stop from the joint speed limits
    takes the largest ``max speed / max acceleration`` of the joints."""
    return max(v / a for v, a in zip(robot.joint_speeds(), robot.joint_accels(), strict=True))


@dataclass(frozen=True)
class Separation:
    """The protective separation distance of a robot at one speed, term by term (m, s, m/s)."""

    robot_speed_m_s: float
    human_speed_m_s: float
    reaction_time_s: float
    stopping_time_s: float
    s_h_m: float
    s_r_m: float
    s_s_m: float
    c_m: float
    z_d_m: float
    z_r_m: float
    distance_m: float

    def explain(self) -> str:
        """The figure with its terms, for a person: ``S_p 1.29 m = S_h 0.90 + S_r 0.02 + ...``."""
        return (
            f"S_p {self.distance_m:.2f} m = S_h {self.s_h_m:.2f} + S_r {self.s_r_m:.2f} + S_s {self.s_s_m:.2f} "
            f"+ C {self.c_m:.2f} + Z_d {self.z_d_m:.2f} + Z_r {self.z_r_m:.2f} (ISO/TS 15066; person "
            f"{self.human_speed_m_s:g} m/s, robot {self.robot_speed_m_s:.2f} m/s, reaction {self.reaction_time_s:g} s, "
            f"stop {self.stopping_time_s:.2f} s)"
        )


def robot_separation(
    robot: Robot, ssm: SsmConfig | None = None, speed_scale: float = 1.0, human_speed_m_s: float | None = None
) -> Separation:
    """The protective separation distance the supervisor needs for ``robot`` moving at
    ``speed_scale`` (0..1) of its limits: the tool at that fraction of the plant's
    ``max_tcp_speed_m_s`` and the joints at that fraction of their speed limits.

    The same terms the supervisor measures every period, taken at those speeds: the stop takes
    :func:`braking_time_s` (scaled) and, while the servos lag, ``servo_settle_time_s`` more; the
    tool travels ``v_r T_brake / 2`` while it brakes; the servo lag ``v_r servo_lag_s`` adds to
    ``Z_r``. ``human_speed_m_s`` defaults to the configuration's (never less). Raises
    ``ValueError`` for a scale outside 0..1.
    """
    if not 0.0 <= speed_scale <= 1.0:
        raise ValueError(f"speed_scale {speed_scale} is outside 0..1")
    cfg = ssm or SsmConfig()
    v_h = max(cfg.human_speed_m_s, human_speed_m_s or 0.0)
    v_r = robot.max_tcp_speed_m_s * speed_scale
    t_brake = braking_time_s(robot) * speed_scale
    lag_m = v_r * cfg.servo_lag_s
    t_s = t_brake + (cfg.servo_settle_time_s if lag_m > cfg.servo_lag_moving_m else 0.0)
    s_s = v_r * t_brake / 2
    z_r = cfg.robot_uncertainty_m + lag_m
    total = protective_separation_distance_m(
        v_h, v_r, cfg.reaction_time_s, t_s, s_s, cfg.intrusion_distance_m, cfg.human_uncertainty_m, z_r
    )
    return Separation(
        robot_speed_m_s=v_r,
        human_speed_m_s=v_h,
        reaction_time_s=cfg.reaction_time_s,
        stopping_time_s=t_s,
        s_h_m=v_h * (cfg.reaction_time_s + t_s),
        s_r_m=v_r * cfg.reaction_time_s,
        s_s_m=s_s,
        c_m=cfg.intrusion_distance_m,
        z_d_m=cfg.human_uncertainty_m,
        z_r_m=z_r,
        distance_m=total,
    )


WalkwayRule = Literal["clear", "slowed", "stopped"]


@dataclass(frozen=True)
class WalkwayClearance:
    """What a person walking in a walkway does to a robot whose tool works ``distance_m`` from it.

    ``rule``: ``clear`` (the robot keeps its full speed: the separation is beyond the full-speed
    figure and its warning band), ``slowed`` (the supervisor slows the robot while someone walks
    by, down to its lowest speed scale, and need not stop it) or ``stopped`` (even at its lowest
    speed the robot is inside the protective separation distance: a person walking by on the
    walkway's edge stops it). ``separation_m`` is the gap the supervisor would measure to that
    person: the distance less the tool's radius and the person's.
    """

    distance_m: float
    separation_m: float
    full: Separation
    slowest: Separation
    warning_band_m: float
    person_radius_m: float
    rule: WalkwayRule

    @property
    def needed_m(self) -> float:
        """The distance (m) from the walkway the tool must keep not to be stopped."""
        return self.slowest.distance_m + TOOL_RADIUS_M + self.person_radius_m

    @property
    def full_speed_m(self) -> float:
        """The distance (m) from the walkway beyond which people walking there never slow the robot."""
        return self.full.distance_m + self.warning_band_m + TOOL_RADIUS_M + self.person_radius_m


def walkway_clearance(
    robot: Robot, distance_m: float, ssm: SsmConfig | None = None, human_speed_m_s: float | None = None
) -> WalkwayClearance:
    """The :class:`WalkwayClearance` of ``robot`` with its tool ``distance_m`` (plan view) from a
    walkway; ``human_speed_m_s``: the fastest person expected there (never less than the
    configuration's walking speed)."""
    cfg = ssm or SsmConfig()
    full = robot_separation(robot, cfg, 1.0, human_speed_m_s)
    slowest = robot_separation(robot, cfg, cfg.min_speed_scale, human_speed_m_s)
    sep = distance_m - TOOL_RADIUS_M - cfg.person_radius_m
    rule: WalkwayRule
    if sep <= slowest.distance_m:
        rule = "stopped"
    elif sep <= full.distance_m + cfg.warning_band_m:
        rule = "slowed"
    else:
        rule = "clear"
    return WalkwayClearance(distance_m, sep, full, slowest, cfg.warning_band_m, cfg.person_radius_m, rule)


def walkway_speed_m_s(plant: PlantDescription, walkway: str, ssm: SsmConfig | None = None) -> float:
    """The walking speed (m/s) to expect in ``walkway``: the configuration's (ISO 13855, 1.6 m/s),
    or a scripted person's there when faster."""
    cfg = ssm or SsmConfig()
    return max([cfg.human_speed_m_s, *(p.speed_m_s for p in plant.people.values() if p.walkway == walkway)])


__all__ = [
    "CEILING_M",
    "FLOOR_CLEARANCE_M",
    "HAZARD_REACH_MARGIN_M",
    "TOOL_RADIUS_M",
    "BoxVolume",
    "CylinderVolume",
    "Separation",
    "SsmConfig",
    "Volume",
    "WalkwayClearance",
    "braking_time_s",
    "distance_to_zone_xy",
    "entry_permit",
    "geofence_m",
    "keep_out_volumes",
    "protective_separation_distance_m",
    "robot_separation",
    "volume_of",
    "walkway_clearance",
    "walkway_speed_m_s",
]

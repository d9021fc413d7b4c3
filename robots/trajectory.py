"""Timed joint trajectories within velocity and acceleration limits, and the braking ramp.

A move is a straight line in joint space timed by one trapezoidal speed profile on the path
parameter, so every joint starts and arrives together (synchronised) and no joint exceeds its
speed (rad/s) or acceleration (rad/s^2) limit. The profile is time-optimal for that line. Pure
numpy, no blocking, no state beyond the arrays given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class _Profile:
    """Trapezoid (or triangle) on s in [0, 1]: accelerate, cruise, decelerate."""

    sd_max: float  # peak ds/dt reached (1/s)
    sdd: float  # |d2s/dt2| (1/s^2)
    t_acc: float
    t_cruise: float

    @property
    def duration_s(self) -> float:
        return 2 * self.t_acc + self.t_cruise

    def at(self, t: float) -> tuple[float, float, float]:
        """(s, ds/dt, d2s/dt2) at ``t`` seconds, clamped to the ends."""
        ta, tc, a, v = self.t_acc, self.t_cruise, self.sdd, self.sd_max
        if t <= 0:
            return 0.0, 0.0, 0.0
        if t < ta:
            return 0.5 * a * t * t, a * t, a
        s_acc = 0.5 * a * ta * ta
        if t < ta + tc:
            return s_acc + v * (t - ta), v, 0.0
        td = t - ta - tc
        if td < ta:
            return s_acc + v * tc + v * td - 0.5 * a * td * td, v - a * td, -a
        return 1.0, 0.0, 0.0


def _profile(sd_limit: float, sdd_limit: float) -> _Profile:
    if not (sd_limit > 0 and sdd_limit > 0 and math.isfinite(sd_limit) and math.isfinite(sdd_limit)):
        return _Profile(0.0, 0.0, 0.0, 0.0)
    # Triangle when the cruise speed cannot be reached within half the path.
    if sd_limit * sd_limit / sdd_limit >= 1.0:
        t_acc = math.sqrt(1.0 / sdd_limit)
        return _Profile(sdd_limit * t_acc, sdd_limit, t_acc, 0.0)
    t_acc = sd_limit / sdd_limit
    t_cruise = (1.0 - sd_limit * t_acc) / sd_limit
    return _Profile(sd_limit, sdd_limit, t_acc, t_cruise)


class JointMove:
    """A synchronised rest-to-rest move from ``start`` to ``goal`` (rad).

    ``max_speed_rad_s`` and ``max_accel_rad_s2`` are per-joint limits; ``speed_scale`` in (0, 1]
    takes a fraction of both speed and acceleration (a slower, gentler move). Construction
    raises ``ValueError`` on mismatched shapes or non-positive limits.
    """

    def __init__(
        self,
        start: FloatArray,
        goal: FloatArray,
        max_speed_rad_s: FloatArray,
        max_accel_rad_s2: FloatArray,
        speed_scale: float = 1.0,
    ) -> None:
        self.start = np.asarray(start, dtype=float).copy()
        self.goal = np.asarray(goal, dtype=float).copy()
        vmax = np.asarray(max_speed_rad_s, dtype=float)
        amax = np.asarray(max_accel_rad_s2, dtype=float)
        if not (self.start.shape == self.goal.shape == vmax.shape == amax.shape) or self.start.ndim != 1:
            raise ValueError("start, goal and limits must be 1-D arrays of one entry per joint")
        if np.any(vmax <= 0) or np.any(amax <= 0):
            raise ValueError("speed and acceleration limits must be positive")
        if not 0 < speed_scale <= 1:
            raise ValueError("speed_scale must lie in (0, 1]")
        self.delta = self.goal - self.start
        dist = np.abs(self.delta)
        moving = dist > 1e-12
        if not np.any(moving):
            self._p = _Profile(0.0, 0.0, 0.0, 0.0)
        else:
            sd = float(np.min(vmax[moving] * speed_scale / dist[moving]))
            # Acceleration scales with the square of the speed scale: the same shape, slower.
            sdd = float(np.min(amax[moving] * speed_scale**2 / dist[moving]))
            self._p = _profile(sd, sdd)

    @property
    def duration_s(self) -> float:
        return self._p.duration_s

    def sample(self, t_s: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Position (rad), velocity (rad/s) and acceleration (rad/s^2) at ``t_s`` from the start."""
        if self._p.sdd == 0.0:
            z = np.zeros_like(self.start)
            return self.goal.copy(), z, z.copy()
        s, sd, sdd = self._p.at(t_s)
        return self.start + s * self.delta, sd * self.delta, sdd * self.delta


def brake_step(
    position: FloatArray, velocity: FloatArray, max_decel_rad_s2: FloatArray, dt_s: float
) -> tuple[FloatArray, FloatArray]:
    """One control period of a synchronised controlled stop (stop categories 1 and 2).

    Every joint decelerates in proportion so that all reach zero speed together, at the largest
    rate the slowest-to-stop joint allows: the robot keeps the direction it was moving in (no
    swerve) and stops in the shortest time within its limits. Returns the next position (rad)
    and velocity (rad/s); at rest it returns the position unchanged.
    """
    v = np.asarray(velocity, dtype=float)
    q = np.asarray(position, dtype=float)
    t_stop = float(np.max(np.abs(v) / np.asarray(max_decel_rad_s2, dtype=float)))
    if t_stop <= dt_s:
        # Reaches rest within this period: average speed v/2 over the remaining time.
        return q + 0.5 * v * t_stop, np.zeros_like(v)
    v_next = v * (1.0 - dt_s / t_stop)
    return q + 0.5 * (v + v_next) * dt_s, v_next


def stopping_offset(velocity: FloatArray, max_decel_rad_s2: FloatArray) -> FloatArray:
    """Joint displacement (rad) a synchronised controlled stop from ``velocity`` still travels."""
    v = np.asarray(velocity, dtype=float)
    t_stop = float(np.max(np.abs(v) / np.asarray(max_decel_rad_s2, dtype=float)))
    return 0.5 * v * t_stop

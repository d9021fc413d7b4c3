"""Timed joint moves stay within their limits, start and end at rest, and arrive together."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.trajectory import JointMove, brake_step, stopping_offset

angles = st.lists(st.floats(-6.0, 6.0), min_size=6, max_size=6)
positive = st.lists(st.floats(0.1, 5.0), min_size=6, max_size=6)


@settings(max_examples=60, deadline=None)
@given(angles, angles, positive, positive, st.floats(0.05, 1.0))
def test_move_within_limits(q0: list[float], q1: list[float], v: list[float], a: list[float], scale: float) -> None:
    vmax, amax = np.array(v), np.array(a)
    mv = JointMove(np.array(q0), np.array(q1), vmax, amax, scale)
    T = mv.duration_s
    start, v0, _ = mv.sample(0.0)
    end, v1, _ = mv.sample(T + 1e-9)
    assert np.allclose(start, q0) and np.allclose(end, q1, atol=1e-9)
    assert np.allclose(v0, 0) and np.allclose(v1, 0)
    dt = max(T / 400, 1e-4)
    prev_q = start
    for t in np.arange(dt, T + dt, dt):
        q, vel, acc = mv.sample(float(t))
        assert np.all(np.abs(vel) <= vmax * scale * (1 + 1e-9) + 1e-12)
        assert np.all(np.abs(acc) <= amax * scale**2 * (1 + 1e-9) + 1e-12)
        # Finite differences agree with the reported velocity bound (no jumps).
        assert np.all(np.abs(q - prev_q) <= vmax * scale * dt * (1 + 1e-6) + 1e-9)
        prev_q = q
    # Straight line in joint space: every sample lies on the segment.
    mid, _, _ = mv.sample(T / 3)
    d = np.array(q1) - np.array(q0)
    if np.linalg.norm(d) > 1e-9:
        s = float(np.dot(mid - q0, d) / np.dot(d, d))
        assert np.allclose(mid, np.array(q0) + s * d, atol=1e-9)


def test_time_optimal_single_joint() -> None:
    # 1 rad at 1 rad/s and 1 rad/s^2: a triangle of 2 s (peak 1 rad/s at the middle).
    mv = JointMove(np.zeros(1), np.ones(1), np.ones(1), np.ones(1))
    assert mv.duration_s == np.float64(2.0)
    # 4 rad: 1 s up, 3 s cruise, 1 s down.
    mv = JointMove(np.zeros(1), 4 * np.ones(1), np.ones(1), np.ones(1))
    assert abs(mv.duration_s - 5.0) < 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=6, max_size=6), positive)
def test_brake_stops_in_line_within_decel(v: list[float], a: list[float]) -> None:
    amax = np.array(a)
    q, vel = np.zeros(6), np.array(v)
    direction = vel / (np.linalg.norm(vel) or 1.0)
    expected = stopping_offset(vel, amax)
    for _ in range(100000):
        q2, v2 = brake_step(q, vel, amax, 0.004)
        assert np.all(np.abs(v2 - vel) <= amax * 0.004 * (1 + 1e-9) + 1e-12)
        q, vel = q2, v2
        if not np.any(vel):
            break
    assert not np.any(vel)
    assert np.allclose(q, expected, atol=1e-9 + 0.004 * np.max(np.abs(v)))
    if np.linalg.norm(q) > 1e-9:
        assert np.allclose(q / np.linalg.norm(q), direction, atol=1e-6)

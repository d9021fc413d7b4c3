"""Fakes and conformance checks for the backends of ``robots`` (tests and other packages use them).

- :class:`FakeHardware`: a :class:`~robots.interface.HardwareInterface` without physics, joints
  that follow their command with a first-order lag, stepped by the caller.
- :func:`check_robot`: what every hardware interface must do, checked on a live backend (the
  ROS 2 driver, a live twin) or a lockstep one (the in-process twin, the fake), as Gymnasium's
  ``check_env`` checks every environment. ``tests/contracts/test_robot_contract.py`` runs it
  over every backend.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robots.interface import FloatArray, HardwareInterface, JointState


class FakeHardware:
    """Joints that move toward their command with a first-order lag of ``lag_s`` (s).

    Lockstep: :meth:`step` advances one control period; ``read`` and ``wait`` return the current
    state. Not thread-safe. ``gripper`` holds the last gripper command.
    """

    def __init__(
        self,
        robot: str,
        joint_names: Sequence[str],
        position_rad: Sequence[float],
        control_period_s: float = 0.004,
        lag_s: float = 0.05,
    ) -> None:
        self.robot = robot
        self.joint_names = tuple(joint_names)
        self.control_period_s = control_period_s
        self.lag_s = lag_s
        self.time_s = 0.0
        self.position = np.array(position_rad, dtype=float)
        self.velocity = np.zeros_like(self.position)
        self.target = self.position.copy()
        self.gripper = 0.0

    def step(self) -> None:
        dt = self.control_period_s
        q = self.position + (self.target - self.position) * (1.0 - math.exp(-dt / self.lag_s))
        self.velocity = (q - self.position) / dt
        self.position = q
        self.time_s += dt

    def read(self) -> JointState:
        return JointState(self.time_s, self.position.copy(), self.velocity.copy())

    def wait(self, timeout_s: float) -> JointState:
        return self.read()

    def write(self, position: FloatArray) -> None:
        self.target = np.array(position, dtype=float)

    def set_gripper(self, closed_fraction: float) -> None:
        self.gripper = float(closed_fraction)


@dataclass(frozen=True)
class RobotCheck:
    """What :func:`check_robot` measured (it raised if something was wrong)."""

    robot: str
    read_time_p50_s: float  # how long ``read`` took (wall clock)
    state_period_p50_s: float  # median stamp advance between consecutive states
    tracking_error_rad: float  # moved joint, once settled at its target
    settle_time_s: float  # from the end of the ramp to within tolerance


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def check_robot(
    hw: HardwareInterface,
    step: Callable[[], None] | None = None,
    *,
    joint: int = -1,
    move_rad: float = 0.05,
    tolerance_rad: float = 0.01,
    settle_s: float = 2.0,
) -> RobotCheck:
    """Check that ``hw`` behaves as every hardware interface must; raise AssertionError saying
    what does not. Blocks for a few seconds of robot time.

    ``step`` advances a lockstep backend by one control period (the in-process twin: its
    ``step``); None means the robot runs on its own clock, and each period is waited for with
    ``hw.wait`` (or a sleep of one period). The robot must be at rest and free to move
    ``joint`` (default the last, a wrist) by ``move_rad`` and back: the check commands it
    directly, without a safety supervisor, so run it on a twin or a robot that may move. It
    also opens the gripper.

    Checks: the protocol and its attributes; states of the right shape, finite, each newer
    than the last, about one control period apart; ``read`` answering within a control period;
    a held position staying still; a ramp on one joint followed to within ``tolerance_rad``
    within ``settle_s`` (the others staying put), with velocity of the right sign meanwhile;
    the way back; the gripper command accepted.
    """
    _expect(isinstance(hw, HardwareInterface), f"{hw!r} does not implement HardwareInterface")
    name = hw.robot
    names = hw.joint_names
    _expect(isinstance(name, str) and bool(name), f"robot name {name!r}")
    _expect(
        isinstance(names, tuple) and len(names) > 0 and all(isinstance(n, str) for n in names),
        f"{name}: joint_names must be a non-empty tuple of str, not {names!r}",
    )
    _expect(len(set(names)) == len(names), f"{name}: joint names repeat: {names}")
    dt = hw.control_period_s
    _expect(math.isfinite(dt) and 0 < dt <= 0.1, f"{name}: control_period_s {dt!r}")
    n = len(names)
    wait = getattr(hw, "wait", None)

    def next_state() -> JointState:
        if step is not None:
            step()
            return hw.read()
        if wait is not None:
            st: JointState = wait(25 * dt)
            return st
        time.sleep(dt)
        return hw.read()

    def valid(st: JointState, what: str) -> JointState:
        _expect(isinstance(st, JointState), f"{name}: {what} returned {type(st).__name__}, not JointState")
        for field, arr in (("position", st.position), ("velocity", st.velocity)):
            a = np.asarray(arr)
            _expect(a.shape == (n,), f"{name}: {what}: {field} has shape {a.shape}, expected ({n},)")
            _expect(np.issubdtype(a.dtype, np.floating), f"{name}: {what}: {field} dtype {a.dtype}")
            _expect(bool(np.all(np.isfinite(a))), f"{name}: {what}: {field} not finite: {a}")
        _expect(math.isfinite(st.stamp_s), f"{name}: {what}: stamp {st.stamp_s!r}")
        return st

    # States: fresh every period, about one period apart.
    prev = valid(next_state(), "the first state")
    advances = []
    for _ in range(50):
        st = valid(next_state(), "a state")
        _expect(
            st.stamp_s > prev.stamp_s, f"{name}: a state is not newer than the last ({st.stamp_s} <= {prev.stamp_s})"
        )
        advances.append(st.stamp_s - prev.stamp_s)
        prev = st
    period = statistics.median(advances)
    _expect(0.5 * dt <= period <= 3 * dt, f"{name}: states {period * 1e3:.2f} ms apart, control period {dt * 1e3:g} ms")

    # read() answers within a control period (median: the machine may be shared).
    reads = []
    for _ in range(20):
        t = time.perf_counter()
        valid(hw.read(), "read()")
        reads.append(time.perf_counter() - t)
    read_p50 = statistics.median(reads)
    _expect(read_p50 < dt, f"{name}: read() takes {read_p50 * 1e3:.2f} ms, more than a control period")

    # Hold where it is: it stays still.
    start = np.asarray(prev.position, dtype=float).copy()
    st = prev
    for _ in range(round(0.5 / dt)):
        hw.write(start)
        st = next_state()
    drift = float(np.max(np.abs(np.asarray(st.position) - start)))
    _expect(drift < tolerance_rad, f"{name}: holding its position it drifted {drift:.4f} rad")
    _expect(
        float(np.max(np.abs(np.asarray(st.velocity)))) < 0.05,
        f"{name}: holding, a joint still moves at {np.max(np.abs(np.asarray(st.velocity))):.3f} rad/s",
    )

    def ramp(q_from: FloatArray, q_to: FloatArray) -> tuple[float, float]:
        """Command a 0.5 s ramp, hold the target; (settle time, final error of the moved joint)."""
        steps = round(0.5 / dt)
        sign = np.sign(q_to[joint] - q_from[joint])
        moved_right_way = False
        for k in range(1, steps + 1):
            hw.write(q_from + (q_to - q_from) * k / steps)
            s = next_state()
            moved_right_way = moved_right_way or float(np.asarray(s.velocity)[joint]) * sign > 0.01
        _expect(moved_right_way, f"{name}: joint {joint} velocity never showed the commanded motion")
        t0 = time.monotonic()
        err = math.inf
        for k in range(round(settle_s / dt)):
            hw.write(q_to)
            s = next_state()
            q = np.asarray(s.position, dtype=float)
            err = float(abs(q[joint] - q_to[joint]))
            others = float(np.max(np.abs(np.delete(q - q_to, joint % n)))) if n > 1 else 0.0
            if err < tolerance_rad and others < tolerance_rad:
                return (k * dt if step is not None else time.monotonic() - t0), err
        raise AssertionError(
            f"{name}: did not follow the command: joint {joint} {err:.4f} rad off after {settle_s:.1f} s "
            f"(tolerance {tolerance_rad} rad)"
        )

    target = start.copy()
    target[joint] += move_rad
    settle, err = ramp(start, target)
    ramp(target, start)

    t = time.perf_counter()
    hw.set_gripper(0.0)
    _expect(time.perf_counter() - t < max(dt, 0.05), f"{name}: set_gripper blocked")
    return RobotCheck(name, read_p50, period, err, settle)

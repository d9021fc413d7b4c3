"""Fakes and conformance checks for the backends of ``robots`` (tests and other packages use them).

- :class:`FakeHardware`: a :class:`~robots.interface.HardwareInterface` without physics, joints
  that follow their command with a first-order lag, stepped by the caller.
- :func:`check_robot`: what every hardware interface must do, checked on a live backend (the
  ROS 2 driver, a live twin) or a lockstep one (the in-process twin, the fake), as Gymnasium's
  ``check_env`` checks every environment. ``tests/contracts/test_robot_contract.py`` runs it
  over every backend.
- :class:`FakeGoalChannel`: a :class:`~robots.agent.GoalChannel` without a robot, on the wall clock.
- :func:`check_robot_agent`: what the robot agent must do over every goal channel (the fake, an
  in-process runtime, ROS 2); ``tests/contracts/test_robot_agent_contract.py`` runs it over each.
- :func:`make_robot_keys`: the robots' keys in a temporary state folder, for tests and benches
  over ROS 2 (which always authenticates).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plant.trust import KeyStore, reset_key_name, robot_key_name, robot_keys
from robots.agent import ChannelAgent, GoalChannel
from robots.interface import (
    FloatArray,
    HardwareInterface,
    JointState,
    Outcome,
    RobotAgent,
    SkillFeedback,
    SkillGoal,
    SkillResult,
)


def make_robot_keys(state_dir: Path | str, robots: Iterable[str]) -> KeyStore:
    """The key store of ``<state_dir>/trust`` with each robot's command and reset keys, made where
    missing (as ``atelier robot keys`` makes them). Give it a temporary folder: tests never use
    the site's keys, and a runtime started with ``--state-dir`` the same folder shares them."""
    keys = robot_keys(state_dir)
    for robot in robots:
        keys.key(robot_key_name(robot))
        keys.key(reset_key_name(robot))
    return keys


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


class FakeGoalChannel:
    """A robot's goals without a robot (a :class:`~robots.agent.GoalChannel`), on the wall clock.

    A goal succeeds after ``durations_s[skill]`` (default ``duration_s``; ``math.inf``: it runs
    until cancelled), unless refused at once as the runtime refuses it: a goal for another
    robot, a goal id seen before, or (with ``part_types``) a ``pick`` or ``take`` of a part type
    not among them.
    ``goals`` lists every goal that reached the robot, ``cancels`` every goal id asked to cancel.
    """

    def __init__(
        self,
        robot: str,
        duration_s: float = 0.01,
        durations_s: Mapping[str, float] | None = None,
        part_types: Collection[str] | None = None,
    ) -> None:
        self.robot = robot
        self.duration_s = duration_s
        self.durations_s = dict(durations_s or {})
        self.part_types = part_types
        self.goals: list[SkillGoal] = []
        self.cancels: list[str] = []
        self._results: dict[str, asyncio.Future[SkillResult]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def _future(self, goal_id: str) -> asyncio.Future[SkillResult]:
        if goal_id not in self._results:
            self._results[goal_id] = asyncio.get_running_loop().create_future()
        return self._results[goal_id]

    def _end(self, goal_id: str, outcome: Outcome, reason: str = "") -> None:
        self._timers.pop(goal_id, None)
        fut = self._future(goal_id)
        if not fut.done():
            fut.set_result(SkillResult(goal_id, outcome, reason))

    async def submit(self, goal: SkillGoal) -> None:
        if any(g.goal_id == goal.goal_id for g in self.goals):
            return
        self.goals.append(goal)
        part = goal.args.get("part_type")
        if goal.robot != self.robot:
            self._end(goal.goal_id, Outcome.FAILED, f"goal for {goal.robot} sent to {self.robot}")
        elif goal.skill in ("pick", "take") and self.part_types is not None and part and part not in self.part_types:
            self._end(goal.goal_id, Outcome.FAILED, f"unknown part type {part!r}")
        else:
            self._future(goal.goal_id)
            d = self.durations_s.get(goal.skill, self.duration_s)
            if math.isfinite(d):
                loop = asyncio.get_running_loop()
                self._timers[goal.goal_id] = loop.call_later(d, self._end, goal.goal_id, Outcome.SUCCEEDED)

    async def result(self, goal_id: str, timeout_s: float) -> SkillResult:
        try:
            return await asyncio.wait_for(asyncio.shield(self._future(goal_id)), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.robot}: no result for goal {goal_id} in {timeout_s:g} s") from None

    async def cancel(self, goal_id: str) -> None:
        self.cancels.append(goal_id)
        timer = self._timers.get(goal_id)
        if goal_id in self._results and not self._results[goal_id].done():
            if timer is not None:
                timer.cancel()
            self._end(goal_id, Outcome.CANCELLED, "cancelled")

    async def feedback(self) -> AsyncIterator[SkillFeedback]:
        return
        yield  # pragma: no cover


async def _arrived(
    received: Callable[[str], Sequence[SkillGoal]], robot: str, match: Callable[[SkillGoal], bool], timeout_s: float
) -> SkillGoal | None:
    end = time.monotonic() + timeout_s
    while True:
        found = next((g for g in list(received(robot)) if match(g)), None)
        if found is not None or time.monotonic() > end:
            return found
        await asyncio.sleep(0.01)


async def check_robot_agent(
    agent: ChannelAgent,
    receiver: str,
    received: Callable[[str], Sequence[SkillGoal]],
    *,
    location: str,
    part_type: str,
    unknown_part_type: str = "no_such_part",
    timeout_s: float = 30.0,
) -> None:
    """Check that ``agent`` does what the robot agent must over its channels; raise
    AssertionError saying what it does not. Takes a few seconds (a few ``timeout_s`` at most).

    ``received(robot)`` lists the goals that reached ``robot``'s runtime (a recording wrapper
    around its ``submit``, or the fake channel's ``goals``). The agent's robot must be free, able
    to go home, and hold (or believe it holds) a part to hand over; ``receiver`` free with an
    empty gripper; both able to reach ``location``. Every hand-over is cancelled or fails before
    a part changes hands. ``timeout_s`` bounds each step (wall clock).

    Checks: the agent is a :class:`~robots.interface.RobotAgent`; a goal for another robot fails
    and reaches no runtime; ``home`` succeeds; a hand-over sends ``receiver`` a ``take`` goal
    with ``from_robot``, ``location`` and ``part_type``, and cancelling the awaiting task raises
    CancelledError with both goals ended cancelled; a hand-over whose take fails (an unknown part
    type) fails soon, names the receiver, and the giver's goal has ended.
    """
    name = agent.name
    tag = uuid.uuid4().hex[:8]
    _expect(isinstance(agent, RobotAgent), f"{agent!r} does not implement RobotAgent")
    _expect(hasattr(agent.feedback(), "__anext__"), f"{name}: feedback() does not give an async iterator")
    peer = agent.peer(receiver)
    _expect(peer is not None, f"{name}: no channel to {receiver}")
    assert peer is not None

    async def run(goal: SkillGoal, what: str) -> SkillResult:
        try:
            return await asyncio.wait_for(agent.run_skill(goal, timeout_s), timeout_s + min(5.0, timeout_s))
        except TimeoutError:
            raise AssertionError(f"{name}: {what} did not end within {timeout_s:g} s") from None

    async def ended(channel: GoalChannel, goal_id: str, what: str) -> SkillResult:
        try:
            return await channel.result(goal_id, min(5.0, timeout_s))
        except TimeoutError:
            raise AssertionError(f"{name}: {what} ({goal_id}) never ended") from None

    # A goal for another robot: refused here, sent nowhere.
    foreign = SkillGoal(f"{tag}-foreign", receiver, "home")
    res = await run(foreign, "a goal for another robot")
    _expect(res.outcome == Outcome.FAILED, f"{name}: a goal for {receiver} ended {res.outcome.value}, not failed")
    await asyncio.sleep(0.2)  # anything sent would have arrived by now
    for robot in (name, receiver):
        _expect(
            all(g.goal_id != foreign.goal_id for g in received(robot)),
            f"{name}: a goal for {receiver} given to {name}'s agent reached {robot}'s runtime",
        )

    # A simple skill.
    home = SkillGoal(f"{tag}-home", name, "home")
    res = await run(home, "home")
    _expect(res.outcome == Outcome.SUCCEEDED, f"{name}: home ended {res.outcome.value}: {res.reason}")
    _expect(res.goal_id == home.goal_id, f"{name}: the result of {home.goal_id} names goal {res.goal_id}")
    _expect(any(g.goal_id == home.goal_id for g in received(name)), f"{name}: home never reached the runtime")

    # A hand-over: the receiver gets its take; cancelling the awaiting task cancels both.
    args = {"to_robot": receiver, "location": location, "part_type": part_type}
    hand = SkillGoal(f"{tag}-hand", name, "hand_over", args)
    before = {g.goal_id for g in received(receiver)}
    task = asyncio.ensure_future(agent.run_skill(hand, timeout_s))
    try:
        take = await _arrived(received, receiver, lambda g: g.skill == "take" and g.goal_id not in before, timeout_s)
        _expect(take is not None, f"{name}: a hand-over sent {receiver} no take goal")
        assert take is not None
        for key, want in (("from_robot", name), ("location", location), ("part_type", part_type)):
            _expect(take.args.get(key) == want, f"{name}: the take goal has {key}={take.args.get(key)!r}, not {want!r}")
        _expect(take.robot == receiver, f"{name}: the take goal is addressed to {take.robot}, not {receiver}")
        gave = await _arrived(received, name, lambda g: g.goal_id == hand.goal_id, timeout_s)
        _expect(gave is not None, f"{name}: the hand-over goal never reached {name}'s runtime")
        if task.done():
            raise AssertionError(f"{name}: the hand-over ended before it was cancelled: {_outcome(task)}")
    except AssertionError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    task.cancel()
    try:
        await asyncio.wait_for(task, timeout_s)
    except asyncio.CancelledError:
        pass
    except TimeoutError:
        raise AssertionError(f"{name}: a cancelled hand-over did not end within {timeout_s:g} s") from None
    else:
        raise AssertionError(f"{name}: cancelling the awaiting task did not raise CancelledError: {_outcome(task)}")
    for channel, goal_id, who in ((agent.channel, hand.goal_id, name), (peer, take.goal_id, receiver)):
        r = await ended(channel, goal_id, f"{who}'s goal of a cancelled hand-over")
        _expect(
            r.outcome == Outcome.CANCELLED,
            f"{name}: cancelled the hand-over, {who}'s goal ended {r.outcome.value}: {r.reason}",
        )

    # A take that fails fails the hand-over, naming the receiver, and stops the giver.
    bad = SkillGoal(f"{tag}-bad", name, "hand_over", {**args, "part_type": unknown_part_type})
    res = await run(bad, f"a hand-over whose take failed ({receiver} does not know {unknown_part_type!r})")
    _expect(res.outcome != Outcome.SUCCEEDED, f"{name}: a hand-over whose take failed succeeded")
    _expect(receiver in res.reason, f"{name}: a failed take is not named in the result: {res.reason!r}")
    r = await ended(agent.channel, bad.goal_id, f"{name}'s goal of a hand-over whose take failed")
    _expect(r.outcome != Outcome.SUCCEEDED, f"{name}: the giver went on to succeed after the take failed")


def _outcome(task: asyncio.Future[SkillResult]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return repr(exc) if exc is not None else repr(task.result())

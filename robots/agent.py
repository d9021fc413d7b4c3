"""The robot agent, written once over a goal-channel port.

:class:`ChannelAgent` is the :class:`~robots.interface.RobotAgent` of the coordinator's executor
over any :class:`GoalChannel` (one robot's goals: submit, result within a timeout, cancel,
feedback): :class:`RuntimeChannel` over an in-process runtime (rehearsal, the console's live
twin), :class:`robots.ros2.agent.RosGoalChannel` over ROS 2. ``tests/contracts/
test_robot_agent_contract.py`` runs :func:`robots.testing.check_robot_agent` over each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from robots.interface import Outcome, RobotAgent, SkillFeedback, SkillGoal, SkillResult

if TYPE_CHECKING:
    from robots.runtime import RobotRuntime


@runtime_checkable
class GoalChannel(Protocol):
    """The goals of one robot (``robot``), as its runtime takes them."""

    robot: str

    async def submit(self, goal: SkillGoal) -> None:
        """Hand ``goal`` to the robot and return at once; a refusal comes back as its result.
        A goal id submitted before is not run again (its result stays available)."""

    async def result(self, goal_id: str, timeout_s: float) -> SkillResult:
        """The result of a submitted goal, when the robot has one. Raises ``TimeoutError`` if
        none came within ``timeout_s`` (on the channel's clock: the twin's in-process, the wall
        clock over ROS 2); the goal may still run then."""

    async def cancel(self, goal_id: str) -> None:
        """Ask the robot to cancel the goal (it brakes to a stop), and wait until the goal ended
        (a few seconds at most). A finished or unknown goal is left alone."""

    def feedback(self) -> AsyncIterator[SkillFeedback]:
        """Progress of this robot's goals as it arrives (a channel may give none)."""


def take_goal(hand_over: SkillGoal) -> SkillGoal:
    """The receiving robot's side of ``hand_over``: ``take`` at the same location, from the giver,
    of the part type the hand-over names ("" when it names none: the receiver's planner then
    takes the plant's first part type)."""
    a = hand_over.args
    args = {"from_robot": hand_over.robot, "location": a.get("location", ""), "part_type": str(a.get("part_type", ""))}
    to_robot = str(a.get("to_robot", ""))
    return SkillGoal(f"{hand_over.goal_id}/take", to_robot, "take", args, hand_over.plan_hash, hand_over.step_id)


async def _run(channel: GoalChannel, goal: SkillGoal, timeout_s: float) -> SkillResult:
    """One goal on one channel; a timeout cancels it and fails, a cancelled await cancels it."""
    try:
        await channel.submit(goal)
        return await channel.result(goal.goal_id, timeout_s)
    except TimeoutError as exc:
        await channel.cancel(goal.goal_id)
        return SkillResult(goal.goal_id, Outcome.FAILED, str(exc) or f"{channel.robot}: no result in {timeout_s:g} s")
    except asyncio.CancelledError:
        await channel.cancel(goal.goal_id)
        raise


class ChannelAgent:
    """The robot agent of ``channel.robot``. It refuses a goal meant for another robot and runs a
    ``hand_over`` on two channels at once: the giver's goal on its own, the receiver's ``take``
    (:func:`take_goal`) on ``peer(receiver)`` (None: no such robot). If one fails, the other is
    cancelled and awaited; if the awaiting task is cancelled, both are; the result names who
    failed and why."""

    def __init__(self, channel: GoalChannel, peer: Callable[[str], GoalChannel | None]) -> None:
        self.name = channel.robot
        self.channel = channel
        self.peer = peer

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        """Perform a skill and return its outcome (a failure is a result, not an exception).

        ``timeout_s`` bounds each goal on its channel's clock; a goal without a result by then is
        cancelled and fails. Cancelling the awaiting task cancels the goal (both goals of a
        hand-over), waits until the robots stopped (a few seconds at most) and re-raises.
        """
        if goal.robot != self.name:
            return SkillResult(goal.goal_id, Outcome.FAILED, f"goal for {goal.robot} given to {self.name}'s agent")
        if goal.skill != "hand_over":
            return await _run(self.channel, goal, timeout_s)
        receiver = str(goal.args.get("to_robot", ""))
        peer = self.peer(receiver) if receiver != self.name else None
        if peer is None:
            return SkillResult(goal.goal_id, Outcome.FAILED, f"{self.name} cannot hand over to {receiver!r}")
        give = asyncio.ensure_future(_run(self.channel, goal, timeout_s))
        take = asyncio.ensure_future(_run(peer, take_goal(goal), timeout_s))
        pending = {give, take}
        try:  # until both succeeded or one failed
            while pending and all(t.result().outcome == Outcome.SUCCEEDED for t in {give, take} - pending):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:  # a failure, or this task cancelled: stop what still runs (each cancels its goal)
            give.cancel()
            take.cancel()
            await asyncio.gather(give, take, return_exceptions=True)
        sides = ((f"{self.name} did not hand over", give), (f"{receiver} did not take", take))
        failed = [
            (who, t.result()) for who, t in sides if not t.cancelled() and t.result().outcome != Outcome.SUCCEEDED
        ]
        if not failed:
            return give.result()
        why = "; ".join(f"{who} the part: {r.reason}" for who, r in failed)
        return SkillResult(
            goal.goal_id, failed[0][1].outcome, why, 0.0 if give.cancelled() else give.result().duration_s
        )

    def feedback(self) -> AsyncIterator[SkillFeedback]:
        """Progress of this robot's skills, as its channel reports it."""
        return self.channel.feedback()


class AgentClock(Protocol):
    """Time as an agent over an in-process runtime sees it: the twin's clock (s), and a wait for
    the next look at the runtime (the next batch of lockstep ticks, or a short sleep live)."""

    @property
    def time_s(self) -> float: ...

    async def wait(self) -> None: ...


class RuntimeChannel:
    """A :class:`GoalChannel` over an in-process runtime, looked at on ``clock``. ``submit``
    plans inline in lockstep (1-300 ms on this thread). ``cancel`` waits at most
    ``cancel_wait_s`` of twin time and of wall time (a lockstep clock stops with its stepper)."""

    def __init__(self, runtime: RobotRuntime, clock: AgentClock, cancel_wait_s: float = 5.0) -> None:
        self.robot, self.runtime, self.clock, self.cancel_wait_s = runtime.robot, runtime, clock, cancel_wait_s

    async def submit(self, goal: SkillGoal) -> None:
        self.runtime.submit(goal)  # a refused goal has its result already

    async def result(self, goal_id: str, timeout_s: float) -> SkillResult:
        deadline = self.clock.time_s + timeout_s
        while (result := self.runtime.result_of(goal_id)) is None:
            if self.clock.time_s > deadline:
                raise TimeoutError(f"{self.robot}: no result for goal {goal_id} in {timeout_s:g} s of twin time")
            await self.clock.wait()
        return result

    async def cancel(self, goal_id: str) -> None:
        if not self.runtime.cancel(goal_id):
            return  # not running: finished, refused or never submitted
        end = self.clock.time_s + self.cancel_wait_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cancel_wait_s):
                while self.runtime.result_of(goal_id) is None and self.clock.time_s < end:
                    await self.clock.wait()

    async def feedback(self) -> AsyncIterator[SkillFeedback]:
        return
        yield  # pragma: no cover


def runtime_agents(runtimes: Mapping[str, RobotRuntime], clock: AgentClock) -> dict[str, RobotAgent]:
    """An agent per robot over its in-process runtime (keyed like ``runtimes``), each able to
    hand over to the others."""
    channels = {r: RuntimeChannel(rt, clock) for r, rt in runtimes.items()}
    return {r: ChannelAgent(ch, channels.get) for r, ch in channels.items()}

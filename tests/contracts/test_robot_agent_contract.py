"""One contract, every goal channel under the robot agent (:class:`robots.agent.ChannelAgent`):
the fake of ``robots.testing``, in-process runtimes on a lockstep twin (as rehearsal runs them)
and runtime nodes over ROS 2 (``robots.ros2``). The same checks run on each
(:func:`robots.testing.check_robot_agent`); the last tests show that they fail an agent or a
channel that drifts the way the two copies of the hand-over did."""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# ROS 2 on a domain of this process's own (as tests/robots/conftest.py does), before any node.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
with warnings.catch_warnings():  # rclpy's type support imports the deprecated sre_parse once
    warnings.simplefilter("ignore", DeprecationWarning)
    import rosidl_generator_py  # type: ignore[import-untyped]  # noqa: F401

import robots.agent
from plant.config import PlantDescription
from robots.agent import ChannelAgent, GoalChannel, runtime_agents
from robots.interface import Outcome, SkillGoal, SkillResult
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.testing import FakeGoalChannel, check_robot_agent, make_robot_keys

GIVER, RECEIVER = "ur5e_1", "panda_1"
LOCATION, PART = "handover_point", "blank_al"

Received = Callable[[str], Sequence[SkillGoal]]


def _record(runtimes: Mapping[str, RobotRuntime]) -> dict[str, list[SkillGoal]]:
    """Every goal that reaches each runtime (whichever way it came)."""
    seen: dict[str, list[SkillGoal]] = {r: [] for r in runtimes}
    for r, rt in runtimes.items():

        def submit(goal: SkillGoal, _submit: Any = rt.submit, _seen: list[SkillGoal] = seen[r]) -> tuple[bool, str]:
            _seen.append(goal)
            return _submit(goal)  # type: ignore[no-any-return]

        setattr(rt, "submit", submit)  # noqa: B010
    return seen


def _believes_it_holds(runtime: RobotRuntime) -> None:
    """The runtime believes it holds a part: its hand-over is planned, and no part changes hands
    (every hand-over of the contract is cancelled or fails). Its gripper reports nothing, so the
    runtime keeps its belief instead of reading the (empty) gripper at each goal."""
    runtime.holding = PART
    setattr(runtime.hw, "gripper_holds", lambda: None)  # noqa: B010


def _fake(plant: PlantDescription, duration_s: float = math.inf) -> dict[str, FakeGoalChannel]:
    """Fake channels of the giver and the receiver; a hand-over and a take wait for each other
    (``duration_s``: forever, until cancelled)."""
    waits = {"hand_over": duration_s, "take": duration_s}
    return {r: FakeGoalChannel(r, durations_s=waits, part_types=list(plant.part_types)) for r in (GIVER, RECEIVER)}


@dataclass
class _LockstepClock:
    """The rehearsal's clock: the stepper sets ``tick`` after every batch of ticks."""

    time_s: float = 0.0
    tick: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> None:
        await self.tick.wait()


@asynccontextmanager
async def _twin(plant: PlantDescription) -> AsyncIterator[tuple[ChannelAgent, Received]]:
    """The giver's agent over in-process runtimes stepped in lockstep with a twin."""
    from sim.hardware import LocalPeers, build_runtime
    from sim.twin import Twin

    twin = Twin(plant)
    peers = LocalPeers()
    runtimes = {r: build_runtime(twin, r, peers=peers, checkpoint=None) for r in (GIVER, RECEIVER)}
    peers.runtimes.update(runtimes)
    seen = _record(runtimes)
    _believes_it_holds(runtimes[GIVER])
    clock = _LockstepClock()

    async def step() -> None:
        while True:
            for _ in range(25):
                twin.step(1)
                for rt in runtimes.values():
                    rt.step()
            clock.time_s = twin.time_s
            clock.tick.set()
            clock.tick = asyncio.Event()
            await asyncio.sleep(0)

    stepper = asyncio.create_task(step())
    try:
        agent = runtime_agents(runtimes, clock)[GIVER]
        assert isinstance(agent, ChannelAgent)
        yield agent, seen.__getitem__
    finally:
        stepper.cancel()
        await asyncio.gather(stepper, return_exceptions=True)


@asynccontextmanager
async def _ros2(plant: PlantDescription, state_dir: Path) -> AsyncIterator[tuple[ChannelAgent, Received]]:
    """The giver's agent over ROS 2, to runtime nodes (``robots.ros2.runtime_node``) whose
    runtimes drive a live twin in this process (no drivers: the goal path is what is checked).
    Goals and results are signed with keys made in the test's own state folder."""
    from robots.ros2._host import RosHost
    from robots.ros2.agent import RosRobotAgent
    from robots.ros2.runtime_node import RuntimeNode
    from sim.hardware import LocalPeers, build_runtime
    from sim.live import LiveTwin
    from sim.twin import Twin

    keys = make_robot_keys(state_dir, (GIVER, RECEIVER))
    live = LiveTwin(Twin(plant)).start()
    host = RosHost()
    peers = LocalPeers()
    runtimes: dict[str, RobotRuntime] = {}
    try:
        for r in (GIVER, RECEIVER):
            node = RuntimeNode(host, r, keys)
            runtimes[r] = node.runtime = build_runtime(
                live.twin,
                r,
                live=live,
                peers=peers,
                on_feedback=node.on_feedback,
                on_result=node.on_result,
                checkpoint=None,
                # A shared interpreter (twin, two runtimes, the executor) on a shared machine: a
                # tick late by a second is no fault here (3 s at the 4 ms control period).
                config=RuntimeConfig(state_timeout_periods=750),
            )
        peers.runtimes.update(runtimes)
        seen = _record(runtimes)
        _believes_it_holds(runtimes[GIVER])
        for rt in runtimes.values():
            rt.start()
        agent = RosRobotAgent(host, GIVER, keys)
        assert await agent.wait_ready(20)
        yield agent, seen.__getitem__
    finally:
        for rt in runtimes.values():
            rt.stop()
        live.stop()
        host.close()


@pytest.mark.parametrize("backend", ["fake", "twin", "ros2"])
async def test_every_channel_passes_the_robot_agent_contract(
    backend: str, demo_plant: PlantDescription, tmp_path: Path
) -> None:
    if backend == "fake":
        channels = _fake(demo_plant)
        agent = ChannelAgent(channels[GIVER], channels.get)
        await check_robot_agent(
            agent, RECEIVER, lambda r: channels[r].goals, location=LOCATION, part_type=PART, timeout_s=5
        )
        return
    context = _twin(demo_plant) if backend == "twin" else _ros2(demo_plant, tmp_path)
    async with context as (agent, received):
        await check_robot_agent(agent, RECEIVER, received, location=LOCATION, part_type=PART, timeout_s=20)


async def test_a_hand_over_both_sides_finish_succeeds(demo_plant: PlantDescription) -> None:
    channels = _fake(demo_plant, duration_s=0.02)
    agent = ChannelAgent(channels[GIVER], channels.get)
    res = await agent.run_skill(SkillGoal("h", GIVER, "hand_over", {"to_robot": RECEIVER, "location": LOCATION}))
    assert res.outcome == Outcome.SUCCEEDED, res
    assert [g.skill for g in channels[RECEIVER].goals] == ["take"]
    assert channels[RECEIVER].goals[0].args["part_type"] == ""  # the plan named none: the receiver's default


# -- Divergent agents and channels: the contract must catch each.


class _NoRobotCheck(ChannelAgent):
    """The in-process agent of before: it sent any goal to its runtime."""

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        if goal.robot == self.name:
            return await super().run_skill(goal, timeout_s)
        await self.channel.submit(goal)
        return await self.channel.result(goal.goal_id, timeout_s)


class _GatherBoth(ChannelAgent):
    """The ROS 2 agent of before: it waited for the giver even after the take had failed."""

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        if goal.skill != "hand_over":
            return await super().run_skill(goal, timeout_s)
        peer = self.peer(str(goal.args["to_robot"]))
        assert peer is not None

        async def one(channel: GoalChannel, g: SkillGoal) -> SkillResult:
            try:
                await channel.submit(g)
                return await channel.result(g.goal_id, timeout_s)
            except asyncio.CancelledError:
                await channel.cancel(g.goal_id)
                raise

        give, took = await asyncio.gather(one(self.channel, goal), one(peer, robots.agent.take_goal(goal)))
        return took if took.outcome != Outcome.SUCCEEDED else give


class _NoTake(ChannelAgent):
    """An agent that forgot the receiver: a hand-over is just the giver's skill."""

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        return await super().run_skill(SkillGoal(goal.goal_id, goal.robot, goal.skill, {}), timeout_s)


class _DeafToCancel(FakeGoalChannel):
    """A channel whose cancel never reaches the robot."""

    async def cancel(self, goal_id: str) -> None:
        self.cancels.append(goal_id)


def _drop_part_type(goal: SkillGoal) -> SkillGoal:  # the in-process take of before
    take = _TAKE_GOAL(goal)
    return SkillGoal(take.goal_id, take.robot, take.skill, {k: v for k, v in take.args.items() if k != "part_type"})


_TAKE_GOAL = robots.agent.take_goal

DIVERGENCES: dict[str, tuple[type[ChannelAgent], type[FakeGoalChannel], bool, str]] = {
    # name: (agent class, channel class, take_goal drops part_type, what the check says)
    "sends-foreign-goals": (_NoRobotCheck, FakeGoalChannel, False, "reached ur5e_1's runtime"),
    "drops-part-type": (ChannelAgent, FakeGoalChannel, True, "the take goal has part_type=None"),
    "waits-for-giver-after-failed-take": (_GatherBoth, FakeGoalChannel, False, "did not end within"),
    "no-take": (_NoTake, FakeGoalChannel, False, "sent panda_1 no take goal"),
    "cancel-ignored": (ChannelAgent, _DeafToCancel, False, "never ended"),
}


@pytest.mark.parametrize("divergence", list(DIVERGENCES))
async def test_the_contract_catches_a_divergent_agent(
    divergence: str, demo_plant: PlantDescription, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_cls, channel_cls, drop, message = DIVERGENCES[divergence]
    if drop:
        monkeypatch.setattr(robots.agent, "take_goal", _drop_part_type)
    waits = {"hand_over": math.inf, "take": math.inf}
    channels = {r: channel_cls(r, durations_s=waits, part_types=list(demo_plant.part_types)) for r in (GIVER, RECEIVER)}
    agent = agent_cls(channels[GIVER], channels.get)
    with pytest.raises(AssertionError, match=message):
        await check_robot_agent(
            agent, RECEIVER, lambda r: channels[r].goals, location=LOCATION, part_type=PART, timeout_s=1
        )

"""Fakes for tests of the coordinator before (and beside) the real agents.

:class:`FakeMachine` implements :class:`~plant.interface.MachineAgent` over the real PackML
model (:class:`~plant.packml.MachineStateModel`), with time running ``speed`` times faster than
the wall clock; :class:`FakeRobot` implements :class:`~robots.interface.RobotAgent` and
follows a script of outcomes. They are fakes beside real tests: the whole-loop test runs the
twin's agents over the real protocols.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llm_coordinator.rehearsal import TwinFactory
from plant.commands import wait_until
from plant.config import PlantDescription
from plant.interface import CommandRejected, MachineStatus, TagError, TagValue
from plant.packml import Command, CommandRefused, MachineStateModel, State
from plant.skills import SKILLS
from robots.interface import Outcome, SkillFeedback, SkillGoal, SkillResult


class FakeMachine:
    """A machine agent over the PackML model; ``fault_on_start`` makes the next cycles abort."""

    def __init__(self, plant: PlantDescription, name: str, speed: float = 50.0) -> None:
        m = plant.machines[name]
        self.name = name
        self.speed = speed
        self.model = MachineStateModel(
            cycle_time_s=m.cycle_time_s if m.kind != "conveyor" else 3.0,
            has_door=m.has_door,
            state=State.IDLE,
        )
        self.tags: dict[str, TagValue] = {"program": 0, "result": 1}
        self.commands: list[Command | int] = []
        self.fault_on_start = 0
        self._seq = 0
        self._last = time.monotonic()

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last = (now - self._last) * self.speed, now
        while dt > 0:
            self.model.tick(min(dt, 0.05))
            dt -= 0.05

    async def connect(self) -> None:
        """Nothing to connect."""

    async def disconnect(self) -> None:
        """Nothing to disconnect."""

    async def read(self, tag: str) -> TagValue:
        """A tag of the fake's small tag set."""
        self._advance()
        if tag not in self.tags:
            raise TagError(self.name, tag, "no such tag")
        return self.tags[tag]

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        """Several tags."""
        return {t: await self.read(t) for t in tags}

    async def write(self, tag: str, value: TagValue) -> None:
        """Write a tag of the fake's small tag set."""
        if tag not in self.tags:
            raise TagError(self.name, tag, "no such tag")
        self.tags[tag] = value

    async def status(self) -> MachineStatus:
        """State, counters, fault and door."""
        self._advance()
        m = self.model
        return MachineStatus(
            state=m.state,
            cycle_count=m.cycle_count,
            part_count=m.part_count,
            fault_code=m.fault_code,
            fault_text=m.fault_text,
            door_closed=m.door_closed if m.has_door else None,
            command_ack=self._seq,
        )

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        """Apply a command to the PackML model (refusals raise :class:`CommandRejected`)."""
        self._advance()
        self._seq += 1
        self.commands.append(command)
        try:
            self.model.command(command)
        except CommandRefused as exc:
            raise CommandRejected(self.name, command, exc.reason) from None
        if command == Command.START and self.fault_on_start > 0:
            self.fault_on_start -= 1
            self.model.fault(42, "spindle overload (injected by the test)")
        return await self.status()

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        """Poll until the state is one of ``states`` (``timeout_s`` in wall-clock seconds)."""
        try:
            return await wait_until(self, lambda st: st.state in states, timeout_s, period_s=0.01)
        except TimeoutError as exc:
            raise TimeoutError(f"{self.name} stayed {exc.args[0].state.name}") from None


@dataclass
class FakeRobot:
    """A robot agent that succeeds after ``speed``-times-faster nominal durations, except where
    ``failures`` (skill -> number of failures to give) says otherwise."""

    name: str
    speed: float = 50.0
    failures: dict[str, int] = field(default_factory=dict)
    goals: list[SkillGoal] = field(default_factory=list)

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        """Pretend to perform the skill."""
        self.goals.append(goal)
        spec = SKILLS.get(goal.skill)  # the robots' own "take" (receiving a hand-over) is not a plan skill
        duration = (spec.nominal_duration_s if spec else 8.0) / self.speed
        await asyncio.sleep(duration)
        if self.failures.get(goal.skill, 0) > 0:
            self.failures[goal.skill] -= 1
            return SkillResult(goal.goal_id, Outcome.FAILED, "gripper closed on nothing (injected)", duration)
        return SkillResult(goal.goal_id, Outcome.SUCCEEDED, "", duration)

    async def feedback(self) -> AsyncIterator[SkillFeedback]:
        """No feedback from a fake."""
        return
        yield  # pragma: no cover


def fake_agents(plant: PlantDescription, speed: float = 50.0) -> tuple[dict[str, FakeMachine], dict[str, FakeRobot]]:
    """A fake for every machine and robot of a plant."""
    return (
        {n: FakeMachine(plant, n, speed) for n in plant.machines},
        {n: FakeRobot(n, speed) for n in plant.robots},
    )


def goal_script(answers: Mapping[str, str | None]) -> object:
    """A script function for :class:`~llm_coordinator.backends.scripted.ScriptedBackend` that
    answers by question (``schema_name`` is not passed to functions, so this keys on the schema's
    top-level property: ``goal``, ``tasks`` or ``steps``)."""

    def script(messages: object, schema: Mapping[str, object]) -> str | None:
        props = schema.get("properties", {})
        key = next(iter(props)) if isinstance(props, dict) and props else ""
        return answers.get(str(key))

    return script


@dataclass
class FakeTwinSession:
    """A rehearsal session over fakes (for tests of the pipeline before the twin is wired)."""

    machines: dict[str, FakeMachine]
    robots: dict[str, FakeRobot]
    collisions: list[str] = field(default_factory=list)
    safety_stops: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    closest_m: float = math.inf  # (fakes track nobody)
    closest_protective_m: float = 0.0
    closest_at: str = ""

    def time_s(self) -> float:
        """Fakes run on the wall clock."""
        return time.monotonic()

    async def finish(self, out_dir: Path) -> None:
        """Fakes render nothing."""


def fake_twin_factory(speed: float = 50.0) -> TwinFactory:
    """A :data:`~llm_coordinator.rehearsal.TwinFactory` that builds fresh fakes for each rehearsal."""

    @asynccontextmanager
    async def factory(plant: PlantDescription) -> AsyncIterator[FakeTwinSession]:
        machines, robots = fake_agents(plant, speed)
        yield FakeTwinSession(machines, robots)

    return factory

"""Wiring of the console: the live twin as the plant, the robots' e-stop latches, the backend.

This is the one console module that imports ``sim`` (like the CLI): it reads snapshots of a
:class:`~sim.live.LiveTwin` into the :class:`~.services.PlantFeed`, and it supplies the step
runner that carries out an approved plan's steps on the twin until the coordinator's executor
takes that over.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from fastapi import FastAPI

from plant.config import PlantDescription
from plant.packml import Command, CommandRefused, State
from sim._types import FloatArray
from sim.live import LiveTwin
from sim.twin import Twin

from .app import create_app
from .auth import UserStore, make_engine
from .services import (
    EstopPort,
    MachineView,
    PartView,
    PersonView,
    PlantFeed,
    PlantSnapshot,
    RobotView,
    SafetyState,
    StepView,
)
from .testing import ScriptedBackend

#: Robot status beyond the twin's physics: (skill being performed or None, safety state).
RobotStatus = Callable[[str], tuple[str | None, SafetyState]]


def twin_snapshot(twin: Twin, estops: EstopPort | None = None, status: RobotStatus | None = None) -> PlantSnapshot:
    """A :class:`PlantSnapshot` of the twin now. Call on the twin's thread or under its lock.

    Costs about 0.2 ms for the demo cell (two arms, three machines), so a listener may take one
    every few ticks.
    """
    plant = twin.plant
    machines = []
    for name, tm in twin.machines.items():
        sm = tm.state_model
        machines.append(
            MachineView(
                name=name,
                kind=tm.kind,
                state=sm.state.name,
                cycle_count=sm.cycle_count,
                part_count=sm.part_count,
                fault_code=sm.fault_code,
                fault_text=sm.fault_text,
                door_closed=sm.door_closed if sm.has_door else None,
            )
        )
    robots = []
    for name in twin.robot_names():
        latched, reason = estops.state(name) if estops is not None else (False, "")
        skill, safety = status(name) if status is not None else (None, "ok")
        tool = twin.tool_position(name)
        robots.append(
            RobotView(
                name=name,
                model=plant.robots[name].model,
                skill=skill,
                joints_rad=[round(float(q), 4) for q in twin.joint_positions(name)],
                joint_speeds_rad_s=[round(float(v), 4) for v in twin.joint_velocities(name)],
                tool_xyz_m=(round(float(tool[0]), 4), round(float(tool[1]), 4), round(float(tool[2]), 4)),
                safety="estop" if latched else safety,
                estop=latched,
                estop_reason=reason,
            )
        )
    people = [
        PersonView(name=n, x_m=round(x, 3), y_m=round(y, 3), speed_m_s=round(v, 2))
        for n, (x, y, v) in twin.people_positions().items()
    ]
    parts = [
        PartView(name=n, xyz_m=(round(x, 3), round(y, 3), round(z, 3)))
        for n, (x, y, z) in twin.part_positions().items()
    ]
    return PlantSnapshot(
        time_s=round(twin.time_s, 3), wall_s=time.time(), machines=machines, robots=robots, people=people, parts=parts
    )


@dataclass
class TwinFeed:
    """Publishes a twin snapshot to ``feed`` every ``period_s`` of twin time, from the twin's
    own thread (a listener of the :class:`LiveTwin`); :meth:`poke` publishes one at once."""

    live: LiveTwin
    feed: PlantFeed
    estops: EstopPort | None = None
    status: RobotStatus | None = None
    period_s: float = 0.05
    _attached: bool = field(default=False, init=False)

    def _on_tick(self, twin: Twin) -> None:
        self.feed.publish(twin_snapshot(twin, self.estops, self.status))

    def attach(self) -> TwinFeed:
        """Start publishing (safe to call once)."""
        if not self._attached:
            every = max(1, round(self.period_s / self.live.twin.config.ctrl_dt_s))
            self.live.add_listener(self._on_tick, every_ticks=every, name="console-feed")
            self._attached = True
            self.poke()
        return self

    def detach(self) -> None:
        """Stop publishing."""
        self.live.remove_listener(self._on_tick)
        self._attached = False

    def poke(self) -> None:
        """Publish a snapshot now (after an e-stop or a skill change), from any thread."""
        self.feed.publish(self.live.read(lambda t: twin_snapshot(t, self.estops, self.status)))


class LatchEstops:
    """The robots' persistent e-stop latches (``robots.safety.EstopLatch``), one file per robot
    in ``folder``; a robot's on-board safety supervisor reads the same file."""

    def __init__(self, folder: Path, robots: list[str], reread_s: float = 0.2) -> None:
        from robots.safety import EstopLatch

        folder.mkdir(parents=True, exist_ok=True)
        self._latches = {r: EstopLatch(folder / f"estop-{r}.json") for r in robots}
        self._read_at = dict.fromkeys(robots, time.monotonic())
        self.reread_s = reread_s

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason); the file is re-read at most every ``reread_s`` (another process,
        the operator's command line, may change it)."""
        latch = self._latches[robot]
        now = time.monotonic()
        if now - self._read_at[robot] >= self.reread_s:
            latch.refresh()
            self._read_at[robot] = now
        tripped = latch.tripped
        return tripped, latch.reason if tripped else ""

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Latch one robot's e-stop."""
        self._latches[robot].trip(reason, source)

    def reset(self, robot: str, operator: str) -> None:
        """The operator's reset."""
        self._latches[robot].reset(operator)


def _set_targets(twin: Twin, robot: str, q: FloatArray) -> None:
    twin.set_joint_targets(robot, q)


class TwinStepRunner:
    """Carries out one plan step on the live twin (an interim executor for the console's demo).

    Machine skills become PackML commands and waits on the machine's state; robot skills swing
    the arm out from home and back over the step's duration, held still while its e-stop is
    latched. ``time_scale`` < 1 shortens robot motions (tests).
    """

    def __init__(self, live: LiveTwin, estops: EstopPort, time_scale: float = 1.0, timeout_s: float = 60.0) -> None:
        self.live = live
        self.estops = estops
        self.time_scale = time_scale
        self.timeout_s = timeout_s
        self.plant: PlantDescription = live.twin.plant

    async def _do(self, fn: Callable[[Twin], object]) -> object:
        return await asyncio.wrap_future(self.live.submit(fn))

    async def _state(self, machine: str) -> tuple[State, bool]:
        return self.live.read(lambda t: (t.machines[machine].state, t.machines[machine].state_model.door_closed))

    async def _command(self, machine: str, cmd: Command) -> None:
        await self._do(lambda t: t.machines[machine].command(cmd))

    async def _wait(self, machine: str, pred: Callable[[State, bool], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state, door = await self._state(machine)
            if pred(state, door):
                return True
            if state in (State.ABORTED, State.ABORTING):
                return False
            await asyncio.sleep(0.02)
        return False

    async def _ready(self, machine: str) -> bool:
        state, _ = await self._state(machine)
        if state in (State.STOPPED, State.COMPLETE, State.ABORTED):
            if state == State.ABORTED:
                await self._command(machine, Command.CLEAR)
                await self._wait(machine, lambda s, d: s == State.STOPPED, 5.0)
            await self._command(machine, Command.RESET)
        return await self._wait(machine, lambda s, d: s == State.IDLE, 5.0)

    async def _machine(self, step: StepView) -> bool:
        m, skill = step.agent, step.skill
        if skill in ("open_door", "close_door"):
            closed = skill == "close_door"
            await self._command(m, Command.CLOSE_DOOR if closed else Command.OPEN_DOOR)
            return await self._wait(m, lambda s, d: d == closed, 5.0)
        if skill == "reset":
            return await self._ready(m)
        if not await self._ready(m):
            return False
        if skill == "run_cycle" and "program" in step.args:
            program = step.args["program"]
            if not isinstance(program, int | float) or isinstance(program, bool):
                return False
        await self._command(m, Command.START)
        cycle = self.plant.machines[m].cycle_time_s
        return await self._wait(m, lambda s, d: s == State.COMPLETE, cycle + 10.0)

    async def _robot(self, step: StepView) -> bool:
        r = step.agent
        home = np.asarray(self.plant.robots[r].home())
        offset = np.zeros_like(home)
        offset[0] = 0.5 if step.skill not in ("home",) else 0.0
        offset[1] = 0.2 if step.skill not in ("home",) else 0.0
        duration = max(0.5, (step.duration_s or 4.0) * self.time_scale)
        t, dt = 0.0, 0.05
        while t < duration:
            if self.estops.state(r)[0]:
                # The twin holds a latched arm (hold_on_estop); wait here for the reset.
                await asyncio.sleep(0.05)
                continue
            s = math.sin(math.pi * t / duration)  # out and back, zero speed at both ends
            target: FloatArray = home + s * offset
            await self._do(partial(_set_targets, robot=r, q=target))
            await asyncio.sleep(dt)
            t += dt
        await self._do(partial(_set_targets, robot=r, q=home))
        return True

    async def __call__(self, step: StepView) -> bool:
        """Run the step; True when it finished as expected."""
        try:
            if step.agent in self.plant.machines:
                return await asyncio.wait_for(self._machine(step), self.timeout_s)
            return await asyncio.wait_for(self._robot(step), self.timeout_s)
        except (CommandRefused, TimeoutError):
            return False


def hold_on_estop(live: LiveTwin, estops: EstopPort) -> Callable[[Twin], None]:
    """A twin listener that holds every latched robot where it is (the twin's stand-in for the
    robot's own safety supervisor, which stops the real arm)."""
    held: dict[str, FloatArray] = {}

    def listener(twin: Twin) -> None:
        for r in twin.robot_names():
            if estops.state(r)[0]:
                if r not in held:
                    held[r] = twin.joint_positions(r)
                twin.set_joint_targets(r, held[r])
            else:
                held.pop(r, None)

    return listener


@dataclass
class ConsoleSite:
    """Everything ``atelier console`` runs: the app, the live twin and the feed publisher."""

    app: FastAPI
    live: LiveTwin
    backend: ScriptedBackend
    feed: TwinFeed

    def start(self) -> None:
        """Start the twin's thread and the feed."""
        self.live.start()
        self.feed.attach()

    def stop(self) -> None:
        """Stop publishing and stop the twin."""
        self.feed.detach()
        self.live.stop()


def build_site(
    plant: PlantDescription,
    db_url: str,
    state_dir: Path,
    *,
    twin_speed: float = 1.0,
    step_time_scale: float = 1.0,
    session_ttl_s: float = 8 * 3600.0,
    stage_delay_s: float = 0.5,
    secure_cookies: bool = False,
) -> ConsoleSite:
    """The console over a live twin of ``plant``: users in ``db_url``, e-stop latches in
    ``state_dir``. Call :meth:`ConsoleSite.start` before serving.

    Plans come from the scripted backend until the coordinator's store and planner are wired
    here (see :mod:`.services`).
    """
    live = LiveTwin(Twin(plant), speed=twin_speed)
    estops = LatchEstops(state_dir / "estop", list(plant.robots))
    feed = PlantFeed()
    runner = TwinStepRunner(live, estops, time_scale=step_time_scale)
    backend = ScriptedBackend(plant, feed=feed, stage_delay_s=stage_delay_s, step_runner=runner, estops=estops)

    def status(robot: str) -> tuple[str | None, SafetyState]:
        return backend.robot_skills.get(robot), "ok"

    publisher = TwinFeed(live, feed, estops, status)
    backend.on_change = publisher.poke
    live.add_listener(hold_on_estop(live, estops), every_ticks=5, name="console-estop-hold")
    users = UserStore(make_engine(db_url), ttl_s=session_ttl_s)
    app = create_app(backend, users, secure_cookies=secure_cookies)
    return ConsoleSite(app, live, backend, publisher)

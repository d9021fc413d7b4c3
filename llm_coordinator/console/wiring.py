"""Wiring of the console: the coordinator, the plant and its agents, the feed. Two plants:

- **live** (:func:`build_live_site`): a served plant, ``atelier twin serve`` or a real one, with
  the agents of ``atelier order --live`` (:func:`llm_coordinator.wiring.live_agents`: machines
  over OPC-UA and Modbus, each robot through its own runtime over ROS 2) on an event loop of
  their own (:class:`LivePlant`). The plant view is built from the machines' statuses (polled)
  and the robots' joint states, safety events and goal statuses
  (:class:`robots.ros2.watch.RobotWatcher`). E-stops trip through the runtimes' ``estop``
  services and reset with the operator's signed request, as ``atelier robot estop`` and
  ``estop-reset`` do. Rehearsals start from what the agents read
  (:meth:`sim.twin.Twin.apply_readings`).
- **twin** (:func:`build_site`): the console's own :class:`~sim.live.LiveTwin`, for engineers
  with no plant: its machine agents work under the twin's lock and its robots are their own
  runtimes with safety supervisors (:class:`~llm_coordinator.wiring.LiveTwinPlant`).
  Rehearsals start from the twin's captured state.

In both, a plan whose picks find no part where the parts are now is refused before its
rehearsal, with the reason (:func:`robots.parts.missing_parts`), and every page says which
plant the console drives (:attr:`~.services.PlantFeed.mode`).

This is the one console module that imports ``sim`` (like the CLI).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI

from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.plan import Plan
from llm_coordinator.rehearsal import RehearsalReport, TwinObservations
from llm_coordinator.snapshot import PlantSnapshot, read_snapshot
from llm_coordinator.wiring import (
    LiveTwinPlant,
    ProcessRehearser,
    build_coordinator,
    build_executor,
    live_agents,
    twin_factory,
)
from plant.aio import close_loop
from plant.config import PlantDescription
from plant.interface import (
    ConnectError,
    ConnectionEvent,
    ConnectionEvents,
    MachineAgent,
    MachineError,
    MachineStatus,
    TagValue,
)
from plant.packml import Command, State
from plant.text import safe_text
from robots.interface import RobotAgent, SafetyState, SkillFeedback, SkillGoal, SkillResult
from robots.parts import missing_parts
from sim.live import LiveTwin
from sim.twin import MachineReading, PlantReadings, Twin

from .app import create_app
from .auth import UserStore, make_engine
from .coordinator_backend import CoordinatorBackend
from .services import (
    ActionRefused,
    EstopPort,
    MachineView,
    PartView,
    PersonView,
    PlantFeed,
    PlantView,
    RobotView,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Robot status beyond the twin's physics: (skill being performed or None, safety state).
RobotStatus = Callable[[str], tuple[str | None, SafetyState]]


def twin_view(twin: Twin, estops: EstopPort | None = None, status: RobotStatus | None = None) -> PlantView:
    """A :class:`PlantView` of the twin now. Call on the twin's thread or under its lock.

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
    return PlantView(
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
        self.feed.publish(twin_view(twin, self.estops, self.status))

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
        self.feed.publish(self.live.read(lambda t: twin_view(t, self.estops, self.status)))


# --------------------------------------------------------------------------- rehearsal from now

#: The parts of the plant now, by name (m, cell frame); a part left out is not in the cell.
PartsNow = Callable[[], Mapping[str, tuple[float, float, float]]]


class RehearsalFromNow(ProcessRehearser):
    """Rehearses in a worker process from the plant as it is now (``start``: the live twin's
    captured state, or what a live plant's agents read), and refuses at once a plan whose picks
    would find no part where the parts are now (``parts``), saying which pick, what it needs and
    where the parts are (:func:`robots.parts.missing_parts`): after runs have used the parts, a
    rehearsal would otherwise fail on a conveyor that never delivers or a pick that finds
    nothing, with a reason that does not say so. ``hint`` ends that refusal (how to get parts)."""

    def __init__(
        self,
        plant: PlantDescription,
        timeout_margin: float,
        render: bool,
        start: Callable[[], object],
        parts: PartsNow,
        hint: str = "",
    ) -> None:
        super().__init__(plant, twin_factory, timeout_margin, render=render, start=start)
        self.parts = parts
        self.hint = hint

    async def rehearse(self, plan: Plan, out_dir: Path | str) -> RehearsalReport:
        parts = dict(await asyncio.to_thread(self.parts))
        steps = [(s.id, s.agent, s.skill, dict(s.args)) for s in plan.steps]
        missing = missing_parts(self.plant, parts, steps)
        if missing:
            reason = "not rehearsed: " + "; ".join(missing) + self.hint
            return RehearsalReport(False, 0.0, reason, [], TwinObservations(), [], 0.0)
        report = await super().rehearse(plan, out_dir)
        if not report.ok:
            report.reason += occupied_hint(self.plant, plan, report, parts)
        return report


def occupied_hint(
    plant: PlantDescription, plan: Plan, report: RehearsalReport, parts: Mapping[str, tuple[float, float, float]]
) -> str:
    """What to add to the reason of a rehearsal that failed placing a part where parts already
    lay when it started (after runs, the demo cell's output bin holds the sorted parts right where
    the place skill lowers the next one, and its arm stops on them): which parts, or ""."""
    failed = next((s for s in report.steps if s.get("status") == "failed"), None)
    step = next((s for s in plan.steps if failed is not None and s.id == failed.get("step")), None)
    if step is None or step.skill not in ("place", "hand_over"):
        return ""
    location = str(step.args.get("location", ""))
    pose = plant.locations().get(location)
    if pose is None:
        return ""
    there = sorted(n for n, p in parts.items() if float(np.linalg.norm(np.subtract(p, pose.xyz_m))) <= _OCCUPIED_M)
    if not there:
        return ""
    return (
        f" ({location} already held {', '.join(there)} when the rehearsal started: the {step.skill} lowers the "
        "part onto what lies there; empty it and order again)"
    )


#: How near a location (m) a part lies for :func:`occupied_hint` to name it (the bins of the
#: demo cell are 0.3 m by 0.4 m).
_OCCUPIED_M = 0.2


def _rehearse_from_now(
    coordinator: Coordinator,
    cfg: CoordinatorConfig,
    render: bool,
    start: Callable[[], object],
    parts: PartsNow,
    hint: str,
) -> None:
    """Give ``coordinator`` a :class:`RehearsalFromNow` in place of its own rehearser (none
    started yet: the worker process starts on the first rehearsal)."""
    coordinator.rehearser = RehearsalFromNow(
        coordinator.plant, cfg.step_timeout_margin, render, start=start, parts=parts, hint=hint
    )
    if coordinator.many is not None:
        coordinator.many.start = start  # (perturbed from where the plant is now, too)


# --------------------------------------------------------------------------- the console's own twin


@dataclass
class ConsoleSite:
    """Everything ``atelier console --twin`` runs: the app over the coordinator's backend, the
    console's own live twin, the agents that drive it (the robots' runtimes with their safety
    supervisors) and the feed publisher."""

    app: FastAPI
    live: LiveTwin
    backend: CoordinatorBackend
    feed: TwinFeed
    plant_agents: LiveTwinPlant

    def start(self) -> None:
        """Start the twin's thread, the robots' control loops and the feed (outside any event loop)."""
        self.live.start()
        self.plant_agents.start()
        self.feed.attach()

    def stop(self) -> None:
        """Stop publishing, the robots and the twin; close the database."""
        self.feed.detach()
        self.plant_agents.stop()
        self.live.stop()
        _close(self.backend)


def _close(backend: CoordinatorBackend) -> None:
    rehearser = backend.coordinator.rehearser
    if isinstance(rehearser, ProcessRehearser):
        rehearser.close()
    backend.store.engine.dispose()


def _console(
    plant: PlantDescription,
    db_url: str,
    coordinator: Coordinator,
    cfg: CoordinatorConfig,
    machines: Mapping[str, MachineAgent],
    robots: Mapping[str, RobotAgent],
    estops: EstopPort,
    feed: PlantFeed,
    *,
    session_ttl_s: float,
    secure_cookies: bool,
) -> tuple[CoordinatorBackend, FastAPI]:
    """The console's backend and app over the coordinator and these agents (one assembly for
    both plants). A failed step pauses the plan and drafts a recovery, which goes through the
    rules, a rehearsal and an approval like any plan (it appears in the queue)."""
    executor = build_executor(coordinator, machines, robots, cfg)

    async def state() -> PlantSnapshot:
        return await read_snapshot(machines)

    backend = CoordinatorBackend(
        plant, coordinator.store, coordinator.gate, coordinator, estops, executor=executor, feed=feed, state=state
    )
    users = UserStore(make_engine(db_url), ttl_s=session_ttl_s)
    return backend, create_app(backend, users, secure_cookies=secure_cookies)


#: What the refusal of a plan with no part to pick adds, per plant.
_TWIN_HINT = " (this is the console's own twin: restart `atelier console --twin` to start it afresh)"
_LIVE_HINT = ""


def build_site(
    plant: PlantDescription,
    db_url: str,
    state_dir: Path,
    *,
    config: CoordinatorConfig | None = None,
    twin_speed: float = 1.0,
    session_ttl_s: float = 8 * 3600.0,
    secure_cookies: bool = False,
    evidence_dir: Path | None = None,
    render_rehearsals: bool = True,
) -> ConsoleSite:
    """The console over the coordinator and its own live twin of ``plant`` (``atelier console
    --twin``: nothing real moves).

    One database (``db_url``) holds the users, the plans and the audit log, as for the CLI
    (``config.database_url`` is replaced by it). Plans come from the coordinator built as for
    ``atelier order`` (the configured model, the guardrails, rehearsal in a worker process in a
    twin that starts from the live twin's state, with evidence under ``evidence_dir``, default
    ``state_dir/evidence``), and approved plans run on the live twin through the same executor,
    machine agents and robot runtimes. The robots' e-stop latches are the files of ``atelier
    robot`` in ``state_dir``. Call :meth:`ConsoleSite.start` before serving.
    """
    cfg = (config or CoordinatorConfig()).model_copy(update={"database_url": db_url})
    evidence = evidence_dir if evidence_dir is not None else state_dir / "evidence"
    coordinator = build_coordinator(plant, cfg, evidence_dir=evidence, render=render_rehearsals, isolated=True)
    live = LiveTwin(Twin(plant), speed=twin_speed)
    if isinstance(coordinator.rehearser, ProcessRehearser):
        # Rehearse from the plant as it is now: parts, doors, machine states, robots.
        _rehearse_from_now(
            coordinator,
            cfg,
            render_rehearsals,
            start=partial(live.read, Twin.capture),
            parts=partial(live.read, Twin.part_positions),
            hint=_TWIN_HINT,
        )
    agents = LiveTwinPlant(live, state_dir)
    feed = PlantFeed("twin", f"the console's own twin of {plant.name}, at {twin_speed:g}x real time")
    backend, app = _console(
        plant,
        db_url,
        coordinator,
        cfg,
        agents.machines,
        agents.robots,
        agents,
        feed,
        session_ttl_s=session_ttl_s,
        secure_cookies=secure_cookies,
    )
    publisher = TwinFeed(live, feed, agents, agents.status)
    backend.on_change = publisher.poke
    return ConsoleSite(app, live, backend, publisher, agents)


# --------------------------------------------------------------------------- a live plant


class _PlantLoop:
    """An event loop on a thread of its own, where the agents of a live plant live: an asyncua or
    pymodbus client belongs to the loop that connected it, whatever loop the web server (or a
    test's client) runs. :meth:`call` blocks a thread for a coroutine run there; :meth:`run`
    awaits one from another loop (cancelling the waiter cancels it there)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            close_loop(self.loop)

    def start(self) -> None:
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)


class _MachineOnLoop:
    """A network machine agent that lives on a :class:`_PlantLoop`, usable from any event loop:
    each call runs there (about 0.1 ms more a call). Implements ``MachineAgent`` and
    ``ConnectionEvents``. The :class:`LivePlant` connects the agent and hands it over when it
    starts (:attr:`agent`); before, every call raises :class:`~plant.interface.ConnectError`."""

    def __init__(self, name: str, loop: _PlantLoop) -> None:
        self.name = name
        self.agent: MachineAgent | None = None
        self._loop = loop

    def _live(self) -> MachineAgent:
        if self.agent is None:
            raise ConnectError(self.name, "not connected (the console's live plant has not started)")
        return self.agent

    async def connect(self) -> None:
        """Connected by the live plant."""

    async def disconnect(self) -> None:
        """Disconnected by the live plant when it stops."""

    async def read(self, tag: str) -> TagValue:
        return await self._loop.run(self._live().read(tag))

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        return await self._loop.run(self._live().read_many(tags))

    async def write(self, tag: str, value: TagValue) -> None:
        await self._loop.run(self._live().write(tag, value))

    async def status(self) -> MachineStatus:
        return await self._loop.run(self._live().status())

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        return await self._loop.run(self._live().command(command, timeout_s))

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        return await self._loop.run(self._live().wait_for_state(states, timeout_s))

    @property
    def connected(self) -> bool:
        return self.agent is not None and (not isinstance(self.agent, ConnectionEvents) or self.agent.connected)

    @property
    def connection_events(self) -> list[ConnectionEvent]:
        return self.agent.connection_events if isinstance(self.agent, ConnectionEvents) else []

    def add_event_listener(self, fn: Callable[[ConnectionEvent], None]) -> None:
        if isinstance(self.agent, ConnectionEvents):
            self.agent.add_event_listener(fn)


class _RobotOnceStarted:
    """A robot's agent once the :class:`LivePlant` started and found its runtime (:attr:`agent`,
    a ROS 2 agent, usable from any loop). Until then, and for a robot whose runtime the console
    was not told to wait for, a skill fails with the reason."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.agent: RobotAgent | None = None

    def _live(self) -> RobotAgent:
        if self.agent is None:
            raise RuntimeError(
                f"the console has no agent for {self.name}: its runtime was not among the robots the "
                "console waited for when it started (atelier console --live --robot NAME)"
            )
        return self.agent

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        return await self._live().run_skill(goal, timeout_s)

    def feedback(self) -> AsyncIterator[SkillFeedback]:
        return self._live().feedback()


@dataclass
class _MachineNow:
    """A machine as last polled: its status (None before the first read) and whether the last
    read reached it (with the error if not)."""

    status: MachineStatus | None = None
    connected: bool = False
    error: str = ""


class LivePlant:
    """The console's plant when it is a served one: ``atelier twin serve`` or a real plant.

    Its agents are those of ``atelier order --live`` (:func:`~llm_coordinator.wiring.live_agents`;
    ``robots``: the robots whose runtimes must answer, default all), on an event loop of their
    own (:class:`_PlantLoop`); :attr:`machines` reach them from any loop, :attr:`robots` are the
    ROS 2 robot agents. Each machine's status is read every ``poll_s`` (the agents follow
    ``state`` and ``command_ack`` by subscription for their own waits; a status has counters,
    door, fault and alarms too, so it is read whole, 10 times a second by default). Each
    robot is watched over ROS 2 (:class:`~robots.ros2.watch.RobotWatcher`), and the cell's people
    and parts (:class:`~robots.ros2.watch.CellWatcher`). The view goes to ``feed`` every
    ``publish_s`` and at once after a machine changes, a safety event or a skill change.

    It is also the console's e-stop port: a trip goes through the robot runtime's ``estop``
    service (the latch file in ``state_dir`` when no runtime answers, as ``atelier robot estop``
    does); a reset is the operator's request signed with the robot's reset key from
    ``<state_dir>/trust`` (:class:`~robots.ros2.runtime_node.EstopResetClient`, the path of
    ``atelier robot estop-reset``; the latch file when no runtime listens). A robot's e-stop state
    is what its runtime reported, or its latch file while its runtime has not spoken.
    """

    def __init__(
        self,
        plant: PlantDescription,
        state_dir: Path,
        feed: PlantFeed,
        *,
        robots: Sequence[str] | None = None,
        domain_id: int | None = None,
        poll_s: float = 0.1,
        publish_s: float = 0.1,
        ready_timeout_s: float = 30.0,
    ) -> None:
        from plant.catalog import ROBOT_MODELS
        from robots.safety import EstopLatch, latch_file
        from sim.hardware import arm_kinematics, compile_model

        unknown = [r for r in robots or () if r not in plant.robots]
        if unknown:
            raise ValueError(f"no robot {', '.join(unknown)} in plant {plant.name}; it has {', '.join(plant.robots)}")
        self.plant = plant
        self.state_dir = state_dir
        self.feed = feed
        self.robot_names = list(robots) if robots is not None else list(plant.robots)
        self.domain_id = domain_id
        self.poll_s = poll_s
        self.publish_s = publish_s
        self.ready_timeout_s = ready_timeout_s
        self._loop = _PlantLoop("atelier-plant")
        self._machines = {m: _MachineOnLoop(m, self._loop) for m in plant.machines}
        self._robots = {r: _RobotOnceStarted(r) for r in plant.robots}
        #: The machine agents (usable from any event loop) and the robot agents, for the executor.
        self.machines: dict[str, MachineAgent] = dict(self._machines)
        self.robots: dict[str, RobotAgent] = dict(self._robots)
        self.now: dict[str, _MachineNow] = {m: _MachineNow() for m in plant.machines}
        self._joints = {r: ROBOT_MODELS[spec.model].joint_names for r, spec in plant.robots.items()}
        model = compile_model(plant)
        self._kinematics = {r: arm_kinematics(model, plant, r) for r in plant.robots}
        self._latches = {r: EstopLatch(latch_file(state_dir, r)) for r in plant.robots}
        self._view_lock = threading.Lock()
        self._stop: asyncio.Event | None = None
        self._done: concurrent.futures.Future[None] | None = None
        self._t0 = time.monotonic()
        self._host: Any = None
        self._watchers: dict[str, Any] = {}
        self._cell: Any = None
        self._estops: Any = None
        self._resets: dict[str, Any] = {}
        self._started = False
        self._serving = False

    # ------------------------------------------------------------------ life cycle

    def start(self) -> LivePlant:
        """Connect every machine and wait for every robot's runtime (within ``ready_timeout_s``),
        start watching and publishing. Blocks until done; raises
        :class:`~plant.interface.ConnectError` (a machine unreachable) or ``TimeoutError`` (a
        runtime not listening), having released what it had started."""
        if self._started:
            return self
        from robots.ros2._host import RosHost
        from robots.ros2.watch import CellWatcher, EstopTrigger, RobotWatcher

        self._host = RosHost(self.domain_id)
        # Watch first: the runtimes' latched safety events and goal statuses arrive meanwhile.
        self._watchers = {
            r: RobotWatcher(self._host, r, self._joints[r], on_change=self.poke) for r in self.plant.robots
        }
        self._cell = CellWatcher(self._host, list(self.plant.part_types))
        self._estops = EstopTrigger(self._host)
        self._loop.start()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._done = asyncio.run_coroutine_threadsafe(self._main(ready), self._loop.loop)
        try:
            ready.result(self.ready_timeout_s + 10.0 * len(self.plant.machines) + 5.0)
        except BaseException:
            self._shutdown()
            raise
        self._started = True
        self.poke()
        return self

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._stop = stop = asyncio.Event()
        try:
            async with live_agents(
                self.plant, ros_host=self._host, robots=self.robot_names, ready_timeout_s=self.ready_timeout_s
            ) as (machines, robots):
                for name, agent in machines.items():
                    self._machines[name].agent = agent
                    if isinstance(agent, ConnectionEvents):
                        agent.add_event_listener(lambda _ev: self.poke())
                for name, robot in robots.items():
                    self._robots[name].agent = robot
                tasks = [asyncio.create_task(self._poll(n, a), name=f"poll-{n}") for n, a in machines.items()]
                tasks.append(asyncio.create_task(self._publish(), name="publish"))
                self._serving = True
                ready.set_result(None)
                try:
                    await stop.wait()
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    for proxy in self._machines.values():
                        proxy.agent = None
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    async def _poll(self, name: str, agent: MachineAgent) -> None:
        now = self.now[name]
        while True:
            try:
                st = await agent.status()
            except (MachineError, TimeoutError, OSError) as exc:
                changed = now.connected
                now.connected, now.error = False, str(exc)
            else:
                changed = st != now.status or not now.connected
                now.status, now.connected, now.error = st, True, ""
            if changed:
                self.poke()
            await asyncio.sleep(self.poll_s)

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(self.publish_s)
            self.poke()

    def stop(self) -> None:
        """Stop polling and publishing, disconnect the machines, close ROS 2. Safe to call twice."""
        self._started = False
        self._shutdown()

    def _shutdown(self) -> None:
        stop, done = self._stop, self._done
        if done is not None and not done.done():
            if stop is not None and self._serving:
                self._loop.loop.call_soon_threadsafe(stop.set)
                with contextlib.suppress(Exception):
                    done.result(15.0)
            else:
                done.cancel()  # still connecting: the task is cancelled, live_agents disconnects
        self._loop.stop()
        host, self._host = self._host, None
        if host is not None:
            host.close()

    # ------------------------------------------------------------------ the view

    def poke(self) -> None:
        """Publish the plant as it is now (any thread)."""
        if self._host is None:
            return
        self.feed.publish(self.view())

    def _people(self) -> list[PersonView]:
        names = list(self.plant.people)
        out = []
        for i, (name, x, y, v) in enumerate(self._cell.people() if self._cell is not None else []):
            # A tracker names no one: the twin publishes the plant's people in its order.
            shown = names[i] if name == f"person_{i}" and i < len(names) else name
            out.append(PersonView(name=shown, x_m=round(x, 3), y_m=round(y, 3), speed_m_s=round(v, 2)))
        return out

    def parts_known(self) -> tuple[dict[str, tuple[float, float, float]], frozenset[str]]:
        """The parts seen by the cell's vision, by name, and those known absent. The plant's
        parts of a type are given the positions published for that type in the plant file's
        order (identical parts: any assignment will do); more parts than seen are absent; parts
        of a type never published are not known (they stay where the plant file puts them)."""
        seen = self._cell.parts() if self._cell is not None else {}
        known: dict[str, tuple[float, float, float]] = {}
        absent: set[str] = set()
        for part_type, positions in seen.items():
            names = [n for n, p in self.plant.parts.items() if p.type == part_type]
            for name, xyz in zip(names, positions, strict=False):
                known[name] = xyz
            absent.update(names[len(positions) :])
        return known, frozenset(absent)

    def parts_now(self) -> dict[str, tuple[float, float, float]]:
        """Every part in the cell now as far as known: where seen, else where the plant file puts it."""
        known, absent = self.parts_known()
        out = {n: xyz for n, xyz in self.plant.part_starts().items() if n not in absent}
        out.update(known)
        return out

    def view(self) -> PlantView:
        """The plant as last read (any thread; about 0.3 ms for the demo cell)."""
        machines = []
        for name, spec in self.plant.machines.items():
            now = self.now[name]
            st = now.status
            machines.append(
                MachineView(
                    name=name,
                    kind=spec.kind,
                    state=st.state.name if st is not None else State.UNDEFINED.name,
                    cycle_count=st.cycle_count if st is not None else 0,
                    part_count=st.part_count if st is not None else 0,
                    fault_code=st.fault_code if st is not None else 0,
                    fault_text=safe_text(st.fault_text if st is not None else now.error, 300),
                    door_closed=st.door_closed if st is not None and spec.has_door else None,
                    connected=now.connected,
                    alarms=[safe_text(a.reason, 300) for a in st.alarms] if st is not None else [],
                )
            )
        robots = []
        with self._view_lock:  # the kinematics' scratch data is not thread-safe
            for name, robot in self.plant.robots.items():
                r = self._watchers[name].reading() if name in self._watchers else None
                joints = list(r.position_rad) if r is not None and r.position_rad is not None else []
                tool = self._kinematics[name].fk(np.asarray(joints))[0] if joints else (0.0, 0.0, 0.0)
                latched, reason = self.state(name)
                robots.append(
                    RobotView(
                        name=name,
                        model=robot.model,
                        skill=r.skill if r is not None else None,
                        joints_rad=[round(q, 4) for q in joints],
                        joint_speeds_rad_s=[round(v, 4) for v in r.velocity_rad_s] if r is not None else [],
                        tool_xyz_m=(round(float(tool[0]), 4), round(float(tool[1]), 4), round(float(tool[2]), 4)),
                        safety="estop" if latched else (r.safety if r is not None else "ok"),
                        estop=latched,
                        estop_reason=safe_text(reason, 300),
                    )
                )
        known, _ = self.parts_known()
        parts = [PartView(name=n, xyz_m=(round(x, 3), round(y, 3), round(z, 3))) for n, (x, y, z) in known.items()]
        return PlantView(
            time_s=round(time.monotonic() - self._t0, 3),
            wall_s=time.time(),
            machines=machines,
            robots=robots,
            people=self._people(),
            parts=parts,
        )

    def readings(self) -> PlantReadings:
        """What the agents read last, for a rehearsal to start from (does not block)."""
        machines = {
            n: MachineReading(
                int(st.state), st.door_closed, st.cycle_count, st.part_count, st.fault_code, st.fault_text
            )
            for n, now in self.now.items()
            if (st := now.status) is not None
        }
        robots: dict[str, tuple[float, ...]] = {}
        grippers: dict[str, float] = {}
        for name, w in self._watchers.items():
            r = w.reading()
            if r.position_rad is not None:
                robots[name] = r.position_rad
            if r.gripper_closure is not None:
                grippers[name] = r.gripper_closure
        known, absent = self.parts_known()
        return PlantReadings(self.plant.name, machines, robots, grippers, known, absent)

    # ------------------------------------------------------------------ the e-stop port

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason): as the robot's runtime reported, else (no word from it) its latch file."""
        w = self._watchers.get(robot)
        r = w.reading() if w is not None else None
        if r is not None and r.runtime_seen:
            return r.estop, r.estop_reason
        latch = self._latches[robot]
        return latch.refresh(), latch.reason

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Through the runtime's ``estop`` service; the latch file if no runtime answers. Blocks
        up to 6 s (no runtime)."""
        answer = self._estops.trip(robot) if self._estops is not None else None
        if answer is None:
            log.warning("%s: no runtime answered the e-stop; tripping its latch file", robot)
            self._latches[robot].trip(reason, source)
        self.poke()

    def reset(self, robot: str, operator: str) -> None:
        """The operator's signed reset (the console checked the role); the latch file if no runtime
        listens. Raises :class:`~.services.ActionRefused` if the runtime refuses it or the reset
        key is missing. Blocks up to 6 s."""
        from plant.trust import TrustError, robot_keys
        from robots.ros2.runtime_node import EstopResetClient

        try:
            client = self._resets.get(robot)
            if client is None:
                client = self._resets[robot] = EstopResetClient(self._host, robot, robot_keys(self.state_dir))
        except TrustError as exc:
            raise ActionRefused(
                f"{exc}: the console needs the robot's reset key in {self.state_dir}/trust (atelier robot keys)"
            ) from None
        answer = client.reset(operator, 3.0)
        if answer is None:
            log.warning("%s: no runtime listens for the reset; clearing its latch file", robot)
            self._latches[robot].reset(operator)
        elif not answer[0]:
            raise ActionRefused(f"{robot}: not reset: {safe_text(answer[1], 300)}")
        self.poke()


@dataclass
class LiveConsoleSite:
    """Everything ``atelier console --live`` runs: the app over the coordinator's backend and a
    live plant (its agents, watchers and feed)."""

    app: FastAPI
    backend: CoordinatorBackend
    plant: LivePlant

    def start(self) -> None:
        """Connect to the plant and start watching it (outside any event loop; see
        :meth:`LivePlant.start` for what it raises)."""
        self.plant.start()

    def stop(self) -> None:
        """Stop watching, disconnect, close the database."""
        self.plant.stop()
        _close(self.backend)


def _endpoints(plant: PlantDescription, robots: Sequence[str], domain_id: int | None) -> str:
    machines = ", ".join(f"{n} {m.endpoint}" for n, m in plant.machines.items())
    domain = f"ROS 2 domain {domain_id}" if domain_id is not None else "ROS 2"
    return f"{plant.name}: {machines}; robots {', '.join(robots) or 'none'} over {domain}"


def build_live_site(
    plant: PlantDescription,
    db_url: str,
    state_dir: Path,
    *,
    config: CoordinatorConfig | None = None,
    robots: Sequence[str] | None = None,
    domain_id: int | None = None,
    poll_s: float = 0.1,
    ready_timeout_s: float = 30.0,
    session_ttl_s: float = 8 * 3600.0,
    secure_cookies: bool = False,
    evidence_dir: Path | None = None,
    render_rehearsals: bool = True,
) -> LiveConsoleSite:
    """The console over the coordinator and a live plant (``atelier console --live``): the plant
    of ``plant``'s endpoints (``atelier twin serve``, or a real one), with the executor and agents
    of ``atelier order --live`` (see :class:`LivePlant`; ``robots``: the robots whose runtimes
    must answer, default all; ``domain_id``: the ROS 2 domain, default ``ROS_DOMAIN_ID``).

    Database, model, guardrails and approval as :func:`build_site`; rehearsals run in a worker
    process in a twin started from what the agents read (:meth:`sim.twin.Twin.apply_readings`).
    The robot agents sign goals with the command keys of ``$ATELIER_STATE_DIR/trust`` (as
    ``atelier order --live``), so ``state_dir`` must be that folder (``ValueError`` otherwise);
    the console resets e-stops with the reset keys there. Call :meth:`LiveConsoleSite.start`
    before serving: it connects.
    """
    from plant.trust import default_state_dir

    if state_dir.resolve() != default_state_dir().resolve():
        raise ValueError(
            f"the robot agents sign goals with the keys of {default_state_dir()}/trust "
            f"($ATELIER_STATE_DIR); give the console the same state folder, not {state_dir}"
        )
    cfg = (config or CoordinatorConfig()).model_copy(update={"database_url": db_url})
    evidence = evidence_dir if evidence_dir is not None else state_dir / "evidence"
    coordinator = build_coordinator(plant, cfg, evidence_dir=evidence, render=render_rehearsals, isolated=True)
    names = list(robots) if robots is not None else list(plant.robots)
    feed = PlantFeed("live", _endpoints(plant, names, domain_id))
    live = LivePlant(
        plant, state_dir, feed, robots=names, domain_id=domain_id, poll_s=poll_s, ready_timeout_s=ready_timeout_s
    )
    if isinstance(coordinator.rehearser, ProcessRehearser):
        _rehearse_from_now(coordinator, cfg, render_rehearsals, live.readings, live.parts_now, _LIVE_HINT)
    backend, app = _console(
        plant,
        db_url,
        coordinator,
        cfg,
        live.machines,
        live.robots,
        live,
        feed,
        session_ttl_s=session_ttl_s,
        secure_cookies=secure_cookies,
    )
    backend.on_change = live.poke
    return LiveConsoleSite(app, backend, live)

"""Sessions over the twin: the agents of an in-process twin, and what it saw.

- :func:`twin_factory`: rehearsal sessions over a fresh in-process twin: machines are
  :class:`sim.agents.TwinMachineAgent` (watching, not driving), robots are the on-robot runtime
  (:func:`sim.hardware.build_runtime`, lockstep, with its safety supervisor) behind the robot
  agent of :mod:`robots.agent`, and one loop steps the twin and every runtime as fast as the CPU
  allows. Collisions of robots with machines and people, and safety events, are recorded.
- :class:`LiveTwinPlant`: the agents of a live twin stepped on its own thread in this process
  (the console's plant when it runs a twin of its own): machines are
  :class:`sim.agents.TwinMachineAgent` under the twin's lock, robots are the on-robot runtime
  on their own threads with their safety supervisors and e-stop latch files, as
  ``atelier robot runtime`` runs them.
- (the picks a plan would find no part for: :func:`robots.parts.missing_parts`)
  (a rehearsal from a live state refuses such a plan with that reason instead of failing a step).

The coordinator reaches these through its wiring only (``llm_coordinator.wiring``); its core
sees the session through the ``TwinSession`` protocol of ``llm_coordinator.rehearsal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from plant.config import PlantDescription
from plant.interface import MachineAgent
from robots.agent import runtime_agents
from robots.interface import RobotAgent, SafetyEvent, SafetyState
from sim.live import LiveTwin
from sim.twin import Perturbation, PlantReadings, Twin, TwinState

#: Ticks stepped between two yields to the event loop (0.1 s of twin time at 4 ms a tick).
_TICKS_PER_YIELD = 25

_blas_open = 0  # lockstep sessions open on the main thread
_blas_limit: Any = None  # threadpoolctl's limit while any is


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Linear algebra on one thread while any lockstep session of this process is open: OpenBLAS
    rounds differently on 1 and 2 threads, and a rehearsal must run the same in a process of its
    own, in a pool or on Ray (which gives its workers one thread), whatever the machine. Only
    from the main thread: OpenBLAS does not reliably take a thread count set from another one
    (a session run on another thread keeps the process's count)."""
    global _blas_open, _blas_limit
    from threadpoolctl import threadpool_limits

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _blas_open == 0:
        _blas_limit = threadpool_limits(limits=1, user_api="blas")
    _blas_open += 1
    try:
        yield
    finally:
        _blas_open -= 1
        if _blas_open == 0:
            _blas_limit.restore_original_limits()
            _blas_limit = None


@dataclass
class _Clock:
    """The lockstep clock: the stepping loop sets ``tick`` after every batch of ticks."""

    time_s: float = 0.0
    tick: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> None:
        await self.tick.wait()


@dataclass
class _LiveClock:
    """A live twin's clock; the agent looks at the runtime every ``poll_s`` of wall time."""

    live: LiveTwin
    poll_s: float = 0.01

    @property
    def time_s(self) -> float:
        return float(self.live.twin.time_s)

    async def wait(self) -> None:
        await asyncio.sleep(self.poll_s)


@dataclass
class TwinSession:
    """The agents over one twin, and what that twin saw (collisions, safety stops, evidence
    files); implements ``llm_coordinator.rehearsal.TwinSession``."""

    machines: dict[str, MachineAgent]
    robots: dict[str, RobotAgent]
    twin: Twin
    collisions: list[str] = field(default_factory=list)
    safety_stops: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    fps: float = 0.5

    renderer: _FrameRenderer | None = None
    #: Stops the twin's stepping (set by the factory; :meth:`finish` calls it first: the run is
    #: over, and a twin stepping on would only take the processor from the evidence writers).
    halt: Callable[[], Awaitable[None]] | None = None
    #: The closest a person came to a robot (the safety supervisors' SSM readings): separation
    #: (m), the protective separation distance then (m, ISO/TS 15066), and who, where and when.
    closest_m: float = float("inf")
    closest_protective_m: float = 0.0
    closest_at: str = ""

    def time_s(self) -> float:
        """The twin's clock (s)."""
        return float(self.twin.time_s)

    async def finish(self, out_dir: Path) -> None:
        """Write the evidence files: each inspection's image, and the frames as a clip and a
        still. Encoding them (a clip of a minute's rehearsal: tenths of a second) runs in a
        worker thread, not on the event loop."""
        if self.halt is not None:
            await self.halt()
        if self.renderer is not None:
            frames, error = await asyncio.to_thread(self.renderer.close)
            self.frames.extend(frames)
            if error:
                self.evidence.append(f"(no frames: {error})")
        await asyncio.to_thread(self._write_evidence, out_dir)

    def _write_evidence(self, out_dir: Path) -> None:
        self._write_inspections(out_dir)
        if not self.frames:
            return
        from sim.render import RenderError, write_frames

        try:
            written = write_frames(out_dir / "rehearsal.gif", self.frames, max(1, round(self.fps)))
            written += write_frames(out_dir / "rehearsal.png", self.frames, 1)
        except (RenderError, OSError) as exc:
            self.evidence.append(f"(frames not written: {exc})")
            return
        self.evidence.extend(str(p) for p in written)

    def _write_inspections(self, out_dir: Path) -> None:
        """Each vision verdict's evidence (:func:`sim.vision.write_inspection`)."""
        from sim.vision import write_inspection

        for i, done in enumerate(self.twin.inspections, 1):
            try:
                self.evidence.append(str(write_inspection(out_dir, i, done, self.twin.plant)))
            except OSError as exc:
                self.evidence.append(f"(inspection image not written: {exc})")


class _FrameRenderer:
    """Evidence frames rendered on a thread of their own, from states the stepping loop
    records (:meth:`Twin.capture`), into a twin of the same plant: rendering (tens of
    milliseconds a frame) runs beside the rehearsal instead of inside its loop. MuJoCo releases
    the interpreter while it renders, so on a second core the rehearsal does not wait for it."""

    def __init__(
        self, plant: PlantDescription, camera: str, size: tuple[int, int], perturb: Perturbation | None = None
    ) -> None:
        self.frames: list[Any] = []
        self.error = ""
        self._states: queue.SimpleQueue[TwinState | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(plant, camera, size, perturb), name="atelier-frames", daemon=True
        )
        self._thread.start()

    def add(self, state: TwinState) -> None:
        self._states.put(state)

    def _run(self, plant: PlantDescription, camera: str, size: tuple[int, int], perturb: Perturbation | None) -> None:
        from sim.render import Camera, RenderError

        try:
            twin = Twin(plant)
            if perturb is not None:
                twin.perturb(perturb)  # (people walk as in the rehearsal: a state does not hold their paths)
            # (no multisampling: in software it takes most of the time a frame takes, and this
            # thread shares the machine with the rehearsal)
            with Camera(twin, camera, *size, antialias=False) as cam:
                while (state := self._states.get()) is not None:
                    twin.restore(state)
                    self.frames.append(cam.frame())
        except Exception as exc:  # (RenderError above all: no OpenGL here) the rehearsal goes on without frames
            self.error = str(exc) if isinstance(exc, RenderError) else f"rendering failed: {type(exc).__name__}: {exc}"

    def close(self) -> tuple[list[Any], str]:
        """Wait for the frames of every recorded state: (frames, why there are none or "")."""
        self._states.put(None)
        self._thread.join()
        return self.frames, self.error


#: Penetration (m) of a robot into a machine that counts as a collision (grazing a surface does not).
COLLISION_DEPTH_M = 0.01


def _collisions(twin: Twin, plant: PlantDescription, robot_bodies: dict[str, str]) -> list[str]:
    out = []
    for c in twin.contacts():
        for mine, other, geom in ((c.body1, c.body2, c.geom2), (c.body2, c.body1, c.geom1)):
            robot = robot_bodies.get(mine)
            if robot is None or robot_bodies.get(other) == robot:
                continue
            root = other.split("/")[0]
            if root in plant.people:
                out.append(f"{robot} touched person {root} at t={twin.time_s:.1f} s")
            elif root in plant.machines and c.depth_m > COLLISION_DEPTH_M and not geom.endswith("/belt"):
                out.append(f"{robot} hit {other} ({c.depth_m * 1000:.0f} mm deep) at t={twin.time_s:.1f} s")
    return out


def twin_factory(
    render: bool = True,
    fps: float = 0.5,
    size: tuple[int, int] = (480, 270),
    start: TwinState | PlantReadings | None = None,
    perturb: Perturbation | int | None = None,
) -> Callable[[PlantDescription], AbstractAsyncContextManager[TwinSession]]:
    """Rehearsal sessions over a fresh in-process twin (see the module docstring), at time zero
    or continuing from ``start``: a live twin's state (parts, machines, robots where they are;
    :meth:`Twin.restore`) or what the agents of a live plant read (:meth:`Twin.apply_readings`).
    With ``render``, frames are taken ``fps`` times per second of twin time (if offscreen
    rendering works here; if not, the rehearsal goes on without frames and says so). ``perturb``
    (a :class:`~sim.twin.Perturbation`, or the seed of one with the default tolerances) changes
    the start within tolerances, for one of many rehearsals of a plan."""
    change = Perturbation(perturb) if isinstance(perturb, int) else perturb
    from sim.agents import TwinMachineAgent
    from sim.hardware import LocalPeers, build_runtime, twin_people

    @asynccontextmanager
    async def factory(plant: PlantDescription) -> AsyncIterator[TwinSession]:
        with _one_blas_thread():
            async with _session(plant) as session:
                yield session

    @asynccontextmanager
    async def _session(plant: PlantDescription) -> AsyncIterator[TwinSession]:
        twin = Twin(plant)
        if isinstance(start, PlantReadings):
            twin.apply_readings(start)
        elif start is not None:
            twin.restore(start)
        clock = _Clock()
        peers = LocalPeers()
        session = TwinSession({}, {}, twin, fps=fps)
        if change is not None:
            twin.perturb(change)

        def on_event(ev: SafetyEvent) -> None:
            if ev.kind in ("protective_stop", "estop", "watchdog"):
                session.safety_stops.append(f"{ev.robot}: {ev.kind}: {ev.reason}")

        # Where the people are, placed once a tick for every robot (a new list each tick: a
        # supervisor may keep last tick's to evaluate its reading later).
        seen = [twin_people(twin)]
        runtimes = {
            r: build_runtime(twin, r, peers=peers, on_event=on_event, people=lambda: seen[0]) for r in plant.robots
        }
        peers.runtimes.update(runtimes)
        session.machines.update({m: TwinMachineAgent(twin, m, drive=False, ticks=clock.wait) for m in plant.machines})
        session.robots.update(runtime_agents(runtimes, clock))
        for agent in session.machines.values():
            await agent.connect()
        robot_bodies = {twin.model.body(b).name: r for r in plant.robots for b in twin.robot_bodies(r)}
        if render:
            session.renderer = _FrameRenderer(plant, "overview", size, change)
        renderer = session.renderer
        stop = asyncio.Event()

        runtime_list = list(runtimes.values())

        async def run() -> None:
            next_frame = twin.time_s
            while not stop.is_set():
                for _ in range(_TICKS_PER_YIELD):
                    twin.step(1)
                    seen[0] = twin_people(twin)
                    for rt in runtime_list:
                        rt.step()
                        # (the exact reading only when it may be the closest yet: see
                        # SafetySupervisor.separation_floor_m)
                        if rt.supervisor.separation_floor_m >= session.closest_m:
                            continue
                        reading = rt.supervisor.ssm
                        if reading.separation_m < session.closest_m:
                            session.closest_m = reading.separation_m
                            session.closest_protective_m = reading.protective_distance_m
                            session.closest_at = f"{reading.person} and {rt.robot} at t={twin.time_s:.1f} s"
                for hit in _collisions(twin, plant, robot_bodies):
                    if hit.split(" at t=")[0] not in {h.split(" at t=")[0] for h in session.collisions}:
                        session.collisions.append(hit)
                if renderer is not None and twin.time_s >= next_frame:
                    renderer.add(twin.capture())
                    next_frame = twin.time_s + 1.0 / fps
                clock.time_s = twin.time_s
                clock.tick.set()
                clock.tick = asyncio.Event()
                await asyncio.sleep(0)

        stepper = asyncio.create_task(run())

        halted: list[bool] = []

        async def halt() -> None:
            """Stop the stepping (at its next batch of ticks) and wait for it. The stepper's own
            error, if it failed, is raised by the first call that saw it end, and only by it."""
            stop.set()
            if halted:
                return
            await asyncio.wait({stepper})  # (a cancel of the caller still reaches the caller)
            halted.append(True)
            if not stepper.cancelled() and (exc := stepper.exception()) is not None:
                raise exc

        session.halt = halt
        try:
            yield session
        finally:
            try:
                await halt()
            finally:
                if session.renderer is not None:
                    await asyncio.to_thread(session.renderer.close)  # (done already if finish ran)

    return factory


#: The runtimes beside an in-process live twin share one interpreter with it, the web server
#: and the planner, so a tick can come late by more than a scheduling slice (0.4 s stalls of the
#: console's own process were seen on a loaded 2-core machine): a missing joint state counts as
#: a driver fault after 3 s rather than 0.1 s. The twin's arm does not move while its tick is
#: late (a stalled twin is no stalled sensor on a moving arm), and every other limit stays as the
#: robot's own runtime has it. A robot's own runtime (``atelier robot runtime``) keeps 0.1 s.
IN_PROCESS_STATE_TIMEOUT_PERIODS = 750


class LiveTwinPlant:
    """The agents of a :class:`~sim.live.LiveTwin` in this process (see the module docstring).

    Each robot's runtime keeps its e-stop latch in ``state_dir`` (:func:`robots.safety.latch_file`,
    the file ``atelier robot`` uses), so an e-stop survives a restart and a reset from the
    command line is followed. This class is also the console's e-stop port: :meth:`trip` and
    :meth:`reset` go through the robot's own safety supervisor, which stops the arm first.
    """

    def __init__(
        self,
        live: LiveTwin,
        state_dir: Path,
        *,
        on_event: Callable[[SafetyEvent], None] | None = None,
        checkpoint: Path | str | Literal["shipped"] | None = "shipped",
    ) -> None:
        from robots.runtime import RuntimeConfig
        from robots.safety import latch_file
        from sim.agents import TwinMachineAgent
        from sim.hardware import LocalPeers, build_runtime

        self.live = live
        plant = live.twin.plant
        state_dir.mkdir(parents=True, exist_ok=True)
        peers = LocalPeers()
        self.runtimes = {
            r: build_runtime(
                live.twin,
                r,
                live=live,
                latch_path=latch_file(state_dir, r),
                peers=peers,
                on_event=on_event,
                checkpoint=checkpoint,
                config=RuntimeConfig(state_timeout_periods=IN_PROCESS_STATE_TIMEOUT_PERIODS),
            )
            for r in plant.robots
        }
        peers.runtimes.update(self.runtimes)
        clock = _LiveClock(live)
        self.machines: dict[str, MachineAgent] = {
            m: TwinMachineAgent(live.twin, m, drive=False, lock=live.lock) for m in plant.machines
        }
        self.robots: dict[str, RobotAgent] = runtime_agents(self.runtimes, clock)
        self.follow_s = 0.1
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def _follow_latches(self) -> None:
        while not self._stop.wait(self.follow_s):
            now = time.monotonic()
            for rt in self.runtimes.values():
                rt.supervisor.sync_estop(now)

    async def _connect(self) -> None:
        for agent in self.machines.values():
            await agent.connect()

    def start(self) -> LiveTwinPlant:
        """Connect the machine agents, start every robot's control loop (the live twin must be
        running) and follow the latch files (an e-stop tripped or reset by another process).
        Blocks until started."""
        if self._follower is not None:
            return self
        # Its own thread: the caller may be inside an event loop (a test's, a browser driver's).
        connect = threading.Thread(target=asyncio.run, args=(self._connect(),), name="atelier-connect")
        connect.start()
        connect.join()
        for rt in self.runtimes.values():
            rt.start()
        self._stop.clear()
        self._follower = threading.Thread(target=self._follow_latches, name="atelier-latch-follower", daemon=True)
        self._follower.start()
        return self

    def stop(self) -> None:
        """Stop the robots' control loops."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(2.0)
            self._follower = None
        for rt in self.runtimes.values():
            rt.stop()
            close = getattr(rt.hw, "close", None)
            if close is not None:
                close()

    def status(self, robot: str) -> tuple[str | None, SafetyState]:
        """(skill being performed or None, safety state) of one robot."""
        rt = self.runtimes[robot]
        goal = rt.active_goal
        sup = rt.supervisor
        safety: SafetyState = "ok"
        if sup.estopped:
            safety = "estop"
        elif sup.stopped:
            safety = "protective_stop"
        elif sup.mode == "slow":
            safety = "reduced_speed"
        return (goal.skill if goal is not None else None), safety

    # The console's e-stop port.

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason)."""
        sup = self.runtimes[robot].supervisor
        return (True, sup.stop_causes().get("estop", "e-stop latched")) if sup.estopped else (False, "")

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Stop the robot and latch its e-stop (the supervisor writes the latch file)."""
        self.runtimes[robot].trip_estop(reason, source)

    def reset(self, robot: str, operator: str) -> None:
        """The operator's reset (the console checked the role)."""
        self.runtimes[robot].supervisor.reset_estop(operator, time.monotonic())

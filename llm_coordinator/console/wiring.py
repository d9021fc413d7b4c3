"""Wiring of the console: the coordinator, the live twin as the plant and its agents, the feed.

This is the one console module that imports ``sim`` (like the CLI): it reads snapshots of a
:class:`~sim.live.LiveTwin` into the :class:`~.services.PlantFeed`, and it builds the console
over the coordinator (store, planner, guardrails, rehearsal, approval gate) and an executor
whose agents drive the live twin (:class:`~llm_coordinator.wiring.LiveTwinPlant`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.snapshot import read_snapshot
from llm_coordinator.wiring import LiveTwinPlant, ProcessRehearser, build_coordinator, build_executor
from plant.config import PlantDescription
from robots.interface import SafetyState
from sim.live import LiveTwin
from sim.twin import Twin

from .app import create_app
from .auth import UserStore, make_engine
from .coordinator_backend import CoordinatorBackend
from .services import (
    EstopPort,
    MachineView,
    PartView,
    PersonView,
    PlantFeed,
    PlantView,
    RobotView,
)

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


@dataclass
class ConsoleSite:
    """Everything ``atelier console`` runs: the app over the coordinator's backend, the live
    twin, the agents that drive it (the robots' runtimes with their safety supervisors) and the
    feed publisher."""

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
        rehearser = self.backend.coordinator.rehearser
        if isinstance(rehearser, ProcessRehearser):
            rehearser.close()
        self.backend.store.engine.dispose()


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
    """The console over the coordinator and a live twin of ``plant``.

    One database (``db_url``) holds the users, the plans and the audit log, as for the CLI
    (``config.database_url`` is replaced by it). Plans come from the coordinator built as for
    ``atelier order`` (the configured model, the guardrails, rehearsal in a worker process in a
    twin that starts from the live twin's state, with evidence under ``evidence_dir``, default
    ``state_dir/evidence``), and approved plans run on
    the live twin through the same executor, machine agents and robot runtimes. The robots'
    e-stop latches are the files of ``atelier robot`` in ``state_dir``. Call
    :meth:`ConsoleSite.start` before serving.
    """
    cfg = (config or CoordinatorConfig()).model_copy(update={"database_url": db_url})
    evidence = evidence_dir if evidence_dir is not None else state_dir / "evidence"
    coordinator = build_coordinator(plant, cfg, evidence_dir=evidence, render=render_rehearsals, isolated=True)
    live = LiveTwin(Twin(plant), speed=twin_speed)
    if isinstance(coordinator.rehearser, ProcessRehearser):
        # Rehearse from the plant as it is now: parts, doors, machine states, robots.
        coordinator.rehearser.start = partial(live.read, Twin.capture)
    agents = LiveTwinPlant(live, state_dir)
    # A failed step pauses the plan and drafts a recovery, which goes through the rules, a
    # rehearsal and an approval like any plan (it appears in the queue).
    executor = build_executor(coordinator, agents.machines, agents.robots, cfg)

    feed = PlantFeed()
    backend = CoordinatorBackend(
        plant,
        coordinator.store,
        coordinator.gate,
        coordinator,
        agents,
        executor=executor,
        feed=feed,
        state=lambda: read_snapshot(agents.machines),
    )
    publisher = TwinFeed(live, feed, agents, agents.status)
    backend.on_change = publisher.poke
    users = UserStore(make_engine(db_url), ttl_s=session_ttl_s)
    app = create_app(backend, users, secure_cookies=secure_cookies)
    return ConsoleSite(app, live, backend, publisher, agents)

"""Rehearsal: a plan runs in the in-process twin, faster than real time, before anyone approves it.

The rehearsal uses the same :class:`~llm_coordinator.executor.PlanRunner`, skills, policies and
safety supervisor as the live run; only the agents differ. They come from a *twin factory*
(built by :mod:`llm_coordinator.wiring`, the one place allowed to import ``sim``), which also
reports what the twin saw: collisions, safety stops, interlock trips, and frames. The core
here never imports the twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_coordinator.executor import MemoryProgress, PlanRunner
from llm_coordinator.gantt import write_gantt
from llm_coordinator.plan import Plan
from plant.config import PlantDescription
from plant.interface import MachineAgent
from robots.interface import RobotAgent


@dataclass
class TwinObservations:
    """What the twin saw during a rehearsal (filled in by the twin factory)."""

    collisions: list[str] = field(default_factory=list)
    safety_stops: list[str] = field(default_factory=list)
    interlock_trips: list[str] = field(default_factory=list)
    sim_time_s: float = 0.0
    evidence: list[str] = field(default_factory=list)


class TwinSession(Protocol):
    """Agents over one fresh twin, and what that twin observed."""

    @property
    def machines(self) -> Mapping[str, MachineAgent]:
        """The machine agents of this twin."""

    @property
    def robots(self) -> Mapping[str, RobotAgent]:
        """The robot agents of this twin."""

    @property
    def observations(self) -> TwinObservations:
        """What the twin has seen so far."""

    def time_s(self) -> float:
        """The twin's clock (s), for step times in the report and the Gantt chart."""

    async def finish(self, out_dir: Path) -> None:
        """Write evidence (frames, a video) into ``out_dir`` and list it in ``observations``."""


TwinFactory = Callable[[PlantDescription], AbstractAsyncContextManager[TwinSession]]


@dataclass
class RehearsalReport:
    """The outcome of a rehearsal; ``ok`` only if every step finished and nothing unsafe happened."""

    ok: bool
    makespan_s: float
    reason: str
    steps: list[dict[str, Any]]
    observations: TwinObservations
    evidence: list[str]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for the store."""
        return {
            "ok": self.ok,
            "makespan_s": self.makespan_s,
            "reason": self.reason,
            "steps": self.steps,
            "collisions": self.observations.collisions,
            "safety_stops": self.observations.safety_stops,
            "interlock_trips": self.observations.interlock_trips,
            "sim_time_s": self.observations.sim_time_s,
            "wall_s": self.wall_s,
        }


class Rehearser:
    """Runs plans in twins made by ``factory`` (see the module docstring)."""

    def __init__(self, plant: PlantDescription, factory: TwinFactory, timeout_margin: float = 4.0) -> None:
        self.plant, self.factory, self.timeout_margin = plant, factory, timeout_margin

    async def rehearse(self, plan: Plan, out_dir: Path | str) -> RehearsalReport:
        """Run ``plan`` once in a fresh twin and write the Gantt chart and evidence to ``out_dir``."""
        out = Path(out_dir)
        t0 = time.monotonic()
        async with self.factory(self.plant) as session:
            # Progress in memory and no recovery hook: a rehearsal authorizes and records nothing.
            runner = PlanRunner(
                self.plant, session.machines, session.robots, timeout_margin=self.timeout_margin, clock=session.time_s
            )
            report = await runner.execute(plan, MemoryProgress())
            await session.finish(out)
            obs = session.observations
        bars = [(r.agent, r.step, r.start_s, r.end_s, r.status) for r in report.records]
        gantt = write_gantt(bars, out / "rehearsal_gantt.png", f"rehearsal: {plan.work_order[:80]}")
        problems = [*obs.collisions, *obs.safety_stops, *obs.interlock_trips]
        if report.status != "done":
            reason = f"step {report.failed_step} failed: {report.reason}"
        elif problems:
            reason = "; ".join(problems[:5])
        else:
            reason = ""
        makespan = obs.sim_time_s or report.makespan_s
        return RehearsalReport(
            ok=report.status == "done" and not problems,
            makespan_s=makespan,
            reason=reason,
            steps=[r.__dict__ for r in report.records],
            observations=obs,
            evidence=[str(gantt), *obs.evidence],
            wall_s=time.monotonic() - t0,
        )


__all__ = ["RehearsalReport", "Rehearser", "TwinFactory", "TwinObservations", "TwinSession"]

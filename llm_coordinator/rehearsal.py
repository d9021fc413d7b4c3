"""Rehearsal: a plan runs in the in-process twin, faster than real time, before anyone approves it.

The rehearsal uses the same :class:`~llm_coordinator.executor.PlanRunner`, skills, policies and
safety supervisor as the live run; only the agents differ. They come from a *twin factory*
(:func:`sim.session.twin_factory`, given by :mod:`llm_coordinator.wiring`, the one place allowed
to import ``sim``), whose session also reports what the twin saw: collisions, safety stops and
frames. The core here never imports the twin.

:class:`ProcessRehearser` rehearses in a worker process of its own, for a process that also runs
live control loops.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
    """What the twin saw during a rehearsal (read from its session at the end)."""

    collisions: list[str] = field(default_factory=list)
    safety_stops: list[str] = field(default_factory=list)
    sim_time_s: float = 0.0
    evidence: list[str] = field(default_factory=list)


class TwinSession(Protocol):
    """Agents over one fresh twin, and what that twin has seen so far: robots touching people
    or machines (``collisions``), safety stops, and evidence files written by :meth:`finish`."""

    @property
    def collisions(self) -> Sequence[str]:
        """Robots that touched a person or hit a machine, with the twin's time."""

    @property
    def safety_stops(self) -> Sequence[str]:
        """Protective stops, e-stops and watchdog stops of the robots' supervisors."""

    @property
    def evidence(self) -> Sequence[str]:
        """Evidence files written (or why none could be)."""

    @property
    def machines(self) -> Mapping[str, MachineAgent]:
        """The machine agents of this twin."""

    @property
    def robots(self) -> Mapping[str, RobotAgent]:
        """The robot agents of this twin."""

    def time_s(self) -> float:
        """The twin's clock (s), for step times in the report and the Gantt chart."""

    async def finish(self, out_dir: Path) -> None:
        """Write evidence (frames, a video) into ``out_dir`` and list it in ``evidence``."""


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
    #: How the conditions came out in the twin, and which outcomes were forced in this run.
    decisions: dict[str, bool] = field(default_factory=dict)
    variant: str = "as the twin decided"

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for the store."""
        return {
            "ok": self.ok,
            "decisions": self.decisions,
            "variant": self.variant,
            "makespan_s": self.makespan_s,
            "reason": self.reason,
            "steps": self.steps,
            "collisions": self.observations.collisions,
            "safety_stops": self.observations.safety_stops,
            "sim_time_s": self.observations.sim_time_s,
            "wall_s": self.wall_s,
        }


#: Most extra rehearsals of a plan's other branches (one per condition).
MAX_BRANCH_REHEARSALS = 3


class Rehearser:
    """Runs plans in twins made by ``factory`` (see the module docstring)."""

    def __init__(self, plant: PlantDescription, factory: TwinFactory, timeout_margin: float = 4.0) -> None:
        self.plant, self.factory, self.timeout_margin = plant, factory, timeout_margin

    async def rehearse(self, plan: Plan, out_dir: Path | str) -> RehearsalReport:
        """Run ``plan`` in a fresh twin and write the Gantt chart and evidence to ``out_dir``.

        A plan with conditions runs once as the twin decides them, then once more for each
        condition with the other outcome forced (the branch the twin did not take), each in a
        fresh twin: every branch a supervisor approves has been rehearsed. The report is ``ok``
        only if every run is."""
        first = await self._rehearse_once(plan, Path(out_dir), {})
        decided = first.decisions
        variants = [{d.id: not decided[d.id]} for d in plan.decisions if d.kind == "condition" and d.id in decided][
            :MAX_BRANCH_REHEARSALS
        ]
        runs = [first]
        for k, forced in enumerate(variants, start=1):
            runs.append(await self._rehearse_once(plan, Path(out_dir) / f"branch_{k}", forced))
        if len(runs) == 1:
            return first
        bad = [r for r in runs if not r.ok]
        return RehearsalReport(
            ok=not bad,
            makespan_s=max(r.makespan_s for r in runs),
            reason="; ".join(f"{r.variant}: {r.reason}" for r in bad),
            steps=[{**step, "variant": r.variant} for r in runs for step in r.steps],
            observations=TwinObservations(
                [c for r in runs for c in r.observations.collisions],
                [c for r in runs for c in r.observations.safety_stops],
                sum(r.observations.sim_time_s for r in runs),
                [e for r in runs for e in r.observations.evidence],
            ),
            evidence=[e for r in runs for e in r.evidence],
            wall_s=sum(r.wall_s for r in runs),
            decisions=first.decisions,
            variant="every branch: " + ", ".join(r.variant for r in runs),
        )

    async def _rehearse_once(self, plan: Plan, out: Path, forced: Mapping[str, bool]) -> RehearsalReport:
        t0 = time.monotonic()
        async with self.factory(self.plant) as session:
            # Progress in memory and no recovery hook: a rehearsal authorizes and records nothing.
            runner = PlanRunner(
                self.plant,
                session.machines,
                session.robots,
                timeout_margin=self.timeout_margin,
                clock=session.time_s,
                forced=forced,
            )
            report = await runner.execute(plan, MemoryProgress())
            await session.finish(out)
        obs = TwinObservations(
            list(session.collisions), list(session.safety_stops), session.time_s(), list(session.evidence)
        )
        bars = [(r.agent, r.step, r.start_s, r.end_s, r.status) for r in report.records]
        gantt = write_gantt(bars, out / "rehearsal_gantt.png", f"rehearsal: {plan.work_order[:80]}")
        problems = [*obs.collisions, *obs.safety_stops]
        if report.status != "done":
            reason = f"step {report.failed_step} failed: {report.reason}"
        elif problems:
            reason = "; ".join(problems[:5])
        else:
            reason = ""
        variant = ", ".join(f"{d} forced {str(v).lower()}" for d, v in forced.items()) or "as the twin decided"
        return RehearsalReport(
            ok=report.status == "done" and not problems,
            makespan_s=report.makespan_s,
            reason=reason,
            steps=[r.__dict__ for r in report.records],
            observations=obs,
            evidence=[str(gantt), *obs.evidence],
            wall_s=time.monotonic() - t0,
            decisions=dict(report.decisions),
            variant=variant,
        )


MakeTwinFactory = Callable[..., TwinFactory]


def _rehearse_in_worker(
    make_factory: MakeTwinFactory,
    plant: PlantDescription,
    plan: Plan,
    out_dir: str,
    margin: float,
    render: bool,
    start: object,
) -> RehearsalReport:
    """One rehearsal in a fresh twin of the worker process (see :class:`ProcessRehearser`)."""
    factory = make_factory(render=render, start=start)
    return asyncio.run(Rehearser(plant, factory, margin).rehearse(plan, out_dir))


class ProcessRehearser(Rehearser):
    """Rehearses in a worker process of its own, so a rehearsal (which steps a twin as fast as
    one core allows) never takes the interpreter from a live twin and the robots' control loops
    in this process. The worker starts on the first rehearsal (a few seconds) and stays.

    ``make_factory(render=..., start=...)`` builds the twin factory in the worker (a module-level
    function, so that it can be sent there: :func:`sim.session.twin_factory`). ``start`` gives the
    state a rehearsal begins from (the live twin's, captured when the rehearsal starts), so the
    plan is tried where the parts, machines and robots are now.
    """

    def __init__(
        self,
        plant: PlantDescription,
        make_factory: MakeTwinFactory,
        timeout_margin: float = 4.0,
        render: bool = True,
        start: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(plant, make_factory(render=render), timeout_margin)
        self.make_factory = make_factory
        self.render = render
        self.start = start
        self._pool: ProcessPoolExecutor | None = None

    async def rehearse(self, plan: Plan, out_dir: Path | str) -> RehearsalReport:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        start = self.start() if self.start is not None else None
        args = (self.make_factory, self.plant, plan, str(out_dir), self.timeout_margin, self.render, start)
        try:
            return await loop.run_in_executor(self._pool, _rehearse_in_worker, *args)
        except BrokenProcessPool as exc:
            self._pool = None  # the next rehearsal starts a new worker
            reason = f"the rehearsal process stopped unexpectedly ({exc}); nothing was rehearsed"
            return RehearsalReport(False, 0.0, reason, [], TwinObservations(), [], time.monotonic() - t0)

    def close(self) -> None:
        """Stop the worker process."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


__all__ = ["ProcessRehearser", "RehearsalReport", "Rehearser", "TwinFactory", "TwinObservations", "TwinSession"]

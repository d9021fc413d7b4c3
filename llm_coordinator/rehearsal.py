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
import math
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
from llm_coordinator.gantt import write_gantt, write_separation_plot
from llm_coordinator.plan import Plan
from plant.config import PlantDescription
from plant.interface import MachineAgent
from plant.workers import batch_worker_init, ray_map
from robots.interface import RobotAgent


@dataclass
class TwinObservations:
    """What the twin saw during a rehearsal (read from its session at the end)."""

    collisions: list[str] = field(default_factory=list)
    safety_stops: list[str] = field(default_factory=list)
    sim_time_s: float = 0.0
    evidence: list[str] = field(default_factory=list)
    #: The closest a person came to a robot (m; inf: nobody was tracked near one), the protective
    #: separation distance (ISO/TS 15066) at that moment (m), and who, where and when.
    closest_m: float = math.inf
    closest_protective_m: float = 0.0
    closest_at: str = ""


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

    closest_m: float
    """The closest a person came to a robot so far (m), by the robots' safety supervisors."""
    closest_protective_m: float
    """The protective separation distance at that moment (m)."""
    closest_at: str
    """Who and which robot, and when."""

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
    #: The risk figures of rehearsals from perturbed starts (:meth:`RiskReport.summary`), if run.
    risk: dict[str, Any] | None = None

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
            "closest_m": _finite(self.observations.closest_m),
            "closest_protective_m": self.observations.closest_protective_m,
            "closest_at": self.observations.closest_at,
            **({"risk": self.risk} if self.risk is not None else {}),
        }


def _finite(x: float) -> float | None:
    """``x``, or None for an infinity or NaN (JSON has neither)."""
    return x if math.isfinite(x) else None


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
                *_closest(runs),
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
            # The Gantt chart is drawn while the session writes its evidence, both in threads.
            bars = [(r.agent, r.step, r.start_s, r.end_s, r.status) for r in report.records]
            title = f"rehearsal: {plan.work_order[:80]}"
            drawing = asyncio.ensure_future(asyncio.to_thread(write_gantt, bars, out / "rehearsal_gantt.png", title))
            try:
                await session.finish(out)
            except BaseException:
                await asyncio.wait({drawing})  # (the chart's own error, if any, gives way to this one)
                raise
            gantt = await drawing
        obs = TwinObservations(
            list(session.collisions),
            list(session.safety_stops),
            session.time_s(),
            list(session.evidence),
            session.closest_m,
            session.closest_protective_m,
            session.closest_at,
        )
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


def _closest(runs: Sequence[RehearsalReport]) -> tuple[float, float, str]:
    best = min(runs, key=lambda r: r.observations.closest_m)
    o = best.observations
    return o.closest_m, o.closest_protective_m, o.closest_at


MakeTwinFactory = Callable[..., TwinFactory]


def _rehearse_in_worker(
    make_factory: MakeTwinFactory,
    plant: PlantDescription,
    plan: Plan,
    out_dir: str,
    margin: float,
    render: bool,
    start: object,
    perturb: int | None = None,
) -> RehearsalReport:
    """One rehearsal in a fresh twin of the worker process (see :class:`ProcessRehearser`), from
    a start perturbed by seed ``perturb`` (None: the plant file's or ``start`` as it is)."""
    factory = (
        make_factory(render=render, start=start)
        if perturb is None
        else make_factory(render=render, start=start, perturb=perturb)
    )
    return asyncio.run(Rehearser(plant, factory, margin).rehearse(plan, out_dir))


@dataclass
class RiskReport:
    """Many rehearsals of one plan, each from a start perturbed by its own seed (a person's
    start time, speed and path, belt speeds, part positions, within tolerances)."""

    runs: list[dict[str, Any]]
    worst_seed: int | None
    evidence: list[str]
    wall_s: float
    workers: str

    def summary(self) -> dict[str, Any]:
        """Success rate, the closest approaches against the protective separation distance,
        makespan p50 and p95, and the worst run (JSON-able, for the store and the console)."""
        ok = [r for r in self.runs if r["ok"]]
        spans = sorted(r["makespan_s"] for r in ok)
        near = [r for r in self.runs if r["closest_m"] is not None]
        return {
            "runs": len(self.runs),
            "ok": len(ok),
            "success_rate": len(ok) / len(self.runs) if self.runs else 0.0,
            "makespan_p50_s": _quantile(spans, 0.5),
            "makespan_p95_s": _quantile(spans, 0.95),
            "closest_m": sorted(r["closest_m"] for r in near),
            "inside_protective": sum(1 for r in near if r["closest_m"] < r["closest_protective_m"]),
            "min_margin_m": min((r["closest_m"] - r["closest_protective_m"] for r in near), default=None),
            "failures": [{"seed": r["seed"], "reason": r["reason"]} for r in self.runs if not r["ok"]],
            "worst_seed": self.worst_seed,
            "evidence": self.evidence,
            "wall_s": self.wall_s,
            "workers": self.workers,
            "per_run": self.runs,
        }


def risk_lines(risk: Mapping[str, Any]) -> list[str]:
    """The risk figures of :meth:`RiskReport.summary` in words, a line each (CLI and console)."""
    if "error" in risk:
        return [f"the perturbed rehearsals did not run: {risk['error']}"]
    runs, ok = int(risk.get("runs", 0)), int(risk.get("ok", 0))
    lines = [
        f"{ok} of {runs} perturbed rehearsals clean ({100 * ok / runs if runs else 0:.0f}%), on {risk.get('workers')}"
    ]
    near = risk.get("closest_m") or []
    if near:
        inside = int(risk.get("inside_protective", 0))
        margin = risk.get("min_margin_m")
        lines.append(
            f"closest approach of a person to a robot: {min(near):.2f} m (median {near[len(near) // 2]:.2f} m over "
            f"{len(near)} runs); {inside} run(s) inside the protective separation distance (ISO/TS 15066)"
            + (f"; least margin {margin:+.2f} m" if margin is not None else "")
        )
    else:
        lines.append("nobody came near a robot in any run")
    p50, p95 = risk.get("makespan_p50_s"), risk.get("makespan_p95_s")
    if p50 is not None:
        lines.append(f"makespan p50 {p50:.1f} s, p95 {p95:.1f} s")
    for f in (risk.get("failures") or [])[:3]:
        lines.append(f"failed from seed {f['seed']}: {f['reason']}")
    if risk.get("worst_seed") is not None:
        lines.append(f"worst run: seed {risk['worst_seed']}, rehearsed again with frames")
    return lines


def _quantile(xs: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``xs`` (nearest rank), None when empty."""
    if not xs:
        return None
    return float(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))])


def _run_row(seed: int, r: RehearsalReport) -> dict[str, Any]:
    o = r.observations
    return {
        "seed": seed,
        "ok": r.ok,
        "reason": r.reason,
        "makespan_s": r.makespan_s,
        "closest_m": _finite(o.closest_m),
        "closest_protective_m": o.closest_protective_m,
        "closest_at": o.closest_at,
        "collisions": len(o.collisions),
        "safety_stops": len(o.safety_stops),
    }


async def rehearse_many(
    plant: PlantDescription,
    plan: Plan,
    make_factory: MakeTwinFactory,
    out_dir: Path | str,
    runs: int,
    *,
    seed: int = 0,
    workers: int = 1,
    ray_address: str | None = None,
    ray_temp_dir: Path | str | None = None,
    start: object = None,
    timeout_margin: float = 4.0,
    render_worst: bool = True,
) -> RiskReport:
    """Rehearse ``plan`` ``runs`` times, run ``k`` from a start perturbed by seed ``seed + k``,
    without frames; then once more, with frames, the worst run (the first that failed, else the
    one that came closest to the protective separation distance). The runs go to ``workers``
    processes of this machine (one: a process all the same), or to a Ray cluster at
    ``ray_address`` ("local": one started here with ``workers`` CPUs). The same seeds give the
    same verdicts whichever runs them."""
    t0 = time.monotonic()
    out = Path(out_dir)
    seeds = [seed + k for k in range(runs)]
    args = [(make_factory, plant, plan, str(out / f"run_{s}"), timeout_margin, False, start, s) for s in seeds]
    # Every rehearsal, the worst run's again with frames too, is the main thread of a process of
    # its own, even with one worker: its linear algebra is held to one thread there (as on Ray),
    # so the runs are the same whichever way they run, and it never takes this process's
    # interpreter from a live twin or the robots' loops. (The pool starts its processes on the
    # first rehearsal it is given.)
    workers = max(1, workers)
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers if ray_address is None else 1, mp_context=spawn, initializer=batch_worker_init)
    try:
        if ray_address is not None:
            reports = await asyncio.to_thread(ray_map, _rehearse_in_worker, args, ray_address, workers, ray_temp_dir)
            how = f"Ray at {ray_address}" if ray_address != "local" else f"Ray started here, {workers} CPUs"
        else:
            reports = list(await asyncio.gather(*(loop.run_in_executor(pool, _rehearse_in_worker, *a) for a in args)))
            how = f"{workers} processes" if workers > 1 else "one worker process"
        rows = [_run_row(s, r) for s, r in zip(seeds, reports, strict=True)]
        worst = _worst(rows)
        title = f"{runs} perturbed rehearsals: closest approach per run; black: the protective separation distance"
        plot = await asyncio.to_thread(write_separation_plot, rows, out / "risk_separation.png", title)
        evidence: list[str] = [str(plot)]
        if worst is not None and render_worst:
            again = await loop.run_in_executor(
                pool,
                _rehearse_in_worker,
                make_factory,
                plant,
                plan,
                str(out / "worst"),
                timeout_margin,
                True,
                start,
                worst,
            )
            evidence += await asyncio.to_thread(_name_worst, again.evidence, worst)
    finally:
        # (cancelled: the rehearsals not started are dropped, and the event loop does not wait)
        pool.shutdown(wait=False, cancel_futures=True)
    return RiskReport(rows, worst, evidence, time.monotonic() - t0, how)


@dataclass
class ManyRehearsals:
    """:func:`rehearse_many` with its settings, for the coordinator: ``await many(plan, out)``."""

    plant: PlantDescription
    make_factory: MakeTwinFactory
    runs: int
    seed: int = 0
    workers: int = 1
    ray_address: str | None = None
    ray_temp_dir: Path | str | None = None
    timeout_margin: float = 4.0
    start: Callable[[], object] | None = None

    async def __call__(self, plan: Plan, out_dir: Path | str) -> RiskReport:
        return await rehearse_many(
            self.plant,
            plan,
            self.make_factory,
            out_dir,
            self.runs,
            seed=self.seed,
            workers=self.workers,
            ray_address=self.ray_address,
            ray_temp_dir=self.ray_temp_dir,
            start=self.start() if self.start is not None else None,
            timeout_margin=self.timeout_margin,
        )


def _name_worst(evidence: Sequence[str], seed: int) -> list[str]:
    """The worst run's files, renamed apart from the first rehearsal's (which share their names:
    the console finds evidence by name)."""
    out = []
    for name in evidence:
        path = Path(name)
        if path.is_file():
            out.append(str(path.replace(path.with_name(f"worst_seed{seed}_{path.name}"))))
    return out


def _worst(rows: Sequence[dict[str, Any]]) -> int | None:
    """The seed of the first failed run, else of the run that came closest to the protective
    separation distance (None: no run, or nobody came near a robot in any)."""
    failed = [r for r in rows if not r["ok"]]
    if failed:
        return int(failed[0]["seed"])
    near = [r for r in rows if r["closest_m"] is not None]
    if not near:
        return None
    return int(min(near, key=lambda r: r["closest_m"] - r["closest_protective_m"])["seed"])


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
            # The worker steps a twin as fast as a core allows, a batch job beside real-time work
            # (a live twin and robot runtimes, or a served plant's processes on this host, whose
            # runtimes latch a sensor fault when a joint state comes late): it yields the CPU to
            # them, and ends when this process does.
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=batch_worker_init
            )
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


__all__ = [
    "ManyRehearsals",
    "ProcessRehearser",
    "RehearsalReport",
    "Rehearser",
    "RiskReport",
    "TwinFactory",
    "TwinObservations",
    "TwinSession",
    "rehearse_many",
    "risk_lines",
]

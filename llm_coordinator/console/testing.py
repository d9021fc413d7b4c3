"""A scripted, in-memory :class:`~.services.ConsoleBackend` for tests and demonstrations.

It follows the real workflow closely enough to drive every page: a work order becomes a plan
by expanding a recipe (no model), passes stand-in guardrails, is "rehearsed" by scheduling,
waits for approval, and once approved runs its steps one after another through a
``step_runner`` (the wiring passes one that commands the twin). Hazardous steps wait for an
operator; a latched e-stop pauses the run. Its audit log is a hash-chained list in memory.

It is a fake: it keeps nothing on disk and is not the coordinator's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from plant.config import PlantDescription
from plant.skills import SKILLS

from .drawing import schedule
from .services import (
    REPLANNABLE_STATES,
    ActionRefused,
    AuditView,
    ConfirmationView,
    EstopPort,
    GuardrailView,
    JobView,
    PlanDetail,
    PlanSummary,
    PlantFeed,
    RehearsalView,
    StepView,
    WorkOrderRequest,
    now_s,
)

StepRunner = Callable[[StepView], Awaitable[bool]]


class MemoryEstops:
    """E-stop latches in memory (tests); the wiring uses the robots' file-backed latches."""

    def __init__(self) -> None:
        self.latched: dict[str, str] = {}

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason)."""
        return (robot in self.latched, self.latched.get(robot, ""))

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Latch (the first reason stays)."""
        self.latched.setdefault(robot, reason)

    def reset(self, robot: str, operator: str) -> None:
        """Clear."""
        self.latched.pop(robot, None)


@dataclass
class _Plan:
    detail: PlanDetail
    job_id: str = ""
    task: asyncio.Task[None] | None = None
    confirmed: dict[str, asyncio.Event] = field(default_factory=dict)


class ScriptedBackend:
    """In-memory backend: recipes expand to plans; steps run through ``step_runner``.

    ``stage_delay_s`` is how long each drafting stage takes (so progress can be watched);
    ``hazardous_skills`` are skills whose steps need an operator (on top of recipe flags).
    ``estops`` holds the e-stop latches (in memory unless given). ``on_change`` is called after
    anything that changes robot state, so the live feed can publish at once.
    """

    def __init__(
        self,
        plant: PlantDescription,
        *,
        feed: PlantFeed | None = None,
        stage_delay_s: float = 0.2,
        step_runner: StepRunner | None = None,
        hazardous_skills: frozenset[str] = frozenset({"hand_over"}),
        estops: EstopPort | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.plant = plant
        self.feed = feed or PlantFeed()
        self.stage_delay_s = stage_delay_s
        self.step_runner = step_runner
        self.hazardous_skills = hazardous_skills
        self.on_change = on_change
        self.records: list[AuditView] = []
        self.estops: EstopPort = estops or MemoryEstops()
        self.robot_skills: dict[str, str | None] = dict.fromkeys(plant.robots)
        self._plans: dict[str, _Plan] = {}
        self._jobs: dict[str, JobView] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ audit

    async def audit(self, actor: str, action: str, subject: str = "", detail: str = "") -> None:
        """Append a hash-chained record."""
        prev = self.records[-1].hash if self.records else ""
        rec = {"seq": len(self.records) + 1, "time_s": now_s(), "actor": actor, "action": action}
        rec.update(subject=subject, detail=detail)
        digest = hashlib.sha256((prev + json.dumps(rec, sort_keys=True)).encode()).hexdigest()
        self.records.append(AuditView.model_validate({**rec, "hash": digest}))

    async def audit_tail(self, limit: int = 50) -> list[AuditView]:
        """Newest first."""
        return list(reversed(self.records[-limit:]))

    # ------------------------------------------------------------------ plans

    async def list_plans(self) -> list[PlanSummary]:
        """Newest first."""
        return [
            PlanSummary.model_validate(p.detail.model_dump(include=set(PlanSummary.model_fields)))
            for p in reversed(self._plans.values())
        ]

    async def get_plan(self, plan_id: str) -> PlanDetail | None:
        """With the audit records whose subject is this plan."""
        p = self._plans.get(plan_id)
        if p is None:
            return None
        trail = [r for r in self.records if r.subject in (f"plan {plan_id}", f"job {p.job_id}")]
        return p.detail.model_copy(update={"audit": trail}, deep=True)

    async def evidence_file(self, plan_id: str, name: str) -> Path | None:
        """No evidence files: rehearsal here is scheduling only."""
        return None

    def _plan(self, plan_id: str) -> _Plan:
        p = self._plans.get(plan_id)
        if p is None:
            raise ActionRefused(f"There is no plan {plan_id!r}.", 404)
        return p

    async def approve(self, plan_id: str, actor: str, reason: str) -> None:
        """Approve and start running."""
        p = self._plan(plan_id)
        if p.detail.state != "awaiting_approval":
            raise ActionRefused(f"Plan {plan_id} is {p.detail.state.replace('_', ' ')}, not awaiting approval.")
        if not all(g.passed for g in p.detail.guardrails):
            raise ActionRefused(f"Plan {plan_id} fails a guardrail and cannot be approved.")
        p.detail = p.detail.model_copy(update={"state": "approved", "decision": f"approved by {actor}: {reason}"})
        await self.audit(actor, "approve", f"plan {plan_id}", f"{reason} (hash {p.detail.plan_hash[:12]})")
        task = asyncio.create_task(self._run(p, actor))
        p.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reject(self, plan_id: str, actor: str, reason: str) -> None:
        """Reject with a reason."""
        p = self._plan(plan_id)
        if p.detail.state != "awaiting_approval":
            raise ActionRefused(f"Plan {plan_id} is {p.detail.state.replace('_', ' ')}, not awaiting approval.")
        p.detail = p.detail.model_copy(update={"state": "rejected", "decision": f"rejected by {actor}: {reason}"})
        await self.audit(actor, "reject", f"plan {plan_id}", reason)

    async def replan(self, plan_id: str, actor: str) -> JobView:
        """A new job for the plan's work order (the scripted planner ignores feedback)."""
        p = self._plan(plan_id)
        if p.detail.state not in REPLANNABLE_STATES:
            raise ActionRefused(
                f"Plan {plan_id} is {p.detail.state.replace('_', ' ')}; there is nothing to draft again."
            )
        params = {k: v for k, v in p.detail.params.items() if isinstance(v, int | float | str)}
        request = WorkOrderRequest(text=p.detail.work_order[:4000], recipe=p.detail.recipe, params=params)
        job = await self.submit_work_order(request, actor)
        await self.audit(actor, "replan", f"plan {plan_id}", p.detail.decision)
        return job

    # ------------------------------------------------------------------ operator

    async def pending_confirmations(self) -> list[ConfirmationView]:
        """Hazardous steps of approved or running plans not yet confirmed."""
        out = []
        for p in self._plans.values():
            if p.detail.state not in ("approved", "running", "paused"):
                continue
            for s in p.detail.steps:
                if s.hazardous and s.confirmation == "awaiting":
                    out.append(
                        ConfirmationView(
                            plan_id=p.detail.id,
                            plan_title=p.detail.title,
                            step_id=s.id,
                            agent=s.agent,
                            skill=s.skill,
                            args=s.args,
                            reason=s.hazard_reason,
                        )
                    )
        return out

    def _set_step(self, p: _Plan, step_id: str, **update: object) -> None:
        steps = [s.model_copy(update=update) if s.id == step_id else s for s in p.detail.steps]
        p.detail = p.detail.model_copy(update={"steps": steps})

    def _awaiting(self, plan_id: str, step_id: str) -> _Plan:
        p = self._plan(plan_id)
        step = next((s for s in p.detail.steps if s.id == step_id), None)
        if step is None:
            raise ActionRefused(f"Plan {plan_id} has no step {step_id!r}.", 404)
        if not step.hazardous or step.confirmation != "awaiting":
            raise ActionRefused(f"Step {step_id} of plan {plan_id} is not waiting for a confirmation.")
        return p

    async def confirm_step(self, plan_id: str, step_id: str, actor: str, note: str) -> None:
        """Let a hazardous step run."""
        p = self._awaiting(plan_id, step_id)
        self._set_step(p, step_id, confirmation="confirmed", confirmed_by=actor)
        await self.audit(actor, "confirm_step", f"plan {plan_id}", f"step {step_id}: {note or 'confirmed'}")
        p.confirmed.setdefault(step_id, asyncio.Event()).set()

    async def refuse_step(self, plan_id: str, step_id: str, actor: str, reason: str) -> None:
        """Refuse a hazardous step: the plan pauses."""
        p = self._awaiting(plan_id, step_id)
        self._set_step(p, step_id, confirmation="refused", confirmed_by=actor)
        p.detail = p.detail.model_copy(update={"state": "paused"})
        await self.audit(actor, "refuse_step", f"plan {plan_id}", f"step {step_id}: {reason}")
        p.confirmed.setdefault(step_id, asyncio.Event()).set()

    async def trip_estop(self, robot: str | None, actor: str, reason: str) -> None:
        """Latch one or every robot."""
        for r in [robot] if robot else list(self.plant.robots):
            if r not in self.plant.robots:
                raise ActionRefused(f"There is no robot {r!r}.", 404)
            await asyncio.to_thread(self.estops.trip, r, f"{reason} (by {actor})", actor)
        await self.audit(actor, "estop_trip", f"robot {robot or 'all'}", reason)
        self._changed()

    async def reset_estop(self, robot: str, actor: str, note: str) -> None:
        """Clear one robot's latch."""
        if robot not in self.plant.robots:
            raise ActionRefused(f"There is no robot {robot!r}.", 404)
        if not self.estops.state(robot)[0]:
            raise ActionRefused(f"The e-stop of {robot} is not latched.")
        await asyncio.to_thread(self.estops.reset, robot, actor)
        await self.audit(actor, "estop_reset", f"robot {robot}", note)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ work orders

    async def submit_work_order(self, request: WorkOrderRequest, actor: str) -> JobView:
        """Queue a job and start drafting in the background."""
        job = JobView(id=str(next(self._ids)), state="queued", submitted_by=actor, submitted_s=now_s(), request=request)
        self._jobs[job.id] = job
        what = request.recipe or request.text[:80]
        await self.audit(actor, "submit_work_order", f"job {job.id}", what)
        task = asyncio.create_task(self._draft(job.id, actor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def job(self, job_id: str) -> JobView | None:
        """Progress of one job."""
        return self._jobs.get(job_id)

    async def jobs(self) -> list[JobView]:
        """Newest first."""
        return list(reversed(self._jobs.values()))

    def _job_update(self, job_id: str, state: str, message: str, **kw: object) -> None:
        job = self._jobs[job_id]
        self._jobs[job_id] = job.model_copy(update={"state": state, "messages": [*job.messages, message], **kw})

    def _recipe_for(self, request: WorkOrderRequest) -> str | None:
        if request.recipe:
            return request.recipe
        words = request.text.lower().replace("-", " ").replace("_", " ")
        for name in self.plant.recipes:
            if name.replace("_", " ") in words:
                return name
        if "quarantine" in words and "quarantine_part" in self.plant.recipes:
            return "quarantine_part"
        if ("machine" in words or "cnc" in words) and "machine_part" in self.plant.recipes:
            return "machine_part"
        return None

    async def _draft(self, job_id: str, actor: str) -> None:
        job = self._jobs[job_id]
        await asyncio.sleep(self.stage_delay_s)
        self._job_update(job_id, "drafting", "asking the planner for a plan")
        await asyncio.sleep(self.stage_delay_s)
        recipe = self._recipe_for(job.request)
        if recipe is None:
            self._job_update(
                job_id,
                "failed",
                "no plan",
                error="The scripted planner understands recipe names only; choose a recipe or name one.",
            )
            await self.audit("planner", "work_order_failed", f"job {job_id}", "no recipe matched")
            return
        steps = self._expand(recipe, job.request.params)
        self._job_update(job_id, "checking", f"drafted {len(steps)} steps from recipe {recipe}; checking guardrails")
        await asyncio.sleep(self.stage_delay_s)
        rules = self._guardrails(steps)
        self._job_update(job_id, "rehearsing", f"{len(rules)} guardrails pass; rehearsing in the twin")
        await asyncio.sleep(self.stage_delay_s)
        times = schedule(steps)
        makespan = max(s + d for s, d in times)
        steps = [s.model_copy(update={"start_s": t0, "duration_s": d}) for s, (t0, d) in zip(steps, times, strict=True)]
        plan_id = f"p{len(self._plans) + 1}"
        body = json.dumps([s.model_dump(mode="json") for s in steps], sort_keys=True)
        params = dict(job.request.params)
        detail = PlanDetail(
            id=plan_id,
            title=self.plant.recipes[recipe].description.capitalize(),
            state="awaiting_approval",
            created_s=now_s(),
            created_by=actor,
            makespan_s=makespan,
            hazardous_steps=sum(s.hazardous for s in steps),
            work_order=job.request.text or f"run recipe {recipe}",
            recipe=recipe,
            params=params,
            plan_hash=hashlib.sha256(body.encode()).hexdigest(),
            steps=steps,
            guardrails=rules,
            rehearsal=RehearsalView(ok=True, makespan_s=makespan),
        )
        self._plans[plan_id] = _Plan(detail, job_id=job_id)
        await self.audit("planner", "plan_drafted", f"plan {plan_id}", f"from job {job_id}, recipe {recipe}")
        self._job_update(
            job_id, "awaiting_approval", f"rehearsed: makespan {makespan:.0f} s; waiting for approval", plan_id=plan_id
        )

    def _expand(self, recipe: str, params: dict[str, int | float | str]) -> list[StepView]:
        rc = self.plant.recipes[recipe]
        values = {k: p.default for k, p in rc.params.items()} | dict(params)

        def fill(v: int | float | str) -> int | float | str:
            if isinstance(v, str) and v.startswith("{") and v.endswith("}"):
                got = values.get(v[1:-1])
                return got if got is not None else v
            return v

        out = []
        for s in rc.steps:
            hazardous = s.hazardous or s.skill in self.hazardous_skills
            out.append(
                StepView(
                    id=s.id,
                    agent=str(fill(s.agent)),
                    skill=s.skill,
                    args={k: fill(v) for k, v in s.args.items()},
                    after=list(s.after),
                    hazardous=hazardous,
                    hazard_reason="robot-to-robot hand-over: pinch point between two grippers" if hazardous else "",
                    duration_s=s.expected_duration_s or SKILLS[s.skill].nominal_duration_s,
                    confirmation="awaiting" if hazardous else "not_needed",
                )
            )
        return out

    def _guardrails(self, steps: list[StepView]) -> list[GuardrailView]:
        agents = self.plant.agents()
        n_agents = len({s.agent for s in steps})
        return [
            GuardrailView(rule="agents_exist", passed=True, reason=f"{n_agents} agents, all in the plant"),
            GuardrailView(
                rule="skills_allowed",
                passed=all(s.agent in agents and s.skill in self.plant.agent_skills(s.agent) for s in steps),
                reason="every step's skill is one its agent may perform",
            ),
            GuardrailView(rule="dependencies", passed=True, reason="every 'after' names an earlier step; no cycle"),
            GuardrailView(rule="door_interlock", passed=True, reason="the CNC door is open when a robot reaches in"),
            GuardrailView(rule="keep_out_zones", passed=True, reason="no target lies in a keep-out zone"),
        ]

    # ------------------------------------------------------------------ running

    async def _run(self, p: _Plan, actor: str) -> None:
        plan_id = p.detail.id
        p.detail = p.detail.model_copy(update={"state": "running"})
        await self.audit("executor", "run_started", f"plan {plan_id}", f"approved by {actor}")
        for step in list(p.detail.steps):
            if step.hazardous:
                ev = p.confirmed.setdefault(step.id, asyncio.Event())
                await ev.wait()
                current = next(s for s in p.detail.steps if s.id == step.id)
                if current.confirmation == "refused":
                    await self.audit("executor", "run_paused", f"plan {plan_id}", f"step {step.id} refused")
                    return
            while step.agent in self.plant.robots and self.estops.state(step.agent)[0]:
                p.detail = p.detail.model_copy(update={"state": "paused"})
                await asyncio.sleep(0.05)
            p.detail = p.detail.model_copy(update={"state": "running"})
            self._set_step(p, step.id, status="running")
            if step.agent in self.robot_skills:
                self.robot_skills[step.agent] = step.skill
                self._changed()
            ok = True
            if self.step_runner is not None:
                try:
                    ok = await self.step_runner(step)
                except Exception as exc:  # a failed step pauses the plan with the reason
                    ok = False
                    await self.audit("executor", "step_error", f"plan {plan_id}", f"step {step.id}: {exc}")
            if step.agent in self.robot_skills:
                self.robot_skills[step.agent] = None
                self._changed()
            self._set_step(p, step.id, status="done" if ok else "failed")
            if not ok:
                p.detail = p.detail.model_copy(update={"state": "failed"})
                await self.audit("executor", "step_failed", f"plan {plan_id}", f"step {step.id}")
                return
        p.detail = p.detail.model_copy(update={"state": "done"})
        await self.audit("executor", "run_done", f"plan {plan_id}", "every step done")

    async def aclose(self) -> None:
        """Cancel background work."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t

"""The console's backend over the coordinator: its plan store, approval gate, coordinator and
executor, and the robots' e-stop latches. One store, one audit log: the console writes its
own records (logins, refusals, e-stops) into the coordinator's hash-chained log.

Store calls block on the database, so each runs in a worker thread.

Work-order jobs live in the store's ``jobs`` table, so they survive a restart; when the backend
starts, the jobs a dead process left in flight are marked failed, and their plans, still drafted,
``interrupted`` (both can be drafted again); a plan it was running is ``paused`` with the reason
(an alarm on every page), for a person to look at the plant and draft a recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from llm_coordinator.approval import ApprovalGate, NotApproved
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.executor import Executor
from llm_coordinator.rehearsal import risk_lines
from llm_coordinator.snapshot import PlantSnapshot
from llm_coordinator.status import CONFIRMABLE, STAGES, WorkOrderStage
from llm_coordinator.store import AuditRow, PlanRow, Store, StoreError
from plant.config import PlantDescription

from .services import (
    ActionRefused,
    Alarm,
    AuditView,
    ConfirmationView,
    EstopPort,
    GuardrailView,
    InspectionView,
    JobView,
    LivePlan,
    LiveStep,
    LiveView,
    PlanDetail,
    PlanSummary,
    PlantFeed,
    RehearsalView,
    StepView,
    WorkOrderRequest,
    now_s,
)

log = logging.getLogger(__name__)


def _sidecar(image: Path) -> dict[str, Any] | None:
    """What an inspection image's sidecar says was judged, or None (missing, unreadable)."""
    try:
        data = json.loads(image.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_STEP_STATUS: dict[str, Literal["pending", "running", "done", "failed", "skipped"]] = {
    "running": "running",
    "done": "done",
    "failed": "failed",
    "skipped": "skipped",
}


def audit_view(row: AuditRow) -> AuditView:
    """An audit row as the console shows it: a console record's subject and detail as written,
    a coordinator record's payload as compact JSON."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    subject = str(payload.get("subject", f"plan {row.plan_id}" if row.plan_id is not None else ""))
    detail = payload.get("detail")
    if detail is None:
        rest = {k: v for k, v in payload.items() if k != "subject"}
        detail = json.dumps(rest, separators=(", ", ": "), default=str)[:300] if rest else ""
    elif payload.get("step"):  # a step's record (executor progress, confirmations, refusals) names it
        detail = f"step {payload['step']}: {detail}" if detail else f"step {payload['step']}"
    return AuditView(
        seq=row.seq,
        time_s=row.at,
        actor=row.actor,
        action=row.action,
        subject=subject,
        detail=str(detail),
        hash=row.hash,
    )


class CoordinatorBackend:
    """:class:`~.services.ConsoleBackend` over :class:`Store`, :class:`ApprovalGate`,
    :class:`Coordinator` and (optionally) an :class:`Executor` that runs approved plans."""

    def __init__(
        self,
        plant: PlantDescription,
        store: Store,
        gate: ApprovalGate,
        coordinator: Coordinator,
        estops: EstopPort,
        *,
        executor: Executor | None = None,
        feed: PlantFeed | None = None,
        on_change: Callable[[], None] | None = None,
        state: Callable[[], Awaitable[PlantSnapshot]] | None = None,
    ) -> None:
        self.plant, self.store, self.gate, self.coordinator = plant, store, gate, coordinator
        self.estops, self.executor = estops, executor
        self.feed = feed or PlantFeed()
        #: Called after an e-stop is tripped or reset (the wiring publishes a snapshot at once).
        self.on_change = on_change
        #: Reads the plant's state (machine states, doors, faults) for the planner's context and
        #: the interlock guardrails; without it they judge against the static description only.
        self.state = state
        #: This process's jobs as last written to the store (the store is the record).
        self._jobs: dict[str, JobView] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[int, asyncio.Task[Any]] = {}
        self._ready: asyncio.Event | None = None  # set once warm_up ended (None: none begun)
        self._recover()

    def _recover(self) -> None:
        """Jobs left in flight by a process that died (no clean shutdown): failed, with the reason;
        their plans, if still drafted or rehearsed, ``interrupted``. Blocks on the store once, at
        start-up. (Several console processes over one database would fail each other's jobs: one
        console per database.)"""
        for row in self.store.jobs(10_000, states=STAGES):
            job = JobView.model_validate(row.body)
            why = f"interrupted: the console stopped while this work order was {job.state}; draft it again"
            job = job.model_copy(update={"state": "failed", "error": why, "messages": [*job.messages, why]})
            self.store.update_job(row.id, job.model_dump(mode="json"), "failed", row.plan_id)
            if row.plan_id is None:
                continue
            with contextlib.suppress(StoreError):
                if self.store.get(row.plan_id).status in ("drafted", "rehearsed"):
                    self.store.set_status(row.plan_id, "interrupted", actor="console", reasons=[why])
            log.warning("work order job %s (plan %s) was interrupted by a restart", row.id, row.plan_id)
        # Plans a dead process was running: nothing runs them now; they wait for a person.
        for plan in self.store.plans(10_000):
            if plan.status != "running":
                continue
            steps = [
                sid
                for sid, st in self.store.progress(plan.id, plan.content_hash or "").items()
                if st == "running" and ":" not in sid
            ]
            then = f" (running then: {', '.join(steps)})" if steps else ""
            why = (
                f"the console stopped while this plan ran{then}; nothing resumes it unattended: "
                "check the plant, then draft a recovery (or `atelier run` it)"
            )
            self.store.set_status(plan.id, "paused", actor="console", reasons=[why])
            log.warning("plan %s was running when the console stopped: paused", plan.id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("console background work failed", exc_info=task.exception())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    def _pid(plan_id: str) -> int:
        try:
            return int(plan_id)
        except ValueError:
            raise ActionRefused(f"There is no plan {plan_id!r}.", 404) from None

    # ------------------------------------------------------------------ audit

    async def audit(self, actor: str, action: str, subject: str = "", detail: str = "") -> None:
        """Into the coordinator's audit log."""
        await asyncio.to_thread(self.store.audit, actor, action, None, {"subject": subject, "detail": detail})

    async def audit_tail(self, limit: int = 50) -> list[AuditView]:
        """Newest first."""
        rows = await asyncio.to_thread(self.store.audit_rows)
        return [audit_view(r) for r in reversed(rows[-limit:])]

    # ------------------------------------------------------------------ plans

    def _summary(self, row: PlanRow) -> PlanSummary:
        plan = self.store.plan(row.id)
        rehearsal = self.store.rehearsal(row.id)
        first = next(iter(self.store.audit_rows(row.id)), None)
        return PlanSummary(
            id=str(row.id),
            title=row.work_order[:100],
            state=row.status,
            created_s=row.created_at,
            created_by=first.actor if first is not None else "",
            makespan_s=rehearsal.makespan_s if rehearsal is not None else None,
            hazardous_steps=len(self.gate.required_confirmations(plan)) if plan is not None else 0,
        )

    async def warm_up(self) -> None:
        """(Work orders that come meanwhile wait for it, as they wait for each other.)"""
        ready = self._ready = asyncio.Event()
        t0 = asyncio.get_running_loop().time()
        try:
            problems = await self.coordinator.warm_up()
            for problem in problems:
                log.warning("warming up: %s", problem)
            log.info("ready for work orders after %.1f s", asyncio.get_running_loop().time() - t0)
        finally:
            ready.set()

    async def list_plans(self) -> list[PlanSummary]:
        """Newest first."""

        def work() -> list[PlanSummary]:
            return [self._summary(r) for r in self.store.plans(200)]

        return await asyncio.to_thread(work)

    def _detail(self, plan_id: int) -> PlanDetail | None:
        try:
            row = self.store.get(plan_id)
        except StoreError:
            return None
        summary = self._summary(row)
        plan = self.store.plan(plan_id)
        version = self.store.version(plan_id)
        rehearsal = self.store.rehearsal(plan_id)
        steps: list[StepView] = []
        if plan is not None:
            h = plan.content_hash()
            progress = self.store.progress(plan_id, h)
            confirmed = self._confirmed(plan_id, h, progress)
            hazards = self.gate.required_confirmations(plan)
            timing: dict[str, tuple[float, float]] = {}
            if rehearsal is not None:
                for s in rehearsal.report.get("steps", []):
                    if isinstance(s, dict) and "id" in s and "start_s" in s and "end_s" in s:
                        timing[str(s["id"])] = (float(s["start_s"]), float(s["end_s"]) - float(s["start_s"]))
            if not all(s.id in timing for s in plan.steps):
                # One timing for the chart and the makespan: the rehearsal's records when they
                # cover every step, else the plan's own (plan.earliest_starts, as the scheduler).
                starts = plan.planned_starts()
                timing = {s.id: (starts[s.id], s.expected_duration_s) for s in plan.steps if s.id in starts}
            if timing:
                summary = summary.model_copy(update={"makespan_s": max(a + d for a, d in timing.values())})
            decisions = {d.id: d for d in plan.decisions}
            for s in plan.steps:
                status = progress.get(s.id, "pending")
                start, dur = timing.get(s.id, (None, s.expected_duration_s))
                condition = " and ".join(
                    ("only if " if want else "unless ") + decisions[did].condition.describe()
                    if decisions[did].kind == "condition"
                    else ("only while " if want else "unless ") + decisions[did].condition.describe()
                    for did, want in s.when.items()
                    if did in decisions
                )
                steps.append(
                    StepView(
                        id=s.id,
                        agent=s.agent,
                        skill=s.skill,
                        args=dict(s.args),
                        after=list(s.after),
                        hazardous=s.id in hazards,
                        hazard_reason=hazards.get(s.id, ""),
                        start_s=start,
                        duration_s=dur,
                        status=_STEP_STATUS.get(status, "pending"),
                        confirmation=("confirmed" if s.id in confirmed else "awaiting")
                        if s.id in hazards
                        else "not_needed",
                        confirmed_by=confirmed.get(s.id),
                        condition=condition,
                    )
                )
        guardrails = []
        for f in version.verdict if version is not None else []:
            where = f"step {f.get('step')}: " if f.get("step") else ""
            guardrails.append(
                GuardrailView(
                    rule=str(f.get("rule", "?")), passed=bool(f.get("ok")), reason=where + str(f.get("reason", ""))
                )
            )
        reh = None
        if rehearsal is not None:
            rep = rehearsal.report
            reh = RehearsalView(
                ok=rehearsal.ok,
                makespan_s=summary.makespan_s if summary.makespan_s is not None else rehearsal.makespan_s,
                collisions=[str(c) for c in rep.get("collisions", [])],
                safety_stops=[str(c) for c in rep.get("safety_stops", [])],
                evidence=[Path(p).name for p in rehearsal.evidence],
                inspections=self._inspections(plan_id, rehearsal.evidence),
            )
            risk = rep.get("risk")
            if isinstance(risk, dict):
                reh.risk = risk_lines(risk)
                reh.risk_ok = (
                    "error" not in risk and risk.get("ok") == risk.get("runs") and not risk.get("inside_protective")
                )
        decision = self.store.latest_decision(plan_id)
        decided = f"{decision.decision} by {decision.who}: {decision.reason}" if decision is not None else ""
        if row.reasons and row.status not in ("approved", "rejected"):
            # Why it stopped or was refused (a failed step, a rule, the rehearsal), after who decided.
            why = f"{row.status.replace('_', ' ')}: " + "; ".join(row.reasons)
            decided = f"{decided}. {why[:1].upper()}{why[1:]}" if decided else why
        rows = self.store.audit_rows(plan_id)
        audit = [audit_view(r) for r in rows]
        # A recipe order's parameters are in the planner's record of its draft (submit_recipe).
        drafted = next((r.payload for r in rows if r.action == "planned" and isinstance(r.payload, dict)), {})
        params = drafted.get("params") if isinstance(drafted.get("params"), dict) else {}
        return PlanDetail(
            **summary.model_dump(),
            work_order=row.work_order,
            recipe=plan.recipe if plan is not None else None,
            params=params,
            plan_hash=row.content_hash or "",
            steps=steps,
            guardrails=guardrails,
            rehearsal=reh,
            decision=decided,
            audit=audit,
            model=str(drafted.get("model") or ""),
        )

    async def get_plan(self, plan_id: str) -> PlanDetail | None:
        """With steps, guardrail findings, rehearsal and the plan's audit trail."""
        try:
            pid = int(plan_id)
        except ValueError:
            return None
        return await asyncio.to_thread(self._detail, pid)

    async def evidence_file(self, plan_id: str, name: str) -> Path | None:
        """Only files the rehearsal recorded for this plan, by name."""
        try:
            rehearsal = await asyncio.to_thread(self.store.rehearsal, self._pid(plan_id))
        except (StoreError, ActionRefused):  # no such plan: no such file either
            return None
        for p in rehearsal.evidence if rehearsal is not None else []:
            path = Path(p)
            if path.name == name and await asyncio.to_thread(path.is_file):
                return path
        return None

    def _inspections(self, plan_id: int, evidence: list[str]) -> list[InspectionView]:
        """The vision verdicts among a rehearsal's evidence (each image has a sidecar saying
        what was judged; sim.vision.write_inspection), with any overrule recorded for it."""
        overruled = {
            str(
                r.payload.get("image")
            ): f"overruled to {r.payload.get('label')} by {r.actor}: {r.payload.get('reason')}"
            for r in self.store.audit_rows(plan_id)
            if r.action == "inspection_overruled" and isinstance(r.payload, dict)
        }
        out = []
        for p in evidence:
            path = Path(p)
            if not path.name.startswith("inspection_"):
                continue
            side = _sidecar(path)
            if side is None:
                continue
            out.append(
                InspectionView(
                    image=path.name,
                    machine=str(side.get("machine", "")),
                    part=str(side.get("part", "")),
                    passed=bool(side.get("passed")),
                    defect=side.get("defect") if isinstance(side.get("defect"), str) else None,
                    confidence=float(side.get("confidence", 0.0)),
                    labels=[str(x) for x in side.get("labels", [])],
                    overruled=overruled.get(path.name, ""),
                )
            )
        return out

    async def recent_inspections(self, limit: int = 4) -> list[tuple[str, InspectionView]]:
        def work() -> list[tuple[str, InspectionView]]:
            out: list[tuple[str, InspectionView]] = []
            for row in self.store.plans(50):
                rehearsal = self.store.rehearsal(row.id)
                if rehearsal is None:
                    continue
                out += [(str(row.id), v) for v in reversed(self._inspections(row.id, rehearsal.evidence))]
                if len(out) >= limit:
                    break
            return out[:limit]

        return await asyncio.to_thread(work)

    async def overrule_inspection(self, plan_id: str, image: str, actor: str, label: str, reason: str) -> None:
        pid = self._pid(plan_id)
        path = await self.evidence_file(plan_id, image)
        side = None if path is None or not image.startswith("inspection_") else _sidecar(path)
        if path is None or side is None:
            raise ActionRefused(f"Plan {plan_id} has no inspection image {image!r}.")
        labels = [str(x) for x in side.get("labels", [])]
        if label not in labels:
            raise ActionRefused(f"{label!r} is not a label of this part: one of {', '.join(labels)}.")
        verdict = "good" if side.get("passed") else str(side.get("defect"))
        earlier = [
            r.payload.get("label")
            for r in await asyncio.to_thread(self.store.audit_rows, pid)
            if r.action == "inspection_overruled" and isinstance(r.payload, dict) and r.payload.get("image") == image
        ]
        now = earlier[-1] if earlier else verdict
        if label == now:
            said = "overruled to" if earlier else "the verdict is"
            raise ActionRefused(f"This part is {said} {label} already; there is nothing to overrule.")
        camera = path.with_name(path.stem + "_camera.png")
        part_type = str(side.get("part_type") or "unknown")
        folder = self.coordinator.evidence_dir.parent / "vision_examples" / part_type / label
        kept = folder / f"plan{pid}_{path.stem}.png"

        def keep() -> None:
            import shutil

            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(camera, kept)
            note = {"plan": pid, "actor": actor, "reason": reason, "label": label, "verdict": side, "at": now_s()}
            kept.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")

        try:
            await asyncio.to_thread(keep)
        except OSError as exc:
            raise ActionRefused(f"The example could not be kept ({exc.strerror}); nothing was recorded.") from None
        payload = {"image": image, "machine": side.get("machine"), "part": side.get("part"), "verdict": verdict}
        payload.update(label=label, reason=reason, example=str(kept))
        await asyncio.to_thread(self.store.audit, actor, "inspection_overruled", pid, payload)

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as exc:
            raise ActionRefused(str(exc).capitalize() + ".") from None

    async def approve(self, plan_id: str, actor: str, reason: str, plan_hash: str | None = None) -> None:
        """Through the gate (bound to the current hash, and refused when ``plan_hash``, the
        version the supervisor looked at, is no longer it); then run it when authorized."""
        pid = self._pid(plan_id)
        await self._call(self.gate.approve, pid, actor, reason, plan_hash)
        await self._maybe_run(pid, actor)

    async def reject(self, plan_id: str, actor: str, reason: str) -> None:
        """Through the gate; the reason becomes feedback for the planner."""
        pid = self._pid(plan_id)
        row = await self._call(self.store.get, pid)
        if row.status != "awaiting_approval":
            raise ActionRefused(f"Plan {plan_id} is {row.status.replace('_', ' ')}, not awaiting approval.")
        await self._call(self.gate.reject, pid, actor, reason)

    async def _maybe_run(self, pid: int, actor: str) -> None:
        if self.executor is None:
            return
        previous = self._runs.get(pid)
        if previous is not None and not previous.done():
            # Still running, or winding down (a paused run drafting its recovery): look again
            # when it has ended, so a confirmation given meanwhile is not lost.
            self._spawn(self._after(previous, pid, actor))
            return
        plan = await asyncio.to_thread(self.store.plan, pid)
        if plan is None:
            return
        try:
            await asyncio.to_thread(self.gate.authorize, pid, plan)
        except NotApproved:
            return  # waits for the missing confirmations
        executor = self.executor
        self._runs[pid] = self._spawn(executor.run(pid, actor=actor))

    async def _after(self, previous: asyncio.Task[Any], pid: int, actor: str) -> None:
        await asyncio.wait({previous})
        if self._runs.get(pid) is previous:
            await self._maybe_run(pid, actor)

    async def replan(self, plan_id: str, actor: str) -> JobView:
        """A new job that drafts the plan's work order again, the reasons it was turned down
        going to the model as feedback (:meth:`Coordinator.replan`)."""
        pid = self._pid(plan_id)
        feedback = await self._call(self.coordinator.replan_feedback, pid)
        row = await self._call(self.store.get, pid)
        job = await self._new_job(
            WorkOrderRequest(text=row.work_order[:4000]),
            actor,
            [f"drafting the work order of plan {pid} again; the planner is told: " + "; ".join(feedback)],
        )
        self._spawn(self._draft(job.id, actor, replan_of=pid))
        return job

    # ------------------------------------------------------------------ operator

    async def pending_confirmations(self) -> list[ConfirmationView]:
        """Unconfirmed hazardous steps of plans awaiting approval, approved, running or paused."""

        def work() -> list[ConfirmationView]:
            out = []
            for row in self.store.plans(200):
                if row.status not in CONFIRMABLE:
                    continue
                plan = self.store.plan(row.id)
                if plan is None:
                    continue
                h = plan.content_hash()
                done = self.gate.fresh_confirmations(row.id, h)
                finished = self.store.progress(row.id, h)
                for step_id, why in self.gate.required_confirmations(plan).items():
                    if step_id in done or finished.get(step_id) == "done":
                        continue
                    s = plan.step(step_id)
                    out.append(
                        ConfirmationView(
                            plan_id=str(row.id),
                            plan_title=row.work_order[:100],
                            step_id=step_id,
                            agent=s.agent,
                            skill=s.skill,
                            args=dict(s.args),
                            reason=why,
                        )
                    )
            return out

        return await asyncio.to_thread(work)

    async def confirm_step(self, plan_id: str, step_id: str, actor: str, note: str) -> None:
        """Through the gate; runs the plan once every confirmation is in."""
        pid = self._pid(plan_id)
        row = await self._call(self.store.get, pid)
        if row.status not in CONFIRMABLE:
            raise ActionRefused(f"Plan {plan_id} is {row.status.replace('_', ' ')}; nothing to confirm.")
        await self._call(self.gate.confirm, pid, step_id, actor)
        if note:
            await asyncio.to_thread(self.store.audit, actor, "confirm_note", pid, {"step": step_id, "detail": note})
        await self._maybe_run(pid, actor)

    async def refuse_step(self, plan_id: str, step_id: str, actor: str, reason: str) -> None:
        """Recorded in the audit log; a running plan stops, and the plan becomes
        ``refused_by_operator`` with the reason, for the supervisor to see and draft again."""
        pid = self._pid(plan_id)
        row = await self._call(self.store.get, pid)
        if row.status not in CONFIRMABLE:
            raise ActionRefused(f"Plan {plan_id} is {row.status.replace('_', ' ')}; nothing to refuse.")

        def hazardous() -> bool:
            plan = self.store.plan(pid)
            return plan is not None and step_id in self.gate.required_confirmations(plan)

        if not await self._call(hazardous):
            raise ActionRefused(f"Step {step_id} of plan {plan_id} is not a hazardous step.")
        await asyncio.to_thread(self.store.audit, actor, "refuse_step", pid, {"step": step_id, "detail": reason})
        await asyncio.to_thread(self.store.add_feedback, pid, "refused_step", f"{step_id}: {reason}")
        run = self._runs.get(pid)
        if run is not None and not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        why = f"operator {actor} refused step {step_id}: {reason}"
        await self._call(lambda: self.store.set_status(pid, "refused_by_operator", actor=actor, reasons=[why]))

    async def trip_estop(self, robot: str | None, actor: str, reason: str) -> None:
        """Latch through the robots' latch; audited."""
        for r in [robot] if robot else list(self.plant.robots):
            if r not in self.plant.robots:
                raise ActionRefused(f"There is no robot {r!r}.", 404)
            await asyncio.to_thread(self.estops.trip, r, f"{reason} (by {actor})", actor)
        self._changed()
        await self.audit(actor, "estop_trip", f"robot {robot or 'all'}", reason)

    async def reset_estop(self, robot: str, actor: str, note: str) -> None:
        """The operator's reset through the robots' latch; audited."""
        if robot not in self.plant.robots:
            raise ActionRefused(f"There is no robot {robot!r}.", 404)
        if not (await asyncio.to_thread(self.estops.state, robot))[0]:
            raise ActionRefused(f"The e-stop of {robot} is not latched.")
        await asyncio.to_thread(self.estops.reset, robot, actor)
        self._changed()
        await self.audit(actor, "estop_reset", f"robot {robot}", note)

    # ------------------------------------------------------------------ work orders

    async def submit_work_order(self, request: WorkOrderRequest, actor: str) -> JobView:
        """Plan in the background through the coordinator: a recipe expands without the model
        (:meth:`Coordinator.submit_recipe`), words go to the planner (:meth:`Coordinator.submit`)."""
        job = await self._new_job(request, actor, [])
        self._spawn(self._draft(job.id, actor))
        return job

    async def _new_job(self, request: WorkOrderRequest, actor: str, messages: list[str]) -> JobView:
        job = JobView(
            id="0", state="drafting", submitted_by=actor, submitted_s=now_s(), request=request, messages=messages
        )
        job_id = await self._call(self.store.add_job, job.model_dump(mode="json"), job.state)
        job = job.model_copy(update={"id": str(job_id)})
        await self._call(self._save, job)
        self._jobs[job.id] = job
        return job

    def _save(self, job: JobView) -> None:
        plan_id = int(job.plan_id) if job.plan_id is not None and job.plan_id.isdigit() else None
        self.store.update_job(int(job.id), job.model_dump(mode="json"), job.state, plan_id)

    def _update(self, job_id: str, **kw: Any) -> None:
        """Kept in the store before it is shown (a stage is a short write; the coordinator
        calls this between its steps)."""
        job = self._jobs[job_id]
        messages = [*job.messages, kw.pop("message")] if "message" in kw else job.messages
        job = job.model_copy(update={**kw, "messages": messages})
        try:
            self._save(job)
        except StoreError:
            log.exception("could not record job %s", job_id)
        self._jobs[job_id] = job

    async def _draft(self, job_id: str, actor: str, replan_of: int | None = None) -> None:
        req = self._jobs[job_id].request

        def stage(name: WorkOrderStage, plan_id: int) -> None:
            self._update(job_id, state=name, plan_id=str(plan_id), message=f"plan {plan_id}: {name}")

        try:
            if self._ready is not None and not self._ready.is_set():
                self._update(job_id, message="waiting for the model and the twin to be ready")
                await self._ready.wait()
            snapshot = await self.state() if self.state is not None else None
            if replan_of is not None:
                sub = await self.coordinator.replan(replan_of, snapshot=snapshot, actor=actor, on_stage=stage)
            elif req.recipe:
                sub = await self.coordinator.submit_recipe(
                    req.recipe, req.params, work_order=req.text, snapshot=snapshot, actor=actor, on_stage=stage
                )
            else:
                self._update(job_id, message="asking the planner")
                sub = await self.coordinator.submit(req.text, snapshot=snapshot, actor=actor, on_stage=stage)
        except Exception as exc:  # shown to the person; the details are in the server log
            self._update(job_id, state="failed", error=f"planning failed: {exc}", message="failed")
            return
        state = "awaiting_approval" if sub.status == "awaiting_approval" else "failed"
        reasons = "; ".join(sub.reasons)
        self._update(
            job_id,
            state=state,
            plan_id=str(sub.plan_id),
            error=None if state != "failed" else f"{sub.status.replace('_', ' ')}: {reasons}",
            message=f"plan {sub.plan_id}: {sub.status.replace('_', ' ')}" + (f" ({reasons})" if reasons else ""),
        )

    async def job(self, job_id: str) -> JobView | None:
        """Progress of one work order (from the store: jobs of earlier runs of the console too)."""
        if not job_id.isdigit() or len(job_id) > 18:
            return None
        row = await asyncio.to_thread(self.store.job, int(job_id))
        return JobView.model_validate(row.body) if row is not None else None

    async def jobs(self) -> list[JobView]:
        """Newest first."""
        rows = await asyncio.to_thread(self.store.jobs, 200)
        return [JobView.model_validate(r.body) for r in rows]

    # ------------------------------------------------------------------ live

    def _confirmed(self, plan_id: int, content_hash: str, progress: dict[str, str]) -> dict[str, str]:
        """Step -> operator: confirmations still fresh, and those of steps that are done."""
        fresh = self.gate.fresh_confirmations(plan_id, content_hash)
        every = self.store.confirmations(plan_id, content_hash)
        return {k: v for k, v in every.items() if k in fresh or progress.get(k) == "done"}

    def _live_plan(self, row: PlanRow, with_steps: bool) -> LivePlan:
        plan = self.store.plan(row.id)
        steps: list[LiveStep] = []
        if plan is not None:
            h = plan.content_hash()
            progress = self.store.progress(row.id, h)
            hazards = self.gate.required_confirmations(plan)
            confirmed = self._confirmed(row.id, h, progress) if hazards else {}
            for s in plan.steps:
                conf: Literal["not_needed", "awaiting", "confirmed", "refused"] = "not_needed"
                if s.id in hazards:
                    conf = "confirmed" if s.id in confirmed else "awaiting"
                status = _STEP_STATUS.get(progress.get(s.id, ""), "pending")
                steps.append(LiveStep(id=s.id, agent=s.agent, skill=s.skill, status=status, confirmation=conf))
        return LivePlan(
            id=str(row.id),
            title=row.work_order[:100],
            state=row.status,
            reasons=list(row.reasons),
            current=[s for s in steps if s.status == "running"],
            done=sum(s.status == "done" for s in steps),
            total=len(steps),
            steps=steps if with_steps else [],
        )

    def _alarms(self, rows: list[PlanRow]) -> list[Alarm]:
        out: list[Alarm] = []
        snap = self.feed.latest
        for m in snap.machines if snap is not None else []:
            if not m.connected:
                out.append(Alarm(kind="machine", subject=m.name, text=f"{m.name} is not connected"))
            for a in m.alarms:
                out.append(Alarm(kind="machine", subject=m.name, text=f"{m.name}: {a}"))
            if m.fault_code:
                fault = f"{m.name}: fault {m.fault_code}" + (f" ({m.fault_text})" if m.fault_text else "")
                out.append(Alarm(kind="machine", subject=m.name, text=fault))
        for r in snap.robots if snap is not None else []:
            if r.estop:
                why = f": {r.estop_reason}" if r.estop_reason else ""
                out.append(Alarm(kind="estop", subject=r.name, text=f"e-stop of {r.name} latched{why}"))
            elif r.safety != "ok":
                out.append(Alarm(kind="safety", subject=r.name, text=f"{r.name}: {r.safety.replace('_', ' ')}"))
        for row in rows:
            if row.status == "paused":  # waits for someone: resume, or draft it again
                why = "; ".join(row.reasons)
                text = f"plan {row.id} is {row.status.replace('_', ' ')}" + (f": {why}" if why else "")
                out.append(Alarm(kind="plan", subject=f"plan {row.id}", text=text[:300]))
        return out

    async def live(self, plan_id: str | None = None) -> LiveView:
        """Plans running or paused, ``plan_id``'s steps, and the alarms; a few store reads (off
        the event loop)."""

        def work() -> LiveView:
            rows = self.store.plans(200)
            active_rows = [r for r in rows if r.status in ("running", "paused")]
            active = [self._live_plan(r, False) for r in active_rows]
            one = None
            if plan_id is not None and plan_id.isdigit() and len(plan_id) < 18:
                with contextlib.suppress(StoreError):
                    one = self._live_plan(self.store.get(int(plan_id)), True)
            return LiveView(plans=active, plan=one, alarms=self._alarms(active_rows))

        return await asyncio.to_thread(work)

    async def aclose(self) -> None:
        """Cancel background work."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

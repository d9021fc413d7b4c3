"""The life of a work order, in one place: plan, guardrails, rehearsal, approval, execution.

:class:`Coordinator` owns nothing that moves: the planner asks the model, the guardrails judge,
the rehearser runs the twin, the store remembers, people approve through the gate, and the
executor drives the agents it is given. Every step is recorded in the audit log.

A work order in words (:meth:`Coordinator.submit`) and a recipe picked from a list
(:meth:`Coordinator.submit_recipe`) differ only in how the plan is drafted; both then take
one path: the audit record of the draft, the guardrails, the store, the rehearsal and the wait
for approval. The coroutines here never block their event loop: database work, the guardrails,
CP-SAT scheduling and matplotlib drawing run in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.expansion import Unclear, expand_reading
from llm_coordinator.gantt import planned_bars, write_gantt
from llm_coordinator.guardrails import check
from llm_coordinator.plan import MAX_COUNT, Plan, RecipeIntent
from llm_coordinator.planner import Planner, PlanningOutcome, Refusal, Unplannable, plan_recipe
from llm_coordinator.reading import Reading, RecipeGoal
from llm_coordinator.rehearsal import ManyRehearsals, RehearsalReport, Rehearser
from llm_coordinator.snapshot import PlantSnapshot
from llm_coordinator.status import REPLANNABLE, PlanStatus, WorkOrderStage
from llm_coordinator.store import Store, StoreError
from plant.config import PlantDescription

#: At most this many reasons go back to the model (its context is small).
MAX_FEEDBACK = 4

#: Told the stage a work order has reached (:data:`~llm_coordinator.status.STAGES`) and its plan id.
StageHook = Callable[[WorkOrderStage, int], None]


def recipe_order(recipe: str, params: Mapping[str, int | float | str] | None = None, count: int = 1) -> str:
    """The words of a recipe order, as stored with its plan and read again by the model if the
    plan is turned down and drafted again (:meth:`Coordinator.replan`)."""
    text = f"run recipe {recipe}" + (f" {count} times" if count != 1 else "")
    return text + (" with " + ", ".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _planned_gantt(plan: Plan, path: Path, title: str) -> Path:
    return write_gantt(planned_bars(plan), path, title)


@dataclass
class Submission:
    """Where a work order ended up: its plan id, status, and what planning and rehearsal said."""

    plan_id: int
    status: str
    reasons: list[str]
    outcome: PlanningOutcome | None = None
    rehearsal: RehearsalReport | None = None
    evidence: list[str] | None = None


class Coordinator:
    """Turns a work order into a plan awaiting approval (or a recorded refusal)."""

    def __init__(
        self,
        plant: PlantDescription,
        store: Store,
        planner: Planner,
        gate: ApprovalGate,
        rehearser: Rehearser | None,
        evidence_dir: Path | str = "atelier_evidence",
        many: ManyRehearsals | None = None,
    ) -> None:
        self.plant, self.store, self.planner, self.gate = plant, store, planner, gate
        self.rehearser = rehearser
        self.evidence_dir = Path(evidence_dir)
        #: Rehearsals from perturbed starts of a plan that passed its first (risk figures).
        self.many = many

    async def warm_up(self) -> list[str]:
        """Run a dry work order through every stage but the store, so that a long-running process
        (the console, ``atelier serve``) answers its first work order as fast as the next: the
        model reads the plant's first recipe ordered in words (:func:`recipe_order`; only a model
        for which that costs nothing: :attr:`LLMBackend.warm_up_question`), and that
        recipe's plan is checked by the guardrails, drawn and rehearsed, its evidence in a
        temporary folder. Nothing is stored or audited, and the reading is thrown away. Never
        raises: what could not be readied is returned (the first work order reports it again)."""
        import tempfile

        problems: list[str] = []

        def failed(what: str, exc: Exception) -> None:
            problems.append(f"{what} is not ready: {type(exc).__name__}: {exc}")

        try:
            await self.planner.backend.warm_up()
        except Exception as exc:
            failed("the model", exc)
        recipe = next(iter(self.plant.recipes), None)
        if recipe is None:
            return problems  # (nothing to rehearse dry: the first work order compiles the twin)
        text = recipe_order(recipe)
        if self.planner.backend.warm_up_question:
            try:
                await self.planner.plan(text)
            except Exception as exc:
                failed("the planner", exc)
        try:
            intent = RecipeIntent(goal="recipe", recipe=recipe, count=1, params={})
            plan = await asyncio.to_thread(plan_recipe, self.plant, intent, work_order=text)
            await asyncio.to_thread(check, plan, self.plant, None)
            # (a drawing thread may outlive a cancelled warm-up, and find its folder gone)
            with tempfile.TemporaryDirectory(prefix="atelier-warm-", ignore_cleanup_errors=True) as tmp:
                await asyncio.to_thread(_planned_gantt, plan, Path(tmp) / "planned_gantt.png", text)
                if self.rehearser is not None:
                    await self.rehearser.rehearse(plan, tmp)
        except Exception as exc:
            failed(f"the rehearsal of recipe {recipe}", exc)
        return problems

    async def submit(
        self,
        work_order: str,
        *,
        snapshot: PlantSnapshot | None = None,
        actor: str = "coordinator",
        on_stage: StageHook | None = None,
        feedback: Sequence[str] = (),
        parent_id: int | None = None,
    ) -> Submission:
        """Plan, check and rehearse a work order; never raises for what the model does.
        ``on_stage`` hears each stage as it starts (a console shows the progress); ``feedback``
        tells the model why an earlier plan for it was turned down (see :meth:`replan`)."""
        feedback = [str(f)[:500] for f in feedback][-MAX_FEEDBACK:]

        async def draft() -> PlanningOutcome:
            return await self.planner.plan(work_order, snapshot=snapshot, feedback=feedback)

        return await self._submit(
            work_order,
            self.planner.config.mode,
            draft,
            {"feedback_seen": feedback, "model": getattr(self.planner.backend, "name", None)},
            snapshot=snapshot,
            actor=actor,
            on_stage=on_stage,
            parent_id=parent_id,
        )

    async def submit_recipe(
        self,
        recipe: str,
        params: Mapping[str, int | float | str] | None = None,
        *,
        count: int = 1,
        work_order: str = "",
        snapshot: PlantSnapshot | None = None,
        actor: str = "coordinator",
        on_stage: StageHook | None = None,
    ) -> Submission:
        """A recipe picked by a person, run ``count`` times with ``params`` (the rest take the
        recipe's defaults): expanded without the model (a reset goes in front of a machine the
        ``snapshot`` shows stopped, aborted or faulted; CP-SAT schedules it, in a worker thread),
        then checked, stored, rehearsed and put up for approval exactly as :meth:`submit` does.
        An unknown recipe or parameter, or a value outside the recipe's range, ends as a
        ``refused`` plan with the reason; nothing raises. ``work_order`` is the order's words
        (default :func:`recipe_order`)."""
        given = dict(params or {})
        text = work_order or recipe_order(recipe, given, count)

        async def draft() -> PlanningOutcome:
            out = PlanningOutcome(status="refused", work_order=text, mode="intent")
            t0 = time.monotonic()
            try:
                if not 1 <= count <= MAX_COUNT:
                    raise Unplannable([], f"{count} runs is not what one work order may ask for (1 to {MAX_COUNT})")
                intent = RecipeIntent(goal="recipe", recipe=recipe, count=count, params=given)
                out.reading = Reading(goals=[RecipeGoal(kind="recipe", recipe=recipe, count=count, params=dict(given))])
                plan = await asyncio.to_thread(plan_recipe, self.plant, intent, work_order=text, snapshot=snapshot)
            except Unplannable as exc:
                out.refusal = Refusal(exc.missing, str(exc))
                out.reasons = [str(exc)]
            else:
                # The guardrails judge it below, in submit_plan: a recipe has no model to retry.
                out.status, out.plan = "planned", plan
            out.planner_s = time.monotonic() - t0
            return out

        about = {"recipe": recipe, "params": given, "count": count, "model": "none: a recipe a person chose"}
        return await self._submit(text, "intent", draft, about, snapshot=snapshot, actor=actor, on_stage=on_stage)

    async def submit_reading(
        self,
        reading: Reading,
        *,
        work_order: str = "",
        snapshot: PlantSnapshot | None = None,
        actor: str = "coordinator",
        on_stage: StageHook | None = None,
    ) -> Submission:
        """A work order written by a person directly in the plan language (several goals,
        conditions, bounded repetitions; see :mod:`llm_coordinator.reading`): expanded without the
        model (in a worker thread), then checked, stored, rehearsed (every branch) and put up for
        approval exactly as :meth:`submit` does. What does not fit the plant ends as a ``refused``
        or ``clarify`` plan with the reason; nothing raises."""
        text = work_order or "; ".join(reading.summary()) or "(empty reading)"

        async def draft() -> PlanningOutcome:
            out = PlanningOutcome(status="refused", work_order=text, mode="intent", reading=reading)
            t0 = time.monotonic()
            try:
                plan = await asyncio.to_thread(expand_reading, self.plant, reading, work_order=text, snapshot=snapshot)
            except Unplannable as exc:
                out.refuse(str(exc), exc.missing)
            except Unclear as exc:
                out.clarify(exc.question)
            else:
                out.status, out.plan = "planned", plan
            out.planner_s = time.monotonic() - t0
            return out

        about = {"reading": reading.model_dump(mode="json"), "model": "none: a reading a person wrote"}
        return await self._submit(text, "intent", draft, about, snapshot=snapshot, actor=actor, on_stage=on_stage)

    async def _submit(
        self,
        work_order: str,
        mode: str,
        draft: Callable[[], Awaitable[PlanningOutcome]],
        about: dict[str, Any],
        *,
        snapshot: PlantSnapshot | None = None,
        actor: str = "coordinator",
        on_stage: StageHook | None = None,
        parent_id: int | None = None,
    ) -> Submission:
        """The one path of a new work order: stored, drafted by ``draft``, the draft audited
        (with ``about`` it), then :meth:`submit_plan` or the refusal recorded."""
        plan_id = await asyncio.to_thread(self.store.create, work_order, mode, actor=actor, parent_id=parent_id)
        if on_stage is not None:
            on_stage("drafting", plan_id)
        outcome = await draft()
        record = {
            "status": outcome.status,
            "attempts": [{"stage": a.stage, "text": a.text[:500], "error": a.error} for a in outcome.attempts],
            "reasons": outcome.reasons,
            **about,
        }
        if "reading" not in record and outcome.reading is not None:
            # What the model read, kept with the decision on it: the plant's tuning data.
            record["reading"] = outcome.reading.model_dump(mode="json")
        await asyncio.to_thread(self.store.audit, "planner", "planned", plan_id, record)
        if outcome.status in ("refused", "clarify"):
            end: PlanStatus = "refused" if outcome.status == "refused" else "clarify"
            await asyncio.to_thread(self.store.set_status, plan_id, end, actor="planner", reasons=outcome.reasons)
            return Submission(plan_id, end, outcome.reasons, outcome)
        if outcome.plan is None:
            status: PlanStatus = "rejected_by_rules" if outcome.status == "rejected" else "failed"
            await asyncio.to_thread(self.store.set_status, plan_id, status, actor="planner", reasons=outcome.reasons)
            return Submission(plan_id, status, outcome.reasons, outcome)
        return await self.submit_plan(plan_id, outcome.plan, snapshot=snapshot, outcome=outcome, on_stage=on_stage)

    def replan_feedback(self, plan_id: int) -> list[str]:
        """Why plan ``plan_id`` was turned down, for the next draft of its work order: the
        supervisor's or the rules' or the rehearsal's reasons and the operator's refusals.
        :class:`~llm_coordinator.store.StoreError` unless the plan was turned down."""
        row = self.store.get(plan_id)
        if row.status not in REPLANNABLE:
            state = row.status.replace("_", " ")
            raise StoreError(f"plan {plan_id} is {state}; only a rejected, refused or failed plan is drafted again")
        reasons = [f"{row.status.replace('_', ' ')}: {r}" for r in row.reasons]
        return [*reasons, *(f for f in self.store.feedback_for(plan_id) if f.split(": ", 1)[-1] not in row.reasons)]

    async def replan(
        self,
        plan_id: int,
        *,
        snapshot: PlantSnapshot | None = None,
        actor: str = "coordinator",
        on_stage: StageHook | None = None,
    ) -> Submission:
        """Draft the work order of a turned-down plan again as a new plan (its parent), with the
        reasons it was turned down as feedback to the model. People's words reach the model as
        data in the context, never as instructions, and the new plan passes every rule, the
        rehearsal and an approval like any other."""
        feedback = await asyncio.to_thread(self.replan_feedback, plan_id)
        work_order = (await asyncio.to_thread(self.store.get, plan_id)).work_order
        return await self.submit(
            work_order, snapshot=snapshot, actor=actor, on_stage=on_stage, feedback=feedback, parent_id=plan_id
        )

    async def submit_plan(
        self,
        plan_id: int,
        plan: Plan,
        *,
        snapshot: PlantSnapshot | None = None,
        outcome: PlanningOutcome | None = None,
        on_stage: StageHook | None = None,
    ) -> Submission:
        """Check, store and rehearse a plan of a drafted work order (also used for recoveries)."""
        if on_stage is not None:
            on_stage("checking", plan_id)

        def judge() -> list[str]:
            verdict = check(plan, self.plant, snapshot)
            self.store.add_version(plan_id, plan, [f.__dict__ for f in verdict.findings], actor="guardrails")
            if not verdict.ok:
                self.store.set_status(plan_id, "rejected_by_rules", actor="guardrails", reasons=verdict.reasons())
            return [] if verdict.ok else verdict.reasons()

        refusals = await asyncio.to_thread(judge)
        out_dir = self.evidence_dir / f"plan_{plan_id}"
        title = f"plan {plan_id}: {plan.work_order[:80]}"
        planned = await asyncio.to_thread(_planned_gantt, plan, out_dir / "planned_gantt.png", title)
        if refusals:
            return Submission(plan_id, "rejected_by_rules", refusals, outcome, evidence=[str(planned)])
        if self.rehearser is None:
            reason = "no twin is available to rehearse the plan; it cannot be approved"
            await asyncio.to_thread(self.store.audit, "rehearsal", "unavailable", plan_id, {"reason": reason})
            return Submission(plan_id, "drafted", [reason], outcome, evidence=[str(planned)])
        if on_stage is not None:
            on_stage("rehearsing", plan_id)
        report = await self.rehearser.rehearse(plan, out_dir)
        evidence = [str(planned), *report.evidence]
        if report.ok and self.many is not None and self.many.runs > 1:
            try:
                risk = await self.many(plan, out_dir / "risk")
            except Exception as exc:  # (Ray unreachable, a worker lost): the plan keeps its first rehearsal
                report.risk = {"error": f"{type(exc).__name__}: {exc}"}
            else:
                report.risk = risk.summary()
                evidence += risk.evidence
        summary = report.summary()

        def record() -> None:
            h = plan.content_hash()
            self.store.add_rehearsal(plan_id, h, report.ok, report.makespan_s, summary, evidence)
            if not report.ok:
                self.store.set_status(plan_id, "rehearsal_failed", actor="rehearsal", reasons=[report.reason])
                return
            self.store.set_status(plan_id, "rehearsed", actor="rehearsal")
            self.store.set_status(plan_id, "awaiting_approval", actor="coordinator")

        await asyncio.to_thread(record)
        if not report.ok:
            return Submission(plan_id, "rehearsal_failed", [report.reason], outcome, report, evidence)
        return Submission(plan_id, "awaiting_approval", [], outcome, report, evidence)

    async def submit_recovery(self, parent_id: int, plan: Plan, snapshot: PlantSnapshot | None = None) -> int:
        """Send a recovery draft through guardrails (against the plant's state after the failure)
        and rehearsal as a new plan; returns its id."""
        plan_id = await asyncio.to_thread(
            self.store.create, plan.work_order, "recovery", actor="executor", parent_id=parent_id
        )
        await self.submit_plan(plan_id, plan, snapshot=snapshot)
        return plan_id

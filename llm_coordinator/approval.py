"""The approval gate: deny unless a supervisor approved this exact plan, in time, and an
operator confirmed every hazardous step.

After pydantic-ai's ``approval_required`` toolset: a small wrapper that says no by default.
An approval is bound to the plan's content hash, so any change to the plan voids it; an
approval not used within its time to live expires, and so does an operator's confirmation
(checked when the plan starts and again by the executor right before the step starts); the
hazardous steps are recomputed from the static rules here (a plan cannot lose a hazard flag on
its way to the executor). The model has no way to call any of this: only people (through the
CLI or the console) approve and confirm.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_coordinator.guardrails import hazard_reasons
from llm_coordinator.plan import Plan, Step
from llm_coordinator.status import RUNNABLE
from llm_coordinator.store import Store, StoreError
from plant.config import PlantDescription

#: What the guardrails say of a step flagged hazardous without a rule's reason.
_FLAGGED = "marked hazardous by its recipe or plan"


class NotApproved(Exception):
    """The plan may not run; ``reasons`` say what is missing."""

    def __init__(self, plan_id: int, reasons: list[str]) -> None:
        self.plan_id, self.reasons = plan_id, reasons
        super().__init__(f"plan {plan_id} may not run: " + "; ".join(reasons))


@dataclass(frozen=True)
class Authorization:
    """Proof that a plan may run: the approval row, the hash it binds, who approved."""

    plan_id: int
    approval_id: int
    content_hash: str
    approved_by: str


class ApprovalGate:
    """Approve, reject, confirm, and :meth:`authorize` (the executor's only way in)."""

    def __init__(
        self, store: Store, plant: PlantDescription, ttl_s: float = 3600.0, confirmation_ttl_s: float = 300.0
    ) -> None:
        self.store, self.plant, self.ttl_s = store, plant, ttl_s
        #: An operator's confirmation holds this long (s): it speaks of the cell as the operator saw it.
        self.confirmation_ttl_s = confirmation_ttl_s

    def approve(self, plan_id: int, supervisor: str, reason: str = "", content_hash: str | None = None) -> str:
        """A supervisor approves the plan's current version; returns the hash approved.

        Only a rehearsed plan awaiting approval can be approved (:class:`StoreError` otherwise).
        ``content_hash``, when given, is the version the supervisor looked at: if the plan changed
        since, the approval is refused (:class:`StoreError`).
        """
        row = self.store.get(plan_id)
        if row.status != "awaiting_approval" or row.content_hash is None:
            raise StoreError(f"plan {plan_id} is {row.status}; only a plan awaiting approval can be approved")
        if content_hash is not None and len(content_hash) != len(row.content_hash):
            raise StoreError(
                f"plan {plan_id}: {content_hash[:20]!r} is not a plan version (the whole hash the plan page "
                "shows, 64 hex digits); read the plan again before you decide"
            )
        if content_hash is not None and content_hash != row.content_hash:
            raise StoreError(
                f"plan {plan_id} changed since you looked at it (you saw version {content_hash[:12] or '?'}, "
                f"it is now {row.content_hash[:12]}); read it again before you decide"
            )
        if not supervisor.strip():
            raise StoreError("an approval needs the supervisor's name")
        self.store.add_decision(
            plan_id, row.content_hash, "approved", supervisor, reason, self.store.clock() + self.ttl_s, "approved"
        )
        return row.content_hash

    def reject(self, plan_id: int, supervisor: str, reason: str) -> None:
        """A supervisor rejects the plan with a reason (kept as feedback for the next plans)."""
        if not reason.strip():
            raise StoreError("a rejection needs a reason")
        row = self.store.get(plan_id)
        self.store.add_decision(
            plan_id, row.content_hash or "", "rejected", supervisor, reason, self.store.clock(), "rejected"
        )

    def confirm(self, plan_id: int, step_id: str, operator: str) -> None:
        """A robot operator confirms one hazardous step of the current version."""
        plan = self.store.plan(plan_id)
        if plan is None:
            raise StoreError(f"plan {plan_id} has no plan to confirm")
        if step_id not in self.required_confirmations(plan):
            raise StoreError(f"step {step_id} of plan {plan_id} is not hazardous; nothing to confirm")
        if step_id in self.fresh_confirmations(plan_id, plan.content_hash()):
            return  # confirmed and still fresh: nothing to record (an expired one is renewed)
        self.store.confirm(plan_id, plan.content_hash(), step_id, operator)

    def required_confirmations(self, plan: Plan) -> dict[str, str]:
        """Hazardous steps (flagged by the plan or by the static rules) -> why."""
        hz = hazard_reasons(plan, self.plant)
        for s in plan.steps:
            if s.id in hz:
                hz[s.id] = self._in_plant_words(plan, s, hz[s.id])
        return hz

    def _in_plant_words(self, plan: Plan, step: Step, reason: str) -> str:
        """The reason as the plant file says it: the recipe that marks the step hazardous (and
        what the recipe and the step's place are for), each hazard zone's description."""
        for name, zone in self.plant.zones.items():
            if zone.kind == "hazard" and zone.description and f"hazard zone {name} ({zone.hazard_class})" in reason:
                reason = reason.replace(
                    f"hazard zone {name} ({zone.hazard_class})",
                    f"hazard zone {name} ({zone.hazard_class}: {zone.description})",
                )
        if _FLAGGED not in reason:
            return reason
        what = f"{step.agent} {step.skill.replace('_', ' ')}"
        if "to_robot" in step.args:
            what += f" to {step.args['to_robot']}"
        location = str(step.args.get("location", ""))
        if location:
            where = next(
                (
                    loc.description
                    for st in self.plant.stations.values()
                    for n, loc in st.locations.items()
                    if n == location
                ),
                "",
            )
            what += f" at {location}" + (f" ({where})" if where else "")
        recipe = self.plant.recipes.get(plan.recipe or "")
        source = step.note.split(", ")
        if recipe is not None and len(source) >= 2 and source[0] == f"recipe {plan.recipe}":
            rs_id = source[1].removeprefix("step ")
            if any(rs.id == rs_id and rs.hazardous for rs in recipe.steps):
                words = f"the plant's recipe {plan.recipe} ({recipe.description}) marks step {rs_id} hazardous: {what}"
                return reason.replace(_FLAGGED, words)
        return reason.replace(_FLAGGED, f"the plan marks it hazardous: {what}")

    def authorize(self, plan_id: int, plan: Plan) -> Authorization:
        """Allow ``plan`` to run, or raise :class:`NotApproved` naming every missing piece."""
        reasons: list[str] = []
        h = plan.content_hash()
        row = self.store.get(plan_id)
        if row.status not in RUNNABLE:
            reasons.append(f"the plan is {row.status}, not approved")
        decision = self.store.latest_decision(plan_id)
        if decision is None or decision.decision != "approved":
            reasons.append("no supervisor approved it")
        else:
            if decision.content_hash != h:
                reasons.append("the plan changed after it was approved (its hash differs); the approval is void")
            if decision.used_at is None and self.store.clock() > decision.expires_at:
                reasons.append("the approval expired before it was used")
        confirmed = self.store.confirmation_times(plan_id, h)
        done = self.store.progress(plan_id, h)
        for step, why in self.required_confirmations(plan).items():
            if done.get(step) == "done":
                continue  # a resumed run does not repeat it
            problem = self._confirmation_problem(plan_id, step, why, confirmed)
            if problem:
                reasons.append(problem)
        if reasons or decision is None:
            raise NotApproved(plan_id, reasons)
        return Authorization(plan_id, decision.id, h, decision.who)

    def _confirmation_problem(self, plan_id: int, step: str, why: str, confirmed: dict[str, tuple[str, float]]) -> str:
        if step not in confirmed:
            return f"hazardous step {step} needs an operator's confirmation ({why})"
        who, at = confirmed[step]
        age = self.store.clock() - at
        if age > self.confirmation_ttl_s:
            return (
                f"the confirmation of hazardous step {step} by {who} expired ({age:.0f} s old, it holds "
                f"{self.confirmation_ttl_s:.0f} s); an operator must confirm it again"
            )
        return ""

    def fresh_confirmations(self, plan_id: int, content_hash: str) -> dict[str, str]:
        """Step id -> operator, for the confirmations of this plan version that have not expired
        (an expired one must be given again, so it is shown as awaiting)."""
        now = self.store.clock()
        return {
            step: who
            for step, (who, at) in self.store.confirmation_times(plan_id, content_hash).items()
            if now - at <= self.confirmation_ttl_s
        }

    def check_step(self, plan_id: int, plan: Plan, step_id: str) -> str:
        """Right before a step starts: "" if it may start, else why not (a hazardous step whose
        confirmation is missing or expired). Does not block beyond one database read."""
        why = self.required_confirmations(plan).get(step_id)
        if why is None:
            return ""
        return self._confirmation_problem(
            plan_id, step_id, why, self.store.confirmation_times(plan_id, plan.content_hash())
        )

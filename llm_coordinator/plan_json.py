"""A plan as one JSON document, for programs: ``atelier plan/show/order/replan --json``.

The shape is written once, here (:func:`plan_document`), and documented in ``docs/plan-json.md``.
It is stable: fields are only ever added, never renamed, removed or given another type; a change
that cannot keep that promise gets a new ``schema`` name (``atelier.plan/2``).

The document is built from what the store holds about a plan (its row, current version,
execution progress and latest rehearsal), so ``atelier show N --json`` says the same as the
command that made plan N. A :class:`~llm_coordinator.coordinator.Submission` adds what only the
command that submitted the work order knows (the question of a ``clarify``, the reasons of a plan
left ``drafted``, the model that read the order).

Text from outside (a person's order, a model's words, a machine's fault text) is carried as JSON
strings: :func:`dumps` escapes every control character and everything outside ASCII, so nothing in
the output is a terminal escape sequence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llm_coordinator.executor import DECISION_KEY
from llm_coordinator.plan import Decision, Plan, Step
from llm_coordinator.status import REPLANNABLE
from llm_coordinator.store import Store

if TYPE_CHECKING:
    from llm_coordinator.coordinator import Submission

#: The name and version of the document's shape.
SCHEMA = "atelier.plan/1"

#: A step's status when the plan has not run it (yet).
PENDING = "pending"

#: Statuses whose reasons say why the plan was turned down or stopped (``reason``); a ``clarify``
#: plan's reasons are its question instead, and the reasons of other statuses (an approval's
#: remark) are only in ``reasons``.
_EXPLAINED = (REPLANNABLE - {"clarify"}) | {"drafted"}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (which JSON cannot carry) made ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(document: Mapping[str, Any]) -> str:
    """The document as one line of JSON: ASCII only, control characters escaped, no NaN."""
    return json.dumps(_finite(document), ensure_ascii=True, allow_nan=False)


def _seconds(value: float) -> float:
    """A duration in the twin, to the millisecond (its clock ticks every 4 ms)."""
    return round(float(value), 3)


def _decision(d: Decision, taken: Mapping[str, str]) -> dict[str, Any]:
    outcome = taken.get(DECISION_KEY + d.id)
    return {
        "id": d.id,
        "kind": d.kind,
        "condition": d.condition.model_dump(mode="json"),
        "after": list(d.after),
        "requires": dict(d.requires),
        "note": d.note,
        # How the decision came out when the plan ran (None: not taken yet).
        "outcome": None if outcome is None else outcome == "true",
    }


def _step(s: Step, progress: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": s.id,
        "agent": s.agent,
        "skill": s.skill,
        "args": dict(s.args),
        "after": list(s.after),
        "when": dict(s.when),
        "hazardous": s.hazardous,
        "expected_duration_s": s.expected_duration_s,
        "note": s.note,
        "status": progress.get(s.id, PENDING),
    }


def _variants(summary: Mapping[str, Any], ok: bool) -> list[dict[str, Any]]:
    """The runs of one rehearsal (the twin's own, then each condition's other outcome forced),
    each with whether it went well and how long it took in the twin."""
    steps = [s for s in summary.get("steps") or [] if isinstance(s, Mapping)]
    single = str(summary.get("variant") or "as the twin decided")
    names: list[str] = []
    for s in steps:
        name = str(s.get("variant", single))
        if name not in names:
            names.append(name)
    names = names or [single]
    reason = str(summary.get("reason") or "")
    out = []
    for name in names:
        mine = [s for s in steps if str(s.get("variant", single)) == name]
        failed = [str(s.get("step")) for s in mine if s.get("status") == "failed"]
        if ok:
            good = True
        elif len(names) == 1:
            good = False
        else:
            good = not failed and f"{name}: " not in reason
        ends = [float(s["end_s"]) for s in mine if isinstance(s.get("end_s"), int | float)]
        out.append(
            {
                "variant": name,
                "ok": good,
                "makespan_s": _seconds(max(ends, default=0.0)),
                "failed_steps": failed,
            }
        )
    return out


def _rehearsal(store: Store, plan_id: int) -> dict[str, Any] | None:
    row = store.rehearsal(plan_id)
    if row is None:
        return None
    summary = row.report if isinstance(row.report, Mapping) else {}
    decisions = summary.get("decisions") or {}
    return {
        "ok": bool(row.ok),
        "makespan_s": _seconds(row.makespan_s),
        "reason": str(summary.get("reason") or ""),
        "plan_hash": row.content_hash,
        "decisions": {str(k): bool(v) for k, v in decisions.items()} if isinstance(decisions, Mapping) else {},
        "variants": _variants(summary, bool(row.ok)),
        "evidence": [str(e) for e in row.evidence or []],
    }


def plan_document(
    store: Store,
    plan_id: int,
    *,
    submission: Submission | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Plan ``plan_id`` as a JSON-able document (shape: ``docs/plan-json.md``), from what
    ``store`` holds, with what ``submission`` (the work order's submission, when the caller made
    it) adds. ``model`` names the backend and model that read the order, when known.
    :class:`~llm_coordinator.store.StoreError` if there is no such plan."""
    row = store.get(plan_id)
    status = str(row.status)
    reasons = [str(r) for r in row.reasons or []]
    question = ""
    if submission is not None and submission.plan_id == plan_id:
        # The store has the same status; a plan left drafted (no twin) keeps its reasons only here.
        if submission.status == status and submission.reasons and not reasons:
            reasons = [str(r) for r in submission.reasons]
        if submission.outcome is not None and submission.outcome.question:
            question = submission.outcome.question
    if status == "clarify" and not question:
        question = "; ".join(reasons)
    if model is None:
        # Who read the order, as the coordinator audited it when it drafted the plan.
        drafted = [r for r in store.audit_rows(plan_id) if r.action == "planned"]
        model = str(drafted[-1].payload.get("model")) if drafted and drafted[-1].payload.get("model") else None
    plan: Plan | None = store.plan(plan_id)
    plan_hash = row.content_hash if plan is not None else None
    progress = store.progress(plan_id, plan_hash) if plan_hash is not None else {}
    return {
        "schema": SCHEMA,
        "plan_id": row.id,
        "status": status,
        "reason": "; ".join(reasons) if status in _EXPLAINED else "",
        "question": question if status == "clarify" else "",
        "reasons": reasons,
        "work_order": row.work_order,
        "mode": row.mode,
        "model": model,
        "parent_id": row.parent_id,
        "plan_hash": plan_hash,
        "goals": list(plan.goals) if plan is not None else [],
        "notes": list(plan.notes) if plan is not None else [],
        "decisions": [_decision(d, progress) for d in plan.decisions] if plan is not None else [],
        "steps": [_step(s, progress) for s in plan.steps] if plan is not None else [],
        "rehearsal": _rehearsal(store, plan_id),
    }

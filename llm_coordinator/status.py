"""Where a plan stands, written once: the plan statuses, which may follow which, the groups the
coordinator, the approval gate and the console ask about, and the stages a work order passes
through on its way to a plan awaiting approval.

The store enforces :data:`TRANSITIONS`; everything else imports the names from here, so a status
cannot be spelled or grouped two ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

#: A plan's status, in the order of its life: the live ones, then how it ended.
PlanStatus = Literal[
    "drafted",
    "rehearsed",
    "awaiting_approval",
    "approved",
    "running",
    "paused",
    "done",
    "refused",
    "clarify",
    "refused_by_operator",
    "interrupted",
    "rejected_by_rules",
    "rehearsal_failed",
    "rejected",
    "failed",
]
PLAN_STATUSES: tuple[PlanStatus, ...] = get_args(PlanStatus)

#: Which status may follow which. Anything else is a bug and the store raises.
TRANSITIONS: Mapping[str, frozenset[PlanStatus]] = {
    # interrupted: the process drafting it died (the console marks it when it starts again).
    # clarify: the order can be read several ways, or the plan would leave part of it out; a
    # question went back to the person, who answers with a new work order.
    "drafted": frozenset(
        {"rejected_by_rules", "rehearsed", "rehearsal_failed", "refused", "clarify", "failed", "interrupted"}
    ),
    "rehearsed": frozenset({"awaiting_approval", "interrupted"}),
    # refused_by_operator: a robot operator refused one of its hazardous steps.
    "awaiting_approval": frozenset({"approved", "rejected", "refused_by_operator"}),
    "approved": frozenset({"running", "rejected", "awaiting_approval", "refused_by_operator"}),
    "running": frozenset({"paused", "done", "failed", "running", "refused_by_operator"}),
    "paused": frozenset({"running", "failed", "rejected", "refused_by_operator"}),
    "refused": frozenset(),
    "clarify": frozenset(),
    "refused_by_operator": frozenset(),
    "interrupted": frozenset(),
    "rejected_by_rules": frozenset(),
    "rehearsal_failed": frozenset(),
    "rejected": frozenset(),
    "done": frozenset(),
    "failed": frozenset(),
}

#: Nothing follows these.
TERMINAL: frozenset[PlanStatus] = frozenset(s for s in PLAN_STATUSES if not TRANSITIONS[s])
#: Turned down (by a supervisor, the rules, the rehearsal, the plant, an operator's refusal or
#: pause) or cut short by a restart: the work order may be drafted again with the reasons as feedback.
REPLANNABLE: frozenset[PlanStatus] = frozenset(
    {
        "rejected",
        "rejected_by_rules",
        "rehearsal_failed",
        "refused",
        "clarify",
        "failed",
        "paused",
        "refused_by_operator",
        "interrupted",
    }
)
#: A supervisor approved it and it may (still) run.
RUNNABLE: frozenset[PlanStatus] = frozenset({"approved", "running", "paused"})
#: Its hazardous steps may still be confirmed by an operator.
CONFIRMABLE: frozenset[PlanStatus] = RUNNABLE | {"awaiting_approval"}

#: The stages a work order passes through before its plan awaits approval, as the coordinator
#: reports them (``on_stage``) and the console shows them.
WorkOrderStage = Literal["drafting", "checking", "rehearsing"]
STAGES: tuple[WorkOrderStage, ...] = get_args(WorkOrderStage)

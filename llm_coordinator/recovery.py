"""Recovery: a draft that resumes a plan after one of its steps failed.

It goes through the guardrails, rehearsal and approval like any plan.
"""

from __future__ import annotations

from llm_coordinator.expansion import Proto, add_resets, finish_plan
from llm_coordinator.plan import Plan
from llm_coordinator.snapshot import PlantSnapshot
from plant.config import PlantDescription


def recovery_plan(
    plant: PlantDescription, plan: Plan, done: set[str], failed: str, reason: str, snapshot: PlantSnapshot
) -> Plan:
    """A draft that resumes ``plan`` after step ``failed`` failed: reset a machine that failed
    (or home a robot that did), then the failed step and every step not yet done (or skipped).
    Decisions the plan still needs are kept and taken again when the recovery runs."""
    notes = [f"recovery after step {failed} failed: {reason[:150]}"]
    bad = plan.step(failed) if failed in {s.id for s in plan.steps} else None
    protos: list[Proto] = []
    if bad is not None and bad.agent in plant.machines:
        protos.append(Proto(f"recover_reset_{bad.agent}", bad.agent, "reset", {}, [], note="recovery: reset"))
    elif bad is not None and bad.agent in plant.robots:
        protos.append(Proto(f"recover_home_{bad.agent}", bad.agent, "home", {}, [], note="recovery: home"))
    for s in plan.steps:
        if s.id in done:
            continue
        after = [d for d in s.after if d not in done]
        if s.id == failed and protos:
            after.append(protos[0].id)
        protos.append(
            Proto(
                s.id, s.agent, s.skill, dict(s.args), after, s.hazardous, s.note, 0, s.expected_duration_s, dict(s.when)
            )
        )
    protos = add_resets(plant, protos, snapshot, notes)
    kept = {p.id for p in protos}
    needed = {d for p in protos for d in p.when}
    decisions = [
        d.model_copy(update={"after": [a for a in d.after if a in kept]}) for d in plan.decisions if d.id in needed
    ]
    return finish_plan(
        plant,
        protos,
        work_order=plan.work_order,
        mode="recovery",
        recipe=plan.recipe,
        notes=notes,
        parallel=False,
        decisions=decisions,
        goals=plan.goals,
    )

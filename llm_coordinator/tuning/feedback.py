"""What a plant's people decided, as training and retrieval examples (the flywheel).

Read from the store's audit log, never from anything else: each plan's ``planned`` record (the
order and the reading that made it, whoever wrote it), then what became of it:

- **approved** by a supervisor: the order and its reading, an example to learn and to show;
- **rejected** with a reason: if a later reading of the same order was approved, that one is
  the example (the correction); otherwise the order becomes a ``clarify`` example that repeats
  the supervisor's reason, so the model asks instead of repeating the mistake;
- a step an operator refused on the floor says nothing about the reading: not an example.

Each example keeps its provenance: ``audit:<seq>`` of the row that decided it. A store that
cannot be read raises :class:`FeedbackError` naming the database and the reason; rows that do
not parse (an older or foreign record) are skipped and counted, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llm_coordinator.reading import Reading, reading_schema
from llm_coordinator.store import Store, StoreError
from llm_coordinator.tuning.data import Example, answer_text, grammar_problem
from plant.config import PlantDescription


class FeedbackError(RuntimeError):
    """The store could not be read."""


@dataclass
class Feedback:
    """Examples from the store, and what was skipped (with why)."""

    examples: list[Example] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def approved(self) -> list[tuple[str, str]]:
        """(order, answer) of approved readings, for retrieval."""
        return [(e.order, e.answer) for e in self.examples if e.shape == "approved"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _names_fit(reading: Reading, plant: PlantDescription) -> bool:
    """Whether every agent and recipe a reading names belongs to this plant (a store may hold
    another plant's plans)."""
    agents = set(plant.agents()) | {"every"}

    def goals(gs: Any) -> bool:
        for g in gs:
            kind = g.kind
            if kind == "recipe" and g.recipe not in plant.recipes:
                return False
            if kind == "task" and g.agent is not None and g.agent not in agents:
                return False
            if kind == "if" and not (goals(g.then) and goals(g.otherwise)):
                return False
            if kind == "repeat" and not goals(g.body):
                return False
        return True

    return goals(reading.goals)


def store_feedback(store: Store, plant: PlantDescription) -> Feedback:
    """The examples the store's decisions make for ``plant`` (see the module docstring)."""
    out = Feedback()
    schema = reading_schema(plant)
    try:
        rows = store.audit_rows()
    except Exception as exc:  # SQLAlchemy raises many kinds; the store file is the reason
        raise FeedbackError(f"the plan store {store.where} cannot be read: {exc}") from exc
    planned: dict[int, tuple[str, Reading]] = {}
    orders: dict[int, str] = {}
    decided: list[tuple[int, int, str, str]] = []  # (seq, plan id, decision, reason)
    for row in rows:
        if row.plan_id is None:
            continue
        payload = row.payload if isinstance(row.payload, dict) else {}
        if row.action == "planned":
            raw = payload.get("reading")
            if raw is None:
                continue
            try:
                reading = Reading.model_validate(raw)
            except ValidationError:
                out.skipped.append(f"audit:{row.seq}: the reading does not parse")
                continue
            if not _names_fit(reading, plant):
                out.skipped.append(f"audit:{row.seq}: names what plant {plant.name} does not have")
                continue
            planned[row.plan_id] = ("", reading)
        elif row.action in ("approved", "rejected"):
            decided.append((row.seq, row.plan_id, row.action, str(payload.get("reason", ""))))
    for plan_id in planned:
        try:
            orders[plan_id] = store.get(plan_id).work_order
        except Exception:  # a plan row gone: the audit names it, the store does not
            out.skipped.append(f"plan {plan_id}: no plan row")
    final: dict[int, tuple[int, str, str]] = {}
    for seq, plan_id, decision, reason in decided:
        if plan_id in planned and plan_id in orders:
            final[plan_id] = (seq, decision, reason)  # the last decision stands
    approved_orders = {_norm(orders[p]) for p, (_, d, _) in final.items() if d == "approved"}
    for plan_id, (seq, decision, reason) in sorted(final.items(), key=lambda kv: kv[1][0]):
        order, reading = orders[plan_id], planned[plan_id][1]
        if decision == "approved":
            # Only what the grammar lets a model write, and no free text of the store's.
            answer = answer_text(reading.model_copy(update={"declined": []}))
            problem = grammar_problem(answer, schema)
            if problem is not None:
                out.skipped.append(f"audit:{seq}: a reading the model cannot write ({problem})")
                continue
            out.examples.append(Example(order, answer, "approved", f"audit:{seq}"))
        elif _norm(order) not in approved_orders:
            why = reason.strip() or "a supervisor turned the reading down"
            question = f"An earlier reading of this order was rejected ({why[:200]}). What exactly should it do?"
            ask = Reading(outcome="clarify", question=question[:300])
            out.examples.append(Example(order, answer_text(ask), "rejected", f"audit:{seq}"))
    return out


class StoreExamples:
    """Retrieval over a store: ``(order, k)`` gives the approved readings of this plant most
    like ``order``. The index is rebuilt when the audit log has grown, so an approval counts
    from the next order on; a store that cannot be read gives none (planning goes on without)."""

    def __init__(self, store: Store, plant: PlantDescription) -> None:
        self.store, self.plant = store, plant
        self._seq: int | None = -1
        self._index: Any = None

    def __call__(self, order: str, k: int) -> list[tuple[str, str]]:
        from llm_coordinator.tuning.retrieval import ExampleIndex

        try:
            head = self.store.head()
            seq = head.seq if head is not None else None
            if seq != self._seq or self._index is None:
                self._index = ExampleIndex(store_feedback(self.store, self.plant).approved())
                self._seq = seq
        except (FeedbackError, StoreError):
            return []  # planning goes on without examples; `atelier audit verify` says why
        result: list[tuple[str, str]] = self._index.similar(order, k)
        return result

"""From a work order to a plan the guardrails accept, a refusal that names what is missing,
or a question back to the person: the dialogue with the model.

Reading the order itself is :mod:`llm_coordinator.order`; the plan language is
:mod:`llm_coordinator.reading`; turning a reading into a plan is :mod:`llm_coordinator.expansion`;
recovery is :mod:`llm_coordinator.recovery`. Every mode ends at the same exits: the expansion,
the guardrails, and the coverage rule.

- Before any model reads the order, the static rules: a name the plant does not have, or a
  safety measure the order touches (people's zones, limits, approvals, the e-stop, the audit
  log, the plant file), ends in a :class:`Refusal`.
- **intent** (default; made for small models). The model answers small closed questions: which
  goal (a recipe of the plant, single ``tasks``, or ``cannot``), and for a task which skill and,
  where the order does not say, which agent. Numbers and quantities with units are read from the
  order itself (:mod:`llm_coordinator.quantities`). The result is a one-goal :class:`Reading`.
- **reading** (for capable and plant-tuned models). The model writes the whole reading in the
  plan language, under its JSON Schema made from the plant: several goals, conditions, bounded
  repetitions, a question back, or a refusal with its reason.
- **direct**. The model writes the step graph itself; durations and hazard flags come from the
  plant.

A plan that does not cover what the order names (:func:`llm_coordinator.order.coverage`), or
whose goals match few of the order's words, never reaches approval silently: it ends in
``clarify`` with what is missing. Rejected answers go back to the model with the reasons, at
most ``max_attempts`` calls in all. A model that answers garbage, names what does not exist,
proposes an unsafe plan, or does not answer at all never yields an accepted plan.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from llm_coordinator.clauses import negated, negation_of_action, split_clauses
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.context import (
    FENCE_CLOSE,
    FENCE_OPEN,
    FENCE_RULE,
    build_context,
    build_goal_context,
    build_reading_context,
    build_tuned_context,
    fence,
    goal_options,
)
from llm_coordinator.expansion import (
    Unclear,
    Unplannable,
    expand_reading,
    expand_recipe,
    plan_from_draft,
    plan_recipe,
    read_count,
)
from llm_coordinator.guardrails import Verdict, check
from llm_coordinator.interface import BackendError, BackendTimeout, ChatMessage, LLMBackend
from llm_coordinator.order import (
    COMPARATIVES,
    OrderFacts,
    coverage,
    every_agent,
    overreach,
    rank_goals,
    read_order,
    static_refusals,
    unassigned_tasks,
    unevidenced_goals,
    unsupported_words,
    until_test,
    vocabulary_gaps,
)
from llm_coordinator.order import warm as warm_words
from llm_coordinator.plan import DraftPlan, Plan, RecipeIntent, plan_schema
from llm_coordinator.quantities import function_words, is_times, language_of
from llm_coordinator.reading import (
    EVERY,
    Reading,
    RecipeGoal,
    RepeatGoal,
    TaskGoal,
    Test,
    Value,
    parse_reading,
    reading_schema,
    simple_goals,
)
from llm_coordinator.snapshot import PlantSnapshot
from plant.config import PlantDescription
from robots.parts import missing_parts

__all__ = ["Planner", "PlanningOutcome", "Refusal", "Unclear", "Unplannable", "plan_recipe"]

Status = Literal["planned", "refused", "clarify", "rejected", "failed"]
Mode = Literal["intent", "reading", "tuned", "direct"]
#: Approved (order, answer) pairs most like an order: retrieval (``tuning.retrieval``).
Examples = Callable[[str, int], Sequence[tuple[str, str]]]

#: Least share of the order's words that must match what the plan does (its agents, skills,
#: recipes, places and the plant's descriptions of them); below it, the plan asks to clarify.
MIN_SUPPORT = 0.5
#: The same for a plan the model did not choose (a recipe or skill found by the order's words
#: when the model's reading left part of the order out): no model vouches for its action.
MIN_SUPPORT_ALTERNATIVE = 0.6
#: Most other recipes or skills tried, read from the order alone, when the model's reading leaves
#: part of the order out.
MAX_ALTERNATIVES = 3
#: The attempt's error when the model answers that no goal of the plant does the order.
_CANNOT = "the model answered cannot"


@dataclass(frozen=True)
class Refusal:
    """The plant cannot do the order: ``missing`` names each thing it lacks."""

    missing: tuple[str, ...]
    reason: str


@dataclass
class Attempt:
    """One question to the model and what became of the answer."""

    stage: str
    text: str
    error: str | None
    elapsed_s: float


@dataclass
class PlanningOutcome:
    """The end of planning: a plan the guardrails accept, a refusal, a question back to the
    person (``clarify``), or a failure with reasons."""

    status: Status
    work_order: str
    mode: str
    plan: Plan | None = None
    verdict: Verdict | None = None
    refusal: Refusal | None = None
    reasons: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    reading: Reading | None = None
    question: str = ""
    model_s: float = 0.0
    guardrails_s: float = 0.0
    planner_s: float = 0.0

    def refuse(self, reason: str, missing: Sequence[str] = ()) -> None:
        self.status, self.refusal, self.reasons = "refused", Refusal(tuple(missing), reason), [reason]

    def clarify(self, question: str) -> None:
        self.status, self.question, self.reasons = "clarify", question, [question]


def _choice_schema(key: str, options: Sequence[str]) -> dict[str, Any]:
    """An object with one field ``key`` holding one of ``options``: a small closed question."""
    return {
        "type": "object",
        "properties": {key: {"type": "string", "enum": list(options)}},
        "required": [key],
        "additionalProperties": False,
    }


def _near(order: str, name: str, start: int) -> bool:
    """Whether the words of ``name`` come right before position ``start`` of the order."""
    before = re.sub(r"[^a-z0-9]+", " ", order[:start].lower()).split()[-4:]
    words = [w for w in name.split("_") if w]
    return bool(words) and all(w in before for w in words)


def numbers_for(
    order: str, facts: OrderFacts, names: Sequence[str], units: Mapping[str, str] | None = None
) -> tuple[list[Any], dict[str, Value]]:
    """The order's quantities, split: those right after the name of one of ``names`` (a recipe
    parameter, a skill argument), or whose unit fits the declared unit of exactly one of them
    (``units``: name -> unit), go to it, as written; the rest are counts or unclear."""
    given: dict[str, Value] = {}
    rest: list[Any] = []
    for q in facts.quantities:
        owner = next((n for n in names if _near(order, n, q.start) and n not in given), None)
        if owner is None and q.unit and units:
            fits = [n for n, u in units.items() if u and n not in given and _same_kind(q, u)]
            owner = fits[0] if len(fits) == 1 else None
        if owner is not None:
            given[owner] = q.text
        else:
            rest.append(q)
    return rest, given


def _describe(t: Test) -> str:
    return f"{t.machine}.{t.tag} {t.op} {t.value}"


def _same_kind(q: Any, unit: str) -> bool:
    """Whether a quantity converts to ``unit`` (litres to millilitres, not litres to kelvin)."""
    try:
        q.to(unit)
    except ValueError:
        return False
    return True


class Planner:
    """Turns work orders into checked plans with one model backend (see the module docstring).

    ``plan`` never raises for what a model does (garbage, silence, nonsense, unsafe plans): it
    returns a :class:`PlanningOutcome` whose status says how planning ended.
    """

    def __init__(
        self,
        plant: PlantDescription,
        backend: LLMBackend,
        config: CoordinatorConfig | None = None,
        examples: Examples | None = None,
    ) -> None:
        self.plant = plant
        self.backend = backend
        self.config = config or CoordinatorConfig()
        # The word lists an order is read against load while the model does (about 0.5 s).
        threading.Thread(target=warm_words, args=(plant,), name="atelier-warm-words", daemon=True).start()
        #: Where approved readings of similar orders come from (None: no retrieval).
        self.examples = examples
        self._goal_schema = _choice_schema("goal", list(goal_options(plant)))
        self._plan_schema = plan_schema(plant)
        self._reading_schema = reading_schema(plant)

    async def _ask(
        self, out: PlanningOutcome, stage: str, system: str, user: str, schema: dict[str, Any], max_tokens: int
    ) -> str | None:
        mc = self.config.model
        start = time.monotonic()
        try:
            c = await self.backend.complete(
                [ChatMessage("system", system), ChatMessage("user", user)],
                schema,
                schema_name=stage,
                max_tokens=min(max_tokens, mc.max_tokens),
                timeout_s=mc.timeout_s,
            )
        except BackendTimeout as exc:
            out.attempts.append(Attempt(stage, "", f"timeout: {exc}", time.monotonic() - start))
            out.model_s += time.monotonic() - start
            return None
        except BackendError as exc:
            out.attempts.append(Attempt(stage, "", f"backend error: {exc}", time.monotonic() - start))
            out.model_s += time.monotonic() - start
            return None
        out.model_s += time.monotonic() - start
        out.attempts.append(Attempt(stage, c.text[:4000], None, c.elapsed_s))
        return c.text

    async def plan(
        self,
        work_order: str,
        *,
        snapshot: PlantSnapshot | None = None,
        events: Sequence[str] = (),
        feedback: Sequence[str] = (),
        mode: Mode | None = None,
    ) -> PlanningOutcome:
        """Plan a work order; see :class:`PlanningOutcome` for how it can end."""
        mode = mode or self.config.mode
        snapshot = snapshot or PlantSnapshot()
        out = PlanningOutcome(status="failed", work_order=work_order, mode=mode)
        t0 = time.monotonic()
        facts = read_order(work_order, self.plant)
        refusals = static_refusals(facts, self.plant)
        if refusals:
            out.refuse(f"plant {self.plant.name} cannot do this order: " + "; ".join(refusals), refusals)
            out.planner_s = time.monotonic() - t0
            return out
        reasons: list[str] = list(feedback)
        for _ in range(self.config.max_attempts):
            reading: Reading | None = None
            try:
                if mode == "direct":
                    plan = await self._direct_attempt(out, work_order, snapshot, events, reasons)
                else:
                    if mode == "intent":
                        reading = await self._intent_reading(out, work_order, facts, reasons)
                    else:
                        reading = await self._model_reading(out, work_order, snapshot, reasons)
                    if reading is None:
                        found = await self._despite_cannot(out, work_order, facts, snapshot)
                        if found is None:
                            if out.status in ("refused", "clarify"):
                                break
                            continue
                        plan, reading = found
                    else:
                        out.reading = reading
                        _ask_part_type(self.plant, reading, facts, snapshot)
                        plan = expand_reading(
                            self.plant, reading, work_order=work_order, snapshot=snapshot, mode="intent"
                        )
            except Unplannable as exc:
                out.refuse(str(exc), exc.missing)
                break
            except Unclear as exc:
                better = None
                if mode == "intent":
                    # The model's one-goal reading is unclear: a goal of the plant read from the
                    # order alone may not be (held to every rule in _alternative), or one goal per
                    # clause of a compound order.
                    better = await self._alternative(
                        out, work_order, facts, snapshot, Reading(), [exc.question], left_open=exc.options
                    )
                    if better is None and (split := await self._by_clauses(out, work_order, facts, snapshot)):
                        better, out.reading = split
                if better is None:
                    out.clarify(exc.question)
                    if mode in ("reading", "tuned"):
                        reasons[:] = [f"the reading was unclear: {exc.question}"]
                        continue
                    break
                plan, reading = better, out.reading
            if plan is None:
                continue
            g0 = time.monotonic()
            verdict = check(plan, self.plant, snapshot)
            out.guardrails_s += time.monotonic() - g0
            out.verdict = verdict
            if not verdict.ok:
                out.attempts[-1].error = "rejected by the guardrails"
                reasons = verdict.reasons()[:8]
                out.reasons, out.status = reasons, "rejected"
                continue
            gaps = self._gaps(work_order, facts, plan, reading)
            if gaps and mode == "intent" and reading is not None:
                better = await self._alternative(out, work_order, facts, snapshot, reading, gaps)
                if better is None and (split := await self._by_clauses(out, work_order, facts, snapshot)):
                    better, out.reading = split
                if better is not None:
                    plan, gaps = better, []
            if gaps:
                question = "The plan would leave out part of the order: " + "; ".join(gaps) + ". What should it do?"
                out.clarify(question)
                out.plan = None
                if mode == "intent":
                    break  # the same small questions give the same answer: ask the person
                reasons[:] = [*gaps[:6], "cover everything the order names, or decline it with a reason"]
                continue
            absent = self._absent_parts(plan, snapshot)
            if absent:
                out.refuse(
                    "the order's part is not where it says: " + "; ".join(absent), ["a part where the order says"]
                )
                out.plan = None
                break
            out.status, out.plan, out.reasons, out.question = "planned", plan, [], ""
            break
        else:
            if out.status not in ("rejected", "clarify"):
                out.status = "failed"
                out.reasons = [a.error or "" for a in out.attempts if a.error] or ["the model gave no usable answer"]
        out.planner_s = time.monotonic() - t0 - out.model_s
        return out

    async def _despite_cannot(
        self, out: PlanningOutcome, order: str, facts: OrderFacts, snapshot: PlantSnapshot
    ) -> tuple[Plan, Reading] | None:
        """When a small model insists that no goal of the plant does the order (intent mode): a
        goal of the plant read from the order alone, held to every rule (:meth:`_alternative`),
        else None and the refusal stands. The order names nothing the plant lacks (refused
        before any call), so "cannot" is often the model's miss."""
        if out.mode != "intent" or out.status != "refused" or not out.attempts or out.attempts[-1].error != _CANNOT:
            return None
        refused = (out.reasons, out.refusal)
        plan = await self._alternative(out, order, facts, snapshot, Reading(), [])
        if plan is None or out.reading is None:
            out.reasons, out.refusal = refused
            return None
        out.status, out.reasons, out.refusal = "failed", [], None
        return plan, out.reading

    async def _alternative(
        self,
        out: PlanningOutcome,
        order: str,
        facts: OrderFacts,
        snapshot: PlantSnapshot,
        reading: Reading,
        gaps: list[str],
        left_open: Sequence[str] = (),
        least: float = MIN_SUPPORT_ALTERNATIVE,
    ) -> Plan | None:
        """When the model's one-goal reading leaves part of the order out: the plant's other
        recipes and skills, best match for the order's words first (at most
        :data:`MAX_ALTERNATIVES`), each read from the order alone and held to every rule the
        model's was (expansion, guardrails, coverage). The first that passes, or None.

        ``left_open``: the names among which the order did not choose (the places or
        part types of an unclear reading's question). A plan that settles that choice itself,
        with one of them the order does not name, does not pass: the person is asked (a recipe
        that takes "the bottle" to the reject bin does not answer "move the bottle where?").
        ``least``: the support of the order's words a plan needs."""
        tried = {
            f"{g.kind}:{g.recipe if isinstance(g, RecipeGoal) else g.skill}"
            for g in reading.goals
            if isinstance(g, RecipeGoal | TaskGoal)
        }
        tried = {t.replace("task:", "skill:") for t in tried}
        for doc in [d for d in rank_goals(order, self.plant, facts) if d not in tried][:MAX_ALTERNATIVES]:
            kind, _, name = doc.partition(":")
            try:
                if kind == "recipe":
                    candidate = self._recipe_reading(order, facts, name)
                else:
                    task = await self._task_for(out, order, facts, name, ask=False)
                    if task is None:
                        continue
                    candidate = Reading(goals=[task])
                _ask_part_type(self.plant, candidate, facts, snapshot)
                plan = expand_reading(self.plant, candidate, work_order=order, snapshot=snapshot, mode="intent")
            except (Unplannable, Unclear):
                continue
            if not check(plan, self.plant, snapshot).ok or self._gaps(order, facts, plan, candidate, least):
                continue
            if _settles(plan, left_open, facts):
                continue
            chosen = "; ".join(reading.summary())
            out.reading = candidate
            note = (
                f"the model read {chosen!r}, which left out {'; '.join(gaps)[:150]}; {doc} covers the order"
                if reading.goals
                else f"the model found no goal of the plant for the order; {doc} covers it"
            )
            return plan.model_copy(update={"notes": [*plan.notes, note]})
        return None

    async def _by_clauses(
        self, out: PlanningOutcome, order: str, facts: OrderFacts, snapshot: PlantSnapshot
    ) -> tuple[Plan, Reading] | None:
        """A compound order the one-goal reading does not cover (intent mode): one goal per
        clause (:func:`llm_coordinator.clauses.split_clauses`), each read from its clause alone
        by the same small questions, run in the order's sequence. The plan is held to every rule
        on the whole order (its clauses: the connectives left out), with the support an
        alternative needs (``MIN_SUPPORT_ALTERNATIVE``), and each clause's goal must cover its own
        clause (:meth:`_clause_reading`): (plan, reading), or None and nothing of ``out`` but its
        record of model calls changes."""
        clauses = split_clauses(order)
        if len(clauses) < 2 or negated(order):
            return None  # (a clause's goal would be what "do not ..." forbids)
        kept = (out.status, list(out.reasons), out.refusal, out.question, out.reading)
        goals = []
        try:
            for clause in clauses:
                clause_facts = read_order(clause, self.plant)
                if static_refusals(clause_facts, self.plant):
                    return None
                reading = await self._clause_reading(out, clause, clause_facts, snapshot)
                if reading is None:
                    return None
                goals.extend(reading.goals)
            whole = Reading(goals=goals)
            _ask_part_type(self.plant, whole, facts, snapshot)
            plan = expand_reading(self.plant, whole, work_order=order, snapshot=snapshot, mode="intent")
        except (Unplannable, Unclear, ValidationError):
            return None
        finally:
            out.status, out.reasons, out.refusal, out.question, out.reading = kept
        # The whole order without the connectives it was split at ("once that's done"): grammar
        # that no plan does, and that would weigh as words the plan leaves unsupported.
        joined = "; ".join(clauses)
        if not check(plan, self.plant, snapshot).ok or self._gaps(
            joined, read_order(joined, self.plant), plan, whole, MIN_SUPPORT_ALTERNATIVE
        ):
            return None
        note = f"one goal for each of the order's {len(clauses)} clauses, in its sequence: " + "; ".join(
            whole.summary()
        )
        return plan.model_copy(update={"notes": [*plan.notes, note]}), whole

    async def _clause_reading(
        self, out: PlanningOutcome, clause: str, facts: OrderFacts, snapshot: PlantSnapshot
    ) -> Reading | None:
        """One goal for one clause of a compound order: the model's, when its plan covers the
        clause, else the best goal of the plant read from the clause alone
        (:meth:`_alternative`), else None. A clause is a few words, so one verb no name of the
        plant has ("send ... back") weighs a quarter of them: each clause is held to the support
        the model's own reading needs (``MIN_SUPPORT``), and the whole order to what an
        alternative needs (in :meth:`_by_clauses`)."""
        reading: Reading | None = None
        try:
            reading = await self._intent_reading(out, clause, facts, [])
            if reading is not None and len(reading.goals) == 1:
                alone = expand_reading(self.plant, reading, work_order=clause, snapshot=snapshot, mode="intent")
                if not check(alone, self.plant, snapshot).ok or self._gaps(clause, facts, alone, reading):
                    reading = None
                else:
                    return reading
        except (Unplannable, Unclear):
            pass
        found = await self._alternative(out, clause, facts, snapshot, reading or Reading(), [], least=MIN_SUPPORT)
        return None if found is None else out.reading

    def _recipe_reading(self, order: str, facts: OrderFacts, goal: str) -> Reading:
        """A one-recipe reading: counts and parameters from the order's own numbers and units."""
        recipe = self.plant.recipes[goal]
        rest, params = numbers_for(order, facts, list(recipe.params), {n: p.unit for n, p in recipe.params.items()})
        # The part type the order names, for the recipe's one parameter of that type (what it works on).
        slots = [n for n, p in recipe.params.items() if p.type == "part_type" and n not in params]
        named = facts.named("part_type")
        if len(slots) == 1 and len(named) == 1:
            params[slots[0]] = named[0]
        until = until_test(order, self.plant, facts)
        if until is not None:
            # "until the counter reads 10, at most 5 times": the recipe once a repetition, the
            # other count the bound.
            rest = [q for q in rest if q is not until.target]
            bounds = [q for q in rest if not q.unit]
            if len(bounds) != 1 or any(q.unit for q in rest):
                raise Unclear(f"at most how many times should recipe {goal} run until {_describe(until.test)}?")
            body = RecipeGoal(kind="recipe", recipe=goal, count=1, params=params)
            max_times = read_count(bounds[0].text, f"recipe {goal}: at most")
            return Reading(goals=[RepeatGoal(kind="repeat", until=until.test, max_times=max_times, body=[body])])
        counts = [q for q in rest if not q.unit]
        if len(counts) > 1:
            raise Unclear(f"how many times should recipe {goal} run: {' or '.join(q.text for q in counts)}?")
        if counts and is_times(counts[0]):
            # "Fill and seal one bottle, check twice": how often, not how many parts.
            raise Unclear(f"{counts[0].text!r}: should recipe {goal} run {counts[0].value:g} times, on as many parts?")
        if any(q.unit for q in rest):
            odd = next(q for q in rest if q.unit)
            raise Unclear(f"what is {odd.text!r} for in recipe {goal} (its parameters: {', '.join(recipe.params)})?")
        count: int | str = counts[0].text if counts else 1
        return Reading(goals=[RecipeGoal(kind="recipe", recipe=goal, count=count, params=params)])

    def _absent_parts(self, plan: Plan, snapshot: PlantSnapshot) -> list[str]:
        """The picks of the plan's unconditional steps that no part could serve where the plant
        state says the parts are (none when the state does not say)."""
        if snapshot.parts is None:
            return []
        steps = [(s.id, s.agent, s.skill, dict(s.args)) for s in plan.steps if not s.when]
        return missing_parts(self.plant, snapshot.parts, steps)

    def _gaps(
        self, order: str, facts: OrderFacts, plan: Plan, reading: Reading | None, least: float = MIN_SUPPORT
    ) -> list[str]:
        """The coverage rule, and the support of the order's words (at least ``least`` of them;
        see the module docstring)."""
        gaps = coverage(facts, plan, reading, self.plant)
        gaps += [
            f"the order asks for {w!r}, which the plan does not do and a recipe of the plant does"
            for w in vocabulary_gaps(order, plan, self.plant, facts)
        ]
        gaps += [
            f"nothing in the order asks for recipe {r} ({self.plant.recipes[r].description[:80]})"
            for r in unevidenced_goals(order, plan, self.plant, facts)
        ]
        gaps += [
            f"the plan does more than the order asks: {'recipe ' + r if r in self.plant.recipes else r} "
            "does what it names with fewer steps"
            for r in overreach(order, plan, self.plant, facts)
        ]
        gaps += [
            f"the order asks {agent} to {skill.replace('_', ' ')}, and no step of the plan has {agent} do it"
            for agent, skill in unassigned_tasks(order, plan, self.plant, facts, reading)
        ]
        unsupported, support = unsupported_words(order, plan, self.plant, facts)
        declined = reading is not None and bool(reading.declined)
        negation = negation_of_action(order, COMPARATIVES)
        if negation is not None and not declined:
            # "Do not machine a blank": the goals of a reading are what to do; one that says
            # nothing of what to leave out reads the order without its negation.
            gaps.append(
                f"the order says what not to do ({negation!r}), and the plan's reading says nothing it leaves out"
            )
        if not declined and support < least:
            strange = [w for w in unsupported if w in facts.strange]
            gaps.append(
                "the plan ("
                + "; ".join(plan.goals or [plan.recipe or "single tasks"])
                + ") does nothing the order's words "
                + ", ".join(repr(w) for w in unsupported[:6])
                + " ask for"
                + (
                    f" (nothing of plant {self.plant.name} is named or described as {' or '.join(map(repr, strange))})"
                    if strange
                    else ""
                )
            )
        clauses = split_clauses(order)
        for clause in clauses if len(clauses) > 1 and not declined else ():
            # Each clause of a compound order needs its own support: a plan that does the first
            # clause well can outweigh a second that nothing does ("..., then weld two plates").
            # (the clause's function words aside: "thank you very much" asks for nothing)
            left, share = unsupported_words(
                clause, plan, self.plant, read_order(clause, self.plant), ignore=function_words(language_of(clause))
            )
            if share < MIN_SUPPORT:
                gaps.append(f"the plan does nothing the clause {clause!r} asks for ({', '.join(map(repr, left[:4]))})")
        return gaps

    async def _model_reading(
        self, out: PlanningOutcome, order: str, snapshot: PlantSnapshot, reasons: list[str]
    ) -> Reading | None:
        """The whole reading, written by the model in the plan language."""
        if out.mode == "tuned":
            shown = await self._shots(order)
            ctx = build_tuned_context(self.plant.name, order, examples=shown, feedback=reasons)
        else:
            ctx = build_reading_context(self.plant, order, snapshot=snapshot, feedback=reasons)
        text = await self._ask(out, "reading", ctx.system, ctx.user, self._reading_schema, self.config.model.max_tokens)
        if text is None:
            return None
        try:
            reading = parse_reading(text)
        except ValueError as exc:
            out.attempts[-1].error = str(exc)
            reasons[:] = [str(exc)]
            return None
        if reading.outcome == "cannot":
            out.refuse(f"plant {self.plant.name} cannot do this order: {reading.reason or 'the model found no way'}")
            return None
        if reading.outcome == "clarify":
            out.clarify(reading.question or "the order can be read several ways: which one is meant?")
            return None
        return reading

    async def _shots(self, order: str) -> list[tuple[str, str]]:
        """Approved readings of the orders most like this one (retrieval, off the event loop:
        it reads the store; none when off)."""
        if self.examples is None or self.config.retrieval == 0:
            return []
        found = await asyncio.to_thread(self.examples, order, self.config.retrieval)
        return list(found)[: self.config.retrieval]

    async def _intent_reading(
        self, out: PlanningOutcome, order: str, facts: OrderFacts, reasons: list[str]
    ) -> Reading | None:
        """A one-goal reading from small questions (see the module docstring)."""
        shots = [(o, g) for o, a in await self._shots(order) if (g := _goal_of(a, self.plant)) is not None]
        ctx = build_goal_context(self.plant, order, feedback=reasons, examples=shots)
        text = await self._ask(out, "goal", ctx.system, ctx.user, self._goal_schema, 40)
        if text is None:
            return None
        try:
            goal = json.loads(text)["goal"]
            if goal not in goal_options(self.plant):
                raise ValueError(f"{goal!r} is not an option")
        except (ValueError, KeyError, TypeError) as exc:
            out.attempts[-1].error = f"not an answer: {exc}"
            reasons[:] = [f'answer {{"goal": <one of the options>}}; yours was not usable ({exc})']
            return None
        if goal == "cannot":
            # Nothing the order names is missing (checked before any call), so a small model's
            # "cannot" is more often wrong than right: ask again, and refuse only if it insists.
            out.attempts[-1].error = _CANNOT
            if sum(a.error == _CANNOT for a in out.attempts) >= self.config.max_attempts:
                out.refuse(f"no recipe or skill of plant {self.plant.name} does this order (the model found none)")
            else:
                reasons[:] = ["the cell has every machine, robot and skill the order names: choose a recipe or tasks"]
            return None
        if goal == "tasks":
            task = await self._ask_task(out, order, facts)
            return None if task is None else Reading(goals=[task])
        return self._recipe_reading(order, facts, goal)

    async def _choose(
        self, out: PlanningOutcome, stage: str, question: str, order: str, options: dict[str, str]
    ) -> str | None:
        """One small closed question to the model: pick one of ``options`` (name -> meaning)."""
        if len(options) == 1:
            return next(iter(options))
        system = f"{question} Answer with JSON. {FENCE_RULE}\n\nOptions:\n" + "\n".join(
            f"- {k}: {v}" if v else f"- {k}" for k, v in options.items()
        )
        user = f"Work order {FENCE_OPEN}\n{fence(order, 1000)}\n{FENCE_CLOSE}"
        text = await self._ask(out, stage, system, user, _choice_schema(stage, list(options)), 40)
        if text is None:
            return None
        try:
            value = json.loads(text)[stage]
        except (ValueError, KeyError, TypeError) as exc:
            out.attempts[-1].error = f"not an answer: {exc}"
            return None
        if value not in options:
            out.attempts[-1].error = f"{value!r} is not an option"
            return None
        return str(value)

    async def _ask_task(self, out: PlanningOutcome, order: str, facts: OrderFacts) -> TaskGoal | None:
        """A single task, one slot at a time: the skill (model), the agent and each argument (the
        order's own words when they name exactly one candidate; the model when they name several;
        a question back to the person when they name none and several fit)."""
        plant = self.plant
        skills = sorted({s for a in plant.agents() for s in plant.agent_skills(a)})
        descriptions = {}
        for k in skills:
            owner = next(a for a in plant.agents() if k in plant.agent_skills(a))
            descriptions[k] = plant.skill_spec(owner, k).description
        skill = await self._choose(out, "skill", "Which skill does the work order ask for?", order, descriptions)
        if skill is None:
            return None
        return await self._task_for(out, order, facts, skill, ask=True)

    async def _task_for(
        self, out: PlanningOutcome, order: str, facts: OrderFacts, skill: str, *, ask: bool
    ) -> TaskGoal | None:
        """The task of ``skill`` the order asks for: its agent and arguments from the order's own
        words, or (``ask``) from the model where the order names several; None when it cannot be
        said without the model."""
        plant = self.plant
        capable = [a for a in plant.agents() if skill in plant.agent_skills(a)]
        named = [a for a in facts.named("agent") if a in capable]
        agent: str | None
        if len(named) == 1 or len(capable) == 1:
            agent = (named or capable)[0]
        elif named:
            if not ask:
                return None
            agent = await self._choose(
                out, "agent", f"Which agent should {skill}?", order, {a: plant.agents()[a] for a in named}
            )
            if agent is None:
                return None
        elif every_agent(order, plant, capable) and not (facts.named("place") or facts.places or facts.quantities):
            # "home both robots"; not "stop all machines at the infeed" (which ones?), nor a
            # count ("of bay 3"): then the person is asked.
            agent = EVERY
        else:
            agent = None  # the expansion picks the nearest agent that can
        spec = plant.skill_spec(capable[0] if agent in (None, EVERY) else agent, skill)
        numeric = {n: a.unit for n, a in spec.args.items() if a.type in ("int", "float")}
        rest, args = numbers_for(order, facts, list(numeric), numeric)
        counts = [q for q in rest if not q.unit]
        for name, a in spec.args.items():
            if a.type in ("int", "float", "joints", "str") or name in args:
                continue
            candidates = [n for n in plant.names_of(a.type) or [] if not (a.type == "robot" and n == agent)]
            mentioned = {m.name for m in facts.mentions}
            hits = [c for c in candidates if c in mentioned]
            if len(hits) == 1 or len(candidates) == 1:
                args[name] = (hits or candidates)[0]
            elif hits:
                if not ask:
                    return None
                value = await self._choose(
                    out,
                    name,
                    f"Which {a.type.replace('_', ' ')} does the work order mean for {name}?",
                    order,
                    dict.fromkeys(hits, ""),
                )
                if value is None:
                    return None
                args[name] = value
        count: int | str = counts[0].text if len(counts) == 1 else 1
        return TaskGoal(kind="task", skill=skill, agent=agent, args=args, count=count)

    async def _direct_attempt(
        self,
        out: PlanningOutcome,
        order: str,
        snapshot: PlantSnapshot,
        events: Sequence[str],
        reasons: list[str],
    ) -> Plan | None:
        ctx = build_context(
            self.plant,
            order,
            snapshot=snapshot,
            events=events,
            feedback=reasons,
            max_tokens=self.config.context_max_tokens,
        )
        text = await self._ask(out, "plan", ctx.system, ctx.user, self._plan_schema, self.config.model.max_tokens)
        if text is None:
            return None
        try:
            draft = DraftPlan.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            out.attempts[-1].error = f"not a plan: {problems}"
            reasons[:] = [f"the answer was not a valid plan: {problems}"]
            return None
        return plan_from_draft(self.plant, draft, order)


def _ask_part_type(plant: PlantDescription, reading: Reading, facts: OrderFacts, snapshot: PlantSnapshot) -> None:
    """Raises :class:`Unclear` when a recipe of the reading works on a part type that the order
    leaves open, and parts of several types are there for it: its picks would find a part of
    each (where the plant state says the parts are, else where the plant file lays them out).
    "The container on the belt" is a question, not the recipe's default (nor the model's
    guess), when a bottle and a canister are both on the belt; the container on a pan where
    only a bottle stands is that bottle."""
    if facts.named("part_type"):
        return
    locations = plant.locations()
    if snapshot.parts is None:
        parts = {n: locations[p.at].xyz_m for n, p in plant.parts.items() if p.at in locations}
    else:  # a part the plant file does not list is of no type the plant knows
        parts = {n: xyz for n, xyz in snapshot.parts.items() if n in plant.parts}
    present = sorted({plant.parts[n].type for n in parts})
    for g in simple_goals(reading) if len(present) > 1 else []:
        recipe = plant.recipes.get(g.recipe) if isinstance(g, RecipeGoal) else None
        slot = next((n for n, p in recipe.params.items() if p.type == "part_type"), None) if recipe else None
        if not isinstance(g, RecipeGoal) or slot is None:
            continue
        fits = []
        for t in present:
            try:
                count = read_count(g.count, f"recipe {g.recipe}: count")
                intent = RecipeIntent(goal="recipe", recipe=g.recipe, count=count, params={**g.params, slot: t})
                protos, _ = expand_recipe(plant, intent)
            except (Unplannable, Unclear, ValidationError):
                continue
            if not missing_parts(plant, parts, [(p.id, p.agent, p.skill, p.args) for p in protos]):
                fits.append(t)
        if len(fits) > 1:
            raise Unclear(
                f"recipe {g.recipe} works on one part type ({slot}); the order names none, and parts of "
                f"types {' and '.join(fits)} are there for it: which one?",
                fits,
            )


def _settles(plan: Plan, left_open: Sequence[str], facts: OrderFacts) -> bool:
    """Whether ``plan`` uses one of the names ``left_open`` (as a step's agent or argument) that
    the order does not name."""
    unnamed = set(left_open) - {m.name for m in facts.mentions}
    if not unnamed:
        return False
    used = {s.agent for s in plan.steps} | {v for s in plan.steps for v in s.args.values() if isinstance(v, str)}
    return bool(used & unnamed)


def _goal_of(answer: str, plant: PlantDescription) -> str | None:
    """The goal option an approved reading amounts to (a recipe, or ``tasks``), for the intent
    question's examples; None when it is more than one goal option can say."""
    try:
        reading = parse_reading(answer)
    except ValueError:
        return None
    if reading.outcome != "plan" or len(reading.goals) != 1:
        return None
    g = reading.goals[0]
    if g.kind == "recipe" and g.recipe in plant.recipes:
        return g.recipe
    return "tasks" if g.kind == "task" else None

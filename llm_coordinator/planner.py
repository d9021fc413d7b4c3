"""From a work order to a plan the guardrails accept, or to a refusal that names what is missing.

Two modes, one exit (the guardrails):

- **intent** (default; made for small models). The model answers small questions: which goal
  (a recipe of the plant, single ``tasks``, or ``cannot``), and for tasks which skills of which
  agents. Numbers the order states (how many parts, a recipe's integer parameters) are read from
  the order itself. A deterministic planner expands the intent: recipe steps with parameters
  substituted, repeated per part, agents assigned, machine preconditions added for single tasks
  (close the door before a cycle, open it before a robot reaches in, reset a faulted machine),
  and the whole scheduled with CP-SAT (:mod:`llm_coordinator.scheduler`).
- **direct** (for capable models). The model writes the step graph itself under a JSON Schema
  made from the plant; durations and hazard flags are filled in from the plant, never taken
  from the model.

Before any model call, the order is compared with the plant: a robot, a machine or an action
the plant does not have ends in a :class:`Refusal` naming it. Rejected answers go back to the
model with the reasons, at most ``max_attempts`` calls in all. A model that answers garbage,
names what does not exist, proposes an unsafe plan, or does not answer at all never yields an
accepted plan.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from llm_coordinator._geometry import machine_locations, reach_distance_m, step_location
from llm_coordinator._lexicon import (
    ACTION_MACHINE_KIND,
    MACHINE_KIND_WORDS,
    OTHER_EQUIPMENT,
    ROBOT_WORDS,
    UNSUPPORTED_ACTIONS,
)
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.context import (
    FENCE_CLOSE,
    FENCE_OPEN,
    FENCE_RULE,
    build_context,
    build_goal_context,
    fence,
    goal_options,
)
from llm_coordinator.guardrails import NEEDS_RESET, Verdict, check, mark_hazards, step_resources
from llm_coordinator.interface import BackendError, BackendTimeout, ChatMessage, LLMBackend
from llm_coordinator.plan import (
    MAX_COUNT,
    ArgValue,
    CannotIntent,
    DraftPlan,
    Plan,
    RecipeIntent,
    Step,
    TaskIntent,
    TasksIntent,
    plan_schema,
)
from llm_coordinator.scheduler import ProtoStep, schedule, sequential
from llm_coordinator.snapshot import PlantSnapshot
from plant.config import PlantDescription, Recipe
from plant.skills import SKILLS

Status = Literal["planned", "refused", "rejected", "failed"]


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
    """The end of planning: a plan the guardrails accept, a refusal, or a failure with reasons."""

    status: Status
    work_order: str
    mode: str
    plan: Plan | None = None
    verdict: Verdict | None = None
    refusal: Refusal | None = None
    reasons: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    intent: RecipeIntent | TasksIntent | CannotIntent | None = None
    model_s: float = 0.0
    guardrails_s: float = 0.0
    planner_s: float = 0.0


class Unplannable(Exception):
    """An intent names something the plant does not have or cannot do."""

    def __init__(self, missing: Sequence[str], reason: str) -> None:
        self.missing = tuple(missing)
        super().__init__(reason)


# --------------------------------------------------------------------------- reading the order

_WORD_NUMBERS = {
    "one": 1,
    "a": 1,
    "an": 1,
    "single": 1,
    "two": 2,
    "a pair of": 2,
    "both": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "twenty": 20,
}
_COUNTED = r"(?:new\s+|more\s+|aluminium\s+|aluminum\s+|suspect\s+)?(?:parts?|blanks?|pieces?|pcs|units?|items?)"
_TIMES = {"once": 1, "twice": 2, "thrice": 3}


def _norm(text: str) -> str:
    return " " + re.sub(r"\s+", " ", text.lower().replace("-", " ")) + " "


def explicit_count(order: str) -> int | None:
    """How many parts the order states ("3 parts", "five blanks", "twice"), or None."""
    t = _norm(order)
    m = re.search(r"\b(\d{1,3})\s*(?:x\s+)?" + _COUNTED, t) or re.search(r"\b(\d{1,3})\s+times\b", t)
    if m:
        return int(m.group(1))
    for word, n in _WORD_NUMBERS.items():
        if re.search(rf"\b{word}\s+(?:more\s+)?{_COUNTED}", t) and word not in ("a", "an"):
            return n
    for word, n in _TIMES.items():
        if re.search(rf"\b{word}\b", t):
            return n
    return None


def explicit_params(order: str, recipe: Recipe) -> dict[str, int | float]:
    """Numeric recipe parameters the order states by name ("program 7", "program no. 12")."""
    out: dict[str, int | float] = {}
    t = _norm(order)
    for name, p in recipe.params.items():
        if p.type not in ("int", "float"):
            continue
        label = name.replace("_", " ")
        m = re.search(rf"\b{re.escape(label)}\s*(?:#|no\.?|number|=|:)?\s*(-?\d+(?:\.\d+)?)", t)
        if m:
            out[name] = int(float(m.group(1))) if p.type == "int" else float(m.group(1))
    return out


def _candidates(plant: PlantDescription, arg_type: str, agent: str | None) -> list[str]:
    """Names an argument of this type may take (robots other than the agent itself)."""
    return [n for n in plant.names_of(arg_type) or [] if not (arg_type == "robot" and n == agent)]


def _mentioned(order: str, candidates: Sequence[str]) -> list[str]:
    """Candidates the order names: in full, with spaces for underscores, or by a word of four
    letters or more that belongs to that candidate alone ("reject" -> a bin named reject_bin)."""
    t = _norm(order).replace("handover", "hand over")
    words = {c: [w for w in c.replace("handover", "hand_over").split("_") if len(w) >= 4] for c in candidates}
    full = [c for c in candidates if re.search(rf"\b{re.escape(c.replace('_', ' '))}\b", t.replace("_", " "))]
    if full:
        return full
    out = []
    for c, ws in words.items():
        own = [w for w in ws if not any(w in o for oc, o in words.items() if oc != c)]
        if any(re.search(rf"\b{re.escape(w)}", t) for w in own):
            out.append(c)
    return out


def _plant_names(plant: PlantDescription) -> set[str]:
    names: set[str] = set(plant.agents()) | set(plant.locations()) | set(plant.part_types) | set(plant.parts)
    names |= set(plant.recipes) | set(plant.zones) | set(plant.stations) | set(SKILLS)
    names |= {p for r in plant.recipes.values() for p in r.params}
    names |= {r.model for r in plant.robots.values()} | {r.tool.model for r in plant.robots.values()}
    return names


def find_missing(order: str, plant: PlantDescription) -> list[str]:
    """What the order names that the plant does not have: identifiers that are no name of the
    plant, robot makers or models, kinds of machine, and actions no agent can perform."""
    t = _norm(order)
    missing: list[str] = []
    known = _plant_names(plant)
    for ident in re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b|\b[a-z]+\d+[a-z]?\b", order.lower()):
        if ident not in known and not any(ident in words for words in ROBOT_WORDS.values()):
            missing.append(f"nothing in plant {plant.name} is named {ident!r}")
    models = {r.model for r in plant.robots.values()}
    for model, words in ROBOT_WORDS.items():
        hit = next((w for w in words if re.search(rf"\b{re.escape(w)}\b", t)), None)
        if hit and model not in models:
            have = ", ".join(f"{n} ({r.model})" for n, r in plant.robots.items())
            missing.append(f"no {hit} robot (the robots are {have})")
    kinds = {m.kind for m in plant.machines.values()}
    for kind, words in MACHINE_KIND_WORDS.items():
        hit = next((w for w in words if re.search(rf"\b{re.escape(w)}s?\b", t)), None)
        if hit and kind not in kinds:
            missing.append(f"no {hit} (the machines are {', '.join(plant.machines)})")
    for thing in OTHER_EQUIPMENT:
        if re.search(rf"\b{re.escape(thing)}s?\b", t):
            missing.append(f"no {thing} in plant {plant.name}")
    for stem in UNSUPPORTED_ACTIONS:
        needs = ACTION_MACHINE_KIND.get(stem.strip())
        if re.search(rf"\b{re.escape(stem)}", t) and (needs is None or needs not in kinds):
            missing.append(f"no agent has a skill to {stem.strip()}")
    return list(dict.fromkeys(missing))


def mentioned_agents(order: str, plant: PlantDescription) -> list[str]:
    """Agents the order names: by name, by robot model or maker, or by machine kind."""
    t = _norm(order)
    out: list[str] = []
    for name in plant.agents():
        if re.search(rf"\b{re.escape(name.replace('_', ' '))}\b", t) or name in order.lower():
            out.append(name)
    for name, r in plant.robots.items():
        if any(re.search(rf"\b{re.escape(w)}\b", t) for w in ROBOT_WORDS.get(r.model, (r.model,))):
            out.append(name)
    for name, m in plant.machines.items():
        if any(re.search(rf"\b{re.escape(w)}s?\b", t) for w in MACHINE_KIND_WORDS.get(m.kind, (m.kind,))):
            out.append(name)
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- expansion


def nominal_duration_s(plant: PlantDescription, agent: str, skill: str) -> float:
    """Expected duration of a skill: the machine's cycle time for a cycle, else the skill's."""
    if skill == "run_cycle" and agent in plant.machines:
        return plant.machines[agent].cycle_time_s + 1.0  # Starting and Completing take ~0.3 s each
    return SKILLS[skill].nominal_duration_s


@dataclass
class _Proto:
    id: str
    agent: str
    skill: str
    args: dict[str, ArgValue]
    after: list[str]
    hazardous: bool = False
    note: str = ""
    rep: int = 0
    duration_s: float | None = None


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\{([a-z][a-z0-9_]*)\}", value)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return re.sub(r"\{([a-z][a-z0-9_]*)\}", lambda m: str(params.get(m.group(1), m.group(0))), value)
    return value


def _recipe_params(plant: PlantDescription, name: str, recipe: Recipe, given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [p for p in given if p not in recipe.params]
    if unknown:
        raise Unplannable([f"parameter {p}" for p in unknown], f"recipe {name} has no parameter {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for pname, spec in recipe.params.items():
        v = given.get(pname, spec.default)
        if v is None:
            raise Unplannable([f"a value for {pname}"], f"recipe {name} needs {pname} and the order does not give it")
        names = plant.names_of(spec.type)
        if names is not None and v not in names:
            raise Unplannable([f"{spec.type} {v}"], f"{pname}={v!r}: the plant has no {spec.type} named {v!r}")
        if spec.type in ("int", "float"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise Unplannable([], f"{pname}={v!r} is not a number")
            if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
                raise Unplannable([], f"{pname}={v} is outside {spec.min:g}..{spec.max:g}")
        if spec.choices is not None and v not in spec.choices:
            raise Unplannable([], f"{pname}={v!r} is not one of {', '.join(spec.choices)}")
        out[pname] = v
    return out


def expand_recipe(plant: PlantDescription, intent: RecipeIntent) -> tuple[list[_Proto], list[str]]:
    """The steps of ``count`` runs of a recipe, parameters substituted; raise :class:`Unplannable`."""
    recipe = plant.recipes.get(intent.recipe)
    if recipe is None:
        raise Unplannable([f"recipe {intent.recipe}"], f"plant {plant.name} has no recipe {intent.recipe!r}")
    params = _recipe_params(plant, intent.recipe, recipe, intent.params)
    protos: list[_Proto] = []
    for k in range(intent.count):
        sfx = f"_{k + 1}" if intent.count > 1 else ""
        for rs in recipe.steps:
            agent = str(_substitute(rs.agent, params))
            if agent not in plant.agents():
                raise Unplannable([f"agent {agent}"], f"recipe step {rs.id} names {agent!r}, which is not an agent")
            protos.append(
                _Proto(
                    id=f"{rs.id}{sfx}",
                    agent=agent,
                    skill=rs.skill,
                    args={a: _substitute(v, params) for a, v in rs.args.items()},
                    after=[f"{d}{sfx}" for d in rs.after],
                    hazardous=rs.hazardous,
                    note=f"recipe {intent.recipe}, step {rs.id}" + (f", part {k + 1} of {intent.count}" if sfx else ""),
                    rep=k,
                    duration_s=rs.expected_duration_s,
                )
            )
    notes = [f"recipe {intent.recipe} x{intent.count} with " + ", ".join(f"{k}={v}" for k, v in params.items())]
    return protos, notes


def _capable(plant: PlantDescription, skill: str, args: Mapping[str, ArgValue]) -> list[str]:
    """Agents allowed ``skill`` that can reach where it takes them, nearest first."""
    out: list[tuple[float, str]] = []
    for a in plant.agents():
        if skill not in plant.agent_skills(a):
            continue
        loc = step_location(plant, skill, args)
        if a in plant.robots and loc in plant.locations():
            d, reach = reach_distance_m(plant, a, loc)
            if d > reach:
                continue
            out.append((d, a))
        else:
            out.append((0.0, a))
    return [a for _, a in sorted(out)]


def expand_tasks(
    plant: PlantDescription, intent: TasksIntent, order: str, snapshot: PlantSnapshot
) -> tuple[list[_Proto], list[str]]:
    """Single tasks in the order given, with agents checked against skills, reach and the order's
    own words, and the machine preconditions a person would add."""
    notes: list[str] = []
    named = mentioned_agents(order, plant)
    protos: list[_Proto] = []
    for i, t in enumerate(intent.tasks):
        if t.skill not in SKILLS:
            raise Unplannable([f"skill {t.skill}"], f"{t.skill!r} is not a skill of any agent")
        capable = _capable(plant, t.skill, t.args)
        if not capable:
            raise Unplannable([f"an agent that can {t.skill} there"], f"no agent of {plant.name} can {t.skill} there")
        preferred = [a for a in named if a in capable]
        agent = t.agent if t.agent in capable and (not preferred or t.agent in preferred) else None
        if agent is None:
            agent = preferred[0] if preferred else capable[0]
            if t.agent is not None:
                notes.append(f"task {i + 1}: {t.skill} given to {agent} instead of {t.agent}")
        protos.append(_Proto(f"{t.skill}_{i + 1}", agent, t.skill, dict(t.args), [], note=f"task {i + 1}"))
    out = _add_preconditions(plant, protos, snapshot, notes)
    for i, p in enumerate(out):
        p.rep = i  # tasks keep the order given wherever they share an agent, a place or a machine
    return out, notes


def _add_preconditions(
    plant: PlantDescription, protos: list[_Proto], snapshot: PlantSnapshot, notes: list[str]
) -> list[_Proto]:
    inside = machine_locations(plant)
    door: dict[str, bool | None] = {
        m: (snapshot.machines[m].door_closed if m in snapshot.machines else None) for m in plant.machines
    }
    robot_in: dict[str, str | None] = {
        r: inside.get(snapshot.robots[r].at or "") if r in snapshot.robots else None for r in plant.robots
    }
    out: list[_Proto] = []
    n = 0

    def add(agent: str, skill: str, why: str) -> None:
        nonlocal n
        n += 1
        out.append(_Proto(f"{skill}_{agent}_{n}", agent, skill, {}, [], note=f"added: {why}"))
        notes.append(f"added {skill} on {agent}: {why}")

    for p in protos:
        m = plant.machines.get(p.agent)
        if m is not None and p.skill in ("run_cycle", "feed", "open_door", "close_door"):
            for r, where in robot_in.items():
                if where == p.agent:
                    add(r, "home", f"{r} must leave {p.agent} before it {p.skill.replace('_', ' ')}s")
                    robot_in[r] = None
            if p.skill == "run_cycle" and m.has_door and door[p.agent] is not True:
                add(p.agent, "close_door", "the door must be closed before a cycle starts")
                door[p.agent] = True
        if p.agent in plant.robots:
            loc = step_location(plant, p.skill, p.args)
            target = inside.get(loc or "")
            if target is not None and plant.machines[target].has_door and door[target] is not False:
                add(target, "open_door", f"{p.agent} reaches into {target}")
                door[target] = False
            robot_in[p.agent] = target if loc is not None else None
        if p.skill in ("open_door", "close_door"):
            door[p.agent] = p.skill == "close_door"
        out.append(p)
    return out


def _resets(plant: PlantDescription, protos: list[_Proto], snapshot: PlantSnapshot, notes: list[str]) -> list[_Proto]:
    """A reset in front of the first use of a machine that is faulted, stopped or aborted."""
    out = list(protos)
    for name, ms in snapshot.machines.items():
        uses = [p for p in out if p.agent == name]
        if uses and (ms.state in NEEDS_RESET or ms.fault_code) and uses[0].skill != "reset":
            first = out.index(uses[0])
            out.insert(first, _Proto(f"reset_{name}", name, "reset", {}, [], note=f"added: {name} is {ms.state}"))
            for p in out[first + 1 :]:
                if p.agent == name:
                    p.after.append(f"reset_{name}")
                    break
            notes.append(f"added reset of {name}: it is {ms.state}")
    return out


def plan_recipe(
    plant: PlantDescription, intent: RecipeIntent, *, work_order: str, snapshot: PlantSnapshot | None = None
) -> Plan:
    """A recipe as a plan without the model: its steps with their parameters, a reset before
    the first use of a machine the state shows stopped, aborted or faulted, scheduled."""
    protos, notes = expand_recipe(plant, intent)
    if snapshot is not None:
        protos = _resets(plant, protos, snapshot, notes)
    return finish_plan(plant, protos, work_order=work_order, mode="intent", recipe=intent.recipe, notes=notes)


def finish_plan(
    plant: PlantDescription,
    protos: list[_Proto],
    *,
    work_order: str,
    mode: Literal["intent", "direct", "recovery"],
    recipe: str | None,
    notes: list[str],
    parallel: bool = True,
) -> Plan:
    """Schedule proto-steps into a :class:`Plan` with durations and hazard flags from the plant."""
    inside = machine_locations(plant)
    ps: list[ProtoStep] = []
    for p in protos:
        res = step_resources(plant, p.agent, p.skill, p.args, inside) if p.agent in plant.agents() else set()
        loc = step_location(plant, p.skill, p.args) if p.agent in plant.robots else None
        dur = p.duration_s or (nominal_duration_s(plant, p.agent, p.skill) if p.skill in SKILLS else 5.0)
        ps.append(ProtoStep(p.id, p.agent, dur, list(p.after), res, p.rep, inside.get(loc or "")))
    sched = schedule(ps) if parallel else sequential(ps)
    by_id = {p.id: p for p in protos}
    steps = [
        Step(
            id=s.id,
            agent=by_id[s.id].agent,
            skill=by_id[s.id].skill,
            args=by_id[s.id].args,
            after=sched.after[s.id],
            expected_duration_s=s.duration_s,
            hazardous=by_id[s.id].hazardous,
            note=by_id[s.id].note[:200],
        )
        for s in sorted(ps, key=lambda q: (sched.start_s.get(q.id, 0.0), [x.id for x in ps].index(q.id)))
    ]
    plan = Plan(
        work_order=work_order,
        mode=mode,
        steps=steps,
        recipe=recipe,
        notes=[*notes, f"scheduled by {sched.solver}: expected makespan {sched.makespan_s:.1f} s"],
    )
    return mark_hazards(plan, plant)


def plan_from_draft(plant: PlantDescription, draft: DraftPlan, work_order: str) -> Plan:
    """A model's step graph as a :class:`Plan`: durations and hazard flags come from the plant."""
    steps = [
        Step(
            id=d.id,
            agent=d.agent,
            skill=d.skill,
            args=d.args,
            after=d.after,
            expected_duration_s=(
                nominal_duration_s(plant, d.agent, d.skill) if d.skill in SKILLS and d.agent in plant.agents() else 5.0
            ),
        )
        for d in draft.steps
    ]
    return mark_hazards(Plan(work_order=work_order, mode="direct", steps=steps), plant)


def makespan_s(plan: Plan) -> float:
    """Expected makespan (s) when every step starts as soon as its dependencies are done."""
    end: dict[str, float] = {}
    pending = list(plan.steps)
    while pending:
        progressed = False
        for s in list(pending):
            if all(d in end for d in s.after):
                end[s.id] = max((end[d] for d in s.after), default=0.0) + s.expected_duration_s
                pending.remove(s)
                progressed = True
        if not progressed:
            return float("inf")
    return max(end.values(), default=0.0)


# --------------------------------------------------------------------------- the planner


def _goal_schema(plant: PlantDescription) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"goal": {"type": "string", "enum": list(goal_options(plant))}},
        "required": ["goal"],
        "additionalProperties": False,
    }


class Planner:
    """Turns work orders into checked plans with one model backend (see the module docstring).

    ``plan`` never raises for what a model does (garbage, silence, nonsense, unsafe plans): it
    returns a :class:`PlanningOutcome` whose status says how planning ended.
    """

    def __init__(self, plant: PlantDescription, backend: LLMBackend, config: CoordinatorConfig | None = None) -> None:
        self.plant = plant
        self.backend = backend
        self.config = config or CoordinatorConfig()
        self._goal_schema = _goal_schema(plant)
        self._plan_schema = plan_schema(plant)

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
        mode: Literal["intent", "direct"] | None = None,
    ) -> PlanningOutcome:
        """Plan a work order; see :class:`PlanningOutcome` for how it can end."""
        mode = mode or self.config.mode
        snapshot = snapshot or PlantSnapshot()
        out = PlanningOutcome(status="failed", work_order=work_order, mode=mode)
        t0 = time.monotonic()
        missing = find_missing(work_order, self.plant)
        if missing:
            out.status = "refused"
            out.refusal = Refusal(
                tuple(missing), f"plant {self.plant.name} cannot do this order: " + "; ".join(missing)
            )
            out.reasons = [out.refusal.reason]
            out.planner_s = time.monotonic() - t0
            return out
        reasons: list[str] = list(feedback)
        for _ in range(self.config.max_attempts):
            if mode == "intent":
                plan = await self._intent_attempt(out, work_order, snapshot, reasons)
            else:
                plan = await self._direct_attempt(out, work_order, snapshot, events, reasons)
            if out.status == "refused":
                break
            if plan is None:
                continue
            g0 = time.monotonic()
            verdict = check(plan, self.plant, snapshot)
            out.guardrails_s += time.monotonic() - g0
            out.verdict = verdict
            if verdict.ok:
                out.status, out.plan, out.reasons = "planned", plan, []
                break
            out.attempts[-1].error = "rejected by the guardrails"
            reasons = verdict.reasons()[:8]
            out.reasons = reasons
            out.status = "rejected"
        else:
            if out.status != "rejected":
                out.status = "failed"
                out.reasons = [a.error or "" for a in out.attempts if a.error] or ["the model gave no usable answer"]
        out.planner_s = time.monotonic() - t0 - out.model_s
        return out

    async def _intent_attempt(
        self, out: PlanningOutcome, order: str, snapshot: PlantSnapshot, reasons: list[str]
    ) -> Plan | None:
        ctx = build_goal_context(self.plant, order, snapshot=snapshot, feedback=reasons)
        text = await self._ask(out, "goal", ctx.system, ctx.user, self._goal_schema, 40)
        if text is None:
            return None
        try:
            data = json.loads(text)
            goal = data["goal"]
            if goal not in goal_options(self.plant):
                raise ValueError(f"{goal!r} is not an option")
        except (ValueError, KeyError, TypeError) as exc:
            out.attempts[-1].error = f"not an answer: {exc}"
            reasons[:] = [f'answer {{"goal": <one of the options>}}; yours was not usable ({exc})']
            return None
        intent: RecipeIntent | TasksIntent | CannotIntent
        if goal == "cannot":
            # Nothing the order names is missing (checked before any call), so a small model's
            # "cannot" is more often wrong than right: ask again, and refuse only if it insists.
            out.intent = CannotIntent(goal="cannot", missing="the model found no recipe or skill for it")
            out.attempts[-1].error = "the model answered cannot"
            if sum(a.error == "the model answered cannot" for a in out.attempts) >= self.config.max_attempts:
                out.status = "refused"
                out.refusal = Refusal(
                    (), f"no recipe or skill of plant {self.plant.name} does this order (the model found none)"
                )
                out.reasons = [out.refusal.reason]
            else:
                reasons[:] = ["the cell has every machine, robot and skill the order names: choose a recipe or tasks"]
            return None
        try:
            if goal == "tasks":
                task = await self._ask_task(out, order, reasons)
                if task is None:
                    return None
                intent = TasksIntent(goal="tasks", tasks=[task])
                protos, notes = expand_tasks(self.plant, intent, order, snapshot)
                recipe = None
            else:
                recipe_obj = self.plant.recipes[goal]
                count = explicit_count(order) or 1
                params: dict[str, int | float | str] = dict(explicit_params(order, recipe_obj))
                intent = RecipeIntent(goal="recipe", recipe=goal, count=min(count, MAX_COUNT), params=params)
                if count > MAX_COUNT:
                    raise Unplannable([], f"{count} parts is more than one work order may ask for ({MAX_COUNT})")
                protos, notes = expand_recipe(self.plant, intent)
                recipe = goal
        except Unplannable as exc:
            out.status = "refused"
            out.refusal = Refusal(exc.missing, str(exc))
            out.reasons = [str(exc)]
            return None
        out.intent = intent
        protos = _resets(self.plant, protos, snapshot, notes)
        return finish_plan(self.plant, protos, work_order=order, mode="intent", recipe=recipe, notes=notes)

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
        schema = {
            "type": "object",
            "properties": {stage: {"type": "string", "enum": list(options)}},
            "required": [stage],
            "additionalProperties": False,
        }
        text = await self._ask(out, stage, system, user, schema, 40)
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

    async def _ask_task(self, out: PlanningOutcome, order: str, reasons: list[str]) -> TaskIntent | None:
        """Single-task intent, one slot at a time: the skill (model), the agent and each argument
        (the order's own words when they name exactly one candidate, else the model)."""
        plant = self.plant
        skills = sorted({s for a in plant.agents() for s in plant.agent_skills(a)})
        skill = await self._choose(
            out, "skill", "Which skill does the work order ask for?", order, {k: SKILLS[k].description for k in skills}
        )
        if skill is None:
            return None
        capable = [a for a in plant.agents() if skill in plant.agent_skills(a)]
        named = [a for a in mentioned_agents(order, plant) if a in capable]
        if len(named) == 1 or len(capable) == 1:
            agent: str | None = (named or capable)[0]
        else:
            agent = await self._choose(
                out, "agent", f"Which agent should {skill}?", order, {a: plant.agents()[a] for a in (named or capable)}
            )
            if agent is None:
                return None
        args: dict[str, ArgValue] = {}
        for name, spec in SKILLS[skill].args.items():
            if spec.type in ("int", "float"):
                m = re.search(
                    rf"\b{re.escape(name.replace('_', ' '))}\s*(?:#|no\.?|number)?\s*(-?\d+(?:\.\d+)?)", _norm(order)
                )
                if m:
                    args[name] = int(float(m.group(1))) if spec.type == "int" else float(m.group(1))
                elif spec.required:
                    return None
                continue
            if spec.type == "joints":
                return None  # joint targets are not read from words; direct mode or a person
            candidates = _candidates(plant, spec.type, agent)
            hits = _mentioned(order, candidates)
            if len(hits) == 1 or len(candidates) == 1:
                args[name] = (hits or candidates)[0]
            elif spec.required:
                value = await self._choose(
                    out,
                    name,
                    f"Which {spec.type.replace('_', ' ')} does the work order mean for {name}?",
                    order,
                    dict.fromkeys(hits or candidates, ""),
                )
                if value is None:
                    return None
                args[name] = value
        return TaskIntent(skill=skill, agent=agent, args=args)

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
            mode="direct",
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


def recovery_plan(
    plant: PlantDescription, plan: Plan, done: set[str], failed: str, reason: str, snapshot: PlantSnapshot
) -> Plan:
    """A draft that resumes ``plan`` after step ``failed`` failed: reset a machine that failed
    (or home a robot that did), then the failed step and every step not yet done. It goes
    through the guardrails, rehearsal and approval like any plan."""
    notes = [f"recovery after step {failed} failed: {reason[:150]}"]
    bad = plan.step(failed)
    protos: list[_Proto] = []
    if bad.agent in plant.machines:
        protos.append(_Proto(f"recover_reset_{bad.agent}", bad.agent, "reset", {}, [], note="recovery: reset"))
    elif bad.agent in plant.robots:
        protos.append(_Proto(f"recover_home_{bad.agent}", bad.agent, "home", {}, [], note="recovery: home"))
    for s in plan.steps:
        if s.id in done:
            continue
        after = [d for d in s.after if d not in done]
        if s.id == failed and protos:
            after.append(protos[0].id)
        protos.append(
            _Proto(s.id, s.agent, s.skill, dict(s.args), after, s.hazardous, s.note, 0, s.expected_duration_s)
        )
    protos = _resets(plant, protos, snapshot, notes)
    return finish_plan(
        plant, protos, work_order=plan.work_order, mode="recovery", recipe=plan.recipe, notes=notes, parallel=False
    )

"""From a reading (:mod:`llm_coordinator.reading`) to a scheduled plan, without the model.

Deterministic and checked against the plant at every turn: recipes are expanded with their
parameters substituted and repeated per part; tasks get an agent that has the skill and can
reach where it goes; quantities are read with their units and checked against the declared
ranges (the plan's notes show each conversion); conditions become the plan's decisions, read
when the plan runs, with the steps of each branch marked with the outcome they need;
repetitions are unrolled up to their bound, each iteration running only while the condition
is not yet met. The machine preconditions a person would add come from the interlock rules of
:mod:`llm_coordinator.guardrails` (close a door before a cycle, open it before a robot reaches
in, take a robot out before a machine moves), and a machine that the plant state shows stopped,
aborted or faulted gets a reset before its first use. CP-SAT then schedules the whole
(:mod:`llm_coordinator.scheduler`).

What does not fit raises :class:`Unplannable` (with what is missing, for a refusal) or
:class:`Unclear` (with a question back to the person).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llm_coordinator._geometry import machine_locations, reach_distance_m, step_location
from llm_coordinator.guardrails import NEEDS_RESET, interlock_preconditions, mark_hazards, step_resources
from llm_coordinator.plan import (
    MAX_COUNT,
    MAX_STEPS,
    ArgValue,
    Condition,
    Decision,
    DraftPlan,
    Plan,
    RecipeIntent,
    Step,
)
from llm_coordinator.reading import EVERY, IfGoal, Reading, RecipeGoal, RepeatGoal, TaskGoal, Test
from llm_coordinator.scheduler import ProtoStep, schedule, sequential
from llm_coordinator.snapshot import PlantSnapshot
from plant.config import NAME_RE, PlantDescription, Recipe
from plant.skills import ArgSpec


class Unplannable(Exception):
    """The order asks for something the plant does not have or cannot do."""

    def __init__(self, missing: Sequence[str], reason: str) -> None:
        self.missing = tuple(missing)
        super().__init__(reason)


#: The kinds of names an order must choose itself when it leaves them open: what is worked on and
#: where it goes. (Which agent or machine does it is the plant's to settle, as a recipe does.)
OPEN_KINDS = frozenset({"location", "bin", "part_type", "part"})


class Unclear(Exception):
    """The order can be read several ways; ``question`` asks the person which. ``options``: the
    plant's names it could be (places, part types: what the order works on and where), when
    the question is a choice among them."""

    def __init__(self, question: str, options: Sequence[str] = ()) -> None:
        self.question = question
        self.options = tuple(options)
        super().__init__(question)


# --------------------------------------------------------------------------- the plant's vocabulary


def nominal_duration_s(plant: PlantDescription, agent: str, skill: str) -> float:
    """Expected duration of a step: the plant's figure for a machine command, else the skill's."""
    try:
        return plant.skill_spec(agent, skill).nominal_duration_s
    except KeyError:
        return 5.0


def _quantities() -> Any:
    from llm_coordinator import quantities

    return quantities


def read_count(raw: int | str, what: str) -> int:
    """A count as an order gives it ("3", "three", "a dozen") as a number in 1..MAX_COUNT."""
    if isinstance(raw, bool):
        raise Unplannable([], f"{what}: {raw!r} is not a count")
    if isinstance(raw, int):
        n = raw
    else:
        q = _quantities()
        try:
            found = q.parse_quantity(str(raw))
        except q.QuantityError as exc:
            raise Unplannable([], f"{what}: {exc}") from None
        if found.unit:
            raise Unplannable([], f"{what}: {raw!r} is a quantity in {found.unit}, not a count")
        if found.value != int(found.value):
            raise Unplannable([], f"{what}: {raw!r} is not a whole number")
        n = int(found.value)
    if n < 1:
        raise Unplannable([], f"{what}: {n} is not a count of at least 1")
    if n > MAX_COUNT:
        raise Unplannable([], f"{what}: {n} is more than one work order may ask for ({MAX_COUNT})")
    return n


def _closest(value: str, names: Sequence[str]) -> str | None:
    """The plant name a written name means: exact, with spaces for underscores, or one close
    spelling (a typo); None when none or several fit."""
    norm = value.strip().lower().replace(" ", "_").replace("-", "_")
    if norm in names:
        return norm
    from rapidfuzz import fuzz, process

    hits = process.extract(norm, list(names), scorer=fuzz.ratio, limit=2)
    if hits and hits[0][1] >= 85 and (len(hits) == 1 or hits[1][1] < hits[0][1] - 5):
        return str(hits[0][0])
    return None


def read_number(value: object, spec: ArgSpec | Any, name: str, notes: list[str]) -> int | float:
    """A numeric argument in the declared unit, range-checked; the conversion goes to ``notes``."""
    unit = getattr(spec, "unit", "") or ""
    lo, hi = spec.min, spec.max
    q = _quantities()
    try:
        if isinstance(value, bool):
            raise q.QuantityError(f"{value!r} is not a number")
        if isinstance(value, int | float):
            quantity = q.parse_quantity(repr(value) if isinstance(value, float) else str(value))
        else:
            quantity = q.parse_quantity(str(value))
        if quantity.unit and not unit:
            raise q.QuantityError(
                f"{name}: {quantity.text!r} has a unit, but {name} is a plain number (no unit declared)"
            )
        number = q.check_range(quantity, unit=unit, min=lo, max=hi, name=name)
        if quantity.unit and unit:
            notes.append(f"{name}: {q.describe_conversion(quantity, unit)}")
    except q.QuantityError as exc:
        raise Unplannable([], str(exc)) from None
    if spec.type == "int":
        if number != int(number):
            raise Unplannable([], f"{name}: {value!r} is not a whole number")
        return int(number)
    return float(number)


def read_arg(
    plant: PlantDescription, agent: str, skill: str, name: str, spec: ArgSpec | Any, value: object, notes: list[str]
) -> ArgValue:
    """One argument as the order gives it, as the plan holds it: a name of the plant, a number in
    the declared unit and range, a choice, or a joint vector. Raises :class:`Unplannable`."""
    names = plant.names_of(spec.type)
    if names is not None:
        if spec.type == "robot":
            names = [n for n in names if n != agent]
        hit = _closest(str(value), names) if isinstance(value, str) else None
        if hit is None:
            have = ", ".join(names) or "none"
            raise Unplannable(
                [f"{spec.type} {value}"], f"{agent} {skill}: {name}={value!r} is no {spec.type} of the plant ({have})"
            )
        if hit != value:
            notes.append(f"{name}: {value!r} read as {hit}")
        return hit
    if spec.type in ("int", "float"):
        return read_number(value, spec, name, notes)
    if spec.type == "joints":
        if not isinstance(value, list) or not all(isinstance(x, int | float) for x in value):
            raise Unplannable([], f"{agent} {skill}: {name} must be a list of joint angles in rad")
        return [float(x) for x in value]
    choices = getattr(spec, "choices", None)
    text = str(value)
    if choices and text not in choices:
        raise Unplannable([], f"{agent} {skill}: {name}={text!r} is not one of {', '.join(choices)}")
    return text[:80]


def recipe_params(
    plant: PlantDescription, name: str, recipe: Recipe, given: Mapping[str, Any], notes: list[str]
) -> dict[str, Any]:
    """A recipe's parameters: the order's values read and checked, the rest their defaults."""
    unknown = [p for p in given if p not in recipe.params]
    if unknown:
        raise Unplannable([f"parameter {p}" for p in unknown], f"recipe {name} has no parameter {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for pname, spec in recipe.params.items():
        v = given.get(pname, spec.default)
        if v is None:
            raise Unclear(
                f"recipe {name} needs {pname} ({spec.description or spec.type}): which value?",
                (plant.names_of(spec.type) or []) if spec.type in OPEN_KINDS else (),
            )
        names = plant.names_of(spec.type)
        if names is not None:
            hit = _closest(str(v), names)
            if hit is None:
                raise Unplannable([f"{spec.type} {v}"], f"{pname}={v!r}: the plant has no {spec.type} named {v!r}")
            v = hit
        elif spec.type in ("int", "float"):
            v = read_number(v, spec, pname, notes)
        if spec.choices is not None and v not in spec.choices:
            raise Unplannable([], f"{pname}={v!r} is not one of {', '.join(spec.choices)}")
        out[pname] = v
    return out


# --------------------------------------------------------------------------- proto-steps


@dataclass
class Proto:
    """A step before scheduling."""

    id: str
    agent: str
    skill: str
    args: dict[str, ArgValue]
    after: list[str]
    hazardous: bool = False
    note: str = ""
    rep: int = 0
    duration_s: float | None = None
    when: dict[str, bool] = field(default_factory=dict)


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\{([a-z][a-z0-9_]*)\}", value)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return re.sub(r"\{([a-z][a-z0-9_]*)\}", lambda m: str(params.get(m.group(1), m.group(0))), value)
    return value


def expand_recipe(plant: PlantDescription, intent: RecipeIntent) -> tuple[list[Proto], list[str]]:
    """The steps of ``count`` runs of a recipe, parameters substituted; raise :class:`Unplannable`."""
    recipe = plant.recipes.get(intent.recipe)
    if recipe is None:
        raise Unplannable([f"recipe {intent.recipe}"], f"plant {plant.name} has no recipe {intent.recipe!r}")
    notes: list[str] = []
    params = recipe_params(plant, intent.recipe, recipe, intent.params, notes)
    protos: list[Proto] = []
    for k in range(intent.count):
        sfx = f"_{k + 1}" if intent.count > 1 else ""
        for rs in recipe.steps:
            agent = str(_substitute(rs.agent, params))
            if agent not in plant.agents():
                raise Unplannable([f"agent {agent}"], f"recipe step {rs.id} names {agent!r}, which is not an agent")
            protos.append(
                Proto(
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
    notes.insert(0, f"recipe {intent.recipe} x{intent.count} with " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return protos, notes


def capable_agents(plant: PlantDescription, skill: str, args: Mapping[str, ArgValue]) -> list[str]:
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


# --------------------------------------------------------------------------- a reading, expanded


class _Builder:
    """Expands goals one after another, keeping what the plan has done so far to the machines'
    doors and where each robot is, so that the interlock preconditions are added where needed."""

    def __init__(self, plant: PlantDescription, snapshot: PlantSnapshot) -> None:
        self.plant = plant
        self.protos: list[Proto] = []
        self.decisions: list[Decision] = []
        self.notes: list[str] = []
        self.inside = machine_locations(plant)
        self.door: dict[str, bool | None] = {
            m: (snapshot.machines[m].door_closed if m in snapshot.machines else None) for m in plant.machines
        }
        self.robot_in: dict[str, str | None] = {
            r: self.inside.get(snapshot.robots[r].at or "") if r in snapshot.robots else None for r in plant.robots
        }
        self._ids: set[str] = set()

    def _id(self, base: str) -> str:
        base = re.sub(r"[^a-z0-9_]", "_", base.lower())[:44].strip("_") or "step"
        if not base[0].isalpha():
            base = "s_" + base[:42]
        sid, n = base, 1
        while sid in self._ids:
            n += 1
            sid = f"{base[:44]}_{n}"
        self._ids.add(sid)
        assert NAME_RE.match(sid), sid
        return sid

    def _add(self, p: Proto) -> Proto:
        if len(self.protos) >= MAX_STEPS:
            raise Unplannable([], f"the plan would have more than {MAX_STEPS} steps; split the work order")
        self.protos.append(p)
        return p

    def _track(self, p: Proto) -> None:
        """What a step does to the doors and to where robots are."""
        if p.skill in ("open_door", "close_door"):
            self.door[p.agent] = p.skill == "close_door"
        if p.agent in self.plant.robots:
            loc = step_location(self.plant, p.skill, p.args)
            self.robot_in[p.agent] = self.inside.get(loc or "") if loc is not None else None

    # -- goals

    def recipe(self, g: RecipeGoal, prefix: str, deps: list[str], when: dict[str, bool]) -> list[str]:
        count = read_count(g.count, f"recipe {g.recipe}: count")
        if g.recipe not in self.plant.recipes:
            raise Unplannable([f"recipe {g.recipe}"], f"plant {self.plant.name} has no recipe {g.recipe!r}")
        protos, notes = expand_recipe(
            self.plant, RecipeIntent(goal="recipe", recipe=g.recipe, count=count, params=dict(g.params))
        )
        self.notes.extend(notes)
        rename = {p.id: self._id(prefix + p.id) for p in protos}
        for p in protos:
            p.id = rename[p.id]
            p.after = [rename[d] for d in p.after] + (deps if not p.after else [])
            p.when = dict(when)
            self._add(p)
            self._track(p)
        return [rename[x] for x in rename]

    def task(self, g: TaskGoal, prefix: str, deps: list[str], when: dict[str, bool], rep: int) -> list[str]:
        plant = self.plant
        count = read_count(g.count, f"task {g.skill}: count")
        have = [a for a in plant.agents() if g.skill in plant.agent_skills(a)]
        if not have:
            raise Unplannable([f"skill {g.skill}"], f"no agent of plant {plant.name} can {g.skill.replace('_', ' ')}")
        if g.agent == EVERY:
            agents = have
        elif g.agent is not None:
            hit = _closest(g.agent, list(plant.agents()))
            if hit is None:
                raise Unplannable([f"agent {g.agent}"], f"plant {plant.name} has no agent named {g.agent!r}")
            if hit not in have:
                raise Unplannable(
                    [f"{hit} {g.skill}"],
                    f"{hit} cannot {g.skill.replace('_', ' ')}; agents that can: {', '.join(have)}",
                )
            agents = [hit]
        else:
            agents = []
        ids: list[str] = []
        chosen_agents: list[str | None] = list(agents) or [None]
        robots_before: list[str] = []
        for agent in chosen_agents:
            args = self._args(g, agent, have)
            chosen = agent
            if chosen is None:
                capable = capable_agents(plant, g.skill, args)
                if not capable:
                    where = step_location(plant, g.skill, args)
                    raise Unplannable(
                        [f"an agent that can {g.skill} at {where}"],
                        f"no agent of plant {plant.name} can {g.skill.replace('_', ' ')}"
                        + (f" at {where} (out of reach)" if where else ""),
                    )
                if len(capable) > 1 and step_location(plant, g.skill, args) is None:
                    # Nothing but the order could tell these apart (no place decides by reach).
                    # (No options: see OPEN_KINDS.)
                    raise Unclear(f"which of {', '.join(capable)} should {g.skill.replace('_', ' ')}?")
                chosen = capable[0]
            elif chosen in plant.robots:
                loc = step_location(plant, g.skill, args)
                if loc in plant.locations():
                    d, reach = reach_distance_m(plant, chosen, loc)
                    if d > reach:
                        raise Unplannable(
                            [f"{chosen} reaching {loc}"],
                            f"{chosen} cannot reach {loc}: it is {d:.2f} m from its base, its reach is {reach:.2f} m",
                        )
            # Robots given one task each ("home every robot") move one after another: the plan has no
            # check of two arms' paths against each other, so none may sweep while another does.
            prev = list(deps) + (robots_before[-1:] if chosen in plant.robots else [])
            for k in range(count):
                sid = self._id(f"{prefix}{g.skill}_{chosen}" + (f"_{k + 1}" if count > 1 else ""))
                p = Proto(
                    sid,
                    chosen,
                    g.skill,
                    dict(args),
                    [],
                    note=f"task {g.skill}" + (f", {k + 1} of {count}" if count > 1 else ""),
                    rep=rep,
                    when=dict(when),
                )
                pre = self._preconditions(p, prev, when)
                p.after = prev + pre
                self._add(p)
                self._track(p)
                ids.extend([*pre, sid])
                prev = [sid]
            if chosen in plant.robots:
                robots_before.append(prev[0])
        return ids

    def _args(self, g: TaskGoal, agent: str | None, have: list[str]) -> dict[str, ArgValue]:
        plant = self.plant
        spec = plant.skill_spec(agent or have[0], g.skill)
        unknown = [a for a in g.args if a not in spec.args]
        if unknown:
            raise Unplannable(
                [], f"{g.skill} takes no argument {', '.join(unknown)} (it takes: {', '.join(spec.args) or 'none'})"
            )
        out: dict[str, ArgValue] = {}
        for name, a in spec.args.items():
            if name in g.args:
                out[name] = read_arg(plant, agent or have[0], g.skill, name, a, g.args[name], self.notes)
                continue
            if not a.required:
                continue
            names = plant.names_of(a.type)
            if names is not None and agent is not None and a.type == "robot":
                names = [n for n in names if n != agent]
            if names is not None and len(names) == 1:
                out[name] = names[0]
                continue
            choices = ", ".join(names or [])
            raise Unclear(
                f"{g.skill.replace('_', ' ')}: which {a.type.replace('_', ' ')}"
                + (f" for {name}?" if name != a.type else "?")
                + (f" ({choices})" if choices else ""),
                (names or ()) if a.type in OPEN_KINDS else (),
            )
        return out

    def _preconditions(self, p: Proto, deps: list[str], when: dict[str, bool]) -> list[str]:
        """The interlock preconditions of one task step (see :func:`interlock_preconditions`)."""
        ids: list[str] = []
        for agent, skill, why in interlock_preconditions(
            self.plant, p.agent, p.skill, p.args, self.door, self.robot_in
        ):
            sid = self._id(f"{skill}_{agent}")
            q = Proto(sid, agent, skill, {}, [*deps, *ids], note=f"added: {why}", rep=p.rep, when=dict(when))
            self._add(q)
            self._track(q)
            self.notes.append(f"added {skill} on {agent}: {why}")
            ids.append(sid)
        return ids

    def simple(
        self, g: RecipeGoal | TaskGoal, prefix: str, deps: list[str], when: dict[str, bool], rep: int
    ) -> list[str]:
        if isinstance(g, RecipeGoal):
            return self.recipe(g, prefix, deps, when)
        return self.task(g, prefix, deps, when, rep)

    def sequence(
        self, goals: Sequence[RecipeGoal | TaskGoal], prefix: str, deps: list[str], when: dict[str, bool], rep: int
    ) -> list[str]:
        ids: list[str] = []
        prev = list(deps)
        for i, g in enumerate(goals):
            sub = f"{prefix}{i + 1}_" if len(goals) > 1 else prefix
            new = self.simple(g, sub, prev, when, rep)
            ids.extend(new)
            prev = _sinks(self.protos, new) or prev
        return ids

    def condition(self, t: Test, what: str) -> Condition:
        plant = self.plant
        machine = _closest(t.machine, list(plant.machines))
        if machine is None:
            raise Unplannable([f"machine {t.machine}"], f"{what}: plant {plant.name} has no machine {t.machine!r}")
        m = plant.machines[machine]
        tag = _closest(t.tag, list(m.tags))
        if tag is None:
            raise Unplannable([f"tag {t.tag}"], f"{what}: {machine} has no tag {t.tag!r} (it has {', '.join(m.tags)})")
        spec = m.tags[tag]
        if spec.access == "write":
            raise Unplannable([], f"{what}: {machine}.{tag} cannot be read")
        named: dict[str, int] = dict(getattr(spec, "values", None) or {})
        value: Any = t.value
        label = ""
        if isinstance(value, str) and value.strip().lower() in named:
            label = value.strip().lower()
            value = named[label]
        elif isinstance(value, str) and spec.data_type == "string":
            pass
        elif isinstance(value, str) and spec.data_type == "bool":
            raise Unplannable([], f"{what}: {machine}.{tag} is true or false, not {value!r}")
        elif not isinstance(value, bool):
            limit = _TagRange(spec.unit, spec.min, spec.max)
            notes: list[str] = []
            try:
                value = read_number(value, limit, f"{machine}.{tag}", notes)
            except Unplannable as exc:
                known = f" (its named values: {', '.join(named)})" if named else ""
                raise Unplannable([], f"{what}: {exc}{known}") from None
            self.notes.extend(notes)
            if named and t.op in ("==", "!=") and value not in named.values():
                raise Unplannable(
                    [],
                    f"{what}: {machine}.{tag} never holds {value:g} (its values: "
                    + ", ".join(f"{k}={v}" for k, v in named.items())
                    + ")",
                )
        return Condition(machine=machine, tag=tag, op=t.op, value=value, label=label)

    def branch(self, g: IfGoal, prefix: str, deps: list[str], when: dict[str, bool], n: int) -> list[str]:
        cond = self.condition(g.test, "condition")
        did = self._id(f"{prefix}if")
        self._ids.discard(did)
        self.decisions.append(Decision(id=did, condition=cond, after=list(deps), requires={}, note=f"condition {n}"))
        door0, robots0 = dict(self.door), dict(self.robot_in)
        then = self.sequence(g.then, f"{prefix}then_", deps, {**when, did: True}, n)
        door1, robots1 = dict(self.door), dict(self.robot_in)
        self.door, self.robot_in = dict(door0), dict(robots0)
        other = self.sequence(g.otherwise, f"{prefix}else_", deps, {**when, did: False}, n)
        self.door = {m: v if v == door1.get(m) else None for m, v in self.door.items()}
        self.robot_in = {r: v if v == robots1.get(r) else None for r, v in self.robot_in.items()}
        self.notes.append(f"decided when the plan runs: {cond.describe()}")
        return then + other

    def repeat(self, g: RepeatGoal, prefix: str, deps: list[str], when: dict[str, bool], n: int) -> list[str]:
        cond = self.condition(g.until, "repeat until")
        ids: list[str] = []
        prev = list(deps)
        last: str | None = None
        for k in range(1, g.max_times + 1):
            did = self._id(f"{prefix}repeat_{k}")
            self._ids.discard(did)
            requires = {last: True} if last else {}
            self.decisions.append(
                Decision(
                    id=did,
                    kind="repetition",
                    condition=cond.negated(),
                    after=list(prev),
                    requires=requires,
                    note=f"repetition {k} of at most {g.max_times}",
                )
            )
            new = self.sequence(g.body, f"{prefix}r{k}_", prev, {**when, did: True}, n * 100 + k)
            ids.extend(new)
            prev = _sinks(self.protos, new) or prev
            last = did
        for m in self.door:
            self.door[m] = None if any(p.agent == m for p in self.protos if p.id in ids) else self.door[m]
        self.notes.append(f"repeated until {cond.describe()}, at most {g.max_times} times")
        return ids


@dataclass(frozen=True)
class _TagRange:
    unit: str
    min: float | None
    max: float | None
    type: Literal["float"] = "float"


def _sinks(protos: Sequence[Proto], ids: Sequence[str]) -> list[str]:
    """The steps among ``ids`` that no other step among them waits for."""
    inner = set(ids)
    waited = {d for p in protos if p.id in inner for d in p.after}
    return [i for i in ids if i not in waited]


def expand_reading(
    plant: PlantDescription,
    reading: Reading,
    *,
    work_order: str,
    snapshot: PlantSnapshot | None = None,
    mode: Literal["intent", "direct"] = "intent",
) -> Plan:
    """A reading's goals as one scheduled plan (see the module docstring). Raises
    :class:`Unplannable` or :class:`Unclear`; a reading that is not ``plan`` raises too."""
    if reading.outcome == "clarify":
        raise Unclear(reading.question or "the order can be read several ways")
    if reading.outcome == "cannot" or not reading.goals:
        raise Unplannable([], reading.reason or "the order asks for nothing the plant does")
    snapshot = snapshot or PlantSnapshot()
    b = _Builder(plant, snapshot)
    prev: list[str] = []
    every: list[str] = []
    for i, g in enumerate(reading.goals, start=1):
        prefix = f"g{i}_" if len(reading.goals) > 1 else ""
        barrier = every if isinstance(g, IfGoal | RepeatGoal) else prev
        deps = [] if reading.parallel and isinstance(g, RecipeGoal | TaskGoal) else _sinks(b.protos, barrier)
        if isinstance(g, IfGoal):
            new = b.branch(g, prefix, deps, {}, i)
        elif isinstance(g, RepeatGoal):
            new = b.repeat(g, prefix, deps, {}, i)
        else:
            new = b.simple(g, prefix, deps, {}, i if len(reading.goals) > 1 else 0)
        every.extend(new)
        prev = new
    for d in reading.declined:
        b.notes.append(f"declined: {d.what}: {d.why}")
    protos = add_resets(plant, b.protos, snapshot, b.notes)
    recipes = [g.recipe for g in reading.goals if isinstance(g, RecipeGoal)]
    return finish_plan(
        plant,
        protos,
        work_order=work_order,
        mode=mode,
        recipe=recipes[0] if len(recipes) == 1 and len(reading.goals) == 1 else None,
        notes=b.notes,
        decisions=b.decisions,
        goals=_with_counts(reading).summary(),
    )


def _with_counts(reading: Reading) -> Reading:
    """The reading with its counts as numbers ("two" -> 2), for the plan's goal lines."""

    def simple(g: RecipeGoal | TaskGoal) -> RecipeGoal | TaskGoal:
        return g.model_copy(update={"count": read_count(g.count, "count")})

    goals: list[RecipeGoal | TaskGoal | IfGoal | RepeatGoal] = []
    for g in reading.goals:
        if isinstance(g, IfGoal):
            goals.append(
                g.model_copy(
                    update={"then": [simple(x) for x in g.then], "otherwise": [simple(x) for x in g.otherwise]}
                )
            )
        elif isinstance(g, RepeatGoal):
            goals.append(g.model_copy(update={"body": [simple(x) for x in g.body]}))
        else:
            goals.append(simple(g))
    return reading.model_copy(update={"goals": goals})


# --------------------------------------------------------------------------- resets and scheduling


def add_resets(plant: PlantDescription, protos: list[Proto], snapshot: PlantSnapshot, notes: list[str]) -> list[Proto]:
    """A reset in front of the first use of a machine that is faulted, stopped or aborted."""
    out = list(protos)
    for name, ms in snapshot.machines.items():
        uses = [p for p in out if p.agent == name]
        if uses and (ms.state in NEEDS_RESET or ms.fault_code) and uses[0].skill != "reset":
            first = out.index(uses[0])
            out.insert(
                first,
                Proto(f"reset_{name}", name, "reset", {}, list(uses[0].after), note=f"added: {name} is {ms.state}"),
            )
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
        protos = add_resets(plant, protos, snapshot, notes)
    return finish_plan(plant, protos, work_order=work_order, mode="intent", recipe=intent.recipe, notes=notes)


def finish_plan(
    plant: PlantDescription,
    protos: list[Proto],
    *,
    work_order: str,
    mode: Literal["intent", "direct", "recovery"],
    recipe: str | None,
    notes: list[str],
    parallel: bool = True,
    decisions: Sequence[Decision] = (),
    goals: Sequence[str] = (),
) -> Plan:
    """Schedule proto-steps into a :class:`Plan` with durations and hazard flags from the plant."""
    inside = machine_locations(plant)
    ps: list[ProtoStep] = []
    for p in protos:
        res = step_resources(plant, p.agent, p.skill, p.args, inside) if p.agent in plant.agents() else set()
        loc = step_location(plant, p.skill, p.args) if p.agent in plant.robots else None
        dur = p.duration_s or nominal_duration_s(plant, p.agent, p.skill)
        ps.append(ProtoStep(p.id, p.agent, dur, list(p.after), res, p.rep, inside.get(loc or ""), dict(p.when)))
    sched = schedule(ps) if parallel else sequential(ps)
    by_id = {p.id: p for p in protos}
    order = {q.id: i for i, q in enumerate(ps)}
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
            when=by_id[s.id].when,
        )
        for s in sorted(ps, key=lambda q: (sched.start_s.get(q.id, 0.0), order[q.id]))
    ]
    plan = Plan(
        work_order=work_order,
        mode=mode,
        steps=steps,
        recipe=recipe,
        notes=[*notes, f"scheduled by {sched.solver}: expected makespan {sched.makespan_s:.1f} s"],
        decisions=list(decisions),
        goals=list(goals),
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
            expected_duration_s=nominal_duration_s(plant, d.agent, d.skill) if d.agent in plant.agents() else 5.0,
        )
        for d in draft.steps
    ]
    return mark_hazards(Plan(work_order=work_order, mode="direct", steps=steps), plant)


def makespan_s(plan: Plan) -> float:
    """Expected makespan (s) when every step starts as soon as its dependencies are done."""
    starts = plan.planned_starts()
    if len(starts) < len(plan.steps):
        return float("inf")
    return max((starts[s.id] + s.expected_duration_s for s in plan.steps), default=0.0)

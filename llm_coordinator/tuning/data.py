"""Training data for a plant-tuned model, made from the plant description itself.

Every recipe, machine command, robot skill, agent, location, part type and named tag value of
the plant is phrased in many ways (the names people use: an identifier with spaces, a robot's
model or maker, a machine's kind, a word of a name that is its alone; numbers in digits and in
words; quantities in the declared unit and in another one; typos), and each order is paired
with its reading in the plan language, written exactly as the grammar-constrained model writes
it (:func:`answer_text`). Shapes: recipes with counts and parameters, single tasks, compound
orders (in sequence and in parallel), conditions on a named tag value, bounded repetitions,
orders the plant cannot do (``cannot``, with the reason), orders that touch a safety measure
(``cannot``), and orders that name no agent where several could act or that say nothing a plant
does (``clarify``).

Nothing here names an item of a shipped plant: the phrases come from the plant file, and the
templates are general English. Every generated ``plan`` is expanded against the plant before
it is kept (:func:`checked`), so a label the product would refuse never reaches training.

Examples carry their provenance: ``generated:<shape>`` here, ``audit:<row>`` for what the
store's supervisors decided (:mod:`llm_coordinator.tuning.feedback`).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_coordinator.expansion import Unclear, Unplannable, expand_reading
from llm_coordinator.order import read_order, static_refusals, vocabulary
from llm_coordinator.plan import MAX_COUNT
from llm_coordinator.reading import EVERY, IfGoal, Reading, RecipeGoal, RepeatGoal, TaskGoal, Test, reading_schema
from plant.config import PlantDescription

#: Shapes of generated orders, in the order the model card lists them.
SHAPES = ("recipe", "task", "compound", "parallel", "conditional", "repeat", "cannot", "unsafe", "clarify")

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]

#: Other units people use for a declared unit (pint symbols), with how they may be written.
_OTHER_UNITS: dict[str, tuple[str, ...]] = {
    "l": ("ml",),
    "ml": ("l",),
    "s": ("min", "ms"),
    "min": ("s",),
    "m": ("mm", "cm"),
    "mm": ("m", "cm"),
    "kg": ("g",),
    "g": ("kg",),
    "m/s": ("mm/s",),
    "mm/s": ("m/s",),
}
_UNIT_WORDS: dict[str, tuple[str, ...]] = {
    "l": ("l", "litres", "liters", "L"),
    "ml": ("ml", "millilitres", "mL"),
    "degC": ("degC", "°C"),
    "s": ("s", "seconds", "sec"),
    "min": ("min", "minutes"),
    "ms": ("ms",),
    "mm": ("mm",),
    "cm": ("cm",),
    "m": ("m", "metres"),
    "kg": ("kg",),
    "g": ("g", "grams"),
    "m/s": ("m/s",),
    "mm/s": ("mm/s",),
}

#: Manufacturing actions a plant may lack (checked against the plant: one it has is never used).
_OTHER_ACTIONS = (
    "weld",
    "paint",
    "drill",
    "polish",
    "glue",
    "solder",
    "engrave",
    "sand",
    "bend",
    "laser-cut",
    "emboss",
    "laminate",
    "knurl",
    "deburr",
    "rivet",
    "spray-coat",
    "galvanise",
    "thread",
    "crimp",
)

#: Orders that ask for nothing in particular: the person is asked back.
_VAGUE = (
    "do the usual",
    "same as last time",
    "run it",
    "sort this out",
    "handle it please",
    "you know what to do",
    "get going",
    "do the thing from this morning",
    "carry on",
    "make it work",
)

_THEN = (", then ", " and then ", "; then ", ". After that, ", ", and afterwards ", ". Next, ")
_PARALLEL = ("at the same time", "in parallel", "simultaneously", "while doing so")


@dataclass(frozen=True)
class Example:
    """One training example: the order, the answer the model should write, what shape it is,
    and where it came from."""

    order: str
    answer: str
    shape: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"order": self.order, "answer": self.answer, "shape": self.shape, "source": self.source}


# --------------------------------------------------------------------------- the answer as the model writes it


def _value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _goal_json(g: RecipeGoal | TaskGoal | IfGoal | RepeatGoal) -> dict[str, Any]:
    """A goal with its keys in the grammar's order (required ones first, as the schema lists them)."""
    match g:
        case RecipeGoal():
            out: dict[str, Any] = {"kind": "recipe", "recipe": g.recipe, "count": g.count}
            if g.params:
                out["params"] = {k: _value(v) for k, v in g.params.items()}
            return out
        case TaskGoal():
            out = {
                "kind": "task",
                "skill": g.skill,
                "agent": g.agent,
                "args": {k: _value(g.args[k]) for k in sorted(g.args)},  # the schema lists them sorted
            }
            if g.count != 1:
                out["count"] = g.count
            return out
        case IfGoal():
            return {
                "kind": "if",
                "test": g.test.model_dump(),
                "then": [_goal_json(x) for x in g.then],
                "otherwise": [_goal_json(x) for x in g.otherwise],
            }
        case RepeatGoal():
            return {
                "kind": "repeat",
                "until": g.until.model_dump(),
                "max_times": g.max_times,
                "body": [_goal_json(x) for x in g.body],
            }
    raise TypeError(f"not a goal: {g!r}")  # pragma: no cover - the union is closed


def answer_text(reading: Reading) -> str:
    """The reading as the grammar-constrained model writes it: the schema's key order, only the
    keys that say something."""
    data: dict[str, Any]
    if reading.outcome == "clarify":
        data = {"outcome": "clarify", "question": reading.question}
    elif reading.outcome == "cannot":
        data = {"outcome": "cannot", "reason": reading.reason}
    else:
        data = {"outcome": "plan", "goals": [_goal_json(g) for g in reading.goals]}
        if reading.parallel:
            data["parallel"] = True
        if reading.declined:
            data["declined"] = [{"what": d.what, "why": d.why} for d in reading.declined]
    return json.dumps(data, ensure_ascii=False)


# --------------------------------------------------------------------------- how people name things


class _Names:
    """The ways an order may name each thing of the plant (from the order module's vocabulary)."""

    def __init__(self, plant: PlantDescription) -> None:
        self.by_name: dict[str, list[str]] = {}
        for phrase, _kind, name in vocabulary(plant):
            if "=" in name:
                continue  # a named tag value, phrased where conditions are made
            self.by_name.setdefault(name, []).append(phrase)

    def say(self, rng: random.Random, name: str, *, article: bool = True) -> str:
        phrases = self.by_name.get(name) or [name.replace("_", " ")]
        phrase = rng.choice(phrases)
        if rng.random() < 0.15:
            phrase = name  # people paste identifiers too
        if article and rng.random() < 0.7 and not phrase[:1].isupper():
            return "the " + phrase
        return phrase


def _count_words(rng: random.Random, n: int) -> tuple[str, int | str]:
    """How an order says ``n`` (text) and how the answer writes it (digits as an integer, words
    copied as written: the expansion reads them)."""
    if n == 1:
        return rng.choice(["one", "a", "1"]), 1
    if n == 12 and rng.random() < 0.3:
        return "a dozen", "a dozen"
    if n < len(_NUMBER_WORDS) and rng.random() < 0.5:
        return _NUMBER_WORDS[n], _NUMBER_WORDS[n]
    return str(n), n


def _number(rng: random.Random, lo: float | None, hi: float | None, integer: bool) -> float | int:
    lo = 0.0 if lo is None else lo
    hi = lo + 100.0 if hi is None else hi
    if integer:
        return rng.randint(int(lo), int(hi))
    steps = [lo + (hi - lo) * f for f in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.8, 0.9)]
    return float(f"{rng.choice(steps):.3g}")


def _quantity(rng: random.Random, value: float, unit: str) -> str:
    """``value`` (in ``unit``) as an order may write it: the same unit or another of its kind."""
    if unit in _OTHER_UNITS and rng.random() < 0.4:
        from llm_coordinator.quantities import _registry

        other = rng.choice(_OTHER_UNITS[unit])
        converted = _registry().Quantity(value, unit).to(other).magnitude
        if abs(converted - round(converted, 3)) < 1e-9 and converted < 1e5:
            value, unit = round(converted, 3), other
    shown = f"{value:g}"
    return f"{shown} {rng.choice(_UNIT_WORDS.get(unit, (unit,)))}"


def _words(name: str) -> str:
    return name.replace("_", " ")


def _typo(rng: random.Random, text: str) -> str:
    """One swapped or dropped letter in one longer word (people type fast)."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :] if rng.random() < 0.5 else w[:j] + w[j + 1 :]
    return " ".join(words)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- the generator


class Generator:
    """Orders and their readings for one plant (see the module docstring); seeded."""

    def __init__(self, plant: PlantDescription, seed: int = 0) -> None:
        self.plant = plant
        self.rng = random.Random(seed)
        self.names = _Names(plant)
        self.schema = reading_schema(plant)
        self.recipes = {n: r for n, r in plant.recipes.items() if not r.building_block}
        self.blocks = dict(plant.recipes)
        self.robots = list(plant.robots)
        self.skills: dict[str, list[str]] = {}
        for agent in plant.agents():
            for skill in plant.agent_skills(agent):
                self.skills.setdefault(skill, []).append(agent)

    # ----------------------------------------------------------------- pieces

    def _recipe(self, name: str, *, with_count: bool = True) -> tuple[str, RecipeGoal]:
        rng, recipe = self.rng, self.plant.recipes[name]
        n = rng.choice([1, 1, 1, 2, 3, 4, 5, 6, 8, 10, 12]) if with_count else 1
        said, count = _count_words(rng, n)
        params: dict[str, Any] = {}
        extras: list[str] = []
        for pname, p in recipe.params.items():
            if p.type in ("int", "float") and rng.random() < 0.5:
                value = _number(rng, p.min, p.max, p.type == "int")
                if p.unit:
                    text = _quantity(rng, float(value), p.unit)
                    params[pname] = text
                    extras.append(rng.choice([f"at {text}", f"{_words(pname)} {text}", f"with {text}"]))
                else:
                    params[pname] = value
                    extras.append(rng.choice([f"with {_words(pname)} {value}", f"{_words(pname)} {value}"]))
            elif p.type in ("part_type", "location", "bin", "robot", "machine") and rng.random() < 0.3:
                options = self.plant.names_of(p.type) or []
                if options:
                    value_name = rng.choice(options)
                    params[pname] = value_name
                    extras.append(f"for {self.names.say(rng, value_name)}")
        desc = recipe.description or _words(name)
        forms = [
            desc,
            f"run {_words(name)}",
            f"{_words(name)}",
            f"run the {_words(name)} recipe",
            f"please {desc}",
        ]
        text = rng.choice(forms)
        if n != 1 or rng.random() < 0.3:
            unit = rng.choice(["parts", "pieces", "units", "times", "items"])
            if n == 1:
                unit = {"parts": "part", "pieces": "piece", "units": "unit", "times": "time", "items": "item"}[unit]
            text = rng.choice(
                [
                    f"{text} {said} times" if unit == "times" else f"{text}, {said} {unit}",
                    f"{said} {unit}: {text}" if unit != "times" else f"{text} x{n}",
                    f"{text} for {said} {unit}" if unit != "times" else f"{said} times: {text}",
                ]
            )
            if "x" + str(n) in text:
                count = n
        if extras:
            text = f"{text} {' and '.join(extras)}"
        return text, RecipeGoal(kind="recipe", recipe=name, count=count, params=params)

    def _args(self, agent: str, skill: str) -> tuple[list[str], dict[str, Any]] | None:
        rng, plant = self.rng, self.plant
        spec = plant.skill_spec(agent, skill)
        said: list[str] = []
        args: dict[str, Any] = {}
        for name, a in spec.args.items():
            if a.type in ("int", "float"):
                if not a.required and rng.random() < 0.5:
                    continue
                value = _number(rng, a.min, a.max, a.type == "int")
                if a.unit:
                    text = _quantity(rng, float(value), a.unit)
                    args[name] = text
                    said.append(rng.choice([text, f"{_words(name)} {text}", f"at {text}"]))
                else:
                    args[name] = value
                    said.append(rng.choice([f"{_words(name)} {value}", f"with {_words(name)} {value}"]))
            elif a.type == "joints":
                return None  # joint angles are an engineer's business, not a work order's
            elif a.type == "str":
                if a.choices:
                    value_s = rng.choice(list(a.choices))
                    args[name] = value_s
                    said.append(f"{_words(name)} {_words(value_s)}")
                elif a.required:
                    return None
            else:
                candidates = [n for n in plant.names_of(a.type) or [] if not (a.type == "robot" and n == agent)]
                if not candidates:
                    return None
                if not a.required and rng.random() < 0.5:
                    continue
                value_s = rng.choice(candidates)
                args[name] = value_s
                prep = {"location": rng.choice(["to", "at", "into", "onto"]), "robot": "to"}.get(a.type, "for")
                if name == "location" and skill == "pick":
                    prep = rng.choice(["from", "at"])
                said.append(f"{prep} {self.names.say(rng, value_s)}")
        return said, args

    def _task(self, agent: str | None = None, skill: str | None = None) -> tuple[str, TaskGoal] | None:
        rng = self.rng
        if skill is None:
            skill = rng.choice(sorted(self.skills))
        agents = self.skills[skill]
        agent = agent or rng.choice(agents)
        made = self._args(agent, skill)
        if made is None:
            return None
        said, args = made
        n = 1 if rng.random() < 0.75 else rng.choice([2, 3, 4])
        count_said, count = _count_words(rng, n)
        who = self.names.say(rng, agent)
        verb = _words(skill)
        desc = self.plant.skill_spec(agent, skill).description
        tail = (" " + " ".join(said)) if said else ""
        forms = [
            f"{who}: {verb}{tail}",
            f"have {who} {verb}{tail}",
            f"{verb}{tail} with {who}",
            f"let {who} {verb}{tail}",
            f"{who} should {verb}{tail}",
        ]
        if desc and rng.random() < 0.2 and not said:
            forms.append(f"{who}: {desc.split(':')[-1].strip()}")
        text = rng.choice(forms)
        if n != 1:
            text = rng.choice([f"{text} {count_said} times", f"{text}, {count_said} times"])
        return text, TaskGoal(kind="task", skill=skill, agent=agent, args=args, count=count)

    def _simple(self) -> tuple[str, RecipeGoal | TaskGoal] | None:
        if self.recipes and self.rng.random() < 0.4:
            return self._recipe(self.rng.choice(sorted(self.recipes)))
        return self._task()

    def _own_command(self, machine: str) -> tuple[str, TaskGoal] | None:
        """One of ``machine``'s commands that takes no argument, as an order says it."""
        own = [s for s in self.plant.agent_skills(machine) if not self.plant.skill_spec(machine, s).args]
        if not own:
            return None
        skill = self.rng.choice(own)
        return f"{self.names.say(self.rng, machine)}: {_words(skill)}", TaskGoal(
            kind="task", skill=skill, agent=machine
        )

    def _robot_after(self, recipe: str) -> str | None:
        """The robot that holds the part at the end of ``recipe`` (its last robot step)."""
        robots = [s.agent for s in self.plant.recipes[recipe].steps if s.agent in self.plant.robots]
        return robots[-1] if robots else None

    def _named_tests(self) -> list[tuple[str, str, list[str]]]:
        out = []
        for mname, m in self.plant.machines.items():
            for tname, tag in m.tags.items():
                values = [v for v in (tag.values or {}) if v != "none"]
                if len(values) >= 2 and tag.access != "write" and tname not in ("state", "command", "command_seq"):
                    out.append((mname, tname, values))
        return out

    def _counters(self) -> list[tuple[str, str, float | None]]:
        out = []
        for mname, m in self.plant.machines.items():
            for tname, tag in m.tags.items():
                if tname in ("state", "command", "command_seq") or tag.values or tag.access == "write":
                    continue
                if tag.data_type.startswith(("int", "uint")) and (tag.max is None or tag.max >= 3):
                    out.append((mname, tname, tag.max))
        return out

    # ----------------------------------------------------------------- shapes

    def recipe(self) -> tuple[str, Reading] | None:
        if not self.recipes:
            return None
        text, goal = self._recipe(self.rng.choice(sorted(self.recipes)))
        return text, Reading(goals=[goal])

    def task(self) -> tuple[str, Reading] | None:
        rng = self.rng
        if rng.random() < 0.15:
            # every robot: "all robots go home"
            shared = [s for s, a in self.skills.items() if len(a) > 1 and not self.plant.skill_spec(a[0], s).args]
            if shared:
                skill = rng.choice(shared)
                who = rng.choice(["every robot", "all robots", "all the robots", "each robot", "both robots"])
                if len(self.skills[skill]) != 2 and who == "both robots":
                    who = "every robot"
                text = rng.choice(
                    [f"{who} {_words(skill)}", f"{_words(skill)} {who}", f"send {who} to {_words(skill)}"]
                )
                return text, Reading(goals=[TaskGoal(kind="task", skill=skill, agent=EVERY)])
        made = self._task()
        return None if made is None else (made[0], Reading(goals=[made[1]]))

    def compound(self, parallel: bool = False) -> tuple[str, Reading] | None:
        rng = self.rng
        parts = [self._task() if parallel else self._simple() for _ in range(rng.choice([2, 2, 3]))]
        if any(p is None for p in parts):
            return None
        done = [p for p in parts if p is not None]
        if parallel:
            agents = [g.agent for _, g in done if isinstance(g, TaskGoal)]
            if len(set(agents)) != len(agents):
                return None
            text = f"{done[0][0]} and, {rng.choice(_PARALLEL)}, " + " and ".join(t for t, _ in done[1:])
        else:
            text = done[0][0]
            for t, _ in done[1:]:
                text += rng.choice(_THEN) + t
        return text, Reading(goals=[g for _, g in done], parallel=parallel)

    def conditional(self) -> tuple[str, Reading] | None:
        rng, plant = self.rng, self.plant
        tests = self._named_tests()
        if not tests:
            return None
        mname, tname, values = rng.choice(tests)
        value = rng.choice(values)
        others = [v for v in values if v != value]
        recipes = [n for n, r in self.blocks.items() if any(s.agent == mname for s in r.steps)]
        if recipes:
            first: RecipeGoal | TaskGoal
            rname = rng.choice(recipes)
            robot = self._robot_after(rname)
            first_text, first = self._recipe(rname, with_count=False)
            first_text = _words(rname) if plant.recipes[rname].building_block and rng.random() < 0.5 else first_text
        else:
            own = self._own_command(mname)
            if own is None:
                return None
            first_text, first = own
            robot = None
        placers = [a for a in self.skills.get("place", []) if a in plant.robots]
        bins = sorted(plant.names_of("bin") or [])
        places = bins if len(bins) >= 2 else sorted(plant.names_of("location") or [])
        if not placers or len(places) < 2:
            return None
        robot = robot if robot in placers else rng.choice(placers)
        a, b = rng.sample(places, 2)
        machine_said = self.names.say(rng, mname)
        verb_a = rng.choice(["put it in", "place it in", "send it to", "drop it into"])
        verb_b = rng.choice(["put it in", "place it in", "send it to", "drop it into"])
        named_robot = robot is None or rng.random() < 0.4
        who = f"{self.names.say(rng, robot)} " if named_robot else ""
        cond = rng.choice(
            [
                f"if {machine_said} says {_words(value)}",
                f"if the {_words(tname)} is {_words(value)}",
                f"if {machine_said} {_words(tname)} is {_words(value)}",
                f"when it comes out {_words(value)}",
            ]
        )
        otherwise = rng.random() < 0.8
        text = f"{first_text}, then {cond} {who}{verb_a} {self.names.say(rng, a)}"
        if otherwise:
            text += rng.choice([", otherwise ", ", else ", "; if not, ", ", and if it is "]) + f"{verb_b} "
            text += self.names.say(rng, b)
            if ", and if it is " in text and others:
                text = text.replace(", and if it is ", f", and if it is {_words(others[0])} ")
        home = rng.random() < 0.4
        if home:
            text += rng.choice([", then home every robot", ". Finally all robots go home"])
        test = Test(machine=mname, tag=tname, op="==", value=value)
        cond_goal = IfGoal(
            kind="if",
            test=test,
            then=[TaskGoal(kind="task", skill="place", agent=robot, args={"location": a})],
            otherwise=[TaskGoal(kind="task", skill="place", agent=robot, args={"location": b})] if otherwise else [],
        )
        goals: list[Any] = [first, cond_goal]
        if home and len(self.skills.get("home", [])) > 0:
            goals.append(TaskGoal(kind="task", skill="home", agent=EVERY))
        return text, Reading(goals=goals)

    def repeat(self) -> tuple[str, Reading] | None:
        rng = self.rng
        counters = self._counters()
        if not counters:
            return None
        mname, tname, top = rng.choice(counters)
        target = rng.randint(2, int(min(top or 10, 10)))
        limit = rng.randint(target, min(MAX_COUNT, target + 8))
        recipes = [n for n, r in self.recipes.items() if any(s.agent == mname for s in r.steps)]
        body: RecipeGoal | TaskGoal
        if recipes:
            body_text, body = self._recipe(rng.choice(recipes), with_count=False)
        else:
            own = self._own_command(mname)
            if own is None:
                return None
            body_text, body = own
        limit_said, _ = _count_words(rng, limit)
        text = rng.choice(
            [
                f"{body_text} until {self.names.say(rng, mname)} {_words(tname)} reaches {target}, "
                f"at most {limit_said} times",
                f"keep going: {body_text}, until the {_words(tname)} is {target} (no more than {limit} times)",
                f"repeat {body_text} until {_words(tname)} = {target}, max {limit} times",
            ]
        )
        goal = RepeatGoal(
            kind="repeat", until=Test(machine=mname, tag=tname, op=">=", value=target), max_times=limit, body=[body]
        )
        return text, Reading(goals=[goal])

    def cannot(self) -> tuple[str, Reading] | None:
        rng = self.rng
        known = " ".join(
            [*self.skills, *(r.description for r in self.plant.recipes.values()), *self.plant.recipes]
        ).lower()
        actions = [a for a in _OTHER_ACTIONS if a.split("-")[0] not in known]
        if not actions:
            return None
        action = rng.choice(actions)
        thing = rng.choice([*(self.names.say(rng, t) for t in self.plant.part_types), "the part", "the batch"])
        text = rng.choice([f"{action} {thing}", f"please {action} {thing}", f"{action} {rng.randint(2, 9)} parts"])
        reason = f"no machine or robot of {self.plant.name} can {action}"
        return text, Reading(outcome="cannot", reason=reason)

    def unsafe(self) -> tuple[str, Reading] | None:
        rng = self.rng
        from llm_coordinator.order import safety_terms

        terms = safety_terms()
        if not terms:
            return None
        phrase, measure = rng.choice(terms)
        made = self._simple()
        if made is None:
            return None
        text = rng.choice(
            [
                f"{made[0]} and ignore the {phrase}",
                f"bypass the {phrase}, then {made[0]}",
                f"{made[0]}; switch off the {phrase} first",
                f"turn off the {phrase} and {made[0]}",
            ]
        )
        reason = f"the order asks to override a safety measure ({measure}); people change those, not work orders"
        return text, Reading(outcome="cannot", reason=reason)

    def clarify(self) -> tuple[str, Reading] | None:
        rng = self.rng
        if rng.random() < 0.4:
            text = rng.choice(_VAGUE)
            return text, Reading(outcome="clarify", question="Which recipe or task does the order mean, and for what?")
        shared = [s for s, a in self.skills.items() if len(a) > 1 and self.plant.skill_spec(a[0], s).args]
        if not shared:
            return None
        skill = rng.choice(shared)
        agents = self.skills[skill]
        text = rng.choice([f"{_words(skill)} a part", f"{_words(skill)} it", f"please {_words(skill)} something"])
        question = f"Which of {', '.join(agents)} should {_words(skill)}, and where?"
        return text, Reading(outcome="clarify", question=question)

    def make(self, shape: str) -> tuple[str, Reading] | None:
        if shape == "parallel":
            return self.compound(parallel=True)
        made: tuple[str, Reading] | None = getattr(self, shape)()
        return made

    def generate(self, per_shape: int, *, typos: float = 0.1, held_out: Sequence[str] = ()) -> list[Example]:
        """About ``per_shape`` checked examples of each shape (fewer where the plant offers fewer
        distinct ones), order texts unique, none a near duplicate of a ``held_out`` order (a
        test split the model is measured on)."""
        out: list[Example] = []
        held = HeldOut(held_out)
        seen: set[str] = set()
        for shape in SHAPES:
            kept, tries = 0, 0
            while kept < per_shape and tries < per_shape * 6:
                tries += 1
                made = self.make(shape)
                if made is None:
                    continue
                text, reading = made
                text = _capital(re.sub(r"\s+", " ", text).strip())
                if self.rng.random() < typos:
                    text = _typo(self.rng, text)
                if text.lower() in seen or len(text) > 400:
                    continue
                if held.near(text) or not checked(self.plant, text, reading, shape):
                    continue
                answer = answer_text(reading)
                if grammar_problem(answer, self.schema) is not None:
                    continue  # a label the constrained model could not write
                seen.add(text.lower())
                out.append(Example(text, answer, shape, f"generated:{shape}"))
                kept += 1
        return out


class HeldOut:
    """Orders kept out of training, matched exactly and as near duplicates (case and
    punctuation folded; similarity of the whole text, or of its words in any order, of 90% or
    more)."""

    THRESHOLD = 90.0

    def __init__(self, orders: Iterable[str]) -> None:
        from rapidfuzz import utils

        self._process = utils.default_process
        self.orders = [self._process(o) for o in orders if o.strip()]

    def near(self, order: str) -> str | None:
        """The held-out order ``order`` nearly repeats, if any."""
        from rapidfuzz import fuzz

        text = self._process(order)
        for o in self.orders:
            if text == o or fuzz.ratio(text, o) >= self.THRESHOLD or fuzz.token_sort_ratio(text, o) >= self.THRESHOLD:
                return o
        return None


def grammar_problem(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` (JSON) is not what a model constrained by ``schema`` writes (llama.cpp's
    grammar from a JSON Schema: an object's required keys first, in the order the schema lists
    its properties, then optional ones in that order; consts, enums, types, bounds), or None."""
    try:
        value = json.loads(text, object_pairs_hook=list)
    except ValueError as exc:
        return f"not JSON: {exc}"
    return _fits(value, schema, schema.get("$defs", {}), "answer")


def _fits(value: Any, schema: dict[str, Any], defs: dict[str, Any], at: str) -> str | None:
    if "$ref" in schema:
        return _fits(value, defs[schema["$ref"].rsplit("/", 1)[-1]], defs, at)
    if "anyOf" in schema:
        problems = [_fits(value, s, defs, at) for s in schema["anyOf"]]
        return None if any(p is None for p in problems) else min(problems, key=lambda p: len(p or ""))
    if "const" in schema:
        return None if value == schema["const"] else f"{at}: {value!r} is not {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: {value!r} is not one of the schema's names"
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if not isinstance(value, list) or any(not isinstance(p, tuple) for p in value):
            return f"{at}: not an object"
        keys = [k for k, _ in value]
        props = list(schema.get("properties", {}))
        required = [k for k in props if k in schema.get("required", [])]
        optional = [k for k in props if k not in required]
        if keys[: len(required)] != required:
            return f"{at}: keys {keys} do not start with the required {required}"
        rest = keys[len(required) :]
        if any(k not in optional for k in rest) or rest != [k for k in optional if k in rest]:
            return f"{at}: optional keys {rest} out of the schema's order {optional}"
        for k, v in value:
            problem = _fits(v, schema["properties"][k], defs, f"{at}.{k}")
            if problem:
                return problem
        return None
    if kind == "array":
        if not isinstance(value, list) or (value and all(isinstance(p, tuple) for p in value)):
            return f"{at}: not an array"
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**6):
            return f"{at}: {len(value)} items"
        for i, v in enumerate(value):
            problem = _fits(v, schema.get("items", {}), defs, f"{at}[{i}]")
            if problem:
                return problem
        return None
    if kind == "string":
        ok = isinstance(value, str) and len(value) <= schema.get("maxLength", 10**6)
        return None if ok else f"{at}: {value!r} is not a string the schema allows"
    if kind in ("number", "integer"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (kind == "number" or isinstance(value, int))
        ok = ok and schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf)
        return None if ok else f"{at}: {value!r} is not a {kind} the schema allows"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"{at}: {value!r} is not a boolean"
    return None


def checked(plant: PlantDescription, order: str, reading: Reading, shape: str) -> bool:
    """Whether the product agrees with the label: a plan expands against the plant, a
    safety-measure order is refused by the static rule, and nothing else touches one."""
    refusals = static_refusals(read_order(order, plant), plant)
    if shape == "unsafe":
        return bool(refusals)
    if refusals:
        return False
    if reading.outcome != "plan":
        return True
    try:
        expand_reading(plant, reading, work_order=order)
    except (Unplannable, Unclear, ValueError):
        return False
    return True


def split_dev(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev), each shape split alike; seeded."""
    rng = random.Random(seed)
    train: list[Example] = []
    dev: list[Example] = []
    by_shape: dict[str, list[Example]] = {}
    for e in examples:
        by_shape.setdefault(e.shape, []).append(e)
    for items in by_shape.values():
        items = list(items)
        rng.shuffle(items)
        n_dev = round(len(items) * fraction)
        dev += items[:n_dev]
        train += items[n_dev:]
    return train, dev


def counts(examples: Iterable[Example]) -> dict[str, int]:
    return dict(sorted(Counter(e.shape for e in examples).items()))

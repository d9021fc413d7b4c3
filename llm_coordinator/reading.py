"""The plan language: what a work order asks, as a model (or a person) writes it down.

One grammar, in one place: :class:`Reading` (pydantic) and :func:`reading_schema` (the same
grammar as a JSON Schema made from one plant, with the plant's names as enums, for constrained
decoding). A reading is not a plan: :mod:`llm_coordinator.expansion` turns it into one, checks
every name, unit and range against the plant, and refuses what does not fit.

A reading ends in one of three ways (``outcome``):

- ``plan``: one or more **goals**, run in sequence (the default) or in parallel where the
  plant's resources allow (``parallel: true``). A goal is

  - ``recipe``: a recipe of the plant, ``count`` times, with parameters (``{"volume": "500 ml"}``);
  - ``task``: one skill of an agent (a robot skill or a machine command), ``count`` times; the
    agent ``"every"`` means every agent that has the skill;
  - ``if``: a **condition** on a machine tag read when the plan runs (``CAMERA.result == fail``),
    with the goals to run when it holds (``then``) and otherwise (``otherwise``);
  - ``repeat``: a **bounded repetition**: the ``body`` goals until a condition holds, at most
    ``max_times`` times.

  Conditions and repetitions hold recipes and tasks (one level: no condition inside a condition).
- ``clarify``: the order is ambiguous; ``question`` goes back to the person.
- ``cannot``: the plant cannot do it; ``reason`` says why.

``declined`` lists what the order names that the plan deliberately leaves out, each with a
reason: the coverage rule (:mod:`llm_coordinator.order`) accepts a plan that covers less than the
order only when what is missing is declined here.

Example (a compound order with a condition)::

    {"outcome": "plan", "goals": [
      {"kind": "recipe", "recipe": "RECIPE", "count": 1},
      {"kind": "if", "test": {"machine": "CAMERA", "tag": "result", "op": "==", "value": "fail"},
       "then": [{"kind": "task", "skill": "place", "agent": "ROBOT", "args": {"location": "REJECT_BIN"}}],
       "otherwise": [{"kind": "task", "skill": "place", "agent": "ROBOT", "args": {"location": "GOOD_BIN"}}]},
      {"kind": "task", "skill": "home", "agent": "every"}]}
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_coordinator.plan import MAX_COUNT, CompareOp, _enum
from plant.config import PlantDescription

#: A value as an order gives it: a number, a name of the plant, or a quantity with its unit ("500 ml").
Value = str | int | float | bool | list[float]
#: A count as an order gives it: a number, or words ("three", "a dozen").
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)] | Annotated[str, Field(max_length=40)]
#: The agent of a task that every agent having the skill performs.
EVERY = "every"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Test(_Model):
    """A condition on a machine tag, read when the plan runs. ``value``: a number, a quantity
    with a unit, or a named value the tag declares in the plant file ("fail")."""

    machine: str
    tag: str
    op: CompareOp = "=="
    value: str | int | float | bool


class RecipeGoal(_Model):
    """Run a recipe of the plant ``count`` times; parameters not given take their defaults."""

    kind: Literal["recipe"]
    recipe: str
    count: Count = 1
    params: dict[str, Value] = Field(default_factory=dict)


class TaskGoal(_Model):
    """One skill (robot) or command (machine), ``count`` times, by ``agent`` (None: the planner
    chooses one that can; ``"every"``: each agent that has the skill)."""

    kind: Literal["task"]
    skill: str
    agent: str | None = None
    args: dict[str, Value] = Field(default_factory=dict)
    count: Count = 1


SimpleGoal = Annotated[RecipeGoal | TaskGoal, Field(discriminator="kind")]


class IfGoal(_Model):
    """Decided when the plan runs: ``then`` if ``test`` holds, else ``otherwise``."""

    kind: Literal["if"]
    test: Test
    then: Annotated[list[SimpleGoal], Field(min_length=1, max_length=8)]
    otherwise: Annotated[list[SimpleGoal], Field(max_length=8)] = Field(default_factory=list)


class RepeatGoal(_Model):
    """``body`` again and again until ``until`` holds, at most ``max_times`` times."""

    kind: Literal["repeat"]
    until: Test
    max_times: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    body: Annotated[list[SimpleGoal], Field(min_length=1, max_length=8)]


Goal = Annotated[RecipeGoal | TaskGoal | IfGoal | RepeatGoal, Field(discriminator="kind")]


class Declined(_Model):
    """Something the order names that the plan leaves out, and why."""

    what: Annotated[str, Field(max_length=120)]
    why: Annotated[str, Field(max_length=200)]


class Reading(_Model):
    """What a work order asks (see the module docstring)."""

    outcome: Literal["plan", "clarify", "cannot"] = "plan"
    goals: Annotated[list[Goal], Field(max_length=12)] = Field(default_factory=list)
    parallel: bool = False
    question: Annotated[str, Field(max_length=300)] = ""
    reason: Annotated[str, Field(max_length=300)] = ""
    declined: Annotated[list[Declined], Field(max_length=12)] = Field(default_factory=list)

    def summary(self) -> list[str]:
        """One line per goal, for a person (the plan's ``goals``)."""
        return [describe_goal(g) for g in self.goals]


def describe_goal(g: RecipeGoal | TaskGoal | IfGoal | RepeatGoal) -> str:
    """A goal in one line: ``RECIPE x2 (program=7)``, ``if CAMERA.result == fail: ...``."""
    match g:
        case RecipeGoal():
            params = ", ".join(f"{k}={v}" for k, v in g.params.items())
            return f"recipe {g.recipe} x{g.count}" + (f" ({params})" if params else "")
        case TaskGoal():
            args = ", ".join(f"{k}={v}" for k, v in g.args.items())
            who = g.agent or "an agent that can"
            return f"{who} {g.skill}" + (f"({args})" if args else "") + (f" x{g.count}" if g.count != 1 else "")
        case IfGoal():
            t = g.test
            then = "; ".join(describe_goal(x) for x in g.then)
            other = "; ".join(describe_goal(x) for x in g.otherwise) or "nothing"
            return f"if {t.machine}.{t.tag} {t.op} {t.value}: {then}; otherwise: {other}"
        case RepeatGoal():
            t = g.until
            body = "; ".join(describe_goal(x) for x in g.body)
            return f"repeat {body} until {t.machine}.{t.tag} {t.op} {t.value}, at most {g.max_times} times"
    return str(g)  # pragma: no cover - the union is closed


def simple_goals(reading: Reading) -> list[RecipeGoal | TaskGoal]:
    """Every recipe and task of a reading, those inside conditions and repetitions included."""
    out: list[RecipeGoal | TaskGoal] = []
    for g in reading.goals:
        if isinstance(g, IfGoal):
            out += [*g.then, *g.otherwise]
        elif isinstance(g, RepeatGoal):
            out += g.body
        else:
            out.append(g)
    return out


def parse_reading(text: str) -> Reading:
    """A reading from a model's JSON. Raises ``ValueError`` with a reason a person (and the
    model, on its next attempt) understands, naming where the answer went wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not JSON ({exc.msg} at character {exc.pos})") from None
    try:
        return Reading.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:6])
        raise ValueError(f"the answer is not a reading: {problems}") from None


# --------------------------------------------------------------------------- the grammar as a schema


def _value_schema() -> dict[str, Any]:
    return {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 40}]}


def _count_schema() -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_COUNT}, {"type": "string", "maxLength": 20}]}


def _simple_goal_variants(plant: PlantDescription) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, recipe in plant.recipes.items():
        out.append(
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "recipe"},
                    "recipe": {"const": name},
                    "count": _count_schema(),
                    "params": {
                        "type": "object",
                        "properties": {p: _value_schema() for p in recipe.params},
                        "additionalProperties": False,
                    },
                },
                "required": ["kind", "recipe", "count"],
                "additionalProperties": False,
            }
        )
    by_skill: dict[str, list[str]] = {}
    for agent in plant.agents():
        for skill in plant.agent_skills(agent):
            by_skill.setdefault(skill, []).append(agent)
    for skill, agents in sorted(by_skill.items()):
        arg_names = sorted({a for agent in agents for a in plant.skill_spec(agent, skill).args})
        out.append(
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "task"},
                    "skill": {"const": skill},
                    "agent": _enum([*agents, EVERY]),
                    "args": {
                        "type": "object",
                        "properties": {a: _value_schema() for a in arg_names},
                        "additionalProperties": False,
                    },
                    "count": _count_schema(),
                },
                "required": ["kind", "skill", "agent", "args"],
                "additionalProperties": False,
            }
        )
    return out


def _test_schema(plant: PlantDescription) -> dict[str, Any]:
    variants = []
    for name, m in plant.machines.items():
        readable = [t for t, tag in m.tags.items() if tag.access != "write" and t not in ("command", "command_seq")]
        variants.append(
            {
                "type": "object",
                "properties": {
                    "machine": {"const": name},
                    "tag": _enum(readable),
                    "op": {"type": "string", "enum": ["==", "!=", "<", "<=", ">", ">="]},
                    "value": _value_schema(),
                },
                "required": ["machine", "tag", "op", "value"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": variants} if variants else {"type": "object"}


def reading_schema(plant: PlantDescription) -> dict[str, Any]:
    """The plan language for this plant as a JSON Schema (see the module docstring): agent,
    skill, recipe, machine and tag names are enums of the plant. Convenience for a model; the
    expansion checks everything again."""
    simple = {"anyOf": _simple_goal_variants(plant)}
    goals = [
        *simple["anyOf"],
        {
            "type": "object",
            "properties": {
                "kind": {"const": "if"},
                "test": {"$ref": "#/$defs/test"},
                "then": {"type": "array", "items": {"$ref": "#/$defs/simple"}, "minItems": 1, "maxItems": 8},
                "otherwise": {"type": "array", "items": {"$ref": "#/$defs/simple"}, "maxItems": 8},
            },
            "required": ["kind", "test", "then", "otherwise"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "kind": {"const": "repeat"},
                "until": {"$ref": "#/$defs/test"},
                "max_times": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
                "body": {"type": "array", "items": {"$ref": "#/$defs/simple"}, "minItems": 1, "maxItems": 8},
            },
            "required": ["kind", "until", "max_times", "body"],
            "additionalProperties": False,
        },
    ]
    declined = {
        "type": "object",
        "properties": {"what": {"type": "string", "maxLength": 120}, "why": {"type": "string", "maxLength": 200}},
        "required": ["what", "why"],
        "additionalProperties": False,
    }
    return {
        "$defs": {"simple": simple, "test": _test_schema(plant)},
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "outcome": {"const": "plan"},
                    "goals": {"type": "array", "items": {"anyOf": goals}, "minItems": 1, "maxItems": 12},
                    "parallel": {"type": "boolean"},
                    "declined": {"type": "array", "items": declined, "maxItems": 12},
                },
                "required": ["outcome", "goals"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"outcome": {"const": "clarify"}, "question": {"type": "string", "maxLength": 300}},
                "required": ["outcome", "question"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"outcome": {"const": "cannot"}, "reason": {"type": "string", "maxLength": 300}},
                "required": ["outcome", "reason"],
                "additionalProperties": False,
            },
        ],
    }

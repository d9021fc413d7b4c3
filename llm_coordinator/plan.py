"""Plans, intents and the JSON Schemas that constrain what a model may write.

- :class:`Plan` / :class:`Step`: what the executor runs once it is approved (steps with an id,
  an agent, a skill, arguments, dependencies, an expected duration and a hazard flag). Its
  :meth:`Plan.content_hash` is what an approval is bound to.
- :class:`RecipeIntent`: a recipe, how many times and its parameters, which a deterministic
  planner expands (:mod:`llm_coordinator.expansion`).
- :func:`plan_schema`: the JSON Schema generated from the plant, with
  agent, skill, location and part names as enums and each agent's skills encoded per agent
  (one ``anyOf`` variant per agent and skill), so that a constrained model cannot name what the
  plant does not have. The schema is a convenience for the model; the guardrails check again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from plant.catalog import ROBOT_MODELS
from plant.config import NAME_RE, PlantDescription
from plant.skills import SKILLS, ArgSpec

ArgValue = str | int | float | list[float]
StepId = Annotated[str, Field(pattern=NAME_RE.pattern, description="lower_snake_case step id")]

#: Most repetitions one work order may ask for (a bigger batch is several work orders).
MAX_COUNT = 20
#: Most steps in one plan (a plan longer than this is not reviewable by a person).
MAX_STEPS = 200


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]
_NEGATED: dict[str, str] = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


class Condition(_Model):
    """A test of one machine tag, read when the plan runs: ``tag op value``.

    ``value`` is a number (the tag's engineering value) or, for a tag that declares named values
    in the plant file, the number one of them stands for; ``label`` keeps the name a person wrote
    ("fail")."""

    machine: str
    tag: str
    op: CompareOp = "=="
    value: float | int | bool | str
    label: str = ""

    def holds(self, reading: object) -> bool:
        """Whether a value read from the tag satisfies the condition (a mismatched type never does)."""
        try:
            if isinstance(self.value, str) or isinstance(reading, str):
                left, right = str(reading), str(self.value)
                return {"==": left == right, "!=": left != right}.get(self.op, False)
            a, b = float(reading), float(self.value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]

    def negated(self) -> Condition:
        """The opposite test (``until x >= 4`` runs while ``x < 4``)."""
        return self.model_copy(update={"op": _NEGATED[self.op]})

    def describe(self) -> str:
        shown = self.label or (f"{self.value:g}" if isinstance(self.value, float) else str(self.value))
        return f"{self.machine}.{self.tag} {self.op} {shown}"


class Decision(_Model):
    """A choice the plan makes when it runs: ``condition`` is read once every step of ``after``
    has ended, and the outcome is kept (a resumed run reuses it). A decision ``requires``
    earlier decisions to have come out a given way; when one did not, it is false unread (the
    iterations of a bounded repetition end at the first that is not needed)."""

    id: StepId
    condition: Condition
    kind: Literal["condition", "repetition"] = "condition"
    after: list[str] = Field(default_factory=list)
    requires: dict[str, bool] = Field(default_factory=dict)
    note: str = Field(default="", max_length=200)


class Step(_Model):
    """One step of a plan: ``agent`` performs ``skill`` with ``args`` once every step in ``after`` is
    done (or skipped). A step with ``when`` runs only if each named decision of the plan came out
    as given, and is skipped otherwise."""

    id: StepId
    agent: str
    skill: str
    args: dict[str, ArgValue] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)
    expected_duration_s: Annotated[float, Field(gt=0, le=86400)] = 5.0
    hazardous: bool = Field(default=False, description="needs a robot operator's confirmation before it runs")
    note: str = Field(default="", max_length=200, description="where the step came from (recipe step, repetition)")
    when: dict[str, bool] = Field(default_factory=dict, description="decision id -> the outcome this step needs")


class Plan(_Model):
    """A proposed way to carry out a work order. Immutable: a changed plan is a new plan."""

    work_order: str = Field(max_length=4000)
    mode: Literal["intent", "direct", "recovery"]
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]
    recipe: str | None = None
    notes: list[str] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    goals: list[str] = Field(default_factory=list, description="what the plan does, one line per goal of the order")

    def canonical(self) -> dict[str, Any]:
        """The plan as JSON data. Fields added after plans were first stored (``decisions``,
        ``goals``, a step's ``when``) are left out while empty, so a stored plan keeps its hash."""
        data = self.model_dump(mode="json")
        for key in ("decisions", "goals"):
            if not data[key]:
                del data[key]
        for step in data["steps"]:
            if not step["when"]:
                del step["when"]
        return data

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of the whole plan: any change gives another hash."""
        canonical = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def decision(self, decision_id: str) -> Decision:
        """The decision with this id; ``KeyError`` if there is none."""
        for d in self.decisions:
            if d.id == decision_id:
                return d
        raise KeyError(decision_id)

    def step(self, step_id: str) -> Step:
        """The step with this id; ``KeyError`` if there is none."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def planned_starts(self) -> dict[str, float]:
        """Earliest start (s) of each step at its expected duration (see :func:`earliest_starts`)."""
        return earliest_starts(
            [s.id for s in self.steps],
            {s.id: s.after for s in self.steps},
            {s.id: s.expected_duration_s for s in self.steps},
            {s.id: s.agent for s in self.steps},
            {s.id: s.when for s in self.steps},
        )


def earliest_starts(
    ids: Sequence[str],
    after: Mapping[str, Sequence[str]],
    duration_s: Mapping[str, float],
    agent: Mapping[str, str] | None = None,
    when: Mapping[str, Mapping[str, bool]] | None = None,
) -> dict[str, float]:
    """Earliest start (s) of each step of a step graph: once every step it waits for (``after``)
    has ended and, when ``agent`` is given, once the earlier-listed steps of its agent have ended
    (an agent does one thing at a time, as the executor runs it), but for steps of the opposite
    branch of a decision (``when``: they never both run). The one timing of the step graph: the
    scheduler, the Gantt charts and the console read it. A step whose dependencies can never end
    (a cycle, an unknown id) gets no start."""
    end: dict[str, float] = {}
    start: dict[str, float] = {}
    agent_steps: dict[str, list[str]] = {}
    for i in ids:
        if agent is not None:
            agent_steps.setdefault(agent[i], []).append(i)
    branch = when or {}

    def apart(a: str, b: str) -> bool:
        wa, wb = branch.get(a, {}), branch.get(b, {})
        return any(d in wb and wb[d] != v for d, v in wa.items())

    waits = {
        i: [
            *after.get(i, ()),
            *([o for o in agent_steps[agent[i]][: agent_steps[agent[i]].index(i)] if not apart(o, i)] if agent else ()),
        ]
        for i in ids
    }
    pending = list(ids)
    while pending:
        ready = [i for i in pending if all(d in end for d in waits[i])]
        if not ready:
            break
        for i in ready:
            start[i] = max((end[d] for d in waits[i]), default=0.0)
            end[i] = start[i] + duration_s[i]
            pending.remove(i)
    return start


# --------------------------------------------------------------------------- what a model writes


class DraftStep(_Model):
    """A step as a model writes it in direct mode (durations and hazard flags are not its to set)."""

    id: StepId
    agent: str
    skill: str
    args: dict[str, ArgValue] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)


class DraftPlan(_Model):
    """A plan as a model writes it in direct mode."""

    steps: Annotated[list[DraftStep], Field(min_length=1, max_length=MAX_STEPS)]


class RecipeIntent(_Model):
    """Run a recipe ``count`` times with these parameters (the rest take their defaults)."""

    goal: Literal["recipe"]
    recipe: str
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    params: dict[str, int | float | str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- schemas from the plant


def _enum(values: list[str] | tuple[str, ...]) -> dict[str, Any]:
    vals = sorted(set(values))
    return {"type": "string", "enum": vals} if vals else {"type": "string", "enum": ["(none)"]}


def _number_schema(kind: str, lo: float | None, hi: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer" if kind == "int" else "number"}
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


def _arg_schema(plant: PlantDescription, spec: ArgSpec, agent: str | None) -> dict[str, Any]:
    if spec.type == "str":
        return _enum(list(spec.choices)) if spec.choices else {"type": "string", "maxLength": 80}
    names = plant.names_of(spec.type)
    if names is not None:
        return _enum([n for n in names if not (spec.type == "robot" and n == agent)])
    if spec.type in ("int", "float"):
        return _number_schema(spec.type, spec.min, spec.max)
    if spec.type == "joints":
        dof = ROBOT_MODELS[plant.robots[agent].model].dof if agent in plant.robots else 6
        return {"type": "array", "items": {"type": "number"}, "minItems": dof, "maxItems": dof}
    raise ValueError(f"unknown argument type {spec.type!r}")  # pragma: no cover - ArgType is closed


def _args_schema(plant: PlantDescription, skill: str, agent: str | None) -> dict[str, Any]:
    spec = plant.skill_spec(agent, skill) if agent is not None else SKILLS[skill]
    props = {name: _arg_schema(plant, a, agent) for name, a in spec.args.items()}
    return {
        "type": "object",
        "properties": props,
        "required": [n for n, a in spec.args.items() if a.required],
        "additionalProperties": False,
    }


def step_variants(plant: PlantDescription) -> list[dict[str, Any]]:
    """One schema per (agent, skill) the plant allows: the agent's skills encoded per agent."""
    variants = []
    for agent in sorted(plant.agents()):
        for skill in plant.agent_skills(agent):
            variants.append(
                {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}$"},
                        "agent": {"const": agent},
                        "skill": {"const": skill},
                        "args": _args_schema(plant, skill, agent),
                        "after": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
                    },
                    "required": ["id", "agent", "skill", "args", "after"],
                    "additionalProperties": False,
                }
            )
    return variants


def plan_schema(plant: PlantDescription, max_steps: int = 40) -> dict[str, Any]:
    """JSON Schema of a :class:`DraftPlan` for this plant (direct mode)."""
    return {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"anyOf": step_variants(plant)}, "minItems": 1, "maxItems": max_steps}
        },
        "required": ["steps"],
        "additionalProperties": False,
    }

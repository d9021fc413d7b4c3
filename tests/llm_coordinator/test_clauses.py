"""Compound orders: split into clauses, one goal read per clause, held to every rule on the whole."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest

from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.clauses import MAX_CLAUSES, negation_of_action, split_clauses
from llm_coordinator.config import CoordinatorConfig, ModelConfig
from llm_coordinator.interface import LLMBackend
from llm_coordinator.order import COMPARATIVES
from llm_coordinator.planner import Planner
from llm_coordinator.testing import goal_script
from plant.config import PlantDescription


@pytest.mark.parametrize(
    ("order", "clauses"),
    [
        ("Prime the pump, then fill two bottles", ["Prime the pump", "fill two bottles"]),
        ("Prime the pump then fill two bottles", ["Prime the pump", "fill two bottles"]),
        ("Prime the pump and then fill two bottles", ["Prime the pump", "fill two bottles"]),
        ("Open the door, and once that's done home the arm", ["Open the door", "home the arm"]),
        ("Open the door; home the arm", ["Open the door", "home the arm"]),
        ("Open the door. Then home the arm.", ["Open the door", "home the arm"]),
        ("Ouvrir la porte, puis ranger le bras", ["Ouvrir la porte", "ranger le bras"]),
        ("Tür öffnen und dann den Arm heimfahren", ["Tür öffnen", "den Arm heimfahren"]),
        ("Abrir la puerta, y luego cerrar la puerta", ["Abrir la puerta", "cerrar la puerta"]),
    ],
)
def test_an_order_splits_at_its_connectives(order: str, clauses: list[str]) -> None:
    assert split_clauses(order) == clauses


@pytest.mark.parametrize(
    "order",
    [
        "Fill and seal three bottles, 0.75 l each",  # a bare "and" joins two actions of one goal
        "Dose 0.75 l into the bottle",  # a decimal point ends no sentence
        "Open the door, then",  # a connective with nothing after it
        "Then home the arm",  # a connective with nothing before it
        "A, then b, then c, then d, then e, then f",  # more clauses than an order has
        "Machine a blank until the counter reads 3, but at most 5 times",  # no connective
    ],
)
def test_an_order_without_two_clauses_stays_whole(order: str) -> None:
    assert split_clauses(order) == [" ".join(order.split())]
    assert MAX_CLAUSES < 6


def _by_clause(answers: Mapping[str, str], default: str) -> object:
    """A model that answers the goal question by the work order it is shown (a clause or the
    whole order): ``answers`` maps a substring of the order to the answer; anything else gets
    ``default``. Other questions (skill, agent) get nothing: the planner then reads the order."""

    def script(messages: Sequence[object], schema: Mapping[str, object]) -> str | None:
        props = schema.get("properties", {})
        if not (isinstance(props, dict) and "goal" in props):
            return None
        user = str(getattr(messages[-1], "content", ""))
        order = user.split("<<<DATA", 1)[-1]
        for needle, answer in answers.items():
            if needle in order and not any(other in order for other in answers if other != needle):
                return answer
        return default

    return script


def config() -> CoordinatorConfig:
    return CoordinatorConfig.model_validate({"mode": "intent", "model": ModelConfig(timeout_s=5.0).model_dump()})


async def test_each_clause_of_a_compound_order_gets_its_goal(demo_plant: PlantDescription) -> None:
    """The model reads the whole order as one recipe and the home clause wrongly: the recipe
    covers the first clause, the plant's home skill (found from the clause's own words) the
    second, and they run in the order's sequence."""
    script = _by_clause({"program": '{"goal": "machine_part"}'}, '{"goal": "inspect_part"}')
    backend = ScriptedBackend(script)  # type: ignore[arg-type]
    order = "Machine one blank with program 3, then send the Panda home"
    out = await Planner(demo_plant, backend, config()).plan(order)
    assert out.status == "planned" and out.plan is not None, out.reasons
    assert out.plan.goals == ["recipe machine_part x1 (program=3, part_type=blank_al)", "panda_1 home"]
    assert any("each of the order's 2 clauses" in n for n in out.plan.notes)
    steps = {s.id: s for s in out.plan.steps}
    home = next(s for s in out.plan.steps if s.skill == "home" and s.agent == "panda_1" and "task" in s.note)
    # After every step of the recipe: the order's "then".
    recipe_ids = [s.id for s in out.plan.steps if s.id != home.id]
    ancestors: set[str] = set()
    todo = list(home.after)
    while todo:
        sid = todo.pop()
        if sid not in ancestors:
            ancestors.add(sid)
            todo.extend(steps[sid].after)
    assert set(recipe_ids) <= ancestors


async def test_a_clause_nothing_of_the_plant_does_is_asked_about(demo_plant: PlantDescription) -> None:
    """One clause asks for what no goal of the plant does: no plan of the other clause alone."""
    script = _by_clause({"program": '{"goal": "machine_part"}'}, '{"goal": "inspect_part"}')
    backend = ScriptedBackend(script)  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan("Machine one blank with program 3, then weld two plates")
    assert out.status == "clarify" and out.plan is None, out.reasons
    assert "weld" in out.question


async def test_a_clause_whose_goal_leaves_its_words_out_is_no_goal(demo_plant: PlantDescription) -> None:
    """A model that reads each clause as the same recipe: the second clause's reading does not
    cover its words, and no goal of the plant does better than a person's answer."""
    backend = ScriptedBackend(_by_clause({}, '{"goal": "machine_part"}'))  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan("Machine one blank, then paint the fixture blue")
    assert out.status != "planned" and out.plan is None


@pytest.mark.slow
async def test_the_embedded_model_plans_a_compound_order(demo_plant: PlantDescription, llama: LLMBackend) -> None:
    cfg = CoordinatorConfig.model_validate({"mode": "intent", "model": ModelConfig(timeout_s=60).model_dump()})
    out = await Planner(demo_plant, llama, cfg).plan("Machine one blank with program 3, then send the Panda home")
    assert out.status == "planned" and out.plan is not None, out.reasons
    assert out.plan.goals[-1] == "panda_1 home" and out.plan.goals[0].startswith("recipe machine_part x1")


@pytest.mark.parametrize(
    "order",
    [
        "Machine one blank with program 3; before that, home the Panda",
        "Machine one blank with program 3. First home the Panda",
        "Machine one blank with program 3; home the Panda before that",
    ],
)
def test_a_clause_that_comes_first_keeps_the_order_whole(order: str) -> None:
    assert split_clauses(order) == [order]


@pytest.mark.parametrize(
    "order",
    [
        "Machine one blank with program 3; do not home the Panda",
        "Machine one blank with program 3, then don't send the Panda home",
        "Machine one blank with program 3; before that, home the Panda",
    ],
)
async def test_no_clause_becomes_what_it_forbids_or_runs_out_of_sequence(
    demo_plant: PlantDescription, order: str
) -> None:
    """Found by a review: each was planned with the Panda homed after the recipe."""
    script = _by_clause({"program": '{"goal": "machine_part"}', "Panda": '{"goal": "tasks"}'}, '{"goal": "tasks"}')
    backend = ScriptedBackend(script)  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan(order)
    assert out.plan is None or not any(
        s.agent == "panda_1" and s.skill == "home" and "task" in s.note for s in out.plan.steps
    ), out.plan.goals


async def test_a_courtesy_clause_asks_for_nothing(demo_plant: PlantDescription) -> None:
    script = _by_clause({"program": '{"goal": "machine_part"}'}, '{"goal": "machine_part"}')
    backend = ScriptedBackend(script)  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan("Machine one blank with program 3. Thank you very much")
    assert out.status == "planned", out.reasons


async def test_a_later_clause_is_what_its_agent_does_last(demo_plant: PlantDescription) -> None:
    """Found by a review: the recipe homes the UR5e in its middle, so "then send the UR5e home"
    looked covered and the final home was left out. A later clause's task is what its agent
    does last."""
    answers = {"program": '{"goal": "machine_part"}', "home": '{"goal": "tasks"}'}
    script = _by_clause(answers, '{"goal": "machine_part"}')
    backend = ScriptedBackend(script)  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan("Machine one blank with program 3, then send the UR5e home")
    assert out.plan is not None and out.plan.goals[-1] == "ur5e_1 home", out.reasons
    ur5e = [s for s in out.plan.steps if s.agent == "ur5e_1"]
    assert ur5e[-1].skill == "home" and "task" in ur5e[-1].note


@pytest.mark.parametrize(
    ("order", "word"),
    [
        ("Do not machine a blank", "not"),
        ("Machine a blank, don't quarantine it", "don't"),
        ("Ne faites pas de cycle", "ne"),
        ("Fräse keinen Rohling", "keinen"),
        ("Machine blanks until the counter reads 10, but no more than 5 runs", None),
        ("Ne pas plus de 3 fois", None),
        ("Nicht mehr als 3 Teile", None),
        ("Run program no 3", None),
        ("Machine one blank", None),
    ],
)
def test_a_negation_says_what_not_to_do_unless_it_bounds_a_count(order: str, word: str | None) -> None:
    assert negation_of_action(order, COMPARATIVES) == word


@pytest.mark.parametrize(
    ("order", "goal"),
    [
        ("Do not machine a blank", "machine_part"),
        ("Machine a blank, don't quarantine it", "quarantine_part"),
        ("Machine a blank, don't quarantine it", "machine_part"),
        ("Nicht sortieren: einen Rohling fräsen", "machine_part"),
    ],
)
async def test_an_order_that_says_what_not_to_do_is_not_planned_as_what_it_forbids(
    demo_plant: PlantDescription, order: str, goal: str
) -> None:
    """The small model's goals say what to do: a reading of "do not machine a blank" as
    machine_part was planned and reached approval. A person is asked instead."""
    backend = ScriptedBackend(goal_script({"goal": json.dumps({"goal": goal})}))  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan(order)
    assert out.status == "clarify" and out.plan is None, (out.status, out.plan and out.plan.goals)
    # The bound of a repetition is no negation: planned.
    backend = ScriptedBackend(goal_script({"goal": '{"goal": "machine_part"}'}))  # type: ignore[arg-type]
    out = await Planner(demo_plant, backend, config()).plan(
        "Keep machining blanks until the CNC's part counter reads 10, but no more than 5 runs"
    )
    assert out.status == "planned" and out.plan is not None, out.reasons

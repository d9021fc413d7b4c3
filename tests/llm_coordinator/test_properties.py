"""Properties of plan validation and scheduling over wide inputs (Hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_coordinator.expansion import expand_recipe, finish_plan, makespan_s
from llm_coordinator.guardrails import check
from llm_coordinator.plan import Plan, RecipeIntent, Step
from plant import load_plant
from plant.skills import SKILLS
from tests.conftest import DEMO

PLANT = load_plant(DEMO)
NAMES = [*PLANT.agents(), *PLANT.locations(), *PLANT.part_types, "kuka_1", "moon", ""]
ARG = st.one_of(st.sampled_from(NAMES), st.integers(-10, 20000), st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 6))
    ids = [f"s{i}" for i in range(n)]
    steps = []
    for i in range(n):
        skill = draw(st.sampled_from([*SKILLS, "weld"]))
        args = draw(
            st.dictionaries(
                st.sampled_from(["location", "part_type", "program", "machine", "to_robot", "x"]), ARG, max_size=3
            )
        )
        after = draw(st.lists(st.sampled_from(ids), max_size=2, unique=True))
        steps.append(
            Step(
                id=ids[i], agent=draw(st.sampled_from([*PLANT.agents(), "kuka_1"])), skill=skill, args=args, after=after
            )
        )
    return Plan(work_order="random", mode="direct", steps=steps)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(plans())
def test_check_never_raises_and_never_accepts_an_unknown_name(plan: Plan) -> None:
    verdict = check(plan, PLANT)
    unknown = any(s.agent not in PLANT.agents() or s.skill not in SKILLS for s in plan.steps)
    if unknown:
        assert not verdict.ok
    for f in verdict.failures:
        assert f.reason and f.rule


@settings(max_examples=6, deadline=None)
@given(st.sampled_from(sorted(PLANT.recipes)), st.integers(1, 3))
def test_scheduled_recipes_are_accepted_and_never_slower_than_in_turn(recipe: str, count: int) -> None:
    protos, notes = expand_recipe(PLANT, RecipeIntent(goal="recipe", recipe=recipe, count=count))
    fast = finish_plan(PLANT, protos, work_order="t", mode="intent", recipe=recipe, notes=notes)
    protos, notes = expand_recipe(PLANT, RecipeIntent(goal="recipe", recipe=recipe, count=count))
    slow = finish_plan(PLANT, protos, work_order="t", mode="intent", recipe=recipe, notes=notes, parallel=False)
    assert check(fast, PLANT).ok, check(fast, PLANT).reasons()
    assert check(slow, PLANT).ok
    assert makespan_s(fast) <= makespan_s(slow) + 1e-6

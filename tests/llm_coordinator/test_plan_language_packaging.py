"""The plan language on the second shipped plant (a packaging line, declared machine commands):
every order shape plans, passes the guardrails and rehearses in the real twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_coordinator import wiring
from llm_coordinator.expansion import Unplannable, expand_reading
from llm_coordinator.guardrails import check
from llm_coordinator.reading import parse_reading
from llm_coordinator.rehearsal import Rehearser
from plant import load_plant
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def line() -> PlantDescription:
    return load_plant(ROOT / "plants" / "packaging_line.yaml")


def task(skill: str, agent: str | None = None, **args: object) -> dict:  # type: ignore[type-arg]
    return {"kind": "task", "skill": skill, "agent": agent, "args": args}


SHAPES = {
    # A declared command with a quantity in another unit: 500 ml dosed as 0.5 l.
    "units": {"goals": [task("dose", "doser_1", volume="500 ml")]},
    # Stop and hold: the standard PackML commands every machine takes.
    "stop_hold": {"goals": [task("stop", "infeed_conveyor"), task("reset", "sealer_1")]},
    # Counted tasks for every agent that has the skill, in sequence.
    "counted_tasks": {"goals": [task("home", "every"), {**task("tare", "checkweigher_1"), "count": "two"}]},
    # Bounded repetition on a counter the palletiser keeps.
    "loop": {
        "goals": [
            {
                "kind": "repeat",
                "until": {"machine": "palletiser_1", "tag": "layer_count", "op": ">=", "value": "two"},
                "max_times": 4,
                "body": [task("stack_layer", "palletiser_1", pattern="column")],
            }
        ]
    },
    # A condition on the check-weigher's named result: stop the infeed if the container fails,
    # prime the doser for the next one otherwise; and with the Panda's recipes as the branches.
    "conditional": {
        "goals": [
            {"kind": "recipe", "recipe": "weigh_container"},
            {
                "kind": "if",
                "test": {"machine": "checkweigher_1", "tag": "result", "op": "==", "value": "fail"},
                "then": [task("stop", "infeed_conveyor")],
                "otherwise": [task("prime", "doser_1")],
            },
        ]
    },
    "conditional_arms": {
        "goals": [
            {"kind": "recipe", "recipe": "weigh_container"},
            {
                "kind": "if",
                "test": {"machine": "checkweigher_1", "tag": "result", "op": "==", "value": "fail"},
                "then": [{"kind": "recipe", "recipe": "reject_container"}],
                "otherwise": [{"kind": "recipe", "recipe": "pull_sample"}],
            },
        ]
    },
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_plans_and_passes_the_guardrails(line: PlantDescription, shape: str) -> None:
    plan = expand_reading(line, parse_reading(json.dumps(SHAPES[shape])), work_order=shape)
    verdict = check(plan, line)
    assert verdict.ok, verdict.reasons()
    if shape == "units":
        (dose,) = [s for s in plan.steps if s.skill == "dose"]
        assert dose.args == {"volume": 0.5} and any("500 ml = 0.5 l" in n for n in plan.notes)
    if shape == "loop":
        assert [d.kind for d in plan.decisions] == ["repetition"] * 4
    if shape.startswith("conditional"):
        assert plan.decisions[0].condition.label == "fail"


def test_out_of_range_and_unknown_units_are_refused_naming_the_limit(line: PlantDescription) -> None:
    for volume, why in (
        ("7 litres", "maximum 5 l"),
        ("50 ml", "minimum 0.1 l"),
        ("3 kg", "volume"),
        ("2 blorps", "blorps"),
    ):
        with pytest.raises(Unplannable, match=why):
            expand_reading(
                line, parse_reading(json.dumps({"goals": [task("dose", "doser_1", volume=volume)]})), work_order="x"
            )


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_every_shape_rehearses_in_the_twin(line: PlantDescription, shape: str, tmp_path: Path) -> None:
    plan = expand_reading(line, parse_reading(json.dumps(SHAPES[shape])), work_order=shape)
    report = await Rehearser(line, wiring.twin_factory(render=False)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    done = {s["step"] for s in report.steps if s["status"] == "done"}
    if shape == "loop":
        stacked = [s for s in report.steps if s["skill"] == "stack_layer"]
        assert [s["status"] for s in stacked] == ["done", "done", "skipped", "skipped"]
    if shape == "conditional":
        assert {s["variant"] for s in report.steps} != {"as the twin decided"}  # both branches ran
    assert done


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(load_plant(ROOT / "plants" / "packaging_line.yaml").recipes))
async def test_every_recipe_of_the_line_rehearses_in_the_twin(
    line: PlantDescription, recipe: str, tmp_path: Path
) -> None:
    """Each recipe once, from the line as its plant file starts it: the arms pick tall bottles off
    the belt, the nests and the scale pan, and set them down upright, without touching a machine."""
    plan = expand_reading(
        line, parse_reading(json.dumps({"goals": [{"kind": "recipe", "recipe": recipe}]})), work_order=recipe
    )
    report = await Rehearser(line, wiring.twin_factory(render=False)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    assert not report.observations.collisions and not report.observations.safety_stops
    assert all(s["status"] == "done" for s in report.steps)

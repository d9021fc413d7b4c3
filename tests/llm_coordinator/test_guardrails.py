"""Guardrails on hand-made plans: every rule can fail, with a reason a person understands."""

from __future__ import annotations

import pytest

from llm_coordinator.context import MachineSnapshot, PlantSnapshot
from llm_coordinator.guardrails import check, mark_hazards
from llm_coordinator.plan import Plan, RecipeIntent, Step
from llm_coordinator.planner import expand_recipe, finish_plan
from plant.config import PlantDescription


def recipe_plan(plant: PlantDescription, recipe: str = "machine_part", count: int = 1) -> Plan:
    protos, notes = expand_recipe(plant, RecipeIntent(goal="recipe", recipe=recipe, count=count))
    return finish_plan(plant, protos, work_order="test", mode="intent", recipe=recipe, notes=notes)


def plan_of(*steps: Step) -> Plan:
    return Plan(work_order="test", mode="direct", steps=list(steps))


def failed_rules(plan: Plan, plant: PlantDescription, snapshot: PlantSnapshot | None = None) -> set[str]:
    return {f.rule for f in check(plan, plant, snapshot).failures}


@pytest.mark.parametrize("recipe", ["machine_part", "inspect_part", "quarantine_part"])
@pytest.mark.parametrize("count", [1, 3])
def test_every_recipe_expands_to_an_accepted_plan(demo_plant: PlantDescription, recipe: str, count: int) -> None:
    plan = recipe_plan(demo_plant, recipe, count)
    verdict = check(plan, demo_plant)
    assert verdict.ok, verdict.reasons()
    assert len(plan.steps) == count * len(demo_plant.recipes[recipe].steps)


def test_names_that_do_not_exist_are_rejected(demo_plant: PlantDescription) -> None:
    plan = plan_of(
        Step(id="a", agent="kuka_1", skill="pick"),
        Step(id="b", agent="ur5e_1", skill="weld"),
        Step(id="c", agent="ur5e_1", skill="present", args={"machine": "insp_1"}),
        Step(id="d", agent="ur5e_1", skill="move_to", args={"location": "moon"}, after=["a", "zz"]),
    )
    verdict = check(plan, demo_plant)
    by_step = {(f.rule, f.step): f.reason for f in verdict.failures}
    assert "no agent named 'kuka_1'" in by_step[("agent_exists", "a")]
    assert "'weld' is not a skill" in by_step[("skill_allowed", "b")]
    assert "ur5e_1 may not perform present" in by_step[("skill_allowed", "c")]
    assert "not a location" in by_step[("args_valid", "d")]
    assert "do not exist: zz" in by_step[("plan_shape", "d")]


def test_arguments_out_of_range_and_cycles(demo_plant: PlantDescription) -> None:
    plan = plan_of(
        Step(id="a", agent="cnc_1", skill="run_cycle", args={"program": 123456}, after=["b"]),
        Step(id="b", agent="ur5e_1", skill="move_joints", args={"joints_rad": [0, 0, 9, 0, 0, 0]}, after=["a"]),
    )
    verdict = check(plan, demo_plant)
    reasons = " | ".join(verdict.reasons())
    assert "program=123456 is outside 0..9999" in reasons
    assert "outside the joint limits" in reasons
    assert "cycle" in reasons


def test_door_must_be_closed_before_start(demo_plant: PlantDescription) -> None:
    plan = recipe_plan(demo_plant)
    steps = [s for s in plan.steps if s.id != "close_cnc"]
    steps = [s.model_copy(update={"after": ["clear_cnc"]}) if s.id == "machine" else s for s in steps]
    rules = failed_rules(Plan(work_order="t", mode="direct", steps=steps), demo_plant)
    assert "door_closed_before_start" in rules


def test_no_robot_inside_a_running_machine(demo_plant: PlantDescription) -> None:
    plan = recipe_plan(demo_plant)
    steps = [s for s in plan.steps if s.id != "clear_cnc"]
    steps = [s.model_copy(update={"after": ["load_cnc"]}) if s.id == "close_cnc" else s for s in steps]
    verdict = check(Plan(work_order="t", mode="direct", steps=steps), demo_plant)
    reasons = " | ".join(verdict.reasons())
    assert "ur5e_1 (still at cnc_1_fixture after step load_cnc)" in reasons


def test_reaching_into_a_closed_machine_and_parallel_steps(demo_plant: PlantDescription) -> None:
    plan = plan_of(
        Step(id="load", agent="ur5e_1", skill="place", args={"location": "cnc_1_fixture"}),
        Step(id="home", agent="ur5e_1", skill="home"),
    )
    rules = failed_rules(plan, demo_plant, PlantSnapshot(machines={"cnc_1": MachineSnapshot("IDLE", door_closed=True)}))
    assert {"door_open_for_reach", "resource"} <= rules


def test_reach_and_zones(demo_plant: PlantDescription) -> None:
    plan = plan_of(Step(id="far", agent="ur5e_1", skill="move_to", args={"location": "output_bin"}))
    verdict = check(plan, demo_plant)
    assert any(f.rule == "reach" and "reach is 0.85 m" in f.reason for f in verdict.failures)


def test_a_faulted_machine_must_be_reset_first(demo_plant: PlantDescription) -> None:
    plan = recipe_plan(demo_plant)
    snap = PlantSnapshot(machines={"cnc_1": MachineSnapshot("ABORTED", door_closed=True, fault_code=42)})
    assert "machine_ready" in failed_rules(plan, demo_plant, snap)


def test_hazard_flags_cannot_be_dropped(demo_plant: PlantDescription) -> None:
    plan = plan_of(
        Step(id="j", agent="ur5e_1", skill="move_joints", args={"joints_rad": [0, -1.5, 1.5, -1.5, -1.5, 0]})
    )
    verdict = check(plan, demo_plant)
    assert [f.rule for f in verdict.failures] == ["hazard"]
    flagged = mark_hazards(plan, demo_plant)
    assert flagged.steps[0].hazardous and check(flagged, demo_plant).ok


def test_a_location_near_a_hazard_zone_needs_an_operator(demo_plant: PlantDescription) -> None:
    data = demo_plant.model_dump()
    data["stations"]["infeed"]["locations"]["drum_side"] = {"pose": {"xyz_m": (1.1, 3.0, 0.9)}}
    data["robots"]["ur5e_1"]["base"]["xyz_m"] = (1.6, 2.6, 0.8)
    plant = PlantDescription.model_validate(data)
    plan = mark_hazards(plan_of(Step(id="m", agent="ur5e_1", skill="move_to", args={"location": "drum_side"})), plant)
    verdict = check(plan, plant)
    assert plan.steps[0].hazardous
    assert "solvent_drum (flammable_liquid)" in verdict.hazards["m"]


def test_a_location_next_to_a_walkway_needs_an_operator(demo_plant: PlantDescription) -> None:
    data = demo_plant.model_dump()
    walkway = data["zones"]["walkway_east"]["shape"]
    edge_x = walkway["center_m"][0] - walkway["size_m"][0] / 2
    data["stations"]["outfeed"]["locations"] = {"by_the_walkway": {"pose": {"xyz_m": (edge_x - 0.3, 1.9, 0.9)}}}
    data["stations"]["outfeed"]["locations"]["far_from_it"] = {"pose": {"xyz_m": (edge_x - 0.7, 1.9, 0.9)}}
    data["robots"]["panda_1"]["base"]["xyz_m"] = (edge_x - 0.95, 1.9, 0.8)  # both within its reach
    plant = PlantDescription.model_validate(data)
    plan = plan_of(
        Step(id="near", agent="panda_1", skill="move_to", args={"location": "by_the_walkway"}),
        Step(id="far", agent="panda_1", skill="move_to", args={"location": "far_from_it"}, after=["near"]),
    )
    verdict = check(plan, plant)
    assert [(f.rule, f.step) for f in verdict.failures] == [("hazard", "near")]
    assert "0.30 m from walkway walkway_east, where people walk" in verdict.hazards["near"]
    flagged = mark_hazards(plan, plant)
    assert flagged.step("near").hazardous and not flagged.step("far").hazardous
    assert check(flagged, plant).ok

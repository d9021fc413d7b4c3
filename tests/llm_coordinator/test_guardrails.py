"""Guardrails on hand-made plans: every rule can fail, with a reason a person understands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.guardrails import Finding, check, mark_hazards
from llm_coordinator.plan import Plan, RecipeIntent, Step
from llm_coordinator.snapshot import MachineSnapshot, PlantSnapshot
from plant.config import PlantDescription
from plant.safety_model import TOOL_RADIUS_M, SsmConfig, robot_separation, walkway_clearance
from robots.interface import FloatArray
from robots.safety import SafetySupervisor, safety_config_from_plant


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
    assert "ur5e_1 may not perform weld" in by_step[("skill_allowed", "b")]
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


def with_location(plant: PlantDescription, xyz: tuple[float, float, float], zones: dict[str, Any] | None = None) -> Any:
    """``plant`` with a location ``spot`` at ``xyz`` (and ``zones`` changed), validated."""
    data = plant.model_dump()
    data["stations"]["outfeed"]["locations"] = {"spot": {"pose": {"xyz_m": xyz}}}
    for name, update in (zones or {}).items():
        data["zones"][name].update(update)
    return PlantDescription.model_validate(data)


def zones_finding(plant: PlantDescription, robot: str = "panda_1") -> Finding:
    verdict = check(plan_of(Step(id="go", agent=robot, skill="move_to", args={"location": "spot"})), plant)
    return next(f for f in verdict.findings if f.rule == "zones")


def test_a_target_where_the_supervisor_would_stop_the_robot_is_rejected(demo_plant: PlantDescription) -> None:
    """Near a walkway the guardrails reject a target exactly where the plant's safety model says
    the robot's supervisor would stop it for a person walking on the walkway's edge, with the
    distance, the ISO/TS 15066 figure and the zone; farther away the robot only slows. No
    operator's confirmation makes the first acceptable, and the second needs none."""
    walkway = demo_plant.zones["walkway_east"]
    edge_x = walkway.shape.center_m[0] - walkway.shape.size_m[0] / 2  # type: ignore[union-attr]
    need = walkway_clearance(demo_plant.robots["panda_1"], 1.0).needed_m
    near = with_location(demo_plant, (edge_x - need + 0.02, 1.9, 0.9))
    plan = mark_hazards(plan_of(Step(id="go", agent="panda_1", skill="move_to", args={"location": "spot"})), near)
    verdict = check(plan, near)
    assert [(f.rule, f.step) for f in verdict.failures] == [("zones", "go")]
    assert not plan.steps[0].hazardous
    reason = verdict.failures[0].reason
    assert f"spot is {need - 0.02:.2f} m from walkway walkway_east" in reason
    assert f"Keep panda_1's targets {need:.2f} m from walkway_east" in reason
    slowest = robot_separation(demo_plant.robots["panda_1"], speed_scale=SsmConfig().min_speed_scale)
    assert f"S_p {slowest.distance_m:.2f} m = S_h" in reason and "robot 0.20 m/s" in reason
    far = with_location(demo_plant, (edge_x - need - 0.02, 1.9, 0.9))
    finding = zones_finding(far)
    assert finding.ok and "panda_1 slows while someone walks in walkway_east" in finding.reason
    assert check(plan_of(Step(id="go", agent="panda_1", skill="move_to", args={"location": "spot"})), far).ok


def test_zones_are_what_the_supervisor_keeps_out(demo_plant: PlantDescription) -> None:
    # Inside the walkway and the keep-out zone.
    assert "inside walkway zone walkway_east" in zones_finding(with_location(demo_plant, (5.5, 1.0, 0.9))).reason
    cabinet = zones_finding(with_location(demo_plant, (1.5, 3.36, 1.0)), "ur5e_1")
    assert "the tool (radius 0.06 m) inside keep-out zone electrical_cabinet (0.04 m from it)" in cabinet.reason
    # Into the solvent drum: the plant lets no robot in; a confirmation does not change that.
    drum = with_location(demo_plant, (0.6, 3.3, 0.9))
    f = zones_finding(drum, "ur5e_1")
    assert not f.ok and "flammable_liquid hazard the plant lets no robot into (permits: never)" in f.reason
    # A hazard zone that permits a robot in on a confirmation: the supervisor cannot know of one
    # yet and keeps it out, so the guardrails reject it too, and say why.
    hot = with_location(demo_plant, (0.6, 3.3, 0.9), {"solvent_drum": {"permits": "operator_confirmation"}})
    plan = mark_hazards(plan_of(Step(id="go", agent="ur5e_1", skill="move_to", args={"location": "spot"})), hot)
    assert plan.steps[0].hazardous
    f = next(f for f in check(plan, hot).failures if f.rule == "zones")
    assert "no confirmation reaches the robot yet" in f.reason
    # Above the drum's top the tool is clear of it; the step is still near a hazard: an operator.
    above = with_location(demo_plant, (0.6, 3.3, 1.2))
    assert zones_finding(above, "ur5e_1").ok
    go = plan_of(Step(id="go", agent="ur5e_1", skill="move_to", args={"location": "spot"}))
    assert "solvent_drum (flammable_liquid)" in check(go, above).hazards["go"]
    # Out of the geofence.
    low = zones_finding(with_location(demo_plant, (3.0, 1.0, 0.05)), "ur5e_1")
    assert not low.ok and "outside the cell's geofence" in low.reason


class _ToolPoint:
    """The tool alone, as the supervisor's point model: one point with the tool's radius."""

    radius_m = np.array([TOOL_RADIUS_M])

    def at(self, q: FloatArray) -> FloatArray:
        return np.asarray(q, dtype=float)[None, :3]


@settings(max_examples=150, deadline=None)
@given(st.floats(-0.2, 6.2), st.floats(-0.2, 4.2), st.floats(-0.1, 2.7))
def test_the_guardrails_refuse_a_target_exactly_when_the_supervisor_does(
    demo_plant: PlantDescription, x: float, y: float, z: float
) -> None:
    """The tool at a target: the zones rule says the supervisor refuses the motion exactly when
    the supervisor's own geofence and keep-out check of the tool's point refuses it."""
    plant = with_location(demo_plant, (x, y, z))
    finding = zones_finding(plant, "ur5e_1")
    sup = SafetySupervisor(safety_config_from_plant(plant, "ur5e_1"), _ToolPoint())
    refused = sup._violation(np.array([[x, y, z]])) is not None
    assert ("the robot's supervisor refuses the motion" in finding.reason) == refused, finding.reason


@pytest.mark.slow
async def test_what_the_guardrails_accept_people_walking_anywhere_do_not_stop(
    demo_plant: PlantDescription, tmp_path: Path
) -> None:
    """The rule against the twin: a person pacing on the walkway's edge (the nearest the model
    lets people come) in front of the Panda's work does not stop the demo cell's main recipe,
    which the guardrails accept; with the walkway drawn 0.2 m nearer, the guardrails reject the
    sort into the output bin, and the same person stops the Panda in the rehearsal."""
    from llm_coordinator import wiring
    from llm_coordinator.rehearsal import Rehearser

    async def rehearse(shift_m: float) -> tuple[list[str], list[str]]:
        data = demo_plant.model_dump()
        shape = data["zones"]["walkway_east"]["shape"]
        shape["center_m"] = (shape["center_m"][0] - shift_m, *shape["center_m"][1:])
        edge_x = shape["center_m"][0] - shape["size_m"][0] / 2
        path = [(edge_x, 1.2), (edge_x, 2.0)]  # along the output bin, the inspection and the hand-over
        data["people"]["walker_1"].update(path_m=path, speed_m_s=1.6, start_delay_s=0.0)
        plant = PlantDescription.model_validate(data)
        plan = recipe_plan(plant)
        rejected = [str(f) for f in check(plan, plant).failures]
        report = await Rehearser(plant, wiring.twin_factory(render=False)).rehearse(plan, tmp_path / str(shift_m))
        return rejected, list(report.observations.safety_stops)

    rejected, stops = await rehearse(0.0)
    assert rejected == [] and stops == []
    rejected, stops = await rehearse(0.2)
    assert len(rejected) == 1 and "[zones] step sort: output_bin" in rejected[0]
    assert stops and "panda_1: protective_stop" in stops[0]


def test_no_step_uses_a_machine_in_alarm(demo_plant: PlantDescription) -> None:
    from llm_coordinator.snapshot import MachineSnapshot, PlantSnapshot

    m = next(iter(demo_plant.machines))
    plan = Plan(work_order="reset it", mode="direct", steps=[Step(id="r", agent=m, skill="reset")])
    reason = "speed reads 65.5 m/s (raw 65535), outside its declared range 0..0.5 m/s"
    snap = PlantSnapshot(machines={m: MachineSnapshot(state="IDLE", alarms=(reason,))})
    verdict = check(plan, demo_plant, snap)
    bad = [f for f in verdict.findings if f.rule == "machine_alarm" and not f.ok]
    assert bad and reason in bad[0].reason and not verdict.ok
    assert not [f for f in check(plan, demo_plant, PlantSnapshot()).findings if f.rule == "machine_alarm"]

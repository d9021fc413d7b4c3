"""The plan language: compound orders, conditions, bounded repetition and quantities with units,
expanded against the plant, checked by the guardrails, and run by the executor in the real twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_coordinator import wiring
from llm_coordinator.executor import MemoryProgress, PlanRunner
from llm_coordinator.expansion import Unclear, Unplannable, expand_reading, plan_recipe
from llm_coordinator.guardrails import check
from llm_coordinator.plan import Plan, RecipeIntent
from llm_coordinator.reading import Reading, parse_reading, reading_schema
from llm_coordinator.rehearsal import Rehearser
from plant.config import PlantDescription


def reading(data: dict) -> Reading:  # type: ignore[type-arg]
    return parse_reading(json.dumps(data))


def task(skill: str, agent: str | None = None, **args: object) -> dict:  # type: ignore[type-arg]
    return {"kind": "task", "skill": skill, "agent": agent, "args": args}


def test_a_compound_order_is_one_plan(demo_plant: PlantDescription) -> None:
    r = reading({"goals": [{"kind": "recipe", "recipe": "machine_part", "count": "two"}, task("home", "every")]})
    plan = expand_reading(demo_plant, r, work_order="machine two blanks, then home every robot")
    assert check(plan, demo_plant).ok, check(plan, demo_plant).reasons()
    assert sum(s.skill == "run_cycle" for s in plan.steps) == 2
    homes = [s for s in plan.steps if s.skill == "home" and s.note.startswith("task")]
    assert sorted(s.agent for s in homes) == ["panda_1", "ur5e_1"]
    starts = plan.planned_starts()
    last_recipe_end = max(starts[s.id] + s.expected_duration_s for s in plan.steps if "recipe" in s.note)
    assert all(starts[h.id] >= last_recipe_end - 1e-6 for h in homes)  # in sequence: after the recipe
    assert plan.goals == ["recipe machine_part x2", "every home"]


def test_a_condition_becomes_a_decision_with_both_branches_checked(demo_plant: PlantDescription) -> None:
    r = reading(
        {
            "goals": [
                task("run_cycle", "cnc_1", program=3),
                {
                    "kind": "if",
                    "test": {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": 1},
                    "then": [task("open_door", "cnc_1")],
                    "otherwise": [task("reset", "cnc_1")],
                },
            ]
        }
    )
    plan = expand_reading(demo_plant, r, work_order="run program 3, open the door if a cycle was counted, else reset")
    verdict = check(plan, demo_plant)
    assert verdict.ok, verdict.reasons()
    (d,) = plan.decisions
    assert d.condition.describe() == "cnc_1.cycle_count >= 1"
    then = [s for s in plan.steps if s.when == {d.id: True}]
    other = [s for s in plan.steps if s.when == {d.id: False}]
    assert [s.skill for s in then] == ["open_door"] and [s.skill for s in other] == ["reset"]
    assert all(set(d.after) <= plan.planned_starts().keys() for _ in then)
    # A plan whose branch may start before the step its decision reads after is refused.
    bad = plan.model_copy(update={"steps": [s.model_copy(update={"after": []}) for s in plan.steps]})
    assert any("decision" in r for r in check(bad, demo_plant).reasons())


def test_a_bounded_repetition_is_unrolled_and_chained(demo_plant: PlantDescription) -> None:
    r = reading(
        {
            "goals": [
                {
                    "kind": "repeat",
                    "until": {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": "2"},
                    "max_times": 4,
                    "body": [task("run_cycle", "cnc_1", program=1)],
                }
            ]
        }
    )
    plan = expand_reading(demo_plant, r, work_order="run the CNC until its cycle count reaches 2, at most 4 times")
    assert check(plan, demo_plant).ok
    assert [d.kind for d in plan.decisions] == ["repetition"] * 4
    assert all(d.condition.op == "<" for d in plan.decisions)  # runs while the count is below 2
    assert plan.decisions[1].requires == {plan.decisions[0].id: True}
    assert sum(s.skill == "run_cycle" for s in plan.steps) == 4


def test_quantities_are_read_with_units_and_checked_against_ranges(demo_plant: PlantDescription) -> None:
    ok = expand_reading(demo_plant, reading({"goals": [task("run_cycle", "cnc_1", program="twelve")]}), work_order="x")
    assert [s.args for s in ok.steps if s.skill == "run_cycle"] == [{"program": 12}]
    with pytest.raises(Unplannable, match="above the maximum 9999"):
        expand_reading(demo_plant, reading({"goals": [task("run_cycle", "cnc_1", program=12000)]}), work_order="x")
    with pytest.raises(Unplannable, match="blorps"):
        expand_reading(demo_plant, reading({"goals": [task("run_cycle", "cnc_1", program="5 blorps")]}), work_order="x")
    with pytest.raises(Unplannable, match="count"):
        expand_reading(
            demo_plant,
            reading({"goals": [{"kind": "recipe", "recipe": "machine_part", "count": "lots"}]}),
            work_order="x",
        )
    with pytest.raises(Unplannable, match="more than one work order"):
        expand_reading(
            demo_plant,
            reading({"goals": [{"kind": "recipe", "recipe": "machine_part", "count": "100"}]}),
            work_order="x",
        )


def test_bad_readings_are_refused_or_questioned(demo_plant: PlantDescription) -> None:
    with pytest.raises(Unplannable, match="panda_1 cannot"):
        expand_reading(demo_plant, reading({"goals": [task("hand_over", "panda_1")]}), work_order="x")
    with pytest.raises(Unplannable, match="no tag"):
        test = {"machine": "cnc_1", "tag": "colour", "op": "==", "value": 1}
        expand_reading(
            demo_plant,
            reading({"goals": [{"kind": "if", "test": test, "then": [task("home", "ur5e_1")]}]}),
            work_order="x",
        )
    with pytest.raises(Unclear, match="which location"):
        expand_reading(demo_plant, reading({"goals": [task("move_to", "ur5e_1")]}), work_order="move the arm")
    with pytest.raises(ValueError, match="goals"):
        parse_reading('{"outcome": "plan", "goals": [{"kind": "fly"}]}')


def test_the_schema_is_made_from_the_plant(demo_plant: PlantDescription) -> None:
    schema = json.dumps(reading_schema(demo_plant))
    for name in ("machine_part", "cnc_1", "panda_1", "cycle_count", '"every"'):
        assert name in schema


def test_old_plans_keep_their_hash(demo_plant: PlantDescription) -> None:
    plan = plan_recipe(demo_plant, RecipeIntent(goal="recipe", recipe="machine_part"), work_order="machine a part")
    data = plan.model_dump(mode="json")
    for step in data["steps"]:
        del step["when"]
    del data["decisions"], data["goals"]
    import hashlib

    legacy = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert plan.content_hash() == legacy
    assert Plan.model_validate(data).content_hash() == legacy


@pytest.mark.slow
async def test_conditions_and_repetitions_run_in_the_twin(demo_plant: PlantDescription, tmp_path: Path) -> None:
    """In the real twin: the repetition runs the CNC until its count reaches 2 and skips the rest;
    the condition reads the count when the plan runs and takes one branch; the rehearsal then
    runs the other branch too, forced, in a fresh twin."""
    r = reading(
        {
            "goals": [
                {
                    "kind": "repeat",
                    "until": {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": 2},
                    "max_times": 3,
                    "body": [task("run_cycle", "cnc_1", program=1)],
                },
                {
                    "kind": "if",
                    "test": {"machine": "cnc_1", "tag": "cycle_count", "op": "==", "value": 2},
                    "then": [task("open_door", "cnc_1")],
                    "otherwise": [task("reset", "cnc_1")],
                },
            ]
        }
    )
    plan = expand_reading(demo_plant, r, work_order="cycle the cnc twice, then open it")
    assert check(plan, demo_plant).ok
    async with wiring.twin_factory(render=False)(demo_plant) as session:
        runner = PlanRunner(demo_plant, session.machines, session.robots, clock=session.time_s)
        progress = MemoryProgress()
        report = await runner.execute(plan, progress)
    assert report.status == "done", report.reason
    cycles = [x for x in report.records if x.skill == "run_cycle"]
    assert [x.status for x in cycles] == ["done", "done", "skipped"]
    assert {x.skill: x.status for x in report.records if x.skill in ("open_door", "reset")} == {
        "open_door": "done",
        "reset": "skipped",
    }
    assert sum(report.decisions.values()) == 3  # two repetitions and the condition held
    # A resumed run takes no decision again: they are in the progress.
    assert {k for k in progress.load() if k.startswith("decision:")} == {f"decision:{d}" for d in report.decisions}
    rehearsal = await Rehearser(demo_plant, wiring.twin_factory(render=False)).rehearse(plan, tmp_path)
    assert rehearsal.ok, rehearsal.reason
    variants = {s["variant"] for s in rehearsal.steps}
    assert len(variants) == 2 and any("forced false" in v for v in variants)
    forced = [s for s in rehearsal.steps if "forced" in s["variant"]]
    assert [s["status"] for s in forced if s["skill"] in ("open_door", "reset")] == ["skipped", "done"]


@pytest.mark.slow
async def test_the_demo_compound_order_rehearses_both_branches(demo_plant: PlantDescription, tmp_path: Path) -> None:
    """The shipped example (machine, inspect, sort by the result, home every robot): the twin's
    inspection passes, so the part goes to the output bin; forced to fail, to the quarantine
    bin. Both runs in the real twin, with the robots' supervisors, touching nothing."""
    import yaml

    data = yaml.safe_load((Path(__file__).parents[2] / "plants/examples/machine_inspect_sort.yaml").read_text())
    plan = expand_reading(demo_plant, Reading.model_validate(data), work_order="machine, inspect, sort, home")
    assert check(plan, demo_plant).ok, check(plan, demo_plant).reasons()
    (d,) = plan.decisions
    assert d.condition.label == "fail" and d.condition.value == 2
    report = await Rehearser(demo_plant, wiring.twin_factory(render=False)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    placed = {
        (s["variant"], s["step"]): s["status"]
        for s in report.steps
        if s["skill"] == "place" and s["step"].startswith("g2_")
    }
    natural = {step: status for (variant, step), status in placed.items() if "forced" not in variant}
    forced = {step: status for (variant, step), status in placed.items() if "forced" in variant}
    assert sorted(natural.values()) == ["done", "skipped"] and sorted(forced.values()) == ["done", "skipped"]
    assert natural != forced  # the other bin each time
    assert report.observations.collisions == [] and report.observations.safety_stops == []


def test_a_task_any_of_several_agents_could_do_asks_which(demo_plant: PlantDescription) -> None:
    with pytest.raises(Unclear, match=r"which of (ur5e_1, panda_1|panda_1, ur5e_1) should home"):
        expand_reading(demo_plant, reading({"goals": [task("home")]}), work_order="home the robot")
    # A place decides by reach: only the UR5e reaches the conveyor's pick point.
    plan = expand_reading(
        demo_plant, reading({"goals": [task("move_to", location="conveyor_pick")]}), work_order="go to the belt"
    )
    assert [s.agent for s in plan.steps] == ["ur5e_1"]


def test_opposite_branches_share_their_time(demo_plant: PlantDescription) -> None:
    """Only one branch of a condition runs: its steps may use the same robot at the same time,
    the plan's timing counts one branch, and the steps after wait for both."""
    import yaml

    data = yaml.safe_load((Path(__file__).parents[2] / "plants/examples/machine_inspect_sort.yaml").read_text())
    plan = expand_reading(demo_plant, Reading.model_validate(data), work_order="machine, inspect, sort, home")
    assert check(plan, demo_plant).ok, check(plan, demo_plant).reasons()
    then = plan.step("g2_then_place_panda_1")
    other = plan.step("g2_else_place_panda_1")
    assert then.id not in other.after and other.id not in then.after
    starts = plan.planned_starts()
    assert starts[then.id] == starts[other.id]
    homes = [s for s in plan.steps if s.id.startswith("g3_home")]
    branch_end = starts[then.id] + then.expected_duration_s
    assert all(starts[h.id] >= branch_end for h in homes)


def test_conditions_that_can_never_hold_are_refused(demo_plant: PlantDescription) -> None:
    def cond(value: object, op: str = "==") -> Reading:
        test = {"machine": "insp_1", "tag": "result", "op": op, "value": value}
        return reading({"goals": [{"kind": "if", "test": test, "then": [task("home", "panda_1")]}]})

    with pytest.raises(Unplannable, match="named values: none, pass, fail"):
        expand_reading(demo_plant, cond("maybe"), work_order="x")
    with pytest.raises(Unplannable, match="never holds 7"):
        expand_reading(demo_plant, cond(7), work_order="x")
    with pytest.raises(ValueError, match="max_times"):
        parse_reading(
            json.dumps(
                {
                    "goals": [
                        {
                            "kind": "repeat",
                            "until": {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": 1},
                            "max_times": 0,
                            "body": [task("home", "ur5e_1")],
                        }
                    ]
                }
            )
        )
    assert check(expand_reading(demo_plant, cond("fail"), work_order="x"), demo_plant).ok

"""Plan models and the schemas generated from the plant."""

from __future__ import annotations

import json

from llm_coordinator.plan import Plan, Step, plan_schema
from plant.config import PlantDescription


def test_plan_schema_encodes_each_agents_skills(demo_plant: PlantDescription) -> None:
    variants = plan_schema(demo_plant)["properties"]["steps"]["items"]["anyOf"]
    pairs = {(v["properties"]["agent"]["const"], v["properties"]["skill"]["const"]) for v in variants}
    assert ("ur5e_1", "hand_over") in pairs and ("panda_1", "hand_over") not in pairs
    assert ("cnc_1", "open_door") in pairs and ("conveyor_1", "open_door") not in pairs
    place = next(v for v in variants if v["properties"]["skill"]["const"] == "place")
    assert set(place["properties"]["args"]["properties"]["location"]["enum"]) == set(demo_plant.locations())
    dof = {
        v["properties"]["agent"]["const"]: v["properties"]["args"]["properties"]["joints_rad"]["minItems"]
        for v in variants
        if v["properties"]["skill"]["const"] == "move_joints"
    }
    assert dof == {"ur5e_1": 6, "panda_1": 7}


def test_any_change_changes_the_hash() -> None:
    plan = Plan(work_order="w", mode="intent", steps=[Step(id="a", agent="ur5e_1", skill="home")])
    same = Plan.model_validate(json.loads(plan.model_dump_json()))
    assert same.content_hash() == plan.content_hash()
    for change in ({"work_order": "w2"}, {"steps": [Step(id="a", agent="ur5e_1", skill="home", hazardous=True)]}):
        assert plan.model_copy(update=change).content_hash() != plan.content_hash()


def test_earliest_starts_wait_for_dependencies_and_for_the_agent() -> None:
    from llm_coordinator.plan import earliest_starts

    ids = ["a", "b", "c", "d"]
    after = {"c": ["a"], "d": ["zz"]}
    dur = {"a": 2.0, "b": 3.0, "c": 1.0, "d": 1.0}
    assert earliest_starts(ids, after, dur) == {"a": 0.0, "b": 0.0, "c": 2.0}
    # b and c share an agent: c also waits for b, listed before it.
    assert earliest_starts(ids, after, dur, {"a": "r1", "b": "r2", "c": "r2", "d": "r3"}) == {
        "a": 0.0,
        "b": 0.0,
        "c": 3.0,
    }

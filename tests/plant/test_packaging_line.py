"""The second shipped plant (plants/packaging_line.yaml) and the benchmark's work orders
(bench/orders/*.yaml): the plant loads, its recipes name only its own items, its twin builds and
runs, every robot target of its recipes lies within reach, and every expected step of every work
order names an agent, a skill and arguments that its plant has.

Nothing here names an item of either plant: every name comes from the files themselves."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_coordinator._geometry import reach_distance_m, step_location
from plant import load_plant
from plant.config import PlantDescription, Recipe

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "plants" / "packaging_line.yaml"
ORDERS = ROOT / "bench" / "orders"
ORDER_FILES = sorted(ORDERS.glob("*.yaml"))
#: The demo cell's earlier benchmark: its orders were tuned on, so they are dev orders.
LEGACY_ORDERS = ROOT / "bench" / "work_orders.yaml"

SHAPES = {
    "recipe",
    "counted_tasks",
    "compound",
    "conditional",
    "loop",
    "units",
    "stop_hold",
    "impossible",
    "unsafe",
    "ambiguous",
    "paraphrase",
}
SPLITS = {"dev", "test"}
EXPECTS = {"plan", "refused", "clarify"}
ORDER_KEYS = {"id", "split", "shape", "order", "expect", "steps", "conditional", "loop", "forbid", "reason"}
MATCHER_KEYS = {"agent", "skill", "args", "count"}


@pytest.fixture(scope="module")
def line() -> PlantDescription:
    return load_plant(PLANT)


def _param_ref(value: object) -> str | None:
    if isinstance(value, str) and len(value) > 2 and value.startswith("{") and value.endswith("}"):
        return value[1:-1]
    return None


def _value_problem(plant: PlantDescription, spec: Any, value: object) -> str | None:
    """Why ``value`` is not a value of an argument ``spec`` in ``plant`` (names, range, choices)."""
    names = plant.names_of(spec.type)
    if names is not None:
        return None if value in names else f"no {spec.type} named {value!r}"
    if spec.type == "str":
        choices = getattr(spec, "choices", None) or ()
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"
    if spec.type in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{value!r} is not a number"
        if spec.min is not None and value < spec.min:
            return f"{value} is below {spec.min}"
        if spec.max is not None and value > spec.max:
            return f"{value} is above {spec.max}"
    return None


def _default_params(recipe: Recipe) -> dict[str, object]:
    return {n: p.default for n, p in recipe.params.items() if p.default is not None}


# --------------------------------------------------------------------------- the plant


def test_the_line_loads_and_has_what_a_second_plant_should(line: PlantDescription) -> None:
    assert line.name == PLANT.stem
    assert len(line.robots) >= 2
    assert {z.kind for z in line.zones.values()} >= {"walkway", "hazard", "keep_out"}
    assert {b.role for b in line.bins().values()} >= {"output", "quarantine"}
    assert line.people and line.parts and line.recipes
    # Machines describe themselves: commands declared in the file, a result with named values.
    assert any(m.commands for m in line.machines.values())
    assert any(t.values for m in line.machines.values() for t in m.tags.values())
    declared_args = [a for m in line.machines.values() for c in m.commands.values() for a in c.args.values()]
    assert any(a.unit and a.min is not None and a.max is not None for a in declared_args)


def test_the_line_shares_no_endpoint_with_the_demo_cell(line: PlantDescription, demo_plant: PlantDescription) -> None:
    ours = [m.endpoint for m in line.machines.values()]
    assert len(set(ours)) == len(ours)
    assert not set(ours) & {m.endpoint for m in demo_plant.machines.values()}
    assert all("127.0.0.1" in e for e in ours)


def test_every_recipe_names_only_its_own_plant_and_parameters(line: PlantDescription) -> None:
    agents = line.agents()
    for rname, recipe in line.recipes.items():
        used: set[str] = set()
        for step in recipe.steps:
            where = f"recipe {rname}, step {step.id}"
            ref = _param_ref(step.agent)
            if ref is not None:
                assert ref in recipe.params, f"{where}: agent {{{ref}}} is no parameter"
                used.add(ref)
                continue
            assert step.agent in agents, f"{where}: no agent {step.agent!r}"
            assert step.skill in line.agent_skills(step.agent), f"{where}: {step.agent} cannot {step.skill}"
            spec = line.skill_spec(step.agent, step.skill)
            for arg, value in step.args.items():
                assert arg in spec.args, f"{where}: {step.skill} takes no argument {arg!r}"
                ref = _param_ref(value)
                if ref is not None:
                    assert ref in recipe.params, f"{where}: {{{ref}}} is no parameter of {rname}"
                    used.add(ref)
                    continue
                assert _value_problem(line, spec.args[arg], value) is None, f"{where}: {arg}={value!r}"
            missing = [a for a, s in spec.args.items() if s.required and a not in step.args]
            assert not missing, f"{where}: {step.skill} needs {missing}"
        assert used == set(recipe.params), f"recipe {rname}: parameters never used: {set(recipe.params) - used}"
        for pname, p in recipe.params.items():
            names = line.names_of(p.type)
            if names is not None and p.default is not None:
                assert p.default in names, f"recipe {rname}: default {p.default!r} of {pname} is no {p.type}"
            if isinstance(p.default, int | float) and not isinstance(p.default, bool):
                assert p.min is None or p.default >= p.min
                assert p.max is None or p.default <= p.max
            if p.choices is not None:
                assert p.default is None or p.default in p.choices


def test_every_recipe_parameter_fits_the_command_it_feeds(line: PlantDescription) -> None:
    """A recipe's range for a parameter lies inside the range of every machine argument it fills."""
    for rname, recipe in line.recipes.items():
        for step in recipe.steps:
            if step.agent not in line.machines:
                continue
            spec = line.skill_spec(step.agent, step.skill)
            for arg, value in step.args.items():
                ref = _param_ref(value)
                if ref is None:
                    continue
                p, a = recipe.params[ref], spec.args[arg]
                if a.min is not None:
                    assert p.min is not None and p.min >= a.min, f"recipe {rname}: {ref} may go below {a.min}"
                if a.max is not None:
                    assert p.max is not None and p.max <= a.max, f"recipe {rname}: {ref} may exceed {a.max}"
                if getattr(a, "choices", None):
                    assert p.choices is not None and set(p.choices) <= set(a.choices)


def test_every_robot_target_of_every_recipe_is_within_reach(line: PlantDescription) -> None:
    checked = 0
    for rname, recipe in line.recipes.items():
        params = _default_params(recipe)
        for step in recipe.steps:
            agent = params.get(_param_ref(step.agent) or "", step.agent)
            if agent not in line.robots:
                continue
            args = {a: params.get(_param_ref(v) or "", v) for a, v in step.args.items()}
            loc = step_location(line, step.skill, args)
            if loc is None:
                continue
            dist, reach = reach_distance_m(line, str(agent), loc)
            assert dist <= reach, f"recipe {rname}, step {step.id}: {loc} is {dist:.2f} m from {agent}, reach {reach}"
            checked += 1
    assert checked > 0


def test_from_home_every_arm_faces_each_recipe_target_it_moves_to(line: PlantDescription) -> None:
    """A target more than a quarter turn round the base from where the tool points at home is
    reached with the arm turned to face it, not by reaching back over the arm's own base (a move
    there swept the arm through the machine beside it)."""
    import numpy as np

    from robots.interface import SkillGoal
    from robots.skills import SkillContext, SkillPlanner
    from sim.hardware import arm_kinematics, compile_model

    model = compile_model(line)
    checked = 0
    for robot in line.robots:
        planner = SkillPlanner(line, robot, arm_kinematics(model, line, robot))
        base = np.asarray(line.robots[robot].base.xyz_m)
        for rname, recipe in line.recipes.items():
            params = _default_params(recipe)
            for step in recipe.steps:
                if params.get(_param_ref(step.agent) or "", step.agent) != robot:
                    continue
                loc = step_location(
                    line, step.skill, {a: params.get(_param_ref(v) or "", v) for a, v in step.args.items()}
                )
                if loc is None or loc not in line.locations():
                    continue
                (move,) = planner.plan(
                    SkillGoal("t", robot, "move_to", {"location": loc}), SkillContext(planner.home)
                ).steps
                front = planner.home.copy()
                front[0] = move.target_rad[0]
                tool, _ = planner.kin.fk(front)
                target = np.asarray(line.locations()[loc].xyz_m)
                off = math.atan2(*(tool - base)[1::-1]) - math.atan2(*(target - base)[1::-1])
                off = (off + math.pi) % (2 * math.pi) - math.pi
                assert abs(off) < math.pi / 2, f"recipe {rname}, step {step.id}: {robot} reaches {loc} facing away"
                checked += 1
    assert checked > 0


def test_a_gripper_too_narrow_for_a_part_is_refused_by_name(line: PlantDescription) -> None:
    """A part that leaves the open fingers less than a centimetre each side is not picked: the
    fingers would land on it."""
    from robots.interface import SkillGoal
    from robots.skills import SkillContext, SkillError, SkillPlanner
    from sim.hardware import arm_kinematics, compile_model

    part_type, pt = min(line.part_types.items(), key=lambda kv: -min(kv[1].size_m[:2]))
    robot = next(r for r, spec in line.robots.items() if "pick" in spec.allowed_skills())
    spec = line.robots[robot]
    hand = spec.model_copy(update={"tool": spec.tool.model_copy(update={"model": "panda_hand"})})  # opens 0.08 m
    narrow = line.model_copy(update={"robots": {**line.robots, robot: hand}})
    assert min(pt.size_m[:2]) + 0.02 > 0.08, "the test wants a part wider than 6 cm"
    planner = SkillPlanner(narrow, robot, arm_kinematics(compile_model(narrow), narrow, robot))
    loc = next(iter(narrow.locations()))
    with pytest.raises(SkillError, match=rf"a {part_type} is .* m across and the panda_hand of {robot} opens 0.080 m"):
        planner.plan(
            SkillGoal("t", robot, "pick", {"part_type": part_type, "location": loc}), SkillContext(planner.home)
        )


def test_every_recipe_expands_into_a_plan_the_guardrails_accept(line: PlantDescription) -> None:
    expansion = pytest.importorskip("llm_coordinator.expansion")
    from llm_coordinator import guardrails  # (only with the expansion)
    from llm_coordinator.plan import RecipeIntent

    for rname in line.recipes:
        plan = expansion.plan_recipe(line, RecipeIntent(goal="recipe", recipe=rname), work_order=f"run {rname}")
        failed = [f"{f.rule} {f.step}: {f.reason}" for f in guardrails.check(plan, line).findings if not f.ok]
        assert not failed, f"recipe {rname}: {failed}"


def test_the_twin_builds_and_runs_a_second(line: PlantDescription) -> None:
    from sim.twin import Twin  # (MuJoCo only for this test)

    twin = Twin(line)
    start = twin.part_positions()
    twin.run(1.0)
    assert twin.time_s == pytest.approx(1.0, abs=0.01)
    assert set(twin.machines) == set(line.machines) or not twin.machines
    locations = line.locations()
    for name, (x, y, z) in twin.part_positions().items():
        # Every part still stands where the plant put it: on its location, upright, not pushed.
        x0, y0, _ = start[name]
        assert math.hypot(x - x0, y - y0) < 0.02, f"{name} moved from ({x0}, {y0}) to ({x}, {y})"
        part = line.parts[name]
        floor = locations[part.at].xyz_m[2]
        half = line.part_types[part.type].size_m[2] / 2
        assert floor - 0.1 < z - half < floor + 0.01, f"{name} is not standing at {part.at} (z {z:.3f})"
    assert set(twin.people_positions()) == set(line.people)


# --------------------------------------------------------------------------- the work orders


def _load_orders(path: Path) -> tuple[PlantDescription, list[dict[str, Any]]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) == {"plant", "orders"}, f"{path.name}: top-level keys {set(data)}"
    return load_plant(ROOT / data["plant"]), data["orders"]


def _check_matcher(plant: PlantDescription, m: dict[str, Any], where: str) -> None:
    assert set(m) <= MATCHER_KEYS and {"agent", "skill"} <= set(m), f"{where}: keys {set(m)}"
    agent, skill = m["agent"], m["skill"]
    assert agent in plant.agents(), f"{where}: {plant.name} has no agent {agent!r}"
    assert skill in plant.agent_skills(agent), f"{where}: {agent} has no skill {skill!r}"
    spec = plant.skill_spec(agent, skill)
    for arg, value in (m.get("args") or {}).items():
        assert arg in spec.args, f"{where}: {agent}.{skill} takes no argument {arg!r}"
        problem = _value_problem(plant, spec.args[arg], value)
        assert problem is None, f"{where}: {arg}: {problem}"
    count = m.get("count", 1)
    assert isinstance(count, int) and count >= 1, f"{where}: count {count!r}"


def test_there_are_order_files_for_both_shipped_plants() -> None:
    plants = {yaml.safe_load(p.read_text(encoding="utf-8"))["plant"] for p in ORDER_FILES}
    assert plants >= {"plants/demo_cell.yaml", f"plants/{PLANT.name}"}


@pytest.mark.parametrize("path", ORDER_FILES, ids=lambda p: p.stem)
def test_orders_name_only_what_their_plant_has(path: Path) -> None:
    plant, orders = _load_orders(path)
    assert len(orders) >= 26
    for o in orders:
        where = f"{path.name} {o.get('id')}"
        assert set(o) <= ORDER_KEYS and {"id", "split", "shape", "order", "expect"} <= set(o), where
        assert o["split"] in SPLITS, where
        assert o["shape"] in SHAPES, where
        assert o["expect"] in EXPECTS, where
        assert isinstance(o["order"], str) and o["order"].strip(), where
        steps, forbid = o.get("steps") or [], o.get("forbid") or []
        if o["expect"] == "plan":
            assert steps, f"{where}: a plan order says which steps the plan must contain"
            assert not o.get("reason"), f"{where}: a plan has no reason"
        else:
            assert not steps and not o.get("conditional") and not o.get("loop"), where
        for k, m in enumerate(steps):
            _check_matcher(plant, m, f"{where} steps[{k}]")
        for k, m in enumerate(forbid):
            _check_matcher(plant, m, f"{where} forbid[{k}]")
        for key in ("conditional", "loop"):
            assert isinstance(o.get(key, False), bool), where
        assert all(isinstance(r, str) and r for r in o.get("reason") or []), where


def test_order_ids_are_unique_across_files() -> None:
    ids = [o["id"] for p in ORDER_FILES for o in _load_orders(p)[1]]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes


@pytest.mark.parametrize("path", ORDER_FILES, ids=lambda p: p.stem)
def test_both_splits_have_every_shape(path: Path) -> None:
    _, orders = _load_orders(path)
    for split in SPLITS:
        shapes = {o["shape"] for o in orders if o["split"] == split}
        assert shapes == SHAPES, f"{path.name} {split}: missing {SHAPES - shapes}"
    counts = Counter(o["split"] for o in orders)
    assert counts["test"] >= len(orders) / 3, f"{path.name}: only {counts['test']} test orders"
    # Conditional and loop orders that expect a plan say so.
    for o in orders:
        if o["expect"] == "plan" and o["shape"] in ("conditional", "loop"):
            assert o.get(o["shape"]) is True, o["id"]


def test_the_legacy_demo_orders_are_all_dev() -> None:
    legacy = [o["order"] for o in yaml.safe_load(LEGACY_ORDERS.read_text(encoding="utf-8"))]
    demo = next(
        p for p in ORDER_FILES if yaml.safe_load(p.read_text(encoding="utf-8"))["plant"].endswith("demo_cell.yaml")
    )
    by_text = {o["order"]: o for o in _load_orders(demo)[1]}
    for text in legacy:
        assert text in by_text, f"not converted: {text!r}"
        assert by_text[text]["split"] == "dev", f"tuned on, so dev: {text!r}"


def _sample_args(decl: Any) -> dict[str, object]:
    """A value for every argument of a declared command: its default, else its lowest value."""
    out: dict[str, object] = {}
    for name, a in decl.args.items():
        if a.default is not None:
            out[name] = a.default
        elif a.choices:
            out[name] = a.choices[0]
        elif a.min is not None:
            out[name] = a.min if a.type == "float" else math.ceil(a.min)
        else:
            out[name] = 1
    return out


async def test_every_declared_command_runs_on_the_twin(line: PlantDescription) -> None:
    from plant.commands import perform  # (the twin only for this test)
    from sim.agents import TwinMachineAgent
    from sim.twin import Twin

    twin = Twin(line)
    ran = 0
    for name, machine in line.machines.items():
        async with TwinMachineAgent(twin, name) as agent:
            assert await perform(agent, machine, "reset", {}, 20.0) == "idle"
            for cname, decl in machine.commands.items():
                before = {t: await agent.read(t) for t in decl.increments}
                detail = await perform(agent, machine, cname, _sample_args(decl), 30.0)
                assert "complete" in detail or decl.completes != "cycle", f"{name}.{cname}: {detail}"
                for t, v in before.items():
                    assert await agent.read(t) == v + 1, f"{name}.{cname} did not count {t}"
                ran += 1
    assert ran == sum(len(m.commands) for m in line.machines.values()) > 0

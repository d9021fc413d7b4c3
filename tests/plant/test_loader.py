"""Plant descriptions: the shipped plant loads, and every kind of bad input is reported with
its file, line, field path and a plain reason, and nothing is half-loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plant import PlantError, load_plant, load_plant_text
from plant.config import PlantDescription


def test_demo_cell_loads(demo_plant: PlantDescription) -> None:
    assert set(demo_plant.robots) == {"ur5e_1", "panda_1"}
    assert {m.kind for m in demo_plant.machines.values()} >= {"conveyor", "cnc", "inspection"}
    assert any(b.role == "quarantine" for b in demo_plant.bins().values())
    assert any(z.kind == "hazard" for z in demo_plant.zones.values())
    assert any(z.kind == "walkway" for z in demo_plant.zones.values())
    assert {r.model for r in demo_plant.robots.values()} == {"ur5e", "panda"}


def test_default_plant_is_the_demo_cell(demo_plant: PlantDescription) -> None:
    assert load_plant() == demo_plant


def _only(exc: PlantError) -> str:
    assert len(exc.problems) >= 1
    return str(exc.problems[0])


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


def _reject(text: str) -> PlantError:
    with pytest.raises(PlantError) as info:
        load_plant_text(text, "cell.yaml")
    return info.value


def test_unknown_key_names_file_line_and_field(demo_text: str) -> None:
    text = demo_text.replace("    max_tcp_speed_m_s: 1.0\n", "    max_tcp_speed_m_s: 1.0\n    max_tcp_sped: 2\n", 1)
    exc = _reject(text)
    p = exc.problems[0]
    assert (p.file, p.line) == ("cell.yaml", _line_of(text, "max_tcp_sped"))
    assert p.path == "robots.ur5e_1.max_tcp_sped"
    assert "unknown key" in p.reason
    assert str(p).startswith(f"cell.yaml:{p.line}:")


def test_wrong_type_names_field(demo_text: str) -> None:
    text = demo_text.replace("payload_kg: 2.0", "payload_kg: heavy", 1)
    p = _reject(text).problems[0]
    assert p.path == "robots.ur5e_1.payload_kg"
    assert p.line == _line_of(text, "payload_kg: heavy")
    assert "number" in p.reason


def test_reference_to_missing_robot(demo_text: str) -> None:
    text = demo_text.replace("args: {to_robot: panda_1,", "args: {to_robot: panda_9,", 1)
    p = _reject(text).problems[0]
    assert p.path == "recipes.machine_part.steps[9].args.to_robot"
    assert p.line == _line_of(text, "panda_9")
    assert "no robot named 'panda_9'" in p.reason


def test_reference_to_missing_location(demo_text: str) -> None:
    text = demo_text.replace("part_2: {type: blank_al, at: conveyor_mid}", "part_2: {type: blank_al, at: nowhere}")
    p = _reject(text).problems[0]
    assert (p.path, p.line) == ("parts.part_2.at", _line_of(text, "at: nowhere"))
    assert "no location or bin named 'nowhere'" in p.reason


def test_overlapping_robots(demo_text: str) -> None:
    text = demo_text.replace("base: {xyz_m: [3.65, 2.0, 0.8]}", "base: {xyz_m: [2.65, 1.55, 0.8]}")
    p = _reject(text).problems[0]
    assert p.path == "robots.panda_1.base.xyz_m"
    assert p.line == _line_of(text, "[2.65, 1.55, 0.8]")
    assert "overlaps robot 'ur5e_1'" in p.reason


def test_zone_with_negative_size(demo_text: str) -> None:
    text = demo_text.replace("size_m: [1.0, 0.5, 2.0]", "size_m: [1.0, -0.5, 2.0]")
    p = _reject(text).problems[0]
    assert p.path == "zones.electrical_cabinet.shape.size_m[1]"
    assert p.line == _line_of(text, "[1.0, -0.5, 2.0]")
    assert "greater than 0" in p.reason


def test_every_problem_is_reported_at_once(demo_text: str) -> None:
    text = demo_text.replace("payload_kg: 2.0", "payload_kg: -1").replace("radius_m: 0.4", "radius_m: 0")
    exc = _reject(text)
    paths = {p.path for p in exc.problems}
    assert {"robots.ur5e_1.payload_kg", "zones.solvent_drum.shape.radius_m"} <= paths


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        ("model: ur5e", "model: ur10", "robots.ur5e_1.model", "unknown robot model 'ur10'"),
        ("hazard_class: flammable_liquid\n", "\n", "zones.solvent_drum", "needs a hazard_class"),
        ("walkway: walkway_east", "walkway: solvent_drum", "people.walker_1.walkway", "not a walkway"),
        ("[[5.35, 0.2], [5.35, 3.8]]", "[[5.35, 0.2], [3.0, 3.8]]", "people.walker_1.path_m[1]", "outside walkway"),
        (
            "address: 3, data_type: uint16",
            "address: 2, data_type: uint16",
            "machines.conveyor_1.tags.speed_setpoint.address",
            "also used by tag 'command_seq'",
        ),
        (
            'node_id: "ns=2;s=cnc_1.Program"',
            'node_id: "Program"',
            "machines.cnc_1.tags.program.node_id",
            "not an OPC-UA node id",
        ),
        ("protocol: modbus", "protocol: profinet", "machines.conveyor_1.protocol", "'profinet'"),
        (
            "skill: run_cycle, agent: cnc_1",
            "skill: run_cycle, agent: ur5e_1",
            "recipes.machine_part.steps[6].skill",
            "'ur5e_1' cannot perform skill 'run_cycle'",
        ),
        (
            "after: [pick_blank, open_cnc]",
            "after: [pick_blank, later]",
            "recipes.machine_part.steps[3].after",
            "'later' is not an earlier step",
        ),
        ("payload_kg: 2.0", "payload_kg: 9.0", "robots.ur5e_1", "exceeds the ur5e rating 5.0 kg"),
        (
            "    device_id: 1\n",
            "    device_id: 1\n    device_id: 2\n",
            "machines.conveyor_1.device_id",
            "duplicate key",
        ),
    ],
)
def test_bad_input_cases(demo_text: str, old: str, new: str, path: str, reason: str) -> None:
    assert old in demo_text
    text = demo_text.replace(old, new, 1)
    exc = _reject(text)
    match = [p for p in exc.problems if p.path == path]
    assert match, f"no problem at {path}; got {[str(p) for p in exc.problems]}"
    assert reason in match[0].reason
    assert match[0].line >= 1


def test_yaml_syntax_error_has_line() -> None:
    exc = _reject("name: x\ncell: {size_m: [1, 2]\n")
    assert exc.problems[0].line >= 2
    assert "not valid YAML" in exc.problems[0].reason


def test_empty_and_non_mapping_files() -> None:
    assert "empty" in _only(_reject(""))
    assert "mapping" in _only(_reject("- a\n- b\n"))


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(PlantError, match=re.escape(str(tmp_path / "nope.yaml")) + ".*file not found"):
        load_plant(tmp_path / "nope.yaml")


def test_binary_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "cell.yaml"
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PlantError, match="not UTF-8"):
        load_plant(f)


def test_description_is_frozen(demo_plant: PlantDescription) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        demo_plant.robots["ur5e_1"].max_tcp_speed_m_s = 5.0  # type: ignore[misc]

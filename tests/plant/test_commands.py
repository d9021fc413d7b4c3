"""Declared machine commands: what a machine takes, the loader's checks of a declaration (each
problem with its YAML path and line), and the skills the coordinator reads from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from plant import PlantError, load_plant, load_plant_text
from plant.commands import STANDARD_COMMANDS, convert_units, machine_commands
from plant.config import PlantDescription
from plant.packml import Command, MachineStateModel, State
from plant.skills import SKILLS

CELL_TEXT = (Path(__file__).parent.parent / "sim" / "data" / "declared_cell.yaml").read_text(encoding="utf-8")

#: The pump's declared command, replaced piece by piece by the bad cases below.
DOSE = """    commands:
      dose:
        args:
          volume: {type: float, unit: l, min: 0.1, max: 5.0}
        writes: {volume_setpoint: "{volume}"}
        code: 30
        duration_s: 3.0
"""


def _reject(text: str) -> PlantError:
    with pytest.raises(PlantError) as info:
        load_plant_text(text, "cell.yaml")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_declared_cell_loads_with_open_kinds() -> None:
    plant = load_plant_text(CELL_TEXT)
    pump = plant.machines["pump_ua"]
    assert (pump.kind, pump.kind_description) == ("dosing_pump", "a pump that doses liquid into a container")
    assert pump.tags["mode"].values == {"slow": 1, "fast": 2}
    assert plant.agent_skills("pump_ua") == sorted([*STANDARD_COMMANDS, "run_cycle", "dose"])
    assert plant.agent_skills("press_ua") == sorted([*STANDARD_COMMANDS, "run_cycle", "stamp"])


def test_skill_spec_carries_units_ranges_choices_and_durations() -> None:
    plant = load_plant_text(CELL_TEXT)
    dose = plant.skill_spec("pump_ua", "dose")
    assert dose.agent_kind == "machine"
    assert dose.description == "dose a volume of liquid into the container under the nozzle"
    volume, speed = dose.args["volume"], dose.args["speed"]
    assert (volume.type, volume.unit, volume.min, volume.max, volume.required) == ("float", "ml", 100, 5000, True)
    assert (speed.type, speed.choices, speed.required) == ("str", ("slow", "fast"), False)
    assert dose.nominal_duration_s == 4.0  # duration_s, +1 s for Starting and Completing
    assert plant.skill_spec("press_ua", "run_cycle").nominal_duration_s == 41.0  # cycle_time_s + 1
    assert plant.skill_spec("press_ua", "stop") == SKILLS["stop"]
    with pytest.raises(KeyError):
        plant.skill_spec("press_ua", "dose")
    with pytest.raises(KeyError):
        plant.skill_spec("nobody", "stop")


def test_the_demo_cell_keeps_its_skills(demo_plant: PlantDescription) -> None:
    assert set(demo_plant.agent_skills("cnc_1")) == {*STANDARD_COMMANDS, "open_door", "close_door", "run_cycle"}
    assert set(demo_plant.agent_skills("conveyor_1")) == {*STANDARD_COMMANDS, "run_cycle", "feed"}
    assert set(demo_plant.agent_skills("insp_1")) == {*STANDARD_COMMANDS, "run_cycle", "inspect"}
    assert demo_plant.skill_spec("cnc_1", "run_cycle").args["program"].max == 9999
    assert demo_plant.skill_spec("ur5e_1", "pick") is SKILLS["pick"]
    cmds = machine_commands(demo_plant.machines["cnc_1"])
    assert cmds["run_cycle"].writes == {"program": "{program}"}
    assert (cmds["open_door"].code, cmds["hold"].code) == (Command.OPEN_DOOR, Command.HOLD)


def test_units_convert_with_pint() -> None:
    assert convert_units(500, "ml", "l") == pytest.approx(0.5)
    assert convert_units(0.5, "l", "ml") == pytest.approx(500)
    assert convert_units(3, "m/s", "") == 3.0


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        (
            "unit: l, min: 0.1",
            "unit: litre_ish, min: 0.1",
            "machines.pump_mb.commands.dose.args.volume.unit",
            "unknown unit 'litre_ish'",
        ),
        (
            '{volume_setpoint: "{volume}"}',
            '{flow: "{volume}"}',
            "machines.pump_mb.commands.dose.writes.flow",
            "no tag 'flow'",
        ),
        (
            '{volume_setpoint: "{volume}"}',
            '{cycle_count: "{volume}"}',
            "machines.pump_mb.commands.dose.writes.cycle_count",
            "read-only",
        ),
        (
            '{volume_setpoint: "{volume}"}',
            '{volume_setpoint: "{volum}"}',
            "machines.pump_mb.commands.dose.writes.volume_setpoint",
            "{volum} names no argument",
        ),
        (
            "unit: l, min: 0.1",
            "unit: kg, min: 0.1",
            "machines.pump_mb.commands.dose.writes.volume_setpoint",
            "in kg cannot be written to a tag in ml",
        ),
        ("code: 30", "code: 41", "machines.pump_mb.commands.dose.code", "does not fit the command tag (0..40)"),
        ("code: 30", "code: 3", "machines.pump_mb.commands.dose.code", "PackML STOP"),
        ("      dose:\n", "      stop:\n", "machines.pump_mb.commands.stop", "standard command"),
        (
            "duration_s: 3.0",
            "duration_s: 3.0\n        from_states: [idling]",
            "machines.pump_mb.commands.dose.from_states",
            "'idling' is not a PackML state",
        ),
        (
            "duration_s: 3.0",
            "duration_s: 3.0\n        completes: whenever",
            "machines.pump_mb.commands.dose.completes",
            "'whenever' is not a completion",
        ),
        (
            "duration_s: 3.0",
            "duration_s: 3.0\n        increments: [layers]",
            "machines.pump_mb.commands.dose.increments[0]",
            "no tag 'layers'",
        ),
        (
            "duration_s: 3.0",
            "duration_s: 3.0\n        completes: door_open",
            "machines.pump_mb.commands.dose.completes",
            "needs a door",
        ),
        ("{type: float, unit: l", "{type: str, unit: l", "machines.pump_mb.commands.dose.args.volume", "needs choices"),
    ],
)
def test_bad_declarations_name_their_yaml_path(old: str, new: str, path: str, reason: str) -> None:
    assert DOSE in CELL_TEXT and old in DOSE
    text = CELL_TEXT.replace(DOSE, DOSE.replace(old, new, 1), 1)
    exc = _reject(text)
    match = [p for p in exc.problems if p.path == path]
    assert match, f"no problem at {path}; got {[str(p) for p in exc.problems]}"
    assert reason in match[0].reason, str(match[0])
    assert match[0].line >= _line_of(text, "  pump_mb:")


def test_duplicate_codes_and_named_values_out_of_range() -> None:
    text = CELL_TEXT.replace(DOSE, DOSE + "      rinse: {code: 30}\n", 1)
    p = next(p for p in _reject(text).problems if p.path == "machines.pump_mb.commands.rinse.code")
    assert "code 30 is also the code of command 'dose'" in p.reason
    assert p.line == _line_of(text, "rinse: {code: 30}")
    text = CELL_TEXT.replace("values: {slow: 1, fast: 2}", "values: {slow: 1, fast: 70000}")
    p = _reject(text).problems[0]
    assert p.path == "machines.pump_ua.tags.mode"
    assert "'fast' = 70000 does not fit a int16" in p.reason


def test_a_str_argument_needs_the_tags_named_values() -> None:
    text = CELL_TEXT.replace("choices: [slow, fast]", "choices: [slow, turbo]")
    p = next(p for p in _reject(text).problems if p.path == "machines.pump_ua.commands.dose.writes.mode")
    assert "no named values for turbo" in p.reason


def test_required_tags_are_state_and_command_and_the_door_when_there_is_one() -> None:
    text = CELL_TEXT.replace(
        '      command:     {node_id: "ns=2;s=press_ua.Command"',
        '      commandx:    {node_id: "ns=2;s=press_ua.Command"',
    )
    p = next(p for p in _reject(text).problems if p.path == "machines.press_ua.tags")
    assert "missing required tags: command" in p.reason
    text = CELL_TEXT.replace(
        "    kind: press\n    protocol: opcua\n", "    kind: press\n    has_door: true\n    protocol: opcua\n"
    )
    p = next(p for p in _reject(text).problems if p.path == "machines.press_ua.tags")
    assert "door_closed" in p.reason


def test_recipes_use_declared_commands_with_checked_arguments() -> None:
    recipe = (
        "recipes:\n  fill:\n    description: fill a container\n    steps:\n"
        "      - {id: reset, skill: reset, agent: pump_mb}\n"
        "      - {id: dose, skill: dose, agent: pump_mb, args: {volume: VOLUME}, after: [reset]}\n"
    )
    plant = load_plant_text(CELL_TEXT + recipe.replace("VOLUME", "2.5"))
    assert plant.recipes["fill"].steps[1].skill == "dose"
    p = _reject(CELL_TEXT + recipe.replace("VOLUME", "9.0")).problems[0]
    assert p.path == "recipes.fill.steps[1].args.volume"
    assert "9 l is above the maximum 5 l" in p.reason
    p = _reject(CELL_TEXT + recipe.replace("skill: dose", "skill: weld")).problems[0]
    assert (p.path, p.reason.split(";")[0]) == ("recipes.fill.steps[1].skill", "unknown skill 'weld'")


def test_the_state_model_runs_a_declared_command() -> None:
    plant = load_plant(Path(__file__).parent.parent / "sim" / "data" / "declared_cell.yaml")
    from plant.commands import custom_commands

    sm = MachineStateModel(cycle_time_s=1.0, custom=custom_commands(plant.machines["pump_ua"]))
    sm.command(Command.RESET)
    sm.tick(0.4)
    assert sm.state == State.IDLE
    sm.command(2)  # dose has the default code, Start's
    for _ in range(60):
        sm.tick(0.1)
    assert (sm.state, sm.cycle_count, sm.counters) == (State.COMPLETE, 1, {"layer_count": 1})
    assert sm.history[-3:] == [
        (State.STARTING, State.EXECUTE),
        (State.EXECUTE, State.COMPLETING),
        (State.COMPLETING, State.COMPLETE),
    ]

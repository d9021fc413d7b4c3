"""The ``atelier`` commands outside the work-order loop show a plant file's text, and text sent
by a robot's runtime, escaped: control characters visible, markup shown as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_plant_show_escapes_a_description(tmp_path: Path) -> None:
    from llm_coordinator.cli import app

    text = (ROOT / "plants" / "demo_cell.yaml").read_text(encoding="utf-8")
    old = "description: feed a blank, machine it in the CNC, inspect it and sort it"
    assert old in text
    plant = tmp_path / "cell.yaml"
    plant.write_text(text.replace(old, 'description: "feed \\e[2J\\e]0;pwned\\a [hazardous] [/] it"'))
    r = CliRunner().invoke(app, ["plant", "show", "--plant", str(plant)])
    assert r.exit_code == 0, r.output
    flat = r.output.replace("\n", "")
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "\\x1b[2J" in flat and "[hazardous]" in flat


def test_estop_shows_what_the_runtime_answered_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_coordinator.cli_robot as cli_robot

    monkeypatch.setattr(cli_robot, "_trigger", lambda *_: "tripped\x1b[2J [/] \x00" + "z" * 100_000)
    r = CliRunner().invoke(cli_robot.robot_app, ["estop", "ur5e_1", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x00" not in r.output and len(r.output) < 3000
    assert "\\x1b[2J [/] \\x00" in r.output.replace("\n", "")

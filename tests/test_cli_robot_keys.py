"""``atelier robot keys``: each robot's keys made in the state folder's trust/, kept, rotated,
never printed; refused inside the repository; a runtime does not start without them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from llm_coordinator.cli_robot import robot_app
from plant.trust import KeyStore, reset_key_name, robot_key_name


def test_keys_are_made_kept_and_rotated_never_shown(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = CliRunner().invoke(robot_app, ["keys", "ur5e_1", "--state-dir", str(state)])
    assert r.exit_code == 0, r.output
    keys = KeyStore(state / "trust")
    names = (robot_key_name("ur5e_1"), reset_key_name("ur5e_1"))
    first = {n: keys.key(n, create=False) for n in names}
    for n in names:
        path = keys.path(n)
        assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"made {path}" in r.output.replace("\n", "")
        assert first[n].hex() not in r.output
    r = CliRunner().invoke(robot_app, ["keys", "ur5e_1", "--state-dir", str(state)])
    assert r.exit_code == 0 and r.output.count("ur5e_1: kept") == 2, r.output
    assert {n: KeyStore(state / "trust").key(n, create=False) for n in names} == first
    r = CliRunner().invoke(robot_app, ["keys", "--rotate", "--state-dir", str(state)])  # every robot
    assert r.exit_code == 0 and "panda_1: made" in r.output and "ur5e_1: rotated" in r.output, r.output
    rotated = KeyStore(state / "trust")
    assert all(rotated.key(n, create=False) != first[n] for n in names)
    assert all(k.hex() not in r.output for k in (rotated.key(n) for n in names))


def test_keys_are_refused_inside_a_repository_unless_ignored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    r = CliRunner().invoke(robot_app, ["keys", "ur5e_1", "--state-dir", str(repo / "var" / "robots")])
    assert r.exit_code == 2 and "outside the repository" in r.output.replace("\n", " "), r.output
    assert not (repo / "var" / "robots" / "trust").exists()
    (repo / ".gitignore").write_text("var/\n")
    r = CliRunner().invoke(robot_app, ["keys", "ur5e_1", "--state-dir", str(repo / "var" / "robots")])
    assert r.exit_code == 0, r.output


def test_a_runtime_without_keys_does_not_start(tmp_path: Path) -> None:
    r = CliRunner().invoke(robot_app, ["runtime", "ur5e_1", "--state-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "atelier robot keys ur5e_1" in r.output.replace("\n", " "), r.output

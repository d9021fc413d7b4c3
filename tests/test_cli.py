"""The ``atelier`` command as a person runs it: real processes, real files."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest

from tests._cli import atelier

ROOT = Path(__file__).resolve().parents[1]


def test_validate_ok() -> None:
    r = atelier("plant", "validate", "plants/demo_cell.yaml")
    assert r.returncode == 0, r.stderr
    assert "ok plants/demo_cell.yaml" in r.stdout


def test_validate_reports_place_and_reason(tmp_path: Path) -> None:
    bad = (ROOT / "plants/demo_cell.yaml").read_text().replace("radius_m: 0.4", "radius_m: -0.4")
    f = tmp_path / "bad.yaml"
    f.write_text(bad)
    r = atelier("plant", "validate", str(f))
    assert r.returncode == 2
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if "radius_m: -0.4" in t)
    assert f"{f}:{line}:" in r.stderr.replace("\n", "")
    assert "zones.solvent_drum.shape.radius_m" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.render
def test_sim_runs_and_renders(tmp_path: Path) -> None:
    out = tmp_path / "frames" / "cell.png"
    r = atelier("sim", "--seconds", "1.5", "--render", str(out), "--width", "320", "--height", "180")
    assert r.returncode == 0, r.stderr
    assert "conveyor_1" in r.stdout and "STARTING -> EXECUTE" in r.stdout + r.stderr
    assert iio.imread(out).shape == (180, 320, 3)


def test_sim_refuses_bad_output_before_running(tmp_path: Path) -> None:
    r = atelier("sim", "--seconds", "1", "--render", str(tmp_path / "x.avi"))
    assert r.returncode == 2
    assert "unknown file type '.avi'" in r.stderr

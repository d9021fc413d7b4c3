"""Offscreen rendering: frames show the cell, videos are written whole."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from plant.config import PlantDescription
from sim.render import Camera, RenderError, write_frames
from sim.twin import Twin

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def twin(demo_plant: PlantDescription) -> Twin:
    return Twin(demo_plant)


def test_frame_shows_the_cell(twin: Twin, tmp_path: Path) -> None:
    with Camera(twin, "top", 320, 180) as cam:
        img = cam.frame()
    assert img.shape == (180, 320, 3)
    # Not blank: many distinct colours (floor, belt, machines, walkway yellow).
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    yellow = (img[..., 0] > 180) & (img[..., 1] > 150) & (img[..., 2] < 90)
    assert yellow.mean() > 0.01, "the walkway should be visible from above"
    out = write_frames(tmp_path / "top.png", [img], 10)
    assert iio.imread(out[0]).shape == img.shape


def test_mp4_and_gif(twin: Twin, tmp_path: Path) -> None:
    frames = []
    with Camera(twin, "overview", 160, 90) as cam:
        for _ in range(4):
            twin.step(10)
            frames.append(cam.frame())
    mp4 = write_frames(tmp_path / "clip.mp4", frames, 10)[0]
    gif = write_frames(tmp_path / "clip.gif", frames, 10)[0]
    assert mp4.stat().st_size > 1000 and gif.stat().st_size > 1000
    assert not list(tmp_path.glob(".*partial*"))


def test_unknown_camera_and_suffix(twin: Twin, tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"no camera named 'sky'.*overview"):
        Camera(twin, "sky")
    with pytest.raises(RenderError, match=r"unknown file type '\.avi'"):
        write_frames(tmp_path / "x.avi", [np.zeros((4, 4, 3), np.uint8)], 10)

"""Offscreen rendering: frames show the cell, videos are written whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import mujoco
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


def test_a_renderer_made_for_one_twin_renders_another_twin_of_the_plant_as_it_is(
    demo_plant: PlantDescription,
) -> None:
    """The OpenGL thread keeps one renderer per compiled model: a second twin (a rehearsal's
    own) is drawn from its own model and data, not the first twin's."""
    first, second = Twin(demo_plant), Twin(demo_plant)
    assert first.model_key == second.model_key and first.model is not second.model
    with Camera(first, "overview", 160, 90) as cam:
        before = cam.frame()
    # The second twin differs: its parts have moved and a lamp shows another colour.
    second.step(200)
    lamp = next(i for i in range(second.model.ngeom) if second.model.geom(i).name.endswith("/lamp"))
    second.model.geom_rgba[lamp] = (0.1, 0.2, 0.9, 1.0)
    with Camera(second, "overview", 160, 90) as cam:
        shared = cam.frame()
    bare = mujoco.Renderer(second.model, height=90, width=160)
    try:
        opt = mujoco.MjvOption()
        opt.sitegroup[:] = 0
        bare.update_scene(second.data, camera="overview", scene_option=opt)
        own = np.asarray(bare.render(), dtype=np.uint8)
    finally:
        bare.close()
    assert np.array_equal(shared, own)
    assert not np.array_equal(shared, before)


async def test_a_session_writes_its_clip_off_the_event_loop(
    twin: Twin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding a rehearsal's clip takes tenths of a second (a GIF of a minute's frames): the
    session writes its evidence in a worker thread, not on the event loop the rehearsal's
    agents, the console's live view and the other rehearsals share."""
    import threading

    import sim.render
    from sim.session import TwinSession

    written_in: list[int] = []

    def spy(path: Path, frames: list[Any], fps: int) -> list[Path]:
        written_in.append(threading.get_ident())
        return write_frames(path, frames, fps)

    monkeypatch.setattr(sim.render, "write_frames", spy)
    with Camera(twin, "overview", 160, 90) as cam:
        frames = [cam.frame() for _ in range(3)]
    session = TwinSession({}, {}, twin, frames=frames)
    await session.finish(tmp_path)
    assert len(written_in) == 2 and threading.get_ident() not in written_in
    assert sorted(Path(p).name for p in session.evidence) == ["rehearsal.gif", "rehearsal.png"]
    assert iio.imread(tmp_path / "rehearsal.gif", index=0).shape == (90, 160, 3)


async def test_a_rehearsal_s_twin_stops_when_its_plan_is_done(
    demo_plant: PlantDescription, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin stops stepping when the plan's run is over: its clock, the rehearsal's twin time,
    is the end of the last step (within one batch of ticks), however long the evidence then
    takes (here the frame renderer takes a second more to finish its frames)."""
    import time

    import sim.session
    from llm_coordinator import wiring
    from llm_coordinator.expansion import expand_reading
    from llm_coordinator.reading import Reading
    from llm_coordinator.rehearsal import Rehearser

    close = sim.session._FrameRenderer.close

    def slow_close(self: sim.session._FrameRenderer) -> tuple[list[Any], str]:
        time.sleep(1.0)
        return close(self)

    monkeypatch.setattr(sim.session._FrameRenderer, "close", slow_close)

    robot = next(iter(demo_plant.robots))
    goal = {"kind": "task", "skill": "home", "agent": robot}
    plan = expand_reading(demo_plant, Reading.model_validate({"goals": [goal]}), work_order="home")
    report = await Rehearser(demo_plant, wiring.twin_factory(render=True, fps=20.0)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    assert any(e.endswith("rehearsal.gif") for e in report.evidence), report.evidence
    end = max(float(s["end_s"]) for s in report.steps)
    assert report.observations.sim_time_s - end < 0.5, (report.observations.sim_time_s, end)

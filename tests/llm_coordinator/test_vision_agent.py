"""A real plant's inspection station: its PLC (here the twin's, served over OPC-UA) runs the
cycle; our camera (a folder of image files) and the shipped vision model judge the part through
the machine's agent, as the executor runs an ``inspect`` step. A corrupt image, a camera that
sends nothing and a model for another part type each fail the step with the reason."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from llm_coordinator.inspection import VisionAgent
from llm_coordinator.wiring import live_agents
from plant.commands import CommandFailed, perform
from plant.config import PlantDescription, Vision
from plant.loader import default_plant_text, load_plant_text
from plant.testing import on_free_ports
from sim.vision import InspectionScene
from tests._live import serving

pytestmark = pytest.mark.slow


def _plants(camera: Path) -> tuple[PlantDescription, PlantDescription]:
    """(what the PLC side serves: the station without vision, what Atelier's plant file says:
    the same station with our camera and model). The served plant is started once per run."""
    data = yaml.safe_load(default_plant_text())
    data["machines"]["insp_1"].pop("vision")
    s = serving("vision-agent", on_free_ports(load_plant_text(yaml.safe_dump(data), "served.yaml")))
    s.reset()
    served = s.plant
    ours = served.model_copy(deep=True)
    vision = Vision(model="vision_demo_cell_blank_al", camera=f"files:{camera}", timeout_s=4.0)
    m = ours.machines["insp_1"].model_copy(update={"vision": vision})
    ours = ours.model_copy(update={"machines": {**ours.machines, "insp_1": m}})
    return served, ours


def _render(plant: PlantDescription, defect: str | None, seed: int) -> np.ndarray:
    scene = InspectionScene(plant, "insp_1", "blank_al", 128)
    try:
        return scene.render(defect, np.random.default_rng(seed))
    finally:
        scene.close()


async def _inspect(agents: dict[str, object], plant: PlantDescription) -> str:
    agent = agents["insp_1"]
    status = await agent.status()  # type: ignore[attr-defined]
    if status.state.name in ("COMPLETE", "ABORTED", "STOPPED"):
        await perform(agent, plant.machines["insp_1"], "reset", {}, 10.0)  # type: ignore[arg-type]
    return await perform(agent, plant.machines["insp_1"], "inspect", {}, 30.0)  # type: ignore[arg-type]


async def test_our_camera_and_model_judge_through_the_stations_agent(tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    _served, ours = _plants(camera)
    crack, good = _render(ours, "crack", 11), _render(ours, None, 12)
    async with live_agents(ours, robots=[]) as (machines, _robots):
        assert isinstance(machines["insp_1"], VisionAgent)
        iio.imwrite(camera / "a.png", crack)
        detail = await _inspect(machines, ours)
        assert "inspection result 2" in detail, detail
        assert await machines["insp_1"].read_many(["result", "defect", "state"]) | {"state": 0} == {
            "result": 2,
            "defect": 2,  # crack
            "state": 0,
        }
        iio.imwrite(camera / "b.png", good)
        assert "inspection result 1" in await _inspect(machines, ours)
        assert await machines["insp_1"].read("confidence") > 0.5
        # A corrupt image: the step fails with the reason, and no verdict stands.
        (camera / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        with pytest.raises(CommandFailed, match=r"inspection failed: .*c\.png: not a readable image"):
            await _inspect(machines, ours)
        assert await machines["insp_1"].read("result") == 0
        # The camera stops: the folder's files are all old.
        for f in camera.iterdir():
            old = time.time() - 120
            await asyncio.to_thread(__import__("os").utime, f, (old, old))
        with pytest.raises(CommandFailed, match=r"inspection failed: no new image in .*camera within 4 s"):
            await _inspect(machines, ours)
        assert await machines["insp_1"].read("result") == 0


async def test_a_model_for_another_part_type_fails_the_step(tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    _served, ours = _plants(camera)
    renamed = load_plant_text(
        yaml.safe_dump(ours.model_dump(mode="json", exclude_none=True))
        .replace("blank_al", "blank_st")
        .replace("vision_demo_cell_blank_st", "vision_demo_cell_blank_al"),
        "renamed.yaml",
    )
    iio.imwrite(camera / "a.png", _render(ours, None, 3))
    async with live_agents(renamed, robots=[]) as (machines, _robots):
        with pytest.raises(CommandFailed, match=r"judges parts of type 'blank_al', which demo_cell does not have"):
            await _inspect(machines, renamed)

"""The inspection loop in the real twin: machine one blank, inspect it with the camera and the
shipped vision model, quarantine it if it fails (the shipped plan-language example). A seeded
defective blank ends in the quarantine bin, a good one in the output bin; a camera that sends
nothing or a model for another part type faults the inspection, and the part goes to no bin."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llm_coordinator import wiring
from llm_coordinator.executor import MemoryProgress, PlanRunner
from llm_coordinator.expansion import expand_reading
from llm_coordinator.guardrails import check
from llm_coordinator.reading import Reading
from plant.config import PlantDescription
from plant.loader import default_plant_text, load_plant_text

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "plants/examples/machine_inspect_sort.yaml"


def _plant(defect: str, **machine: object) -> PlantDescription:
    """The demo cell with both blanks on the belt given ``defect`` (the first to reach its end
    is machined), and ``insp_1`` changed as asked."""
    data = yaml.safe_load(default_plant_text())
    for part in ("part_1", "part_2"):
        data["parts"][part]["defect"] = defect
    data["machines"]["insp_1"].update(machine)
    return load_plant_text(yaml.safe_dump(data), "variant.yaml")


async def _run(plant: PlantDescription, out: Path) -> tuple[object, dict[str, str | None], object]:
    """Run the example plan in a fresh in-process twin: (report, bin of each blank, twin)."""
    reading = Reading.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    plan = expand_reading(plant, reading, work_order="machine a blank, inspect it, quarantine it if it fails")
    assert check(plan, plant).ok, check(plan, plant).reasons()
    async with wiring.twin_factory(render=False)(plant) as session:
        runner = PlanRunner(plant, session.machines, session.robots, clock=session.time_s)
        report = await runner.execute(plan, MemoryProgress())
        twin = session.twin
        bins = plant.bins()
        where = {
            part: next((b for b, spec in bins.items() if spec.holds(tuple(twin.body_pose(part)[0]))), None)
            for part in ("part_1", "part_2")
        }
        await session.finish(out)
    return report, where, twin


@pytest.mark.parametrize(("defect", "bin_"), [("crack", "quarantine_bin"), ("none", "output_bin")])
async def test_the_verdict_sorts_the_part(tmp_path: Path, defect: str, bin_: str) -> None:
    report, where, twin = await _run(_plant(defect), tmp_path)
    assert report.status == "done", report.reason  # type: ignore[attr-defined]
    assert sorted(where.values(), key=str) == sorted([bin_, None], key=str), where  # the machined one, in its bin
    (done,) = twin.inspections  # type: ignore[attr-defined]
    assert done.part in where and where[done.part] == bin_
    assert done.verdict.passed == (defect == "none")
    if defect != "none":
        assert done.verdict.defect == defect and done.verdict.confidence > 0.5
    # The evidence for people: the camera's image beside its heat map.
    files = sorted(p.name for p in tmp_path.glob("inspection_1_insp_1_*"))  # noqa: ASYNC240 (the run is over)
    verdict = "pass" if defect == "none" else f"fail_{defect}"
    stem = f"inspection_1_insp_1_{done.part}_{verdict}"
    assert files == [f"{stem}.json", f"{stem}.png", f"{stem}_camera.png"], files


@pytest.mark.parametrize(
    ("machine", "reason"),
    [
        (
            {"vision": {"model": "vision_demo_cell_blank_al", "camera": "files:/nonexistent/camera", "timeout_s": 0.5}},
            "no new image",
        ),
        ({}, "judges parts of type 'blank_al', not 'blank_st'"),
    ],
)
async def test_an_inspection_that_cannot_see_sends_the_part_nowhere(
    tmp_path: Path, machine: dict[str, object], reason: str
) -> None:
    plant = _plant("none", **machine)
    if not machine:  # a checkpoint for another part type: rename the blanks' type
        text = yaml.safe_dump(yaml.safe_load(default_plant_text())).replace("blank_al", "blank_st")
        plant = load_plant_text(text.replace("vision_demo_cell_blank_st", "vision_demo_cell_blank_al"), "renamed.yaml")
    report, where, _twin = await _run(plant, tmp_path)
    assert report.status != "done"  # type: ignore[attr-defined]
    assert reason in str(report.reason), report.reason  # type: ignore[attr-defined]
    assert "output_bin" not in where.values() and "quarantine_bin" not in where.values(), where

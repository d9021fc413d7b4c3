"""An inspection machine judged by our camera and vision model, over its real PLC.

In a real plant the inspection station's PLC runs the cycle (lights, a trigger, a conveyor
stop) but does not run our model. :class:`VisionAgent` wraps the station's machine agent: when
an inspection cycle it started completes, it grabs an image from the camera the plant file names
(``vision.camera``: a ROS 2 ``sensor_msgs/Image`` topic or a folder of image files) and lets the
vision model judge it. The verdict is what the agent then reads for ``result``, ``defect`` and
``confidence``, so the plan's conditions and the executor see it like any tag. When it cannot
see (no image in time, a corrupt image) or the model does not fit the plant's parts, the cycle
ends ``ABORTED`` with the reason as its fault: the step fails and the part is sent nowhere.

In the twin the inspection machine's own logic judges with the twin's camera
(:meth:`sim.twin.Twin.judge`); this is the same model behind the same interface.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from plant.config import PlantDescription, defect_code
from plant.interface import MachineAgent, MachineStatus, TagValue
from plant.packml import Command, State
from policies.vision import ImageSource, Verdict, VisionError, VisionModel, checkpoint_path

#: The fault code of an inspection that could not judge (the twin's inspection machine uses it too).
INSPECTION_FAULT = 110
VERDICT_TAGS = ("result", "defect", "confidence")


class VisionAgent:
    """``inner`` (the station's machine agent) with our camera and model judging its cycles."""

    def __init__(
        self, inner: MachineAgent, plant: PlantDescription, source: ImageSource, model: VisionModel | None = None
    ) -> None:
        vision = plant.machines[inner.name].vision
        if vision is None:
            raise VisionError(f"{inner.name} has no vision in the plant file")
        self.name = inner.name
        self.inner, self.plant, self.source, self.vision = inner, plant, source, vision
        self._model = model
        self._model_ref = checkpoint_path(vision.model)
        self._pending = False
        self._values: dict[str, TagValue] = {"result": 0, "defect": 0, "confidence": 0.0}

    def __getattr__(self, name: str) -> Any:
        # Connection events and anything else the inner agent offers.
        return getattr(self.inner, name)

    def model(self) -> VisionModel:
        """The vision model (loaded on first use): refused when it judges a part type this plant
        does not have."""
        if self._model is None:
            model = VisionModel(self._model_ref)
            if model.info.part_type not in self.plant.part_types:
                raise VisionError(
                    f"{self._model_ref}: this checkpoint judges parts of type {model.info.part_type!r}, "
                    f"which {self.plant.name} does not have ({', '.join(self.plant.part_types)})"
                )
            self._model = model
        return self._model

    def _judge(self) -> Verdict:
        model = self.model()
        verdict = model.judge(self.source.grab(self.vision.timeout_s))
        self._values = {
            "result": 1 if verdict.passed else 2,
            "defect": defect_code(verdict.defect),
            "confidence": verdict.confidence,
        }
        return verdict

    async def disconnect(self) -> None:
        await self.inner.disconnect()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    async def read(self, tag: str) -> TagValue:
        return self._values[tag] if tag in VERDICT_TAGS else await self.inner.read(tag)

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        theirs = [t for t in tags if t not in VERDICT_TAGS]
        out = await self.inner.read_many(theirs) if theirs else {}
        return {t: (self._values[t] if t in VERDICT_TAGS else out[t]) for t in tags}

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        status = await self.inner.command(command, timeout_s)
        if int(command) == Command.START:
            self._pending = True
            self._values = {"result": 0, "defect": 0, "confidence": 0.0}
        return status

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        status = await self.inner.wait_for_state(states, timeout_s)
        if self._pending and status.state == State.COMPLETE:
            self._pending = False
            try:
                await asyncio.to_thread(self._judge)
            except VisionError as exc:
                # A cycle that judged nothing is no inspection: it ends aborted and is not counted.
                return dataclasses.replace(
                    status,
                    state=State.ABORTED,
                    cycle_count=max(0, status.cycle_count - 1),
                    part_count=max(0, status.part_count - 1),
                    fault_code=INSPECTION_FAULT,
                    fault_text=f"inspection failed: {exc}",
                )
        return status


def vision_agents(
    plant: PlantDescription, machines: dict[str, MachineAgent], ros_host: Any = None
) -> dict[str, MachineAgent]:
    """``machines`` with each inspection machine whose plant file names an outside camera
    (``ros2:/topic`` or ``files:folder``) wrapped in a :class:`VisionAgent`."""
    from pathlib import Path

    out = dict(machines)
    for name, m in plant.machines.items():
        if m.vision is None or m.vision.camera == "twin" or name not in machines:
            continue
        source: ImageSource
        if m.vision.camera.startswith("files:"):
            from policies.vision import FileImageSource

            source = FileImageSource(Path(m.vision.camera.removeprefix("files:")))
        else:
            from robots.ros2.camera import RosImageSource

            source = RosImageSource(m.vision.camera.removeprefix("ros2:"), ros_host)
        out[name] = VisionAgent(machines[name], plant, source)
    return out

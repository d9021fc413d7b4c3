"""The inspection verdict's cost, against the bare libraries it stands on.

    python bench/bench_vision.py [--images 200] [--repeats 3] [--checkpoint DIR]

On held-out renders of the demo cell's blanks (seeds training never uses), one image at a time
on one core, interleaved so the load of this shared machine falls on all alike:

- ``VisionModel.judge``: the product's call (the image checked and made the model's size, ONNX
  Runtime, the verdict, the confidence and the heat map);
- bare ONNX Runtime: ``InferenceSession.run`` on the same export, the image already prepared;
- eager torch: the checkpoint's network on the same image (one thread, no grad).

Also the twin's side: rendering the camera's image (``TwinCamera.grab``) against a bare
``mujoco.Renderer.render`` of the same camera. Prints p50/p99 in ms and ratios to the bare
library. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np
import torch

from plant import load_plant
from policies.vision import SHIPPED, VisionModel, load_network
from sim.twin import Twin
from sim.vision import EVAL_SEED, TwinCamera, render_dataset


def _times(fn: Callable[[], object], out: list[float]) -> None:
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)


def _row(name: str, times: list[float], bare: list[float] | None) -> str:
    p50, p99 = statistics.median(times) * 1e3, float(np.percentile(times, 99)) * 1e3
    ratio = f"{statistics.median(times) / statistics.median(bare):5.2f}x" if bare else "  bare"
    return f"  {name:<46} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {ratio}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED / "vision_demo_cell_blank_al")
    args = ap.parse_args()
    torch.set_num_threads(1)
    plant = load_plant()
    model = VisionModel(args.checkpoint)
    _, net = load_network(args.checkpoint)
    data = render_dataset(plant, model.info.machine, model.info.part_type, args.images, EVAL_SEED + 99, model.size)
    session = model._session
    judge, bare, eager = [], [], []
    for _ in range(args.repeats):
        for img in data.images:
            batch = np.ascontiguousarray(img[None])
            _times(lambda img=img: model.judge(img), judge)
            _times(lambda batch=batch: session.run(None, {"pixels": batch}), bare)
            with torch.no_grad():
                _times(lambda batch=batch: net(torch.from_numpy(batch)), eager)
    print(f"vision verdict, {args.checkpoint.name} ({model.info.mode}, {model.size} px), {len(judge)} images, one core")
    print(_row("bare ONNX Runtime (InferenceSession.run)", bare, None))
    print(_row("VisionModel.judge (checks, verdict, heat map)", judge, bare))
    print(_row("eager torch (the checkpoint's network)", eager, bare))

    twin = Twin(plant)
    cam = TwinCamera(twin, model.info.machine, model.size)
    renderer = mujoco.Renderer(twin.model, height=model.size, width=model.size)
    grab, raw = [], []
    for _ in range(args.repeats * 20):
        _times(lambda: cam.grab(1.0), grab)

        def bare_render() -> None:
            renderer.update_scene(twin.data, camera=f"{model.info.machine}/camera")
            renderer.render()

        _times(bare_render, raw)
    print(f"the twin's camera image, {model.size} px, {len(grab)} frames")
    print(_row("bare mujoco.Renderer (update_scene + render)", raw, None))
    print(_row("TwinCamera.grab", grab, raw))


if __name__ == "__main__":
    main()

"""Vision inspection in the twin: the inspection camera, training images, and the verdict.

- :class:`InspectionScene` poses a part at an inspection machine's view point, held by the
  robot that presents parts there (its arm at the pose the ``present`` skill solves for), and
  renders it from the machine's camera (``M/camera``, see :mod:`sim.builder`) with domain
  randomisation: the part's pose in the gripper, the lights, exposure and sensor noise, and the
  placement of its defect (:mod:`sim.defects`). :func:`render_dataset` makes labelled sets.
- :class:`Inspector` is what an inspection machine with ``vision`` runs when a part is judged:
  an image from its camera, the vision model's verdict, and the evidence (image and heat map).
  Any failure to see (no image, a corrupt one, a checkpoint for another part type) is raised as
  :class:`~policies.vision.VisionError`; the machine faults and the part stays where it is.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from numpy.typing import NDArray

from plant.config import PlantDescription
from policies.vision import (
    GOOD,
    Dataset,
    FileImageSource,
    Image,
    ImageSource,
    Verdict,
    VisionError,
    VisionModel,
    checkpoint_path,
)
from robots.skills import SkillError, SkillPlanner
from sim._types import FloatArray
from sim.config import TwinConfig
from sim.defects import FACES, Face, PartMarks, show_defect
from sim.hardware import arm_kinematics
from sim.render import Camera, RenderError, no_sites
from sim.twin import Twin


@dataclass(frozen=True)
class Randomisation:
    """Ranges of the domain randomisation (uniform draws)."""

    offset_m: float = 0.004  # the part's centre off the grip point, each axis
    tilt_rad: float = 0.03  # the part tilted in the gripper
    joint_rad: float = 0.01  # the arm's joints off the presenting pose
    light: tuple[float, float] = (0.45, 1.15)  # the station light's brightness, times its own
    room_light: tuple[float, float] = (0.6, 1.3)  # the cell's lights
    light_shift_m: float = 0.04
    gain: tuple[float, float] = (0.85, 1.15)  # exposure
    noise: tuple[float, float] = (0.0, 6.0)  # sensor noise, grey levels (sd)


def _face_down_quat(face: Face, yaw: float, tilt_x: float, tilt_y: float) -> FloatArray:
    """A part's orientation with ``face`` pointing down, turned ``yaw`` about the vertical and
    tilted a little."""
    axis, sign = face
    n = np.zeros(3)
    n[axis] = sign  # the face's normal in the part's frame: it must point down (-z)
    down = np.array([0.0, 0.0, -1.0])
    q_face = np.zeros(4)
    c = float(n @ down)
    if c > 0.999:
        q_face[:] = (1, 0, 0, 0)
    elif c < -0.999:
        q_face[:] = (0, 1, 0, 0)
    else:
        ax = np.cross(n, down)
        ax /= np.linalg.norm(ax)
        mujoco.mju_axisAngle2Quat(q_face, ax, math.acos(c))
    q_turn = np.zeros(4)
    mujoco.mju_euler2Quat(q_turn, np.array([tilt_x, tilt_y, yaw]), "xyz")
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, q_turn, q_face)
    return out


class InspectionScene:
    """A twin posed for one inspection machine and part type (see the module's docstring)."""

    def __init__(
        self, plant: PlantDescription, machine: str, part_type: str, size: int, randomise: Randomisation | None = None
    ) -> None:
        if machine not in plant.machines or plant.machines[machine].kind != "inspection":
            raise VisionError(f"{machine!r} is not an inspection machine of {plant.name}")
        if part_type not in plant.part_types:
            raise VisionError(f"{plant.name} has no part type {part_type!r}")
        parts = [n for n, p in plant.parts.items() if p.type == part_type]
        if not parts:
            raise VisionError(f"{plant.name} has no part of type {part_type!r} to render")
        self.plant, self.machine, self.part, self.size = plant, machine, parts[0], size
        self.part_type = plant.part_types[part_type]
        self.randomise = randomise or Randomisation()
        self.twin = Twin(plant, TwinConfig(seed=0))
        model = self.twin.model
        self.camera = f"{machine}/camera"
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera) < 0:
            raise VisionError(f"{machine} has no camera in the twin (it needs a station location above its table)")
        self.marks = PartMarks.find(model, self.part, self.part_type)
        self.view = np.asarray(plant.inspection_view(machine)[1].xyz_m)  # type: ignore[index]
        self.robot, self.q = self._presenter()
        self._lights = [
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_LIGHT, n) for n in (f"{machine}/light", "sun", "fill")
        ]
        self._diffuse = {i: model.light_diffuse[i].copy() for i in self._lights if i >= 0}
        self._light_pos = {i: model.light_pos[i].copy() for i in self._lights if i >= 0}
        self._renderer = mujoco.Renderer(model, height=size, width=size)
        self._opt = no_sites()

    def _presenter(self) -> tuple[str | None, FloatArray | None]:
        """The robot that presents parts here and its arm's joints when it does (None: no robot
        reaches the view point; the part is then shown on its own)."""
        for name, robot in self.plant.robots.items():
            if "present" not in (robot.skills or []):
                continue
            planner = SkillPlanner(self.plant, name, arm_kinematics(self.twin.model, self.plant, name))
            try:
                return name, planner.solve(self.view, [planner.home], "the view point")
            except SkillError:
                continue
        return None, None

    def close(self) -> None:
        self._renderer.close()

    def render(self, defect: str | None, rng: np.random.Generator) -> Image:
        """One randomised image of the part with ``defect`` (None: a good part)."""
        r, twin, model, data = self.randomise, self.twin, self.twin.model, self.twin.data
        centre = self.view.copy()
        if self.robot is not None and self.q is not None:
            h = twin.arm(self.robot)
            data.qpos[h.qpos] = self.q + rng.uniform(-r.joint_rad, r.joint_rad, len(self.q))
            if len(h.tool_joint_qpos):
                ok = h.tool_joint_qpos >= 0
                data.qpos[h.tool_joint_qpos[ok]] = 0.0
            mujoco.mj_kinematics(model, data)
            centre = twin.tool_position(self.robot)
        # Any face down (a hand-over may turn a part), any way round, the part's centre anywhere
        # from the grip point to its own half size below it (where the fingers hold it).
        face = FACES[int(rng.integers(len(FACES)))]
        half = max(self.part_type.size_m) / 2
        centre = centre + np.array([*rng.uniform(-2 * r.offset_m, 2 * r.offset_m, 2), rng.uniform(-half, r.offset_m)])
        tx, ty = rng.uniform(-r.tilt_rad, r.tilt_rad, 2)
        quat = _face_down_quat(face, rng.uniform(0, 2 * np.pi), tx, ty)
        adr = int(model.jnt_qposadr[model.body_jntadr[self.marks.body]])
        data.qpos[adr : adr + 3] = centre
        data.qpos[adr + 3 : adr + 7] = quat
        show_defect(model, self.marks, defect, rng, face)
        for i, d in self._diffuse.items():
            span = r.light if i == self._lights[0] else r.room_light
            model.light_diffuse[i] = d * rng.uniform(*span)
            model.light_pos[i] = self._light_pos[i] + rng.uniform(-r.light_shift_m, r.light_shift_m, 3)
        mujoco.mj_kinematics(model, data)
        self._renderer.update_scene(data, camera=self.camera, scene_option=self._opt)
        img = self._renderer.render().astype(np.float32)
        img = img * rng.uniform(*r.gain) + rng.normal(0.0, rng.uniform(*r.noise), img.shape)
        out: Image = np.clip(img, 0, 255).astype(np.uint8)
        return out


def render_dataset(
    plant: PlantDescription,
    machine: str,
    part_type: str,
    n: int,
    seed: int,
    size: int,
    good_share: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """``n`` randomised renders: a ``good_share`` of good parts, the rest spread evenly over the
    part type's defects (classes: good, then the defects in the plant file's order)."""
    defects = list(plant.part_types[part_type].defects) if part_type in plant.part_types else []
    classes = [GOOD, *defects]
    rng = np.random.default_rng(seed)
    scene = InspectionScene(plant, machine, part_type, size)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    n_good = n if not defects else round(n * good_share)
    for i in range(n):
        labels[i] = 0 if i < n_good else 1 + (i - n_good) % len(defects)
    rng.shuffle(labels)
    try:
        for i in range(n):
            images[i] = scene.render(classes[labels[i]] if labels[i] else None, rng)
            if progress is not None and ((i + 1) % 50 == 0 or i + 1 == n):
                progress(i + 1, n)
    finally:
        scene.close()
    return Dataset(images, labels, classes)


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Inspection:
    """One part judged: which, when, by which machine, the verdict and the image it saw."""

    machine: str
    part: str | None
    time_s: float
    verdict: Verdict
    image: Image


def evidence_image(image: Image, heat: NDArray[np.floating[Any]], scale: int = 3) -> Image:
    """The camera image beside the same image under its heat map (red where the model saw a
    defect), each ``scale`` times bigger, for people to look at."""
    img = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1).astype(np.float32)
    h, w = img.shape[:2]
    hm = np.asarray(heat, dtype=np.float32)
    ys = (np.arange(h) * hm.shape[0] // h).clip(0, hm.shape[0] - 1)
    xs = (np.arange(w) * hm.shape[1] // w).clip(0, hm.shape[1] - 1)
    big = np.clip(hm[ys][:, xs], 0.0, 1.0)[:, :, None]
    red = np.array([255.0, 30.0, 30.0])
    overlay = img * (1 - 0.6 * big) + red * 0.6 * big
    gap = np.full((h, 4, 3), 255.0)
    out: Image = np.concatenate([img, gap, overlay], axis=1).astype(np.uint8)
    return out


def write_inspection(out_dir: Path, n: int, done: Inspection, plant: PlantDescription) -> Path:
    """The evidence of one verdict, for people and for the next training: the camera's image
    beside its heat map (``inspection_<n>_<machine>_<part>_<pass|fail_defect>.png``, the file
    returned), the camera's image alone (``..._camera.png``) and what was judged (``.json``)."""
    import json

    import imageio.v3 as iio

    v = done.verdict
    verdict = "pass" if v.passed else f"fail_{v.defect}"
    stem = f"inspection_{n}_{done.machine}_{done.part}_{verdict}"
    out_dir.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out_dir / f"{stem}.png", evidence_image(done.image, v.heat))
    iio.imwrite(out_dir / f"{stem}_camera.png", done.image)
    part_type = plant.parts[done.part].type if done.part in plant.parts else None
    sidecar = {
        "machine": done.machine,
        "part": done.part,
        "part_type": part_type,
        "time_s": round(done.time_s, 3),
        "passed": v.passed,
        "defect": v.defect,
        "confidence": round(v.confidence, 4),
        "score": round(v.score, 4),
        "threshold": v.threshold,
        "labels": [GOOD, *(plant.part_types[part_type].defects if part_type else [])],
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return out_dir / f"{stem}.png"


_MODELS: OrderedDict[tuple[str, str], VisionModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def load_model(ref: str, part_type: str) -> VisionModel:
    """The vision model of a plant's ``vision.model`` for ``part_type`` (kept per process)."""
    key = (str(checkpoint_path(ref).resolve()), part_type)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        model = VisionModel(checkpoint_path(ref), part_type)
        with _MODELS_LOCK:
            _MODELS[key] = model
            while len(_MODELS) > 4:
                _MODELS.popitem(last=False)
    return model


class TwinCamera:
    """An inspection machine's camera in a twin: renders ``M/camera`` as it is now (on the
    process's OpenGL thread, :func:`sim.render.gl_thread`)."""

    def __init__(self, twin: Twin, machine: str, size: int) -> None:
        camera = f"{machine}/camera"
        if mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise VisionError(f"{machine} has no camera in the twin (it needs a station location above its table)")
        self.twin, self.camera, self.size = twin, camera, size
        self._camera: Camera | None = None

    def grab(self, timeout_s: float) -> Image:
        if self._camera is None:
            try:
                self._camera = Camera(self.twin, self.camera, self.size, self.size)
            except RenderError as exc:
                raise VisionError(f"{self.camera}: {exc}") from exc
        return self._camera.frame()


def _source(twin: Twin, machine: str, size: int) -> ImageSource:
    """The camera the plant file names for ``machine``: in a twin, ``twin`` is its own camera;
    ``files:`` and ``ros2:`` are read as on a real plant (recorded images replayed, a camera
    simulator or a real camera's topic)."""
    vision = twin.plant.machines[machine].vision
    assert vision is not None
    if vision.camera == "twin":
        return TwinCamera(twin, machine, size)
    if vision.camera.startswith("files:"):
        return FileImageSource(Path(vision.camera.removeprefix("files:")))
    from robots.ros2.camera import RosImageSource

    return RosImageSource(vision.camera.removeprefix("ros2:"))


def part_at(twin: Twin, machine: str) -> str | None:
    """The part shown to ``machine`` now: the one nearest its view point, within the largest
    part type's size of it (None: no part there)."""
    view = twin.plant.inspection_view(machine)
    if view is None:
        return None
    at = np.asarray(view[1].xyz_m)
    best, best_d = None, max(max(t.size_m) for t in twin.plant.part_types.values())
    for name in twin.plant.parts:
        d = float(np.linalg.norm(twin.body_pose(name)[0] - at))
        if d < best_d:
            best, best_d = name, d
    return best


class Inspector:
    """What an inspection machine with ``vision`` does when it judges a part: grab an image from
    its camera, find which part is there, and let the vision model judge it. ``judge`` raises
    VisionError (the machine then faults) when it cannot see or the model does not fit."""

    def __init__(self, twin: Twin, machine: str) -> None:
        vision = twin.plant.machines[machine].vision
        if vision is None:
            raise VisionError(f"{machine} has no vision")
        self.twin, self.machine, self.vision = twin, machine, vision
        self._source: ImageSource | None = None
        self.inspections: list[Inspection] = []

    def judge(self) -> Inspection:
        part = part_at(self.twin, self.machine)
        if part is None:
            raise VisionError(f"no part at {self.machine}'s camera")
        self.twin.show_face_down(part)
        part_type = self.twin.plant.parts[part].type
        model = load_model(self.vision.model, part_type)
        if self._source is None:
            self._source = _source(self.twin, self.machine, model.size)
        image = self._source.grab(self.vision.timeout_s)
        verdict = model.judge(image)
        done = Inspection(self.machine, part, self.twin.time_s, verdict, np.asarray(image))
        self.inspections.append(done)
        return done


# --------------------------------------------------------------------------- train and evaluate

#: The anomaly mode's threshold: at most this share of held-out good renders fail.
ANOMALY_FALSE_REJECT = 0.01
#: Seeds of evaluation renders start here: never a training seed (those are small numbers).
EVAL_SEED = 1_000_003


def train_checkpoint(
    plant: PlantDescription,
    machine: str,
    part_type: str,
    out: Path,
    *,
    mode: str = "supervised",
    images: int = 2400,
    epochs: int = 14,
    size: int = 128,
    seed: int = 0,
    command: str = "",
    examples: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Render a training set in the twin, train a vision model on it and write its checkpoint
    to ``out`` (see :mod:`policies.vision`). Seeded: the same arguments give the same model."""
    import torch

    from policies import vision as pv

    if mode not in ("supervised", "anomaly"):
        raise VisionError(f"mode must be supervised or anomaly, not {mode!r}")
    if part_type in plant.part_types and mode == "supervised" and not plant.part_types[part_type].defects:
        raise VisionError(f"part type {part_type!r} lists no defects: train --mode anomaly on good parts")
    torch.manual_seed(seed)

    def bar(stage: str) -> Callable[[int, int], None]:
        return lambda i, n: progress(stage, i, n) if progress is not None else None

    good_share = 0.5 if mode == "supervised" else 1.0
    data = render_dataset(plant, machine, part_type, images, seed, size, good_share, bar("rendering"))
    say(f"rendered {images} images of {part_type} at {machine} ({size}x{size}, seed {seed})")
    if examples is not None:
        data, kept = with_examples(data, examples / part_type, size, good_only=mode == "anomaly")
        say(f"added {kept} labelled example(s) from {examples / part_type} (operators' overrules)")
    train_bar = bar("training")
    net: torch.nn.Module
    if mode == "supervised":
        net = pv.train_supervised(data, epochs, seed, lambda e, n, _m: train_bar(e, n))
        threshold = 0.5
    else:
        net = pv.train_anomaly(data, epochs, seed, lambda e, n, _m: train_bar(e, n))
        val = render_dataset(plant, machine, part_type, max(200, images // 5), seed + 1, size, 1.0)
        threshold = pv.threshold_for(pv.scores(net, val.images), ANOMALY_FALSE_REJECT)
    info = pv.VisionInfo(
        mode=mode,
        part_type=part_type,
        plant=plant.name,
        machine=machine,
        classes=data.classes if mode == "supervised" else [GOOD, "defect"],
        image_size=size,
        threshold=threshold,
        seed=seed,
        command=command,
    )
    pv.save(out, info, net)
    return out


def with_examples(data: Dataset, folder: Path, size: int, good_only: bool = False) -> tuple[Dataset, int]:
    """``data`` with the labelled examples kept in ``folder/<label>/*.png`` (the console keeps
    an image there when an operator overrules a verdict). A label that is not one of the data's
    classes, or an unreadable image, is an error naming the file: nothing is trained on half."""
    import imageio.v3 as iio

    from policies.vision import check_image

    images, labels = [], []
    for label_dir in sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []:
        if label_dir.name not in data.classes:
            raise VisionError(f"{label_dir}: {label_dir.name!r} is not one of {', '.join(data.classes)}")
        if good_only and label_dir.name != GOOD:
            continue
        for f in sorted(label_dir.glob("*.png")):
            try:
                images.append(check_image(np.asarray(iio.imread(f, plugin="pillow")), size))
            except (OSError, ValueError, VisionError) as exc:
                raise VisionError(f"{f}: not a usable example image ({exc})") from None
            labels.append(data.classes.index(label_dir.name))
    if not images:
        return data, 0
    merged = Dataset(
        np.concatenate([data.images, np.stack(images)]), np.concatenate([data.labels, np.array(labels)]), data.classes
    )
    return merged, len(images)


def evaluate_checkpoint(
    plant: PlantDescription,
    checkpoint: Path,
    *,
    images: int = 1000,
    seed: int = EVAL_SEED,
    report_file: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, object]:
    """Held-out renders (poses, lights, noise and defect placements drawn from seeds training
    never uses): the model's AUROC, defect recall (overall and per defect), false-reject rate and
    one-core inference p50/p99, beside the classical baseline (difference to a reference image)
    at the same false-reject target on good renders. Written to ``report_file`` (default: the
    checkpoint's eval_report.json)."""
    from policies import vision as pv

    model = VisionModel(checkpoint)
    info = model.info
    pt = plant.part_types.get(info.part_type)
    if pt is None:
        raise VisionError(f"{plant.name} has no part type {info.part_type!r} (the checkpoint's)")

    def bar(stage: str) -> Callable[[int, int], None]:
        return lambda i, n: progress(stage, i, n) if progress is not None else None

    test = render_dataset(plant, info.machine, info.part_type, images, seed, info.image_size, 0.5, bar("held-out"))
    ref = render_dataset(plant, info.machine, info.part_type, 400, seed + 1, info.image_size, 1.0, bar("reference"))
    got = np.concatenate([model.run(test.images[i : i + 64])[0] for i in range(0, len(test.images), 64)])
    ours = pv.figures(got.astype(float), test.labels, test.classes, info.threshold)
    base = pv.ReferenceDifference(ref.images[:200])
    base_threshold = pv.threshold_for(base.score(ref.images[200:]), ANOMALY_FALSE_REJECT)
    theirs = pv.figures(base.score(test.images), test.labels, test.classes, base_threshold)
    p50, p99 = pv.latency(model, test.images[:200])
    ours.update(p50_ms=p50 * 1e3, p99_ms=p99 * 1e3)
    report: dict[str, object] = {
        "checkpoint": str(checkpoint),
        "mode": info.mode,
        "part_type": info.part_type,
        "held_out": {"images": images, "seed": seed, "classes": test.classes},
        "model": ours,
        "baseline": {"name": "difference to a reference image, thresholded", **theirs},
        "targets": {"auroc": 0.99, "recall": 0.98, "false_reject": 0.02, "p99_ms": 20.0},
    }
    path = report_file if report_file is not None else checkpoint / "eval_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(__import__("json").dumps(report, indent=2) + "\n", encoding="utf-8")
    report["report_file"] = str(path)
    return report

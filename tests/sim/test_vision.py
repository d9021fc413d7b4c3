"""Vision inspection in the twin: defects drawn from the seed and shown to the camera, the
shipped model judging held-out renders, and every way an image or a checkpoint can be wrong
refused with its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from plant import PlantError
from plant.config import PlantDescription
from plant.loader import default_plant_text, load_plant_text
from policies.vision import (
    ONNX_FILE,
    SHIPPED,
    FileImageSource,
    VisionError,
    VisionModel,
    auroc,
    check_image,
    figures,
    read_info,
)
from sim.config import TwinConfig
from sim.twin import Twin
from sim.vision import EVAL_SEED, InspectionScene, render_dataset

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = SHIPPED / "vision_demo_cell_blank_al"


def plant_with(change: dict[str, object] | None = None, parts: dict[str, object] | None = None) -> PlantDescription:
    data = yaml.safe_load(default_plant_text())
    for path, value in (change or {}).items():
        *keys, last = path.split(".")
        node = data
        for k in keys:
            node = node[k]
        node[last] = value
    for name, fields in (parts or {}).items():
        data["parts"][name].update(fields)  # type: ignore[union-attr]
    return load_plant_text(yaml.safe_dump(data), "variant.yaml")


def test_defects_come_from_the_plant_file_or_the_seed(demo_plant: PlantDescription) -> None:
    plant = plant_with(parts={"part_1": {"defect": "scratch"}, "part_2": {"defect": "none"}})
    rate = plant.part_types["blank_al"].defect_rate
    drawn = [Twin(plant, TwinConfig(seed=s)).defects for s in range(12)]
    assert all(d["part_1"] == "scratch" and d["part_2"] is None for d in drawn)
    assert drawn[3] == Twin(plant, TwinConfig(seed=3)).defects  # seeded
    others = [v for d in drawn for k, v in d.items() if k not in ("part_1", "part_2")]
    assert 0 < sum(v is not None for v in others) < len(others)  # some, at the plant's rate
    assert {v for v in others if v} <= set(plant.part_types["blank_al"].defects)
    assert 0 < rate < 1
    with pytest.raises(PlantError, match=r"parts\.part_1\.defect.*does not list the defect 'dent'|defect"):
        plant_with(parts={"part_1": {"defect": "dent"}})
    with pytest.raises(PlantError, match="defect_rate needs the defects"):
        plant_with({"part_types.blank_al.defects": []})
    with pytest.raises(PlantError, match="only an inspection machine has vision"):
        plant_with({"machines.cnc_1.vision": {"model": "x"}})


def test_the_camera_sees_each_defect(demo_plant: PlantDescription) -> None:
    scene = InspectionScene(demo_plant, "insp_1", "blank_al", 96)
    try:
        good = scene.render(None, np.random.default_rng(5))
        assert good.shape == (96, 96, 3) and good.dtype == np.uint8
        again = scene.render(None, np.random.default_rng(5))
        assert np.array_equal(good, again)  # seeded: the same draws give the same image
        for defect in demo_plant.part_types["blank_al"].defects:
            bad = scene.render(defect, np.random.default_rng(5))
            # The same pose and light with the defect shown: some pixels change, clearly.
            changed = np.abs(bad.astype(int) - good.astype(int)).max(axis=2) > 40
            assert changed.sum() >= 4, defect
    finally:
        scene.close()


def test_the_shipped_model_judges_held_out_renders(demo_plant: PlantDescription) -> None:
    """A slice of what ``atelier vision eval`` measures, with the real ONNX model on renders from
    seeds training never used (the full figures: the checkpoint's eval_report.json)."""
    model = VisionModel(SHIPPED_MODEL, "blank_al")
    data = render_dataset(demo_plant, "insp_1", "blank_al", 120, EVAL_SEED + 7, model.size)
    verdicts = [model.judge(img) for img in data.images]
    scores = np.array([v.score for v in verdicts])
    f = figures(scores, data.labels, data.classes, model.info.threshold)
    assert f["auroc"] >= 0.97 and f["recall"] >= 0.9 and f["false_reject"] <= 0.1, f
    named = [v.defect == data.classes[y] for v, y in zip(verdicts, data.labels, strict=True) if y and not v.passed]
    assert np.mean(named) >= 0.8  # a failed part's defect class is mostly the true one
    for v in verdicts:
        assert 0.5 <= v.confidence <= 1.0 and v.heat.ndim == 2 and np.all((v.heat >= 0) & (v.heat <= 1))


def test_bad_images_are_refused_with_their_reason(tmp_path: Path) -> None:
    model = VisionModel(SHIPPED_MODEL, "blank_al")
    for image, reason in [
        (np.zeros((0, 0, 3), dtype=np.uint8), "empty"),
        (np.zeros((10, 10, 7), dtype=np.uint8), r"shape \(10, 10, 7\)"),
        (np.full((96, 96, 3), np.nan), "not finite"),
        (b"\x89PNG", "not an array"),
    ]:
        with pytest.raises(VisionError, match=reason):
            model.judge(image)
    # Another size is centre-cropped and resampled, grey is made colour.
    assert check_image(np.zeros((120, 160), dtype=np.uint8), 96).shape == (96, 96, 3)
    # A file camera: a corrupt file, and a folder with no new image.
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(VisionError, match=r"frame\.png: not a readable image"):
        FileImageSource(folder).grab(1.0)
    os.utime(folder / "frame.png", (time.time() - 60, time.time() - 60))
    with pytest.raises(VisionError, match=r"no new image in .*camera within 0\.3 s"):
        FileImageSource(folder).grab(0.3)


def test_a_model_answering_garbage_is_not_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake at the edge: the model's runtime answers NaN; the verdict is refused, not a pass."""
    model = VisionModel(SHIPPED_MODEL, "blank_al")
    nan = np.full(1, np.nan, dtype=np.float32)
    monkeypatch.setattr(model, "run", lambda _x: (nan, np.zeros((1, 6), np.float32), np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(VisionError, match="not a number"):
        model.judge(np.zeros((128, 128, 3), dtype=np.uint8))


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VisionError, match=r"judges parts of type 'blank_al', not 'blank_st'"):
        VisionModel(SHIPPED_MODEL, "blank_st")
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED_MODEL, copy)
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(VisionError, match="is corrupt: SHA-256"):
        VisionModel(copy)
    with pytest.raises(VisionError, match="no vision checkpoint here"):
        VisionModel(tmp_path / "nothing")
    assert read_info(SHIPPED_MODEL).command.startswith("atelier vision train blank_al")


def test_auroc_counts_ties_as_half() -> None:
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["supervised", "anomaly"])
def test_train_and_eval_from_the_command_line(tmp_path: Path, mode: str) -> None:
    """Both modes end to end through the CLI, small: a checkpoint with its ONNX export and a
    report with the model's figures beside the baseline's."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    out = tmp_path / mode
    cli = [sys.executable, "-m", "llm_coordinator.cli", "vision"]
    args = ["--mode", mode, "--images", "120", "--epochs", "2", "--size", "48", "--seed", "3"]
    r = subprocess.run(
        [*cli, "train", "blank_al", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    info = read_info(out)
    assert info.mode == mode and info.image_size == 48 and "--mode " + mode in info.command
    r = subprocess.run(
        [*cli, "eval", str(out), "--images", "40"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "image AUROC" in r.stdout and "baseline" in r.stdout and "recall per defect" in r.stdout
    report = __import__("json").loads((out / "eval_report.json").read_text())
    assert set(report["model"]) >= {"auroc", "recall", "false_reject", "p50_ms", "p99_ms"}
    bad = subprocess.run(
        [*cli, "train", "no_such_type", "--out", str(tmp_path / "x"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and "no part type 'no_such_type'" in bad.stderr


def test_operators_examples_join_the_training_set(tmp_path: Path) -> None:
    """What the console keeps when an operator overrules a verdict (an image under its label)
    is added to the next training set; a folder that is not a label is an error naming it."""
    import imageio.v3 as iio

    from policies.vision import Dataset
    from sim.vision import with_examples

    data = Dataset(np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 1, 2]), ["good", "scratch", "crack"])
    folder = tmp_path / "blank_al"
    (folder / "crack").mkdir(parents=True)
    (folder / "good").mkdir()
    iio.imwrite(folder / "crack" / "plan1_a.png", np.full((128, 128, 3), 200, np.uint8))
    iio.imwrite(folder / "good" / "plan2_b.png", np.full((64, 64, 3), 90, np.uint8))
    merged, n = with_examples(data, folder, 32)
    assert n == 2 and merged.images.shape == (5, 32, 32, 3)
    assert sorted(merged.labels[3:].tolist()) == [0, 2]
    assert with_examples(data, folder, 32, good_only=True)[1] == 1
    assert with_examples(data, tmp_path / "nothing", 32)[1] == 0
    (folder / "dent").mkdir()
    with pytest.raises(VisionError, match=r"dent.*'dent' is not one of good, scratch, crack"):
        with_examples(data, folder, 32)
    (folder / "dent").rmdir()
    (folder / "good" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(VisionError, match=r"broken\.png: not a usable example image"):
        with_examples(data, folder, 32)

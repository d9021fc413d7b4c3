"""Vision inspection models: small torch networks that judge a part from one camera image.

Two modes, one checkpoint format, one runtime:

- ``supervised``: a small convolutional classifier over ``good`` and the part type's defect
  classes, trained on labelled images. Its heat map is the per-cell probability that the cell
  is not good (the class activation of every defect class against ``good``).
- ``anomaly``: trained on good parts only (real plants rarely have labelled defects). The same
  classifier learns good images against the same images made anomalous on the fly
  (:func:`synthetic_anomaly`: scars, cut-and-pasted patches, painted-over regions, colour casts,
  as in CutPaste), so it flags what differs from good without being shown a real defect. The
  threshold is set on held-out good images for the false-reject rate asked for. It names no
  defect class.

Both export to ONNX with the normalisation and the scoring inside, so the runtime only feeds
uint8 RGB pixels. A checkpoint is a folder::

    vision.json     metadata (:class:`VisionInfo`): mode, part type, classes, image size,
                    threshold, the command that reproduces it, the SHA-256 of each file below
    vision.pt       the torch state dict (tensors only)
    vision.onnx     the ONNX export (what :class:`VisionModel` runs)
    eval_report.json, eval_report.md   what ``atelier vision eval`` measured (not hashed)

:class:`VisionModel` refuses a checkpoint whose hash, format or part type is wrong, and an image
that is empty, of the wrong shape or type, or not finite: :class:`VisionError` says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from policies.checkpoint import hashed_file, sha256
from policies.export import export_onnx, onnx_session

FORMAT: Final = "atelier-vision/1"
INFO_FILE = "vision.json"
WEIGHTS_FILE = "vision.pt"
ONNX_FILE = "vision.onnx"
GOOD: Final = "good"
Mode = Literal["supervised", "anomaly"]
Image = NDArray[np.uint8]
Progress = Callable[[int, int, str], None]


#: Shipped vision checkpoints live here, by name (as the shipped control policies do).
SHIPPED = Path(__file__).parent / "checkpoints"


def checkpoint_path(ref: str) -> Path:
    """A plant file's ``vision.model``: the name of a shipped checkpoint, else a folder's path."""
    shipped = SHIPPED / ref
    if "/" not in ref and "\\" not in ref and shipped.is_dir():
        return shipped
    return Path(ref).expanduser()


class VisionError(RuntimeError):
    """A vision checkpoint or image cannot be used; the message says which and why."""


class VisionInfo(BaseModel):
    """A vision checkpoint's metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["atelier-vision/1"] = FORMAT
    mode: Mode
    part_type: str
    plant: str
    machine: str
    classes: list[str] = Field(description="class names, good first (anomaly: good and defect)")
    image_size: int
    threshold: float = Field(description="an image whose score is above this fails")
    seed: int
    command: str = Field(description="the command that reproduces this checkpoint")
    files: dict[str, str] = Field(default_factory=dict, description="file name -> SHA-256")


# --------------------------------------------------------------------------- networks


class _Normalise(nn.Module):
    """uint8-range RGB ``[B, H, W, 3]`` to a normalised float ``[B, 3, H, W]``."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.25


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class Classifier(nn.Module):
    """Supervised: pixels ``[B, H, W, 3]`` (0..255) to (fail score ``[B]``, class probabilities
    ``[B, C]``, heat map ``[B, h, w]``). Class 0 is good; the fail score is 1 - p(good).

    The image's features are the mean and the maximum of each feature map over the cells (a
    defect lights a few cells); the heat map is how strongly each cell's features push the
    verdict away from good (its share of the max-pooled evidence), scaled to 0..1."""

    def __init__(self, n_classes: int, width: int = 24) -> None:
        super().__init__()
        self.norm = _Normalise()
        self.features = nn.Sequential(
            _block(3, width), _block(width, 2 * width), _block(2 * width, 2 * width), _block(2 * width, 4 * width)
        )
        self.head = nn.Linear(8 * width, n_classes)

    def logits(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells = self.features(self.norm(pixels))  # [B, D, h, w]
        pooled = torch.cat([cells.mean(dim=(2, 3)), cells.amax(dim=(2, 3))], dim=1)
        return self.head(pooled), cells

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, cells = self.logits(pixels)
        probs = torch.softmax(logits, dim=1)
        d = cells.shape[1]
        w = self.head.weight[:, d:]  # the max-pooled half: [C, D]
        push = (w[1:] - w[:1]).amax(dim=0)  # per feature, its strongest push toward a defect class
        heat = torch.relu(torch.einsum("bdhw,d->bhw", cells, push))
        heat = heat / heat.flatten(1).amax(dim=1).clamp(min=1e-6)[:, None, None]
        return 1.0 - probs[:, 0], probs, heat * (1.0 - probs[:, :1, None])


# --------------------------------------------------------------------------- training


@dataclass
class Dataset:
    """Images ``[N, H, W, 3]`` uint8 and labels ``[N]`` (indices into ``classes``; 0 is good)."""

    images: Image
    labels: NDArray[np.int64]
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise VisionError(f"images must be uint8 [N, H, W, 3], not {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise VisionError(f"{len(self.images)} images but {len(self.labels)} labels")

    def good(self) -> Dataset:
        keep = self.labels == 0
        return Dataset(self.images[keep], self.labels[keep], self.classes)


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips and quarter turns (a part may be held any way round), in pixel space."""
    if torch.rand((), generator=gen) < 0.5:
        batch = batch.flip(1)
    k = int(torch.randint(0, 4, (), generator=gen))
    return torch.rot90(batch, k, dims=(1, 2)) if k else batch


def _fit(
    n_classes: int,
    size: int,
    batch_of: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    epochs: int,
    seed: int,
    progress: Progress | None,
    batch: int,
) -> Classifier:
    """Train a :class:`Classifier` on ``size`` examples; ``batch_of`` makes the pixels and labels
    of the examples at some indices (seeded by the generator it is given)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = Classifier(n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((size + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(size, generator=gen)
        total = 0.0
        for i in range(0, size, batch):
            pixels, labels = batch_of(order[i : i + batch], gen)
            logits, _ = net.logits(pixels)
            loss = loss_fn(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(labels)
        if progress is not None:
            progress(epoch + 1, epochs, f"loss {total / size:.4f}")
    return net.eval()


def train_supervised(
    data: Dataset, epochs: int, seed: int, progress: Progress | None = None, batch: int = 64
) -> Classifier:
    """The classifier on labelled images (flips and quarter turns added)."""
    x = torch.from_numpy(data.images)
    y = torch.from_numpy(data.labels)
    # Defects are the rarer classes: weigh classes by their inverse frequency.
    counts = torch.bincount(y, minlength=len(data.classes)).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / counts) / len(counts))

    def batch_of(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return _augment(x[idx], gen), y[idx]

    return _fit(len(data.classes), len(x), batch_of, loss_fn, epochs, seed, progress, batch)


def synthetic_anomaly(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A good image ``[H, W, 3]`` (uint8) made anomalous the ways of self-supervised anomaly
    detection (CutPaste, Li et al. 2021): a thin "scar" of some colour, a patch of the image
    copied elsewhere with its colours jittered, a region painted over with the image's median
    colour, or a colour cast over a large region. Nothing in it knows the plant's defects."""
    h, w = image.shape[:2]
    out = image.float().clone()

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    kind = int(torch.randint(0, 4, (), generator=gen))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cy, cx = u(0.15, 0.85) * h, u(0.15, 0.85) * w
    if kind == 0:  # scar: a thin rotated bar
        angle, length, width = u(0, 3.1416), u(0.08, 0.35) * h, u(0.8, 3.0)
        along = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        across = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
        mask = (along.abs() < length / 2) & (across.abs() < width / 2)
        out[mask] = torch.tensor([u(0, 255), u(0, 255), u(0, 255)]) * u(0.2, 1.0)
    elif kind == 1:  # cut and paste a jittered patch
        ph, pw = int(u(0.08, 0.3) * h), int(u(0.08, 0.3) * w)
        sy, sx = int(u(0, 1) * (h - ph)), int(u(0, 1) * (w - pw))
        ty, tx = int(u(0, 1) * (h - ph)), int(u(0, 1) * (w - pw))
        patch = out[sy : sy + ph, sx : sx + pw] * torch.tensor([u(0.6, 1.4), u(0.6, 1.4), u(0.6, 1.4)])
        out[ty : ty + ph, tx : tx + pw] = (
            torch.rot90(patch, int(torch.randint(0, 4, (), generator=gen)))[:ph, :pw] if ph == pw else patch
        )
    elif kind == 2:  # paint a disc over with the image's median colour
        r = u(0.03, 0.12) * h
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 < r * r
        out[mask] = out.reshape(-1, 3).median(dim=0).values
    else:  # a colour cast over a large region
        r = u(0.3, 1.0) * h
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 < r * r
        gains = torch.tensor([u(0.55, 1.45), u(0.55, 1.45), u(0.55, 1.45)])
        gains = gains / gains.mean()
        out[mask] = out[mask] * gains
    return out.clamp(0, 255).to(torch.uint8)


def train_anomaly(
    good: Dataset, epochs: int, seed: int, progress: Progress | None = None, batch: int = 64
) -> Classifier:
    """Good images only: the classifier learns good against the same images made anomalous
    (:func:`synthetic_anomaly`, half of every batch, fresh each time); its score is the
    probability that an image is not good."""
    x = torch.from_numpy(good.images)

    def batch_of(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = _augment(x[idx], gen).clone()
        labels = (torch.rand(len(pixels), generator=gen) < 0.5).long()
        for k in torch.nonzero(labels).flatten().tolist():
            pixels[k] = synthetic_anomaly(pixels[k], gen)
        return pixels, labels

    return _fit(2, len(x), batch_of, nn.CrossEntropyLoss(), epochs, seed, progress, batch)


@torch.no_grad()
def scores(net: nn.Module, images: Image, batch: int = 256) -> NDArray[np.float64]:
    out = [net(torch.from_numpy(images[i : i + batch]))[0] for i in range(0, len(images), batch)]
    return torch.cat(out).double().numpy()


# --------------------------------------------------------------------------- checkpoints


def _to_onnx(net: nn.Module, size: int, path: Path) -> None:
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)  # not 1: the exporter would fix the batch at 1
    export_onnx(net, example, "pixels", ["score", "probs", "heat"], path, 1024)


def save(directory: Path, info: VisionInfo, net: nn.Module) -> VisionInfo:
    """Write the weights and the ONNX export, then the metadata that hashes them."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, onnx_path = directory / WEIGHTS_FILE, directory / ONNX_FILE
    torch.save(dict(net.state_dict()), weights)
    _to_onnx(net, info.image_size, onnx_path)
    info = info.model_copy(update={"files": {WEIGHTS_FILE: sha256(weights), ONNX_FILE: sha256(onnx_path)}})
    (directory / INFO_FILE).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return info


def read_info(directory: Path) -> VisionInfo:
    path = Path(directory) / INFO_FILE
    try:
        return VisionInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisionError(f"{path}: no vision checkpoint here (atelier vision train writes one)") from None
    except (OSError, UnicodeDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisionError(f"{path}: not a vision checkpoint's metadata: {first}") from None


def _verified(directory: Path, info: VisionInfo, name: str) -> Path:
    return hashed_file(directory, info.files, name, INFO_FILE, VisionError)


def load_network(directory: Path) -> tuple[VisionInfo, nn.Module]:
    """The eager network of a checkpoint (for evaluation against its export)."""
    info = read_info(directory)
    state = torch.load(_verified(directory, info, WEIGHTS_FILE), map_location="cpu", weights_only=True)
    net = Classifier(len(info.classes))
    net.load_state_dict(state)
    return info, net.eval()


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class Verdict:
    """One image judged: pass or fail, the defect class (None when passed, or ``defect`` when an
    anomaly model cannot name it), the confidence in the verdict (0.5..1), the score against the
    threshold, the heat map (``[h, w]``, 0..1 over the image) and how long the model took."""

    passed: bool
    defect: str | None
    confidence: float
    score: float
    threshold: float
    heat: NDArray[np.float32]
    seconds: float


def check_image(image: object, size: int) -> Image:
    """``image`` as a uint8 ``[size, size, 3]`` array, or :class:`VisionError` saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise VisionError(f"the image is a {type(image).__name__}, not an array of pixels")
    if image.size == 0:
        raise VisionError("the image is empty")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise VisionError(f"the image has shape {image.shape}; an RGB image is [height, width, 3]")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number) or not np.all(np.isfinite(image)):
            raise VisionError("the image's pixels are not finite numbers")
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[:2] != (size, size):
        image = resize(image, size)
    return np.ascontiguousarray(image)


def resize(image: Image, size: int) -> Image:
    """A square crop of the image's centre, resampled to ``size`` (area average, then nearest)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    out = nn.functional.interpolate(t, size=(size, size), mode="area")
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class VisionModel:
    """A vision checkpoint's ONNX export on one CPU thread: :meth:`judge` an image."""

    def __init__(self, directory: Path, part_type: str | None = None, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.info = read_info(self.directory)
        if part_type is not None and part_type != self.info.part_type:
            raise VisionError(
                f"{self.directory}: this checkpoint judges parts of type {self.info.part_type!r}, "
                f"not {part_type!r}; train one for it (atelier vision train)"
            )
        path = _verified(self.directory, self.info, ONNX_FILE)
        try:
            self._session = onnx_session(path, threads)
        except Exception as exc:
            raise VisionError(f"{path}: ONNX Runtime cannot load it: {exc}") from None

    @property
    def size(self) -> int:
        return self.info.image_size

    def run(self, images: Image) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        score, probs, heat = self._session.run(None, {"pixels": images})
        return score, probs, heat

    def judge(self, image: object) -> Verdict:
        pixels = check_image(image, self.size)
        t0 = time.perf_counter()
        score, probs, heat = self.run(pixels[None])
        seconds = time.perf_counter() - t0
        s, thr = float(score[0]), self.info.threshold
        if not np.isfinite(s) or not np.all(np.isfinite(probs)) or not np.all(np.isfinite(heat)):
            raise VisionError(f"{self.directory}: the model answered a score that is not a number ({s})")
        passed = s <= thr
        if self.info.mode == "supervised":
            p = probs[0]
            defect = None if passed else self.info.classes[1 + int(np.argmax(p[1:]))]
            confidence = float(1.0 - s) if passed else float(s)
        else:
            defect = None if passed else "defect"
            # How far past (or short of) the threshold, mapped to 0.5..1.
            confidence = float(0.5 + 0.5 * np.tanh(abs(s - thr) / max(min(thr, 1 - thr), 1e-6) * 3))
        h = np.asarray(heat[0], dtype=np.float32)
        return Verdict(passed, defect, confidence, s, thr, h, seconds)


class ImageSource(Protocol):
    """Where an inspection machine's images come from: the twin's camera
    (``sim.vision.TwinCamera``), a ROS 2 image topic (``robots.ros2.camera.RosImageSource``) or
    a folder of image files (:class:`FileImageSource`)."""

    def grab(self, timeout_s: float) -> Image:
        """The newest image (uint8 [H, W, 3]); raises VisionError when none comes in time."""
        ...


class FileImageSource:
    """The newest image file (PNG, JPEG, BMP) in a folder, written after the request began or
    at most ``timeout_s`` before it."""

    SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def grab(self, timeout_s: float) -> Image:
        import imageio.v3 as iio

        start = time.time()
        while True:
            files = (
                [p for p in self.folder.glob("*") if p.suffix.lower() in self.SUFFIXES] if self.folder.is_dir() else []
            )
            fresh = [p for p in files if p.stat().st_mtime >= start - timeout_s]
            if fresh:
                newest = max(fresh, key=lambda p: (p.stat().st_mtime_ns, p.name))
                try:
                    return np.asarray(iio.imread(newest, plugin="pillow"))
                except Exception as exc:
                    raise VisionError(f"{newest}: not a readable image ({type(exc).__name__})") from None
            if time.time() - start > timeout_s:
                raise VisionError(f"no new image in {self.folder} within {timeout_s:g} s (is the camera running?)")
            time.sleep(0.05)


# --------------------------------------------------------------------------- evaluation


def auroc(negatives: Sequence[float] | NDArray[Any], positives: Sequence[float] | NDArray[Any]) -> float:
    """Area under the ROC curve: the chance a positive (defective) scores above a negative (ties
    count half). Mann-Whitney U over the pooled ranks."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    if not len(neg) or not len(pos):
        raise VisionError("AUROC needs both good and defective images")
    both = np.concatenate([neg, pos])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    i = 0
    while i < len(both):
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(neg) * len(pos)))


def threshold_for(good_scores: NDArray[Any], false_reject: float) -> float:
    """The score above which at most ``false_reject`` of these good images would fail."""
    return float(np.quantile(np.asarray(good_scores, dtype=float), 1.0 - false_reject, method="higher"))


def figures(scores_: NDArray[Any], labels: NDArray[Any], classes: Sequence[str], threshold: float) -> dict[str, Any]:
    """AUROC, defect recall (overall and per class) and false-reject rate at ``threshold``."""
    good = scores_[labels == 0]
    bad = scores_[labels != 0]
    per = {
        c: float(np.mean(scores_[labels == i] > threshold)) for i, c in enumerate(classes) if i and np.any(labels == i)
    }
    return {
        "auroc": auroc(good, bad),
        "recall": float(np.mean(bad > threshold)),
        "false_reject": float(np.mean(good > threshold)),
        "recall_per_defect": per,
        "good": len(good),
        "defective": len(bad),
    }


class ReferenceDifference:
    """The classical baseline: the per-pixel median of good images is the reference; an image's
    score is its largest local (5x5 box-averaged) grey-level difference from it."""

    def __init__(self, good: Image) -> None:
        self.reference = np.median(good.astype(np.float32).mean(axis=3), axis=0)

    def score(self, images: Image) -> NDArray[np.float64]:
        grey = torch.from_numpy(images.astype(np.float32).mean(axis=3))
        diff = (grey - torch.from_numpy(self.reference)).abs()[:, None]
        local = nn.functional.avg_pool2d(diff, 5, stride=1, padding=2)
        return local.flatten(1).amax(dim=1).double().numpy()


def latency(model: VisionModel, images: Image, repeats: int = 1) -> tuple[float, float]:
    """p50 and p99 of one image's inference, in seconds (one thread, each image alone)."""
    times = []
    for _ in range(repeats):
        for img in images:
            t0 = time.perf_counter()
            model.run(img[None])
            times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))

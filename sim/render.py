"""Offscreen frames and videos of the twin from its named cameras.

Needs an OpenGL backend (``MUJOCO_GL=egl`` by default, or ``osmesa``). Files: ``.png`` for one
frame, ``.mp4`` (H.264 through the ffmpeg binary that ships inside ``imageio-ffmpeg``) or
``.gif`` for a clip.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import imageio.v3 as iio
import mujoco
import numpy as np

from sim._types import Image
from sim.twin import Twin

VIDEO_SUFFIXES = (".mp4", ".gif")
FRAME_SUFFIXES = (".png",)


class RenderError(RuntimeError):
    """Frames could not be rendered or written (no OpenGL, unknown camera, bad file name)."""


class Camera:
    """Renders frames of a twin from one named camera. Use as a context manager."""

    def __init__(self, twin: Twin, camera: str = "overview", width: int = 960, height: int = 540) -> None:
        if mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            names = [twin.model.camera(i).name for i in range(twin.model.ncam)]
            raise RenderError(f"no camera named {camera!r}; cameras: {', '.join(n for n in names if n)}")
        self.twin, self.camera = twin, camera
        try:
            self._renderer = mujoco.Renderer(twin.model, height=height, width=width)
        except Exception as exc:  # MuJoCo raises plain errors when no GL context can be made
            raise RenderError(
                f"cannot render offscreen ({exc}); set MUJOCO_GL=egl or MUJOCO_GL=osmesa "
                "(Debian: apt-get install libegl1 or libosmesa6)"
            ) from exc
        self._opt = mujoco.MjvOption()
        self._opt.sitegroup[:] = 0  # the models' frame and grip-axis markers are not for people

    def frame(self) -> Image:
        """An RGB image (height x width x 3, uint8) of the twin as it is now."""
        self._renderer.update_scene(self.twin.data, camera=self.camera, scene_option=self._opt)
        return np.asarray(self._renderer.render(), dtype=np.uint8).copy()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def check_output_path(path: Path) -> None:
    """Refuse a file name we cannot write before any work is done."""
    if path.suffix.lower() not in VIDEO_SUFFIXES + FRAME_SUFFIXES:
        raise RenderError(f"{path}: unknown file type {path.suffix!r}; use .png, .mp4 or .gif")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


def write_frames(path: Path, frames: list[Image], fps: int) -> list[Path]:
    """Write a clip (``.mp4``/``.gif``) or, for ``.png``, the last frame plus a contact sheet.

    Returns the files written. The file is written whole to a temporary name, then renamed, so
    a failure never leaves a half-written video behind.
    """
    check_output_path(path)
    if not frames:
        raise RenderError("no frames to write")
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".mp4":
            _write_mp4(tmp, frames, fps)
        elif suffix == ".gif":
            iio.imwrite(tmp, np.stack(frames), duration=1000 / fps, loop=0)
        else:
            iio.imwrite(tmp, frames[-1])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return [path]


def _write_mp4(path: Path, frames: list[Image], fps: int) -> None:
    import imageio_ffmpeg  # type: ignore[import-untyped]

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (w, h),
        fps=fps,
        codec="libx264",
        quality=7,
        pix_fmt_out="yuv420p",
        macro_block_size=2,
        output_params=["-f", "mp4"],
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()

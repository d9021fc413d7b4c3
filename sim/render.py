"""Offscreen frames and videos of the twin from its named cameras.

Needs an OpenGL backend (``MUJOCO_GL=egl`` by default, or ``osmesa``). Files: ``.png`` for one
frame, ``.mp4`` (H.264 through the ffmpeg binary that ships inside ``imageio-ffmpeg``) or
``.gif`` for a clip.

Every camera of a process renders on one thread, :class:`_GLThread`, which keeps a few
renderers: an OpenGL context belongs to the thread that made it, and making one (with its
meshes and textures uploaded) costs 0.3 to 1 s, longer than a rehearsal's inspections and
frames take to render. A renderer made for one twin renders every twin of the same compiled
model (:attr:`Twin.model_key`): each rehearsal has a twin of its own, with the same meshes and
textures, and the scene is taken from the twin's own model and data (its lamps, belts and
defect marks) every frame.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import copy
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import mujoco
import numpy as np

from sim._types import Image
from sim.twin import Twin

_T = TypeVar("_T")

VIDEO_SUFFIXES = (".mp4", ".gif")
FRAME_SUFFIXES = (".png",)


class RenderError(RuntimeError):
    """Frames could not be rendered or written (no OpenGL, unknown camera, bad file name)."""


class _GLThread:
    """The one thread of the process that owns OpenGL contexts (see the module docstring): it
    keeps the ``KEEP`` renderers used last (the least recently used closed first, on this
    thread) and renders for whoever asks while the asker waits, so the twin it renders does
    not step meanwhile."""

    KEEP = 6

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future[object]] | None] = (
            queue.SimpleQueue()
        )
        self._renderers: OrderedDict[Hashable, mujoco.Renderer] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="atelier-gl", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)
        for r in self._renderers.values():
            r.close()

    def call(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` run on this thread, the caller waiting for its result or its exception."""
        fut: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut.result()  # type: ignore[return-value]

    def renderer(self, twin: Twin, width: int, height: int, antialias: bool = True) -> mujoco.Renderer:
        """(On this thread only.) A renderer for ``twin``'s compiled model at this size, with the
        model's multisampling or none (``antialias`` False: about 2.5 times faster in software)."""
        key = (twin.model_key, width, height, antialias)
        r = self._renderers.get(key)
        if r is not None:
            self._renderers.move_to_end(key)
            return r
        model = twin.model
        if not antialias:
            model = copy.deepcopy(model)
            model.vis.quality.offsamples = 0
        r = self._renderers[key] = mujoco.Renderer(model, height=height, width=width)
        while len(self._renderers) > self.KEEP:
            self._renderers.popitem(last=False)[1].close()
        return r

    def close(self) -> None:
        """Close every renderer on this thread, and end it (at exit)."""
        self._jobs.put(None)
        self._thread.join(5.0)


_GL: _GLThread | None = None
_GL_LOCK = threading.Lock()


def gl_thread() -> _GLThread:
    """The process's OpenGL thread, started on first use."""
    global _GL
    with _GL_LOCK:
        if _GL is None:
            _GL = _GLThread()
        return _GL


def no_sites() -> mujoco.MjvOption:
    """Scene options without the models' site markers (frames and grip points are not for people)."""
    opt = mujoco.MjvOption()
    opt.sitegroup[:] = 0
    return opt


class Camera:
    """Renders frames of a twin from one named camera, on the process's OpenGL thread. Use as
    a context manager (the renderer stays with the thread for the next twin of this model)."""

    def __init__(
        self, twin: Twin, camera: str = "overview", width: int = 960, height: int = 540, antialias: bool = True
    ) -> None:
        cam = mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam < 0:
            names = [twin.model.camera(i).name for i in range(twin.model.ncam)]
            raise RenderError(f"no camera named {camera!r}; cameras: {', '.join(n for n in names if n)}")
        self.twin, self.camera, self.size, self.antialias = twin, camera, (width, height), antialias
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = cam
        self._opt = no_sites()
        gl = self._gl = gl_thread()
        try:
            gl.call(lambda: gl.renderer(twin, width, height, antialias))
        except Exception as exc:  # MuJoCo raises plain errors when no GL context can be made
            raise RenderError(
                f"cannot render offscreen ({exc}); set MUJOCO_GL=egl or MUJOCO_GL=osmesa "
                "(Debian: apt-get install libegl1 or libosmesa6)"
            ) from exc

    def frame(self) -> Image:
        """An RGB image (height x width x 3, uint8) of the twin as it is now."""
        return self._gl.call(self._render)

    def _render(self) -> Image:
        r = self._gl.renderer(self.twin, *self.size, self.antialias)
        tw = self.twin
        # The scene from this twin's own model and data (the renderer may have been made for
        # another twin of the same compiled model).
        mujoco.mjv_updateScene(tw.model, tw.data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL.value, r.scene)
        return np.asarray(r.render(), dtype=np.uint8).copy()

    def close(self) -> None:
        """Nothing to free: the renderer stays with the OpenGL thread."""

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
    import imageio.v3 as iio

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

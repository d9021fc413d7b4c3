"""Part defects in the twin: drawn on a part's underside, where an upward-looking inspection
camera sees them.

The builder gives every part the marks its type may show (:func:`add_defect_geoms`), hidden;
:func:`show_defect` makes one visible at a placement drawn from a random generator (where a
scratch runs, where an edge is chipped), so one compiled model serves every seed. Parts of a
type that lists ``missing_hole`` have a hole; a part with that defect has none.

Names in the compiled model: ``P/defect/K/i`` for the ``i``-th mark of defect ``K`` on part
``P``, and ``P/hole`` for its hole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from plant.config import DEFECT_KINDS, PartType

#: How many marks each defect is drawn with (a crack is a zigzag of segments).
MARKS = {"scratch": 1, "crack": 3, "chipped_edge": 1, "missing_hole": 0, "wrong_colour": 0}
#: Marks stand this far below the underside (m), so they are drawn over it, never inside it.
PROUD_M = 4e-4
_SCRATCH_RGBA = (0.30, 0.30, 0.32, 1.0)
_CRACK_RGBA = (0.05, 0.05, 0.05, 1.0)
_CHIP_RGBA = (0.45, 0.40, 0.36, 1.0)
_HOLE_RGBA = (0.04, 0.04, 0.05, 1.0)
#: The colour a part of the wrong colour is tinted toward (a bronze against a grey metal).
_WRONG_TINT = np.array([0.85, 0.55, 0.25])


def add_defect_geoms(body: mujoco.MjsBody, part: str, part_type: PartType) -> None:
    """The hidden marks (and the hole) of ``part``'s defects, as geoms of its body that touch nothing."""
    sx, sy, sz = (s / 2 for s in part_type.size_m)
    z = -sz - PROUD_M
    for kind in part_type.defects:
        for i in range(MARKS[kind]):
            g = body.add_geom(
                name=f"{part}/defect/{kind}/{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                pos=[0, 0, z],
                size=[0.001, 0.001, PROUD_M],
                rgba=[0, 0, 0, 0],
                mass=0,
            )
            g.contype = g.conaffinity = 0
    if "missing_hole" in part_type.defects:
        g = body.add_geom(
            name=f"{part}/hole",
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            pos=[0, 0, z],
            size=[0.15 * min(sx, sy) * 2 / 2, PROUD_M, 0],
            rgba=list(_HOLE_RGBA),
            mass=0,
        )
        g.contype = g.conaffinity = 0


@dataclass(frozen=True)
class PartMarks:
    """Geom ids of one part's body, its marks and its hole in a compiled model."""

    body: int
    geom: int
    marks: dict[str, tuple[int, ...]]
    hole: int
    color: tuple[float, float, float, float]
    size_m: tuple[float, float, float]

    @classmethod
    def find(cls, model: mujoco.MjModel, part: str, part_type: PartType) -> PartMarks:
        def gid(name: str) -> int:
            return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name))

        marks = {k: tuple(gid(f"{part}/defect/{k}/{i}") for i in range(MARKS[k])) for k in part_type.defects}
        return cls(
            int(model.body(part).id),
            gid(part),
            marks,
            gid(f"{part}/hole"),
            tuple(part_type.color_rgba),  # type: ignore[arg-type]
            tuple(part_type.size_m),  # type: ignore[arg-type]
        )


def _yaw_quat(angle: float) -> list[float]:
    return [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]


def show_defect(model: mujoco.MjModel, marks: PartMarks, defect: str | None, rng: np.random.Generator) -> None:
    """Show ``defect`` (a name of :data:`~plant.config.DEFECT_KINDS`, or None for a good part) on
    the part, placed by ``rng``; every other mark is hidden and the part's colour restored."""
    if defect is not None and defect not in DEFECT_KINDS:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECT_KINDS)}")
    if defect is not None and defect not in marks.marks:
        raise ValueError(f"this part's type does not list the defect {defect!r}")
    for ids in marks.marks.values():
        for g in ids:
            model.geom_rgba[g][3] = 0.0
    model.geom_rgba[marks.geom] = marks.color
    if marks.hole >= 0:
        model.geom_rgba[marks.hole][3] = 0.0 if defect == "missing_hole" else 1.0
    hx, hy, hz = (s / 2 for s in marks.size_m)
    z = -hz - PROUD_M
    short = min(hx, hy)
    if defect == "scratch":
        (g,) = marks.marks["scratch"]
        cx, cy = rng.uniform(-0.4, 0.4) * hx, rng.uniform(-0.4, 0.4) * hy
        model.geom_pos[g] = (cx, cy, z)
        model.geom_quat[g] = _yaw_quat(rng.uniform(0, math.pi))
        model.geom_size[g] = (rng.uniform(0.35, 0.6) * short, rng.uniform(0.015, 0.025) * short, PROUD_M)
        model.geom_rgba[g] = _SCRATCH_RGBA
    elif defect == "crack":
        x, y = rng.uniform(-0.5, 0.5) * hx, rng.uniform(-0.5, 0.5) * hy
        heading = rng.uniform(0, 2 * math.pi)
        for g in marks.marks["crack"]:
            length = rng.uniform(0.15, 0.3) * short
            heading += rng.uniform(-1.0, 1.0)
            dx, dy = math.cos(heading) * length, math.sin(heading) * length
            # A crack stays on the face: a segment that would leave it turns back.
            if not (abs(x + 2 * dx) < 0.9 * hx and abs(y + 2 * dy) < 0.9 * hy):
                heading += math.pi
                dx, dy = -dx, -dy
            model.geom_pos[g] = (x + dx, y + dy, z)
            model.geom_quat[g] = _yaw_quat(heading)
            model.geom_size[g] = (length, rng.uniform(0.012, 0.02) * short, PROUD_M)
            model.geom_rgba[g] = _CRACK_RGBA
            x, y = x + 2 * dx, y + 2 * dy
    elif defect == "chipped_edge":
        (g,) = marks.marks["chipped_edge"]
        side = int(rng.integers(4))
        along = rng.uniform(-0.7, 0.7)
        cx, cy = [(hx, along * hy), (-hx, along * hy), (along * hx, hy), (along * hx, -hy)][side]
        size = rng.uniform(0.18, 0.3) * short
        model.geom_pos[g] = (cx, cy, z)
        model.geom_quat[g] = _yaw_quat(math.pi / 4 + rng.uniform(-0.3, 0.3))
        model.geom_size[g] = (size, size, PROUD_M)
        model.geom_rgba[g] = _CHIP_RGBA
    elif defect == "wrong_colour":
        base = np.asarray(marks.color[:3])
        mix = rng.uniform(0.45, 0.8)
        model.geom_rgba[marks.geom][:3] = (1 - mix) * base + mix * _WRONG_TINT * base.max()

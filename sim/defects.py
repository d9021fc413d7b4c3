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
from numpy.typing import NDArray

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

        marks: dict[str, tuple[int, ...]] = {
            k: tuple(gid(f"{part}/defect/{k}/{i}") for i in range(MARKS[k])) for k in part_type.defects
        }
        return cls(
            int(model.body(part).id),
            gid(part),
            marks,
            gid(f"{part}/hole"),
            tuple(part_type.color_rgba),  # type: ignore[arg-type]
            tuple(part_type.size_m),  # type: ignore[arg-type]
        )


#: A face of a box part: (axis 0/1/2 for x/y/z, sign +1/-1); the underside is (2, -1).
Face = tuple[int, int]
UNDERSIDE: Face = (2, -1)
FACES: tuple[Face, ...] = ((0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1))


def face_down(xmat: NDArray[np.float64]) -> Face:
    """The face of a body (its orientation matrix ``xmat``, 9 numbers) that points most nearly
    down: what a camera under it sees."""
    r = np.asarray(xmat, dtype=float).reshape(3, 3)
    i = int(np.argmax(np.abs(r[2])))
    return i, (-1 if r[2, i] > 0 else 1)


def _on_face(
    face: Face, half: tuple[float, float, float], a: float, b: float, angle: float
) -> tuple[list[float], list[float]]:
    """Position (body frame) and orientation of a flat mark on ``face``: at (a, b) times the
    face's half sizes along its two in-plane axes, its long side at ``angle`` in the plane, its
    thin side along the face's normal (a cylinder's axis, too), standing proud of the face."""
    axis, sign = face
    u_ax, v_ax = [k for k in range(3) if k != axis]
    n = np.zeros(3)
    n[axis] = sign
    u, v = np.eye(3)[u_ax], np.eye(3)[v_ax]
    pos = n * (half[axis] + PROUD_M) + u * a * half[u_ax] + v * b * half[v_ax]
    x = math.cos(angle) * u + math.sin(angle) * v
    y = np.cross(n, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x, y, n]).flatten())
    return pos.tolist(), quat.tolist()


def show_defect(
    model: mujoco.MjModel,
    marks: PartMarks,
    defect: str | None,
    rng: np.random.Generator,
    face: Face = UNDERSIDE,
) -> None:
    """Show ``defect`` (a name of :data:`~plant.config.DEFECT_KINDS`, or None for a good part) on
    the part's ``face``, placed by ``rng``; every other mark is hidden and the part's colour
    restored. The hole of a type that has one is drawn on that face too. A camera sees one face:
    the twin draws a part's marks on the face presented to it (:meth:`sim.twin.Twin.judge`)."""
    if defect is not None and defect not in DEFECT_KINDS:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECT_KINDS)}")
    if defect is not None and defect not in marks.marks:
        raise ValueError(f"this part's type does not list the defect {defect!r}")
    for ids in marks.marks.values():
        for g in ids:
            model.geom_rgba[g][3] = 0.0
            # Built at the body's orientation, the compiler marked them as sharing it, and the
            # kinematics would then ignore the orientation set here.
            model.geom_sameframe[g] = 0
    if marks.hole >= 0:
        model.geom_sameframe[marks.hole] = 0
    model.geom_rgba[marks.geom] = marks.color
    half = tuple(s / 2 for s in marks.size_m)
    u_ax, v_ax = [k for k in range(3) if k != face[0]]
    hu, hv = half[u_ax], half[v_ax]
    short = min(hu, hv)
    if marks.hole >= 0:
        pos, quat = _on_face(face, half, 0.0, 0.0, 0.0)  # type: ignore[arg-type]
        model.geom_pos[marks.hole], model.geom_quat[marks.hole] = pos, quat
        model.geom_size[marks.hole][0] = 0.2 * short
        model.geom_rgba[marks.hole][3] = 0.0 if defect == "missing_hole" else 1.0

    def put(g: int, a: float, b: float, angle: float, size: tuple[float, float], rgba: tuple[float, ...]) -> None:
        pos, quat = _on_face(face, half, a, b, angle)  # type: ignore[arg-type]
        model.geom_pos[g], model.geom_quat[g] = pos, quat
        model.geom_size[g] = (size[0], size[1], PROUD_M)
        model.geom_rgba[g] = rgba

    if defect == "scratch":
        (g,) = marks.marks["scratch"]
        length = rng.uniform(0.35, 0.6) * short
        put(
            g,
            rng.uniform(-0.4, 0.4),
            rng.uniform(-0.4, 0.4),
            rng.uniform(0, math.pi),
            (length, rng.uniform(0.015, 0.025) * short),
            _SCRATCH_RGBA,
        )
    elif defect == "crack":
        x, y = rng.uniform(-0.5, 0.5) * hu, rng.uniform(-0.5, 0.5) * hv
        heading = rng.uniform(0, 2 * math.pi)
        for g in marks.marks["crack"]:
            length = rng.uniform(0.15, 0.3) * short
            heading += rng.uniform(-1.0, 1.0)
            dx, dy = math.cos(heading) * length, math.sin(heading) * length
            # A crack stays on the face: a segment that would leave it turns back.
            if not (abs(x + 2 * dx) < 0.9 * hu and abs(y + 2 * dy) < 0.9 * hv):
                heading += math.pi
                dx, dy = -dx, -dy
            put(g, (x + dx) / hu, (y + dy) / hv, heading, (length, rng.uniform(0.015, 0.025) * short), _CRACK_RGBA)
            x, y = x + 2 * dx, y + 2 * dy
    elif defect == "chipped_edge":
        (g,) = marks.marks["chipped_edge"]
        along = rng.uniform(-0.7, 0.7)
        a, b = [(1.0, along), (-1.0, along), (along, 1.0), (along, -1.0)][int(rng.integers(4))]
        size = rng.uniform(0.18, 0.3) * short
        put(g, a, b, math.pi / 4 + rng.uniform(-0.3, 0.3), (size, size), _CHIP_RGBA)
    elif defect == "wrong_colour":
        base = np.asarray(marks.color[:3])
        mix = rng.uniform(0.45, 0.8)
        model.geom_rgba[marks.geom][:3] = (1 - mix) * base + mix * _WRONG_TINT * base.max()

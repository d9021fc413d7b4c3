"""Forward and inverse kinematics of one arm on a MuJoCo model.

The model is the twin's (or any model containing the arm); this module does not know where
models come from. It keeps a private ``MjData`` as scratch, so it never disturbs a running
simulation. Inverse kinematics is damped least squares with joint-limit clamping and
null-space pull toward a rest pose; it does not block on anything but the CPU (typically
0.1-2 ms per solve).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class IKResult:
    """A joint solution and how well it reaches the target (m, rad)."""

    q: FloatArray
    ok: bool
    position_error_m: float
    rotation_error_rad: float
    iterations: int


class ArmKinematics:
    """Kinematics of the joints ``qpos_adr``/``dof_adr`` of ``model``, to the site ``site_id``."""

    def __init__(
        self,
        model: mujoco.MjModel,
        qpos_adr: Sequence[int],
        dof_adr: Sequence[int],
        site_id: int,
        limits: Sequence[tuple[float, float]],
        rest: Sequence[float] | None = None,
    ) -> None:
        if not (len(qpos_adr) == len(dof_adr) == len(limits)):
            raise ValueError("qpos_adr, dof_adr and limits must have one entry per joint")
        self.model = model
        self.data = mujoco.MjData(model)
        self.qpos_adr = np.asarray(qpos_adr, dtype=int)
        self.dof_adr = np.asarray(dof_adr, dtype=int)
        self.site_id = int(site_id)
        self.lower = np.array([lo for lo, _ in limits], dtype=float)
        self.upper = np.array([hi for _, hi in limits], dtype=float)
        self.rest = np.asarray(rest if rest is not None else (self.lower + self.upper) / 2, dtype=float)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        # The arm: the body its first joint moves and every body below it (links, tool, fingers).
        # What it can hit: bodies fixed in the world (machines, tables, bins, walls), except the
        # ones it stands on.
        root = int(model.jnt_bodyid[model.jnt_qposadr.tolist().index(int(self.qpos_adr[0]))]) if len(qpos_adr) else 0
        arm = {root}
        for b in range(root + 1, model.nbody):
            if int(model.body_parentid[b]) in arm:
                arm.add(b)
        below = set()
        b = int(model.body_parentid[root])
        while b > 0:
            below.add(b)
            b = int(model.body_parentid[b])
        self._arm = frozenset(arm)
        self._fixed = frozenset(
            b
            for b in range(1, model.nbody)
            if int(model.body_weldid[b]) == 0 and int(model.body_mocapid[b]) < 0 and b not in below
        )

    @property
    def dof(self) -> int:
        return len(self.qpos_adr)

    def _set(self, q: FloatArray) -> None:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def fk(self, q: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Site position (m, world frame) and rotation matrix (3x3) at joint angles ``q``."""
        self._set(np.asarray(q, dtype=float))
        return (self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy())

    def hits(self, q: FloatArray, depth_m: float = 0.01) -> str | None:
        """The body fixed in the world (a machine, a table, a bin) that the arm would be inside
        of by more than ``depth_m`` at ``q``, by name, or None. Other arms and loose parts are
        where the model starts them, and are not counted."""
        m, d = self.model, self.data
        d.qpos[self.qpos_adr] = np.asarray(q, dtype=float)
        mujoco.mj_kinematics(m, d)
        mujoco.mj_collision(m, d)
        arm, fixed = self._arm, self._fixed
        for i in range(d.ncon):
            c = d.contact[i]
            if -float(c.dist) <= depth_m:
                continue
            b1, b2 = int(m.geom_bodyid[c.geom[0]]), int(m.geom_bodyid[c.geom[1]])
            other = b2 if b1 in arm else b1 if b2 in arm else -1
            if other in fixed:
                return str(m.body(other).name)
        return None

    def path_hits(self, q_from: FloatArray, q_to: FloatArray, step_rad: float = 0.05) -> str | None:
        """:meth:`hits` along the straight joint-space line from ``q_from`` to ``q_to`` (no joint
        moves more than ``step_rad`` between the poses checked), the first body hit, or None."""
        a, b = np.asarray(q_from, dtype=float), np.asarray(q_to, dtype=float)
        n = max(1, int(np.ceil(float(np.max(np.abs(b - a), initial=0.0)) / step_rad)))
        for k in range(1, n + 1):
            hit = self.hits(a + (b - a) * (k / n))
            if hit is not None:
                return hit
        return None

    def jacobian(self, q: FloatArray) -> FloatArray:
        """6 x dof Jacobian (linear rows first) of the site at ``q``."""
        self._set(np.asarray(q, dtype=float))
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
        return np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])

    def ik(
        self,
        target_pos: FloatArray,
        target_rot: FloatArray | None = None,
        q0: FloatArray | None = None,
        tol_m: float = 1e-3,
        tol_rad: float = 1e-2,
        max_iter: int = 300,
        damping: float = 0.05,
        rotation_weight: float = 0.5,
        approach_axis: FloatArray | None = None,
    ) -> IKResult:
        """Joint angles that put the site at ``target_pos`` (and ``target_rot`` if given).

        Damped least squares, step-limited, clamped to the joint limits every iteration, with a
        small null-space pull toward the rest pose. ``ok`` is False when the tolerance was not
        met (the target is out of reach or outside the limits); the best ``q`` is still returned.

        ``approach_axis`` (a unit vector, world frame) instead of ``target_rot`` asks only that
        the site's z axis point along it, leaving the rotation about it free (a top-down grasp
        of a part that looks the same from every side).
        """
        q = np.clip(np.asarray(q0 if q0 is not None else self.rest, dtype=float), self.lower, self.upper)
        target_pos = np.asarray(target_pos, dtype=float)
        best = (np.inf, q.copy(), np.inf, np.inf)
        err_rot_v = np.zeros(3)
        it = 0
        for it in range(1, max_iter + 1):
            pos, rot = self.fk(q)
            err_p = target_pos - pos
            if approach_axis is not None:
                target_rot = _align_z(rot, np.asarray(approach_axis, dtype=float))
            if target_rot is not None:
                r_err = np.asarray(target_rot) @ rot.T
                quat = np.zeros(4)
                mujoco.mju_mat2Quat(quat, r_err.flatten())
                mujoco.mju_quat2Vel(err_rot_v, quat, 1.0)
                err = np.concatenate([err_p, rotation_weight * err_rot_v])
            else:
                err_rot_v[:] = 0
                err = err_p
            pe, re = float(np.linalg.norm(err_p)), float(np.linalg.norm(err_rot_v))
            score = pe + 0.1 * re
            if score < best[0]:
                best = (score, q.copy(), pe, re)
            if pe < tol_m and (target_rot is None or re < tol_rad):
                return IKResult(q, True, pe, re, it)
            jac = self.jacobian(q)
            jac = jac[:3] if target_rot is None else np.vstack([jac[:3], rotation_weight * jac[3:]])
            jjt = jac @ jac.T + (damping**2) * np.eye(jac.shape[0])
            dq = jac.T @ np.linalg.solve(jjt, err)
            # Null-space pull toward rest keeps elbows sensible without fighting the task.
            null = np.eye(self.dof) - np.linalg.pinv(jac) @ jac
            dq += 0.05 * null @ (self.rest - q)
            step = float(np.max(np.abs(dq)))
            if step > 0.2:
                dq *= 0.2 / step
            q = np.clip(q + dq, self.lower, self.upper)
        _, q_best, pe, re = best
        return IKResult(q_best, False, pe, re, it)


def _align_z(rot: FloatArray, axis: FloatArray) -> FloatArray:
    """``rot`` turned by the smallest rotation that brings its z column onto ``axis``."""
    z = rot[:, 2]
    a = axis / np.linalg.norm(axis)
    v = np.cross(z, a)
    c = float(np.dot(z, a))
    s = float(np.linalg.norm(v))
    if s < 1e-9:
        if c > 0:
            return rot
        # Opposite: half a turn about the site's x axis.
        flipped: FloatArray = rot @ np.diag([1.0, -1.0, -1.0])
        return flipped
    k = v / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    turn = np.eye(3) + s * kx + (1 - c) * (kx @ kx)
    return np.asarray(turn @ rot, dtype=float)


def as_slice(idx: NDArray[np.int_]) -> slice | NDArray[np.int_]:
    """Array addresses ``idx`` as a slice when they are consecutive, as an arm's joints are (a
    slice reads and writes the same elements, without numpy's fancy indexing), else ``idx``."""
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx


def _motion_bound(model: mujoco.MjModel, qpos_adr: NDArray[np.int_], body_ids: NDArray[np.int_], site_id: int) -> float:
    """How far (m) any point of :class:`LinkPoints` can move per radian of one of its joints (per
    metre of a sliding one), at most: the length of the chain from the first joint that moves
    them to each point (every body offset below that joint, every joint anchor, and the site's
    offset). Changing joints by ``dq`` moves no point further than this times ``sum(|dq|)``:
    a hinge moves a point by at most its distance from the axis times the angle, one joint after
    the other. ``inf`` when a joint that moves them is neither a hinge nor a slide."""
    moving = {int(a) for a in qpos_adr}
    moving_joints = {j for j in range(model.njnt) if int(model.jnt_qposadr[j]) in moving}
    bodies: set[int] = set()
    for start in [*body_ids.tolist(), int(model.site_bodyid[site_id])]:
        b = int(start)
        while b > 0 and b not in bodies:
            bodies.add(b)
            b = int(model.body_parentid[b])

    def joints(b: int) -> range:
        return range(int(model.body_jntadr[b]), int(model.body_jntadr[b]) + int(model.body_jntnum[b]))

    def moves(b: int) -> bool:
        return any(int(model.jnt_qposadr[j]) in moving for j in joints(b))

    total = float(np.linalg.norm(model.site_pos[site_id]))
    for b in bodies:
        for j in joints(b):
            kind = int(model.jnt_type[j])
            if kind not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE) and j in moving_joints:
                return float("inf")
            total += float(np.linalg.norm(model.jnt_pos[j]))
        # The offset from the parent counts once a joint above this body moves it.
        up = int(model.body_parentid[b])
        while up > 0 and not moves(up):
            up = int(model.body_parentid[up])
        if up > 0:
            total += float(np.linalg.norm(model.body_pos[b]))
    return max(total, 1.0)


class LinkPoints:
    """World positions (m) of points along an arm at a joint configuration, for safety checks.

    The points are the origins of ``body_ids`` (in the given order, base to flange), the
    midpoints between consecutive ones (links are long), and the site ``site_id`` (the tool).
    Each carries a radius (m) that covers the link around it. Own scratch ``MjData``: safe to
    use from one thread while another thread uses the model elsewhere. About 10-15 us a call.
    ``motion_bound_m``: no point moves further than it times ``sum(|dq|)`` when the joints
    change by ``dq`` (see :func:`_motion_bound`).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        qpos_adr: Sequence[int],
        body_ids: Sequence[int],
        site_id: int,
        link_radius_m: float = 0.08,
        tool_radius_m: float = 0.06,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.qpos_adr = np.asarray(qpos_adr, dtype=int)
        self.body_ids = np.asarray(body_ids, dtype=int)
        self.site_id = int(site_id)
        n = len(self.body_ids)
        self.radius_m = np.array([link_radius_m] * (2 * n - 1) + [tool_radius_m], dtype=float)
        # Called several times per control period: keep the views into the scratch data (they
        # stay valid as long as it lives) and write the joints through a slice when they are
        # consecutive, as an arm's are.
        self._n = n
        self._qpos = self.data.qpos
        self._xpos = self.data.xpos
        self._site_xpos = self.data.site_xpos[self.site_id]
        self._qpos_at = as_slice(self.qpos_adr)
        self.motion_bound_m = _motion_bound(model, self.qpos_adr, self.body_ids, self.site_id)

    @property
    def count(self) -> int:
        return len(self.radius_m)

    def at(self, q: FloatArray) -> FloatArray:
        """(count, 3) array of point positions (m, world) at joint angles ``q`` (rad), a new
        array every call: the body origins, the midpoints between consecutive ones, the site."""
        self._qpos[self._qpos_at] = q
        mujoco.mj_kinematics(self.model, self.data)
        n = self._n
        out: FloatArray = np.empty((2 * n, 3))
        self._xpos.take(self.body_ids, axis=0, out=out[:n])
        mids = out[n : 2 * n - 1]
        np.add(out[: n - 1], out[1:n], out=mids)
        mids *= 0.5
        out[2 * n - 1] = self._site_xpos
        return out

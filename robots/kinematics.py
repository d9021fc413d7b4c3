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
    ) -> IKResult:
        """Joint angles that put the site at ``target_pos`` (and ``target_rot`` if given).

        Damped least squares, step-limited, clamped to the joint limits every iteration, with a
        small null-space pull toward the rest pose. ``ok`` is False when the tolerance was not
        met (the target is out of reach or outside the limits); the best ``q`` is still returned.
        """
        q = np.clip(np.asarray(q0 if q0 is not None else self.rest, dtype=float), self.lower, self.upper)
        target_pos = np.asarray(target_pos, dtype=float)
        best = (np.inf, q.copy(), np.inf, np.inf)
        err_rot_v = np.zeros(3)
        it = 0
        for it in range(1, max_iter + 1):
            pos, rot = self.fk(q)
            err_p = target_pos - pos
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

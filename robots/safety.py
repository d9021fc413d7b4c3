"""The safety supervisor: between every command source and the hardware, at control rate.

Nothing reaches the joints without :meth:`SafetySupervisor.filter`, which returns the command
it let through (lerobot's ``send_action`` habit, so a test can assert on it). It enforces:

- joint position, velocity and acceleration limits of the plant description (clamp);
- the Cartesian geofence and the keep-out zones of the plant for the tool and the links,
  checked at the commanded pose and at the pose where a stop begun now would end (refuse,
  then a controlled stop);
- speed and separation monitoring (SSM) against tracked people with the ISO/TS 15066
  protective separation distance: slow down in the warning band, protective stop inside;
- a command watchdog for streamed command sources;
- the joint-state check (:meth:`SafetySupervisor.observe`): a reading that is not finite, of the
  wrong length, outside the joint limits, faster than the joints can move, or older than the
  last one, and a reading that stopped coming (the runtime's state timeout,
  :meth:`SafetySupervisor.sensor_fault`), stop the robot (category 2 at rest, 1 moving) until an
  operator resets it (or, where the plant says ``sensor_fault_reset: auto``, until good data
  has come for a while); the supervisor never computes with a reading it refused;
- the e-stop latch, persisted in a file, that only an operator's reset clears.

The zones, the geofence, the SSM parameters and the separation formula are those of
:mod:`plant.safety_model`, the one model the guardrails check plans against (re-exported here:
``SsmConfig``, ``BoxVolume``, ``CylinderVolume``, ``protective_separation_distance_m``).

Stop categories (IEC 60204-1): 0 removes drive power at once (the brakes hold the robot where
it is: the supervisor commands the measured position), 1 is a controlled stop then power off,
2 is a controlled stop with power on and the position held. After a category 0 or 1 stop the
drives stay off until the cause is cleared.

Pure logic: no threads, no I/O except the latch file, no ROS. One supervisor per robot, called
from one thread (the runtime's control loop); :meth:`trip_estop` may be called from any thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy._core.umath as _umath  # (numpy 1.26 and 2 alike)
from numpy.typing import NDArray

from plant.config import PlantDescription
from plant.safety_model import BoxVolume as BoxVolume
from plant.safety_model import CylinderVolume as CylinderVolume
from plant.safety_model import SsmConfig as SsmConfig
from plant.safety_model import Volume as Volume
from plant.safety_model import geofence_m, keep_out_volumes
from plant.safety_model import protective_separation_distance_m as protective_separation_distance_m
from robots.interface import FloatArray, JointState, SafetyEvent, StopCategory
from robots.trajectory import brake_step

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits: positions (rad), speeds (rad/s), accelerations (rad/s^2)."""

    lower_rad: FloatArray
    upper_rad: FloatArray
    max_speed_rad_s: FloatArray
    max_accel_rad_s2: FloatArray

    @property
    def dof(self) -> int:
        return len(self.lower_rad)


@dataclass(frozen=True)
class SafetyConfig:
    """Everything the supervisor enforces for one robot."""

    robot: str
    joint_names: tuple[str, ...]
    limits: JointLimits
    control_period_s: float
    # Geofence: the axis-aligned box (m) every checked point (with its radius) must stay in.
    geofence_low_m: tuple[float, float, float]
    geofence_high_m: tuple[float, float, float]
    keep_out: tuple[Volume, ...] = ()
    ssm: SsmConfig = field(default_factory=SsmConfig)
    # A streamed command source that falls silent this long trips the watchdog.
    watchdog_timeout_s: float = 0.1
    estop_category: StopCategory = StopCategory.CAT1
    protective_stop_category: StopCategory = StopCategory.CAT2
    watchdog_category: StopCategory = StopCategory.CAT2
    # Joint position limits are enforced this far (rad) inside the plant's values.
    position_margin_rad: float = 0.01
    # Joint-state check. A reading this far (rad) outside the plant's limits is refused: the
    # commands stay 0.01 rad inside them, a servo overshoots by less, a hard stop is farther.
    sensor_position_tolerance_rad: float = 0.05
    # A reading whose velocity, or whose jump since the last good reading over the time between
    # their stamps (at least a control period: stamps jitter), is faster than this multiple of
    # the joint's speed limit, plus the tolerances below, is refused (the twin's servos measure
    # up to 1.001 times the limit).
    sensor_speed_factor: float = 1.5
    sensor_speed_tolerance_rad_s: float = 0.2  # velocity noise at low speed
    #: A reported joint velocity is judged more loosely than the positions' own progress (it is
    #: a derivative: servo and contact transients spike it); a gross one (NaN, 1e9) still stops.
    sensor_velocity_factor: float = 3.0
    sensor_jump_tolerance_rad: float = 0.01  # encoder noise
    # True: a sensor fault holds until the operator's reset; False: it clears after good
    # readings for ``sensor_resume_s`` (s).
    sensor_fault_latched: bool = True
    sensor_resume_s: float = 1.0


def safety_config_from_plant(
    plant: PlantDescription, robot: str, control_period_s: float = 0.004, ssm: SsmConfig | None = None
) -> SafetyConfig:
    """The supervisor's configuration for ``robot``: limits from the plant; geofence and
    keep-out volumes from the plant's safety model (:mod:`plant.safety_model`), the ones the
    guardrails check a plan against.

    Geofence: the cell's floor rectangle, from 2 cm above the floor to 2.5 m. Keep-out volumes:
    every zone (:func:`plant.safety_model.keep_out_volumes`): ``keep_out`` and ``hazard`` zones
    as drawn, every ``walkway`` as a column up to 2.5 m. A hazard zone whose plant entry permits
    a robot in on an operator's confirmation is kept out as well: no confirmation reaches the
    robot's runtime yet, so the supervisor cannot tell a confirmed step from another (the
    guardrails reject such a step and say so). Sensor faults latch unless the robot's
    ``sensor_fault_reset`` is ``auto``. Raises ``KeyError`` for an unknown robot.
    """
    from plant.catalog import ROBOT_MODELS

    r = plant.robots[robot]
    lim = r.limits()
    limits = JointLimits(
        lower_rad=np.array([lo for lo, _ in lim], dtype=float),
        upper_rad=np.array([hi for _, hi in lim], dtype=float),
        max_speed_rad_s=np.array(r.joint_speeds(), dtype=float),
        max_accel_rad_s2=np.array(r.joint_accels(), dtype=float),
    )
    low, high = geofence_m(plant)
    return SafetyConfig(
        robot=robot,
        joint_names=ROBOT_MODELS[r.model].joint_names,
        limits=limits,
        control_period_s=control_period_s,
        geofence_low_m=low,
        geofence_high_m=high,
        keep_out=keep_out_volumes(plant),
        ssm=ssm or SsmConfig(),
        sensor_fault_latched=r.sensor_fault_reset == "operator",
    )


# --------------------------------------------------------------------------- ISO/TS 15066


@dataclass(frozen=True)
class TrackedPerson:
    """A person seen in the cell: position on the floor (m) and walking speed (m/s)."""

    name: str
    x_m: float
    y_m: float
    speed_m_s: float = 0.0


def separation_m(points: FloatArray, radius_m: FloatArray, person: TrackedPerson, person_radius_m: float) -> float:
    """Smallest horizontal gap (m) between the robot's points (with radii) and a person's cylinder."""
    d = np.hypot(points[:, 0] - person.x_m, points[:, 1] - person.y_m) - radius_m - person_radius_m
    return float(np.min(d))


# --------------------------------------------------------------------------- fast numerics
#
# The supervisor runs every control period on arrays of a few to a few tens of numbers, where
# numpy's cost is the call, not the arithmetic (a reduction through ``np.any``/``np.max`` costs
# several times an elementwise ufunc). These give the same results as the numpy functions they
# stand for, NaN included, at a fraction of the call cost.


def _any(x: NDArray[np.generic]) -> bool:
    """``np.any(x)``: some element is non-zero (NaN counts, as in numpy)."""
    return bool(np.count_nonzero(x))


def _all(x: NDArray[np.bool_]) -> bool:
    """``np.all(x)`` of a boolean array."""
    return int(np.count_nonzero(x)) == x.size


def _max(x: FloatArray) -> float:
    """``float(np.max(x))``: NaN if any element is NaN, as in numpy (``argmax`` stops at the first NaN)."""
    return float(x.flat[int(x.argmax())])


# ``np.clip`` is this ufunc behind a Python wrapper that costs as much again as the clipping.
_clip: np.ufunc = _umath.clip  # type: ignore[attr-defined]


def _stop_time_and_offset(velocity: FloatArray, max_decel_rad_s2: FloatArray) -> tuple[float, FloatArray]:
    """The time (s) a synchronised controlled stop from ``velocity`` takes, and the joint offset
    it still travels: :func:`robots.trajectory.stopping_offset`, the same arithmetic, with the
    stopping time the supervisor needs as well (it is tested to agree bit for bit)."""
    t_stop = _max(np.abs(velocity) / max_decel_rad_s2)
    return t_stop, 0.5 * velocity * t_stop


# A point this close (m) to a face of the geofence or of a keep-out volume's bounding box is
# decided by the exact check; beyond it, rounding cannot change the answer.
_CLEAR_EPS_M = 1e-6


class _Clearance:
    """A conservative, vectorised geofence and keep-out test for the arm's points at up to
    ``copies`` poses at once (stacked rows, each pose with the radii ``radius_m``).

    Every point gets signed margins, positive when clear: six to the geofence shrunk by the
    point's radius (all must be positive), and six per keep-out volume to the outside of the
    volume's axis-aligned bounding box grown by the radius (one positive is enough: the point is
    beyond that face, so farther than its radius from the volume, which lies within the box).
    All margins include :data:`_CLEAR_EPS_M`. A point that is not clear by these margins is not
    necessarily violating: the supervisor then runs the exact check on the fence or volume it
    is not clear of, which alone decides (:meth:`SafetySupervisor._violation`).

    The margins are one broadcast subtraction: with ``pp = [x, y, z, -x, -y, -z]`` of every
    point, ``pp - thresholds`` gives, per point, groups of 6 margins whose largest must be
    positive; the geofence's six margins are six groups of one (the rest of each is -inf).
    The 6 are the outer axis, so that the largest is 5 elementwise maxima of long rows.
    """

    def __init__(
        self,
        fence_low_m: FloatArray,
        fence_high_m: FloatArray,
        volumes: Sequence[Volume],
        radius_m: FloatArray,
        copies: int = 2,
    ) -> None:
        r = np.tile(np.asarray(radius_m, dtype=float), copies)
        rows = len(r)
        groups = 6 + len(volumes)
        eps = _CLEAR_EPS_M
        thr = np.full((6, groups, rows), np.inf)
        # Geofence: p - (low + r + eps) > 0 and -p - (r + eps - high) > 0, one margin a group.
        for k in range(3):
            thr[k, k] = fence_low_m[k] + r + eps
            thr[3 + k, 3 + k] = -(fence_high_m[k] - r - eps)
        for j, vol in enumerate(volumes):
            lo, hi = _bounding_box(vol)
            for k in range(3):
                thr[k, 6 + j] = hi[k] + r + eps
                thr[3 + k, 6 + j] = -(lo[k] - r - eps)
        self.thresholds = thr
        self.n = len(radius_m)
        self._pp = np.empty((6, 1, rows))
        self._diff = np.empty((6, groups, rows))

    def margins(self, poses: Sequence[FloatArray]) -> FloatArray:
        """(groups, rows): each group's largest margin, per point (the poses' points in turn)."""
        n = self.n
        m = n * len(poses)
        pp = self._pp[:, 0, :m]
        for i, pts in enumerate(poses):
            pp[:3, i * n : (i + 1) * n] = pts.T
        np.negative(pp[:3], out=pp[3:])
        diff = self._diff[:, :, :m]
        np.subtract(self._pp[:, :, :m], self.thresholds[:, :, :m], out=diff)
        out: FloatArray = np.maximum.reduce(diff, axis=0)
        return out


def _bounding_box(vol: Volume) -> tuple[FloatArray, FloatArray]:
    """Axis-aligned box (low, high corners, m) that contains the volume."""
    if isinstance(vol, BoxVolume):
        c, s = abs(math.cos(vol.yaw_rad)), abs(math.sin(vol.yaw_rad))
        hx, hy, hz = (abs(h) for h in vol.half_m)
        half = np.array([c * hx + s * hy, s * hx + c * hy, hz])
        center = np.asarray(vol.center_m, dtype=float)
        return center - half, center + half
    r = abs(vol.radius_m)
    cx, cy = vol.center_xy_m
    z0, z1 = min(vol.z_low_m, vol.z_high_m), max(vol.z_low_m, vol.z_high_m)
    return np.array([cx - r, cy - r, z0]), np.array([cx + r, cy + r, z1])


# --------------------------------------------------------------------------- e-stop latch


def latch_file(state_dir: Path | str, robot: str) -> Path:
    """Where a robot's e-stop latch lives in a state folder: the runtime, ``atelier robot`` and
    the console all use this one path, so an e-stop tripped by any of them is seen by all."""
    return Path(state_dir) / f"{robot}.estop.json"


class EstopLatch:
    """The e-stop latch, persisted in a JSON file so it survives any restart.

    :meth:`trip` may be called by anyone (a button, a plan, the runtime). :meth:`reset` is the
    operator's: only the operator service of the runtime (``robots.ros2``) and the
    ``atelier robot estop-reset`` command call it; no skill, plan or model path reaches it.
    Writes are atomic (temporary file, fsync, rename, fsync of the folder); a file that
    cannot be read counts as tripped (fail safe). Thread-safe.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._state = self._load()

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("tripped"), bool):
                raise ValueError("bad latch file")
            return data
        except FileNotFoundError:
            return {"tripped": False, "reason": "", "source": "", "stamp_s": 0.0}
        except (OSError, ValueError):
            return {"tripped": True, "reason": f"latch file {self.path} unreadable", "source": "latch", "stamp_s": 0.0}

    def _write(self, state: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".estop-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @property
    def tripped(self) -> bool:
        with self._lock:
            return bool(self._state["tripped"])

    @property
    def reason(self) -> str:
        with self._lock:
            return str(self._state.get("reason", ""))

    def refresh(self) -> bool:
        """Re-read the file (another process, e.g. the operator's command, may have changed it)."""
        with self._lock:
            self._state = self._load()
            return bool(self._state["tripped"])

    def trip(self, reason: str, source: str) -> None:
        """Latch the e-stop (idempotent: the first reason is kept). Blocks for the file write."""
        with self._lock:
            if self._state["tripped"]:
                return
            state: dict[str, object] = {"tripped": True, "reason": reason, "source": source, "stamp_s": time.time()}
            self._write(state)
            self._state = state

    def reset(self, operator: str) -> None:
        """Clear the latch. The operator's path only. Blocks for the file write."""
        with self._lock:
            state: dict[str, object] = {"tripped": False, "reason": "", "source": operator, "stamp_s": time.time()}
            self._write(state)
            self._state = state


# --------------------------------------------------------------------------- the supervisor


class PointModel(Protocol):
    """World positions of points along the arm (``robots.kinematics.LinkPoints``).

    ``at`` is a pure function of ``q`` returning a new array (the supervisor reuses the points
    of a configuration it saw in the last few calls); ``radius_m`` does not change.
    """

    radius_m: FloatArray

    def at(self, q: FloatArray) -> FloatArray: ...


Mode = Literal["run", "slow", "stopping", "stopped"]
StopCause = Literal["estop", "protective_stop", "watchdog", "refuse", "external", "sensor_fault", "internal_fault"]

#: Below this measured speed (rad/s) of every joint, a robot at rest (for the stop category).
_STANDSTILL_RAD_S = 0.01
#: Distinct sensor faults reported while one holds (a stall, then garbage: the operator hears of
#: both), at most this many; "distinct" is the reason without its numbers.
_FAULTS_REPORTED = 10
_NUMBER = re.compile(r"[-+]?\d[\d.]*(?:e[-+]?\d+)?")


@dataclass(frozen=True)
class Applied:
    """What the supervisor let through for one control period."""

    position_rad: FloatArray
    velocity_rad_s: FloatArray
    mode: Mode
    speed_scale: float
    power_on: bool
    clamped: bool = False
    refused: bool = False


@dataclass
class SsmReading:
    """The last SSM evaluation: separation and protective distance (m), robot speed (m/s)."""

    separation_m: float = math.inf
    protective_distance_m: float = 0.0
    robot_speed_m_s: float = 0.0
    person: str = ""


class SafetySupervisor:
    """Filters joint commands for one robot; see the module docstring.

    ``points`` gives positions of the arm's checked points at a joint configuration (the
    supervisor uses it at two configurations per period). ``latch`` persists the e-stop; without
    one the e-stop is held in memory only (tests of the pure logic). ``on_event`` is called on the
    calling thread for every intervention; it must not block.
    """

    def __init__(
        self,
        config: SafetyConfig,
        points: PointModel,
        latch: EstopLatch | None = None,
        on_event: Callable[[SafetyEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.points = points
        self.latch = latch
        self.on_event = on_event
        self.events: list[SafetyEvent] = []  # the last few hundred, newest last
        lim = config.limits
        m = config.position_margin_rad
        self._lo = lim.lower_rad + m
        self._hi = lim.upper_rad - m
        self._vmax = lim.max_speed_rad_s
        self._amax = lim.max_accel_rad_s2
        self._dt = config.control_period_s
        self._fence_lo = np.asarray(config.geofence_low_m, dtype=float)
        self._fence_hi = np.asarray(config.geofence_high_m, dtype=float)
        # Per-period constants (the configuration and the points' radii are fixed).
        # (the joint limits as Python floats, for :meth:`_limit`)
        self._lo_list: list[float] = self._lo.tolist()
        self._hi_list: list[float] = self._hi.tolist()
        self._vmax_list: list[float] = np.asarray(self._vmax, dtype=float).tolist()
        self._two_amax_list: list[float] = (2 * self._amax).tolist()
        amax_dt = self._amax * self._dt
        self._amax_dt_list: list[float] = amax_dt.tolist()
        self._dv_tol_list: list[float] = (amax_dt * (1 + 1e-6) + 1e-9).tolist()
        # The joint-state check (:meth:`_check_reading`), joint by joint in Python floats too.
        tol = config.sensor_position_tolerance_rad
        self._sense_lo: list[float] = (lim.lower_rad - tol).tolist()
        self._sense_hi: list[float] = (lim.upper_rad + tol).tolist()
        sense_speed = np.asarray(lim.max_speed_rad_s, dtype=float) * config.sensor_speed_factor
        self._sense_speed: list[float] = sense_speed.tolist()
        reported = np.asarray(lim.max_speed_rad_s, dtype=float) * config.sensor_velocity_factor
        self._sense_vmax: list[float] = (reported + config.sensor_speed_tolerance_rad_s).tolist()
        self._sense_n = lim.dof
        self._sense_dt = 1.25 * self._dt
        self._sense_jump: list[float] = (sense_speed * self._sense_dt + config.sensor_jump_tolerance_rad).tolist()
        self._good: list[float] | None = None  # positions (rad) of the last good reading
        self._good_stamp = -math.inf  # and its stamp (s)
        self._good_since: float | None = None  # good readings since (s), while a sensor fault holds
        self._faults_seen: set[str] = set()  # the sensor faults reported while one holds
        radius = np.asarray(points.radius_m, dtype=float)
        self._n = n = len(radius)
        self._radius2 = np.concatenate([radius, radius])
        self._clearance = _Clearance(self._fence_lo, self._fence_hi, config.keep_out, radius, copies=2)
        self._fk_cache: list[tuple[bytes, FloatArray]] = []  # the last few (q bytes, points)
        # The points of the last pose checked at rest and why they were refused (None: allowed).
        self._checked: tuple[FloatArray | None, str | None] = (None, None)
        # Scratch of one SSM evaluation: point displacements, and the commanded and measured
        # points on the floor.
        self._diffs = np.empty((4, n, 3))
        self._xy = np.empty((2 * n, 2))
        ssm = config.ssm
        # The protective distance of a robot at rest (SSM's warning band starts there).
        self._sp_rest = protective_separation_distance_m(
            max(ssm.human_speed_m_s, 0.0),
            0.0,
            ssm.reaction_time_s,
            0.0,
            0.0,
            ssm.intrusion_distance_m,
            ssm.human_uncertainty_m,
            ssm.robot_uncertainty_m,
        )
        self._q: FloatArray | None = None  # last applied position
        self._v = np.zeros(lim.dof)
        # Joint speeds of a robot at rest, shared: read-only, so that nothing changes it.
        self._at_rest = np.zeros(lim.dof)
        self._at_rest.flags.writeable = False
        self._p_prev: FloatArray | None = None
        # The measured points of last period (None after a period decided by bounds) and the
        # measured joint positions they are the points of.
        self._meas_prev: FloatArray | None = None
        self._meas_prev_q: list[float] | None = None
        # SSM by bounds (:meth:`_ssm_far`): how far a point moves per radian, the circle on the
        # floor round the commanded points (points, centre x, y, radius), and the reading to
        # evaluate when asked (:attr:`ssm`) with the bound of its separation.
        self._motion_bound = float(getattr(points, "motion_bound_m", math.inf))
        self._circle: tuple[FloatArray | None, float, float, float] = (None, 0.0, 0.0, 0.0)
        self._lazy: tuple[FloatArray, list[float], list[float] | None, Sequence[TrackedPerson]] | None = None
        self._floor = math.inf
        self._measured: JointState | None = None
        self._people: Sequence[TrackedPerson] = ()
        self._causes: dict[StopCause, tuple[StopCategory, str]] = {}
        self._lock = threading.Lock()  # guards _causes against trip_estop from other threads
        self._ssm_clear_since: float | None = None
        self._scale = 1.0
        self._power_on = True
        self._mode: Mode = "run"
        self._last_clamp_s = -math.inf
        self._stream_source: str | None = None
        self._stream_last_s = 0.0
        self._last_target: FloatArray | None = None
        self._ssm_value = SsmReading()
        self.last_stop_trigger_s: float | None = None
        self._latch_seen_tripped = latch is not None and latch.tripped
        if latch is not None and latch.tripped:
            self._causes["estop"] = (config.estop_category, f"e-stop latched: {latch.reason}")
            self._power_on = False

    # ------------------------------------------------------------------ state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def speed_scale(self) -> float:
        """Fraction (0..1) of full speed the SSM currently allows."""
        return self._scale

    @property
    def stopped(self) -> bool:
        """True while any stop cause is active (stopping or at rest)."""
        return bool(self._causes)

    def stop_causes(self) -> dict[str, str]:
        """Active stop causes and their reasons."""
        with self._lock:
            return {k: v[1] for k, v in self._causes.items()}

    @property
    def power_on(self) -> bool:
        """False after a category 0 or 1 stop, until its cause is cleared."""
        return self._power_on

    @property
    def estopped(self) -> bool:
        return "estop" in self._causes

    @property
    def position_rad(self) -> FloatArray | None:
        """The last applied position command (rad): where new motions must start."""
        return None if self._q is None else self._q.copy()

    @property
    def velocity_rad_s(self) -> FloatArray:
        return self._v.copy()

    def _emit(self, now_s: float, kind: str, reason: str, category: StopCategory | None = None) -> None:
        ev = SafetyEvent(now_s, self.config.robot, kind, reason, category)
        self.events.append(ev)
        if len(self.events) > 500:
            del self.events[:100]
        if self.on_event is not None:
            self.on_event(ev)

    def _stop(self, now_s: float, cause: StopCause, category: StopCategory, reason: str, kind: str) -> None:
        with self._lock:
            if cause in self._causes:
                return
            self._causes[cause] = (category, reason)
        if self.last_stop_trigger_s is None or self._mode in ("run", "slow"):
            self.last_stop_trigger_s = now_s
        self._emit(now_s, kind, reason, category)

    def _clear(self, now_s: float, cause: StopCause, reason: str) -> None:
        with self._lock:
            if self._causes.pop(cause, None) is None:
                return
        self._emit(now_s, "resume", reason)

    def _category(self) -> StopCategory | None:
        if not self._causes:  # (a stop from another thread now is seen next period, as with the lock)
            return None
        with self._lock:
            return min((c for c, _ in self._causes.values()), default=None)

    # ------------------------------------------------------------------ inputs

    @property
    def has_position(self) -> bool:
        """True once a good joint state was observed (:meth:`filter` needs one)."""
        return self._q is not None

    def observe(self, state: JointState, people: Sequence[TrackedPerson] = (), now_s: float | None = None) -> None:
        """Take the measured joint state and the people currently tracked in the cell.

        The reading is checked first: one that is not numbers, of the wrong length, not finite,
        outside the joint limits by more than ``sensor_position_tolerance_rad``, faster than
        the joints can move (its velocity, or its jump since the last good reading over the time
        between their stamps, beyond ``sensor_speed_factor`` times the speed limit plus the
        tolerances), or stamped before the last good reading (by more than a control period), is
        refused: a sensor fault stops the robot (:meth:`sensor_fault`), and the supervisor goes
        on with the last good reading. ``now_s``: the time (s) of the events and of the recovery
        from a sensor fault that is not latched (default: the reading's stamp). Never raises for
        bad data.
        """
        self._people = people
        why = self._check_reading(state)
        now = state.stamp_s if now_s is None else now_s
        if why is not None:
            if not (isinstance(now, float | int) and math.isfinite(now)):
                now = self._good_stamp  # (no time to go by: the last good reading's)
            self.sensor_fault(why, now)
            return
        self._measured = state
        if "sensor_fault" in self._causes and not self.config.sensor_fault_latched:
            if self._good_since is None:
                self._good_since = now
            elif now - self._good_since >= self.config.sensor_resume_s:
                self._clear(now, "sensor_fault", f"good joint states again for {now - self._good_since:.2f} s")
        if self._q is None:
            self._q = np.clip(
                np.asarray(state.position, dtype=float), self.config.limits.lower_rad, self.config.limits.upper_rad
            )
            self._v = np.zeros_like(self._q)

    def _check_reading(self, state: JointState) -> str | None:
        """Why the joint state ``state`` is refused (see :meth:`observe`), or None; a good reading
        becomes the last good one. Joint by joint in Python floats, as :meth:`_limit`: for a few
        joints that costs less than numpy's calls, and NaN fails every comparison."""
        try:
            try:
                pl, vl = state.position.tolist(), state.velocity.tolist()
            except AttributeError:  # (not arrays: taken as numpy takes them)
                pl = np.asarray(state.position, dtype=float).tolist()
                vl = np.asarray(state.velocity, dtype=float).tolist()
            n = self._sense_n
            if len(pl) != n or len(vl) != n:
                return f"joint state has {len(pl)} positions and {len(vl)} velocities for {n} joints"
            # (inf for the first reading; a wall clock may step back a little: a period is jitter)
            stamp = state.stamp_s
            dt_s = stamp - self._good_stamp
            if not (dt_s >= -self._dt and stamp < math.inf):
                if not math.isfinite(stamp):
                    return f"joint state stamp {stamp!r} is not a time"
                return (
                    f"joint state stamped {stamp:.6f} s, before the last good one ({self._good_stamp:.6f} s) "
                    "by more than a control period"
                )
            jump = self._sense_jump  # (stamps jitter: never less than 1.25 periods' worth)
            if dt_s > self._sense_dt:
                tol = self.config.sensor_jump_tolerance_rad
                jump = [s * dt_s + tol for s in self._sense_speed]
            prev = pl if self._good is None else self._good
            lo, hi, vmax = self._sense_lo, self._sense_hi, self._sense_vmax
            for x, w, q0, a, b, s, m in zip(pl, vl, prev, lo, hi, vmax, jump, strict=True):
                if not (a <= x <= b and abs(w) <= s and abs(x - q0) <= m):
                    return self._reading_fault(pl, vl, prev, jump, dt_s)
        except (TypeError, ValueError) as exc:  # (values or a stamp that are not numbers)
            return f"joint state is not numbers ({exc})"
        self._good, self._good_stamp = pl, stamp
        return None

    def _reading_fault(
        self, pl: list[float], vl: list[float], prev: list[float], jump: list[float], dt_s: float
    ) -> str:
        """What is wrong with the first joint of a refused reading (positions ``pl``, velocities
        ``vl``; ``prev`` the last good positions, ``jump`` the jumps allowed since, ``dt_s``
        later) that is wrong, naming the value and the limit."""
        cfg = self.config
        for j, (x, w) in enumerate(zip(pl, vl, strict=True)):
            name = cfg.joint_names[j] if j < len(cfg.joint_names) else f"joint {j}"
            lo, hi = float(cfg.limits.lower_rad[j]), float(cfg.limits.upper_rad[j])
            vmax, accept = float(cfg.limits.max_speed_rad_s[j]), self._sense_vmax[j]
            tol = cfg.sensor_position_tolerance_rad
            d = x - prev[j]
            if not math.isfinite(x):
                return f"{name} position {x} is not finite (limits {lo:.3f}..{hi:.3f} rad)"
            if not lo - tol <= x <= hi + tol:
                return f"{name} position {x:.4g} rad is outside its limits {lo:.3f}..{hi:.3f} rad (by over {tol:g} rad)"
            if not abs(w) <= accept:
                return (
                    f"{name} velocity {w:.4g} rad/s is beyond its limit {vmax:.3f} rad/s (up to {accept:.3f} accepted)"
                )
            if not abs(d) <= jump[j]:
                return (
                    f"{name} jumped {d:+.4g} rad in {dt_s:.4f} s since the last good reading: faster than its limit "
                    f"{vmax:.3f} rad/s allows (up to {jump[j]:.4f} rad accepted)"
                )
        return "joint state refused"  # (not reached: some joint failed the check)

    def sensor_fault(self, reason: str, now_s: float) -> None:
        """Stop for bad or missing joint-state data (the control thread: :meth:`observe` for a
        reading it refused, the runtime for a state timeout or a read that failed).

        IEC 60204-1 category 2 if the robot is at rest, 1 if it moves; a ``sensor_fault`` event
        (and log line) for it, with its stop category, and one without for each distinct fault
        that comes while it holds (up to ten; the same fault every period is one). It holds until
        the operator's reset (:meth:`reset_estop`), or, with ``sensor_fault_latched`` False,
        until good readings came for ``sensor_resume_s``.
        """
        self._good_since = None
        key = _NUMBER.sub("#", reason)
        with self._lock:
            held = self._causes.get("sensor_fault")
        if held is not None:
            if key not in self._faults_seen and len(self._faults_seen) < _FAULTS_REPORTED:
                self._faults_seen.add(key)
                # (no stop category: the stop is the one already reported, not a new one)
                self._emit(now_s, "sensor_fault", f"sensor fault: {reason}; the stop holds")
                log.error("%s: sensor fault: %s; the stop holds", self.config.robot, reason)
            return
        self._faults_seen = {key}
        cfg = self.config
        hold = (
            "latched until an operator resets it"
            if cfg.sensor_fault_latched
            else f"clears after {cfg.sensor_resume_s:g} s of good readings"
        )
        self._fault(now_s, "sensor_fault", f"sensor fault: {reason}; {hold}")

    def internal_fault(self, reason: str, now_s: float) -> None:
        """Stop for an error in the control period (the runtime calls it for an exception from a
        skill, the supervisor or the hardware): category 2 at rest, 1 moving; one
        ``internal_fault`` event; held until the operator's reset (:meth:`reset_estop`)."""
        if "internal_fault" not in self._causes:
            self._fault(now_s, "internal_fault", f"internal fault: {reason}; latched until an operator resets it")

    def _fault(self, now_s: float, cause: StopCause, reason: str) -> None:
        """A protective stop for a fault: category 1 if the robot moves (the commanded motion or
        the last good reading), else 2. The stop is reported as an event of kind ``cause``."""
        meas = self._measured
        moving = _any(self._v) or (
            meas is not None and float(np.max(np.abs(np.asarray(meas.velocity, dtype=float)))) > _STANDSTILL_RAD_S
        )
        category = StopCategory.CAT1 if moving else StopCategory.CAT2
        with self._lock:
            new = cause not in self._causes
        self._stop(now_s, cause, category, reason, cause)
        if new:
            log.error("%s: %s (stop category %d)", self.config.robot, reason, int(category))

    def trip_estop(
        self, reason: str, source: str, now_s: float | None = None, *, stopped: Callable[[], None] | None = None
    ) -> None:
        """Latch the e-stop (any thread). Only the operator's latch reset clears it.

        The stop takes effect first (and ``stopped`` is called: the runtime sends it at once);
        then the latch file is written (it blocks for the write, two fsyncs). A latch file that
        cannot be written does not undo the stop: it is reported as an event, and the e-stop
        holds in memory until the operator's reset service clears it.
        """
        now = time.time() if now_s is None else now_s
        self._stop(now, "estop", self.config.estop_category, f"e-stop ({source}): {reason}", "estop")
        if stopped is not None:
            stopped()
        if self.latch is not None:
            try:
                self.latch.trip(reason, source)
            except OSError as exc:
                self._emit(now, "estop", f"e-stop latch file not written ({exc}); the e-stop holds until reset")

    def protective_stop(self, reason: str, now_s: float, category: StopCategory = StopCategory.CAT2) -> None:
        """Stop for an outside reason (a light curtain, a door); cleared by :meth:`clear_external`."""
        self._stop(now_s, "external", category, reason, "protective_stop")

    def clear_external(self, now_s: float) -> None:
        self._clear(now_s, "external", "external stop cleared")

    def acknowledge(self, now_s: float) -> None:
        """A new goal starts: clear watchdog and refusal stops (not the e-stop, not SSM).

        Every new command is checked again; a command that violates a limit is refused again.
        """
        self._clear(now_s, "watchdog", "watchdog stop acknowledged by a new goal")
        self._clear(now_s, "refuse", "refusal acknowledged by a new goal")
        self._stream_source = None

    def resync(self, tolerance_rad: float = 0.05, max_speed_rad_s: float = 0.05) -> bool:
        """Take the measured position as the commanded one when they differ by more than
        ``tolerance_rad`` (the arm was blocked): the next motion then starts where the arm is,
        and the servos stop pressing against the obstacle. Only at rest. True if it resynced."""
        if self._q is None or self._measured is None or np.any(self._v):
            return False
        if float(np.max(np.abs(np.asarray(self._measured.velocity, dtype=float)))) > max_speed_rad_s:
            return False  # still moving: servo lag, not a blocked arm
        meas = np.clip(np.asarray(self._measured.position, dtype=float), self._lo, self._hi)
        if float(np.max(np.abs(meas - self._q))) <= tolerance_rad:
            return False
        self._q = meas
        self._last_target = None
        return True

    def sync_estop(self, now_s: float) -> None:
        """Follow the latch file (any thread): a trip written there stops; a reset written there
        (the operator's command when no runtime answered it) clears an e-stop the file had shown
        tripped. An e-stop the file never recorded (its write failed) is not cleared here."""
        if self.latch is None:
            return
        tripped = self.latch.refresh()
        was, self._latch_seen_tripped = self._latch_seen_tripped, tripped
        if tripped and "estop" not in self._causes:
            self._stop(now_s, "estop", self.config.estop_category, f"e-stop latched: {self.latch.reason}", "estop")
        elif not tripped and was and "estop" in self._causes:
            self._clear(now_s, "estop", "e-stop reset by the operator (latch file)")
            self._emit(now_s, "reset", "the operator reset the e-stop in the latch file")

    def reset_estop(self, operator: str, now_s: float) -> None:
        """The operator's reset: clear the latch file, the e-stop and the latched sensor and
        internal faults (a fault whose cause remains trips again at once; the next reading is
        checked without the one before it). Called only by the operator service."""
        if self.latch is not None:
            self.latch.reset(operator)
        self._clear(now_s, "estop", f"e-stop reset by operator {operator}")
        self._good, self._good_stamp, self._good_since = None, -math.inf, None
        self._clear(now_s, "sensor_fault", f"sensor fault reset by operator {operator}")
        self._clear(now_s, "internal_fault", f"internal fault reset by operator {operator}")
        self._emit(now_s, "reset", f"operator {operator} reset the e-stop")

    # ------------------------------------------------------------------ the filter

    def _points(self, q: FloatArray) -> FloatArray:
        """``self.points.at(q)``, reusing the points of a configuration seen in the last few calls
        (at rest the commanded pose repeats every period; a stop pose is checked, then measured)."""
        key = q.tobytes()
        for k, pts in self._fk_cache:
            if k == key:
                return pts
        pts = self.points.at(q)
        self._fk_cache = [(key, pts), *self._fk_cache[:3]]
        return pts

    def _violation(self, pts: FloatArray, fence: bool = True, volumes: Sequence[Volume] | None = None) -> str | None:
        """The exact geofence and keep-out check of the points ``pts`` (the arm at one pose): why
        the pose is not allowed, or None. ``fence`` False and ``volumes`` skip checks that
        :class:`_Clearance` already found clear."""
        r = self.points.radius_m
        if fence:
            low = pts - r[:, None] < self._fence_lo
            high = pts + r[:, None] > self._fence_hi
            if np.any(low) or np.any(high):
                i = int(np.argmax(np.any(low | high, axis=1)))
                return f"point {i} at {np.round(pts[i], 3).tolist()} leaves the geofence"
        for vol in self.config.keep_out if volumes is None else volumes:
            inside = vol.distances_m(pts) < r
            if np.any(inside):
                i = int(np.argmax(inside))
                return f"point {i} at {np.round(pts[i], 3).tolist()} enters keep-out zone {vol.name}"
        return None

    def _check(self, pts: FloatArray, stop_pts: FloatArray | None) -> str | None:
        """Why the commanded pose ``pts`` or the pose where a stop begun now would end
        (``stop_pts``, None at rest) is not allowed, or None: :meth:`_violation` of the commanded
        pose, then of the stop pose. The fast :class:`_Clearance` test clears what it can; the
        exact check decides the rest (the fence or the volumes not clear by its margins)."""
        if stop_pts is None and pts is self._checked[0]:
            return self._checked[1]  # (the pose checked last period: the same points, the same answer)
        why = self._check_poses(pts, stop_pts)
        if stop_pts is None:
            self._checked = (pts, why)
        return why

    def _check_poses(self, pts: FloatArray, stop_pts: FloatArray | None) -> str | None:
        poses = (pts,) if stop_pts is None else (pts, stop_pts)
        margins = self._clearance.margins(poses)
        if float(margins.flat[int(margins.argmin())]) > 0:  # (NaN is not > 0: exact check)
            return None
        clear = margins > 0
        n = self._n
        for i, p in enumerate(poses):
            ok = clear[:, i * n : (i + 1) * n].all(axis=1)
            fence = not bool(ok[:6].all())
            volumes = [v for v, c in zip(self.config.keep_out, ok[6:].tolist(), strict=True) if not c]
            why = self._violation(p, fence, volumes) if fence or volumes else None
            if why is not None:
                return why if i == 0 else f"a stop begun now would end with {why.split(' ', 2)[2]}"
        return None

    def _stop_pose(self, q: FloatArray, v: FloatArray) -> tuple[float, FloatArray | None]:
        """Stopping time (s) from ``v`` and the points where a stop begun now at ``q`` would end
        (None when the time is 0: they are the points at ``q``)."""
        t_stop, offset = _stop_time_and_offset(v, self._amax)
        return t_stop, (self._points(q + offset) if t_stop > 0 else None)

    def _ssm(
        self,
        now_s: float,
        pts: FloatArray,
        q: FloatArray,
        v: FloatArray,
        stop: tuple[float, FloatArray | None] | None = None,
    ) -> None:
        """Speed and separation monitoring at the commanded pose ``pts`` (of ``q``, ``v``).
        ``stop``: :meth:`_stop_pose` of ``q``, ``v`` when the caller has it already."""
        cfg = self.config.ssm
        people = self._people
        if (
            people
            and stop is not None
            and stop[1] is None
            and pts is self._p_prev
            and "protective_stop" not in self._causes
            and self._ssm_far(now_s, pts, q, people)
        ):
            return
        p_prev = pts if self._p_prev is None else self._p_prev
        self._p_prev = pts
        meas_pts = meas_prev = None
        if self._measured is not None:
            meas_q = np.asarray(self._measured.position, dtype=float)
            meas_pts = self._points(meas_q)
            meas_prev = self._meas_prev
            if meas_prev is None and self._meas_prev_q is not None:
                meas_prev = self._points(np.array(self._meas_prev_q, dtype=float))
            self._meas_prev, self._meas_prev_q = meas_pts, meas_q.tolist()
        t_stop, stop_pts = 0.0, None
        if people:
            t_stop, stop_pts = self._stop_pose(q, v) if stop is None else stop
        reading, worst_margin, lagging = self._measure(pts, p_prev, meas_pts, meas_prev, people, t_stop, stop_pts)
        # (only now: if the evaluation raised, a reading deferred last period is still the last)
        self._lazy = None
        self._ssm_value = reading
        speed = reading.robot_speed_m_s
        if not people:
            self._scale = 1.0
            if self._ssm_clear_since is None:
                self._ssm_clear_since = now_s
            if "protective_stop" in self._causes and now_s - self._ssm_clear_since >= cfg.resume_clear_s:
                self._clear(now_s, "protective_stop", "cell clear of people")
            return
        moving = speed > cfg.standstill_speed_m_s or t_stop > 0 or lagging
        if worst_margin <= 0 and moving and "protective_stop" not in self._causes:
            self._stop(
                now_s,
                "protective_stop",
                self.config.protective_stop_category,
                f"{reading.person} at {reading.separation_m:.3f} m, inside the protective separation "
                f"distance {reading.protective_distance_m:.3f} m (robot {speed:.2f} m/s)",
                "protective_stop",
            )
        # The band is measured from the distance needed at rest: a stopped robot resumes only
        # once the person is out of the band.
        sp_rest = self._sp_rest
        if worst_margin <= 0 or reading.separation_m <= sp_rest:
            self._ssm_clear_since = None
        elif self._ssm_clear_since is None:
            self._ssm_clear_since = now_s
        if "protective_stop" in self._causes:
            clear_for = 0.0 if self._ssm_clear_since is None else now_s - self._ssm_clear_since
            if reading.separation_m > sp_rest + cfg.warning_band_m and clear_for >= cfg.resume_clear_s:
                self._clear(now_s, "protective_stop", f"{reading.person} left the separation distance")
        band = reading.separation_m - max(reading.protective_distance_m, sp_rest)
        scale = min(1.0, max(cfg.min_speed_scale, band / cfg.warning_band_m)) if band < cfg.warning_band_m else 1.0
        if scale < 1.0 and self._scale >= 1.0 and not self._causes:
            self._emit(now_s, "slow", f"{reading.person} at {reading.separation_m:.2f} m: speed scaled to {scale:.2f}")
        self._scale = scale

    def _measure(
        self,
        pts: FloatArray,
        p_prev: FloatArray,
        meas_pts: FloatArray | None,
        meas_prev: FloatArray | None,
        people: Sequence[TrackedPerson],
        t_stop: float,
        stop_pts: FloatArray | None,
    ) -> tuple[SsmReading, float, bool]:
        """The SSM reading of the commanded points ``pts`` (``p_prev`` last period's), the
        measured ones (``meas_pts``, ``meas_prev``; None: no measurement, or none last period)
        and the stop (``t_stop`` s, ending at ``stop_pts``; None at rest), with the worst
        margin of separation over protective distance, and whether the servo lags its command.
        Changes nothing but scratch arrays."""
        cfg = self.config.ssm
        dt = self._dt
        # Displacements whose largest norm is wanted, evaluated together: 0 the commanded points
        # since the last period, 1 the servo lag, 2 the measured points since the last period,
        # 3 the stopping distance.
        diffs = self._diffs
        np.subtract(pts, p_prev, out=diffs[0])
        # The arm lags its command (servo tracking): it is somewhere between the measured and
        # the commanded pose and still has the lag to travel. Count the lag as robot position
        # uncertainty, and the measured speed when it is the larger.
        if meas_pts is not None:
            np.subtract(pts, meas_pts, out=diffs[1])
            if meas_prev is not None:
                np.subtract(meas_pts, meas_prev, out=diffs[2])
            else:
                diffs[2] = 0.0  # (unused)
        else:
            diffs[1:3] = 0.0  # (unused)
        rows = 3
        if people:
            # At rest the stop ends where the arm is: distance 0 (NaN for NaN points, as before).
            np.subtract(pts if stop_pts is None else stop_pts, pts, out=diffs[3])
            rows = 4
        d = diffs[:rows]
        np.multiply(d, d, out=d)
        # The norms as np.linalg.norm computes them (x^2 + y^2, + z^2, then the square root),
        # largest first: sqrt(max) == max(sqrt).
        norms = np.sqrt(np.add.reduce(d, axis=2).max(axis=1)).tolist()
        speed = norms[0] / dt
        lag_m = 0.0
        if meas_pts is not None:
            lag_m = norms[1]
            if meas_prev is not None:
                speed = max(speed, norms[2] / dt)
        if not people:
            return SsmReading(math.inf, 0.0, speed), math.inf, False
        s_stop = norms[3]
        # Horizontal gaps of every person to every point (commanded and measured), at once.
        n = self._n
        xy = self._xy
        xy[:n] = pts[:, :2]
        m = n
        if meas_pts is not None:
            xy[n:] = meas_pts[:, :2]
            m = 2 * n
        d_xy = xy[None, :m] - np.array([[(p.x_m, p.y_m)] for p in people], dtype=float)
        gaps = np.hypot(d_xy[..., 0], d_xy[..., 1])
        gaps -= self._radius2[:m]
        # (min(g - c) == min(g) - c: rounding is monotonic; the person's radius comes off after)
        seps = gaps.min(axis=1).tolist()
        worst_margin = math.inf
        reading = SsmReading()
        lagging = lag_m > cfg.servo_lag_moving_m
        for person, gap in zip(people, seps, strict=True):
            sep = gap - cfg.person_radius_m
            sp = protective_separation_distance_m(
                max(cfg.human_speed_m_s, person.speed_m_s),
                speed,
                cfg.reaction_time_s,
                t_stop + (cfg.servo_settle_time_s if lagging else 0.0),
                s_stop,
                cfg.intrusion_distance_m,
                cfg.human_uncertainty_m,
                cfg.robot_uncertainty_m + lag_m,
            )
            if sep - sp < worst_margin:
                worst_margin = sep - sp
                reading = SsmReading(sep, sp, speed, person.name)
        return reading, worst_margin, lagging

    def _ssm_far(self, now_s: float, pts: FloatArray, q: FloatArray, people: Sequence[TrackedPerson]) -> bool:
        """SSM of a robot held at rest (the commanded points those of last period, no stop to
        make) when every person is, by a bound, beyond the protective distance and the warning
        band: then the exact evaluation would decide alike (no stop, full speed, clear since
        now at the latest), so decide without it. True when it did. The reading is kept for
        :attr:`ssm` to evaluate exactly if anyone asks (:attr:`separation_floor_m` bounds it).

        The bounds: the measured points lie within ``motion_bound * sum(|q_measured - q|)`` of
        the commanded ones (the servo lag, at most), and moved at most ``motion_bound *
        sum(|q_measured - q_measured_before|)`` since last period (the measured speed, times
        the period); every commanded point lies in a circle round their centre on the floor.
        """
        bound = self._motion_bound
        meas = self._measured
        if meas is None or not bound < math.inf:
            return False
        qm: list[float] = np.asarray(meas.position, dtype=float).tolist()
        cfg = self.config.ssm
        lag = bound * sum(map(abs, map(operator.sub, qm, q.tolist()))) + 1e-9
        if not lag <= cfg.servo_lag_moving_m:
            return False  # (the exact lag may make it count as moving)
        prev = self._meas_prev_q
        speed = 0.0
        if prev is not None:
            speed = (bound * sum(map(abs, map(operator.sub, qm, prev))) + 1e-9) / self._dt
        circle = self._circle
        if circle[0] is not pts:
            xy = pts[:, :2]
            c = xy.mean(axis=0)
            rho = float((np.hypot(xy[:, 0] - c[0], xy[:, 1] - c[1]) + self._radius2[: self._n]).max())
            circle = self._circle = (pts, float(c[0]), float(c[1]), rho)
        _, cx, cy, rho = circle
        reach = rho + lag + cfg.person_radius_m
        need_rest = self._sp_rest + cfg.warning_band_m + 1e-9
        floor = math.inf
        for person in people:
            sep = math.hypot(person.x_m - cx, person.y_m - cy) - reach
            try:
                sp = protective_separation_distance_m(
                    max(cfg.human_speed_m_s, person.speed_m_s),
                    speed,
                    cfg.reaction_time_s,
                    0.0,
                    0.0,
                    cfg.intrusion_distance_m,
                    cfg.human_uncertainty_m,
                    cfg.robot_uncertainty_m + lag,
                )
            except ValueError:
                return False  # (a speed that is no number: the exact evaluation raises it, as before)
            if not (sep > need_rest and sep > sp + cfg.warning_band_m + 1e-9):
                return False
            floor = min(floor, sep)
        # Decided as the exact evaluation would: nothing to stop, full speed, clear since now.
        # (the people as a tuple of their own: a caller may change its list in place later)
        self._lazy = (pts, qm, prev, tuple(people))
        self._floor = floor
        self._meas_prev, self._meas_prev_q = None, qm
        self._scale = 1.0
        if self._ssm_clear_since is None:
            self._ssm_clear_since = now_s
        return True

    @property
    def ssm(self) -> SsmReading:
        """The last SSM evaluation (exact: evaluated now if the period decided by bounds).
        Read it on the thread that runs the periods."""
        lazy = self._lazy
        if lazy is not None:
            pts, qm, prev, people = lazy
            meas_pts = self._points(np.array(qm, dtype=float))
            meas_prev = None if prev is None else self._points(np.array(prev, dtype=float))
            self._ssm_value = self._measure(pts, pts, meas_pts, meas_prev, people, 0.0, None)[0]
            self._lazy = None
        return self._ssm_value

    @ssm.setter
    def ssm(self, reading: SsmReading) -> None:
        self._lazy = None
        self._ssm_value = reading

    @property
    def separation_floor_m(self) -> float:
        """At most :attr:`ssm`'s separation, without evaluating it (for a watcher of the closest
        approach, which needs the exact reading only when this is below the closest so far)."""
        return self._floor if self._lazy is not None else self._ssm_value.separation_m

    def stream(self, source: str, now_s: float) -> None:
        """Note that a streamed command arrived from ``source`` (arms the watchdog for it)."""
        self._stream_source = source
        self._stream_last_s = now_s

    def end_stream(self) -> None:
        """The streaming source finished on purpose: disarm the watchdog."""
        self._stream_source = None

    def filter(self, command: FloatArray | None, now_s: float) -> Applied:
        """The joint position command (rad) allowed for the next control period.

        ``command`` None means "hold" (no source is commanding). Call :meth:`observe` first.
        Never raises for a bad command: it clamps or refuses and reports an event.
        """
        if self._q is None or self._measured is None:
            raise RuntimeError("observe() a joint state before filtering commands")
        dt = self._dt
        if self._stream_source is not None and now_s - self._stream_last_s > self.config.watchdog_timeout_s:
            src = self._stream_source
            self._stream_source = None
            self._stop(
                now_s,
                "watchdog",
                self.config.watchdog_category,
                f"no command from {src} for {now_s - self._stream_last_s:.3f} s",
                "watchdog",
            )
        q_a, v_a = self._q, self._v
        clamped = refused = False
        # Held where it is, at rest: what a stopped robot whose stop clears this period gets
        # (every other path sets both below). Never ``v_new = q_a``: a stop that cleared made
        # the supervisor take the joint positions for the joint speeds.
        q_new, v_new = q_a, self._at_rest
        category = self._category()
        if category is None:
            target = q_a if command is None else np.asarray(command, dtype=float)
            if target is not q_a and (target.shape != q_a.shape or not _all(np.isfinite(target))):
                self._stop(now_s, "refuse", StopCategory.CAT2, f"malformed command {target!r}", "refuse")
                category = StopCategory.CAT2
            else:
                q_new, v_new, clamped = self._limit(target, q_a, v_a)
        if category is None:
            # The points at the commanded pose and, moving, where a stop begun now would end:
            # placed once, for the geofence and keep-out check and for SSM.
            pts = self._points(q_new)
            stop = self._stop_pose(q_new, v_new) if _any(v_new) else (0.0, None)
            why = self._check(pts, stop[1])
            if why is not None:
                refused = True
                self._stop(now_s, "refuse", StopCategory.CAT2, f"command refused: {why}", "refuse")
                category = StopCategory.CAT2
            else:
                self._ssm(now_s, pts, q_new, v_new, stop)
                category = self._category()
        elif self._people or "protective_stop" in self._causes:
            # Keep the SSM reading fresh while stopped, so a protective stop can clear.
            self._ssm(now_s, self._points(q_a), q_a, v_a)
            category = self._category()
        if category is not None:
            self._last_target = None
            if category == StopCategory.CAT0:
                q_new = np.asarray(self._measured.position, dtype=float).copy()
                v_new = np.zeros_like(q_new)
                self._power_on = False
            elif not _any(v_a):
                # At rest: brake_step's result without its calls (q + 0.5 v t_stop, t_stop = 0).
                q_new, v_new = q_a + v_a * 0.0, np.zeros_like(v_a)
                if category == StopCategory.CAT1:
                    self._power_on = False
            else:
                q_new, v_new = brake_step(q_a, v_a, self._amax, dt)
                at_rest = not _any(v_new)
                if at_rest and category == StopCategory.CAT1:
                    self._power_on = False
            self._mode = "stopped" if not _any(v_new) else "stopping"
        else:
            self._power_on = True
            self._mode = "slow" if self._scale < 1.0 else "run"
        if clamped and now_s - self._last_clamp_s > 0.5:
            self._emit(now_s, "clamp", "command clamped to the joint position, speed or acceleration limits")
        if clamped:
            self._last_clamp_s = now_s
        self._q, self._v = q_new, v_new
        return Applied(q_new.copy(), v_new.copy(), self._mode, self._scale, self._power_on, clamped, refused)

    def _limit(self, target: FloatArray, q_a: FloatArray, v_a: FloatArray) -> tuple[FloatArray, FloatArray, bool]:
        """Clamp a target to the position limits, then the step to the speed and acceleration limits.

        Joint by joint in Python floats: for six or seven joints that is several times faster
        than numpy's calls, with the same IEEE arithmetic in the same order (``min``/``max`` keep
        the first of equal arguments, as ``np.minimum``/``np.maximum`` do).
        """
        tgt_a = _clip(target, self._lo, self._hi)
        if tgt_a.tobytes() == q_a.tobytes() and not _any(v_a):
            # At rest, held where it is (most periods of a cell): what the loop below gives for
            # a zero step (no joint moves, none faster than its caps), without the loop.
            self._last_target = tgt_a
            clamped = target is not q_a and bool(_any(np.abs(tgt_a - target) > 1e-9))
            return q_a + 0.0, self._at_rest, clamped
        dt, lo, hi = self._dt, self._lo_list, self._hi_list
        two_amax, amax_dt, vmax = self._two_amax_list, self._amax_dt_list, self._vmax_list
        scale = self._scale
        tgt, goal, qa = tgt_a.tolist(), target.tolist(), q_a.tolist()
        prev = tgt if self._last_target is None else self._last_target.tolist()
        self._last_target = tgt_a
        clamped = over = False
        vs: list[float] = []
        caps: list[float] = []
        sqrt = math.sqrt
        for j, t in enumerate(tgt):
            if abs(t - goal[j]) > 1e-9:
                clamped = True
            err = t - qa[j]
            v = err / dt
            # A command that stands still is approached with the square-root law, so the joint
            # brakes in time and does not overshoot; a moving command (a timed trajectory) is
            # followed at its own speed.
            cap = min(vmax[j] * scale, abs(t - prev[j]) / dt + sqrt(two_amax[j] * abs(err)))
            # Never so fast that the joint could not stop before its position limit.
            room = hi[j] - qa[j] if v > 0 else qa[j] - lo[j]
            cap = min(cap, sqrt(two_amax[j] * max(room, 0.0)) + amax_dt[j])
            if abs(v) > cap * (1 + 1e-6) + 1e-9:
                over = True
            vs.append(v)
            caps.append(cap)
        if over:
            # Scale every joint alike, so the motion keeps its direction.
            k = min(c / max(abs(v), 1e-12) if abs(v) > 1e-12 else 1.0 for v, c in zip(vs, caps, strict=True))
            k = max(0.0, k)
            vs = [v * k for v in vs]
            clamped = clamped or scale >= 1.0
        va = v_a.tolist()
        for v, a, tol in zip(vs, va, self._dv_tol_list, strict=True):  # (a loop costs less than any())
            if abs(v - a) > tol:
                vs = [a + min(max(v - a, -lim), lim) for v, a, lim in zip(vs, va, amax_dt, strict=True)]
                clamped = clamped or scale >= 1.0
                break
        q = _clip(np.array([a + v * dt for a, v in zip(qa, vs, strict=True)]), self._lo, self._hi)
        return q, (q - q_a) / dt, clamped

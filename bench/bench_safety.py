"""The safety supervisor's cost per control period, against bare MuJoCo forward kinematics.

    python bench/bench_safety.py [--periods 3000] [--repeats 3] [--against REV] [--no-pin]

Builds the supervisors the way ``sim.hardware.build_runtime`` does (demo cell, ``ur5e_1`` and
``panda_1``: limits, geofence and zones from the plant, the arm's link points on the compiled
model, an e-stop latch file) and drives each as ``RobotRuntime.step`` does every period:
``observe`` (the measured joint state and the tracked people) then ``filter`` of the command of
a running move (a synchronised joint move, back and forth, re-timed at the supervisor's speed
scale and restarted after a stop). The measured state follows the command with a first-order
servo lag, as the twin's servos do. Scenarios, each with its own people:

- ``nobody``: the cell is clear;
- ``far``: one person tracked far from the robot (outside the warning band);
- ``near``: one person in the warning band (the robot slows) and one far;
- ``stop``: one person inside the protective separation distance (stop, then hold).

Prints, per robot and scenario, the time of ``observe`` + ``filter`` per period (p50/p99/max,
in us, and the p50's share of the 4 ms period), the modes the periods ended in, the number of
``mujoco.mj_kinematics`` calls per period (counted in a separate untimed pass), and next to it
the bare library: one ``mujoco.mj_kinematics`` call on the same model, the floor of any
supervisor that places its points with MuJoCo. A digest of everything the supervisor returned
(positions, speeds, modes, scales, events, SSM readings) tells whether two versions behave
identically.

``--against REV`` also loads ``robots/safety.py`` and ``robots/kinematics.py`` as they are at the
git revision REV and runs that supervisor interleaved with the current one, period by period
(the load of this shared machine falls on both alike): its p50/p99, the speed-up, and whether the
two digests agree. The process is pinned to one core. It is a benchmark, not a test: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

import robots.safety
from plant import load_plant
from plant.config import PlantDescription
from robots.interface import FloatArray, JointState
from robots.safety import TrackedPerson
from robots.trajectory import JointMove
from sim.hardware import compile_model, link_points

ROOT = Path(__file__).resolve().parents[1]
PERIOD_S = 0.004
SERVO_TAU_S = 0.065  # first-order lag of the twin's position servos (about half their 0.13 s)
ROBOTS = ("ur5e_1", "panda_1")
SCENARIOS = ("nobody", "far", "near", "stop")
# Where each robot goes and comes back from (rad), and where the people stand (m, from the
# robot's base: far is outside the warning band, near inside it, stop inside the protective
# separation distance of the moving arm).
FAR_POSE = {"ur5e_1": [-1.5, -2.2, 1.0, -1.5, -1.5, 1.5]}
FAR_OFFSET = {"panda_1": [0.8, 0.3, 0.0, -0.3, 0.0, 0.3, 0.0]}
SPOTS: dict[str, dict[str, tuple[float, float]]] = {
    "ur5e_1": {"far": (3.0, 2.05), "near": (1.19, -1.19), "stop": (0.63, -0.63)},
    "panda_1": {"far": (-3.6, -1.5), "near": (1.05, -1.05), "stop": (0.63, -0.63)},
}


def _people(plant: PlantDescription, robot: str, scenario: str) -> list[TrackedPerson]:
    bx, by = plant.robots[robot].base.xyz_m[:2]
    spot = {k: (bx + dx, by + dy) for k, (dx, dy) in SPOTS[robot].items()}
    if scenario == "nobody":
        return []
    if scenario == "far":
        return [TrackedPerson("walker_far", *spot["far"], 1.2)]
    if scenario == "near":
        return [TrackedPerson("walker_near", *spot["near"], 1.0), TrackedPerson("walker_far", *spot["far"], 1.2)]
    return [TrackedPerson("intruder", *spot["stop"], 1.0)]


class _Version:
    """A supervisor implementation: this tree's, or the one of a git revision (``--against``)."""

    def __init__(self, rev: str | None) -> None:
        self.name = "current" if rev is None else rev
        self.safety: Any = robots.safety
        self.kinematics: Any = None
        if rev is not None:
            self.kinematics = self._load(rev, "robots/kinematics.py", "_against_kinematics")
            self.safety = self._load(rev, "robots/safety.py", "_against_safety")

    @staticmethod
    def _load(rev: str, path: str, name: str) -> types.ModuleType:
        source = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        module = types.ModuleType(name)
        module.__file__ = f"{rev}:{path}"
        sys.modules[name] = module  # (dataclasses look their module up)
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        return module

    def supervisor(self, plant: PlantDescription, model: mujoco.MjModel, robot: str, state_dir: Path) -> Any:
        """As ``sim.hardware.build_runtime`` builds it."""
        points: Any = link_points(model, plant, robot)
        if self.kinematics is not None:
            points = self.kinematics.LinkPoints(model, points.qpos_adr, points.body_ids, points.site_id)
        s = self.safety
        cfg = s.safety_config_from_plant(plant, robot, PERIOD_S, None)
        latch = s.EstopLatch(state_dir / f"{robot}.estop.json")
        return s.SafetySupervisor(cfg, points, latch, lambda _ev: None)


class _Run:
    """One supervisor driven through the periods of a scenario."""

    def __init__(self, sup: Any, plant: PlantDescription, robot: str, people: list[TrackedPerson]) -> None:
        self.sup, self.people = sup, people
        self.home = np.asarray(plant.robots[robot].home(), dtype=float)
        self.far = (
            np.asarray(FAR_POSE[robot], dtype=float) if robot in FAR_POSE else self.home + np.asarray(FAR_OFFSET[robot])
        )
        self.goal = self.far
        self.meas, self.vel = self.home.copy(), np.zeros_like(self.home)
        self.move: JointMove | None = None
        self.tau = 0.0
        self.t = 0.0
        self.times: list[int] = []
        self.modes: Counter[str] = Counter()
        self._digest = hashlib.sha256()

    def period(self, clock: Callable[[], int] | None) -> None:
        sup = self.sup
        lim = sup.config.limits
        self.t += PERIOD_S
        state = JointState(self.t, self.meas.copy(), self.vel.copy())
        # The runtime's command: the move sampled on its own clock, which runs at the speed
        # scale; re-timed from where the robot is after a stop.
        command: FloatArray | None = None
        if not sup.stopped:
            if self.move is None:
                q_a = sup.position_rad
                start = self.home if q_a is None else q_a
                self.move = JointMove(start, self.goal, lim.max_speed_rad_s, lim.max_accel_rad_s2)
                self.tau = 0.0
            self.tau += sup.speed_scale * PERIOD_S
            command = self.move.sample(self.tau)[0]
            if self.tau > self.move.duration_s + 0.3:
                self.goal = self.home if self.goal is self.far else self.far
                self.move = None
        else:
            self.move = None
        if clock is not None:
            t0 = clock()
            sup.observe(state, self.people)
            applied = sup.filter(command, self.t)
            self.times.append(clock() - t0)
        else:
            sup.observe(state, self.people)
            applied = sup.filter(command, self.t)
        self.modes[applied.mode] += 1
        r = sup.ssm
        self._digest.update(applied.position_rad.tobytes())
        self._digest.update(applied.velocity_rad_s.tobytes())
        fields = (applied.mode, applied.speed_scale, applied.power_on, applied.clamped, applied.refused)
        self._digest.update(
            repr((*fields, r.separation_m, r.protective_distance_m, r.robot_speed_m_s, r.person)).encode()
        )
        # The servo follows the command with a first-order lag.
        new = self.meas + (applied.position_rad - self.meas) * (PERIOD_S / SERVO_TAU_S)
        self.vel = (new - self.meas) / PERIOD_S
        self.meas = new

    def digest(self) -> str:
        d = self._digest.copy()
        for ev in self.sup.events:
            d.update(repr((ev.stamp_s, ev.kind, ev.reason, ev.stop_category)).encode())
        return d.hexdigest()[:16]


def _count_fk(fn: Callable[[], object]) -> int:
    """How many times ``fn`` calls ``mujoco.mj_kinematics``."""
    calls = 0
    bare = mujoco.mj_kinematics

    def counted(m: mujoco.MjModel, d: mujoco.MjData) -> None:
        nonlocal calls
        calls += 1
        bare(m, d)

    mujoco.mj_kinematics = counted
    try:
        fn()
    finally:
        mujoco.mj_kinematics = bare
    return calls


def _us(ns: Sequence[int], p: float) -> float:
    return float(np.percentile(np.asarray(ns, dtype=float), p)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--periods", type=int, default=3000, help="control periods per scenario and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", metavar="REV", help="also run the supervisor of this git revision, interleaved")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to a core")
    args = ap.parse_args()
    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        core = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {core})
        pinned = f"core {core}"
    plant = load_plant(None)
    model = compile_model(plant)
    data = mujoco.MjData(model)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-safety-"))
    current = _Version(None)
    other = _Version(args.against) if args.against else None

    # The bare library: one forward-kinematics pass over the same (whole-cell) model.
    bare: list[int] = []
    for _ in range(20000):
        t0 = time.perf_counter_ns()
        mujoco.mj_kinematics(model, data)
        bare.append(time.perf_counter_ns() - t0)
    bare_us = _us(bare, 50)
    print(
        f"# demo cell ({model.nbody} bodies), control period {PERIOD_S * 1e3:g} ms, {pinned}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.periods} periods x {args.repeats}"
    )
    print(f"bare mujoco.mj_kinematics (same model)     p50 {bare_us:7.1f} us  p99 {_us(bare, 99):7.1f} us")
    head = f"{'robot':8s} {'scenario':8s} {'p50 us':>8s} {'p99 us':>8s} {'max us':>8s} {'p50/4ms':>8s}"
    if other is not None:
        head += f" | {other.name + ' p50':>12s} {'p99':>8s} {'speed-up':>8s} {'same':>5s}"
    print(f"{head} {'FK/period':>9s} {'FK floor':>9s}  modes (periods)  digest")
    for robot in ROBOTS:
        for scenario in SCENARIOS:
            people = _people(plant, robot, scenario)
            # Untimed: the behaviour digests and the FK calls per period.
            base = _Run(current.supervisor(plant, model, robot, state_dir), plant, robot, people)

            def run_base(base: _Run = base) -> None:
                for _ in range(args.periods):
                    base.period(None)

            fk = _count_fk(run_base) / args.periods
            same = ""
            if other is not None:
                ref = _Run(other.supervisor(plant, model, robot, state_dir), plant, robot, people)
                for _ in range(args.periods):
                    ref.period(None)
                same = "yes" if ref.digest() == base.digest() else "NO"
            # Timed, after a warm-up; interleaved with the other version when there is one.
            versions = [current] if other is None else [current, other]
            times: list[int] = []
            times_other: list[int] = []
            for _ in range(args.repeats):
                for v in versions:
                    warm = _Run(v.supervisor(plant, model, robot, state_dir), plant, robot, people)
                    for _ in range(50):
                        warm.period(None)
                timed = [_Run(v.supervisor(plant, model, robot, state_dir), plant, robot, people) for v in versions]
                gc.collect()
                for _ in range(args.periods):
                    for r in timed:
                        r.period(time.perf_counter_ns)
                times += timed[0].times
                if other is not None:
                    times_other += timed[1].times
            p50 = _us(times, 50)
            row = f"{robot:8s} {scenario:8s} {p50:8.1f} {_us(times, 99):8.1f} {max(times) / 1e3:8.1f} "
            row += f"{p50 / (PERIOD_S * 1e6):8.1%}"
            if other is not None:
                o50 = _us(times_other, 50)
                row += f" | {o50:12.1f} {_us(times_other, 99):8.1f} {o50 / p50:7.1f}x {same:>5s}"
            mode_txt = " ".join(f"{k} {v}" for k, v in sorted(base.modes.items()))
            print(f"{row} {fk:9.2f} {fk * bare_us:7.1f}us  {mode_txt}  {base.digest()}")


if __name__ == "__main__":
    main()

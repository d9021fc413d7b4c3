"""The on-robot runtime: executes skill goals at control rate through the safety supervisor.

Every control period (:meth:`RobotRuntime.step`): read the joint state, give it and the people
in the cell to the supervisor, take the command of the running skill (or of a streamed source,
or "hold"), let the supervisor filter it, write what it let through to the hardware.

Two ways to drive it:

- lockstep (dry runs, tests): the owner of an in-process twin calls :meth:`step` after each twin
  tick; planning runs inline in :meth:`submit`, so runs are reproducible;
- live (:meth:`start`): a control thread clocked by the hardware (each new joint state from the
  driver starts a period, so a stop goes out within one period of the state that caused it);
  planning (IK) runs on a worker thread so the loop never waits for it.

Goals, feedback and results cross threads through the callbacks given at construction, which
run on the control thread and must not block (hand data to your own loop or executor).

The runtime trusts the hardware, not its memory, where the two may differ: in its first
control period, and in the first one after the hardware was lost (no joint state for
``state_timeout_periods``: the driver or the twin restarted, the network went), it
synchronises: its hold becomes the measured position, and nothing is written until the
supervisor can take it (a runtime that kept holding its old pose through a driver restart
would drag the arm back there). What the gripper holds is read from the hardware where it can
tell (:class:`GripperSensing`), the part's type from the locator, then and whenever a goal
arrives. Goals are refused while the hardware is lost.

Nothing escapes a control period: bad or missing joint states stop the robot through the
supervisor (a sensor fault), and an exception from reading, a skill, the supervisor or writing
becomes a protective stop with a safety event, logged once per distinct fault; the loop goes on
commanding the stop and holding until an operator resets it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from plant.workers import normal_scheduling, realtime
from robots.interface import FloatArray, HardwareInterface, JointState, Outcome, SkillFeedback, SkillGoal, SkillResult
from robots.kinematics import ArmKinematics
from robots.learned import ApproachController, ApproachInput, LearnedApproach, ScriptedApproach
from robots.safety import Applied, SafetySupervisor, TrackedPerson
from robots.skills import (
    Check,
    Dwell,
    Grip,
    Move,
    SkillContext,
    SkillError,
    SkillPlan,
    SkillPlanner,
    Step,
    Track,
    WaitUntil,
)
from robots.trajectory import JointMove, brake_step

log = logging.getLogger(__name__)

_READING = "reading the joint state"


@dataclass(frozen=True)
class RuntimeConfig:
    """Timing of the runtime, each value with its reason."""

    # A protective stop from SSM pauses the skill; the skill ends "stopped by safety" if the
    # cell is not clear again within this time.
    protective_stop_timeout_s: float = 10.0
    # A move is done when every joint is within this of its target (servo lag is ~0.005 rad).
    settle_tolerance_rad: float = 0.02
    # ... or this long after its trajectory ended (then it fails: the robot is blocked).
    settle_timeout_s: float = 1.5
    # Feedback goes out every this many periods (25 Hz at 250 Hz) and at every phase change.
    feedback_every: int = 10
    # The live loop counts a missing joint state after this many periods as a driver fault.
    state_timeout_periods: int = 25
    # Synchronising with the hardware (at start, after it was lost) takes the measured position
    # as the hold once the arm moves slower than this: a driver that came back holds its last
    # command, and an arm still settling onto it is pulled back only by what it moves meanwhile.
    resync_max_speed_rad_s: float = 0.5
    # A held part is identified as the part of a known type nearest the grip point within this.
    held_part_radius_m: float = 0.1
    # The live loop's thread runs real-time (SCHED_FIFO) at this priority where the process is
    # permitted (plant.workers.realtime), so that the machine's other work does not delay a
    # period: a robot's own runtime (atelier robot runtime) takes REALTIME_PRIORITY. None (the
    # default, for runtimes that share a process with other work: the console's twin, tests):
    # normal scheduling. The loop waits for each joint state, and pauses a period when the
    # hardware gives none newer: it never spins.
    realtime_priority: int | None = None
    # The live loop runs at most this many periods more than one per control period over any
    # stretch of time: joint states that come faster (a flood from a broken driver, or anyone
    # on the network: they are not signed) are taken the newest at the control rate. Each period
    # moves the command by at most a period's worth of the speed limits, so more periods than
    # the clock allows would move the arm faster than its limits; and at real-time priority
    # they would take the core. A state late by a period or two and the next on time both run.
    period_burst: int = 2
    # How fast the joint states' clock runs against the wall clock: 1 for robots, N for a twin
    # run at N times real time (its states come N times as often, each a period of its time).
    clock_speed: float = 1.0

    def __post_init__(self) -> None:
        if not (self.clock_speed > 0 and math.isfinite(self.clock_speed)):
            raise ValueError(f"clock_speed must be a positive number, not {self.clock_speed!r}")
        if self.period_burst < 0:
            raise ValueError(f"period_burst must be 0 or more, not {self.period_burst!r}")


#: What ``holding`` is when the gripper holds something the locator cannot name: no skill plans
#: with it (place and hand-over refuse an unknown part type, pick refuses an occupied gripper).
UNIDENTIFIED_PART = "unidentified part"


@runtime_checkable
class GripperSensing(Protocol):
    """What a :class:`~robots.interface.HardwareInterface` offers when it measures its gripper
    (the ROS 2 driver's joint states, the twin). Both answer None when it cannot tell (yet)."""

    def gripper_closure(self) -> float | None:
        """Measured closure, 0 open .. 1 closed (where the fingers are, not the command)."""

    def gripper_holds(self) -> bool | None:
        """Whether the gripper detects an object between its fingers."""


@dataclass
class TrackControllers:
    """The controllers of :class:`~robots.skills.Track` steps, used on the control thread only.

    ``approach``: the robot's approach-phase controller (learned or scripted, from
    :func:`robots.learned.make_approach`); ``chase``: the scripted chase (descents, lifts);
    ``kinematics``: to the grip site, this object's own (tells when the tool reached the goal).
    """

    approach: ApproachController
    chase: ApproachController
    kinematics: ArmKinematics

    @classmethod
    def from_approach(cls, approach: LearnedApproach | ScriptedApproach, kinematics: ArmKinematics) -> TrackControllers:
        """Controllers around what :func:`robots.learned.make_approach` returned (its scripted
        fallback, or the scripted approach itself, is the chase)."""
        chase = approach.fallback if isinstance(approach, LearnedApproach) else approach
        return cls(approach, chase, kinematics)


class _Active:
    """The goal being executed and where it is."""

    def __init__(self, goal: SkillGoal, plan: SkillPlan, start_s: float) -> None:
        self.goal = goal
        self.plan = plan
        self.start_s = start_s
        self.index = 0
        self.step_start_s: float | None = None
        self.move: JointMove | None = None
        self.tau = 0.0  # trajectory time of the current move (s)
        self.scale = 1.0  # time scaling applied to it (follows the SSM speed scale)
        self.scale_rate = 0.0  # how fast the scaling may change (1/s): a gentle ramp within the limits
        self.move_end_s: float | None = None
        self.paused_since: float | None = None
        self.cancel = False
        self.failing: tuple[Outcome, str] | None = None
        self.grip_sent = False
        self.track_started = False  # the Track step's controller was reset for this phase
        self.track_goal: FloatArray | None = None  # where the Track step's goal was last seen
        self.inside_since: float | None = None  # since when the tool is within the Track tolerance


class RobotRuntime:
    """Runs the skills of one robot on a :class:`HardwareInterface` behind a :class:`SafetySupervisor`.

    ``people`` returns the people currently tracked (for SSM); ``clock`` gives the time for the
    supervisor and the watchdog (None: the joint state's own stamp, the twin's time in lockstep).
    ``tracking`` runs :class:`~robots.skills.Track` steps (without it they fail); every command
    of such a phase goes through the supervisor like any other. :attr:`track_log` lists
    (phase, controller kind, reason) for each tracking phase begun.
    """

    def __init__(
        self,
        hardware: HardwareInterface,
        supervisor: SafetySupervisor,
        planner: SkillPlanner,
        people: Callable[[], Sequence[TrackedPerson]] | None = None,
        on_feedback: Callable[[SkillFeedback], None] | None = None,
        on_result: Callable[[SkillResult], None] | None = None,
        clock: Callable[[], float] | None = None,
        config: RuntimeConfig | None = None,
        plan_inline: bool = True,
        tool_position: Callable[[], FloatArray] | None = None,
        tracking: TrackControllers | None = None,
    ) -> None:
        self.hw = hardware
        self.robot = hardware.robot
        self.supervisor = supervisor
        self.planner = planner
        self.people = people or (lambda: ())
        self.on_feedback = on_feedback
        self.on_result = on_result
        self.clock = clock
        self.config = config or RuntimeConfig()
        self.dt = hardware.control_period_s
        self.holding: str | None = None
        self.tool_position = tool_position
        self.tracking = tracking
        self.track_log: list[tuple[str, str, str]] = []  # (phase, controller kind, reason), bounded
        if tracking is not None:
            log.info("%s: approach phase %s (%s)", hardware.robot, tracking.approach.kind, tracking.approach.reason)
        self.phase = ""
        self.ticks = 0
        self.last_state: JointState | None = None
        self.last_applied: Applied | None = None
        self.period_log: list[float] = []  # wall-clock period starts of the live loop (bounded)
        self.scheduling = "not started"  # what the live loop's thread got (plant.workers.realtime)
        self._lock = threading.Lock()
        self._active: _Active | None = None
        self._planning: tuple[SkillGoal, Future[SkillPlan]] | None = None
        self._cancel_ids: set[str] = set()
        self._stream: tuple[FloatArray, str, float] | None = None  # position, source, when
        self._gripper = 0.0
        self._plan_inline = plan_inline
        self._pool: ThreadPoolExecutor | None = (
            None if plan_inline else ThreadPoolExecutor(1, "atelier-plan", initializer=normal_scheduling)
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._early = False  # run the next period at once (stop_now)
        self._ran_early_at: float | None = None  # when a period ran ahead of its joint state
        self._now = 0.0
        self._last_stamp = -math.inf  # stamp (s) of the newest joint state
        self._stale = 0  # periods since a joint state newer than that
        self._fault_log: dict[tuple[str, str, str, int], int] = {}  # logged faults: times seen
        self._results: dict[str, SkillResult] = {}
        self._refusals = (-math.inf, 0, 0)  # (window start, refusals in it, not recorded since)
        # Synchronised with the hardware (hold = measured, holding read from the gripper)? Not
        # yet at start; no longer once the joint states stop (see the module docstring).
        self._synced = False
        self._hw_lost = False
        self._gripper_silent = False  # the hardware cannot tell what the gripper holds (logged once)

    # ------------------------------------------------------------------ goals

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._active is not None or self._planning is not None

    @property
    def active_goal(self) -> SkillGoal | None:
        with self._lock:
            if self._active is not None:
                return self._active.goal
            return self._planning[0] if self._planning is not None else None

    def result_of(self, goal_id: str) -> SkillResult | None:
        """The result of a finished goal (the last few hundred are kept)."""
        with self._lock:
            return self._results.get(goal_id)

    def submit(self, goal: SkillGoal) -> tuple[bool, str]:
        """Accept a goal (True, "") or refuse it (False, reason) at once; never blocks on motion.

        A refused goal also gets a result through ``on_result`` (failed, or stopped by safety
        when the e-stop is latched). One goal runs at a time; a goal id seen before is refused.
        """
        now = self._time()
        reason = ""
        outcome = Outcome.FAILED
        with self._lock:
            if goal.goal_id in self._results or (self._active and self._active.goal.goal_id == goal.goal_id):
                return False, f"goal {goal.goal_id} was already received"
            if goal.robot != self.robot:
                reason = f"goal for {goal.robot} sent to {self.robot}"
            elif self.supervisor.estopped:
                reason = self.supervisor.stop_causes().get("estop", "e-stop latched")
                outcome = Outcome.STOPPED_BY_SAFETY
            elif self._active is not None or self._planning is not None:
                busy = self._active.goal.goal_id if self._active else self._planning[0].goal_id  # type: ignore[index]
                reason = f"{self.robot} is busy with goal {busy}"
            elif self._hw_lost:
                reason = f"{self.robot}: no joint state from the driver (re-synchronising with the hardware)"
        if reason:
            self._finish(SkillResult(goal.goal_id, outcome, reason, 0.0))
            return False, reason
        self._sense_holding()  # what the gripper holds now, not what the runtime remembers
        ctx = SkillContext(self._start_position(), self.holding, self.tool_position)
        if self._plan_inline or self._pool is None:
            try:
                plan = self.planner.plan(goal, ctx)
            except SkillError as exc:
                self._finish(SkillResult(goal.goal_id, Outcome.FAILED, str(exc), 0.0))
                return False, str(exc)
            with self._lock:
                self._begin(goal, plan, now)
        else:
            fut = self._pool.submit(self.planner.plan, goal, ctx)
            with self._lock:
                self._planning = (goal, fut)
        return True, ""

    #: Refusals recorded one by one per second at most (:meth:`refuse`); beyond, they are counted.
    REFUSALS_PER_S = 5

    def refuse(self, what: str, reason: str) -> bool:
        """Record a command refused before admission (over the network: an unauthenticated, stale
        or replayed goal, cancel or e-stop reset): a ``refuse`` event in the supervisor's event
        log (through its ``on_event``) and a warning in the log. Never blocks. At most
        :attr:`REFUSALS_PER_S` a second are recorded, so that a flood cannot push real safety
        events out of the log; the next recorded one says how many were not. True if recorded."""
        now = self._time()
        with self._lock:
            start, n, skipped = self._refusals
            if now - start >= 1.0:
                start, n = now, 0
            if n >= self.REFUSALS_PER_S:
                self._refusals = (start, n, skipped + 1)
                return False
            self._refusals = (start, n + 1, 0)
        text = f"{what} refused: {reason}"
        if skipped:
            text += f" ({skipped} more refused before this, not recorded one by one)"
        log.warning("%s: %s", self.robot, text)
        self.supervisor._emit(now, "refuse", text)  # the supervisor's one event path: its log, on_event
        return True

    def cancel(self, goal_id: str | None = None) -> bool:
        """Ask the running goal (or ``goal_id``) to stop: it brakes, then ends "cancelled"."""
        with self._lock:
            cur = self._active.goal.goal_id if self._active else (self._planning[0].goal_id if self._planning else None)
            if cur is None or (goal_id is not None and goal_id != cur):
                return False
            self._cancel_ids.add(cur)
            return True

    def stream(self, position_rad: FloatArray, source: str) -> None:
        """A streamed joint position command (teleoperation, a policy): arms the watchdog.

        Ignored while a skill runs. The source must keep sending every control period; when it
        falls silent the supervisor's watchdog stops the robot, and its last command is dropped:
        nothing ever commands it again (a new goal drops it too).
        """
        now = self._time()
        with self._lock:
            self._stream = (np.asarray(position_rad, dtype=float), source, now)
        self.supervisor.stream(source, now)

    def end_stream(self) -> None:
        with self._lock:
            self._stream = None
        self.supervisor.end_stream()

    def _start_position(self) -> FloatArray:
        q = self.supervisor.position_rad
        if q is None:
            state = self.last_state or self.hw.read()
            q = np.asarray(state.position, dtype=float)
        return q

    def _begin(self, goal: SkillGoal, plan: SkillPlan, now: float) -> None:
        self._stream = None  # (under the lock) a goal ends any stream; it never resumes afterwards
        self.supervisor.acknowledge(now)
        self.supervisor.resync()
        self._active = _Active(goal, plan, now)

    def _time(self) -> float:
        if self.clock is not None:
            return self.clock()
        return self._now

    # ------------------------------------------------------------------ the control period

    def step(self, state: JointState | None = None) -> Applied:
        """One control period on ``state`` (None: read it from the hardware); see the module
        docstring. Does not block beyond the hardware's ``read`` and ``write``.

        Never raises. A joint state the supervisor refuses, one whose stamp has not advanced for
        ``state_timeout_periods`` periods in a row, and a read that raises (``TimeoutError``
        included) stop the robot as a sensor fault; an exception from a skill, the supervisor
        or writing as an internal fault (:meth:`SafetySupervisor.internal_fault`). Either way
        the running goal ends stopped by safety, and the period commands the stop when it can.
        Before the first good joint state nothing is written: the position returned is NaN.
        """
        return self._period(state, read=state is None)

    def _period(self, state: JointState | None, read: bool, silent_s: float = 0.0) -> Applied:
        """A control period on ``state``, read from the hardware if ``read``. None without
        ``read``: no joint state came for ``silent_s`` (s), past the state timeout (live loop)."""
        sup = self.supervisor
        now = self._time()
        stage = _READING
        applied: Applied | None = None
        try:
            if read:
                state = self.hw.read()
            if state is not None:
                stamp = state.stamp_s
                if stamp > self._last_stamp:  # (not a NaN, not a reading seen before)
                    self._last_stamp, self._stale, self._now = stamp, 0, stamp
                else:
                    self._stale += 1
                self.last_state = state
                now = self._time()
                stage = "tracking people"
                people = self.people()
                stage = "the safety supervisor"
                sup.observe(state, people, now)
                if not self._synced and sup.has_position and not self._sync(state):
                    # Not yet: the supervisor brakes what it last commanded, on paper; nothing
                    # is written, so the driver holds the arm where it is.
                    applied = self.last_applied = sup.filter(None, now)
                    self.ticks += 1
                    return applied
                if self._stale >= self.config.state_timeout_periods:
                    sup.sensor_fault(
                        f"no new joint state for {self._stale} control periods ({self._stale * self.dt:.3f} s)", now
                    )
            elif sup.has_position:  # (before the first joint state there is nothing to stop)
                sup.sensor_fault(f"no joint state from the driver for {silent_s:.3f} s", now)
            stage = "the skill"
            self._take_planned(now)
            with self._lock:
                active = self._active
                stream = self._stream
                if active is not None and active.goal.goal_id in self._cancel_ids:
                    active.cancel = True
            command: FloatArray | None = None
            if active is not None:
                command = self._skill_command(active, now)
            elif stream is not None:
                if now - stream[2] <= sup.config.watchdog_timeout_s:
                    command = stream[0]
                else:  # silent: the watchdog stops the robot; the stale target is never taken up again
                    with self._lock:
                        if self._stream is stream:
                            self._stream = None
            stage = "the safety supervisor"
            if not sup.has_position:
                return self._unwritten()
            applied = sup.filter(command, now)
            stage = "writing the command"
            self.hw.write(applied.position_rad)
            stage = "the skill"
            if active is not None and not sup.stopped:
                self._skill_gripper(active, now)
            self.last_applied = applied
            if active is not None:
                self._after(active, applied, now)
            self.ticks += 1
            return applied
        except Exception as exc:  # nothing escapes a control period
            return self._period_failed(stage, exc, now, applied)

    def _period_failed(self, stage: str, exc: Exception, now: float, applied: Applied | None) -> Applied:
        """The period raised ``exc`` in ``stage``: stop (a sensor fault when reading, else an
        internal fault), have the running goal end stopped by safety, and command the stop (the
        supervisor brakes on its own commanded motion: no measurement needed) unless the period
        has had the supervisor's command already (``applied``: one step per period). Never raises."""
        sup = self.supervisor
        reason = f"{stage} failed: {type(exc).__name__}: {exc}"
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        try:
            if not {"sensor_fault", "internal_fault"} & set(sup.stop_causes()):
                self._fault_log.clear()  # a new fault episode: log its faults again
            self._log_fault(stage, exc)
            if stage == _READING:
                sup.sensor_fault(reason, now)
            else:
                sup.internal_fault(reason, now)
            with self._lock:
                active = self._active
            if active is not None and active.failing is None and not active.cancel:
                active.failing = (Outcome.STOPPED_BY_SAFETY, reason)
            if applied is None:
                if not sup.has_position:
                    return self._unwritten()
                applied = sup.filter(None, now)
                self.hw.write(applied.position_rad)
                self.last_applied = applied
                self.ticks += 1
            if active is not None and applied.mode == "stopped":
                outcome, why = (Outcome.CANCELLED, "cancelled") if active.failing is None else active.failing
                self._end(active, outcome, why, now)
            return applied
        except Exception as again:  # the stop itself failed: the driver holds the last command
            self._log_fault(f"stopping after {stage} failed", again)
            return self._unwritten()

    def _log_fault(self, stage: str, exc: Exception) -> None:
        """Log an exception of a control period once per distinct fault (its stage, type and the
        line that raised it) in a fault episode: a fault of every period is one line, not 250 a
        second. Failed reads are logged without their traceback."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        key = (stage, type(exc).__name__, tb.tb_frame.f_code.co_filename if tb else "", tb.tb_lineno if tb else 0)
        seen = self._fault_log.get(key)
        if seen is not None:
            self._fault_log[key] = seen + 1
            return
        if len(self._fault_log) >= 20:
            return
        self._fault_log[key] = 1
        more = " (further faults of this episode not logged)" if len(self._fault_log) == 20 else ""
        log.error(
            "%s: %s failed: %s: %s; the robot stops, logged once%s",
            self.robot,
            stage,
            type(exc).__name__,
            exc,
            more,
            exc_info=None if stage == _READING else exc,
        )

    def _unwritten(self) -> Applied:
        """What a period that wrote nothing returns: the last position written (NaN before the
        first), at rest, power off."""
        last = self.last_applied
        q = last.position_rad.copy() if last is not None else np.full(len(self.hw.joint_names), np.nan)
        return Applied(q, np.zeros(len(q)), "stopped", 0.0, False)

    @property
    def synced(self) -> bool:
        """True while the runtime works from the hardware as it is: after its first control
        period, until the joint states stop (then again after the first period once they are back)."""
        return self._synced

    def _sync(self, state: JointState) -> bool:
        """Take the hardware as it is (see the module docstring). True once done."""
        sup = self.supervisor
        q = sup.position_rad
        meas = np.asarray(state.position, dtype=float)
        off = float(np.max(np.abs(q - meas))) if q is not None else 0.0
        if off > 1e-9:
            if not sup.resync(tolerance_rad=0.0, max_speed_rad_s=self.config.resync_max_speed_rad_s):
                return False
            log.warning("%s: the arm is %.3f rad from where the runtime held it: held where it is", self.robot, off)
        self._sense_holding()
        with self._lock:
            self._synced = True
            self._hw_lost = False
        log.info("%s: synchronised with the hardware (holding %s)", self.robot, self.holding or "nothing")
        return True

    def _sense_holding(self) -> None:
        """``holding`` from the gripper's own reading, where the hardware has one."""
        hw = self.hw
        if not isinstance(hw, GripperSensing):
            return
        try:
            holds = hw.gripper_holds()
        except TimeoutError:
            holds = None
        if holds is None:
            if not self._gripper_silent:
                self._gripper_silent = True
                log.warning("%s: the gripper reports nothing; holding %s (from memory)", self.robot, self.holding)
            return
        self.holding = self._identify_held() if holds else None

    def _identify_held(self) -> str:
        """The type of the part at the grip point (the one held), else :data:`UNIDENTIFIED_PART`."""
        locator, tool = self.planner.locator, self.tool_position
        if locator is None or tool is None:
            return self.holding or UNIDENTIFIED_PART
        at = np.asarray(tool(), dtype=float)
        best, best_d = UNIDENTIFIED_PART, self.config.held_part_radius_m
        for part_type in self.planner.plant.part_types:
            found = locator.locate(part_type, at, best_d)
            if found is not None:
                d = float(np.linalg.norm(np.asarray(found, dtype=float) - at))
                if d <= best_d:
                    best, best_d = part_type, d
        return best

    def _hardware_lost(self, reason: str) -> None:
        """The joint states stopped: the next one starts a synchronisation; a goal still being
        planned fails (its plan starts where the arm may no longer be), new goals are refused.
        Before the first joint state there is nothing to lose (the first one synchronises)."""
        if self.last_state is None:
            return
        with self._lock:
            first = not self._hw_lost
            self._synced = False
            self._hw_lost = True
            planning, self._planning = self._planning, None
        if planning is not None:
            planning[1].cancel()
            self._finish(SkillResult(planning[0].goal_id, Outcome.FAILED, reason, 0.0))
        if first:
            log.warning("%s: %s; re-synchronising when it comes back", self.robot, reason)

    def _take_planned(self, now: float) -> None:
        with self._lock:
            planning = self._planning
        if planning is None or not planning[1].done():
            return
        goal, fut = planning
        try:
            plan = fut.result()
        except SkillError as exc:
            with self._lock:
                self._planning = None
            self._finish(SkillResult(goal.goal_id, Outcome.FAILED, str(exc), 0.0))
            return
        except Exception as exc:  # a bug in planning must not take the control loop down
            log.exception("planning %s failed", goal.goal_id)
            with self._lock:
                self._planning = None
            self._finish(SkillResult(goal.goal_id, Outcome.FAILED, f"planning error: {exc}", 0.0))
            return
        with self._lock:
            self._planning = None
            if goal.goal_id in self._cancel_ids:
                self._cancel_ids.discard(goal.goal_id)
                cancelled = True
            else:
                cancelled = False
                self._begin(goal, plan, now)
        if cancelled:
            self._finish(SkillResult(goal.goal_id, Outcome.CANCELLED, "cancelled before it started", 0.0))

    def _current(self, active: _Active) -> Step | None:
        steps = active.plan.steps
        return steps[active.index] if active.index < len(steps) else None

    def _skill_command(self, active: _Active, now: float) -> FloatArray | None:
        sup = self.supervisor
        q_a = sup.position_rad
        if active.cancel or active.failing is not None:
            # Brake on the path we are on, within the limits; the result goes out at rest.
            if q_a is None:
                return None
            q, _ = brake_step(q_a, sup.velocity_rad_s, sup.config.limits.max_accel_rad_s2, self.dt)
            return q
        if sup.stopped:
            causes = sup.stop_causes()
            if set(causes) - {"protective_stop"}:
                reason = "; ".join(causes.values())
                active.failing = (Outcome.STOPPED_BY_SAFETY, reason)
                return None
            if active.paused_since is None:
                active.paused_since = now
            elif now - active.paused_since > self.config.protective_stop_timeout_s:
                active.failing = (Outcome.STOPPED_BY_SAFETY, causes.get("protective_stop", "protective stop"))
            # The supervisor brakes; the move is re-timed (a tracking phase restarted) from
            # wherever the robot stops.
            active.move = None
            active.track_started = False
            return None
        active.paused_since = None
        step = self._current(active)
        if step is None:
            return None
        if active.step_start_s is None:
            active.step_start_s = now
        if isinstance(step, Move):
            if active.move is None:
                start = q_a if q_a is not None else np.asarray(self.last_state.position)  # type: ignore[union-attr]
                lim = sup.config.limits
                active.move = JointMove(
                    start, step.target_rad, lim.max_speed_rad_s, lim.max_accel_rad_s2, step.speed_scale
                )
                active.tau = 0.0
                active.scale = 0.0
                active.scale_rate = 0.5 * float(np.min(lim.max_accel_rad_s2 / lim.max_speed_rad_s))
                active.move_end_s = None
            # Follow the SSM speed scale with a ramp gentle enough to stay inside the limits.
            rate = active.scale_rate
            target_scale = sup.speed_scale
            d = target_scale - active.scale
            active.scale += max(-rate * self.dt, min(rate * self.dt, d)) if active.tau > 0 else d
            active.tau += active.scale * self.dt
            q, _, _ = active.move.sample(active.tau)
            return q
        if isinstance(step, Track):
            return self._track_command(active, step, q_a)
        return q_a

    def _track_command(self, active: _Active, step: Track, q_a: FloatArray | None) -> FloatArray | None:
        """The next command of a tracking phase: the phase controller's request, which the caller
        hands to the supervisor like any other command."""
        tr = self.tracking
        if tr is None:
            active.failing = (Outcome.FAILED, f"{step.label}: {self.robot} has no controller for a moving target")
            return None
        state = self.last_state
        if q_a is None or state is None:
            return None
        seen = step.goal()
        if seen is None:
            active.failing = (Outcome.FAILED, f"{step.label}: lost sight of the target")
            return None
        active.track_goal = np.asarray(seen.position_m, dtype=float)
        ctrl = tr.approach if step.controller == "approach" else tr.chase
        if not active.track_started:
            ctrl.reset(q_a)
            active.track_started = True
            active.inside_since = None
            if len(self.track_log) < 1000:
                self.track_log.append((step.label, ctrl.kind, ctrl.reason))
            log.info("%s: %s with the %s controller (%s)", self.robot, step.label, ctrl.kind, ctrl.reason)
        vel = np.asarray(seen.velocity_m_s, dtype=float)
        age = seen.age_s
        aim = active.track_goal
        if step.lead_s > 0:
            aim, age = aim + vel * (step.lead_s + age), 0.0
        sensed = ApproachInput(
            np.asarray(state.position, dtype=float), np.asarray(state.velocity, dtype=float), aim, vel, age
        )
        return ctrl.command(sensed, q_a)

    def _skill_gripper(self, active: _Active, now: float) -> None:
        step = self._current(active)
        if isinstance(step, Grip) and not active.grip_sent and not (active.cancel or active.failing):
            self.hw.set_gripper(step.closed_fraction)
            self._gripper = step.closed_fraction
            active.grip_sent = True
            active.step_start_s = now

    def _after(self, active: _Active, applied: Applied, now: float) -> None:
        if active.cancel or active.failing is not None:
            if applied.mode == "stopped" or not np.any(applied.velocity_rad_s):
                outcome, reason = (Outcome.CANCELLED, "cancelled") if active.cancel else active.failing  # type: ignore[misc]
                self._end(active, outcome, reason, now)
            return
        step = self._current(active)
        if step is None:
            self._end(active, Outcome.SUCCEEDED, "", now)
            return
        done = False
        t0 = active.step_start_s if active.step_start_s is not None else now
        if isinstance(step, Move):
            mv = active.move
            if mv is not None and active.tau >= mv.duration_s:
                if active.move_end_s is None:
                    active.move_end_s = now
                meas = np.asarray(self.last_state.position) if self.last_state is not None else step.target_rad
                err = float(np.max(np.abs(meas - step.target_rad)))
                if err <= self.config.settle_tolerance_rad:
                    done = True
                elif now - active.move_end_s > self.config.settle_timeout_s:
                    active.failing = (Outcome.FAILED, f"{step.label}: did not reach the target ({err:.3f} rad off)")
        elif isinstance(step, Grip):
            done = active.grip_sent and now - t0 >= step.settle_s
        elif isinstance(step, Dwell):
            done = now - t0 >= step.seconds
        elif isinstance(step, Check):
            why = step.check()
            if why is not None:
                active.failing = (Outcome.FAILED, why)
            else:
                done = True
        elif isinstance(step, Track):
            done = self._track_done(active, step, now, t0)
        elif isinstance(step, WaitUntil):
            if step.ready():
                done = True
            elif now - t0 > step.timeout_s:
                active.failing = (Outcome.FAILED, f"{step.label}: timed out after {step.timeout_s:.0f} s")
        phase_changed = False
        if done:
            active.index += 1
            active.step_start_s = None
            active.move = None
            active.grip_sent = False
            active.track_started = False
            active.track_goal = None
            active.inside_since = None
            phase_changed = True
            if active.index >= len(active.plan.steps):
                self._end(active, Outcome.SUCCEEDED, "", now)
                return
        cur = self._current(active)
        self.phase = cur.label if cur is not None else ""
        if self.on_feedback is not None and (phase_changed or self.ticks % self.config.feedback_every == 0):
            self.on_feedback(SkillFeedback(active.goal.goal_id, self._progress(active), self.phase))

    def _track_done(self, active: _Active, step: Track, now: float, t0: float) -> bool:
        """A tracking phase ends when the tool (from the measured joints) stayed within its
        tolerance of the goal for its hold time; it fails after its timeout."""
        tr, state, goal = self.tracking, self.last_state, active.track_goal
        if tr is None or state is None or goal is None or not active.track_started:
            return False
        tool, _ = tr.kinematics.fk(np.asarray(state.position, dtype=float))
        dist = float(np.linalg.norm(tool - goal))
        if dist <= step.tolerance_m:
            if active.inside_since is None:
                active.inside_since = now
            if now - active.inside_since >= step.hold_s - 1e-9:
                return True
        else:
            active.inside_since = None
        if now - t0 > step.timeout_s:
            active.failing = (
                Outcome.FAILED,
                f"{step.label}: did not close in on the target within {step.timeout_s:.1f} s ({dist:.3f} m off)",
            )
        return False

    def _progress(self, active: _Active) -> float:
        n = len(active.plan.steps)
        frac = 0.0
        step = self._current(active)
        if isinstance(step, Move) and active.move is not None and active.move.duration_s > 0:
            frac = min(1.0, active.tau / active.move.duration_s)
        return min(1.0, (active.index + frac) / max(n, 1))

    def _end(self, active: _Active, outcome: Outcome, reason: str, now: float) -> None:
        if outcome == Outcome.SUCCEEDED:
            self.holding = active.plan.holding_after
        elif outcome == Outcome.FAILED:
            # Blocked arms jitter against what blocks them: allow some measured speed.
            self.supervisor.resync(max_speed_rad_s=0.5)
        with self._lock:
            self._active = None
            self._cancel_ids.discard(active.goal.goal_id)
        self.phase = ""
        if self.on_feedback is not None and outcome == Outcome.SUCCEEDED:
            self.on_feedback(SkillFeedback(active.goal.goal_id, 1.0, "done"))
        self._finish(SkillResult(active.goal.goal_id, outcome, reason, max(0.0, now - active.start_s)))

    def _finish(self, result: SkillResult) -> None:
        with self._lock:
            self._results[result.goal_id] = result
            if len(self._results) > 500:
                for k in list(self._results)[:100]:
                    del self._results[k]
        if self.on_result is not None:
            self.on_result(result)

    # ------------------------------------------------------------------ live

    def start(self) -> RobotRuntime:
        """Run the control loop on its own thread, clocked by the hardware's joint states."""
        if self._thread is not None:
            raise RuntimeError("the runtime is already running")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, "atelier-plan", initializer=normal_scheduling)
            self._plan_inline = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"atelier-runtime-{self.robot}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def trip_estop(self, reason: str, source: str) -> None:
        """Latch the e-stop (:meth:`SafetySupervisor.trip_estop`) and send the stop at once
        (:meth:`stop_now`, before the latch file is written). Thread-safe: for the e-stop's
        service, button or console. Only the trip that latches it sends the stop early: the
        e-stop is open to anyone, and a flood of trips must not brake faster than the limits."""
        latched = self.supervisor.estopped
        self.supervisor.trip_estop(reason, source, time.monotonic(), stopped=None if latched else self.stop_now)

    def stop_now(self) -> None:
        """Run the live loop's next control period at once instead of at the next joint state,
        after a stop was tripped from outside the loop: the stopping command goes out within the
        period, not up to one later. The joint state that period stood in for (the next, if it
        comes within the period) gets no period of its own, so the driver gets the stop's
        commands one period apart, only the first one earlier, and braking is not faster than
        the supervisor's limits. Nothing happens without a live loop, or on hardware whose
        ``wait`` cannot be interrupted (no ``interrupt`` method): there the next joint state
        sends the stop, as before. Thread-safe."""
        interrupt = getattr(self.hw, "interrupt", None)
        if self._thread is None or interrupt is None:
            return
        self._early = True
        interrupt()

    def _run(self) -> None:
        self.scheduling = realtime(self.config.realtime_priority)
        log.info("%s control loop: %s", self.robot, self.scheduling)
        wait = getattr(self.hw, "wait", None)
        timeout = self.config.state_timeout_periods * self.dt
        last = time.monotonic()  # when the last joint state came
        # Periods the clock allows now (a token bucket: one per control period, at most
        # period_burst + 1 kept), so that states faster than the clock run no more periods.
        burst = float(self.config.period_burst + 1)
        allowed, counted_at = burst, last
        period_wall = self.dt / self.config.clock_speed
        while not self._stop.is_set():
            try:
                # Until the state timeout, wait for the driver's next state; past it, run a period
                # of our own every control period: the supervisor stops and holds without one.
                silent = time.monotonic() - last
                state = wait(max(timeout - silent, self.dt)) if wait is not None else self._sleep_read()
            except TimeoutError:
                silent = time.monotonic() - last
                if silent >= timeout:
                    self._hardware_lost(f"no joint state from the driver for {silent:.3f} s")
                    self._period(None, read=False, silent_s=silent)
                continue
            except Exception as exc:  # a broken driver: a sensor fault, and a period's pause
                self._period_failed(_READING, exc, self._time(), None)
                self._stop.wait(self.dt)
                continue
            if not self._early and not state.stamp_s > self._last_stamp:
                # No newer state and no stop to send at once (a hardware whose wait does not
                # block, a repeated message): a period's pause first, so that the loop never
                # spins; at real-time priority it would take its core from everything else.
                self._stop.wait(self.dt)
            last = time.monotonic()
            allowed = min(burst, allowed + (last - counted_at) / period_wall)
            if allowed < 1.0 and not self._early:
                # Faster than the clock: wait for the period it allows, then take the newest state
                # (the one in hand if none came, or if the driver failed: its next wait says so).
                self._stop.wait((1.0 - allowed) * period_wall)
                with contextlib.suppress(Exception):
                    state = wait(0.0) if wait is not None else state
                now = time.monotonic()
                allowed, last = min(burst, allowed + (now - last) / period_wall), now
            counted_at = last
            allowed = max(0.0, allowed - 1.0)
            if self._early:
                self._early = False
                if state.stamp_s <= self._last_stamp:  # (woken with no new state: the period runs now)
                    self._ran_early_at = last
            elif self._ran_early_at is not None:
                ahead, self._ran_early_at = self._ran_early_at, None
                if last - ahead < self.dt:
                    continue  # (this state's period ran ahead of it, at stop_now)
            t = time.perf_counter()
            if len(self.period_log) < 200_000:
                self.period_log.append(t)
            self.step(state)

    def _sleep_read(self) -> JointState:
        time.sleep(self.dt)
        return self.hw.read()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no goal is running (live mode). True if idle in time."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.busy:
                return True
            time.sleep(0.01)
        return not self.busy

    def run_lockstep(self, tick: Callable[[], None], timeout_s: float = 60.0) -> SkillResult | None:
        """Lockstep helper: call ``tick()`` (advance the twin one period) then :meth:`step`, until
        the running goal ends or ``timeout_s`` of robot time passes. Returns its result."""
        goal = self.active_goal
        if goal is None:
            return None
        n = math.ceil(timeout_s / self.dt)
        for _ in range(n):
            tick()
            self.step()
            res = self.result_of(goal.goal_id)
            if res is not None:
                return res
        return None

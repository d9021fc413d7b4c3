"""Robot interfaces: the hardware interface under the runtime, and the robot agent over it.

- :class:`HardwareInterface`: read joint state, write a joint position command, at a fixed
  control rate. Backends: ROS 2 topics to a robot driver (``robots.ros2``) and the in-process
  MuJoCo twin (supplied by ``sim``). Every command passes the safety supervisor first.
- :class:`RobotAgent`: what the coordinator's executor uses to have a robot perform a skill
  (over ROS 2 to the on-robot runtime, or in-process for rehearsal).

Message types here are plain frozen dataclasses; each backend converts them to its wire
format (standard ROS 2 messages where one fits).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class JointState:
    """Measured joint positions (rad) and velocities (rad/s) at ``stamp_s`` (robot clock)."""

    stamp_s: float
    position: FloatArray
    velocity: FloatArray


class NewestState:
    """The newest joint state, handed from the thread that receives it to the control loop: the
    base of the hardware interfaces. A receiver sets ``_state`` and counts ``_seq`` under
    ``_cond`` and notifies; ``source`` names where states come from, for the messages."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._cond = threading.Condition()
        self._state: JointState | None = None
        self._seq = 0
        self._seen = 0
        self._interrupted = False

    def wait(self, timeout_s: float) -> JointState:
        """Block until a joint state newer than the last one returned (``TimeoutError`` after
        ``timeout_s``), or until :meth:`interrupt`: then the last one, at once."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._seq > self._seen or (self._interrupted and self._state is not None), timeout_s
            ):
                raise TimeoutError(f"no joint state from {self._source} in {timeout_s:.3f} s")
            self._interrupted = False
            self._seen = self._seq
            assert self._state is not None
            return self._state

    def interrupt(self) -> None:
        """Make the :meth:`wait` under way (or the next) return the last joint state at once
        (:meth:`robots.runtime.RobotRuntime.stop_now`)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()


@runtime_checkable
class HardwareInterface(Protocol):
    """A robot's joints. ``read`` and ``write`` do not block longer than one control period."""

    robot: str
    joint_names: tuple[str, ...]
    control_period_s: float

    def read(self) -> JointState:
        """The latest joint state (raises ``TimeoutError`` if none arrived for too long).

        Passed on as the driver sent it: the safety supervisor checks every reading (finite,
        of the right length, within the limits, plausible, fresh) and stops the robot on a
        bad one, so a backend never drops or repairs one silently.
        """

    def write(self, position: FloatArray) -> None:
        """Command joint positions (rad). Only the safety supervisor calls this."""

    def set_gripper(self, closed_fraction: float) -> None:
        """0 open, 1 closed."""


class Outcome(enum.StrEnum):
    """How a skill ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED_BY_SAFETY = "stopped_by_safety"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SkillGoal:
    """A skill to perform, with its arguments (names from ``plant.skills``).

    ``goal_id`` names the goal once: a runtime refuses an id it has seen. The executor makes it
    unpredictable (plan, step and a random part). ``plan_hash`` and ``step_id`` say which approved
    plan and step it carries out ("" when none, e.g. a test's goal); over ROS 2 they are signed
    with the rest of the goal.
    """

    goal_id: str
    robot: str
    skill: str
    args: Mapping[str, str | float | int | list[float]] = field(default_factory=dict)
    plan_hash: str = ""
    step_id: str = ""


@dataclass(frozen=True)
class SkillFeedback:
    goal_id: str
    progress: float  # 0..1
    phase: str


@dataclass(frozen=True)
class SkillResult:
    goal_id: str
    outcome: Outcome
    reason: str = ""
    duration_s: float = 0.0


class StopCategory(enum.IntEnum):
    """IEC 60204-1 stop categories.

    0: remove power at once (uncontrolled stop). 1: controlled stop, then remove power.
    2: controlled stop, power stays on and the position is held.
    """

    CAT0 = 0
    CAT1 = 1
    CAT2 = 2


#: A robot's safety state as people see it: normal, slowed for a person near, protectively
#: stopped (resumes by itself, except after a sensor or internal fault, which the plant may latch
#: until an operator resets it), or e-stopped (latched until an operator resets it).
SafetyState = Literal["ok", "reduced_speed", "protective_stop", "estop"]


@dataclass(frozen=True)
class SafetyEvent:
    """An intervention of the safety supervisor, with its reason."""

    stamp_s: float
    robot: str
    # "clamp", "refuse", "slow", "protective_stop", "watchdog", "estop", "reset", "resume",
    # "sensor_fault" (bad or missing joint states), "internal_fault" (an error in a control period)
    kind: str
    reason: str
    stop_category: StopCategory | None = None


@runtime_checkable
class RobotAgent(Protocol):
    """A robot as the coordinator sees it: send a skill, watch it, cancel it."""

    name: str

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        """Perform a skill and return its outcome; cancelling the awaiting task cancels it."""

    def feedback(self) -> AsyncIterator[SkillFeedback]:
        """Progress of the running skill."""

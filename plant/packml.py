"""A PackML-style machine state model (after ISA-TR88.00.02), shared by the twin and the agents.

Pure logic with no I/O and no clock of its own: the owner calls :meth:`MachineStateModel.tick`
with the time that passed. Commands that are illegal in the current state raise
:class:`CommandRefused` with a reason a person understands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class State(IntEnum):
    """PackML state codes as PLCs publish them (PackTags ``StateCurrent``)."""

    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17


class Command(IntEnum):
    """PackML command codes (PackTags ``CntrlCmd``), plus the door commands of a tended machine."""

    NONE = 0
    RESET = 1
    START = 2
    STOP = 3
    HOLD = 4
    UNHOLD = 5
    SUSPEND = 6
    UNSUSPEND = 7
    ABORT = 8
    CLEAR = 9
    OPEN_DOOR = 10
    CLOSE_DOOR = 11


class CommandRefused(Exception):
    """A command that the machine cannot accept in its current state; ``reason`` says why."""

    def __init__(self, command: Command, state: State, reason: str) -> None:
        self.command, self.state, self.reason = command, state, reason
        super().__init__(f"{command.name} refused in {state.name}: {reason}")


_TRANSITIONS: dict[Command, dict[State, State]] = {
    Command.RESET: {State.STOPPED: State.RESETTING, State.COMPLETE: State.RESETTING},
    Command.START: {State.IDLE: State.STARTING},
    Command.HOLD: {State.EXECUTE: State.HOLDING},
    Command.UNHOLD: {State.HELD: State.UNHOLDING},
    Command.SUSPEND: {State.EXECUTE: State.SUSPENDING},
    Command.UNSUSPEND: {State.SUSPENDED: State.UNSUSPENDING},
    Command.CLEAR: {State.ABORTED: State.CLEARING},
}
#: The states a Stop command is taken in.
STOPPABLE = frozenset(
    {
        State.IDLE,
        State.STARTING,
        State.EXECUTE,
        State.COMPLETING,
        State.COMPLETE,
        State.HOLDING,
        State.HELD,
        State.UNHOLDING,
        State.SUSPENDING,
        State.SUSPENDED,
        State.UNSUSPENDING,
        State.RESETTING,
    }
)
#: Acting states end on their own ("state complete") after ``ACTING_TIME_S``.
_ACTING_DONE = {
    State.STARTING: State.EXECUTE,
    State.COMPLETING: State.COMPLETE,
    State.RESETTING: State.IDLE,
    State.STOPPING: State.STOPPED,
    State.ABORTING: State.ABORTED,
    State.HOLDING: State.HELD,
    State.UNHOLDING: State.EXECUTE,
    State.SUSPENDING: State.SUSPENDED,
    State.UNSUSPENDING: State.EXECUTE,
    State.CLEARING: State.STOPPED,
}
ACTING_TIME_S = 0.3
#: States in which the machine may move (spindle, ram, belt): its door must stay closed.
RUNNING = {State.STARTING, State.EXECUTE, State.UNHOLDING, State.UNSUSPENDING, State.COMPLETING}
DOOR_TIME_S = 1.0


@dataclass(frozen=True)
class CustomCommand:
    """A command a machine declares (``commands:`` in the plant file), as the state model runs it:
    accepted in ``from_states``, it goes Starting -> Execute for ``duration_s`` (the machine's
    cycle time when None) -> Completing -> Complete, and on Complete adds 1 to each counter
    named in ``increments`` (besides ``cycle_count`` and ``part_count``)."""

    code: int
    name: str
    from_states: frozenset[State] = frozenset({State.IDLE})
    duration_s: float | None = None
    increments: tuple[str, ...] = ()


@dataclass
class MachineStateModel:
    """State, counters, fault and door of one machine.

    ``cycle_time_s`` is how long Execute lasts. When ``cycle_ends_externally`` is set (a conveyor
    that runs until a part arrives), Execute ends on :meth:`finish_cycle`, and running longer
    than ``cycle_time_s`` aborts with a fault.
    """

    cycle_time_s: float
    has_door: bool = False
    cycle_ends_externally: bool = False
    state: State = State.STOPPED
    cycle_count: int = 0
    part_count: int = 0
    fault_code: int = 0
    fault_text: str = ""
    door_closed: bool = True
    door_target_closed: bool = True
    time_in_state_s: float = 0.0
    execute_time_s: float = 0.0
    door_motion_s: float = 0.0
    history: list[tuple[State, State]] = field(default_factory=list)
    #: Declared commands by code (:class:`CustomCommand`); a code here overrides the standard one.
    custom: dict[int, CustomCommand] = field(default_factory=dict)
    #: The declared command whose cycle runs (None: a standard Start).
    active: CustomCommand | None = None
    #: Counters the declared commands' ``increments`` name, by tag name.
    counters: dict[str, int] = field(default_factory=dict)

    def command(self, cmd: Command | int) -> None:
        """Apply a command now, or raise :class:`CommandRefused` (the state is then unchanged)."""
        custom = None
        if self.custom and isinstance(cmd, int) and not isinstance(cmd, bool):
            custom = self.custom.get(int(cmd))
        if custom is not None:
            self._custom(custom)
            return
        try:
            cmd = Command(cmd)
        except ValueError:
            raise CommandRefused(Command.NONE, self.state, f"{cmd} is not a command code") from None
        if cmd == Command.NONE:
            return
        if cmd in (Command.OPEN_DOOR, Command.CLOSE_DOOR):
            self._door(cmd)
            return
        if cmd == Command.STOP:
            if self.state not in STOPPABLE:
                raise CommandRefused(cmd, self.state, f"the machine is already {self.state.name.lower()}")
            self._go(State.STOPPING)
            return
        if cmd == Command.ABORT:
            if self.state in (State.ABORTING, State.ABORTED):
                raise CommandRefused(cmd, self.state, "the machine is already aborted")
            self._go(State.ABORTING)
            return
        target = _TRANSITIONS[cmd].get(self.state)
        if target is None:
            allowed = ", ".join(s.name for s in _TRANSITIONS[cmd])
            raise CommandRefused(cmd, self.state, f"{cmd.name} is only accepted in {allowed}")
        if cmd == Command.START and self.has_door and not self.door_closed:
            raise CommandRefused(cmd, self.state, "the door is open (interlock: close it before Start)")
        if cmd == Command.RESET:
            self.fault_code, self.fault_text = 0, ""
        if cmd == Command.START:
            self.active = None
        self._go(target)

    def _custom(self, c: CustomCommand) -> None:
        refused = Command.START if c.code == Command.START else Command.NONE
        if self.state not in c.from_states:
            allowed = ", ".join(sorted(s.name for s in c.from_states))
            raise CommandRefused(refused, self.state, f"{c.name} is only accepted in {allowed}")
        if self.has_door and not self.door_closed:
            raise CommandRefused(refused, self.state, f"the door is open (interlock: close it before {c.name})")
        self.active = c
        self._go(State.STARTING)

    def _door(self, cmd: Command) -> None:
        if not self.has_door:
            raise CommandRefused(cmd, self.state, "this machine has no door")
        if cmd == Command.OPEN_DOOR and self.state in RUNNING:
            raise CommandRefused(cmd, self.state, "the machine is running (interlock: stop or complete first)")
        target_closed = cmd == Command.CLOSE_DOOR
        if target_closed != self.door_target_closed:
            self.door_target_closed = target_closed
            self.door_motion_s = DOOR_TIME_S
            self.door_closed = False

    def finish_cycle(self) -> None:
        """End Execute now (an external condition was met, such as a part at the belt's end)."""
        if self.state == State.EXECUTE:
            self._go(State.COMPLETING)

    def fault(self, code: int, text: str) -> None:
        """Raise a fault: the machine aborts and keeps the code and text until Reset."""
        self.fault_code, self.fault_text = code, text
        if self.state not in (State.ABORTING, State.ABORTED):
            self._go(State.ABORTING)

    def tick(self, dt_s: float) -> None:
        """Advance acting states, the cycle timer and the door by ``dt_s`` seconds."""
        self.time_in_state_s += dt_s
        if self.door_motion_s > 0:
            self.door_motion_s -= dt_s
            if self.door_motion_s <= 0:
                self.door_motion_s = 0.0
                self.door_closed = self.door_target_closed
        if self.state == State.EXECUTE:
            self.execute_time_s += dt_s
            limit = self.cycle_time_s
            if self.active is not None and self.active.duration_s is not None:
                limit = self.active.duration_s
            if self.execute_time_s >= limit:
                if self.cycle_ends_externally:
                    self.fault(102, f"cycle did not finish within {limit:g} s")
                else:
                    self._go(State.COMPLETING)
            return
        done = _ACTING_DONE.get(self.state)
        if done is not None and self.time_in_state_s >= ACTING_TIME_S:
            self._go(done)

    def _go(self, target: State) -> None:
        self.history.append((self.state, target))
        if target == State.STARTING:
            self.execute_time_s = 0.0
        if target == State.COMPLETE:
            self.cycle_count += 1
            self.part_count += 1
            for tag in self.active.increments if self.active is not None else ():
                self.counters[tag] = self.counters.get(tag, 0) + 1
        self.state = target
        self.time_in_state_s = 0.0

    @property
    def door_open(self) -> bool:
        """The door is fully open (its open limit switch): it has finished opening. While it
        moves it is neither closed nor open; a robot may reach in only once it is open."""
        return self.has_door and not self.door_target_closed and self.door_motion_s <= 0 and not self.door_closed

    @property
    def door_open_fraction(self) -> float:
        """0 closed, 1 open; in between while the door moves (linear in time)."""
        if self.door_motion_s > 0:
            f = self.door_motion_s / DOOR_TIME_S
            return (1.0 - f) if not self.door_target_closed else f
        return 0.0 if self.door_closed else 1.0

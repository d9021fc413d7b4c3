"""The machine agent interface: what the coordinator and executor use to talk to a machine.

One interface, several backends: the OPC-UA client (``plant.opcua``), the Modbus TCP client
(``plant.modbus``), and the in-process twin machine (supplied by ``sim``). A contract test suite
(``tests/contracts``) runs over every backend.

All methods are coroutines; a backend never blocks the event loop. Errors are the exceptions
below, each with a message that names the machine, the tag and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

from plant.packml import Command, State

TagValue = bool | int | float | str


class MachineError(Exception):
    """Base of every machine agent error. ``machine`` names the machine."""

    def __init__(self, machine: str, message: str) -> None:
        self.machine = machine
        super().__init__(f"{machine}: {message}")


class TagError(MachineError):
    """A tag read or write was refused before anything was sent (unknown tag, read-only,
    wrong type, out of range). ``tag`` names it; ``reason`` says why."""

    def __init__(self, machine: str, tag: str, reason: str) -> None:
        self.tag, self.reason = tag, reason
        super().__init__(machine, f"tag {tag!r}: {reason}")


class ConnectError(MachineError):
    """The machine could not be reached, or its server lacks what the tag map names."""


class CommandRejected(MachineError):
    """The machine refused a command (illegal in its state, interlock); ``reason`` says why."""

    def __init__(self, machine: str, command: Command | int, reason: str) -> None:
        self.command, self.reason = command, reason
        name = command.name if isinstance(command, Command) else f"command {command}"
        super().__init__(machine, f"{name} refused: {reason}")


def command_code(machine: str, command: Command | int) -> Command | int:
    """``command`` as a PackML :class:`~plant.packml.Command` when it is one, else the plain int
    code of a declared command; TagError for anything that is not a code."""
    if isinstance(command, bool) or not isinstance(command, int):
        raise TagError(machine, "command", f"{command!r} is not a command code")
    try:
        return Command(command)
    except ValueError:
        return int(command)


def command_name(command: Command | int) -> str:
    """``START``, or ``command 21`` for a declared command's code."""
    return command.name if isinstance(command, Command) else f"command {command}"


#: Commands a machine in alarm still takes: the ones that bring it to rest.
SAFE_COMMANDS = frozenset({Command.STOP, Command.ABORT})


@dataclass(frozen=True)
class TagAlarm:
    """A reading that the tag map declares impossible: outside the tag's declared ``min``/``max``,
    not a finite number, or an integer that wrapped (:func:`plant.codec.reading_alarm` has the
    rule). While a machine has one, it is in alarm: its agent commands nothing but
    :data:`SAFE_COMMANDS`. ``raw`` is the value on the wire (before scale and offset), ``value``
    the engineering value, ``reason`` a sentence naming the tag, both values and the range."""

    tag: str
    raw: bool | int | float | str
    value: TagValue
    reason: str


class MachineInAlarm(CommandRejected):
    """A command refused by the agent itself, before anything was sent, because the machine's
    readings put it in alarm (``alarms``, each naming tag, raw value and declared range). Only
    :data:`SAFE_COMMANDS` pass; correcting the value (a write within range) clears the alarm."""

    def __init__(self, machine: str, command: Command | int, alarms: tuple[TagAlarm, ...]) -> None:
        self.alarms = alarms
        safe = " and ".join(c.name for c in sorted(SAFE_COMMANDS))
        super().__init__(
            machine, command, "in alarm: " + "; ".join(a.reason for a in alarms) + f" (only {safe} are accepted)"
        )


class CommandStatus(IntEnum):
    """What became of the command whose sequence number ``command_ack`` holds (the
    ``command_status`` tag); when refused, ``command_message`` holds the machine's reason."""

    NONE = 0
    ACCEPTED = 1
    REFUSED = 2


@dataclass(frozen=True)
class MachineStatus:
    """A consistent snapshot of a machine's standard tags. A tag the machine does not map reads
    a neutral value: counters, ``fault_code`` and ``command_ack`` 0, ``fault_text`` "",
    ``door_closed`` and ``door_open`` None. A moving door is neither closed nor open."""

    state: State
    cycle_count: int
    part_count: int
    fault_code: int
    fault_text: str
    door_closed: bool | None
    command_ack: int
    extra: dict[str, TagValue] = field(default_factory=dict)
    #: Readings the tag map declares impossible (empty when the machine is not in alarm).
    alarms: tuple[TagAlarm, ...] = ()
    #: The door has finished opening (its open limit switch); None when the machine maps no ``door_open``.
    door_open: bool | None = None

    @property
    def in_alarm(self) -> bool:
        """True while a reading puts the machine in alarm (see :class:`TagAlarm`)."""
        return bool(self.alarms)


@dataclass(frozen=True)
class ConnectionEvent:
    """An outage or a recovery, as the agent saw it (for logs, the console and the executor)."""

    machine: str
    connected: bool
    detail: str
    time_s: float


@runtime_checkable
class MachineAgent(Protocol):
    """A machine, reachable and commandable. Use as an async context manager."""

    name: str

    async def connect(self) -> None:
        """Connect and check every tag of the tag map exists; raise :class:`ConnectError`."""

    async def disconnect(self) -> None:
        """Close the connection; safe to call twice."""

    async def read(self, tag: str) -> TagValue:
        """The engineering value of one tag (scaled, typed)."""

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        """Several tags in one round trip where the protocol allows it."""

    async def write(self, tag: str, value: TagValue) -> None:
        """Write one tag after checking access, type and range; raise :class:`TagError`."""

    async def status(self) -> MachineStatus:
        """State, counters, fault and door in one read, with the alarms of the readings."""

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        """Send a PackML command (or the int code of a command the machine declares) with a
        fresh sequence number, wait until the machine acknowledges that number (a retried
        command is never executed twice), read back the result, and raise
        :class:`CommandRejected` if the machine refused it. A machine without the sequence
        tags gets the code alone; it counts as taken when the state changes or the machine
        sets ``command`` back to 0. A machine in
        alarm is not commanded at all (:class:`MachineInAlarm`), except :data:`SAFE_COMMANDS`."""

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        """Wait (by subscription where the protocol has one) until the state is one of
        ``states``; raise ``TimeoutError`` with the last state seen."""


@runtime_checkable
class ConnectionEvents(Protocol):
    """What an agent that can lose its connection also offers: its outages and recoveries.

    The network agents (``plant.opcua``, ``plant.modbus``) reconnect by themselves with backoff;
    these events are how the executor, the console and the logs learn that it happened.
    """

    @property
    def connected(self) -> bool:
        """True while the agent holds a working connection (does not block)."""

    @property
    def connection_events(self) -> list[ConnectionEvent]:
        """Every outage and recovery since :meth:`MachineAgent.connect`, oldest first (a copy)."""

    def add_event_listener(self, fn: Callable[[ConnectionEvent], None]) -> None:
        """Call ``fn`` on the agent's event loop for each new event; ``fn`` must not block."""

"""What the OPC-UA and Modbus machine agents share: checks, the command handshake, reconnects.

A protocol backend subclasses :class:`NetworkAgent` and supplies five transport coroutines
(open, close, read, write, and optionally a wait for a change). Everything a person relies on
lives here once, so both protocols behave the same:

- every write is checked by :func:`plant.codec.check_write` before anything is sent;
- a command is ``command`` + a fresh ``command_seq`` written in one request, then the agent
  waits until ``command_ack`` equals that sequence number, and reads back the command, the
  sequence number, the verdict (``command_status``/``command_message``) and the status;
  a machine without ``command_seq``/``command_ack`` gets the code in ``command`` alone, and
  the agent takes it as accepted when the state leaves the state it was in, or the machine
  sets ``command`` back to 0 (and refused when a ``command_status`` tag then says so);
- tags other than ``state`` and ``command`` are optional: a status without them reads neutral
  values (counters and fault code 0, fault text "", door None);
- every status carries the alarms of its readings (:func:`plant.codec.tag_alarms`: a value
  outside the tag's declared range, not finite, or wrapped), and a machine in alarm is not
  commanded: before any command but :data:`~plant.interface.SAFE_COMMANDS` the agent reads the
  tags that can alarm and raises :class:`~plant.interface.MachineInAlarm` with the reasons,
  nothing sent;
- a lost connection is reported as a :class:`~plant.interface.ConnectionEvent` and re-opened
  in the background with exponential backoff; an operation under way waits for it (within
  its own timeout) and is then retried. A command retried this way carries the same sequence
  number, so the machine executes it at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from plant.codec import INT_RANGES, RawValue, can_alarm, check_write, same_value, tag_alarms
from plant.config import COUNTER_FAULT_TAGS, DOOR_TAGS, ModbusMachine, OpcuaMachine, TagBase
from plant.interface import (
    SAFE_COMMANDS,
    CommandRejected,
    CommandStatus,
    ConnectError,
    ConnectionEvent,
    MachineError,
    MachineInAlarm,
    MachineStatus,
    TagError,
    TagValue,
    command_code,
    command_name,
)
from plant.packml import Command, State

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Tags read for :meth:`NetworkAgent.status`, in this order.
STATUS_TAGS = ("state", *COUNTER_FAULT_TAGS, *DOOR_TAGS, "command_ack")
#: Tags read back after a command.
COMMAND_TAGS = ("command", "command_seq", "command_ack", "command_status", "command_message")


class TransportLost(Exception):
    """Raised by a backend's transport coroutines when the connection is gone (or a request
    went unanswered); the agent then reconnects and retries. Never leaves the agent."""


class NetworkAgent(ABC):
    """A machine reached over a network protocol; see the module docstring.

    Timeouts are in seconds: ``connect_timeout_s`` bounds one connection attempt (and the
    check of the tag map), ``request_timeout_s`` one request (backends set it as the protocol
    library's request timeout; a request that times out counts as a lost connection). Reconnect attempts start after
    ``reconnect_initial_s`` and double up to ``reconnect_max_s`` (with 10 % jitter).
    ``auto_reconnect=False`` turns the background reconnect off (an outage then fails every
    call with :class:`~plant.interface.ConnectError`).
    """

    machine: OpcuaMachine | ModbusMachine

    def __init__(
        self,
        name: str,
        machine: OpcuaMachine | ModbusMachine,
        *,
        connect_timeout_s: float = 3.0,
        request_timeout_s: float = 2.0,
        reconnect_initial_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        auto_reconnect: bool = True,
    ) -> None:
        self.name = name
        self.machine = machine
        self.tags: dict[str, TagBase] = dict(machine.tags)
        self._readable_names = frozenset(n for n, t in self.tags.items() if t.access != "write")
        #: The tags read before a command to see whether the machine is in alarm.
        self._alarm_names = [n for n, t in self.tags.items() if can_alarm(t)]
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.auto_reconnect = auto_reconnect
        self._events: list[ConnectionEvent] = []
        self._listeners: list[Callable[[ConnectionEvent], None]] = []
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._opened = False
        self._supervisor: asyncio.Task[None] | None = None
        self._command_lock = asyncio.Lock()
        self._seq = 0
        self._last_error = ""
        #: Counts connection attempts; a loss reported by an older connection is ignored.
        self._generation = 0

    # ------------------------------------------------------------------ transport (backends)

    @abstractmethod
    async def _open(self) -> None:
        """Connect and check every tag of the map exists; raise ConnectError or TransportLost."""

    @abstractmethod
    async def _close(self) -> None:
        """Drop the connection; never raises."""

    @abstractmethod
    async def _read(self, names: list[str]) -> dict[str, TagValue]:
        """Engineering values of ``names`` in as few requests as the protocol allows."""

    @abstractmethod
    async def _write(self, raw: dict[str, RawValue]) -> None:
        """Write raw values (already checked) in as few requests as possible, in dict order."""

    async def _wait_change(self, names: tuple[str, ...], timeout_s: float) -> None:
        """Return when one of ``names`` may have changed, or after ``timeout_s``. Backends with
        subscriptions override this; the default polls once per PLC scan (20 ms)."""
        await asyncio.sleep(min(timeout_s, 0.02))

    # ------------------------------------------------------------------ life cycle

    @property
    def connected(self) -> bool:
        """True while the agent holds a working connection."""
        return self._up.is_set()

    @property
    def connection_events(self) -> list[ConnectionEvent]:
        """Outages and recoveries since connect, oldest first (a copy)."""
        return list(self._events)

    def add_event_listener(self, fn: Callable[[ConnectionEvent], None]) -> None:
        """Call ``fn(event)`` for each new outage or recovery (on the agent's loop)."""
        self._listeners.append(fn)

    def _emit(self, connected: bool, detail: str) -> None:
        ev = ConnectionEvent(self.name, connected, detail, time.time())
        self._events.append(ev)
        (log.info if connected else log.warning)("%s: %s", self.name, detail)
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:
                log.exception("%s: event listener failed", self.name)

    async def connect(self) -> None:
        """Connect within ``connect_timeout_s`` and check that the server has every tag of the
        map (raises :class:`ConnectError` naming the endpoint, or the tags it lacks)."""
        if self._opened:
            return
        self._closing = False
        self._generation += 1
        try:
            await asyncio.wait_for(self._open(), self.connect_timeout_s)
        except TimeoutError:
            await self._close()
            raise ConnectError(
                self.name, f"no answer from {self.machine.endpoint} within {self.connect_timeout_s:g} s"
            ) from None
        except TransportLost as exc:
            await self._close()
            raise ConnectError(self.name, f"cannot reach {self.machine.endpoint}: {exc}") from None
        except ConnectError:
            await self._close()
            raise
        self._opened = True
        self._lost.clear()
        self._up.set()
        await self._init_seq()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"atelier-agent-{self.name}")

    async def disconnect(self) -> None:
        """Close the connection and stop reconnecting; safe to call twice."""
        self._closing = True
        self._opened = False
        self._up.clear()
        self._lost.set()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    def _transport_lost(self, reason: str, generation: int | None = None) -> None:
        """Backends call this when they notice the connection is gone (on the agent's loop);
        ``generation`` is ``self._generation`` when that connection was opened."""
        if generation is not None and generation != self._generation:
            return  # an old connection's last words
        if self._closing or not self._up.is_set():
            return
        self._last_error = reason
        self._up.clear()
        self._lost.set()

    async def _supervise(self) -> None:
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            since = time.monotonic()
            self._emit(False, f"connection to {self.machine.endpoint} lost: {self._last_error}")
            if not self.auto_reconnect:
                return
            delay, attempts = self.reconnect_initial_s, 0
            while not self._closing:
                await self._close()
                attempts += 1
                self._generation += 1
                try:
                    await asyncio.wait_for(self._open(), self.connect_timeout_s)
                except (TimeoutError, TransportLost, ConnectError, OSError) as exc:
                    self._last_error = str(exc) or type(exc).__name__
                    await asyncio.sleep(delay * random.uniform(0.9, 1.1))
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                break
            if self._closing:
                return
            self._lost.clear()
            self._up.set()
            self._emit(
                True,
                f"reconnected to {self.machine.endpoint} after {time.monotonic() - since:.2f} s "
                f"({attempts} attempt{'s' if attempts != 1 else ''})",
            )

    async def _call(self, op: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run ``op`` when connected; on a lost connection wait for the reconnect and retry,
        until ``deadline`` (time.monotonic()); then raise ConnectError."""
        while True:
            if not self._opened:
                raise ConnectError(self.name, "not connected (call connect() first)")
            remaining = deadline - time.monotonic()
            if not self._up.is_set():
                if remaining <= 0 or not self.auto_reconnect:
                    raise ConnectError(self.name, f"{self.machine.endpoint} unreachable: {self._last_error}")
                try:
                    await asyncio.wait_for(self._up.wait(), remaining)
                except TimeoutError:
                    raise ConnectError(self.name, f"{self.machine.endpoint} unreachable: {self._last_error}") from None
                continue
            gen = self._generation
            try:
                # Every request is bounded by its library's own timeout (request_timeout_s, set
                # on the asyncua and pymodbus clients); a timer of ours per call would cost
                # 20-90 us, a tenth of a loopback read.
                return await op()
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.name}: no answer from {self.machine.endpoint} in time") from None
                self._transport_lost(f"no answer within {self.request_timeout_s:g} s", gen)
            except TransportLost as exc:
                self._transport_lost(str(exc) or "connection lost", gen)

    # ------------------------------------------------------------------ tags

    def _tag(self, name: str) -> TagBase:
        tag = self.tags.get(name)
        if tag is None:
            raise TagError(self.name, name, f"no such tag; the tag map has {', '.join(sorted(self.tags))}")
        return tag

    def _readable(self, names: list[str]) -> None:
        if self._readable_names.issuperset(names):
            return
        for n in names:
            if self._tag(n).access == "write":
                raise TagError(self.name, n, "is write-only")

    async def read(self, tag: str) -> TagValue:
        """The engineering value of one tag. Raises TagError (unknown, write-only),
        ConnectError (unreachable past the request timeout)."""
        return (await self.read_many([tag]))[tag]

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        """Several tags in as few round trips as the protocol allows (one for OPC-UA; one per
        contiguous run of registers for Modbus)."""
        self._readable(tags)
        names = list(dict.fromkeys(tags))
        return await self._call(lambda: self._read(names), time.monotonic() + self.request_timeout_s * 2)

    async def write(self, tag: str, value: TagValue) -> None:
        """Write one tag, then read it back. Raises TagError naming the tag and the reason
        (read-only, wrong type, out of range, too long: nothing is sent; or the machine did not
        keep the value), ConnectError when unreachable."""
        t = self._tag(tag)
        if tag in ("command", "command_seq"):
            raise TagError(self.name, tag, "is written by command() only (sequence handshake)")
        raw = check_write(self.name, tag, t, value)
        deadline = time.monotonic() + self.request_timeout_s * 2
        await self._call(lambda: self._write({tag: raw}), deadline)
        if t.access == "read_write":
            back = (await self._call(lambda: self._read([tag]), deadline))[tag]
            if not same_value(t, value, back):
                raise TagError(self.name, tag, f"wrote {value!r} but the machine holds {back!r}")

    # ------------------------------------------------------------------ status and commands

    def _status_of(self, v: dict[str, TagValue]) -> MachineStatus:
        try:
            state = State(int(v["state"]))
        except (ValueError, TypeError):
            state = State.UNDEFINED
        door = v.get("door_closed")
        door_open = v.get("door_open")
        extra = {k: x for k, x in v.items() if k not in STATUS_TAGS and k not in COMMAND_TAGS}
        return MachineStatus(
            state=state,
            cycle_count=int(v.get("cycle_count", 0)),
            part_count=int(v.get("part_count", 0)),
            fault_code=int(v.get("fault_code", 0)),
            fault_text=str(v.get("fault_text", "")),
            door_closed=bool(door) if door is not None else None,
            command_ack=int(v.get("command_ack", 0)),
            extra=extra,
            alarms=tag_alarms(self.tags, v),
            door_open=bool(door_open) if door_open is not None else None,
        )

    async def status(self) -> MachineStatus:
        """State, counters, fault, door and every other readable tag (in ``extra``) in one read."""
        names = [t for t in STATUS_TAGS if t in self.tags]
        names += [t for t in self.tags if t not in names and self.tags[t].access != "write"]
        v = await self._call(lambda: self._read(names), time.monotonic() + self.request_timeout_s * 2)
        return self._status_of(v)

    @property
    def handshake(self) -> bool:
        """True when the machine maps ``command_seq`` and ``command_ack`` (the sequence handshake)."""
        return "command_seq" in self.tags and "command_ack" in self.tags

    async def _init_seq(self) -> None:
        if not self.handshake:
            return
        v = await self._call(
            lambda: self._read(["command_seq", "command_ack"]), time.monotonic() + self.request_timeout_s
        )
        self._seq = max(int(v["command_seq"]), int(v["command_ack"]), self._seq)

    def _next_seq(self) -> int:
        hi = INT_RANGES.get(self.tags["command_seq"].data_type, (0, 2**31 - 1))[1]
        self._seq = self._seq + 1 if self._seq < hi else 1
        return self._seq

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        """Send a PackML command (see :class:`~plant.interface.MachineAgent`). Blocks until the
        machine acknowledged it or ``timeout_s`` passed (``TimeoutError``). Raises
        CommandRejected with the machine's reason, TagError if the command code does not fit
        the command tag (nothing sent), ConnectError if unreachable. A machine in alarm gets
        only :data:`~plant.interface.SAFE_COMMANDS`; any other command raises
        :class:`~plant.interface.MachineInAlarm` (a CommandRejected) before anything is sent."""
        cmd = command_code(self.name, command)
        raw_cmd = check_write(self.name, "command", self.tags["command"], int(cmd))
        deadline = time.monotonic() + timeout_s
        async with self._command_lock:
            if cmd not in SAFE_COMMANDS and self._alarm_names:
                names = self._alarm_names
                now = await self._call(lambda: self._read(names), deadline)
                alarms = tag_alarms(self.tags, now)
                if alarms:
                    log.warning(
                        "%s: %s refused, the machine is in alarm: %s", self.name, command_name(cmd), alarms[0].reason
                    )
                    raise MachineInAlarm(self.name, cmd, alarms)
            if not self.handshake:
                return await self._command_plain(cmd, raw_cmd, deadline, timeout_s)
            seq = self._next_seq()
            raw_seq = check_write(self.name, "command_seq", self.tags["command_seq"], seq)
            await self._call(lambda: self._write({"command": raw_cmd, "command_seq": raw_seq}), deadline)
            names = [t for t in dict.fromkeys((*STATUS_TAGS, *COMMAND_TAGS)) if t in self.tags]
            while True:
                v = await self._call(lambda: self._read(names), deadline)
                if int(v["command_ack"]) == seq:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.name}: {command_name(cmd)} (seq {seq}) not acknowledged within {timeout_s:g} s "
                        f"(command_ack is {v['command_ack']})"
                    )
                await self._wait_change(("command_ack",), remaining)
            if int(v["command_seq"]) != seq or int(v["command"]) != int(cmd):
                raise MachineError(
                    self.name,
                    f"read-back after {command_name(cmd)}: command={v['command']!r} command_seq={v['command_seq']!r}, "
                    f"expected {int(cmd)} and {seq} (another client writes commands?)",
                )
            if int(v.get("command_status", CommandStatus.ACCEPTED)) == CommandStatus.REFUSED:
                raise CommandRejected(self.name, cmd, str(v.get("command_message", "")) or "refused without a reason")
            return self._status_of({k: x for k, x in v.items() if k not in COMMAND_TAGS or k == "command_ack"})

    async def _command_plain(
        self, cmd: Command | int, raw_cmd: RawValue, deadline: float, timeout_s: float
    ) -> MachineStatus:
        """A command without the sequence handshake: write the code, then watch the state leave
        the state it was in, or the machine set ``command`` back to 0 (it took the code)."""
        names = [t for t in dict.fromkeys((*STATUS_TAGS, *COMMAND_TAGS)) if t in self._readable_names]
        before = await self._call(lambda: self._read(names), deadline)
        await self._call(lambda: self._write({"command": raw_cmd}), deadline)
        while True:
            v = await self._call(lambda: self._read(names), deadline)
            if v["state"] != before["state"] or ("command" in v and int(v["command"]) == 0):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = State(int(v["state"])).name if int(v["state"]) in State._value2member_map_ else v["state"]
                raise TimeoutError(
                    f"{self.name}: {command_name(cmd)} not taken within {timeout_s:g} s (the state stayed {seen}"
                    + (f", the command tag still holds {v['command']}" if "command" in v else "")
                    + ")"
                )
            await self._wait_change(("state",), min(remaining, 0.05))
        if int(v.get("command_status", CommandStatus.ACCEPTED)) == CommandStatus.REFUSED:
            raise CommandRejected(self.name, cmd, str(v.get("command_message", "")) or "refused without a reason")
        return self._status_of({k: x for k, x in v.items() if k not in COMMAND_TAGS or k == "command_ack"})

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        """Wait until the state is one of ``states`` (by subscription where the protocol has
        one, else polling once per PLC scan). Survives outages within ``timeout_s``; raises
        ``TimeoutError`` naming the last state seen."""
        deadline = time.monotonic() + timeout_s
        last: State | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                st = await self.status() if remaining > 0 else None
            except ConnectError:
                st = None
                if time.monotonic() >= deadline:
                    raise
            if st is not None:
                last = st.state
                if st.state in states:
                    return st
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                want = ", ".join(sorted(s.name for s in states))
                seen = last.name if last is not None else "unknown (unreachable)"
                raise TimeoutError(f"{self.name}: state is {seen} after {timeout_s:g} s; waited for {want}")
            await self._wait_change(("state",), remaining)

"""Machine agents over the in-process twin: the same interface as the network agents, no network.

:class:`TwinMachineAgent` is what the coordinator's dry run talks to. It implements
:class:`plant.interface.MachineAgent` over a :class:`~sim.twin.Twin` directly, with the same
checks (:func:`plant.codec.check_write`), the same tag values (:mod:`sim.tags`) and the same
refusals as a machine behind OPC-UA or Modbus, so a plan that passes here and fails live is a
protocol bug, never a logic fork.

Time: in-process, nothing moves unless someone steps the twin. With ``drive=True`` (the
default, for a dry run that owns its twin) :meth:`TwinMachineAgent.wait_for_state` steps the
twin itself, as fast as it can, and ``timeout_s`` counts simulated seconds. With
``drive=False`` another owner steps the twin and the agent only watches: in lockstep (a
rehearsal's loop), pass ``ticks``, awaited until the owner has stepped, and timeouts count
simulated seconds; else (the thread of a :class:`~sim.live.LiveTwin`) timeouts count wall-clock
seconds, and pass the live twin's ``lock`` so every read and command happens between two ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Self

from plant.codec import INT_RANGES, can_alarm, check_write, default_raw, from_raw, tag_alarms
from plant.config import COUNTER_FAULT_TAGS, DOOR_TAGS, TagBase
from plant.interface import (
    SAFE_COMMANDS,
    CommandRejected,
    ConnectError,
    MachineInAlarm,
    MachineStatus,
    TagAlarm,
    TagError,
    TagValue,
    command_code,
)
from plant.packml import Command, CommandRefused, State
from sim.tags import PLC_OWNED, TWIN_SETTERS, fit, twin_getters
from sim.twin import Twin, TwinMachine

#: Simulated seconds stepped between two looks at the state (one control tick is 4 ms).
STEP_CHUNK_S = 0.02


class TwinMachineAgent:
    """A twin machine as a :class:`~plant.interface.MachineAgent` (see the module docstring).

    Not thread-safe, like the twin: use it from the thread that owns the twin, or give it the
    ``lock`` under which another thread steps the twin (``LiveTwin.lock``).
    """

    def __init__(
        self,
        twin: Twin,
        name: str,
        *,
        drive: bool = True,
        lock: contextlib.AbstractContextManager[object] | None = None,
        ticks: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if name not in twin.plant.machines:
            raise KeyError(f"no machine named {name!r} in plant {twin.plant.name!r}")
        self.twin = twin
        self.name = name
        self.drive = drive
        self.tags: dict[str, TagBase] = dict(twin.plant.machines[name].tags)
        self._getters = twin_getters(twin.plant.machines[name])
        self._memory: dict[str, TagValue] = {
            t: from_raw(tag, default_raw(tag)) for t, tag in self.tags.items() if t not in self._getters
        }
        self._alarm_names = [t for t, tag in self.tags.items() if can_alarm(tag)]
        self._seq = 0
        self._connected = False
        self._lock: contextlib.AbstractContextManager[object] = lock if lock is not None else contextlib.nullcontext()
        self._ticks = ticks

    @property
    def _tm(self) -> TwinMachine:
        return self.twin.machine(self.name)

    async def connect(self) -> None:
        """Nothing to reach: marks the agent usable."""
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    def _check(self) -> None:
        if not self._connected:
            raise ConnectError(self.name, "not connected (call connect() first)")

    def _tag(self, name: str) -> TagBase:
        tag = self.tags.get(name)
        if tag is None:
            raise TagError(self.name, name, f"no such tag; the tag map has {', '.join(sorted(self.tags))}")
        return tag

    def _value(self, name: str) -> TagValue:
        tag = self._tag(name)
        if tag.access == "write":
            raise TagError(self.name, name, "is write-only")
        get = self._getters.get(name)
        return fit(tag, get(self._tm)) if get is not None else self._memory[name]

    async def read(self, tag: str) -> TagValue:
        """The engineering value of one tag, as the machine's PLC would serve it."""
        self._check()
        with self._lock:
            return self._value(tag)

    async def read_many(self, tags: list[str]) -> dict[str, TagValue]:
        self._check()
        with self._lock:
            return {t: self._value(t) for t in tags}

    async def write(self, tag: str, value: TagValue) -> None:
        """Write one tag with the checks of the network agents (TagError, nothing changed)."""
        self._check()
        t = self._tag(tag)
        if tag in ("command", "command_seq"):
            raise TagError(self.name, tag, "is written by command() only (sequence handshake)")
        if tag in PLC_OWNED:
            raise TagError(self.name, tag, "is read-only")
        check_write(self.name, tag, t, value)
        setter = TWIN_SETTERS.get(tag)
        with self._lock:
            if setter is not None:
                setter(self._tm, value)
            else:
                self._memory[tag] = fit(t, value)

    def _alarms(self) -> tuple[TagAlarm, ...]:
        return tag_alarms(self.tags, {t: self._value(t) for t in self._alarm_names})

    def _status(self) -> MachineStatus:
        sm = self._tm.state_model
        extra = {
            t: self._value(t)
            for t, tag in self.tags.items()
            if t not in _STANDARD and t not in _COMMAND and tag.access != "write"
        }
        # A tag the machine does not map reads a neutral value, as over the network.
        has = self.tags.__contains__
        return MachineStatus(
            state=sm.state,
            cycle_count=sm.cycle_count if has("cycle_count") else 0,
            part_count=sm.part_count if has("part_count") else 0,
            fault_code=sm.fault_code if has("fault_code") else 0,
            fault_text=sm.fault_text if has("fault_text") else "",
            door_closed=sm.door_closed if has("door_closed") else None,
            command_ack=self._seq if has("command_ack") else 0,
            extra=extra,
            alarms=self._alarms(),
            door_open=sm.door_open if has("door_open") else None,
        )

    async def status(self) -> MachineStatus:
        self._check()
        with self._lock:
            return self._status()

    async def command(self, command: Command | int, timeout_s: float = 5.0) -> MachineStatus:
        """Apply a PackML command now; CommandRejected with the machine's reason if refused.
        A machine in alarm takes only SAFE_COMMANDS (MachineInAlarm, nothing applied), as
        over the network (:mod:`plant._agent`)."""
        self._check()
        cmd = command_code(self.name, command)
        check_write(self.name, "command", self.tags["command"], int(cmd))
        if cmd not in SAFE_COMMANDS:
            with self._lock:
                alarms = self._alarms()
            if alarms:
                raise MachineInAlarm(self.name, cmd, alarms)
        seq_tag = self.tags.get("command_seq")
        hi = INT_RANGES.get(seq_tag.data_type, (0, 2**31 - 1))[1] if seq_tag is not None else 2**31 - 1
        self._seq = self._seq + 1 if self._seq < hi else 1
        self._memory.update({"command": int(cmd), "command_seq": self._seq})
        with self._lock:
            try:
                self._tm.command(cmd)
            except CommandRefused as exc:
                self._memory.update({"command_status": 2, "command_message": exc.reason})
                raise CommandRejected(self.name, cmd, exc.reason) from None
            self._memory.update({"command_status": 1, "command_message": ""})
            return self._status()

    def clock_s(self) -> float:
        """The time waits count (:class:`plant.commands.Paced`): the twin's when it is stepped
        in lockstep (``drive`` or ``ticks``), else the wall clock's."""
        return self.twin.time_s if self.drive or self._ticks is not None else time.monotonic()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` of :meth:`clock_s` (stepping the twin when ``drive``)."""
        if self.drive:
            self.twin.step(max(1, round(seconds / self.twin.config.ctrl_dt_s)))
            await asyncio.sleep(0)
        elif self._ticks is not None:
            end = self.twin.time_s + seconds
            while self.twin.time_s < end:
                await self._ticks()
        else:
            await asyncio.sleep(seconds)

    async def wait_for_state(self, states: set[State], timeout_s: float) -> MachineStatus:
        """Wait until the state is one of ``states``: stepping the twin (``drive``; simulated
        seconds) or watching it (wall-clock seconds). ``TimeoutError`` names the last state."""
        self._check()
        if self.drive:
            ticks = max(1, round(STEP_CHUNK_S / self.twin.config.ctrl_dt_s))
            end = self.twin.time_s + timeout_s
            while self._tm.state not in states and self.twin.time_s < end:
                self.twin.step(ticks)
                await asyncio.sleep(0)  # let other agents of the dry run take their turn
        elif self._ticks is not None:
            # The owner steps the twin in lockstep and says when it has: look after each batch
            # of ticks, at the twin's time, so a rehearsal runs the same whatever the CPU.
            end = self.twin.time_s + timeout_s
            while self._tm.state not in states and self.twin.time_s < end:
                await self._ticks()
        else:
            # Another owner steps the twin and it has no change callbacks: look once per scan.
            deadline = time.monotonic() + timeout_s
            while self._tm.state not in states and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(STEP_CHUNK_S)
        if self._tm.state not in states:
            want = ", ".join(sorted(s.name for s in states))
            raise TimeoutError(f"{self.name}: state is {self._tm.state.name} after {timeout_s:g} s; waited for {want}")
        with self._lock:
            return self._status()


_STANDARD = frozenset({"state", *COUNTER_FAULT_TAGS, *DOOR_TAGS})
_COMMAND = frozenset({"command", "command_seq", "command_ack", "command_status", "command_message"})

"""The PLC program of a twin machine: what a real machine's controller does behind its tags.

One :class:`MachinePlc` per machine holds the value of every tag of the machine's tag map
(engineering units), follows the twin's physics and state, and runs the command handshake:

- a client writes ``command`` and ``command_seq`` together;
- when ``command_seq`` differs from the last acknowledged one, the PLC applies the command to
  the twin machine (on the twin thread, through :meth:`sim.live.LiveTwin.submit`), then sets
  ``command_status`` (accepted or refused), ``command_message`` (the machine's reason) and,
  last, ``command_ack`` = ``command_seq``. The same sequence number written again (a client
  that retries after a lost reply) changes nothing: a command is never executed twice.
- a machine whose map has no ``command_seq`` runs the code a client writes to ``command`` at
  once, sets ``command_status``/``command_message`` when the map has them, and sets
  ``command`` back to 0 (the code was taken), as many PLCs do.

The PLC outlives the protocol servers in front of it: a server that is stopped and started
again (a comms module that restarts) finds the same acknowledged sequence number, as on a real
PLC. Servers observe the PLC (:meth:`MachinePlc.observe`) and publish the changes.

Threads: :meth:`MachinePlc.sample` runs on the twin thread; everything else on the asyncio
loop that serves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from plant.codec import CodecError, RawValue, check_write, default_raw, from_raw, same_value
from plant.config import ModbusMachine, OpcuaMachine, TagBase
from plant.interface import CommandStatus, TagError, TagValue
from plant.packml import Command, CommandRefused
from sim.live import LiveTwin
from sim.tags import PLC_OWNED, TWIN_SETTERS, fit, twin_getters
from sim.twin import Twin

log = logging.getLogger(__name__)

MachineConfig = OpcuaMachine | ModbusMachine
Changes = dict[str, TagValue]
Observer = Callable[[Changes], Awaitable[None]]

#: How long the PLC waits for the twin to apply a command before it reports a refusal.
COMMAND_TIMEOUT_S = 2.0

_sample_counter = itertools.count(1)

__all__ = ["PLC_OWNED", "Changes", "MachinePlc", "PlantPlcs", "WriteRefused", "check_client_write", "client_writable"]


class WriteRefused(TagError):
    """A value a client wrote that the PLC refuses, as a real PLC refuses it: the tag keeps its
    value. ``kind`` is the rule it broke, which the protocol server turns into its own answer
    (an OPC-UA status code, a Modbus exception): ``"access"`` (the tag is not writable),
    ``"type"`` (not a value of the tag's type) or ``"range"`` (outside ``min``/``max``, not
    finite, too long)."""

    def __init__(self, machine: str, tag: str, kind: Literal["access", "type", "range"], reason: str) -> None:
        self.kind = kind
        super().__init__(machine, tag, reason)


def client_writable(name: str, tag: TagBase) -> bool:
    """Whether a client may write tag ``name``: the map says so and the PLC does not own it."""
    return tag.writable and name not in PLC_OWNED


def check_client_write(machine: str, name: str, tag: TagBase, raw: RawValue) -> TagValue:
    """The engineering value of ``raw``, a raw value a client wrote to tag ``name``, if the
    PLC accepts it; raises :class:`WriteRefused` otherwise.

    The rules are :func:`plant.codec.check_write`'s, the check our agents make before they
    send (one source of truth), applied to what arrived on the wire. A tag is writable when the
    map says so and the PLC does not own it (``command_ack``...). A value that reads back as a
    limit would after a write of that limit counts as the limit: ``max`` 10.0 with ``scale``
    0.1 arrives as 100 * 0.1 = 10.000000000000002, ``max`` 0.1 in a float32 as 0.100000001.
    """
    if not client_writable(name, tag):
        raise WriteRefused(machine, name, "access", "is read-only")
    try:
        value = from_raw(tag, raw)
    except CodecError as exc:
        raise WriteRefused(machine, name, "type", str(exc)) from None
    checked = value
    if not isinstance(value, bool | str):
        for limit in (tag.min, tag.max):
            if limit is not None and same_value(tag, limit, value):
                checked = limit
    try:
        check_write(machine, name, tag, checked)
    except TagError as exc:
        # from_raw gave a value of the tag's kind: what check_write refuses is its size.
        raise WriteRefused(machine, name, "range", exc.reason) from None
    return value


class MachinePlc:
    """Tag values and the command handshake of one twin machine (see the module docstring)."""

    def __init__(self, live: LiveTwin, name: str, machine: MachineConfig) -> None:
        self.live = live
        self.name = name
        self.machine = machine
        self.tags: dict[str, TagBase] = dict(machine.tags)
        self.values: dict[str, TagValue] = {t: from_raw(tag, default_raw(tag)) for t, tag in self.tags.items()}
        self.commands_executed = 0
        #: Fault injection for tests: awaited once, after the next command ran and before the
        #: write that carried it is answered (a test makes the server die here: a lost reply).
        self.after_next_command: Callable[[], Awaitable[None]] | None = None
        getters = twin_getters(machine)
        self._twin_tags = [(t, getters[t], tag) for t, tag in self.tags.items() if t in getters]
        self._observers: list[Observer] = []
        self._last_sample_id = 0
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ observers

    def observe(self, fn: Observer) -> None:
        """Call ``await fn(changes)`` on the loop whenever tag values change (PLC or twin)."""
        self._observers.append(fn)

    def unobserve(self, fn: Observer) -> None:
        self._observers = [o for o in self._observers if o is not fn]

    async def _publish(self, changes: Changes) -> None:
        if not changes:
            return
        for fn in list(self._observers):
            try:
                await fn(changes)
            except Exception:  # one broken server must not stop the PLC
                log.exception("%s: observer failed", self.name)

    # ------------------------------------------------------------------ the twin side

    def sample(self, twin: Twin) -> tuple[int, Changes]:
        """The twin-driven tag values now. Call on the twin thread (a listener or a job)."""
        tm = twin.machine(self.name)
        return next(_sample_counter), {t: fit(tag, get(tm)) for t, get, tag in self._twin_tags}

    async def apply_sample(self, sample: tuple[int, Changes]) -> None:
        """Take a sample from :meth:`sample` into the tag values; older samples are ignored."""
        sample_id, values = sample
        if sample_id <= self._last_sample_id:
            return
        self._last_sample_id = sample_id
        await self._publish(self._merge(values))

    def _merge(self, values: Changes) -> Changes:
        changes = {
            t: v for t, v in values.items() if self.values.get(t) != v or type(self.values.get(t)) is not type(v)
        }
        self.values.update(changes)
        return changes

    # ------------------------------------------------------------------ the client side

    async def on_write(self, written: Changes) -> None:
        """Values a client wrote (decoded, engineering units). Setpoints go to the twin; a
        new ``command_seq`` runs the command handshake. Returns when the PLC has acknowledged."""
        async with self._lock:
            written = {t: v for t, v in written.items() if t in self.tags and t not in PLC_OWNED}
            self.values.update(written)
            for t, v in written.items():
                setter = TWIN_SETTERS.get(t)
                if setter is not None:
                    await self._on_twin(lambda tw, s=setter, v=v: s(tw.machine(self.name), v))  # type: ignore[misc]
            if "command_seq" in written:
                seq = written["command_seq"]
                if seq != self.values.get("command_ack"):
                    await self._execute(self.values.get("command", 0), seq)
            elif "command" in written and "command_seq" not in self.tags and written["command"] != 0:
                await self._execute(written["command"], None)

    async def execute_now(self, command: Command) -> tuple[CommandStatus, str]:
        """Apply a command outside the sequence handshake (an OPC-UA method call)."""
        async with self._lock:
            status, message, sample = await self._run_command(int(command))
            changes = self._merge(sample[1])
            await self._publish(changes)
            return status, message

    async def _on_twin(self, fn: Callable[[Twin], Any]) -> Any:
        return await asyncio.wait_for(asyncio.wrap_future(self.live.submit(fn)), COMMAND_TIMEOUT_S)

    async def _run_command(self, code: object) -> tuple[CommandStatus, str, tuple[int, Changes]]:
        def run(tw: Twin) -> tuple[CommandStatus, str, tuple[int, Changes]]:
            tm = tw.machine(self.name)
            try:
                if isinstance(code, bool) or not isinstance(code, int):
                    raise CommandRefused(Command.NONE, tm.state, f"{code!r} is not a command code")
                tm.command(code)
            except CommandRefused as exc:
                return CommandStatus.REFUSED, exc.reason, self.sample(tw)
            return CommandStatus.ACCEPTED, "", self.sample(tw)

        try:
            result: tuple[CommandStatus, str, tuple[int, Changes]] = await self._on_twin(run)
        except TimeoutError:
            return CommandStatus.REFUSED, f"the machine did not answer within {COMMAND_TIMEOUT_S:g} s", (0, {})
        self.commands_executed += 1
        return result

    async def _execute(self, code: TagValue, seq: TagValue | None) -> None:
        status, message, sample = await self._run_command(code)
        if sample[0] > self._last_sample_id:
            self._last_sample_id = sample[0]
        changes = self._merge(sample[1])
        # The acknowledgement goes last, after the state and the verdict it stands for.
        verdict: dict[str, TagValue] = {"command_status": int(status), "command_message": message}
        changes.update(self._merge({t: v for t, v in verdict.items() if t in self.tags}))
        if seq is None:
            changes.update(self._merge({"command": 0}))  # taken: a command without the handshake
        else:
            changes["command_ack"] = seq
            self.values["command_ack"] = seq
        if status is CommandStatus.REFUSED:
            log.info("%s: command %r (seq %s) refused: %s", self.name, code, seq, message)
        await self._publish(changes)
        hook, self.after_next_command = self.after_next_command, None
        if hook is not None:
            await hook()


class PlantPlcs:
    """The PLCs of every served machine, fed from the live twin by one listener."""

    def __init__(self, live: LiveTwin, plcs: dict[str, MachinePlc], every_ticks: int | None = None) -> None:
        self.live = live
        self.plcs = plcs
        self.every_ticks = every_ticks or live.twin.config.scan_ticks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, tuple[int, Changes]]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._last: dict[str, Changes] = {}

    def _listen(self, twin: Twin) -> None:
        # Twin thread: sample every machine, hand over only what changed since the last scan.
        out: dict[str, tuple[int, Changes]] = {}
        for name, plc in self.plcs.items():
            sid, values = plc.sample(twin)
            if values != self._last.get(name):
                self._last[name] = values
                out[name] = (sid, values)
        if out and self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, out)

    async def _run_pump(self) -> None:
        while True:
            batch = await self._queue.get()
            for name, sample in batch.items():
                await self.plcs[name].apply_sample(sample)

    async def start(self) -> None:
        """Take the first values from the twin and follow it from now on."""
        self._loop = asyncio.get_running_loop()
        await self.sync()
        self._pump = asyncio.create_task(self._run_pump(), name="atelier-plc-pump")
        self.live.add_listener(self._listen, every_ticks=self.every_ticks, name="atelier-plcs")

    async def sync(self) -> None:
        """Publish the twin's values now (after a change made outside the scan, like a reset)."""
        now = self.live.read(lambda tw: {n: p.sample(tw) for n, p in self.plcs.items()})
        for name, sample in now.items():
            self._last[name] = sample[1]
            await self.plcs[name].apply_sample(sample)

    async def stop(self) -> None:
        self.live.remove_listener(self._listen)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

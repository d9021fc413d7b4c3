"""The Modbus TCP machine agent (pymodbus): the only client-side module that imports pymodbus.

:class:`ModbusAgent` reaches a machine's coils, discrete inputs, holding and input registers at
the addresses of its tag map, with the data type, scale, byte and word order each tag declares
(:mod:`plant.codec`). Tags that sit next to each other are read in one request (up to 125
registers or 2000 bits). Modbus has no subscriptions, so waits poll once per PLC scan.

    agent = ModbusAgent(name, plant.machines[name])
    async with agent:
        await agent.write("speed_setpoint", 0.2)   # m/s, checked against min/max first
        await agent.command(Command.START)
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any
from urllib.parse import urlparse

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from plant._agent import NetworkAgent, TransportLost
from plant.codec import CodecError, RawValue, encode_registers, register_decoder
from plant.config import ModbusMachine, ModbusTag
from plant.interface import ConnectError, MachineError, TagValue

__all__ = ["ModbusAgent"]

#: Most registers / bits one request may carry (Modbus application protocol, section 6).
MAX_REGISTERS = 125
MAX_BITS = 2000
_EXCEPTIONS = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    6: "SERVER DEVICE BUSY",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET FAILED TO RESPOND",
}


class _ExceptionReply(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(_EXCEPTIONS.get(code, f"exception {code}"))


def runs(
    tags: list[tuple[str, ModbusTag]], covered: frozenset[tuple[str, int]] = frozenset()
) -> list[tuple[str, int, int, list[tuple[str, ModbusTag]]]]:
    """Group tags into requests: (table, first address, count, tags) for each run of tags of one
    table whose addresses follow without a gap, within the per-request limit. A gap made only of
    ``covered`` addresses (other tags of the map, which the device has) is read through."""
    out: list[tuple[str, int, int, list[tuple[str, ModbusTag]]]] = []
    for name, tag in sorted(dict(tags).items(), key=lambda nt: (nt[1].table, nt[1].address)):
        limit = MAX_BITS if tag.table in ("coil", "discrete_input") else MAX_REGISTERS
        if out:
            table, start, count, members = out[-1]
            end = start + count
            bridged = all((tag.table, a) in covered for a in range(end, tag.address))
            if table == tag.table and bridged and tag.address + tag.register_count - start <= limit:
                members.append((name, tag))
                out[-1] = (table, start, max(end, tag.address + tag.register_count) - start, members)
                continue
        out.append((tag.table, tag.address, tag.register_count, [(name, tag)]))
    return out


class ModbusAgent(NetworkAgent):
    """A machine over Modbus TCP. See :class:`plant._agent.NetworkAgent` for timeouts and
    reconnects; ``poll_interval_s`` is how often waits re-read (default one PLC scan)."""

    machine: ModbusMachine

    def __init__(self, name: str, machine: ModbusMachine, *, poll_interval_s: float = 0.02, **kw: Any) -> None:
        super().__init__(name, machine, **kw)
        url = urlparse(machine.endpoint)
        if url.hostname is None or url.port is None:
            raise ValueError(f"{name}: endpoint {machine.endpoint!r} has no host and port")
        self.host, self.port = url.hostname, url.port
        self.poll_interval_s = poll_interval_s
        self.mtags: dict[str, ModbusTag] = dict(machine.tags)
        self._client: AsyncModbusTcpClient | None = None
        self._decoders = {n: register_decoder(t) for n, t in self.mtags.items()}
        self._covered = frozenset(
            (t.table, a) for t in self.mtags.values() for a in range(t.address, t.address + t.register_count)
        )
        # Request plans by the tuple of tag names read (the same few sets are read over and over).
        self._plans: dict[tuple[str, ...], list[tuple[str, int, int, list[tuple[str, ModbusTag]]]]] = {}

    # ------------------------------------------------------------------ transport

    async def _open(self) -> None:
        gen = self._generation

        def traced(connected: bool) -> None:
            if not connected:
                self._transport_lost("the server closed the connection", gen)

        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.request_timeout_s,
            retries=0,  # the agent retries, with the same command sequence number
            reconnect_delay=0,  # the agent reconnects, and reports it
            name=f"atelier-{self.name}",
            trace_connect=traced,
        )
        ok = await client.connect()
        if not ok:
            client.close()
            raise TransportLost(f"connection to {self.host}:{self.port} refused or timed out")
        self._client = client
        await self._check_map()

    async def _check_map(self) -> None:
        """Read every tag once; name the tags whose addresses the device does not have."""
        bad: list[str] = []
        for table, start, count, members in runs(list(self.mtags.items())):
            try:
                await self._request(table, start, count)
                continue
            except _ExceptionReply:
                pass
            for name, tag in members:  # find which of them the device lacks
                try:
                    await self._request(table, tag.address, tag.register_count)
                except _ExceptionReply as exc:
                    bad.append(f"{name} ({table} {tag.address}, {exc})")
        if bad:
            raise ConnectError(
                self.name,
                f"the device {self.machine.device_id} at {self.machine.endpoint} has no address for tag "
                + ", ".join(bad),
            )

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _request(self, table: str, address: int, count: int) -> list[int] | list[bool]:
        client = self._client
        if client is None or not client.connected:
            raise TransportLost("not connected")
        dev = self.machine.device_id
        try:
            if table == "holding_register":
                rr = await client.read_holding_registers(address, count=count, device_id=dev)
            elif table == "input_register":
                rr = await client.read_input_registers(address, count=count, device_id=dev)
            elif table == "coil":
                rr = await client.read_coils(address, count=count, device_id=dev)
            else:
                rr = await client.read_discrete_inputs(address, count=count, device_id=dev)
        except (TimeoutError, ConnectionException, ModbusIOException, OSError) as exc:
            raise TransportLost(f"{type(exc).__name__}: {exc}") from None
        except ModbusException as exc:
            raise MachineError(self.name, f"{table} {address}..{address + count - 1}: {exc}") from None
        if rr.isError():
            raise _ExceptionReply(int(getattr(rr, "exception_code", 0)))
        if table in ("coil", "discrete_input"):
            return list(rr.bits[:count])
        return list(rr.registers)

    async def _read(self, names: list[str]) -> dict[str, TagValue]:
        out: dict[str, TagValue] = {}
        key = tuple(names)
        plan = self._plans.get(key)
        if plan is None:
            plan = runs([(n, self.mtags[n]) for n in names], self._covered)
            if len(self._plans) < 256:
                self._plans[key] = plan
        decoders = self._decoders
        for table, start, count, members in plan:
            try:
                data = await self._request(table, start, count)
            except _ExceptionReply as exc:
                which = ", ".join(n for n, _ in members)
                raise MachineError(
                    self.name, f"reading {which} ({table} {start}..{start + count - 1}): {exc}"
                ) from None
            for name, tag in members:
                off = tag.address - start
                try:
                    out[name] = decoders[name](data, off)
                except (CodecError, struct.error) as exc:
                    raise MachineError(self.name, f"tag {name!r}: {exc}") from None
        return out

    async def _write(self, raw: dict[str, RawValue]) -> None:
        client = self._client
        if client is None or not client.connected:
            raise TransportLost("not connected")
        dev = self.machine.device_id
        # One request per run of adjacent tags; the runs go out in the order of the first tag
        # of each in ``raw`` (command before command_seq: the sequence number comes last).
        order = {n: i for i, n in enumerate(raw)}
        groups = runs([(n, self.mtags[n]) for n in raw])
        groups.sort(key=lambda g: max(order[n] for n, _ in g[3]))
        for table, start, count, members in groups:
            try:
                if table == "coil":
                    bits = [False] * count
                    for name, tag in members:
                        bits[tag.address - start] = bool(raw[name])
                    rr = await client.write_coils(start, bits, device_id=dev)
                else:
                    regs = [0] * count
                    for name, tag in members:
                        enc = encode_registers(tag, raw[name])
                        regs[tag.address - start : tag.address - start + len(enc)] = enc
                    rr = await client.write_registers(start, regs, device_id=dev)
            except (TimeoutError, ConnectionException, ModbusIOException, OSError) as exc:
                raise TransportLost(f"{type(exc).__name__}: {exc}") from None
            except ModbusException as exc:
                raise MachineError(self.name, f"writing {table} {start}: {exc}") from None
            if rr.isError():
                which = ", ".join(n for n, _ in members)
                code = int(getattr(rr, "exception_code", 0))
                raise MachineError(self.name, f"the device refused the write of {which}: {_EXCEPTIONS.get(code, code)}")

    async def _wait_change(self, names: tuple[str, ...], timeout_s: float) -> None:
        await asyncio.sleep(max(0.0, min(timeout_s, self.poll_interval_s)))

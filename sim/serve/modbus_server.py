"""The twin's machines served over Modbus TCP (pymodbus), with the register map of the plant.

One :class:`ModbusTwinServer` per endpoint; each machine at that endpoint is one Modbus device
(its ``device_id``). The device has exactly the coils, discrete inputs, holding and input
registers its tag map declares, encoded with the tag's type, scale, byte and word order
(:mod:`plant.codec`); every other address answers ILLEGAL ADDRESS, as a PLC does.

Writes are checked as a PLC checks them, and a refused write changes nothing (no register of
it is written, nothing reaches the PLC): a write to a coil or holding register that belongs to
no writable tag (a gap, a read-only tag, a tag the PLC owns) answers ILLEGAL DATA ADDRESS; a
write that leaves a tag with a value the PLC refuses (outside its ``min``/``max``, not
finite: :func:`~sim.serve.plc.check_client_write`, the rules our agents check before they
send) answers ILLEGAL DATA VALUE.

Built on :class:`pymodbus.simulator.SimDevice` (the datastore pymodbus 3.16 recommends) and
its ``action`` hook, which sees every request before it is answered: reads get the PLC's
current values, writes go to the PLC (a new ``command_seq`` runs the command handshake) before
the reply leaves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from plant.codec import CodecError, RawValue, decode_registers, encode_registers, to_raw
from plant.config import ModbusMachine, ModbusTag
from plant.interface import TagValue
from sim.serve.plc import Changes, MachinePlc, WriteRefused, check_client_write, client_writable

log = logging.getLogger(__name__)

#: Function code to the table it addresses (c coils, d discrete inputs, h holding, i input).
_FC_TABLE = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h", 4: "i"}
_TABLE_KEY = {"coil": "c", "discrete_input": "d", "holding_register": "h", "input_register": "i"}


def _encode(tag: ModbusTag, value: TagValue) -> list[int]:
    try:
        return encode_registers(tag, to_raw(tag, value), truncate=True)
    except CodecError:
        return [0] * tag.register_count


@dataclass
class _Device:
    name: str
    machine: ModbusMachine
    plc: MachinePlc
    #: address -> register value (or bit, for c/d) not yet copied into the live block.
    pending: dict[str, dict[int, int]] = field(default_factory=lambda: {k: {} for k in "cdhi"})
    #: table -> address (bit or register) -> the writable tag it belongs to.
    writable_at: dict[str, dict[int, tuple[str, ModbusTag]]] = field(default_factory=dict)
    observer: Callable[[Changes], object] | None = None

    def stage(self, changes: Changes) -> None:
        for tname, value in changes.items():
            tag = self.machine.tags.get(tname)
            if tag is None:
                continue
            key = _TABLE_KEY[tag.table]
            if key in "cd":
                self.pending[key][tag.address] = 1 if value else 0
            else:
                for i, reg in enumerate(_encode(tag, value)):
                    self.pending[key][tag.address + i] = reg


class ModbusTwinServer:
    """A pymodbus TCP server on one endpoint for one or more twin machines (one device each).

    ``start`` binds the endpoint (raises ``RuntimeError`` if it cannot listen); ``stop``
    closes it and drops every connection. The PLCs keep running across a stop and start.
    """

    def __init__(self, endpoint: str, served: list[tuple[str, ModbusMachine, MachinePlc]]) -> None:
        if not served:
            raise ValueError("a Modbus server needs at least one machine")
        url = urlparse(endpoint)
        if url.hostname is None or url.port is None:
            raise ValueError(f"{endpoint!r} has no host and port")
        self.endpoint = endpoint
        self.address = (url.hostname, url.port)
        ids = [m.device_id for _, m, _ in served]
        if len(set(ids)) != len(ids):
            raise ValueError(f"machines at {endpoint} share a device_id: {ids}")
        self._devices = [_Device(n, m, p) for n, m, p in served]
        self.server: ModbusTcpServer | None = None
        #: Write requests that reached the server (for tests: "nothing was sent").
        self.writes_received = 0

    @property
    def machines(self) -> list[str]:
        return [d.name for d in self._devices]

    def _sim_device(self, dev: _Device) -> SimDevice:
        blocks: dict[str, list[SimData]] = {k: [] for k in "cdhi"}
        for tname, tag in dev.machine.tags.items():
            key = _TABLE_KEY[tag.table]
            read_only = not client_writable(tname, tag)
            if not read_only:
                at = dev.writable_at.setdefault(key, {})
                for a in range(tag.address, tag.address + tag.register_count):
                    at[a] = (tname, tag)
            value = dev.plc.values[tname]
            if key in "cd":
                blocks[key].append(
                    SimData(tag.address, values=[bool(value)], datatype=DataType.BITS, readonly=read_only)
                )
            else:
                blocks[key].append(
                    SimData(tag.address, values=_encode(tag, value), datatype=DataType.REGISTERS, readonly=read_only)
                )
        for key in "cd":
            if not blocks[key]:  # pymodbus needs every table; an unused one holds one read-only word
                blocks[key].append(SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True))
        for key in "hi":
            if not blocks[key]:
                blocks[key].append(SimData(0, datatype=DataType.INVALID))
        return SimDevice(
            dev.machine.device_id,
            simdata=(blocks["c"], blocks["d"], blocks["h"], blocks["i"]),
            action=functools.partial(self._action, dev),
        )

    async def start(self) -> None:
        """Start listening on the endpoint."""
        if self.server is not None:
            raise RuntimeError(f"the Modbus server at {self.endpoint} is already running")
        for dev in self._devices:
            dev.pending = {k: {} for k in "cdhi"}
            dev.writable_at = {}
        devices = [self._sim_device(d) for d in self._devices]
        for dev in self._devices:

            async def observer(changes: Changes, dev: _Device = dev) -> None:
                dev.stage(changes)

            dev.observer = observer
            dev.plc.observe(observer)
            dev.stage(dev.plc.values)  # anything that changed while the server was down
        server = ModbusTcpServer(devices, address=self.address)
        await server.serve_forever(background=True)
        self.server = server

    async def stop(self) -> None:
        """Stop listening and drop every connection. Safe to call twice."""
        server, self.server = self.server, None
        for dev in self._devices:
            if dev.observer is not None:
                dev.plc.unobserve(dev.observer)  # type: ignore[arg-type]
                dev.observer = None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Stop for good (the same as :meth:`stop` for Modbus: nothing outlives the endpoint)."""
        await self.stop()

    async def __aenter__(self) -> ModbusTwinServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests

    async def _action(
        self,
        dev: _Device,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        key = _FC_TABLE.get(function_code)
        if key is None:
            return ExcCodes.ILLEGAL_FUNCTION
        bits = key in "cd"
        pending = dev.pending[key]
        if pending:
            for addr, v in pending.items():
                if bits:
                    w, b = addr // 16 - start_address, addr % 16
                    if 0 <= w < len(registers):
                        registers[w] = (registers[w] & ~(1 << b)) | ((1 if v else 0) << b)
                elif 0 <= addr - start_address < len(registers):
                    registers[addr - start_address] = v
            pending.clear()
        if not set_values:
            return None
        self.writes_received += 1
        n = len(set_values)
        # Every address written must belong to a writable tag (pymodbus's read-only flag covers
        # registers, not single coils, nor the coils between two tags).
        at = dev.writable_at.get(key, {})
        touched: dict[str, ModbusTag] = {}
        for a in range(address, address + n):
            hit = at.get(a)
            if hit is None:
                log.info("%s: refused a write to %s address %d (no writable tag)", dev.name, key, a)
                return ExcCodes.ILLEGAL_ADDRESS
            touched[hit[0]] = hit[1]
        # The tags it touches, as they will be after the write; all must be accepted.
        written: dict[str, TagValue] = {}
        for tname, tag in touched.items():
            raw: RawValue
            if bits:
                raw = bool(set_values[tag.address - address])
            else:
                regs = [
                    int(set_values[a - address]) if address <= a < address + n else registers[a - start_address]
                    for a in range(tag.address, tag.address + tag.register_count)
                ]
                try:
                    raw = decode_registers(tag, regs)
                except CodecError:
                    return ExcCodes.ILLEGAL_VALUE
            try:
                written[tname] = check_client_write(dev.name, tname, tag, raw)
            except WriteRefused as exc:
                log.info("%s: refused a write to %s: %s", dev.name, tname, exc.reason)
                return ExcCodes.ILLEGAL_ADDRESS if exc.kind == "access" else ExcCodes.ILLEGAL_VALUE
        await dev.plc.on_write(written)
        return None

"""The live twin as a plant: every machine served on its endpoint as a real protocol server.

:func:`serve_plant` is the one entry point (``atelier twin serve`` builds on it; robot driver
nodes join it later). It groups the machines of a plant description by endpoint, gives each
a :class:`~sim.serve.plc.MachinePlc` fed by the :class:`~sim.live.LiveTwin`, and starts an
OPC-UA server (:mod:`sim.serve.opcua_server`) or a Modbus TCP server
(:mod:`sim.serve.modbus_server`) per endpoint. The servers never touch the twin: they go
through the PLCs, which go through ``LiveTwin.submit``/``read``/``add_listener``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from plant.aio import close_loop
from plant.config import ModbusMachine, OpcuaMachine, PlantDescription
from sim.live import LiveTwin
from sim.serve.modbus_server import ModbusTwinServer
from sim.serve.opcua_server import OpcuaTwinServer, ServerSecurity
from sim.serve.plc import MachinePlc, PlantPlcs

__all__ = ["ModbusTwinServer", "OpcuaTwinServer", "PlantServers", "ServerSecurity", "ServingThread", "serve_plant"]

T = TypeVar("T")

TwinServer = OpcuaTwinServer | ModbusTwinServer


@dataclass
class PlantServers:
    """The running servers of a plant: one per endpoint, and the PLC of each machine."""

    plant: PlantDescription
    plcs: PlantPlcs
    servers: dict[str, TwinServer] = field(default_factory=dict)

    def server_of(self, machine: str) -> TwinServer:
        """The server that serves ``machine`` (raises ``KeyError`` naming it)."""
        for server in self.servers.values():
            if machine in server.machines:
                return server
        raise KeyError(f"no server serves machine {machine!r}")

    def plc(self, machine: str) -> MachinePlc:
        return self.plcs.plcs[machine]

    async def restart(self, machine: str, down_s: float = 0.0) -> None:
        """Stop the server of ``machine`` (dropping its clients), wait ``down_s``, start it again.

        Models a PLC comms module that restarts: the machine keeps running meanwhile.
        """
        server = self.server_of(machine)
        await server.stop()
        await asyncio.sleep(down_s)
        await server.start()

    async def reset_twin(self) -> None:
        """Put the twin back to time zero (machines stopped, parts home) and publish it now."""
        await asyncio.wrap_future(self.plcs.live.submit(lambda tw: tw.reset()))
        await self.plcs.sync()

    async def stop(self) -> None:
        """Close every server and stop following the twin."""
        for server in self.servers.values():
            await server.close()
        await self.plcs.stop()


@asynccontextmanager
async def serve_plant(
    live: LiveTwin,
    plant: PlantDescription | None = None,
    *,
    machines: Iterable[str] | None = None,
    opcua_security: ServerSecurity | None = None,
) -> AsyncIterator[PlantServers]:
    """Serve the machines of ``plant`` (default: the live twin's plant) on their endpoints.

    ``machines`` limits which machines are served (default all). ``opcua_security`` is the
    twin servers' certificate and key, needed when a machine's OPC-UA security is not None.
    Yields once every server listens; stops them all on exit. Raises ``OSError`` /
    ``RuntimeError`` naming the endpoint when a port cannot be bound. The live twin must be
    started by the caller (its real-time loop is what moves the machines).
    """
    plant = plant or live.twin.plant
    names = list(machines) if machines is not None else list(plant.machines)
    unknown = [n for n in names if n not in plant.machines]
    if unknown:
        raise KeyError(f"no machine named {', '.join(map(repr, unknown))} in plant {plant.name!r}")
    plcs = {n: MachinePlc(live, n, plant.machines[n]) for n in names}
    feed = PlantPlcs(live, plcs)
    await feed.start()
    servers = PlantServers(plant, feed)
    by_endpoint: dict[str, list[str]] = {}
    for n in names:
        by_endpoint.setdefault(plant.machines[n].endpoint, []).append(n)
    try:
        for endpoint, group in by_endpoint.items():
            configs = [plant.machines[n] for n in group]
            server: TwinServer
            if all(isinstance(m, OpcuaMachine) for m in configs):
                server = OpcuaTwinServer(
                    endpoint,
                    [(n, m, plcs[n]) for n, m in zip(group, configs, strict=True) if isinstance(m, OpcuaMachine)],
                    opcua_security,
                )
            elif all(isinstance(m, ModbusMachine) for m in configs):
                server = ModbusTwinServer(
                    endpoint,
                    [(n, m, plcs[n]) for n, m in zip(group, configs, strict=True) if isinstance(m, ModbusMachine)],
                )
            else:
                raise ValueError(f"machines {group} share endpoint {endpoint} but not a protocol")
            await server.start()
            servers.servers[endpoint] = server
        yield servers
    finally:
        await servers.stop()


class ServingThread:
    """:func:`serve_plant` on an event loop of its own, in a daemon thread.

    For tests, benchmarks and tools whose own event loop comes and goes: the servers keep
    answering whatever the caller's loop does, as a real plant would. ``start`` blocks until
    every server listens (or raises what :func:`serve_plant` raised); :meth:`call` runs a
    coroutine function on the serving loop and returns its result (blocking).
    """

    def __init__(
        self, live: LiveTwin, plant: PlantDescription | None = None, opcua_security: ServerSecurity | None = None
    ) -> None:
        self.live = live
        self.plant = plant or live.twin.plant
        self.opcua_security = opcua_security
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._servers: PlantServers | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="atelier-serve", daemon=True)

    @property
    def servers(self) -> PlantServers:
        if self._servers is None:
            raise RuntimeError("not serving")
        return self._servers

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            # What the servers leave behind (sessions of clients that vanished) ends cleanly.
            close_loop(self.loop)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with serve_plant(self.live, self.plant, opcua_security=self.opcua_security) as servers:
                self._servers = servers
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self, timeout_s: float = 60.0) -> ServingThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the twin servers did not start within {timeout_s:g} s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[PlantServers], Awaitable[T]], timeout_s: float = 30.0) -> T:
        """Run ``await fn(servers)`` on the serving loop; blocks until done."""

        async def run() -> T:
            return await fn(self.servers)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)

    async def acall(self, fn: Callable[[PlantServers], Awaitable[T]]) -> T:
        """:meth:`call` for a caller that is itself a coroutine (does not block its loop)."""

        async def run() -> T:
            return await fn(self.servers)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    def stop(self, timeout_s: float = 10.0) -> None:
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> ServingThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The live twin as a plant: every machine served on its endpoint as a real protocol server.

:func:`serve_plant` is the one entry point (``atelier twin serve`` builds on it; robot driver
nodes join it later). It groups the machines of a plant description by endpoint, gives each
a :class:`~sim.serve.plc.MachinePlc` fed by the :class:`~sim.live.LiveTwin`, and starts an
OPC-UA server (:mod:`sim.serve.opcua_server`) or a Modbus TCP server
(:mod:`sim.serve.modbus_server`) per endpoint. The servers never touch the twin: they go
through the PLCs, which go through ``LiveTwin.submit``/``read``/``add_listener``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from plant.config import ModbusMachine, OpcuaMachine, PlantDescription
from sim.live import LiveTwin
from sim.serve.modbus_server import ModbusTwinServer
from sim.serve.opcua_server import OpcuaTwinServer, ServerSecurity
from sim.serve.plc import MachinePlc, PlantPlcs

__all__ = ["ModbusTwinServer", "OpcuaTwinServer", "PlantServers", "ServerSecurity", "serve_plant"]

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
        import asyncio

        server = self.server_of(machine)
        await server.stop()
        await asyncio.sleep(down_s)
        await server.start()

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

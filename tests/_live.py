"""One live twin serving the demo cell on free loopback ports, shared by the tests of a run.

Starting it costs a few seconds (MuJoCo model, asyncua address spaces), so it starts once per
process, on first use, and each test resets the twin instead. The servers run on their own
thread and loop (:class:`sim.serve.ServingThread`), so a test's loop is a client like any other.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass

from plant import load_plant
from plant.config import PlantDescription
from plant.interface import TagValue
from plant.testing import on_free_ports
from sim.live import LiveTwin
from sim.serve import PlantServers, ServerSecurity, ServingThread
from sim.twin import Twin

#: The twin runs this many times faster than the wall clock in tests (PackML acting states
#: take 0.3 s simulated; a CNC cycle 8 s), which keeps the suite short.
SPEED = 4.0


@dataclass
class Serving:
    plant: PlantDescription
    twin: Twin
    live: LiveTwin
    thread: ServingThread

    def reset(self) -> None:
        """Twin back to time zero, published to every server before this returns."""
        self.thread.call(lambda servers: servers.reset_twin())

    def stop(self) -> None:
        self.thread.stop()
        self.live.stop()

    def plc_value(self, machine: str, tag: str) -> TagValue:
        """What the twin's PLC of ``machine`` holds in ``tag`` (read on the servers' thread)."""

        async def get(srv: PlantServers) -> TagValue:
            return srv.plc(machine).values[tag]

        return self.thread.call(get)

    def commands_executed(self, machine: str) -> int:
        """How many commands the twin's PLC of ``machine`` has carried out."""

        async def get(srv: PlantServers) -> int:
            return srv.plc(machine).commands_executed

        return self.thread.call(get)


_RUNNING: dict[str, Serving] = {}


def serving(
    key: str = "demo", plant: PlantDescription | None = None, security: ServerSecurity | None = None
) -> Serving:
    """The shared live plant for ``key`` (started on first use with ``plant``, default the demo
    cell on free ports)."""
    s = _RUNNING.get(key)
    if s is None:
        p = plant or on_free_ports(load_plant())
        twin = Twin(p)
        live = LiveTwin(twin, speed=SPEED).start()
        thread = ServingThread(live, p, opcua_security=security).start()
        s = _RUNNING[key] = Serving(p, twin, live, thread)
        atexit.register(s.stop)
    return s

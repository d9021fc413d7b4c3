"""Helpers for tests of machine agents, and the conformance check every backend must pass.

Tests and other packages may import this module; production code does not.
"""

from __future__ import annotations

import socket

from plant.config import ModbusMachine, OpcuaMachine, PlantDescription


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def on_free_ports(plant: PlantDescription, host: str = "127.0.0.1") -> PlantDescription:
    """A copy of ``plant`` whose machines listen on free loopback ports (one per endpoint)."""
    ports: dict[str, int] = {}
    machines: dict[str, OpcuaMachine | ModbusMachine] = {}
    for name, m in plant.machines.items():
        port = ports.setdefault(m.endpoint, free_port(host))
        if isinstance(m, OpcuaMachine):
            machines[name] = m.model_copy(update={"endpoint": f"opc.tcp://{host}:{port}/atelier"})
        else:
            machines[name] = m.model_copy(update={"endpoint": f"modbus+tcp://{host}:{port}"})
    return plant.model_copy(update={"machines": machines})

"""One contract, every machine backend: OPC-UA and Modbus TCP agents against the twin's real
servers on loopback, and the in-process twin agent. The same checks run on each
(:func:`plant.testing.check_machine`), as asyncua's own suite runs over client and server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plant import load_plant
from plant.interface import ConnectionEvents, MachineAgent
from plant.modbus import ModbusAgent
from plant.opcua import OpcuaAgent
from plant.testing import check_machine
from sim.agents import TwinMachineAgent
from sim.twin import Twin
from tests._live import serving

BACKENDS = [
    ("opcua", "cnc_1"),
    ("opcua", "insp_1"),
    ("modbus", "conveyor_1"),
    ("twin", "cnc_1"),
    ("twin", "conveyor_1"),
]


@pytest.fixture(scope="module")
def inprocess_twin() -> Twin:
    return Twin(load_plant())


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{m}" for b, m in BACKENDS])
async def agent(request: pytest.FixtureRequest, inprocess_twin: Twin) -> AsyncIterator[MachineAgent]:
    backend, name = request.param
    a: MachineAgent
    if backend == "twin":
        inprocess_twin.reset()
        a = TwinMachineAgent(inprocess_twin, name)
    else:
        live = serving()
        live.reset()
        m = live.plant.machines[name]
        a = OpcuaAgent(name, m) if backend == "opcua" else ModbusAgent(name, m)  # type: ignore[arg-type]
    await a.connect()
    yield a
    await a.disconnect()
    await a.disconnect()  # twice is safe


async def test_every_backend_passes_the_machine_contract(agent: MachineAgent) -> None:
    await check_machine(agent)
    if isinstance(agent, ConnectionEvents):
        assert agent.connected
        assert agent.connection_events == []  # no outage on a quiet loopback run


class _DeafAgent(TwinMachineAgent):
    """Swallows the machine's refusals: what a careless backend would do."""

    async def command(self, command, timeout_s=5.0):  # type: ignore[no-untyped-def]
        try:
            return await super().command(command, timeout_s)
        except Exception:
            return await self.status()


async def test_the_contract_catches_a_backend_that_hides_refusals(inprocess_twin: Twin) -> None:
    inprocess_twin.reset()
    async with _DeafAgent(inprocess_twin, "cnc_1") as a:
        with pytest.raises(AssertionError, match="UNHOLD in IDLE was not refused"):
            await check_machine(a)

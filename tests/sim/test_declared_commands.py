"""Machines with few tags and commands of their own, served by the twin over OPC-UA and Modbus
and driven end to end by :func:`plant.commands.perform` through the real network agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from plant.commands import CommandFailed, perform
from plant.config import ModbusMachine, OpcuaMachine
from plant.interface import MachineAgent, TagValue
from plant.loader import load_plant
from plant.modbus import ModbusAgent
from plant.opcua import OpcuaAgent
from plant.packml import State
from plant.testing import on_free_ports
from tests._live import Serving, serving

CELL = Path(__file__).parent / "data" / "declared_cell.yaml"
TIMEOUT_S = 20.0


@pytest.fixture
def live() -> Serving:
    s = serving("declared", on_free_ports(load_plant(CELL)))
    s.reset()
    return s


@asynccontextmanager
async def agent_for(live: Serving, name: str) -> AsyncIterator[MachineAgent]:
    m = live.plant.machines[name]
    agent: OpcuaAgent | ModbusAgent
    agent = OpcuaAgent(name, m) if isinstance(m, OpcuaMachine) else ModbusAgent(name, m)  # type: ignore[arg-type]
    async with agent:
        yield agent


def plc_value(live: Serving, machine: str, tag: str) -> TagValue:
    return live.plc_value(machine, tag)


def commands_executed(live: Serving, machine: str) -> int:
    return live.commands_executed(machine)


@pytest.mark.parametrize("name", ["press_ua", "press_mb"])
async def test_a_press_with_four_tags_runs_its_declared_command_and_the_packml_ones(live: Serving, name: str) -> None:
    m = live.plant.machines[name]
    assert set(m.tags) == {"state", "command", "cycle_count", "fault_code"}
    async with agent_for(live, name) as agent:
        st = await agent.status()
        # Tags the machine does not map read neutral values.
        assert (st.state, st.part_count, st.fault_text, st.door_closed, st.command_ack) == (
            State.STOPPED,
            0,
            "",
            None,
            0,
        )
        assert await perform(agent, m, "reset", {}, TIMEOUT_S) == "idle"
        assert await perform(agent, m, "stamp", {}, TIMEOUT_S) == "cycle 1 complete"
        assert plc_value(live, name, "command") == 0  # the PLC took the code
        # Start is PackML's: from Idle only (a cycle command resets a Complete machine itself).
        with pytest.raises(CommandFailed, match=r"start cannot start from complete \(only from idle\)"):
            await perform(agent, m, "start", {}, TIMEOUT_S)
        assert await perform(agent, m, "reset", {}, TIMEOUT_S) == "idle"
        assert await perform(agent, m, "start", {}, TIMEOUT_S) in ("execute", "completing", "complete")
        assert await perform(agent, m, "hold", {}, TIMEOUT_S) == "held"
        assert await perform(agent, m, "unhold", {}, TIMEOUT_S) == "execute"
        assert await perform(agent, m, "stop", {}, TIMEOUT_S) == "stopped"
        # A command the state does not allow is refused before anything is sent.
        sent = commands_executed(live, name)
        with pytest.raises(CommandFailed, match=rf"{name}: hold cannot start from stopped \(only from execute\)"):
            await perform(agent, m, "hold", {}, TIMEOUT_S)
        assert commands_executed(live, name) == sent
        st = await agent.status()
        assert (st.state, st.cycle_count) == (State.STOPPED, 1)


async def test_dose_over_opcua_converts_millilitres_to_the_tags_litres(live: Serving) -> None:
    m = live.plant.machines["pump_ua"]
    async with agent_for(live, "pump_ua") as agent:
        await perform(agent, m, "reset", {}, TIMEOUT_S)
        detail = await perform(agent, m, "dose", {"volume": 500, "speed": "fast"}, TIMEOUT_S)
        assert detail == "dose complete"  # no cycle_count tag: the state alone says it completed
        assert await agent.read("volume_setpoint") == pytest.approx(0.5)
        assert await agent.read("mode") == 2  # the tag's named value for "fast"
        assert await agent.read("layer_count") == 1  # the twin's PLC counts what the command increments
        # The default of an optional argument is written too.
        await perform(agent, m, "dose", {"volume": 250}, TIMEOUT_S)
        assert (await agent.read("volume_setpoint"), await agent.read("mode")) == (pytest.approx(0.25), 1)
        assert await agent.read("layer_count") == 2


async def test_dose_over_modbus_writes_a_scaled_register_and_refuses_out_of_range(live: Serving) -> None:
    m = live.plant.machines["pump_mb"]
    assert isinstance(m, ModbusMachine)
    async with agent_for(live, "pump_mb") as agent:
        await perform(agent, m, "reset", {}, TIMEOUT_S)
        assert await perform(agent, m, "dose", {"volume": 0.5}, TIMEOUT_S) == "cycle 1 complete"
        assert await agent.read("volume_setpoint") == 500.0  # ml, held as 50 in a register scaled by 10
        sent = commands_executed(live, "pump_mb")
        with pytest.raises(CommandFailed, match=r"pump_mb: dose: argument 'volume': 6 l is above the maximum 5 l"):
            await perform(agent, m, "dose", {"volume": 6.0}, TIMEOUT_S)
        with pytest.raises(CommandFailed, match=r"'volume'.*is not a number"):
            await perform(agent, m, "dose", {"volume": "lots"}, TIMEOUT_S)
        with pytest.raises(CommandFailed, match=r"dose needs argument 'volume'"):
            await perform(agent, m, "dose", {}, TIMEOUT_S)
        assert await agent.read("volume_setpoint") == 500.0  # nothing written
        assert commands_executed(live, "pump_mb") == sent  # nothing sent
        # Complete: the dose resets the machine first, as a cycle does.
        assert await perform(agent, m, "dose", {"volume": 5.0}, TIMEOUT_S) == "cycle 2 complete"
        assert await agent.read("volume_setpoint") == 5000.0

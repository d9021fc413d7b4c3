"""Machine readings are checked: a value outside a tag's declared range, a number that is not
finite, or an integer that wrapped puts the machine in alarm; the agent then commands nothing
but STOP and ABORT, whichever backend (OPC-UA, Modbus, the twin in-process), and the plant
snapshot lists the alarm for the planner and the guardrails.

Real servers on loopback: the twin is served with a tag map whose PLC program does not limit
the speed setpoint or the CNC program number (a real PLC often does not), and a bare pymodbus /
asyncua client writes what a careless HMI would. The agents use the plant's declared ranges."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from llm_coordinator.snapshot import read_snapshot
from plant import load_plant
from plant.codec import check_write, from_raw, reading_alarm, tag_alarms, to_raw
from plant.config import ModbusMachine, ModbusTag, OpcuaMachine, OpcuaTag, PlantDescription, TagBase
from plant.interface import CommandRejected, MachineAgent, MachineInAlarm, TagError
from plant.modbus import ModbusAgent
from plant.opcua import OpcuaAgent
from plant.packml import Command, State
from plant.testing import on_free_ports
from sim.agents import TwinMachineAgent
from sim.serve import OpcuaTwinServer, PlantServers
from sim.twin import Twin
from tests._live import Serving, serving

SPEED = ModbusTag(
    table="holding_register",
    address=3,
    data_type="uint16",
    access="read_write",
    scale=0.001,
    unit="m/s",
    min=0.0,
    max=0.5,
)

# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        # The incident: 65535 in the register of a speed declared 0..0.5 m/s.
        (SPEED, 65.535, ["speed_setpoint", "65.535 m/s", "raw 65535", "0xFFFF", "0..0.5 m/s", "wrapped", "-1"]),
        (SPEED, 0.501, ["outside its declared range 0..0.5 m/s", "raw 501"]),
        (OpcuaTag(node_id="s=a", data_type="float32", unit="rpm"), math.nan, ["not a finite number"]),
        (OpcuaTag(node_id="s=a", data_type="float64", min=0, max=10), -math.inf, ["not a finite number"]),
        (OpcuaTag(node_id="s=a", data_type="uint16", max=9999), 12000, ["12000", "maximum 9999"]),
        (OpcuaTag(node_id="s=a", data_type="int16", min=0), -3, ["-3", "minimum 0"]),
        # A signed quantity the map declares unsigned: the bits read as int16 are in range.
        (OpcuaTag(node_id="s=a", data_type="uint16", min=-100, max=100), 65533, ["as an int16 it reads -3", "wrapped"]),
        # An int32 past its top wraps to negative in the register: as uint32 it is in range.
        (OpcuaTag(node_id="s=a", data_type="int32", min=0, max=3e9), -1294967296, ["as a uint32 it reads 3000000000"]),
    ],
)
def test_readings_outside_the_declared_range_are_alarms(tag: TagBase, value: float, words: list[str]) -> None:
    alarm = reading_alarm("speed_setpoint" if tag is SPEED else "t", tag, value)
    assert alarm is not None
    for w in words:
        assert w in alarm.reason, (w, alarm.reason)


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (SPEED, 0.5),  # the limit, as it reads back (500 * 0.001)
        (SPEED, 0.0),
        (OpcuaTag(node_id="s=a", data_type="uint32"), 2**32 - 1),  # no declared range: a counter at its top
        (OpcuaTag(node_id="s=a", data_type="int16", scale=0.001), -0.001),  # a signed speed, no range
        (OpcuaTag(node_id="s=a", data_type="float32", min=0, max=0.1), 0.10000000149011612),  # float32(0.1)
        (OpcuaTag(node_id="s=a", data_type="string"), "x"),
        (OpcuaTag(node_id="s=a", data_type="bool"), True),
    ],
)
def test_readings_inside_the_range_or_without_one_are_not_alarms(tag: TagBase, value: Any) -> None:
    assert reading_alarm("t", tag, value) is None


@given(st.floats(min_value=0.0, max_value=0.5), st.integers(0, 65535))
def test_what_may_be_written_never_reads_as_an_alarm(speed: float, raw: int) -> None:
    """Every value the write check lets through reads back without an alarm; every raw value
    of the register outside the declared range reads as one."""
    back = from_raw(SPEED, to_raw(SPEED, speed))
    check_write("m", "speed_setpoint", SPEED, speed)
    assert reading_alarm("speed_setpoint", SPEED, back) is None
    value = from_raw(SPEED, raw)
    assert (reading_alarm("speed_setpoint", SPEED, value) is None) == (raw <= 500)


def test_tag_alarms_checks_only_the_tags_of_the_map() -> None:
    alarms = tag_alarms({"speed_setpoint": SPEED}, {"speed_setpoint": 65.535, "unknown": 1e9})
    assert [a.tag for a in alarms] == ["speed_setpoint"]
    assert alarms[0].raw == 65535 and alarms[0].value == pytest.approx(65.535)


# --------------------------------------------------------------------------- the served twin


def _lax_and_declared() -> tuple[PlantDescription, PlantDescription]:
    """The demo cell on free ports twice: as served (the PLC limits neither the conveyor's speed
    setpoint nor the CNC's program number) and as declared (the plant's ranges, for the agents)."""
    declared = on_free_ports(load_plant())
    machines: dict[str, OpcuaMachine | ModbusMachine] = dict(declared.machines)
    for name, tag in (("conveyor_1", "speed_setpoint"), ("cnc_1", "program")):
        m = machines[name]
        tags: dict[str, Any] = dict(m.tags)
        tags[tag] = tags[tag].model_copy(update={"min": None, "max": None})
        machines[name] = m.model_copy(update={"tags": tags})
    return declared.model_copy(update={"machines": machines}), declared


_PLANTS: list[PlantDescription] = []


@pytest.fixture
def lax() -> Iterator[tuple[Serving, PlantDescription]]:
    if not _PLANTS:
        _PLANTS.extend(_lax_and_declared())
    s = serving("lax-plc", _PLANTS[0])
    s.reset()
    yield s, _PLANTS[1]
    s.reset()


def _writes(s: Serving, machine: str) -> int:
    async def get(srv: PlantServers) -> int:
        return srv.server_of(machine).writes_received

    return s.thread.call(get)


def _commands(s: Serving, machine: str) -> int:
    async def get(srv: PlantServers) -> int:
        return srv.plc(machine).commands_executed

    return s.thread.call(get)


async def _refuses_all_but_stop(agent: MachineAgent, tag: str, words: list[str]) -> None:
    """The agent reports the alarm in its status and refuses every command that is not safe,
    with the alarm's reason; STOP still goes through."""
    st = await agent.status()
    assert st.in_alarm and [a.tag for a in st.alarms] == [tag], st.alarms
    for w in words:
        assert w in st.alarms[0].reason, (w, st.alarms[0].reason)
    for cmd in (Command.START, Command.RESET, Command.UNHOLD, Command.CLEAR):
        with pytest.raises(MachineInAlarm) as info:
            await agent.command(cmd)
        assert isinstance(info.value, CommandRejected) and info.value.command == cmd
        assert (info.value.machine, info.value.alarms[0].tag) == (agent.name, tag)
        for w in words:
            assert w in info.value.reason
    st = await agent.command(Command.STOP)
    assert st.state in (State.STOPPING, State.STOPPED)


async def test_modbus_register_holding_65535_is_an_alarm_and_nothing_is_commanded(
    lax: tuple[Serving, PlantDescription],
) -> None:
    s, declared = lax
    m = declared.machines["conveyor_1"]
    assert isinstance(m, ModbusMachine)
    async with ModbusAgent("conveyor_1", m) as agent:
        await agent.command(Command.RESET)
        assert (await agent.wait_for_state({State.IDLE}, 10)).alarms == ()
        # An HMI (a bare client) writes -1 into the speed register; the PLC takes it.
        client = AsyncModbusTcpClient("127.0.0.1", port=int(m.endpoint.rsplit(":", 1)[1]), retries=0)
        await client.connect()
        try:
            rr = await client.write_register(3, 0xFFFF, device_id=m.device_id)
            assert not rr.isError()
        finally:
            client.close()
        assert await agent.read("speed_setpoint") == pytest.approx(65.535)
        writes, executed = _writes(s, "conveyor_1"), _commands(s, "conveyor_1")
        with pytest.raises(MachineInAlarm, match=r"speed_setpoint reads 65.535 m/s \(raw 65535, 0xFFFF\)"):
            await agent.command(Command.START)
        # Refused by the agent: no write reached the PLC, no command ran, the belt stands still.
        assert (_writes(s, "conveyor_1"), _commands(s, "conveyor_1")) == (writes, executed)
        assert s.live.read(lambda tw: tw.machine("conveyor_1").belt_speed_m_s) == 0.0
        # The planner's context and the guardrails see it in the snapshot.
        snap = await read_snapshot({"conveyor_1": agent})
        ms = snap.machines["conveyor_1"]
        assert ms.in_alarm and ms.state == "IDLE"
        assert any(a.startswith("conveyor_1: alarm: speed_setpoint reads 65.535 m/s") for a in snap.alarms)
        assert "0..0.5 m/s" in ms.alarms[0]
        await _refuses_all_but_stop(agent, "speed_setpoint", ["65.535", "raw 65535", "0..0.5 m/s"])
        # A write within the range clears the alarm: the machine can be commanded again. (The
        # twin's PLC may write its last value back in the scan that crosses this write, as a PLC
        # mirroring its setpoint does; an HMI writes again, and so does this test, a few times.)
        for attempt in range(5):
            try:
                await agent.write("speed_setpoint", 0.2)
                break
            except TagError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        await agent.wait_for_state({State.STOPPED}, 10)
        st = await agent.command(Command.RESET)
        assert not st.in_alarm


async def test_opcua_out_of_range_and_non_finite_readings_are_alarms(lax: tuple[Serving, PlantDescription]) -> None:
    s, declared = lax
    m = declared.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    nid = {t: ua.NodeId.from_string(tag.node_id) for t, tag in m.tags.items()}
    async with OpcuaAgent("cnc_1", m) as agent:
        await agent.command(Command.RESET)
        await agent.wait_for_state({State.IDLE}, 10)
        # A bare client writes a program number the plant declares impossible (0..9999).
        async with Client(m.endpoint) as client:
            dv = ua.DataValue(ua.Variant(12000, ua.VariantType.UInt16))
            assert (await client.uaclient.write_attributes([nid["program"]], [dv]))[0].is_good()
        executed = _commands(s, "cnc_1")
        await _refuses_all_but_stop(agent, "program", ["program reads 12000", "outside its declared range 0..9999"])
        assert _commands(s, "cnc_1") == executed + 1  # the STOP only
        await agent.write("program", 7)
        assert not (await agent.status()).in_alarm
        # The server refuses a NaN from a client (as a PLC would): the PLC's own program sets it.
        async with Client(m.endpoint) as client:
            dv = ua.DataValue(ua.Variant(math.nan, ua.VariantType.Float))
            assert not (await client.uaclient.write_attributes([nid["spindle_speed"]], [dv]))[0].is_good()

        async def nan_spindle(srv: PlantServers, value: float = math.nan) -> None:
            served = srv.server_of("cnc_1")
            assert isinstance(served, OpcuaTwinServer) and served.server is not None
            server = served.server
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Float))
            await server.write_attribute_value(nid["spindle_speed"], dv)

        await s.thread.acall(nan_spindle)
        await agent.wait_for_state({State.STOPPED}, 10)
        with pytest.raises(MachineInAlarm, match=r"spindle_speed reads nan .*not a finite number"):
            await agent.command(Command.RESET)
        assert (await agent.status()).alarms[0].tag == "spindle_speed"
        await s.thread.acall(lambda srv: nan_spindle(srv, 0.0))
        assert not (await agent.command(Command.RESET)).in_alarm


async def test_twin_machine_agent_in_alarm_refuses_the_same_way(demo_plant: PlantDescription) -> None:
    twin = Twin(demo_plant)
    async with TwinMachineAgent(twin, "conveyor_1") as agent:
        await agent.command(Command.RESET)
        await agent.wait_for_state({State.IDLE}, 5)
        twin.machine("conveyor_1").belt_setpoint_m_s = 65.535  # the twin's PLC holds 0xFFFF
        await _refuses_all_but_stop(agent, "speed_setpoint", ["65.535 m/s", "raw 65535", "0xFFFF", "0..0.5 m/s"])
        snap = await read_snapshot({"conveyor_1": agent})
        assert snap.machines["conveyor_1"].in_alarm
        assert [a.split(":", 2)[1].strip() for a in snap.alarms] == ["alarm"]
        with pytest.raises(TagError):
            await agent.write("speed_setpoint", 0.9)  # writes stay checked
        await agent.write("speed_setpoint", 0.1)
        await agent.wait_for_state({State.STOPPED}, 5)
        assert not (await agent.command(Command.RESET)).in_alarm

"""The served twin refuses bad writes itself, as a real PLC does: a foreign client (a bare
asyncua or pymodbus client, not our agents, which check before they send) that writes a value
out of the tag's range, of the wrong type, or to a tag that is not writable gets the protocol's
refusal (an OPC-UA status code, a Modbus exception) and the tag keeps its value, on the wire
and in the PLC. Real servers on loopback, no mocks."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uatypes import UInt32
from pymodbus.client import AsyncModbusTcpClient

from plant.config import ModbusMachine, ModbusTag, OpcuaMachine, OpcuaTag
from plant.interface import TagValue
from plant.testing import free_port
from sim.serve import ModbusTwinServer, OpcuaTwinServer
from sim.serve.plc import MachinePlc, WriteRefused, check_client_write
from tests._live import Serving, serving


@pytest.fixture
def live() -> Iterator[Serving]:
    s = serving()
    s.reset()
    yield s


def plc_value(live: Serving, machine: str, tag: str) -> TagValue:
    return live.plc_value(machine, tag)


def commands_executed(live: Serving, machine: str) -> int:
    return live.commands_executed(machine)


# --------------------------------------------------------------------------- the shared rule


@pytest.mark.parametrize(
    ("tag", "raw", "kind"),
    [
        (OpcuaTag(node_id="s=a", data_type="uint16", access="read_write", max=9999), 10000, "range"),
        (OpcuaTag(node_id="s=a", data_type="uint16", access="read_write", min=10), 9, "range"),
        (OpcuaTag(node_id="s=a", data_type="uint16"), 5, "access"),
        (OpcuaTag(node_id="s=a", data_type="uint16", access="read_write"), "5", "type"),
        (OpcuaTag(node_id="s=a", data_type="float32", access="read_write"), math.nan, "range"),
        (OpcuaTag(node_id="s=a", data_type="string", access="read_write"), "x" * 5000, "range"),
        (
            ModbusTag(table="holding_register", address=0, data_type="int16", access="read_write", scale=0.1, max=10),
            101,
            "range",
        ),
    ],
)
def test_check_client_write_names_the_rule_broken(tag: OpcuaTag | ModbusTag, raw: Any, kind: str) -> None:
    with pytest.raises(WriteRefused) as info:
        check_client_write("m", "t", tag, raw)
    assert (info.value.machine, info.value.tag, info.value.kind) == ("m", "t", kind)


def test_check_client_write_owns_plc_tags_and_accepts_limits_as_they_read_back() -> None:
    ack = OpcuaTag(node_id="s=a", data_type="uint32", access="read_write")
    with pytest.raises(WriteRefused, match="read-only"):
        check_client_write("m", "command_ack", ack, 3)  # the PLC writes it, never a client
    # A limit written by a client arrives rounded to the raw type; it is still the limit.
    scaled = ModbusTag(table="holding_register", address=0, data_type="int16", access="read_write", scale=0.1, max=10)
    assert check_client_write("m", "t", scaled, 100) == pytest.approx(10.0)
    f32 = OpcuaTag(node_id="s=a", data_type="float32", access="read_write", min=0, max=0.1)
    assert check_client_write("m", "t", f32, 0.10000000149011612) == pytest.approx(0.1)  # float32(0.1)
    with pytest.raises(WriteRefused):
        check_client_write("m", "t", f32, 0.1001)


# --------------------------------------------------------------------------- OPC-UA, the demo CNC


def _dv(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


async def test_opcua_refuses_out_of_range_wrong_type_and_read_only_writes(live: Serving) -> None:
    m = live.plant.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    nid = {t: ua.NodeId.from_string(tag.node_id) for t, tag in m.tags.items()}
    async with Client(m.endpoint) as client:
        ua_ = client.uaclient
        # A valid write is taken: the top of the range, read back from the node and the PLC.
        assert (await ua_.write_attributes([nid["program"]], [_dv(9999, ua.VariantType.UInt16)]))[0].is_good()
        program = client.get_node(nid["program"])
        assert await program.read_value() == 9999
        assert plc_value(live, "cnc_1", "program") == 9999
        # Out of range (the map says 0..9999), wrong types, an array, a bad status: refused.
        refusals = [
            (_dv(12000, ua.VariantType.UInt16), "BadOutOfRange"),
            (_dv(7, ua.VariantType.Int32), "BadTypeMismatch"),
            (_dv(7.0, ua.VariantType.Double), "BadTypeMismatch"),
            (_dv("7", ua.VariantType.String), "BadTypeMismatch"),
            (_dv([1, 2], ua.VariantType.UInt16), "BadTypeMismatch"),
            (
                ua.DataValue(ua.Variant(5, ua.VariantType.UInt16), ua.StatusCode(UInt32(StatusCodes.BadDeviceFailure))),
                "BadWriteNotSupported",
            ),
        ]
        for dv, status in refusals:
            result = (await ua_.write_attributes([nid["program"]], [dv]))[0]
            assert result.name == status, (dv, result)
            assert await program.read_value() == 9999
        assert plc_value(live, "cnc_1", "program") == 9999
        # Read-only tags, and those the PLC owns, are read-only to every client.
        for t in ("state", "cycle_count", "door_closed", "command_ack", "command_status", "command_message"):
            node = client.get_node(nid[t])
            level = (await node.read_attribute(AttributeIds.AccessLevel)).Value.Value  # type: ignore[union-attr]
            assert not level & ua.AccessLevel.CurrentWrite.mask, t
            before = await node.read_value()
            dv = ua.DataValue(ua.Variant(before, await node.read_data_type_as_variant_type()))
            result = (await ua_.write_attributes([nid[t]], [dv]))[0]
            assert result.name == "BadNotWritable", (t, result)
            result = (await ua_.write_attributes([nid[t]], [_dv(1.0, ua.VariantType.Double)]))[0]
            assert result.name == "BadNotWritable", (t, result)  # not writable comes first
            assert await node.read_value() == before
        level = (await program.read_attribute(AttributeIds.AccessLevel)).Value.Value  # type: ignore[union-attr]
        assert level & ua.AccessLevel.CurrentWrite.mask


async def test_opcua_answers_each_node_of_a_write_on_its_own(live: Serving) -> None:
    m = live.plant.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    nid = {t: ua.NodeId.from_string(tag.node_id) for t, tag in m.tags.items()}
    executed = commands_executed(live, "cnc_1")
    command_before = plc_value(live, "cnc_1", "command")  # the last command an earlier test sent
    async with Client(m.endpoint) as client:
        command_node_before = await client.get_node(nid["command"]).read_value()
        results = await client.uaclient.write_attributes(
            [nid["program"], nid["state"], nid["command"], nid["program"]],
            [
                _dv(42, ua.VariantType.UInt16),
                _dv(3, ua.VariantType.Int16),
                _dv(99, ua.VariantType.Int16),  # no command has code 99; the map says 0..20
                _dv(10000, ua.VariantType.UInt16),
            ],
        )
        assert [r.name for r in results] == ["Good", "BadNotWritable", "BadOutOfRange", "BadOutOfRange"]
        assert await client.get_node(nid["program"]).read_value() == 42
        assert await client.get_node(nid["command"]).read_value() == command_node_before
    assert plc_value(live, "cnc_1", "program") == 42
    assert plc_value(live, "cnc_1", "command") == command_before
    assert commands_executed(live, "cnc_1") == executed


# --------------------------------------------------------------------------- OPC-UA, a richer tag map


@pytest.fixture
async def opcua_rich(live: Serving) -> AsyncIterator[tuple[OpcuaMachine, OpcuaTwinServer]]:
    """The CNC's map plus a float32 range, a scaled integer and a string, on its own server."""
    m = live.plant.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    tags = dict(m.tags)
    tags["feed"] = OpcuaTag(node_id="ns=2;s=cnc_1.Feed", data_type="float32", access="read_write", min=0, max=0.1)
    tags["trim"] = OpcuaTag(node_id="ns=2;s=cnc_1.Trim", data_type="int16", access="read_write", scale=0.1, max=10)
    tags["label"] = OpcuaTag(node_id="ns=2;s=cnc_1.Label", data_type="string", access="read_write")
    rich = m.model_copy(update={"tags": tags, "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/atelier"})
    server = OpcuaTwinServer(rich.endpoint, [("cnc_1", rich, MachinePlc(live.live, "cnc_1", rich))])
    async with server:
        yield rich, server


async def test_opcua_ranges_of_floats_scaled_integers_and_strings(
    opcua_rich: tuple[OpcuaMachine, OpcuaTwinServer],
) -> None:
    m, _server = opcua_rich
    nid = {t: ua.NodeId.from_string(tag.node_id) for t, tag in m.tags.items()}
    F, I16, S = ua.VariantType.Float, ua.VariantType.Int16, ua.VariantType.String
    cases = [
        ("feed", 0.1, F, "Good"),  # the limit, as a float32 holds it
        ("feed", 0.2, F, "BadOutOfRange"),
        ("feed", -0.01, F, "BadOutOfRange"),
        ("feed", math.nan, F, "BadOutOfRange"),
        ("trim", 100, I16, "Good"),  # 100 * 0.1 = 10.000000000000002: the limit
        ("trim", 101, I16, "BadOutOfRange"),
        ("label", "job 7", S, "Good"),
        ("label", "x" * 5000, S, "BadOutOfRange"),  # longer than a string tag holds
    ]
    async with Client(m.endpoint) as client:
        for tag, value, vtype, status in cases:
            node = client.get_node(nid[tag])
            before = await node.read_value()
            result = (await client.uaclient.write_attributes([nid[tag]], [_dv(value, vtype)]))[0]
            assert result.name == status, (tag, value, result)
            after = await node.read_value()
            if status == "Good":
                assert after == pytest.approx(value) if isinstance(value, float) else after == value
            else:
                assert after == before


# --------------------------------------------------------------------------- Modbus, the demo conveyor


async def test_modbus_refuses_out_of_range_values_and_unwritable_addresses(live: Serving) -> None:
    m = live.plant.machines["conveyor_1"]
    assert isinstance(m, ModbusMachine)
    dev = m.device_id
    client = AsyncModbusTcpClient("127.0.0.1", port=int(m.endpoint.rsplit(":", 1)[1]), retries=0)
    assert await client.connect()
    try:
        setpoint = live.live.read(lambda tw: tw.machine("conveyor_1").belt_setpoint_m_s)
        before = (await client.read_holding_registers(0, count=4, device_id=dev)).registers
        executed = commands_executed(live, "conveyor_1")
        # speed_setpoint: uint16, scale 0.001, 0..0.5 m/s; command 0..20.
        for addr, values, code in [
            (3, [501], 3),  # 0.501 m/s, above the maximum: ILLEGAL DATA VALUE
            (3, [65535], 3),
            (0, [21, 0, 99], 3),  # command out of range: nor is the sequence number written
            (20, [1], 2),  # a register of no tag: ILLEGAL DATA ADDRESS
            (3, [100, 0], 2),  # runs past the last tag
        ]:
            rr = await client.write_registers(addr, values, device_id=dev)
            assert rr.isError() and rr.exception_code == code, (addr, values, rr)
            assert (await client.read_holding_registers(0, count=4, device_id=dev)).registers == before
        rr = await client.write_coil(0, True, device_id=dev)  # the conveyor has no coil at all
        assert rr.isError() and rr.exception_code == 2
        assert commands_executed(live, "conveyor_1") == executed
        assert live.live.read(lambda tw: tw.machine("conveyor_1").belt_setpoint_m_s) == setpoint
        # In range: taken, and the twin's belt follows.
        rr = await client.write_register(3, 500, device_id=dev)
        assert not rr.isError()
        assert (await client.read_holding_registers(3, count=1, device_id=dev)).registers == [500]
        assert plc_value(live, "conveyor_1", "speed_setpoint") == pytest.approx(0.5)
        assert live.live.read(lambda tw: tw.machine("conveyor_1").belt_setpoint_m_s) == pytest.approx(0.5)
    finally:
        client.close()


# --------------------------------------------------------------------------- Modbus, coils and wider types


async def test_modbus_coils_scaled_and_float_registers(live: Serving) -> None:
    m = live.plant.machines["conveyor_1"]
    assert isinstance(m, ModbusMachine)
    tags = dict(m.tags)
    tags["lamp"] = ModbusTag(table="coil", address=0, data_type="bool", access="read_write")
    tags["alarm"] = ModbusTag(table="coil", address=1, data_type="bool")  # a read-only coil
    tags["horn"] = ModbusTag(table="coil", address=5, data_type="bool", access="read_write")
    tags["trim"] = ModbusTag(
        table="holding_register", address=10, data_type="int16", access="read_write", scale=0.1, max=10
    )
    tags["gain"] = ModbusTag(
        table="holding_register", address=12, data_type="float32", access="read_write", min=-1, max=1
    )
    port = free_port()
    rich = m.model_copy(update={"tags": tags, "endpoint": f"modbus+tcp://127.0.0.1:{port}"})
    plc = MachinePlc(live.live, "conveyor_1", rich)
    dev = rich.device_id
    async with ModbusTwinServer(rich.endpoint, [("conveyor_1", rich, plc)]) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
        assert await client.connect()
        try:
            assert not (await client.write_coil(0, True, device_id=dev)).isError()
            assert (await client.read_coils(0, count=1, device_id=dev)).bits[0] is True
            assert plc.values["lamp"] is True
            for addr, bits in [(1, [True]), (3, [True]), (0, [False, True]), (4, [False, True])]:
                rr = await client.write_coils(addr, bits, device_id=dev)
                assert rr.isError() and rr.exception_code == 2, (addr, bits, rr)
            assert (await client.read_coils(0, count=6, device_id=dev)).bits[:6] == [True] + [False] * 5
            assert (plc.values["lamp"], plc.values["alarm"], plc.values["horn"]) == (True, False, False)
            assert not (await client.write_coil(5, True, device_id=dev)).isError()
            assert plc.values["horn"] is True

            assert not (await client.write_register(10, 100, device_id=dev)).isError()  # 10.0, the limit
            rr = await client.write_register(10, 101, device_id=dev)
            assert rr.isError() and rr.exception_code == 3
            assert (await client.read_holding_registers(10, count=1, device_id=dev)).registers == [100]
            f32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
            for value, code in [(2.0, 3), (math.nan, 3), (math.inf, 3), (-1.0, None)]:
                regs = client.convert_to_registers(value, f32)
                rr = await client.write_registers(12, regs, device_id=dev)
                assert (rr.exception_code if rr.isError() else None) == code, (value, rr)
            got = (await client.read_holding_registers(12, count=2, device_id=dev)).registers
            assert client.convert_from_registers(got, f32) == -1.0
            assert plc.values["gain"] == -1.0
            assert server.writes_received > 0
        finally:
            client.close()

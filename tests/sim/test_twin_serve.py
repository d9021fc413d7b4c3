"""The twin as a plant: server values follow the twin's physics and state, bare asyncua and
pymodbus clients (not our agents) see and command it, and ``atelier twin serve`` serves a plant
file for a bounded time."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import yaml
from asyncua import ua
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient
from typer.testing import CliRunner

from plant import load_plant
from plant.config import ModbusMachine, OpcuaMachine
from plant.modbus import ModbusAgent
from plant.packml import Command, State
from plant.testing import on_free_ports
from tests._live import serving


async def test_conveyor_registers_follow_the_belt_and_the_part() -> None:
    live = serving()
    live.reset()
    m = live.plant.machines["conveyor_1"]
    assert isinstance(m, ModbusMachine)
    async with ModbusAgent("conveyor_1", m) as conv:
        await conv.write("speed_setpoint", 0.3)
        await conv.command(Command.RESET)
        await conv.wait_for_state({State.IDLE}, 5)
        assert await conv.read("belt_speed") == 0.0
        await conv.command(Command.START)
        await conv.wait_for_state({State.EXECUTE}, 5)
        await asyncio.sleep(0.1)
        assert await conv.read("belt_speed") == 0.3  # the belt runs at the setpoint written
        # The belt carries the part to its end; the photo-eye ends the cycle.
        st = await conv.wait_for_state({State.COMPLETE}, 20)
        assert st.cycle_count == 1
        values = await conv.read_many(["part_at_end", "belt_speed"])
        assert values == {"part_at_end": True, "belt_speed": 0.0}
    x = live.live.read(lambda tw: tw.part_positions()["part_2"][0])
    assert x > 2.4  # the part really moved in the physics, to the belt's end at 2.6 m


async def test_a_bare_opcua_client_browses_subscribes_and_calls_methods() -> None:
    live = serving()
    live.reset()
    m = live.plant.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    states: list[int] = []
    got = asyncio.Event()

    class Handler:
        def datachange_notification(self, node: Any, val: int, data: Any) -> None:
            states.append(val)
            if val == State.EXECUTE:
                got.set()

    async with Client(m.endpoint) as client:
        idx = await client.get_namespace_index(m.namespace_uri)
        obj = await client.nodes.objects.get_child(f"{idx}:cnc_1")
        names = {(await c.read_browse_name()).Name for c in await obj.get_children()}
        assert {"State", "CycleCount", "FaultText", "DoorClosed", "Start", "Reset", "Hold", "Abort"} <= names
        sub = await client.create_subscription(10, Handler())
        await sub.subscribe_data_change(client.get_node(m.tags["state"].node_id))
        assert await obj.call_method(f"{idx}:Reset") == ""
        await asyncio.sleep(0.3)
        assert await obj.call_method(f"{idx}:Unhold") == "UNHOLD is only accepted in HELD"
        assert await obj.call_method(f"{idx}:Start") == ""
        await asyncio.wait_for(got.wait(), 5)
        spindle = await client.get_node(m.tags["spindle_speed"].node_id).read_value()
        assert spindle == 8000.0  # the twin's spindle turns in Execute
        # Written by a client: command and sequence number, the twin obeys.
        seq = await client.get_node(m.tags["command_ack"].node_id).read_value()
        await client.write_values(
            [client.get_node(m.tags["command"].node_id), client.get_node(m.tags["command_seq"].node_id)],
            [ua.Variant(int(Command.HOLD), ua.VariantType.Int16), ua.Variant(seq + 1, ua.VariantType.UInt32)],
        )
        assert await client.get_node(m.tags["command_ack"].node_id).read_value() == seq + 1
        await sub.delete()
    assert states[0] == State.STOPPED and State.IDLE in states and State.EXECUTE in states
    await asyncio.sleep(0.2)
    assert live.live.read(lambda tw: tw.machine("cnc_1").state) in (State.HOLDING, State.HELD)


async def test_a_bare_modbus_client_reads_the_register_map() -> None:
    live = serving()
    live.reset()
    m = live.plant.machines["conveyor_1"]
    assert isinstance(m, ModbusMachine)
    client = AsyncModbusTcpClient("127.0.0.1", port=int(m.endpoint.rsplit(":", 1)[1]), retries=0)
    assert await client.connect()
    try:
        rr = await client.read_input_registers(0, count=75, device_id=m.device_id)
        assert rr.registers[0] == State.STOPPED
        await client.write_registers(0, [int(Command.RESET), 0, 77], device_id=m.device_id)
        rr = await client.read_input_registers(0, count=75, device_id=m.device_id)
        assert rr.registers[1:3] == [0, 77]  # command_ack, uint32 big-endian words
        assert rr.registers[42] == 1  # command_status: accepted
    finally:
        client.close()


def test_cli_serves_a_plant_file_for_a_bounded_time(tmp_path: Path) -> None:
    from llm_coordinator.cli_twin import twin_app

    plant = on_free_ports(load_plant())
    conv = plant.machines["conveyor_1"]
    small = plant.model_copy(update={"machines": {"conveyor_1": conv}, "recipes": {}})
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(small.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    result: dict[str, Any] = {}

    def run() -> None:
        result["r"] = CliRunner().invoke(twin_app, ["serve", "--plant", str(path), "--seconds", "8", "--speed", "2"])

    thread = threading.Thread(target=run)
    thread.start()
    assert isinstance(conv, ModbusMachine)

    async def drive() -> None:
        agent = ModbusAgent("conveyor_1", conv, connect_timeout_s=1)
        for _ in range(60):
            try:
                await agent.connect()
                break
            except Exception:
                await asyncio.sleep(0.1)
            # The command ended before it served (the reason is in its output).
            assert thread.is_alive(), result["r"].output + repr(result["r"].exception)
        async with agent:
            await agent.command(Command.RESET)
            await agent.wait_for_state({State.IDLE}, 5)

    asyncio.run(drive())
    thread.join(30)
    r = result["r"]
    assert r.exit_code == 0, r.output
    assert "conveyor_1" in r.output and conv.endpoint in r.output
    assert "commands executed: conveyor_1 1" in r.output


def test_cli_refuses_an_unknown_machine() -> None:
    from llm_coordinator.cli_twin import twin_app

    r = CliRunner().invoke(twin_app, ["serve", "--machine", "cnc_9", "--seconds", "1"])
    assert r.exit_code == 2
    assert "no machine named cnc_9" in r.output

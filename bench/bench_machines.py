"""Machine agents against bare asyncua and pymodbus, on the same twin servers, in the same run.

    python bench/bench_machines.py [--n 300] [--repeats 3]

The twin serves the demo cell (plus 100 extra tags on the CNC and on the conveyor, for the
throughput figure) in a child process on free loopback ports. This process then measures,
through the agent (``plant.opcua.OpcuaAgent``, ``plant.modbus.ModbusAgent``) and through the
bare library doing the same protocol work:

- latency of one tag read (``state``);
- latency of one command: write ``command`` + ``command_seq`` in one request, read until
  ``command_ack`` equals the sequence number, with the verdict and status tags (Command.NONE,
  which every machine accepts and which moves nothing);
- throughput of reading 100 tags (one OPC-UA Read of 100 nodes; 100 holding registers);
- subscription notification latency (OPC-UA only; Modbus has no subscriptions): a third
  client acknowledges a command and we time the ``CommandAck`` notification.

Figures are medians over ``--repeats`` alternating runs of ``--n`` operations; the ratio
agent/bare is the figure to watch (aim < 1.2x). The machine is shared, so absolute times vary.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from pymodbus.client import AsyncModbusTcpClient

from plant import load_plant
from plant._agent import COMMAND_TAGS, STATUS_TAGS
from plant.codec import decode_registers, from_raw
from plant.config import ModbusMachine, ModbusTag, OpcuaMachine, OpcuaTag, PlantDescription
from plant.modbus import ModbusAgent
from plant.opcua import OpcuaAgent
from plant.packml import Command
from plant.testing import on_free_ports

N_TAGS = 100


def bench_plant() -> PlantDescription:
    plant = on_free_ports(load_plant())
    cnc, conv = plant.machines["cnc_1"], plant.machines["conveyor_1"]
    assert isinstance(cnc, OpcuaMachine) and isinstance(conv, ModbusMachine)
    ctags = dict(cnc.tags)
    ctags.update(
        {f"bench_{i:03d}": OpcuaTag(node_id=f"ns=2;s=cnc_1.Bench{i:03d}", data_type="float64") for i in range(N_TAGS)}
    )
    mtags = dict(conv.tags)
    mtags.update(
        {
            f"bench_{i:03d}": ModbusTag(table="holding_register", address=100 + i, data_type="int16", scale=0.1)
            for i in range(N_TAGS)
        }
    )
    return plant.model_copy(
        update={
            "machines": {
                "cnc_1": cnc.model_copy(update={"tags": ctags}),
                "conveyor_1": conv.model_copy(update={"tags": mtags}),
            },
            "recipes": {},
        }
    )


def _serve(plant_json: str, ready: Any, stop: Any) -> None:
    from sim.live import LiveTwin
    from sim.serve import ServingThread
    from sim.twin import Twin

    plant = PlantDescription.model_validate_json(plant_json)
    with LiveTwin(Twin(plant)) as live, ServingThread(live, plant):
        ready.set()
        stop.wait()


async def paired(
    n: int, agent_op: Callable[[], Awaitable[Any]], bare_op: Callable[[], Awaitable[Any]]
) -> tuple[float, float]:
    """Median seconds of ``agent_op`` and of ``bare_op``, run alternately so that the load of a
    shared machine falls on both alike."""
    for _ in range(min(20, n)):
        await agent_op()  # warm up
        await bare_op()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(n):
        for op, out in ((agent_op, ta), (bare_op, tb)) if i % 2 else ((bare_op, tb), (agent_op, ta)):
            t = time.perf_counter()
            await op()
            out.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


async def figures(
    agent: OpcuaAgent | ModbusAgent, bare: BareOpcua | BareModbus, n: int
) -> dict[str, tuple[float, float]]:
    """The figures of every protocol, agent against bare: one read, one command, 100 reads."""
    bench_names = [f"bench_{i:03d}" for i in range(N_TAGS)]
    a, b = await paired(n, lambda: agent.read("state"), bare.read_state)
    res = {"read one tag (ms)": (a * 1e3, b * 1e3)}
    a, b = await paired(n // 3, lambda: agent.command(Command.NONE), bare.command)
    res["one command (ms)"] = (a * 1e3, b * 1e3)
    a, b = await paired(n // 3, lambda: agent.read_many(bench_names), bare.read_100)
    res["read 100 tags (tags/s)"] = (N_TAGS / a, N_TAGS / b)
    return res


# --------------------------------------------------------------------------- OPC-UA


class BareOpcua:
    """What a careful user of bare asyncua writes for the same protocol work."""

    def __init__(self, m: OpcuaMachine) -> None:
        self.m = m
        self.client = Client(m.endpoint, timeout=2)
        self.nid = {t: ua.NodeId.from_string(tag.node_id) for t, tag in m.tags.items()}
        self.seq = 0

    async def connect(self) -> None:
        await self.client.connect()
        v = await self.client.uaclient.read_attributes([self.nid["command_ack"]], AttributeIds.Value)
        self.seq = int(v[0].Value.Value) + 1_000_000  # type: ignore[union-attr]

    async def read_state(self) -> int:
        dv = await self.client.uaclient.read_attributes([self.nid["state"]], AttributeIds.Value)
        return int(dv[0].Value.Value)  # type: ignore[union-attr]

    async def read_100(self) -> list[float]:
        nids = [self.nid[f"bench_{i:03d}"] for i in range(N_TAGS)]
        dvs = await self.client.uaclient.read_attributes(nids, AttributeIds.Value)
        return [float(d.Value.Value) for d in dvs]  # type: ignore[union-attr]

    async def command(self) -> None:
        self.seq += 1
        await self.client.uaclient.write_attributes(
            [self.nid["command"], self.nid["command_seq"]],
            [
                ua.DataValue(ua.Variant(0, ua.VariantType.Int16)),
                ua.DataValue(ua.Variant(self.seq, ua.VariantType.UInt32)),
            ],
            AttributeIds.Value,
        )
        names = [t for t in dict.fromkeys((*STATUS_TAGS, *COMMAND_TAGS)) if t in self.m.tags]
        while True:
            dvs = await self.client.uaclient.read_attributes([self.nid[t] for t in names], AttributeIds.Value)
            v = dict(zip(names, (d.Value.Value for d in dvs), strict=True))  # type: ignore[union-attr]
            if v["command_ack"] == self.seq:
                assert v["command_status"] == 1
                return


async def bench_opcua(m: OpcuaMachine, n: int) -> dict[str, tuple[float, float]]:
    agent = OpcuaAgent("cnc_1", m)
    bare = BareOpcua(m)
    await agent.connect()
    await bare.connect()
    try:
        res = await figures(agent, bare, n)
        res["notification (ms)"] = await notification_latency(m, agent, n // 3)
    finally:
        await agent.disconnect()
        await bare.client.disconnect()
    return res


async def notification_latency(m: OpcuaMachine, agent: OpcuaAgent, n: int) -> tuple[float, float]:
    """A third client acknowledges commands; time until the agent / a bare subscription sees it."""
    trigger = BareOpcua(m)
    await trigger.connect()
    seen = {"bare": asyncio.Event(), "agent": asyncio.Event()}
    at: dict[str, float] = {}

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            at["bare"] = time.perf_counter()
            seen["bare"].set()

    # Time stamp where the agent's own handler lands (its waits wake from there).
    notified = agent._notified

    def stamp(tag: str, value: Any) -> None:
        notified(tag, value)
        if tag == "command_ack":
            at["agent"] = time.perf_counter()
            seen["agent"].set()

    agent._notified = stamp  # type: ignore[method-assign]

    bare = Client(m.endpoint, timeout=2)
    await bare.connect()
    sub = await bare.create_subscription(agent.publishing_interval_ms, Handler())
    await sub.subscribe_data_change([bare.get_node(m.tags["command_ack"].node_id)])
    t_agent, t_bare = [], []
    try:
        for _ in range(n):
            await asyncio.sleep(0.002)
            seen["agent"].clear()
            seen["bare"].clear()
            t0 = time.perf_counter()
            await trigger.command()
            await seen["agent"].wait()
            await seen["bare"].wait()
            t_agent.append(at["agent"] - t0)
            t_bare.append(at["bare"] - t0)
    finally:
        agent._notified = notified  # type: ignore[method-assign]
        await sub.delete()
        await bare.disconnect()
        await trigger.client.disconnect()
    return statistics.median(t_agent) * 1e3, statistics.median(t_bare) * 1e3


# --------------------------------------------------------------------------- Modbus


class BareModbus:
    def __init__(self, m: ModbusMachine) -> None:
        self.m = m
        self.client = AsyncModbusTcpClient("127.0.0.1", port=int(m.endpoint.rsplit(":", 1)[1]), retries=0, timeout=2)
        self.seq = 2_000_000
        self.tags = m.tags

    async def connect(self) -> None:
        await self.client.connect()

    async def read_state(self) -> int:
        rr = await self.client.read_input_registers(0, count=1, device_id=self.m.device_id)
        return int(self.client.convert_from_registers(rr.registers, self.client.DATATYPE.INT16))  # type: ignore[arg-type]

    async def read_100(self) -> list[float]:
        rr = await self.client.read_holding_registers(100, count=N_TAGS, device_id=self.m.device_id)
        dt = self.client.DATATYPE.INT16
        return [
            float(self.client.convert_from_registers(rr.registers[i : i + 1], dt)) * 0.1  # type: ignore[arg-type]
            for i in range(N_TAGS)
        ]

    async def command(self) -> None:
        self.seq += 1
        seq_regs = self.client.convert_to_registers(self.seq, self.client.DATATYPE.UINT32)
        await self.client.write_registers(0, [0, *seq_regs], device_id=self.m.device_id)
        while True:
            # The same reads as the agent: holding 0..2 (command, seq), input 0..74.
            await self.client.read_holding_registers(0, count=3, device_id=self.m.device_id)
            rr = await self.client.read_input_registers(0, count=75, device_id=self.m.device_id)
            ir = rr.registers
            tags = self.tags
            values = {
                t: from_raw(tag, decode_registers(tag, list(ir[tag.address : tag.address + tag.register_count])))
                for t, tag in tags.items()
                if tag.table == "input_register"
            }
            if values["command_ack"] == self.seq:
                return


async def bench_modbus(m: ModbusMachine, n: int) -> dict[str, tuple[float, float]]:
    agent = ModbusAgent("conveyor_1", m)
    bare = BareModbus(m)
    await agent.connect()
    await bare.connect()
    try:
        return await figures(agent, bare, n)
    finally:
        await agent.disconnect()
        bare.client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="operations per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    plant = bench_plant()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(plant.model_dump_json(), ready, stop), daemon=True)
    proc.start()
    try:
        if not ready.wait(120):
            raise SystemExit("the twin servers did not start")
        cnc, conv = plant.machines["cnc_1"], plant.machines["conveyor_1"]
        assert isinstance(cnc, OpcuaMachine) and isinstance(conv, ModbusMachine)
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {"OPC-UA": [], "Modbus TCP": []}
        for _ in range(args.repeats):
            runs["OPC-UA"].append(asyncio.run(bench_opcua(cnc, args.n)))
            runs["Modbus TCP"].append(asyncio.run(bench_modbus(conv, args.n)))
    finally:
        stop.set()
        proc.join(15)
    print(f"machine agents vs bare libraries, median of {args.repeats} runs of {args.n} operations\n")
    print(f"{'protocol':<11} {'figure':<24} {'agent':>10} {'bare':>10} {'agent/bare':>11}")
    for proto, rs in runs.items():
        for key in rs[0]:
            a = statistics.median(r[key][0] for r in rs)
            b = statistics.median(r[key][1] for r in rs)
            # Time ratio: for a rate, bare/agent; for a latency, agent/bare.
            ratio = b / a if "/s" in key else a / b
            print(f"{proto:<11} {key:<24} {a:>10.3f} {b:>10.3f} {ratio:>10.2f}x")
    print("\nModbus TCP has no subscriptions: the agent's waits poll once per PLC scan (20 ms).")


if __name__ == "__main__":
    main()

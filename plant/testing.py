"""Helpers for tests of machine agents, and the conformance check every backend must pass.

Tests and other packages may import this module; production code does not.
"""

from __future__ import annotations

import socket

from plant.config import ModbusMachine, OpcuaMachine, PlantDescription
from plant.interface import CommandRejected, MachineAgent, MachineStatus, TagError
from plant.packml import Command, State


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


# --------------------------------------------------------------------------- conformance


async def _to_stopped(agent: MachineAgent, timeout_s: float) -> MachineStatus:
    st = await agent.status()
    if st.state in (State.ABORTING, State.ABORTED):
        await agent.wait_for_state({State.ABORTED}, timeout_s)
        await agent.command(Command.CLEAR)
    elif st.state not in (State.STOPPED, State.STOPPING):
        await agent.command(Command.STOP)
    return await agent.wait_for_state({State.STOPPED}, timeout_s)


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


async def check_machine(agent: MachineAgent, timeout_s: float = 10.0) -> None:
    """Check that ``agent`` behaves as every machine agent must; raise AssertionError saying
    what does not. The agent must be connected; the machine is left Stopped.

    Drives the machine through Stop, Reset, Start, Hold, Unhold and Stop, so run it on a twin
    or a machine that may move. Checks: the status snapshot, acknowledged sequence numbers,
    illegal commands refused with the machine's reason and no state change, tag refusals
    (unknown tag, read-only, wrong type) naming the tag, reads agreeing with the status, and
    waits that time out naming the state they saw.
    """
    _expect(isinstance(agent, MachineAgent), f"{agent!r} does not implement MachineAgent")
    name = agent.name
    st = await _to_stopped(agent, timeout_s)
    _expect(isinstance(st, MachineStatus) and st.state == State.STOPPED, f"{name}: not Stopped: {st}")
    ack0 = st.command_ack

    st = await agent.command(Command.RESET)
    _expect(st.command_ack != ack0, f"{name}: command_ack did not move after RESET ({ack0})")
    _expect(st.state in (State.RESETTING, State.IDLE), f"{name}: RESET left the state {st.state.name}")
    st = await agent.wait_for_state({State.IDLE}, timeout_s)

    try:
        await agent.command(Command.UNHOLD)
    except CommandRejected as exc:
        _expect(exc.machine == name and exc.command == Command.UNHOLD, f"{name}: rejection names {exc.machine}")
        _expect("HELD" in exc.reason, f"{name}: the refusal does not give the machine's reason: {exc.reason!r}")
    else:
        raise AssertionError(f"{name}: UNHOLD in IDLE was not refused")
    st2 = await agent.status()
    _expect(st2.state == State.IDLE, f"{name}: a refused command changed the state to {st2.state.name}")
    _expect(st2.command_ack != st.command_ack, f"{name}: a refused command was not acknowledged")

    # Tags: refused before anything is sent, naming the tag.
    for tag, value, reason in (("no_such_tag", 1, "no such tag"), ("state", 6, "read-only")):
        try:
            await agent.write(tag, value)
        except TagError as exc:
            _expect(exc.tag == tag and reason in exc.reason, f"{name}: write {tag}: {exc}")
        else:
            raise AssertionError(f"{name}: writing {tag!r} was not refused")
    try:
        await agent.read("no_such_tag")
    except TagError as exc:
        _expect(exc.tag == "no_such_tag", f"{name}: {exc}")
    else:
        raise AssertionError(f"{name}: reading an unknown tag was not refused")
    values = await agent.read_many(["state", "cycle_count", "fault_text"])
    _expect(set(values) == {"state", "cycle_count", "fault_text"}, f"{name}: read_many gave {sorted(values)}")
    _expect(values["state"] == int(State.IDLE), f"{name}: state tag reads {values['state']!r}, status says IDLE")
    _expect(isinstance(values["fault_text"], str), f"{name}: fault_text is not text")
    _expect(await agent.read("cycle_count") == st.cycle_count, f"{name}: cycle_count read disagrees with status")

    # A wait that cannot be met names what it saw.
    try:
        await agent.wait_for_state({State.HELD}, 0.2)
    except TimeoutError as exc:
        _expect("IDLE" in str(exc), f"{name}: the timeout does not name the state: {exc}")
    else:
        raise AssertionError(f"{name}: wait_for_state(HELD) returned in IDLE")

    # Run, hold, unhold, stop.
    await agent.command(Command.START)
    await agent.wait_for_state({State.EXECUTE}, timeout_s)
    await agent.command(Command.HOLD)
    await agent.wait_for_state({State.HELD}, timeout_s)
    await agent.command(Command.UNHOLD)
    await agent.wait_for_state({State.EXECUTE, State.COMPLETING, State.COMPLETE}, timeout_s)
    await agent.command(Command.STOP)
    st = await agent.wait_for_state({State.STOPPED}, timeout_s)
    _expect(st.fault_code == 0, f"{name}: fault {st.fault_code} {st.fault_text!r} after a clean run")

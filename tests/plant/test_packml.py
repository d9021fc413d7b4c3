"""The PackML state model: legal paths, refusals with reasons, interlocks, counters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plant.packml import ACTING_TIME_S, DOOR_TIME_S, Command, CommandRefused, MachineStateModel, State


def settle(m: MachineStateModel, seconds: float = ACTING_TIME_S + 0.05) -> None:
    t = 0.0
    while t < seconds:
        m.tick(0.01)
        t += 0.01


def test_full_cycle_counts_once() -> None:
    m = MachineStateModel(cycle_time_s=1.0, has_door=True)
    m.command(Command.RESET)
    settle(m)
    assert m.state == State.IDLE
    m.command(Command.START)
    settle(m)
    assert m.state == State.EXECUTE
    settle(m, 1.0 + ACTING_TIME_S + 0.1)
    assert m.state == State.COMPLETE
    assert (m.cycle_count, m.part_count) == (1, 1)


def test_start_refused_with_open_door() -> None:
    m = MachineStateModel(cycle_time_s=1.0, has_door=True)
    m.command(Command.RESET)
    settle(m)
    m.command(Command.OPEN_DOOR)
    settle(m, DOOR_TIME_S + 0.05)
    with pytest.raises(CommandRefused, match="door is open"):
        m.command(Command.START)
    assert m.state == State.IDLE


def test_a_moving_door_is_neither_closed_nor_open() -> None:
    m = MachineStateModel(cycle_time_s=1.0, has_door=True)
    assert (m.door_closed, m.door_open) == (True, False)
    m.command(Command.OPEN_DOOR)
    assert (m.door_closed, m.door_open) == (False, False)  # started: no longer closed, not yet open
    settle(m, DOOR_TIME_S / 2)
    assert (m.door_closed, m.door_open) == (False, False)
    settle(m, DOOR_TIME_S / 2 + 0.05)
    assert (m.door_closed, m.door_open) == (False, True)
    m.command(Command.CLOSE_DOOR)
    assert (m.door_closed, m.door_open) == (False, False)
    settle(m, DOOR_TIME_S + 0.05)
    assert (m.door_closed, m.door_open) == (True, False)
    assert MachineStateModel(cycle_time_s=1.0).door_open is False  # no door


def test_door_refused_while_running() -> None:
    m = MachineStateModel(cycle_time_s=5.0, has_door=True)
    m.command(Command.RESET)
    settle(m)
    m.command(Command.START)
    settle(m)
    with pytest.raises(CommandRefused, match="running"):
        m.command(Command.OPEN_DOOR)
    assert m.door_closed


def test_hold_and_unhold_pause_the_cycle() -> None:
    m = MachineStateModel(cycle_time_s=1.0)
    m.command(Command.RESET)
    settle(m)
    m.command(Command.START)
    settle(m)
    m.command(Command.HOLD)
    settle(m, 3.0)
    assert m.state == State.HELD and m.cycle_count == 0
    m.command(Command.UNHOLD)
    settle(m, 2.0)
    assert m.state == State.COMPLETE and m.cycle_count == 1


def test_external_cycle_times_out_into_fault() -> None:
    m = MachineStateModel(cycle_time_s=0.5, cycle_ends_externally=True)
    m.command(Command.RESET)
    settle(m)
    m.command(Command.START)
    settle(m, 1.5)
    assert m.state == State.ABORTED
    assert m.fault_code == 102 and "did not finish" in m.fault_text
    with pytest.raises(CommandRefused, match="only accepted in"):
        m.command(Command.RESET)
    m.command(Command.CLEAR)
    settle(m)
    m.command(Command.RESET)
    settle(m)
    assert m.state == State.IDLE and m.fault_code == 0


def test_unknown_code_refused() -> None:
    m = MachineStateModel(cycle_time_s=1.0)
    with pytest.raises(CommandRefused, match="not a command code"):
        m.command(99)


@given(st.lists(st.sampled_from(list(Command)), max_size=30), st.lists(st.floats(0, 2), max_size=30))
def test_any_command_sequence_keeps_invariants(cmds: list[Command], waits: list[float]) -> None:
    m = MachineStateModel(cycle_time_s=0.5, has_door=True)
    for i, cmd in enumerate(cmds):
        before = m.state
        try:
            m.command(cmd)
        except CommandRefused as exc:
            assert m.state == before and exc.reason
        settle(m, waits[i] if i < len(waits) else 0.0)
        # The interlock: never running with the door open.
        if m.state == State.EXECUTE:
            assert m.door_closed
        assert m.cycle_count == m.part_count

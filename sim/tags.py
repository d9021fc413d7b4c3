"""What each standard tag means on a twin machine: where its value comes from, what a write does.

Shared by the twin's PLCs (``sim.serve``) and the in-process agent (``sim.agents``), so a tag
reads the same whichever way the twin is reached. A tag of a machine's map that is not listed
here is plain PLC memory: it holds what was last written (``program``, for example).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from plant.codec import CodecError, default_raw, from_raw, to_raw
from plant.commands import custom_commands
from plant.config import ModbusMachine, OpcuaMachine, TagBase
from plant.interface import TagValue
from sim.twin import TwinMachine

#: Tags the twin drives, by their standard names: the engineering value from the twin machine.
#: A tag of the map that is not listed here is plain PLC memory (it keeps what was written).
TWIN_VALUES: dict[str, Callable[[TwinMachine], TagValue]] = {
    "state": lambda tm: int(tm.state),
    "cycle_count": lambda tm: tm.state_model.cycle_count,
    "part_count": lambda tm: tm.state_model.part_count,
    "fault_code": lambda tm: tm.state_model.fault_code,
    "fault_text": lambda tm: tm.state_model.fault_text,
    "door_closed": lambda tm: tm.state_model.door_closed,
    "door_open": lambda tm: tm.state_model.door_open,
    "belt_speed": lambda tm: tm.belt_speed_m_s,
    "speed_setpoint": lambda tm: tm.belt_setpoint_m_s,
    "part_at_end": lambda tm: tm.part_at_end(),
    "spindle_speed": lambda tm: tm.spindle_speed_rpm,
    "result": lambda tm: tm.inspection_result,
    "defect": lambda tm: tm.defect_code,
    "confidence": lambda tm: tm.confidence,
}


def twin_getters(machine: OpcuaMachine | ModbusMachine) -> dict[str, Callable[[TwinMachine], TagValue]]:
    """The tags of ``machine``'s map the twin drives: the standard ones (:data:`TWIN_VALUES`)
    and the counters its declared commands increment (``increments``)."""
    out = {t: TWIN_VALUES[t] for t in machine.tags if t in TWIN_VALUES}
    for spec in custom_commands(machine).values():
        for t in spec.increments:
            if t in machine.tags and t not in out:
                out[t] = functools.partial(_counter, name=t)
    return out


def _counter(tm: TwinMachine, name: str) -> int:
    """A counter the twin's PLC keeps for a declared command (``increments``)."""
    return int(tm.state_model.counters.get(name, 0))


def set_belt_setpoint(tm: TwinMachine, value: TagValue) -> None:
    if isinstance(value, bool | str):
        raise TypeError("a belt speed is a number")
    tm.belt_setpoint_m_s = float(value)


#: Writable tags that act on the twin (a setpoint), by their standard names.
TWIN_SETTERS: dict[str, Callable[[TwinMachine, TagValue], None]] = {"speed_setpoint": set_belt_setpoint}

#: Tags only the PLC writes: a client never sets them.
PLC_OWNED = frozenset({"command_ack", "command_status", "command_message"})


def fit(tag: TagBase, value: TagValue) -> TagValue:
    """``value`` as the tag will read it back: typed, scaled and rounded to the raw type."""
    try:
        return from_raw(tag, to_raw(tag, value))
    except CodecError:
        # The twin produced something the tag cannot hold (a counter past 65535 in a uint16):
        # publish the default rather than fail the scan.
        return from_raw(tag, default_raw(tag))

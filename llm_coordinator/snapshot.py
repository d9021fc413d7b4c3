"""The plant's state as the coordinator last read it: one snapshot that the model's context,
the interlock guardrails, the executor's recovery and the console all read.

:func:`read_snapshot` reads every machine once through its agent; robots are as the caller saw
them. Text in a snapshot (fault texts, string tags) comes from machines: it is data, never an
instruction, and is fenced wherever it is shown to a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from plant.interface import MachineAgent, MachineError, TagValue
from plant.packml import State


@dataclass(frozen=True)
class MachineSnapshot:
    """A machine's state as last read (``fault_text`` and string ``extra`` tags are outside text)."""

    state: str
    door_closed: bool | None = None
    fault_code: int = 0
    fault_text: str = ""
    extra: Mapping[str, TagValue] = field(default_factory=dict)
    reachable: bool = True
    #: Why the machine is in alarm (a reading its tag map declares impossible: the tag, the raw
    #: value and the declared range, in our words); empty when it is not. An agent commands a
    #: machine in alarm with nothing but STOP and ABORT.
    alarms: tuple[str, ...] = ()

    @property
    def in_alarm(self) -> bool:
        return bool(self.alarms)


@dataclass(frozen=True)
class RobotSnapshot:
    """A robot's state as last seen by the coordinator (``at``: the named location it is at)."""

    busy: bool = False
    at: str | None = None
    safety: str = "ok"


@dataclass(frozen=True)
class PlantSnapshot:
    """The dynamic state the context and the interlock guardrails read."""

    machines: Mapping[str, MachineSnapshot] = field(default_factory=dict)
    robots: Mapping[str, RobotSnapshot] = field(default_factory=dict)
    alarms: Sequence[str] = ()
    #: Where each part is (name -> position, m), when the plant can say (a twin can; most real
    #: cells cannot: None). An order whose picks would find no part is refused with where they are.
    parts: Mapping[str, tuple[float, float, float]] | None = None


async def read_snapshot(machines: Mapping[str, MachineAgent]) -> PlantSnapshot:
    """Read every machine's status once (an unreachable machine is recorded, not raised). A
    machine in alarm is marked (:attr:`MachineSnapshot.alarms`) and each alarm is listed in
    :attr:`PlantSnapshot.alarms` as ``"<machine>: alarm: <reason>"``."""
    out: dict[str, MachineSnapshot] = {}
    alarms: list[str] = []
    for name, agent in machines.items():
        try:
            st = await agent.status()
        except (MachineError, TimeoutError, OSError) as exc:
            out[name] = MachineSnapshot(state="UNREACHABLE", reachable=False, fault_text=str(exc))
            alarms.append(f"{name}: unreachable")
            continue
        out[name] = MachineSnapshot(
            state=State(st.state).name,
            door_closed=st.door_closed,
            fault_code=st.fault_code,
            fault_text=st.fault_text,
            extra=dict(st.extra),
            alarms=tuple(a.reason for a in st.alarms),
        )
        if st.fault_code:
            alarms.append(f"{name}: fault {st.fault_code}")
        alarms.extend(f"{name}: alarm: {a.reason}" for a in st.alarms)
    return PlantSnapshot(machines=out, alarms=alarms)

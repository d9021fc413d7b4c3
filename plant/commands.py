"""Machine commands: the standard PackML ones, the built-in ones, and the ones a plant file declares.

Every machine takes the standard PackML commands (``start``, ``stop``, ``hold``, ``unhold``,
``suspend``, ``unsuspend``, ``reset``, ``abort``, ``clear``; codes of
:class:`plant.packml.Command`) and the built-in ones that apply to it: ``open_door`` and
``close_door`` (a machine that ``has_door``), ``run_cycle`` (every machine; optional int
``program`` written to the tag ``program`` when the machine has one), ``inspect`` (kind
``inspection``) and ``feed`` (kind ``conveyor``). A machine may declare more under
``commands:`` in the plant file::

    machines:
      pump_1:
        kind: dosing_pump                # an open name
        tags:
          state:   {node_id: "ns=2;s=pump_1.State", data_type: int16}
          command: {node_id: "ns=2;s=pump_1.Command", data_type: int16, access: read_write, min: 0, max: 20}
          volume_setpoint: {node_id: "ns=2;s=pump_1.Volume", data_type: float32, access: read_write, unit: ml}
          layer_count: {node_id: "ns=2;s=pump_1.Layers", data_type: uint32}
        commands:
          dose:
            description: dose a volume of liquid into the container under the nozzle
            args:
              volume: {type: float, unit: l, min: 0.1, max: 5.0, description: volume to dose}
            writes: {volume_setpoint: "{volume}"}  # 0.5 l is written as 500 (ml, the tag's unit)
            code: 2                  # written to the command tag (default 2, PackML Start)
            from_states: [idle]      # PackML states it may start from (default [idle])
            completes: cycle         # cycle | immediate | state:<name> | door_open | door_closed
            duration_s: 6.0          # expected duration (default the machine's cycle_time_s)
            increments: [layer_count]  # counters the twin's PLC adds 1 to on completion

Arguments are ``float`` or ``int`` (optional ``unit``, a pint unit string, and ``min``/``max``
in that unit) or ``str`` with ``choices`` (written as text to a string tag, or as the tag's
named ``values`` to an integer tag); an argument with a ``default`` is optional. ``writes``
maps a tag to ``"{arg}"`` (converted from the argument's unit to the tag's ``unit``) or to a
constant. The loader checks all of it (:func:`check_commands`) and names the YAML path of
each problem.

:func:`machine_commands` lists what a machine takes; :func:`perform` carries any of them out on
a :class:`~plant.interface.MachineAgent` and raises :class:`CommandFailed` with a reason for a
person. ``PlantDescription.agent_skills``/``skill_spec`` read the same table.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from plant.codec import INT_RANGES, check_write
from plant.config import CommandDecl, TagBase
from plant.interface import MachineAgent, MachineError, MachineStatus, TagError, TagValue
from plant.packml import RUNNING, STOPPABLE, Command, CustomCommand, State
from plant.skills import SKILLS, ArgSpec, SkillSpec

if TYPE_CHECKING:
    import pint

    from plant.config import ModbusMachine, OpcuaMachine

    MachineConfig = OpcuaMachine | ModbusMachine

__all__ = [
    "BUILTIN_COMMANDS",
    "STANDARD_COMMANDS",
    "CommandFailed",
    "CommandSpec",
    "arg_problem",
    "check_commands",
    "convert_units",
    "custom_commands",
    "machine_commands",
    "perform",
    "wait_until",
]

#: How often a door position is polled (s): doors take about a second to move.
DOOR_POLL_S = 0.05

Kind = Literal["standard", "builtin", "declared"]


class CommandFailed(Exception):
    """A command did not achieve its purpose; ``reason`` says why (machine, command, cause)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class CommandSpec:
    """One command of one machine, resolved: what is written, from which states, when it is done.

    ``done_states`` are the PackML states that end a ``state:`` completion (several for
    ``start``: a short cycle may be past Execute when it is looked at). ``from_states`` None
    means any state. ``interlock`` commands make the machine move: refused with the door open.
    ``reset_first``: from Complete or Stopped the machine is reset to Idle first (a cycle).
    """

    name: str
    kind: Kind
    description: str
    code: int
    args: dict[str, ArgSpec] = field(default_factory=dict)
    writes: dict[str, bool | int | float | str] = field(default_factory=dict)
    from_states: frozenset[State] | None = frozenset({State.IDLE})
    completes: str = "cycle"
    done_states: frozenset[State] = frozenset()
    duration_s: float = 1.0
    increments: tuple[str, ...] = ()
    interlock: bool = False
    reset_first: bool = False

    def skill_spec(self) -> SkillSpec:
        """This command as a skill of the plan vocabulary (arguments, nominal duration)."""
        nominal = self.duration_s + (1.0 if self.completes == "cycle" and self.name not in ("feed", "inspect") else 0.0)
        return SkillSpec("machine", self.description, dict(self.args), nominal_duration_s=nominal)


def _state_set(names: list[str] | tuple[str, ...]) -> frozenset[State]:
    return frozenset(State[n.upper()] for n in names)


_RUN_DONE = frozenset({State.EXECUTE, State.COMPLETING, State.COMPLETE})

#: The PackML commands every machine takes: name -> (code, from states, done states, interlock).
_STANDARD: dict[str, tuple[Command, frozenset[State] | None, frozenset[State], bool]] = {
    "start": (Command.START, frozenset({State.IDLE}), _RUN_DONE, True),
    "stop": (Command.STOP, STOPPABLE, frozenset({State.STOPPED}), False),
    "hold": (Command.HOLD, frozenset({State.EXECUTE}), frozenset({State.HELD}), False),
    "unhold": (Command.UNHOLD, frozenset({State.HELD}), _RUN_DONE, True),
    "suspend": (Command.SUSPEND, frozenset({State.EXECUTE}), frozenset({State.SUSPENDED}), False),
    "unsuspend": (Command.UNSUSPEND, frozenset({State.SUSPENDED}), _RUN_DONE, True),
    "abort": (Command.ABORT, frozenset(State) - {State.ABORTING, State.ABORTED}, frozenset({State.ABORTED}), False),
    "clear": (Command.CLEAR, frozenset({State.ABORTED}), frozenset({State.STOPPED}), False),
    # Reset brings the machine to Idle from wherever it is (clear, stop, reset as needed).
    "reset": (Command.RESET, None, frozenset({State.IDLE}), False),
}
STANDARD_COMMANDS = tuple(_STANDARD)
#: Commands that are done, with nothing sent, when the machine is already where they lead.
_IDEMPOTENT = frozenset({"stop", "hold", "suspend", "abort"})
BUILTIN_COMMANDS = ("open_door", "close_door", "run_cycle", "inspect", "feed")
_RESERVED = frozenset(STANDARD_COMMANDS) | frozenset(BUILTIN_COMMANDS)
_CYCLE_END = frozenset({State.COMPLETE, State.ABORTED, State.STOPPED, State.IDLE})


def machine_commands(machine: MachineConfig) -> dict[str, CommandSpec]:
    """Every command ``machine`` takes, by name: standard, built-in where it applies, declared."""
    out: dict[str, CommandSpec] = {}
    for name, (code, from_states, done, interlock) in _STANDARD.items():
        out[name] = CommandSpec(
            name,
            "standard",
            SKILLS[name].description,
            int(code),
            from_states=from_states,
            completes="state:" + min(done).name.lower() if len(done) == 1 else "state:execute",
            done_states=done,
            duration_s=SKILLS[name].nominal_duration_s,
            interlock=interlock,
        )
    if machine.has_door:
        for name, code, completes in (
            ("open_door", Command.OPEN_DOOR, "door_open"),
            ("close_door", Command.CLOSE_DOOR, "door_closed"),
        ):
            out[name] = CommandSpec(
                name,
                "builtin",
                SKILLS[name].description,
                int(code),
                from_states=None if name == "close_door" else frozenset(State) - RUNNING,
                completes=completes,
                duration_s=SKILLS[name].nominal_duration_s,
            )
    cycle = {"from_states": frozenset({State.IDLE}), "interlock": True, "reset_first": True}
    out["run_cycle"] = CommandSpec(
        "run_cycle",
        "builtin",
        SKILLS["run_cycle"].description,
        int(Command.START),
        args=dict(SKILLS["run_cycle"].args),
        writes={"program": "{program}"} if "program" in machine.tags else {},
        duration_s=machine.cycle_time_s,
        **cycle,  # type: ignore[arg-type]
    )
    for name, kind in (("inspect", "inspection"), ("feed", "conveyor")):
        if machine.kind == kind:
            out[name] = CommandSpec(
                name,
                "builtin",
                SKILLS[name].description,
                int(Command.START),
                duration_s=SKILLS[name].nominal_duration_s,
                **cycle,  # type: ignore[arg-type]
            )
    for name, decl in machine.commands.items():
        if name in _RESERVED:
            continue  # refused by the loader (check_commands)
        out[name] = _declared(machine, name, decl)
    return out


def _declared(machine: MachineConfig, name: str, decl: CommandDecl) -> CommandSpec:
    args = {
        a: ArgSpec(
            spec.type,
            required=spec.default is None,
            min=spec.min,
            max=spec.max,
            description=spec.description,
            unit=spec.unit,
            choices=tuple(spec.choices) if spec.choices is not None else None,
        )
        for a, spec in decl.args.items()
    }
    from_states = _state_set(decl.from_states)
    done: frozenset[State] = frozenset()
    if decl.completes.startswith("state:"):
        done = _state_set([decl.completes[len("state:") :]])
    running = decl.completes == "cycle" or bool(done & RUNNING)
    return CommandSpec(
        name,
        "declared",
        decl.description or f"{name} ({machine.kind})",
        decl.code,
        args=args,
        writes=dict(decl.writes),
        from_states=from_states,
        completes=decl.completes,
        done_states=done,
        duration_s=decl.duration_s if decl.duration_s is not None else machine.cycle_time_s,
        increments=tuple(decl.increments),
        interlock=running,
        reset_first=decl.completes == "cycle" and State.IDLE in from_states,
    )


def custom_commands(machine: MachineConfig) -> dict[int, CustomCommand]:
    """The declared commands as the twin's state model runs them, by code."""
    out: dict[int, CustomCommand] = {}
    for spec in machine_commands(machine).values():
        if spec.kind == "declared":
            out[spec.code] = CustomCommand(
                spec.code,
                spec.name,
                spec.from_states if spec.from_states is not None else frozenset(State),
                spec.duration_s,
                spec.increments,
            )
    return out


# --------------------------------------------------------------------------- units


@functools.cache
def _ureg() -> pint.UnitRegistry:  # type: ignore[type-arg]
    import pint

    return pint.UnitRegistry()


def unit_problem(unit: str) -> str | None:
    """Why ``unit`` is not a unit pint knows, or None."""
    try:
        _ureg().Unit(unit)
    except Exception as exc:  # pint raises several kinds (UndefinedUnitError, parse errors)
        return f"unknown unit {unit!r} ({type(exc).__name__})"
    return None


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (pint); either "" leaves it as is."""
    if not from_unit or not to_unit:
        return float(value)
    q = _ureg().Quantity(value, from_unit)
    return float(q.to(to_unit).magnitude)


def _convertible(from_unit: str, to_unit: str) -> str | None:
    try:
        convert_units(1.0, from_unit, to_unit)
    except Exception:
        return f"an argument in {from_unit} cannot be written to a tag in {to_unit} (different dimensions)"
    return None


# --------------------------------------------------------------------------- load-time checks

PathT = tuple[str | int, ...]


def _template(value: object) -> str | None:
    if isinstance(value, str) and len(value) > 2 and value.startswith("{") and value.endswith("}"):
        return value[1:-1]
    return None


#: Tags a declared command may not write: the handshake's.
_HANDSHAKE = frozenset({"state", "command", "command_seq", "command_ack", "command_status", "command_message"})


def check_commands(name: str, machine: MachineConfig) -> list[tuple[PathT, str]]:
    """What is wrong with the commands ``machine`` declares, as (YAML path, reason) pairs."""
    bad: list[tuple[PathT, str]] = []
    tags: Mapping[str, TagBase] = machine.tags
    command_tag = tags.get("command")
    codes: dict[int, str] = {}
    for cname, decl in machine.commands.items():
        here: PathT = ("machines", name, "commands", cname)
        if cname in _RESERVED:
            bad.append((here, f"{cname!r} is a standard command of every machine; give this one another name"))
            continue
        # The code.
        if decl.code in codes:
            bad.append(((*here, "code"), f"code {decl.code} is also the code of command {codes[decl.code]!r}"))
        codes.setdefault(decl.code, cname)
        if decl.code != Command.START and decl.code in {int(c) for c in Command}:
            bad.append(
                ((*here, "code"), f"code {decl.code} is PackML {Command(decl.code).name}; use 2 (Start) or a free code")
            )
        if command_tag is not None:
            lo, hi = INT_RANGES.get(command_tag.data_type, (-(2**63), 2**63))
            if command_tag.min is not None:
                lo = max(lo, math.ceil(command_tag.min))
            if command_tag.max is not None:
                hi = min(hi, math.floor(command_tag.max))
            if not lo <= decl.code <= hi:
                bad.append(((*here, "code"), f"code {decl.code} does not fit the command tag ({lo}..{hi})"))
        # Arguments.
        for aname, arg in decl.args.items():
            if arg.unit and (why := unit_problem(arg.unit)):
                bad.append(((*here, "args", aname, "unit"), why))
            if arg.default is not None:
                why = arg_problem(arg, arg.default)
                if why:
                    bad.append(((*here, "args", aname, "default"), why))
        # Writes.
        for tname, value in decl.writes.items():
            wpath = (*here, "writes", tname)
            tag = tags.get(tname)
            if tag is None:
                bad.append((wpath, f"the machine has no tag {tname!r}"))
                continue
            if tname in _HANDSHAKE:
                bad.append((wpath, f"{tname!r} is written by the command handshake, not by a command's writes"))
                continue
            if not tag.writable:
                bad.append((wpath, f"tag {tname!r} is read-only (access: {tag.access})"))
                continue
            ref = _template(value)
            if ref is None:
                try:
                    check_write(name, tname, tag, value)
                except TagError as exc:
                    bad.append((wpath, f"the constant {value!r} cannot be written: {exc.reason}"))
                continue
            found = decl.args.get(ref)
            if found is None:
                known = ", ".join(decl.args) or "none"
                bad.append((wpath, f"{value} names no argument of this command (arguments: {known})"))
                continue
            arg = found
            if arg.type == "str":
                if tag.data_type == "string":
                    continue
                missing = [c for c in arg.choices or () if c not in (tag.values or {})]
                if missing:
                    bad.append((wpath, f"tag {tname!r} ({tag.data_type}) has no named values for {', '.join(missing)}"))
                continue
            if tag.data_type in ("string", "bool"):
                bad.append((wpath, f"a {arg.type} argument cannot be written to a {tag.data_type} tag"))
                continue
            if arg.unit and not tag.unit:
                bad.append((wpath, f"argument {ref!r} is in {arg.unit} but tag {tname!r} has no unit to convert to"))
            elif arg.unit and tag.unit:
                why = unit_problem(tag.unit) or _convertible(arg.unit, tag.unit)
                if why:
                    bad.append((wpath, why))
        # Counters and completions.
        for i, tname in enumerate(decl.increments):
            tag = tags.get(tname)
            if tag is None:
                bad.append(((*here, "increments", i), f"the machine has no tag {tname!r}"))
            elif tag.data_type not in INT_RANGES:
                bad.append(((*here, "increments", i), f"tag {tname!r} is a {tag.data_type}, not a counter"))
        if decl.completes in ("door_open", "door_closed") and not machine.has_door:
            bad.append(((*here, "completes"), f"{decl.completes} needs a door; the machine has none (has_door)"))
    return bad


def arg_problem(arg: Any, value: object, unit_word: bool = True) -> str | None:
    """Why ``value`` is not a value of the argument (type, choices, range), or None."""
    if arg.type == "str":
        if not isinstance(value, str) or value not in (arg.choices or ()):
            return f"{value!r} is not one of {', '.join(arg.choices or ())}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if arg.type == "int" and not float(value).is_integer():
        return f"{value!r} is not a whole number"
    unit = f" {arg.unit}" if arg.unit and unit_word else ""
    if arg.min is not None and value < arg.min:
        return f"{value:g}{unit} is below the minimum {arg.min:g}{unit}"
    if arg.max is not None and value > arg.max:
        return f"{value:g}{unit} is above the maximum {arg.max:g}{unit}"
    return None


# --------------------------------------------------------------------------- carrying out


async def wait_until(
    agent: MachineAgent, holds: Callable[[MachineStatus], bool], timeout_s: float, period_s: float = DOOR_POLL_S
) -> MachineStatus:
    """Poll ``agent``'s status every ``period_s`` until ``holds`` is true of it; after
    ``timeout_s`` seconds, :class:`TimeoutError` whose ``args[0]`` is the last status."""
    # An agent over a simulated machine may keep its own time (:class:`Paced`): a rehearsal's
    # twin runs faster than the wall clock, and waits then follow the twin, the same on any CPU.
    paced = agent if isinstance(agent, Paced) else None
    clock = paced.clock_s if paced is not None else time.monotonic
    deadline = clock() + timeout_s
    while not holds(st := await agent.status()):
        if clock() > deadline:
            raise TimeoutError(st)
        await (paced.pause(period_s) if paced is not None else asyncio.sleep(period_s))
    return st


@runtime_checkable
class Paced(Protocol):
    """A machine agent that keeps its own time (one over a twin stepped in lockstep)."""

    def clock_s(self) -> float:
        """The machine's time now (s)."""

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` of the machine's time."""


def _values(machine_name: str, spec: CommandSpec, args: Mapping[str, object]) -> dict[str, object]:
    """The arguments checked and completed with defaults; CommandFailed naming the problem."""
    unknown = [a for a in args if a not in spec.args]
    if unknown:
        takes = ", ".join(spec.args) or "no arguments"
        raise CommandFailed(f"{machine_name}: {spec.name} takes no argument {unknown[0]!r} (it takes {takes})")
    out: dict[str, object] = {}
    for aname, a in spec.args.items():
        if aname not in args or args[aname] is None:
            if a.required:
                raise CommandFailed(f"{machine_name}: {spec.name} needs argument {aname!r}")
            continue
        value = args[aname]
        why = arg_problem(a, value)
        if why:
            raise CommandFailed(f"{machine_name}: {spec.name}: argument {aname!r}: {why}; nothing was sent")
        out[aname] = value
    return out


def _defaults(machine: MachineConfig, name: str) -> dict[str, object]:
    decl = machine.commands.get(name)
    if decl is None:
        return {}
    return {a: spec.default for a, spec in decl.args.items() if spec.default is not None}


def _tag_value(machine_name: str, spec: CommandSpec, tname: str, tag: TagBase, value: object, arg: ArgSpec) -> TagValue:
    """The engineering value to write to ``tag`` for an argument value (units, named values)."""
    if arg.type == "str":
        if tag.data_type == "string":
            return str(value)
        return (tag.values or {})[str(value)]
    assert isinstance(value, int | float)
    v = convert_units(float(value), arg.unit, tag.unit) if arg.unit and tag.unit else value
    if tag.data_type in INT_RANGES and tag.scale == 1 and tag.offset == 0:
        r = round(v)
        if abs(v - r) <= 1e-9 * max(1.0, abs(v)):
            return int(r)
    return float(v) if isinstance(v, float) else v


def _writes(
    machine: MachineConfig, machine_name: str, spec: CommandSpec, args: dict[str, object]
) -> dict[str, TagValue]:
    out: dict[str, TagValue] = {}
    for tname, template in spec.writes.items():
        tag = machine.tags.get(tname)
        if tag is None:
            continue
        ref = _template(template)
        if ref is None:
            out[tname] = template
            continue
        if ref not in args:
            continue  # an optional argument left out writes nothing
        value = _tag_value(machine_name, spec, tname, tag, args[ref], spec.args[ref])
        try:
            check_write(machine_name, tname, tag, value)
        except TagError as exc:
            unit = f" {spec.args[ref].unit}" if spec.args[ref].unit else ""
            raise CommandFailed(
                f"{machine_name}: {spec.name}: {ref} = {args[ref]!r}{unit} "
                f"cannot be written to tag {tname!r}: {exc.reason}; nothing was sent"
            ) from None
        out[tname] = value
    return out


def _state_names(states: frozenset[State]) -> str:
    return ", ".join(s.name.lower() for s in sorted(states))


async def _to_idle(agent: MachineAgent, timeout_s: float) -> None:
    st = await agent.status()
    if st.state == State.IDLE:
        return
    if st.state in (State.ABORTED,):
        await agent.command(Command.CLEAR)
        st = await agent.wait_for_state({State.STOPPED}, timeout_s)
    elif st.state not in (State.STOPPED, State.COMPLETE):
        await agent.command(Command.STOP)
        st = await agent.wait_for_state({State.STOPPED}, timeout_s)
    await agent.command(Command.RESET)
    await agent.wait_for_state({State.IDLE}, timeout_s)


async def _wait_door(agent: MachineAgent, closed: bool, timeout_s: float) -> None:
    """Wait until the door is closed (``door_closed``) or open. Open is the machine's
    ``door_open`` (its open limit switch: the door has finished opening) when it reports one;
    ``door_closed`` false alone is only a door that has started to open, still moving into the
    space a robot reaches through."""

    def holds(st: MachineStatus) -> bool:
        if closed:
            return st.door_closed is True
        return st.door_closed is False and st.door_open is not False

    try:
        await wait_until(agent, holds, timeout_s)
    except TimeoutError:
        move = "close" if closed else "open"
        raise CommandFailed(f"the door of {agent.name} did not {move} within {timeout_s:g} s") from None


async def _run(
    agent: MachineAgent, machine: MachineConfig, spec: CommandSpec, args: dict[str, object], timeout_s: float
) -> str:
    name = agent.name
    if spec.name == "reset":
        await _to_idle(agent, timeout_s)
        return "idle"
    writes = _writes(machine, name, spec, args)  # checked before anything is sent
    st = await agent.status()
    if spec.completes == "cycle" and st.fault_code:
        raise CommandFailed(f"{name} has fault {st.fault_code}; reset it first")
    if spec.reset_first and st.state in (State.COMPLETE, State.STOPPED):
        await agent.command(Command.RESET)
        st = await agent.wait_for_state({State.IDLE}, timeout_s)
    if spec.name in _IDEMPOTENT and st.state in spec.done_states:
        # Stopping a stopped machine (holding a held one, aborting an aborted one) asks for what
        # already is: done, without sending anything.
        return f"already {State(st.state).name.lower()}"
    if spec.from_states is not None and st.state not in spec.from_states:
        raise CommandFailed(
            f"{name}: {spec.name} cannot start from {State(st.state).name.lower()} "
            f"(only from {_state_names(spec.from_states)})"
        )
    for tname, value in writes.items():
        await agent.write(tname, value)
    if spec.interlock and st.door_closed is False:
        # The machine refuses Start too; failing here names the rule instead of a PLC code.
        raise CommandFailed(
            f"interlock: the door of {name} is open; {spec.name.replace('_', ' ')} starts only with the door closed"
            if spec.name != "run_cycle"
            else f"interlock: the door of {name} is open; a cycle starts only with the door closed"
        )
    before = st.cycle_count
    await agent.command(spec.code)  # declared codes are plain ints
    if spec.completes == "door_open":
        await _wait_door(agent, False, timeout_s)
        return "door open"
    if spec.completes == "door_closed":
        await _wait_door(agent, True, timeout_s)
        return "door closed"
    if spec.completes == "immediate":
        return f"{spec.name} accepted"
    if spec.completes.startswith("state:"):
        try:
            end = await agent.wait_for_state(set(spec.done_states), timeout_s)
        except TimeoutError as exc:
            raise CommandFailed(f"{name}: {spec.name} did not finish within {timeout_s:g} s ({exc})") from None
        return State(end.state).name.lower()
    # A cycle.
    try:
        end = await agent.wait_for_state(set(_CYCLE_END), timeout_s)
    except TimeoutError as exc:
        raise CommandFailed(f"{name} did not complete its cycle within {timeout_s:g} s ({exc})") from None
    counted = "cycle_count" in machine.tags and end.cycle_count > before
    if end.state != State.COMPLETE and not counted:
        raise CommandFailed(f"{name} ended in {State(end.state).name}: fault {end.fault_code} {end.fault_text!r}")
    detail = f"cycle {end.cycle_count} complete" if "cycle_count" in machine.tags else f"{spec.name} complete"
    if spec.name == "inspect":
        try:
            result = await agent.read("result")
            detail += f"; inspection result {result} (1 pass, 2 fail)"
        except MachineError:
            pass
    return detail


async def perform(
    agent: MachineAgent, machine: MachineConfig, name: str, args: Mapping[str, object], timeout_s: float
) -> str:
    """Carry out command ``name`` (standard, built-in or declared) with ``args`` on ``agent``,
    the agent of ``machine``; wait as the command's ``completes`` says, within ``timeout_s``.

    Returns a detail for a person ("cycle 4 complete", "door open", "held"). Raises
    :class:`CommandFailed` naming the machine, the command and why: an unknown command or
    argument, an argument out of range (naming the limit and its unit; nothing is written), a
    state the command cannot start from, a fault, the door open before a cycle, a refusal by
    the machine, a timeout.
    """
    commands = machine_commands(machine)
    spec = commands.get(name)
    if spec is None:
        raise CommandFailed(f"{agent.name} has no command {name!r}; it has {', '.join(sorted(commands))}")
    values = {**_defaults(machine, name), **_values(agent.name, spec, args)}
    try:
        return await _run(agent, machine, spec, values, timeout_s)
    except MachineError as exc:
        raise CommandFailed(str(exc)) from None
    except TimeoutError as exc:
        raise CommandFailed(f"{agent.name}: {name}: {exc or 'timed out'}") from None

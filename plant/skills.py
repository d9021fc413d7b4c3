"""The skills agents can perform: the vocabulary of recipes, plans and guardrails.

A skill is named here once, with the kind of agent that performs it and the arguments it takes.
Robots implement the robot skills (``robots``); machines implement theirs through commands on
their tag map (``plant`` agents). Nothing else may appear in a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ArgType = Literal["location", "part", "part_type", "robot", "machine", "bin", "float", "int", "str", "joints"]


@dataclass(frozen=True)
class ArgSpec:
    """An argument: its type, whether it is required, its range (``min``/``max`` in ``unit``, a
    pint unit string; "" for none) and, for a ``str``, the names it may take (``choices``)."""

    type: ArgType
    required: bool = True
    min: float | None = None
    max: float | None = None
    description: str = ""
    unit: str = ""
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SkillSpec:
    """A skill: who performs it, its arguments, and its nominal duration for scheduling."""

    agent_kind: Literal["robot", "machine"]
    description: str
    args: dict[str, ArgSpec] = field(default_factory=dict)
    nominal_duration_s: float = 5.0


SKILLS: dict[str, SkillSpec] = {
    # Robot skills.
    "home": SkillSpec("robot", "move to the home joint pose", nominal_duration_s=4.0),
    "move_joints": SkillSpec(
        "robot",
        "move to a joint target",
        {"joints_rad": ArgSpec("joints")},
        nominal_duration_s=4.0,
    ),
    "move_to": SkillSpec(
        "robot",
        "move the tool to a named location",
        {"location": ArgSpec("location")},
        nominal_duration_s=4.0,
    ),
    "pick": SkillSpec(
        "robot",
        "pick a part of a type from a location or bin",
        {"part_type": ArgSpec("part_type"), "location": ArgSpec("location")},
        nominal_duration_s=8.0,
    ),
    "place": SkillSpec(
        "robot",
        "place the held part at a location or bin",
        {"location": ArgSpec("location")},
        nominal_duration_s=6.0,
    ),
    "hand_over": SkillSpec(
        "robot",
        "hand the held part to another robot at a location",
        {"to_robot": ArgSpec("robot"), "location": ArgSpec("location")},
        nominal_duration_s=8.0,
    ),
    "present": SkillSpec(
        "robot",
        "hold the part at an inspection machine until it has judged it",
        {"machine": ArgSpec("machine")},
        nominal_duration_s=6.0,
    ),
    # Machine skills, carried out through the machine's command tags.
    "open_door": SkillSpec("machine", "open the machine door", nominal_duration_s=2.0),
    "close_door": SkillSpec("machine", "close the machine door", nominal_duration_s=2.0),
    "run_cycle": SkillSpec(
        "machine",
        "start a machine cycle and wait until it completes",
        {"program": ArgSpec("int", required=False, min=0, max=9999)},
        nominal_duration_s=10.0,
    ),
    "reset": SkillSpec(
        "machine", "reset the machine to idle after a stop, abort or completion", nominal_duration_s=2.0
    ),
    "inspect": SkillSpec(
        "machine",
        "judge the part presented at the inspection station",
        nominal_duration_s=4.0,
    ),
    "feed": SkillSpec(
        "machine",
        "run the conveyor until a part reaches its pick point",
        nominal_duration_s=10.0,
    ),
    # The standard PackML commands every machine takes (plant.commands carries them out). A
    # machine's own commands are declared in the plant file: PlantDescription.skill_spec.
    "start": SkillSpec("machine", "PackML Start: begin executing (from idle)", nominal_duration_s=1.0),
    "stop": SkillSpec("machine", "PackML Stop: bring the machine to a controlled stop", nominal_duration_s=1.0),
    "hold": SkillSpec("machine", "PackML Hold: pause execution (from execute)", nominal_duration_s=1.0),
    "unhold": SkillSpec("machine", "PackML Unhold: resume execution after a hold", nominal_duration_s=1.0),
    "suspend": SkillSpec("machine", "PackML Suspend: wait for an external condition", nominal_duration_s=1.0),
    "unsuspend": SkillSpec("machine", "PackML Unsuspend: resume after a suspend", nominal_duration_s=1.0),
    "abort": SkillSpec("machine", "PackML Abort: stop at once (from any state)", nominal_duration_s=1.0),
    "clear": SkillSpec("machine", "PackML Clear: leave aborted for stopped", nominal_duration_s=1.0),
}

"""Pydantic models of a plant description: the static half of every plan.

Everything here is written by people and versioned in ``plants/*.yaml``. Models are frozen and
forbid unknown keys, so a typo is an error, never a silently ignored setting. Physical
quantities carry their unit in the field name (``_m``, ``_rad``, ``_s``, ``_kg``...).

Cross-references (a recipe naming a robot, a person walking a walkway...) are checked by
:func:`plant.loader.check_references`, which reports the YAML path of each bad reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plant.catalog import ROBOT_MODELS, TOOL_MODELS
from plant.skills import SKILLS, SkillSpec

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

#: A plan-view coordinate: one number, or one per point.
_XY = TypeVar("_XY", float, "NDArray[np.float64]")

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

Name = Annotated[
    str,
    Field(
        pattern=NAME_RE.pattern,
        description="lower_snake_case identifier, 1 to 48 characters, starting with a letter",
    ),
]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Vec3 = tuple[Finite, Finite, Finite]
Vec2 = tuple[Finite, Finite]
PositiveVec3 = tuple[PositiveFloat, PositiveFloat, PositiveFloat]


class Model(BaseModel):
    """Base of every description model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Pose(Model):
    """A position in metres and a roll-pitch-yaw orientation in radians, in the cell frame."""

    xyz_m: Vec3
    rpy_rad: Vec3 = (0.0, 0.0, 0.0)

    def quat_wxyz(self) -> tuple[float, float, float, float]:
        """Unit quaternion (w, x, y, z) of ``rpy_rad`` (roll about x, then pitch y, then yaw z)."""
        r, p, y = (a / 2.0 for a in self.rpy_rad)
        cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
        return (
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        )


# --------------------------------------------------------------------------- cell and stations


class Location(Model):
    """A named pose a robot can go to (a pick point, a drop point, a hand-over point)."""

    pose: Pose
    description: str = ""


#: The gap (m) between parts set down side by side in a bin, and between a part and its walls.
BIN_GAP_M = 0.03


class Bin(Model):
    """An open container at a pose; ``role`` tells the planner what it is for."""

    role: Literal["input", "output", "quarantine", "scrap", "buffer"]
    pose: Pose
    size_m: PositiveVec3 = (0.4, 0.3, 0.15)
    capacity: Annotated[int, Field(gt=0)] = 20

    #: Walls and floor of a bin, as the twin builds it (m).
    WALL_M: ClassVar[float] = 0.01

    def holds(self, xyz_m: Sequence[float]) -> bool:
        """Whether a part's centre at ``xyz_m`` (cell frame) lies in the bin: within its
        footprint and between its floor and a little above its rim."""
        x, y, z = (float(v) for v in xyz_m)
        bx, by, bz = self.pose.xyz_m
        c, s = math.cos(self.pose.rpy_rad[2]), math.sin(self.pose.rpy_rad[2])
        u, v = c * (x - bx) + s * (y - by), -s * (x - bx) + c * (y - by)
        inside = abs(u) <= self.size_m[0] / 2 and abs(v) <= self.size_m[1] / 2
        return inside and bz - 0.01 <= z <= bz + self.size_m[2] + 0.1

    def spots_m(self, side_m: float, gap_m: float) -> list[tuple[float, float, float]]:
        """Where parts of a footprint ``side_m`` across go down side by side, ``gap_m`` apart and
        from the walls: a grid over the bin's floor (points on the floor, cell frame), row by
        row; the centre alone when not even one row fits."""
        pitch = side_m + gap_m
        axes = []
        for length in self.size_m[:2]:
            n = max(1, int((length - 2 * self.WALL_M - gap_m) // pitch))
            axes.append([(k - (n - 1) / 2) * pitch for k in range(n)])
        x, y, z = self.pose.xyz_m
        c, s = math.cos(self.pose.rpy_rad[2]), math.sin(self.pose.rpy_rad[2])
        return [(x + c * u - s * v, y + s * u + c * v, z + self.WALL_M) for u in axes[0] for v in axes[1]]


class Station(Model):
    """A place in the cell where work happens, with its named locations and bins."""

    kind: Name = Field(
        description="what the station is for: an open name (infeed, outfeed, machining, inspection, assembly, "
        "buffer, quarantine, or one of the site's own)"
    )
    kind_description: str = Field(default="", description="what a kind the code does not know means, for people")
    locations: dict[Name, Location] = Field(default_factory=dict)
    bins: dict[Name, Bin] = Field(default_factory=dict)


class Cell(Model):
    """The floor area of the cell: a rectangle from (0, 0) to ``size_m`` in the cell frame."""

    size_m: tuple[PositiveFloat, PositiveFloat]
    description: str = ""


# --------------------------------------------------------------------------- machines and tags

DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64", "string"]
Access = Literal["read", "write", "read_write"]

#: Modbus registers each data type takes (one register is 16 bits).
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}


class TagBase(Model):
    """One value a machine exposes. Engineering value = raw * ``scale`` + ``offset``."""

    data_type: DataType
    access: Access = "read"
    unit: str = ""
    scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    offset: Finite = 0.0
    min: Finite | None = Field(
        default=None,
        description="lowest engineering value of the declared range: a write below it is refused, "
        "a reading below it puts the machine in alarm",
    )
    max: Finite | None = Field(
        default=None,
        description="highest engineering value of the declared range: a write above it is refused, "
        "a reading above it puts the machine in alarm",
    )
    values: dict[Name, int] | None = Field(
        default=None,
        description="named values of an integer or bool tag (for example none: 0, pass: 1, fail: 2)",
    )
    description: str = ""

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0 (the raw value could not be recovered)")
        return v

    @model_validator(mode="after")
    def _range_order(self) -> TagBase:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.values:
            if self.data_type in ("string", "float32", "float64"):
                raise ValueError(f"values name integers; a {self.data_type} tag cannot have them")
            from plant.codec import INT_RANGES

            lo, hi = INT_RANGES.get(self.data_type, (0, 1))
            for vname, v in self.values.items():
                if not lo <= v <= hi:
                    raise ValueError(f"value {vname!r} = {v} does not fit a {self.data_type} ({lo}..{hi})")
                if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
                    raise ValueError(f"value {vname!r} = {v} lies outside the tag's range {self.min}..{self.max}")
        return self

    @property
    def writable(self) -> bool:
        return self.access != "read"


class OpcuaTag(TagBase):
    """A tag addressed by its OPC-UA node id, for example ``ns=2;s=<machine>.State``."""

    node_id: Annotated[str, Field(min_length=3, max_length=512)]

    @field_validator("node_id")
    @classmethod
    def _node_id_form(cls, v: str) -> str:
        if not re.match(r"^(ns=\d+;)?[isgb]=.+$", v):
            raise ValueError(f"{v!r} is not an OPC-UA node id (expected 'ns=<index>;s=<name>' or 'i=<number>')")
        return v


class ModbusTag(TagBase):
    """A tag addressed by Modbus table and 0-based address, with byte and word order."""

    table: Literal["coil", "discrete_input", "holding_register", "input_register"]
    address: Annotated[int, Field(ge=0, le=65535)]
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    length_registers: Annotated[int, Field(ge=1, le=120)] | None = Field(
        default=None, description="registers of a string tag (two characters each)"
    )

    @model_validator(mode="after")
    def _table_fits_type(self) -> ModbusTag:
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table and self.data_type != "bool":
            raise ValueError(f"a {self.table} holds one bit; data_type must be bool, not {self.data_type}")
        if self.table in ("discrete_input", "input_register") and self.access != "read":
            raise ValueError(f"a {self.table} is read-only on every Modbus device; access must be read")
        if self.data_type == "string" and self.length_registers is None:
            raise ValueError("a string tag needs length_registers")
        if self.address + self.register_count > 65536:
            raise ValueError("the tag runs past the last Modbus address 65535")
        return self

    @property
    def register_count(self) -> int:
        if self.data_type == "string":
            return self.length_registers or 1
        return 1 if self.table in ("coil", "discrete_input") else REGISTER_COUNT[self.data_type]


#: A machine kind: an open name. The code attaches behaviour to the kinds it knows (a
#: ``conveyor`` has a belt and ``feed``, an ``inspection`` machine ``inspect``, a ``cnc`` a
#: spindle in the twin); any other kind is a machine with its standard and declared commands.
MachineKind = Name
KNOWN_MACHINE_KINDS = ("cnc", "press", "conveyor", "inspection", "washer", "oven", "other")

#: Tags every machine must map: its PackML state and the tag commands are written to.
REQUIRED_TAGS = ("state", "command")
#: A machine's door: closed, and open (its open limit switch).
DOOR_TAGS = ("door_closed", "door_open")
#: The status a machine reports besides its state (counters and its fault).
COUNTER_FAULT_TAGS = ("cycle_count", "part_count", "fault_code", "fault_text")
#: Tags a machine may map, with the meaning the agents give them. ``command_seq`` and
#: ``command_ack`` go together (the sequence handshake: a retried command runs at most once);
#: ``command_status`` and ``command_message`` say what became of the command whose sequence
#: number ``command_ack`` holds (:class:`plant.interface.CommandStatus`, and the machine's reason
#: when it refused it), so that a refusal reaches the coordinator with the machine's own words.
#: ``door_closed`` is required when the machine ``has_door``; ``door_open`` (the door's open limit
#: switch: it has finished opening) is what ``open_door`` waits for when mapped, else a door
#: that has merely left closed counts as open. Without a tag, the status reads a neutral value
#: (0, "", None).
OPTIONAL_TAGS = ("command_seq", "command_ack", "command_status", "command_message", *COUNTER_FAULT_TAGS, *DOOR_TAGS)

#: PackML state names (lower case) a declared command may start from or wait for.
_STATE_NAMES = (
    "stopped",
    "starting",
    "idle",
    "suspended",
    "execute",
    "stopping",
    "aborting",
    "aborted",
    "holding",
    "held",
    "unholding",
    "suspending",
    "unsuspending",
    "resetting",
    "completing",
    "complete",
    "clearing",
)


class CommandArg(Model):
    """An argument of a declared command: a number (``float``, ``int``: optional ``unit``, a pint
    unit string, and ``min``/``max`` in that unit) or a name (``str`` with ``choices``)."""

    type: Literal["float", "int", "str"]
    unit: str = ""
    min: Finite | None = None
    max: Finite | None = None
    choices: Annotated[list[Name], Field(min_length=1)] | None = None
    default: int | float | str | None = Field(default=None, description="taken when left out (then optional)")
    description: str = ""

    @model_validator(mode="after")
    def _fits_type(self) -> CommandArg:
        if self.type == "str":
            if self.choices is None:
                raise ValueError("a str argument needs choices (the names it may take)")
            if self.unit or self.min is not None or self.max is not None:
                raise ValueError("a str argument has choices, not unit, min or max")
        elif self.choices is not None:
            raise ValueError(f"only a str argument has choices, not a {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class CommandDecl(Model):
    """A command a machine declares in the plant file; see :mod:`plant.commands` for the format."""

    description: str = ""
    args: dict[Name, CommandArg] = Field(default_factory=dict)
    writes: dict[Name, bool | int | float | str] = Field(
        default_factory=dict,
        description="tag <- value written before the command: '{arg}' (converted from the argument's unit to the "
        "tag's) or a constant",
    )
    code: Annotated[int, Field(ge=1)] = Field(default=2, description="written to the command tag (2 = PackML Start)")
    from_states: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["idle"], description="PackML states (lower case) the command may start from"
    )
    completes: str = Field(
        default="cycle",
        description="cycle, immediate, state:<packml state>, door_open or door_closed",
    )
    duration_s: PositiveFloat | None = Field(default=None, description="expected duration; the cycle time if left out")
    increments: list[Name] = Field(
        default_factory=list, description="counter tags the twin's PLC adds 1 to when the command completes"
    )

    @field_validator("from_states")
    @classmethod
    def _states(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in _STATE_NAMES:
                raise ValueError(f"{s!r} is not a PackML state; states: {', '.join(_STATE_NAMES)}")
        return v

    @field_validator("completes")
    @classmethod
    def _completes(cls, v: str) -> str:
        if v in ("cycle", "immediate", "door_open", "door_closed"):
            return v
        if v.startswith("state:") and v[len("state:") :] in _STATE_NAMES:
            return v
        raise ValueError(
            f"{v!r} is not a completion; use cycle, immediate, door_open, door_closed or state:<name> "
            f"(a PackML state: {', '.join(_STATE_NAMES)})"
        )


class Belt(Model):
    """The moving surface of a conveyor: it runs along the machine's local x axis."""

    length_m: PositiveFloat
    width_m: PositiveFloat
    height_m: PositiveFloat = 0.8
    speed_m_s: Annotated[float, Field(gt=0, le=2.0)] = 0.1
    feeder: Name | None = Field(
        default=None,
        description="an input bin that feeds this belt (a magazine): when a feed starts with no part on "
        "the belt, the bin's next part is put down at the belt's start",
    )


class Vision(Model):
    """How an inspection machine judges a part: a camera and a vision model (atelier vision)."""

    model: str = Field(
        description="a vision checkpoint: the name of one shipped in policies/checkpoints, or a folder's path"
    )
    camera: Annotated[str, Field(pattern=r"^(twin|ros2:/\S+|files:\S+)$")] = Field(
        default="twin",
        description="twin (the twin's camera at the station), ros2:/topic (sensor_msgs/Image) or files:folder "
        "(the newest image file in it)",
    )
    timeout_s: PositiveFloat = Field(default=2.0, description="longest wait for an image before the inspection fails")


class MachineBase(Model):
    """What every machine has, whatever protocol it speaks."""

    kind: MachineKind = Field(description="an open name; the code knows " + ", ".join(KNOWN_MACHINE_KINDS))
    kind_description: str = Field(default="", description="what a kind the code does not know means, for people")
    station: Name | None = None
    pose: Pose
    size_m: PositiveVec3 = Field(description="outer box of the machine (x, y, z)")
    cycle_time_s: PositiveFloat
    state_model: Literal["packml"] = "packml"
    has_door: bool = False
    belt: Belt | None = None
    commands: dict[Name, CommandDecl] = Field(
        default_factory=dict, description="commands this machine declares beyond the standard ones (plant.commands)"
    )
    vision: Vision | None = Field(default=None, description="an inspection machine's camera and vision model")
    description: str = ""

    @model_validator(mode="after")
    def _conveyor_has_belt(self) -> MachineBase:
        if self.vision is not None and self.kind != "inspection":
            raise ValueError(f"only an inspection machine has vision, not a {self.kind}")
        if self.kind == "conveyor" and self.belt is None:
            raise ValueError("a conveyor needs a belt (length_m, width_m, height_m, speed_m_s)")
        if self.kind != "conveyor" and self.belt is not None:
            raise ValueError(f"only a conveyor has a belt, not a {self.kind}")
        return self


class OpcuaSecurity(Model):
    """OPC-UA security: policy, mode, and where the certificates live (paths are site files)."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_env: str | None = Field(
        default=None, description="environment variable holding the password; never the password"
    )
    certificate_file: str | None = Field(
        default=None, description="the client's application certificate (DER or PEM), a site file"
    )
    private_key_file: str | None = Field(default=None, description="the client's private key (PEM), a site file")
    server_certificate_file: str | None = Field(
        default=None, description="the server certificate to trust (DER or PEM); taken from the endpoint if left out"
    )

    @model_validator(mode="after")
    def _policy_mode(self) -> OpcuaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be None or both be set")
        if self.policy != "None" and (self.certificate_file is None or self.private_key_file is None):
            raise ValueError(f"security policy {self.policy} needs certificate_file and private_key_file")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        return self


class OpcuaMachine(MachineBase):
    """A machine whose PLC speaks OPC-UA."""

    protocol: Literal["opcua"]
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^\s/:]+:\d{1,5}(/\S*)?$")]
    namespace_uri: str = "urn:atelier:twin"
    security: OpcuaSecurity = Field(default_factory=OpcuaSecurity)
    tags: dict[Name, OpcuaTag]


class ModbusMachine(MachineBase):
    """A machine whose PLC speaks Modbus TCP."""

    protocol: Literal["modbus"]
    endpoint: Annotated[str, Field(pattern=r"^modbus\+tcp://[^\s/:]+:\d{1,5}$")]
    device_id: Annotated[int, Field(ge=0, le=247)] = 1
    tags: dict[Name, ModbusTag]


Machine = Annotated[OpcuaMachine | ModbusMachine, Field(discriminator="protocol")]


# --------------------------------------------------------------------------- robots


class Tool(Model):
    """The tool on a robot's flange."""

    kind: Literal["gripper"] = "gripper"
    model: str
    max_payload_kg: PositiveFloat | None = None

    @field_validator("model")
    @classmethod
    def _known_tool(cls, v: str) -> str:
        if v not in TOOL_MODELS:
            raise ValueError(f"unknown tool model {v!r}; known: {', '.join(sorted(TOOL_MODELS))}")
        return v


class Robot(Model):
    """An arm of a named model at a base pose, with the limits the safety supervisor enforces.

    Limits left out take the model's catalogue values; limits given must lie inside them.
    """

    model: str
    base: Pose
    tool: Tool
    home_rad: list[Finite] | None = None
    joint_limits_rad: list[tuple[Finite, Finite]] | None = None
    max_joint_speed_rad_s: list[PositiveFloat] | None = None
    max_joint_accel_rad_s2: list[PositiveFloat] | None = None
    max_tcp_speed_m_s: Annotated[float, Field(gt=0, le=5.0)] = 1.0
    payload_kg: PositiveFloat | None = None
    skills: list[str] | None = Field(default=None, description="robot skills allowed; all if left out")
    sensor_fault_reset: Literal["operator", "auto"] = Field(
        default="operator",
        description="after bad joint-state data (not finite, out of range, implausible or stale) stopped the "
        "robot: 'operator' holds the stop until an operator resets it (the e-stop reset), 'auto' lets it "
        "clear once good data has come for a while",
    )
    description: str = ""

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in ROBOT_MODELS:
            raise ValueError(f"unknown robot model {v!r}; known: {', '.join(sorted(ROBOT_MODELS))}")
        return v

    @field_validator("skills")
    @classmethod
    def _robot_skills(cls, v: list[str] | None) -> list[str] | None:
        for s in v or []:
            if s not in SKILLS or SKILLS[s].agent_kind != "robot":
                robot_skills = sorted(k for k, d in SKILLS.items() if d.agent_kind == "robot")
                raise ValueError(f"{s!r} is not a robot skill; robot skills: {', '.join(robot_skills)}")
        return v

    @model_validator(mode="after")
    def _limits_fit_model(self) -> Robot:
        spec = ROBOT_MODELS[self.model]
        n = spec.dof
        for field in ("home_rad", "joint_limits_rad", "max_joint_speed_rad_s", "max_joint_accel_rad_s2"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"{field} has {len(value)} entries; a {self.model} has {n} joints")
        for i, (lo, hi) in enumerate(self.joint_limits_rad or []):
            hw_lo, hw_hi = spec.joint_limits_rad[i]
            if lo >= hi:
                raise ValueError(f"joint_limits_rad[{i}]: lower {lo} is not below upper {hi}")
            if lo < hw_lo - 1e-9 or hi > hw_hi + 1e-9:
                raise ValueError(
                    f"joint_limits_rad[{i}] ({lo}, {hi}) exceeds the {self.model} hardware range ({hw_lo}, {hw_hi})"
                )
        for i, (v, hw) in enumerate(zip(self.max_joint_speed_rad_s or [], spec.max_joint_speed_rad_s, strict=False)):
            if v > hw + 1e-9:
                raise ValueError(f"max_joint_speed_rad_s[{i}] {v} exceeds the {self.model} hardware limit {hw}")
        if self.payload_kg is not None and self.payload_kg > spec.max_payload_kg:
            raise ValueError(f"payload_kg {self.payload_kg} exceeds the {self.model} rating {spec.max_payload_kg} kg")
        limits = self.limits()
        if self.home_rad is not None:
            for i, q in enumerate(self.home_rad):
                if not limits[i][0] <= q <= limits[i][1]:
                    raise ValueError(f"home_rad[{i}] {q} lies outside the joint limits {limits[i]}")
        return self

    # Resolved values (description overrides, else the catalogue).
    def limits(self) -> list[tuple[float, float]]:
        return list(self.joint_limits_rad or ROBOT_MODELS[self.model].joint_limits_rad)

    def home(self) -> list[float]:
        return list(self.home_rad or ROBOT_MODELS[self.model].home_rad)

    def joint_speeds(self) -> list[float]:
        return list(self.max_joint_speed_rad_s or ROBOT_MODELS[self.model].max_joint_speed_rad_s)

    def joint_accels(self) -> list[float]:
        return list(self.max_joint_accel_rad_s2 or ROBOT_MODELS[self.model].max_joint_accel_rad_s2)

    def allowed_skills(self) -> list[str]:
        return (
            list(self.skills)
            if self.skills is not None
            else sorted(k for k, d in SKILLS.items() if d.agent_kind == "robot")
        )


# --------------------------------------------------------------------------- zones and people


class BoxShape(Model):
    type: Literal["box"]
    center_m: Vec3
    size_m: PositiveVec3
    yaw_rad: Finite = 0.0

    def local_xy(self, x: _XY, y: _XY) -> tuple[_XY, _XY]:
        """A plan-view point (or arrays of points) in the box's own frame: its offsets (m) from the
        centre along the box's x and y sides. Every use of a box's yaw goes through here (the
        loader, the guardrails, the robots' supervisors)."""
        c, s = math.cos(-self.yaw_rad), math.sin(-self.yaw_rad)
        dx, dy = x - self.center_m[0], y - self.center_m[1]
        return c * dx - s * dy, s * dx + c * dy

    def contains_xy(self, x: float, y: float) -> bool:
        lx, ly = self.local_xy(x, y)
        return abs(lx) <= self.size_m[0] / 2 + 1e-9 and abs(ly) <= self.size_m[1] / 2 + 1e-9


class CylinderShape(Model):
    type: Literal["cylinder"]
    center_m: Vec3
    radius_m: PositiveFloat
    height_m: PositiveFloat

    def contains_xy(self, x: float, y: float) -> bool:
        return math.hypot(x - self.center_m[0], y - self.center_m[1]) <= self.radius_m + 1e-9


Shape = Annotated[BoxShape | CylinderShape, Field(discriminator="type")]

#: A hazard class: an open name (flammable_liquid, toxic, corrosive, hot_surface, pinch_point,
#: laser, high_voltage, or one of the site's own).
HazardClass = Name


ZonePermit = Literal["never", "operator_confirmation"]


class Zone(Model):
    """A volume of the cell with a rule: robots keep out, people walk, or a hazard lives there.

    ``permits`` says when a robot may enter: ``never`` (the default, and the only value for a
    keep-out zone or a walkway), or, for a hazard zone, ``operator_confirmation``: on a step a
    robot operator confirmed. What each kind permits, and the distances that follow, are
    :mod:`plant.safety_model`'s.
    """

    kind: Literal["keep_out", "walkway", "hazard"]
    shape: Shape
    hazard_class: HazardClass | None = None
    permits: ZonePermit = Field(
        default="never",
        description="when a robot may enter: never, or (hazard zones only) on a step an operator confirmed",
    )
    description: str = ""

    @model_validator(mode="after")
    def _hazard_class(self) -> Zone:
        if self.kind == "hazard" and self.hazard_class is None:
            raise ValueError("a hazard zone needs a hazard_class")
        if self.kind != "hazard" and self.hazard_class is not None:
            raise ValueError(f"only a hazard zone has a hazard_class, not a {self.kind} zone")
        if self.kind != "hazard" and self.permits != "never":
            raise ValueError(f"robots never enter a {self.kind} zone; only a hazard zone may permit entry")
        return self


class Person(Model):
    """A scripted person for the twin: walks ``path_m`` (x, y points) inside a walkway, looping."""

    walkway: Name
    path_m: Annotated[list[Vec2], Field(min_length=2)]
    speed_m_s: Annotated[float, Field(gt=0, le=3.0)] = 1.2
    start_delay_s: NonNegativeFloat = 0.0
    loop: bool = True
    height_m: Annotated[float, Field(gt=0.5, le=2.5)] = 1.75


# --------------------------------------------------------------------------- parts and recipes


#: The defects a part type may declare. The twin draws each on the part's underside (the face an
#: upward-looking inspection camera sees): a scratch, a crack, a chipped edge, a missing hole (parts
#: of a type that declares it have a hole; a defective one lacks it), or the wrong colour.
DEFECT_KINDS = ("scratch", "crack", "chipped_edge", "missing_hole", "wrong_colour")
DefectKind = Literal["scratch", "crack", "chipped_edge", "missing_hole", "wrong_colour"]


def defect_code(defect: str | None) -> int:
    """An inspection's ``defect`` tag value: 0 none, 1.. a defect of :data:`DEFECT_KINDS` in
    order, 99 a defect the model cannot name (an anomaly model's)."""
    if defect is None:
        return 0
    return DEFECT_KINDS.index(defect) + 1 if defect in DEFECT_KINDS else 99


class PartType(Model):
    """A kind of part: a box of ``size_m`` weighing ``mass_kg``, with the defects it may have."""

    size_m: PositiveVec3
    mass_kg: PositiveFloat
    color_rgba: tuple[float, float, float, float] = (0.8, 0.5, 0.1, 1.0)
    defects: list[DefectKind] = Field(
        default_factory=list, description="defects a part of this type may have: " + ", ".join(DEFECT_KINDS)
    )
    defect_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="share of parts with a defect (each part's is drawn from the twin's seed)"
    )
    description: str = ""

    @model_validator(mode="after")
    def _defects(self) -> PartType:
        if len(set(self.defects)) != len(self.defects):
            raise ValueError("a defect is listed twice")
        if self.defect_rate > 0 and not self.defects:
            raise ValueError("defect_rate needs the defects a part may have")
        return self


class Part(Model):
    """A part present when the twin starts: of a ``type``, at a named location."""

    type: Name
    at: Name = Field(description="a location or bin name")
    defect: DefectKind | Literal["none"] | None = Field(
        default=None,
        description="the part's defect, or none; left out, the twin draws it at its type's defect_rate",
    )


class RecipeParam(Model):
    """A parameter a work order fills in when it uses a recipe."""

    type: Literal["int", "float", "str", "part_type", "location", "robot", "machine", "bin"]
    default: int | float | str | None = None
    min: Finite | None = None
    max: Finite | None = None
    unit: str = Field(
        default="",
        description="unit of a number (a pint unit: l, ml, degC, mm/s); min, max and default are in it, and an "
        "order's quantity in another unit of the same kind is converted",
    )
    choices: list[str] | None = None
    description: str = ""

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        if v:
            from plant.commands import unit_problem

            problem = unit_problem(v)
            if problem:
                raise ValueError(problem)
        return v


class RecipeStep(Model):
    """One step of a recipe: a skill, an agent (a name, or ``{param}``), arguments, and order.

    Argument values may refer to recipe parameters as ``{name}``.
    """

    id: Name
    skill: str
    agent: str = Field(description="an agent name, or '{param}' filled in by the work order")
    args: dict[Name, int | float | str] = Field(default_factory=dict)
    after: list[Name] = Field(default_factory=list)
    hazardous: bool = False
    expected_duration_s: PositiveFloat | None = None

    @field_validator("skill")
    @classmethod
    def _known_skill(cls, v: str) -> str:
        # Machines declare commands of their own: a skill is any name here, and the loader checks
        # that the step's agent can perform it (plant.loader.check_references).
        if v not in SKILLS and not NAME_RE.match(v):
            raise ValueError(f"unknown skill {v!r}; known: {', '.join(sorted(SKILLS))}")
        return v


class Recipe(Model):
    """A named work-order template written by people: ordered, parameterised steps."""

    description: str
    params: dict[Name, RecipeParam] = Field(default_factory=dict)
    steps: Annotated[list[RecipeStep], Field(min_length=1)]
    building_block: bool = Field(
        default=False,
        description="a part of larger orders written in the plan language (it leaves work for the order to "
        "finish, such as a part held at a camera to be sorted): a model reading an order is not offered it as "
        "a whole order's goal",
    )


# --------------------------------------------------------------------------- the plant


class PlantDescription(Model):
    """A whole cell: the root of a plant YAML file."""

    schema_version: Literal[1] = 1
    name: Name
    description: str = ""
    cell: Cell
    stations: dict[Name, Station] = Field(default_factory=dict)
    machines: dict[Name, Machine] = Field(default_factory=dict)
    robots: dict[Name, Robot] = Field(default_factory=dict)
    zones: dict[Name, Zone] = Field(default_factory=dict)
    people: dict[Name, Person] = Field(default_factory=dict)
    part_types: dict[Name, PartType] = Field(default_factory=dict)
    parts: dict[Name, Part] = Field(default_factory=dict)
    recipes: dict[Name, Recipe] = Field(default_factory=dict)

    # Lookups used by the twin, the planner and the guardrails.
    def inspection_view(self, machine: str) -> tuple[str, Pose] | None:
        """Where a part is shown to ``machine``: its station's first location (name and pose),
        or None when the machine has no station location."""
        station = self.machines[machine].station
        locs = self.stations[station].locations if station in self.stations else {}
        first = next(iter(locs.items()), None)
        return None if first is None else (first[0], first[1].pose)

    def locations(self) -> dict[str, Pose]:
        """Every named pose of the plant: station locations and bins (by their own names)."""
        out: dict[str, Pose] = {}
        for station in self.stations.values():
            for name, loc in station.locations.items():
                out[name] = loc.pose
            for name, b in station.bins.items():
                out[name] = b.pose
        return out

    def bins(self) -> dict[str, Bin]:
        return {n: b for s in self.stations.values() for n, b in s.bins.items()}

    def part_starts(self) -> dict[str, tuple[float, float, float]]:
        """Where each part starts (m, cell frame; the point its bottom rests on): on its location,
        or, in a bin, side by side on the bin's floor (:meth:`Bin.spots_m`, in the order the
        plant file lists the bin's parts)."""
        locations = self.locations()
        out: dict[str, tuple[float, float, float]] = {}
        for bname, b in self.bins().items():
            inside = [n for n, p in self.parts.items() if p.at == bname and p.type in self.part_types]
            if inside:
                side = max(max(self.part_types[self.parts[n].type].size_m[:2]) for n in inside)
                out.update(zip(inside, b.spots_m(side, BIN_GAP_M), strict=False))
        for name, part in self.parts.items():
            if name not in out and part.at in locations:
                out[name] = locations[part.at].xyz_m
        return out

    def names_of(self, kind: str) -> list[str] | None:
        """The names a value of this kind may take in this plant (``location``, ``bin``,
        ``part_type``, ``part``, ``robot``, ``machine``), or None for a kind that is not a name
        (numbers, joint vectors, free text). The one switch from an argument type to names."""
        names: dict[str, Any] = {
            "location": self.locations(),
            "bin": self.bins(),
            "part_type": self.part_types,
            "part": self.parts,
            "robot": self.robots,
            "machine": self.machines,
        }
        return list(names[kind]) if kind in names else None

    def agents(self) -> dict[str, Literal["robot", "machine"]]:
        out: dict[str, Literal["robot", "machine"]] = dict.fromkeys(self.robots, "robot")
        out.update(dict.fromkeys(self.machines, "machine"))
        return out

    def agent_skills(self, agent: str) -> list[str]:
        """The skills ``agent`` performs: a robot's allowed skills; a machine's standard PackML
        commands, the built-in ones that apply to it and the ones it declares
        (:func:`plant.commands.machine_commands`). Raises ``KeyError`` for an unknown agent."""
        if agent in self.robots:
            return self.robots[agent].allowed_skills()
        if agent in self.machines:
            from plant.commands import machine_commands

            return sorted(machine_commands(self.machines[agent]))
        raise KeyError(agent)

    def skill_spec(self, agent: str, skill: str) -> SkillSpec:
        """What ``skill`` means on ``agent``: its arguments (with units, ranges, choices), its
        nominal duration and description. Robots: :data:`plant.skills.SKILLS`; machines: built
        from the command (:meth:`plant.commands.CommandSpec.skill_spec`). Raises ``KeyError``
        for an unknown agent, or a skill the agent does not perform."""
        if agent in self.robots:
            if skill not in self.robots[agent].allowed_skills():
                raise KeyError(f"{agent} cannot perform {skill!r}")
            return SKILLS[skill]
        if agent in self.machines:
            from plant.commands import machine_commands

            commands = machine_commands(self.machines[agent])
            if skill not in commands:
                raise KeyError(f"{agent} has no command {skill!r}; it has {', '.join(sorted(commands))}")
            return commands[skill].skill_spec()
        raise KeyError(agent)

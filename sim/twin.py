"""The twin at run time: steps the MuJoCo model of a plant, with machines, belts and people.

One :class:`Twin` owns one ``MjModel``/``MjData`` pair and is not thread-safe: the owner of the
twin (the CLI, a live server loop, an environment) calls it from one thread. Time only moves
in :meth:`Twin.step`; nothing runs in the background.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import mujoco
import numpy as np

from plant.catalog import ROBOT_MODELS
from plant.commands import custom_commands
from plant.config import PlantDescription
from plant.packml import RUNNING, Command, MachineStateModel, State
from robots.kinematics import as_slice
from sim._types import FloatArray, IntArray
from sim.assets import TOOL_ASSETS
from sim.builder import build_spec
from sim.config import TwinConfig
from sim.defects import PartMarks, face_down, show_defect

log = logging.getLogger(__name__)

#: Lamp colours by state, as on a stack light: green running, amber held/stopped, red fault.
_LAMP = {
    "run": (0.1, 0.9, 0.2, 1.0),
    "idle": (0.2, 0.5, 1.0, 1.0),
    "done": (0.9, 0.9, 0.9, 1.0),
    "wait": (1.0, 0.7, 0.0, 1.0),
    "fault": (1.0, 0.1, 0.1, 1.0),
}


def _lamp(state: State) -> tuple[float, float, float, float]:
    if state in RUNNING:
        return _LAMP["run"]
    if state in (State.ABORTING, State.ABORTED):
        return _LAMP["fault"]
    if state == State.IDLE:
        return _LAMP["idle"]
    if state == State.COMPLETE:
        return _LAMP["done"]
    return _LAMP["wait"]


@dataclass(frozen=True)
class Contact:
    """A touch between two bodies (by name); ``depth_m`` > 0 is penetration."""

    body1: str
    body2: str
    geom1: str
    geom2: str
    depth_m: float


@dataclass(frozen=True)
class TwinEvent:
    """Something that happened in the twin, for logs and summaries."""

    time_s: float
    source: str
    text: str


@dataclass(frozen=True)
class RobotHandles:
    qpos: IntArray
    qvel: IntArray
    actuators: IntArray
    tool_actuators: IntArray
    tool_open: FloatArray
    tool_closed: FloatArray
    grip_site: int
    body_ids: frozenset[int]
    grasp_eqs: tuple[tuple[int, int], ...] = ()  # (weld equality id, part body id) per part
    #: qpos address of the joint each tool actuator drives (-1: not a joint), for the measured closure.
    tool_joint_qpos: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @cached_property
    def qpos_at(self) -> slice | IntArray:
        """``qpos`` as a slice when the joints are consecutive, as an arm's are (read every tick)."""
        return as_slice(self.qpos)

    @cached_property
    def qvel_at(self) -> slice | IntArray:
        return as_slice(self.qvel)


class TwinMachine:
    """A machine of the twin: its PackML state model, door servo, belt and lamp."""

    def __init__(self, twin: Twin, name: str) -> None:
        m = twin.plant.machines[name]
        self.name = name
        self.kind = m.kind
        self.state_model = MachineStateModel(
            cycle_time_s=m.cycle_time_s,
            has_door=m.has_door,
            cycle_ends_externally=m.kind == "conveyor",
            custom=custom_commands(m),
        )
        model = twin.model
        self._twin = twin
        self._lamp = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{name}/lamp")
        self._door_qpos = -1
        if m.has_door:
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{name}/door")
            self._door_qpos = int(model.jnt_qposadr[jid])
            self._door_travel = float(model.jnt_range[jid][1])
        self._belt = -1
        self.belt_speed_m_s = 0.0
        self.belt_setpoint_m_s = 0.0
        if m.belt is not None:
            self._belt = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{name}/belt")
            model.geom_surfacevel[self._belt][:] = 0.0
            self.belt_setpoint_m_s = m.belt.speed_m_s
            self._belt_end_x = m.pose.xyz_m[0] + m.belt.length_m / 2
            self._belt_y = m.pose.xyz_m[1]
            self._belt_half_w = m.belt.width_m / 2
            self._belt_top = m.belt.height_m
            self._belt_start_x = m.pose.xyz_m[0] - m.belt.length_m / 2
            self._feeder = m.belt.feeder
        self.inspection_result = 0  # 0 none, 1 pass, 2 fail
        self.defect_code = 0  # the defect judged (sim.vision.defect_code): 0 none
        self.confidence = 0.0  # in the verdict, 0..1
        self._shown: State | None = None
        self.spindle_speed_rpm = 0.0

    @property
    def state(self) -> State:
        return self.state_model.state

    def command(self, cmd: Command | int) -> None:
        """Apply a PackML command now; raises :class:`plant.packml.CommandRefused`."""
        self.state_model.command(cmd)

    def part_at_end(self) -> bool:
        """True when a part rests within 8 cm of the belt's end (conveyors only)."""
        return self._belt >= 0 and self._on_belt(self._belt_end_x - 0.08)

    def _on_belt(self, from_x: float) -> bool:
        """A part lies on the belt between ``from_x`` and its end."""
        xpos = self._twin.data.xpos
        for b in self._twin._part_ids:
            x, y, z = xpos[b]
            if (
                from_x <= x <= self._belt_end_x + 0.01
                and abs(y - self._belt_y) <= self._belt_half_w
                and self._belt_top - 0.01 <= z <= self._belt_top + 0.2
            ):
                return True
        return False

    def _feed_from_magazine(self) -> None:
        """A feed starts on an empty belt: the feeder bin's next part (the first the plant file
        lists that lies in the bin) is put down at the belt's start."""
        if self._feeder is None or self._on_belt(self._belt_start_x - 0.01):
            return
        twin = self._twin
        part = twin.part_in_bin(self._feeder)
        if part is None:
            twin.events.append(TwinEvent(twin.time_s, self.name, f"feeder {self._feeder} is empty"))
            return
        size = twin.plant.part_types[twin.plant.parts[part].type].size_m
        x = self._belt_start_x + max(size[:2]) / 2 + 0.05
        twin.put_part(part, (x, self._belt_y, self._belt_top + size[2] / 2 + 0.002))
        twin.events.append(TwinEvent(twin.time_s, self.name, f"fed {part} from {self._feeder}"))

    def tick(self, dt_s: float) -> None:
        sm = self.state_model
        door_moving = sm.door_motion_s > 0
        sm.tick(dt_s)
        state = sm.state
        if self._belt >= 0:
            running = state == State.EXECUTE
            if running and self.part_at_end():
                sm.finish_cycle()
                running = False
            speed = self.belt_setpoint_m_s if running else 0.0
            if speed != self.belt_speed_m_s:
                self.belt_speed_m_s = speed
                self._twin.model.geom_surfacevel[self._belt][0] = speed
        if door_moving:
            self._twin.data.qpos[self._door_qpos] = sm.door_open_fraction * self._door_travel
        if state is not self._shown:
            self._on_state_change(state)

    def show_restored(self) -> None:
        """Make the model show the restored logic: belt speed, lamp (no event is recorded)."""
        if self._belt >= 0:
            self._twin.model.geom_surfacevel[self._belt][0] = self.belt_speed_m_s
        self._shown = self.state
        if self._lamp >= 0:
            self._twin.model.geom_rgba[self._lamp] = _lamp(self.state)

    def _on_state_change(self, state: State) -> None:
        if self._shown is not None:
            self._twin.events.append(TwinEvent(self._twin.time_s, self.name, f"{self._shown.name} -> {state.name}"))
        self._shown = state
        if self._belt >= 0 and state == State.EXECUTE:
            self._feed_from_magazine()
        if self.kind == "cnc":
            self.spindle_speed_rpm = 8000.0 if state == State.EXECUTE else 0.0
        if self.kind == "inspection":
            if state == State.STARTING:
                self.inspection_result, self.defect_code, self.confidence = 0, 0, 0.0
            elif state == State.COMPLETING:
                try:
                    self.inspection_result, self.defect_code, self.confidence = self._twin.judge(self.name)
                except Exception as exc:  # VisionError, or a model that cannot run: fault, judge nothing
                    self._twin.events.append(TwinEvent(self._twin.time_s, self.name, f"inspection failed: {exc}"))
                    self.state_model.fault(110, f"inspection failed: {exc}"[:250])
        if self._lamp >= 0:
            self._twin.model.geom_rgba[self._lamp] = _lamp(state)


@dataclass
class MachineCapture:
    """A machine's logic at one instant (see :meth:`Twin.capture`)."""

    state_model: MachineStateModel
    belt_speed_m_s: float
    belt_setpoint_m_s: float
    inspection_result: int
    spindle_speed_rpm: float
    defect_code: int = 0
    confidence: float = 0.0


@dataclass
class TwinState:
    """Everything that moves in a twin at one instant: the MuJoCo integration state (time,
    joints, controls, people, active grasps), the grasp offsets, grasps and releases under way,
    every machine's logic and the random generator. Plain data, so it can be pickled to another
    process; restore it into a twin of the same plant with :meth:`Twin.restore`."""

    plant_name: str
    physics: FloatArray
    eq_data: FloatArray
    ticks: int
    machines: dict[str, MachineCapture]
    rng: dict[str, Any] = field(default_factory=dict)
    #: Grasps under way: robot -> (weld, part body) the closing fingers will take on touching it.
    grasping: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Releases under way: robot -> the tick it lets go (None: a state that does not say; a
    #: gripper opening round a part lets go of it at once).
    letting_go: dict[str, int] | None = None


@dataclass(frozen=True)
class MachineReading:
    """A machine as its agent read it (``plant.interface.MachineStatus``, as plain data):
    PackML state (its :class:`~plant.packml.State` value), door (None: no door, or not read),
    counters and fault."""

    state: int
    door_closed: bool | None = None
    cycle_count: int = 0
    part_count: int = 0
    fault_code: int = 0
    fault_text: str = ""


@dataclass(frozen=True)
class PlantReadings:
    """What the agents of a live plant read, for a twin to start from (:meth:`Twin.apply_readings`):
    each machine's reading, each robot's joint positions (rad, the model's joint order) and
    gripper closure (0 open .. 1 closed), and the parts whose place is known: ``parts`` by name
    (m, cell frame; seen by the cell's vision) and ``absent`` (known to be out of the cell).
    Parts in neither stay where the plant file puts them. Plain data, so it can be pickled to a
    rehearsal's worker process. Anything not read (a machine, a robot) starts as a fresh twin has it."""

    plant_name: str
    machines: dict[str, MachineReading] = field(default_factory=dict)
    robots: dict[str, tuple[float, ...]] = field(default_factory=dict)
    grippers: dict[str, float] = field(default_factory=dict)
    parts: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()


#: Where parts known to be out of the cell wait in a twin started from readings: on the floor,
#: in a row outside the cell's corner (x, y in m; one ``_ABSENT_STEP_M`` apart along x).
_ABSENT_AT_M = (-1.0, -1.0)
_ABSENT_STEP_M = 0.25


class _Walker:
    """A person following a polyline at constant speed, looping (back along it for two points).

    Plain floats, not numpy: this runs every control tick and numpy scalars cost more than
    the arithmetic.
    """

    def __init__(self, path: list[tuple[float, float]], speed: float, delay: float, loop: bool) -> None:
        pts = [(float(x), float(y)) for x, y in path]
        if loop:
            pts = [*pts, pts[0]] if len(pts) > 2 else [*pts, *pts[-2::-1]]
        self.pts = pts
        self.lengths = [math.dist(a, b) for a, b in itertools.pairwise(pts)]
        self.headings = [math.atan2(b[1] - a[1], b[0] - a[0]) for a, b in itertools.pairwise(pts)]
        self.cum = [0.0]
        for seg_len in self.lengths:
            self.cum.append(self.cum[-1] + seg_len)
        self.total = self.cum[-1]
        self.speed, self.delay, self.loop = speed, delay, loop

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, heading_rad, speed_m_s) at time ``t``."""
        moving = t >= self.delay
        s = max(0.0, t - self.delay) * self.speed
        if self.loop:
            s = s % self.total if self.total > 0 else 0.0
        elif s >= self.total:
            s, moving = self.total, False
        i = min(max(bisect.bisect_right(self.cum, s) - 1, 0), len(self.lengths) - 1)
        seg_len = self.lengths[i]
        f = (s - self.cum[i]) / seg_len if seg_len > 0 else 0.0
        (x0, y0), (x1, y1) = self.pts[i], self.pts[i + 1]
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0), self.headings[i], self.speed if moving else 0.0


@dataclass(frozen=True)
class Perturbation:
    """How one rehearsal's start differs from the plant file's, drawn from ``seed``: a person
    starts later, walks faster or slower and to one side of the drawn path (within the walkway),
    a belt runs faster or slower, and the parts at rest lie off their places, all within these
    tolerances. One seed always draws the same start."""

    seed: int
    person_delay_s: float = 6.0  # a person starts up to this much later
    person_speed: float = 0.25  # walks up to this fraction faster or slower
    person_offset_m: float = 0.25  # and up to this far to one side of the path (kept in the walkway)
    belt_speed: float = 0.1  # a belt runs up to this fraction faster or slower
    part_xy_m: float = 0.01  # a part at rest lies up to this far off its place in x and in y


#: Compiled models kept per process (plant and twin settings -> model), newest last.
_COMPILED: OrderedDict[str, mujoco.MjModel] = OrderedDict()
_COMPILED_KEEP = 4
_COMPILED_LOCK = threading.Lock()


def model_key(plant: PlantDescription, config: TwinConfig) -> str:
    """What names the compiled model of ``plant`` under ``config``: twins with the same key have
    copies of one compiled model (the same bodies, meshes and textures)."""
    return hashlib.sha256(f"{plant.model_dump_json()}|{config!r}".encode()).hexdigest()


def compiled_model(plant: PlantDescription, config: TwinConfig, key: str | None = None) -> mujoco.MjModel:
    """A fresh copy of the compiled MuJoCo model of ``plant`` under ``config`` (``key``: its
    :func:`model_key`, if the caller has it). Compiling takes about a second; a process that
    makes many twins of one plant (a rehearsal worker, the console, a batch of rehearsals)
    compiles it once and copies it (milliseconds). Each twin gets a copy of its own, because a
    twin changes its model (belt speeds, lamps, grasps)."""
    key = key or model_key(plant, config)
    with _COMPILED_LOCK:
        model = _COMPILED.get(key)
        if model is not None:
            _COMPILED.move_to_end(key)
    if model is None:
        model = build_spec(plant, config).compile()
        with _COMPILED_LOCK:
            _COMPILED[key] = model
            while len(_COMPILED) > _COMPILED_KEEP:
                _COMPILED.popitem(last=False)
    return copy.deepcopy(model)


class Twin:
    """A running twin of one plant.

    ``step`` advances whole control ticks (``config.ctrl_dt_s``). Between ticks the caller may
    read poses and contacts and set robot joint targets; robot servos then track those targets
    inside the physics steps of the next tick.
    """

    def __init__(self, plant: PlantDescription, config: TwinConfig | None = None) -> None:
        self.plant = plant
        self.config = config or TwinConfig()
        #: Twins with the same key have copies of one compiled model (see :func:`model_key`).
        self.model_key = model_key(plant, self.config)
        self.model = compiled_model(plant, self.config, self.model_key)
        self.data = mujoco.MjData(self.model)
        if any(m.belt is not None for m in plant.machines.values()):
            # Belts start still, so the compiler saw no surface velocity; switch it on.
            self.model.flg_surfacevel = 1
        self.rng = np.random.default_rng(self.config.seed)
        self.defects = self._draw_defects()
        self.inspections: list[Any] = []  # sim.vision.Inspection, one per part a vision model judged
        self._inspectors: dict[str, Any] = {}
        self._substeps = self.config.substeps
        self._robots = {name: self._robot_handles(name) for name in plant.robots}
        #: Robots whose gripper was told to open while holding a part: the tick it lets go.
        self._letting_go: dict[str, int] = {}
        #: Robots whose gripper closes on a part it has not touched yet: (weld id, part body).
        self._grasping: dict[str, tuple[int, int]] = {}
        self.machines: dict[str, TwinMachine] = {}
        self._machine_list: list[TwinMachine] = []
        self._walkers = [
            (
                int(self.model.body_mocapid[self.model.body(n).id]),
                _Walker(list(p.path_m), p.speed_m_s, p.start_delay_s, p.loop),
            )
            for n, p in plant.people.items()
        ]
        self._people_speed = {n: 0.0 for n in plant.people}
        self._people_names = list(plant.people)
        self._part_bodies = {n: self.model.body(n).id for n in plant.parts}
        self._part_ids = list(self._part_bodies.values())
        self.ticks = 0
        self.events: list[TwinEvent] = []
        self.reset()

    # ------------------------------------------------------------------ set-up

    def _draw_defects(self) -> dict[str, str | None]:
        """Each part's defect: the plant file's when it names one, else drawn at its type's
        defect_rate from the twin's seed (a stream of its own: the twin's other draws stay as
        they were), and shown on the part's underside (:mod:`sim.defects`)."""
        rng = np.random.default_rng([self.config.seed, 0xDEFEC7])
        out: dict[str, str | None] = {}
        defect: str | None
        for name, part in self.plant.parts.items():
            pt = self.plant.part_types[part.type]
            if part.defect is not None:
                defect = None if part.defect == "none" else part.defect
            elif pt.defect_rate > 0 and rng.random() < pt.defect_rate:
                defect = pt.defects[int(rng.integers(len(pt.defects)))]
            else:
                defect = None
            out[name] = defect
            if pt.defects:
                show_defect(self.model, PartMarks.find(self.model, name, pt), defect, self._placement(name))
        return out

    def _placement(self, part: str) -> np.random.Generator:
        """The random draws that place ``part``'s defect (the same each time it is drawn)."""
        return np.random.default_rng([self.config.seed, 0xDEFEC7, list(self.plant.parts).index(part)])

    def show_face_down(self, part: str) -> None:
        """Draw ``part``'s defect (and hole) on the face that points down now, the face a camera
        under it sees: a part may reach the camera turned (a hand-over turns it), and the twin
        takes the plant's handling to present the face to be inspected."""
        pt = self.plant.part_types[self.plant.parts[part].type]
        if not pt.defects:
            return
        face = face_down(self.data.xmat[self._part_bodies[part]])
        marks = PartMarks.find(self.model, part, pt)
        show_defect(self.model, marks, self.defects.get(part), self._placement(part), face)
        mujoco.mj_kinematics(self.model, self.data)

    def prepare_inspections(self) -> None:
        """Load each vision model this twin's inspection machines use and render their cameras
        once, so that judging a part later costs an image and an inference (tens of ms), not a
        model load and a new OpenGL context. What cannot be loaded is logged; the inspection
        that needs it will fault with the reason."""
        from sim.vision import Inspector, TwinCamera, load_model

        for name, m in self.plant.machines.items():
            if m.vision is None:
                continue
            loaded = []
            for part_type in self.plant.part_types:
                try:
                    loaded.append(load_model(m.vision.model, part_type))
                except Exception as exc:  # VisionError above all: a checkpoint for another type
                    log.debug("%s: no vision model for %s: %s", name, part_type, exc)
            if not loaded:
                log.warning("%s: no vision model loads for this plant's part types (%s)", name, m.vision.model)
                continue
            self._inspectors.setdefault(name, Inspector(self, name))
            if m.vision.camera == "twin":
                try:
                    TwinCamera(self, name, loaded[0].size).grab(1.0)
                except Exception as exc:  # no OpenGL here: the inspection will say so
                    log.warning("%s: its camera cannot render: %s", name, exc)

    def judge(self, machine: str) -> tuple[int, int, float]:
        """An inspection machine's verdict on the part shown to it now: (result 1 pass / 2 fail,
        defect code, confidence). With ``vision`` its camera and model judge (raising VisionError
        when they cannot); without, the verdict is the part's true defect (a perfect inspector)."""
        m = self.plant.machines[machine]
        if m.vision is not None:
            from plant.config import defect_code
            from sim.vision import Inspector

            inspector = self._inspectors.get(machine)
            if inspector is None:
                inspector = self._inspectors[machine] = Inspector(self, machine)
            done = inspector.judge()
            self.inspections.append(done)
            v = done.verdict
            self.events.append(
                TwinEvent(
                    self.time_s,
                    machine,
                    f"judged {done.part}: {'pass' if v.passed else 'fail'}"
                    + (f" ({v.defect})" if v.defect else "")
                    + f", confidence {v.confidence:.2f}",
                )
            )
            return (1 if v.passed else 2), defect_code(v.defect), v.confidence
        from plant.config import defect_code
        from sim.vision import part_at

        part = part_at(self, machine)
        if part is None:
            self.events.append(TwinEvent(self.time_s, machine, "no part at the camera: fail"))
            return 2, 0, 1.0
        defect = self.defects.get(part)
        return (1, 0, 1.0) if defect is None else (2, defect_code(defect), 1.0)

    def _robot_handles(self, name: str) -> RobotHandles:
        m = self.model
        robot = self.plant.robots[name]
        joints = [m.joint(f"{name}/{j}") for j in ROBOT_MODELS[robot.model].joint_names]
        acts = [m.actuator(f"{name}/{j}").id for j in ROBOT_MODELS[robot.model].joint_names]
        tool_acts = [i for i in range(m.nu) if m.actuator(i).name.startswith(f"{name}/tool/")]
        tool = TOOL_ASSETS[robot.tool.model]
        bodies = frozenset(
            i
            for i in range(m.nbody)
            if m.body(i).name.startswith(f"{name}/") and not m.body(i).name.endswith("/pedestal")
        )
        return RobotHandles(
            qpos=np.array([j.qposadr[0] for j in joints]),
            qvel=np.array([j.dofadr[0] for j in joints]),
            actuators=np.array(acts),
            tool_actuators=np.array(tool_acts),
            tool_open=np.array(tool.open_ctrl),
            tool_closed=np.array(tool.closed_ctrl),
            grip_site=m.site(f"{name}/tool/{tool.grip_site}").id,
            body_ids=bodies,
            grasp_eqs=tuple(
                (m.equality(f"{name}/grasp/{p}").id, m.body(p).id)
                for p in self.plant.parts
                if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_EQUALITY, f"{name}/grasp/{p}") >= 0
            ),
            tool_joint_qpos=np.array(
                [
                    int(m.jnt_qposadr[m.actuator_trnid[a][0]])
                    if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
                    else -1
                    for a in tool_acts
                ],
                dtype=np.int64,
            ),
        )

    def reset(self) -> None:
        """Back to time zero: robots at home, machines stopped, parts where the plant puts them."""
        mujoco.mj_resetData(self.model, self.data)
        self.events = []
        self._letting_go = {}
        self._grasping = {}
        for name, h in self._robots.items():
            home = np.asarray(self.plant.robots[name].home())
            self.data.qpos[h.qpos] = home
            self.data.ctrl[h.actuators] = home
            self.data.ctrl[h.tool_actuators] = h.tool_open
        self.machines = {name: TwinMachine(self, name) for name in self.plant.machines}
        self._machine_list = list(self.machines.values())
        self.ticks = 0
        self._update_people()
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ capture

    _STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

    def capture(self) -> TwinState:
        """The twin's state now (a copy), to start another twin of this plant from it."""
        physics = np.empty(mujoco.mj_stateSize(self.model, self._STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, self._STATE_SPEC)
        machines = {
            name: MachineCapture(
                copy.deepcopy(tm.state_model),
                tm.belt_speed_m_s,
                tm.belt_setpoint_m_s,
                tm.inspection_result,
                tm.spindle_speed_rpm,
                tm.defect_code,
                tm.confidence,
            )
            for name, tm in self.machines.items()
        }
        return TwinState(
            self.plant.name,
            physics,
            self.model.eq_data.copy(),
            self.ticks,
            machines,
            dict(copy.deepcopy(self.rng.bit_generator.state)),
            dict(self._grasping),
            dict(self._letting_go),
        )

    def restore(self, state: TwinState) -> None:
        """Continue from ``state`` (taken from a twin of the same plant): robots, parts, people,
        doors, belts and every machine's PackML state, counters and timers as they were."""
        size = mujoco.mj_stateSize(self.model, self._STATE_SPEC)
        if (
            state.plant_name != self.plant.name
            or state.physics.shape != (size,)
            or set(state.machines) != set(self.machines)
        ):
            raise ValueError(f"the state was taken from another plant ({state.plant_name!r}), not {self.plant.name!r}")
        mujoco.mj_setState(self.model, self.data, state.physics, self._STATE_SPEC)
        self.model.eq_data[:] = state.eq_data
        self.ticks = state.ticks
        self.events = []
        if state.rng:
            self.rng.bit_generator.state = copy.deepcopy(state.rng)
        for name, cap in state.machines.items():
            tm = self.machines[name]
            tm.state_model = copy.deepcopy(cap.state_model)
            tm.belt_setpoint_m_s = cap.belt_setpoint_m_s
            tm.belt_speed_m_s = cap.belt_speed_m_s
            tm.inspection_result = cap.inspection_result
            tm.defect_code, tm.confidence = cap.defect_code, cap.confidence
            tm.spindle_speed_rpm = cap.spindle_speed_rpm
            tm.show_restored()
        if state.letting_go is not None:
            self._letting_go = dict(state.letting_go)
        else:  # (a gripper taken while it opened round a part lets go of it at once)
            opening = [r for r, h in self._robots.items() if self.held_part(r) and self._opening(h)]
            self._letting_go = dict.fromkeys(opening, self.ticks)
        self._grasping = dict(state.grasping)
        self._update_people()
        mujoco.mj_forward(self.model, self.data)

    def apply_readings(self, readings: PlantReadings) -> None:
        """Start from what the agents of a live plant read (see :class:`PlantReadings`), at time
        zero: robots at their joint positions, held there, grippers as read (a closed gripper
        takes hold of a part at its grip point); parts where they were seen, those known absent
        outside the cell, the rest where the plant file puts them; each machine in the PackML
        state read, with its counters, fault and door (an open door fully open). A machine in an
        acting state or in Execute starts that state afresh (a reading has no timers). People
        start their walks. Raises ``ValueError`` for readings of another plant or names it lacks.
        """
        unknown = (
            [f"machine {n}" for n in readings.machines if n not in self.machines]
            + [f"robot {n}" for n in {*readings.robots, *readings.grippers} if n not in self._robots]
            + [f"part {n}" for n in {*readings.parts, *readings.absent} if n not in self._part_bodies]
        )
        if readings.plant_name != self.plant.name or unknown:
            what = ", ".join(unknown) or f"plant {readings.plant_name!r}"
            raise ValueError(f"the readings are not of plant {self.plant.name!r}: {what}")
        self.reset()
        d, m = self.data, self.model
        for robot, q in readings.robots.items():
            h = self._robots[robot]
            if len(q) != len(h.qpos):
                raise ValueError(f"{robot}: {len(q)} joint positions read, the model has {len(h.qpos)} joints")
            d.qpos[h.qpos] = q
            d.ctrl[h.actuators] = q
        absent = [n for n in self._part_bodies if n in readings.absent]
        for name, b in self._part_bodies.items():
            if name in readings.parts:
                xyz = readings.parts[name]
            elif name in absent:
                half = self.plant.part_types[self.plant.parts[name].type].size_m[2] / 2
                xyz = (_ABSENT_AT_M[0] - _ABSENT_STEP_M * absent.index(name), _ABSENT_AT_M[1], half)
            else:
                continue
            adr = int(m.jnt_qposadr[m.body_jntadr[b]])
            d.qpos[adr : adr + 3] = xyz
            d.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)
        for name, r in readings.machines.items():
            tm = self.machines[name]
            spec = self.plant.machines[name]
            door = r.door_closed if spec.has_door and r.door_closed is not None else True
            tm.state_model = MachineStateModel(
                cycle_time_s=spec.cycle_time_s,
                has_door=spec.has_door,
                cycle_ends_externally=spec.kind == "conveyor",
                state=State(r.state),
                cycle_count=r.cycle_count,
                part_count=r.part_count,
                fault_code=r.fault_code,
                fault_text=r.fault_text,
                door_closed=door,
                door_target_closed=door,
                custom=custom_commands(spec),
            )
            if tm._door_qpos >= 0:
                d.qpos[tm._door_qpos] = (0.0 if door else 1.0) * tm._door_travel
            tm.belt_speed_m_s = tm.belt_setpoint_m_s if tm._belt >= 0 and tm.state == State.EXECUTE else 0.0
            tm.show_restored()
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        for robot, closure in readings.grippers.items():
            self.set_gripper(robot, closure)
        mujoco.mj_forward(m, d)

    # ------------------------------------------------------------------ time

    @property
    def time_s(self) -> float:
        """Simulated seconds since :meth:`reset`."""
        return float(self.data.time)

    def step(self, ticks: int = 1) -> None:
        """Advance ``ticks`` control ticks (each ``config.ctrl_dt_s`` of simulated time).

        People move every tick; machine logic runs every ``config.plc_scan_s`` like a PLC scan.
        """
        m, d, n = self.model, self.data, self._substeps
        scan, scan_dt = self.config.scan_ticks, self.config.plc_scan_s
        machines = self._machine_list
        walkers = bool(self._walkers)
        letting_go, grasping = self._letting_go, self._grasping
        tick = self.ticks
        for _ in range(ticks):
            if tick % scan == 0:
                for tm in machines:
                    tm.tick(scan_dt)
            if walkers:
                self._update_people()
            if letting_go:
                self._let_go(tick)
            if grasping:
                self._take_touched()
            mujoco.mj_step(m, d, nstep=n)
            tick += 1
        self.ticks = tick

    def run(
        self,
        seconds: float,
        realtime: bool = False,
        on_tick: Callable[[Twin], None] | None = None,
        every_s: float = 0.05,
    ) -> None:
        """Run for ``seconds`` of simulated time, as fast as possible or paced to the wall clock.

        ``on_tick`` is called about every ``every_s`` simulated seconds (for progress or frames).
        """
        ticks_total = max(1, round(seconds / self.config.ctrl_dt_s))
        chunk = max(1, round(every_s / self.config.ctrl_dt_s))
        start_wall, start_sim = time.perf_counter(), self.time_s
        done = 0
        while done < ticks_total:
            n = min(chunk, ticks_total - done)
            self.step(n)
            done += n
            if on_tick is not None:
                on_tick(self)
            if realtime:
                ahead = (self.time_s - start_sim) - (time.perf_counter() - start_wall)
                if ahead > 0:
                    time.sleep(ahead)

    def perturb(self, p: Perturbation) -> dict[str, float]:
        """Change the start as ``p`` draws it (call at time zero, before stepping); returns what
        was drawn, by name."""
        rng = np.random.default_rng(p.seed)
        drawn: dict[str, float] = {}
        for i, name in enumerate(self._people_names):
            person = self.plant.people[name]
            zone = self.plant.zones[person.walkway].shape
            delay = float(rng.uniform(0.0, p.person_delay_s))
            speed = float(rng.uniform(1 - p.person_speed, 1 + p.person_speed))
            dx, dy = (float(v) for v in rng.uniform(-p.person_offset_m, p.person_offset_m, 2))
            # As far to the side as drawn, or as far as the walkway allows that way.
            f = next(
                (
                    f
                    for f in (1.0, 0.75, 0.5, 0.25)
                    if all(zone.contains_xy(x + f * dx, y + f * dy) for x, y in person.path_m)
                ),
                0.0,
            )
            dx, dy = f * dx, f * dy
            path = [(x + dx, y + dy) for x, y in person.path_m]
            walker = _Walker(path, person.speed_m_s * speed, person.start_delay_s + delay, person.loop)
            self._walkers[i] = (self._walkers[i][0], walker)
            drawn.update({f"{name} delay s": delay, f"{name} speed x": speed, f"{name} dx m": dx, f"{name} dy m": dy})
        for name, tm in self.machines.items():
            if tm._belt >= 0:
                k = float(rng.uniform(1 - p.belt_speed, 1 + p.belt_speed))
                tm.belt_setpoint_m_s *= k
                drawn[f"{name} belt speed x"] = k
        held = {self.held_part(r) for r in self._robots}
        for part in self._part_bodies:
            dx, dy = (float(v) for v in rng.uniform(-p.part_xy_m, p.part_xy_m, 2))
            if part in held:
                continue
            j = self.model.joint(part)
            qa = int(j.qposadr[0])
            self.data.qpos[qa] += dx
            self.data.qpos[qa + 1] += dy
            drawn[f"{part} dx m"], drawn[f"{part} dy m"] = dx, dy
        self._update_people()
        mujoco.mj_forward(self.model, self.data)
        return drawn

    def _update_people(self) -> None:
        t = self.data.time
        pos, quat = self.data.mocap_pos, self.data.mocap_quat
        for (mocap, walker), name in zip(self._walkers, self._people_names, strict=True):
            x, y, heading, speed = walker.at(t)
            pos[mocap] = (x, y, 0.0)
            quat[mocap] = (math.cos(heading / 2), 0.0, 0.0, math.sin(heading / 2))
            self._people_speed[name] = speed

    # ------------------------------------------------------------------ robots

    def robot_names(self) -> list[str]:
        return list(self._robots)

    def joint_positions(self, robot: str) -> FloatArray:
        """Measured joint angles in rad (a copy)."""
        q: FloatArray = self.data.qpos[self._robots[robot].qpos_at].copy()
        return q

    def joint_velocities(self, robot: str) -> FloatArray:
        """Measured joint speeds in rad/s (a copy)."""
        v: FloatArray = self.data.qvel[self._robots[robot].qvel_at].copy()
        return v

    def set_joint_targets(self, robot: str, q: FloatArray) -> None:
        """Position targets for the joint servos, in rad. Clipped to the servo ranges by MuJoCo."""
        self.data.ctrl[self._robots[robot].actuators] = q

    def joint_targets(self, robot: str) -> FloatArray:
        return np.array(self.data.ctrl[self._robots[robot].actuators], dtype=np.float64)

    def hold_robots(self) -> None:
        """Every robot's joint servo target becomes its measured position: a twin (or a driver)
        that starts holds each arm where it is, and nothing moves until a fresh command. The
        grippers keep their targets (opening one would drop what it holds)."""
        for h in self._robots.values():
            self.data.ctrl[h.actuators] = self.data.qpos[h.qpos]

    #: A closing gripper takes hold of the nearest part whose centre lies this close (m) to the grip point.
    grasp_radius_m = 0.04
    #: An opening gripper lets go of its part this long (s) after it was told to open: the fingers
    #: part first, as a real gripper's do. (Let go at once, a part left squeezed between closed
    #: fingers was flung out of the place it was set down in.)
    release_s = 0.1
    #: A gripper that touches the part it closes on is told to close this much further (of its
    #: whole travel), and no further: it holds the part without turning it.
    grip_squeeze = 0.05

    def set_gripper(self, robot: str, closed_fraction: float) -> None:
        """0 fully open, 1 fully closed.

        Closing past half takes hold of the nearest part within :attr:`grasp_radius_m` of the
        grip point (a weld, switched on at the part's current pose, so nothing jumps): at once
        when the fingers are closed already, else when a finger first touches it, and the fingers
        stop there (:attr:`grip_squeeze`). Opening below half lets go :attr:`release_s` later.
        """
        h = self._robots[robot]
        f = min(1.0, max(0.0, closed_fraction))
        self.data.ctrl[h.tool_actuators] = h.tool_open + f * (h.tool_closed - h.tool_open)
        if not h.grasp_eqs:
            return
        if f < 0.5:
            self._grasping.pop(robot, None)
            if robot not in self._letting_go and any(self.data.eq_active[eq] for eq, _ in h.grasp_eqs):
                self._letting_go[robot] = self.ticks + max(1, round(self.release_s / self.config.ctrl_dt_s))
            return
        self._letting_go.pop(robot, None)  # (closed again before it let go: it keeps the part)
        if robot in self._grasping or any(self.data.eq_active[eq] for eq, _ in h.grasp_eqs):
            return
        grip = self.data.site_xpos[h.grip_site]
        best, best_d = None, self.grasp_radius_m
        for eq, body in h.grasp_eqs:
            d = float(np.linalg.norm(self.data.xpos[body] - grip))
            if d <= best_d:
                best, best_d = (eq, body), d
        if best is None:
            return
        if self.gripper_closure(robot) < 0.5:
            # The fingers are still open: the part is taken where a finger first touches it.
            self._grasping[robot] = best
            return
        self._hold(best)

    def _take_touched(self) -> None:
        """Take hold of the parts that the closing fingers of :attr:`_grasping` now touch, where
        they are, and stop those fingers there (a gripper that kept closing on a held part turned
        it in the grip); forget a grasp whose fingers closed on nothing."""
        m, d = self.model, self.data
        touched: set[int] = set()
        for i in range(d.ncon):
            c = d.contact[i]
            if c.dist < 0:
                touched.add(int(m.geom_bodyid[c.geom[0]]) * m.nbody + int(m.geom_bodyid[c.geom[1]]))
        for robot, (eq, body) in list(self._grasping.items()):
            h = self._robots[robot]
            if any(b * m.nbody + body in touched or body * m.nbody + b in touched for b in h.body_ids):
                del self._grasping[robot]
                self._hold((eq, body))
                closure = self.gripper_closure(robot) + self.grip_squeeze
                d.ctrl[h.tool_actuators] = h.tool_open + min(1.0, closure) * (h.tool_closed - h.tool_open)
            elif self.gripper_closure(robot) > 0.95:
                del self._grasping[robot]

    def _hold(self, grasp: tuple[int, int]) -> None:
        """Switch on the weld ``grasp`` (equality id, part body) at the part's current pose."""
        eq, body = grasp
        b1 = int(self.model.eq_obj1id[eq])
        r1 = self.data.xmat[b1].reshape(3, 3)
        rel = self.model.eq_data[eq]
        rel[0:3] = 0.0
        rel[3:6] = r1.T @ (self.data.xpos[body] - self.data.xpos[b1])
        q1inv = np.zeros(4)
        mujoco.mju_negQuat(q1inv, self.data.xquat[b1])
        mujoco.mju_mulQuat(rel[6:10], q1inv, self.data.xquat[body])
        self.data.eq_active[eq] = 1

    def _let_go(self, tick: int) -> None:
        """Let go of the parts of the grippers that have been opening for :attr:`release_s`."""
        for robot, due in list(self._letting_go.items()):
            if tick >= due:
                del self._letting_go[robot]
                for eq, _ in self._robots[robot].grasp_eqs:
                    self.data.eq_active[eq] = 0

    def _opening(self, h: RobotHandles) -> bool:
        """Whether the gripper of ``h`` is told to open (its command nearer open than closed)."""
        ctrl = self.data.ctrl[h.tool_actuators]
        return bool(np.all(np.abs(ctrl - h.tool_open) < np.abs(ctrl - h.tool_closed)))

    #: The grip force (N) a gripper reports for an object it holds, at least: a detected object is never 0 N.
    min_grip_force_n = 1.0

    def gripper_closure(self, robot: str) -> float:
        """The gripper's measured closure, 0 open .. 1 closed: where its fingers are (from their
        joints), not where they were told to go. 0.0 for a gripper without finger joints."""
        h = self._robots[robot]
        span = h.tool_closed - h.tool_open
        fractions = [
            (float(self.data.qpos[adr]) - float(h.tool_open[i])) / float(span[i])
            for i, adr in enumerate(h.tool_joint_qpos)
            if adr >= 0 and span[i] != 0
        ]
        return min(1.0, max(0.0, sum(fractions) / len(fractions))) if fractions else 0.0

    def gripper_force_n(self, robot: str) -> float:
        """The grip force (N) on an object the gripper holds, as a gripper's object detection
        reports it: 0.0 when it holds nothing, else the fingers' actuator force (at least
        :attr:`min_grip_force_n`)."""
        if self.held_part(robot) is None:
            return 0.0
        h = self._robots[robot]
        force = float(np.sum(np.abs(self.data.actuator_force[h.tool_actuators])))
        return max(self.min_grip_force_n, force)

    def part_in_bin(self, name: str) -> str | None:
        """The first part (in the plant file's order) lying in bin ``name``, held by no robot."""
        b = self.plant.bins()[name]
        held = {self.held_part(r) for r in self._robots}
        for part, body in self._part_bodies.items():
            if part not in held and b.holds(self.data.xpos[body]):
                return part
        return None

    def put_part(self, part: str, xyz_m: tuple[float, float, float]) -> None:
        """Put a part down at ``xyz_m`` (its centre), upright and still (a feeder, a person)."""
        j = self.model.joint(part)
        qa, da = int(j.qposadr[0]), int(j.dofadr[0])
        self.data.qpos[qa : qa + 7] = [*xyz_m, 1.0, 0.0, 0.0, 0.0]
        self.data.qvel[da : da + 6] = 0.0
        mujoco.mj_kinematics(self.model, self.data)

    def held_part(self, robot: str) -> str | None:
        """The part the robot's gripper holds (by name), or None."""
        for eq, body in self._robots[robot].grasp_eqs:
            if self.data.eq_active[eq]:
                return self._body_names[body]
        return None

    def arm(self, robot: str) -> RobotHandles:
        """Addresses of a robot in the compiled model (joints, actuators, grip site, bodies)."""
        return self._robots[robot]

    def tool_position(self, robot: str) -> FloatArray:
        """World position of the tool's grip point, in m."""
        return np.array(self.data.site_xpos[self._robots[robot].grip_site], dtype=np.float64)

    def robot_bodies(self, robot: str) -> frozenset[int]:
        return self._robots[robot].body_ids

    # ------------------------------------------------------------------ world queries

    def body_pose(self, name: str) -> tuple[FloatArray, FloatArray]:
        """World position (m) and orientation quaternion (w, x, y, z) of a body."""
        bid = self.model.body(name).id
        return np.array(self.data.xpos[bid], dtype=np.float64), np.array(self.data.xquat[bid], dtype=np.float64)

    def part_positions(self) -> dict[str, tuple[float, float, float]]:
        xpos = self.data.xpos
        return {n: (float(xpos[b][0]), float(xpos[b][1]), float(xpos[b][2])) for n, b in self._part_bodies.items()}

    def people_positions(self) -> dict[str, tuple[float, float, float]]:
        """Person name to (x, y, speed_m_s)."""
        out = {}
        for (mocap, _), name in zip(self._walkers, self.plant.people, strict=True):
            x, y, _z = self.data.mocap_pos[mocap]
            out[name] = (float(x), float(y), self._people_speed[name])
        return out

    @cached_property
    def _body_names(self) -> list[str]:
        return [self.model.body(i).name for i in range(self.model.nbody)]

    @cached_property
    def _geom_names(self) -> list[str]:
        return [self.model.geom(i).name for i in range(self.model.ngeom)]

    def contacts(self) -> list[Contact]:
        """Touches in the current state, one entry per geom pair, deepest first."""
        m, d = self.model, self.data
        best: dict[tuple[int, int], float] = {}
        for i in range(d.ncon):
            c = d.contact[i]
            key = (int(c.geom[0]), int(c.geom[1]))
            best[key] = max(best.get(key, -math.inf), -float(c.dist))
        out = []
        for (g1, g2), depth in sorted(best.items(), key=lambda kv: -kv[1]):
            b1, b2 = int(m.geom_bodyid[g1]), int(m.geom_bodyid[g2])
            out.append(
                Contact(
                    self._body_names[b1] or "world",
                    self._body_names[b2] or "world",
                    self._geom_names[g1],
                    self._geom_names[g2],
                    depth,
                )
            )
        return out

    def machine(self, name: str) -> TwinMachine:
        return self.machines[name]

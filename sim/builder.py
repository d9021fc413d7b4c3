"""Build a MuJoCo model of a plant from its description.

Naming in the compiled model (so other code can find things without guessing):

- robot ``R``: joints ``R/<model joint>``, position actuators ``R/<model joint>``, tool joints
  and actuators under ``R/tool/``, the grip point site ``R/tool/grip_site``;
- machine ``M``: body ``M``, door body ``M/door`` on joint ``M/door`` with actuator ``M/door``,
  status lamp geom ``M/lamp``; a conveyor's belt geom ``M/belt`` (moved by its surface velocity);
- part ``P``: free body ``P`` with box geom ``P``, its defects' hidden marks (:mod:`sim.defects`);
  person ``H``: mocap body ``H``; zone ``Z``: geom ``zone/Z``;
- grasp of part ``P`` by robot ``R``: weld equality ``R/grasp/P`` between the body of the
  grip site and the part, inactive until the twin attaches the part to a closing gripper;
- cameras ``overview``, ``top``, ``robots``; an inspection machine ``M`` with a station
  location has camera ``M/camera`` on its table, looking up at a part presented there (its
  underside), lit by the spot light ``M/light``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from plant.catalog import ROBOT_MODELS
from plant.config import BoxShape, CylinderShape, PlantDescription, Pose
from sim._types import FloatArray
from sim.assets import ROBOT_ASSETS, TOOL_ASSETS, robot_file, tool_file
from sim.config import TwinConfig
from sim.defects import add_defect_geoms

G = mujoco.mjtGeom

#: Collision classes: contype/conaffinity bits. Zones are pictures only. Each robot (arm and
#: tool) gets a bit of its own, so it collides with everything but itself: a robot's own links
#: touching (gripper knuckles, fingers) is its maker's business, not a cell event.
STATIC, DYNAMIC = 1, 2
ROBOT_BITS_FROM = 2
EVERYTHING_MOVING = 0x3FFFFFFF & ~STATIC
MAX_ROBOTS = 28

_COLORS = {
    "floor_a": (0.32, 0.34, 0.36, 1.0),
    "floor_b": (0.28, 0.30, 0.32, 1.0),
    "machine": (0.86, 0.87, 0.88, 1.0),
    "machine_trim": (0.20, 0.35, 0.60, 1.0),
    "door": (0.55, 0.75, 0.90, 0.55),
    "belt": (0.12, 0.12, 0.12, 1.0),
    "frame": (0.55, 0.57, 0.60, 1.0),
    "pedestal": (0.25, 0.25, 0.28, 1.0),
    "bin": (0.15, 0.45, 0.25, 1.0),
    "quarantine": (0.85, 0.15, 0.10, 1.0),
    "walkway": (0.95, 0.80, 0.10, 0.35),
    "hazard": (0.95, 0.20, 0.10, 0.18),
    "keep_out": (0.95, 0.55, 0.10, 0.12),
    "drum": (0.10, 0.30, 0.75, 1.0),
    "person": (0.95, 0.55, 0.15, 1.0),
    "skin": (0.85, 0.68, 0.55, 1.0),
}


def _quat(pose: Pose) -> list[float]:
    return list(pose.quat_wxyz())


def look_at(pos: FloatArray, target: FloatArray) -> list[float]:
    """Quaternion (w, x, y, z) of a camera at ``pos`` looking at ``target`` with z up."""
    fwd = target - pos
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, fwd)
    # MuJoCo cameras look along -z with y up.
    rot = np.column_stack([right, up, -fwd])
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, rot.flatten())
    return list(q)


def _box(
    body: mujoco.MjsBody,
    name: str | None,
    center: tuple[float, float, float] | list[float],
    half: tuple[float, float, float] | list[float],
    rgba: tuple[float, ...],
    collide: int = STATIC,
    **kw: object,
) -> mujoco.MjsGeom:
    g = body.add_geom(type=G.mjGEOM_BOX, pos=list(center), size=list(half), rgba=list(rgba), **kw)
    if name:
        g.name = name
    g.contype = collide
    g.conaffinity = collide
    return g


def build_spec(plant: PlantDescription, config: TwinConfig) -> mujoco.MjSpec:
    """An :class:`mujoco.MjSpec` of the whole cell; compile it with ``spec.compile()``."""
    spec = mujoco.MjSpec()
    spec.modelname = plant.name
    spec.compiler.degree = False
    spec.option.timestep = config.sim_dt_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.visual.global_.offwidth = 1920
    spec.visual.global_.offheight = 1080
    spec.visual.quality.shadowsize = 2048
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    spec.stat.extent = max(plant.cell.size_m)
    wb = spec.worldbody
    w, h = plant.cell.size_m

    tex = spec.add_texture(
        name="floor",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        width=512,
        height=512,
        rgb1=_COLORS["floor_a"][:3],
        rgb2=_COLORS["floor_b"][:3],
    )
    spec.add_material(name="floor", textures=["", tex.name], texrepeat=[w, h], reflectance=0.0)
    spec.add_texture(
        name="sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        width=256,
        height=256,
        rgb1=[0.55, 0.62, 0.70],
        rgb2=[0.12, 0.14, 0.18],
    )
    floor = wb.add_geom(
        name="floor", type=G.mjGEOM_PLANE, size=[w / 2, h / 2, 0.05], pos=[w / 2, h / 2, 0], material="floor"
    )
    floor.contype = floor.conaffinity = STATIC | DYNAMIC
    # No shadows: software GL (Mesa llvmpipe) renders 3x faster without them.
    wb.add_light(
        name="sun", pos=[w / 2, h / 2 - 1.0, 6.0], dir=[0.1, 0.2, -1.0], castshadow=False, diffuse=[0.6, 0.6, 0.6]
    )
    wb.add_light(name="fill", pos=[w / 2, -2.0, 4.0], dir=[0.0, 0.6, -0.8], castshadow=False, diffuse=[0.3, 0.3, 0.3])

    center = np.array([w / 2, h / 2, 0.6])
    eye = np.array([w * 0.5 - 0.2, -3.3, 4.3])
    wb.add_camera(name="overview", pos=list(eye), quat=look_at(eye, center), fovy=48)
    top = np.array([w / 2, h / 2, 8.0])
    # Orthographic: a plan view with true distances (fovy is then the view height in m).
    cam = wb.add_camera(name="top", pos=list(top), quat=[1, 0, 0, 0], fovy=max(h, w * 9 / 16) + 0.4)
    cam.proj = mujoco.mjtProjection.mjPROJ_ORTHOGRAPHIC
    if plant.robots:
        mid = np.mean([r.base.xyz_m for r in plant.robots.values()], axis=0)
        eye_r = mid + np.array([-0.3, -2.4, 1.6])
        wb.add_camera(name="robots", pos=list(eye_r), quat=look_at(eye_r, mid + np.array([0, 0.3, 0.2])), fovy=60)

    for zname, zone in plant.zones.items():
        _add_zone(spec, zname, zone.kind, zone.shape, zone.hazard_class)
    for mname, machine in plant.machines.items():
        if machine.kind == "conveyor":
            _add_conveyor(wb, mname, machine)
        elif machine.kind == "inspection":
            _add_inspection(wb, mname, machine)
            _add_inspection_camera(wb, mname, plant)
        else:
            _add_enclosed_machine(wb, mname, machine)
    for bname, b in plant.bins().items():
        _add_bin(wb, bname, b)
    if len(plant.robots) > MAX_ROBOTS:
        raise ValueError(f"the twin supports at most {MAX_ROBOTS} robots in one cell")
    for i, (rname, robot) in enumerate(plant.robots.items()):
        _add_robot(spec, rname, robot, i, len(plant.robots))
    for pname, (x, y, z) in plant.part_starts().items():
        pt = plant.part_types[plant.parts[pname].type]
        body = wb.add_body(name=pname, pos=[x, y, z + pt.size_m[2] / 2 + 0.002])
        body.add_freejoint(name=pname)
        g = body.add_geom(
            name=pname,
            type=G.mjGEOM_BOX,
            size=[s / 2 for s in pt.size_m],
            mass=pt.mass_kg,
            rgba=list(pt.color_rgba),
            friction=[1.0, 0.01, 0.001],
        )
        g.contype = g.conaffinity = STATIC | DYNAMIC
        add_defect_geoms(body, pname, pt)
    for rname, robot in plant.robots.items():
        grip_body = f"{rname}/tool/{_grip_body(robot.tool.model)}"
        for pname in plant.parts:
            # Inactive welds cost nothing per step; the twin switches one on when a gripper
            # closes on a part (fingers alone do not hold a part reliably at a 4 ms step).
            spec.add_equality(
                name=f"{rname}/grasp/{pname}",
                type=mujoco.mjtEq.mjEQ_WELD,
                objtype=mujoco.mjtObj.mjOBJ_BODY,
                name1=grip_body,
                name2=pname,
                active=False,
                # anchor 0 (the part's origin); the relative pose is set when the grasp starts.
                data=[0.0] * 10 + [1.0, 0.0],
                solref=[0.01, 1.0],
            )
    for hname, person in plant.people.items():
        x, y = person.path_m[0]
        body = wb.add_body(name=hname, pos=[x, y, 0.0], mocap=True)
        torso_h = person.height_m * 0.82
        torso = body.add_geom(
            name=f"{hname}/torso",
            type=G.mjGEOM_CAPSULE,
            fromto=[0, 0, 0.25, 0, 0, torso_h - 0.2],
            size=[0.2, 0, 0],
            rgba=list(_COLORS["person"]),
        )
        head = body.add_geom(
            name=f"{hname}/head",
            type=G.mjGEOM_SPHERE,
            pos=[0, 0, person.height_m - 0.12],
            size=[0.11, 0, 0],
            rgba=list(_COLORS["skin"]),
        )
        for leg in (-0.1, 0.1):
            body.add_geom(
                type=G.mjGEOM_CAPSULE,
                fromto=[0, leg, 0.05, 0, leg, 0.45],
                size=[0.07, 0, 0],
                rgba=[0.2, 0.2, 0.35, 1],
                contype=0,
                conaffinity=0,
            )
        for g in (torso, head):
            # People collide with robots and parts so the twin reports every touch.
            g.contype, g.conaffinity = 0, EVERYTHING_MOVING
    return spec


def _grip_body(tool_model: str) -> str:
    """The tool body that carries the grip site (its name inside the tool model)."""
    tool = mujoco.MjSpec.from_file(str(tool_file(tool_model)))
    for b in tool.bodies:
        for site in b.sites:
            if site.name == TOOL_ASSETS[tool_model].grip_site:
                return str(b.name)
    raise ValueError(f"tool model {tool_model} has no site {TOOL_ASSETS[tool_model].grip_site}")


def _add_zone(
    spec: mujoco.MjSpec, name: str, kind: str, shape: BoxShape | CylinderShape, hazard_class: str | None
) -> None:
    wb = spec.worldbody
    rgba = list(_COLORS[kind])
    if isinstance(shape, BoxShape):
        cx, cy, cz = shape.center_m
        sx, sy, sz = shape.size_m
        z = max(cz, sz / 2) if kind != "walkway" else 0.002
        g = wb.add_geom(
            name=f"zone/{name}",
            type=G.mjGEOM_BOX,
            pos=[cx, cy, z],
            size=[sx / 2, sy / 2, max(sz / 2, 0.001)],
            rgba=rgba,
            quat=[math.cos(shape.yaw_rad / 2), 0, 0, math.sin(shape.yaw_rad / 2)],
        )
    else:
        cx, cy, cz = shape.center_m
        g = wb.add_geom(
            name=f"zone/{name}",
            type=G.mjGEOM_CYLINDER,
            pos=[cx, cy, cz + shape.height_m / 2],
            size=[shape.radius_m, shape.height_m / 2, 0],
            rgba=rgba,
        )
        if hazard_class in ("flammable_liquid", "toxic", "corrosive"):
            # The container itself: a drum that robots and people must not touch.
            drum = wb.add_geom(
                name=f"{name}/drum",
                type=G.mjGEOM_CYLINDER,
                pos=[cx, cy, cz + min(0.9, shape.height_m) / 2],
                size=[shape.radius_m * 0.7, min(0.9, shape.height_m) / 2, 0],
                rgba=list(_COLORS["drum"]),
            )
            drum.contype = drum.conaffinity = STATIC
    g.contype = g.conaffinity = 0
    g.group = 2


def _add_enclosed_machine(wb: mujoco.MjsBody, name: str, m: object) -> None:
    """A machine housing open towards -y, closed by a sliding door, with a status lamp."""
    pose = m.pose  # type: ignore[attr-defined]
    sx, sy, sz = m.size_m  # type: ignore[attr-defined]
    body = wb.add_body(name=name, pos=list(pose.xyz_m), quat=_quat(pose))
    t = 0.04
    c = _COLORS["machine"]
    _box(body, f"{name}/back", (0, sy / 2 - t / 2, sz / 2), (sx / 2, t / 2, sz / 2), c)
    # Walls meet without shared faces (no z-fighting in renders); the roof overhangs by 5 mm.
    _box(body, f"{name}/left", (-sx / 2 + t / 2, 0, sz / 2), (t / 2, sy / 2 - t, sz / 2 - t), c)
    _box(body, f"{name}/right", (sx / 2 - t / 2, 0, sz / 2), (t / 2, sy / 2 - t, sz / 2 - t), c)
    _box(body, f"{name}/roof", (0, 0, sz - t / 2), (sx / 2 + 0.005, sy / 2 + 0.005, t / 2), c)
    base_h = 0.85
    _box(body, f"{name}/base", (0, 0, base_h / 2), (sx / 2 - t, sy / 2 - t, base_h / 2), c)
    _box(body, f"{name}/fixture", (0, -sy / 2 + 0.3, base_h + 0.03), (0.08, 0.08, 0.03), _COLORS["frame"])
    # A front panel above and below the opening, in the trim colour.
    open_lo, open_hi = base_h + 0.05, sz - 0.35
    _box(
        body,
        f"{name}/front_top",
        (0, -sy / 2 + t / 2, (open_hi + sz) / 2),
        (sx / 2, t / 2, (sz - open_hi) / 2),
        _COLORS["machine_trim"],
    )
    _box(
        body,
        f"{name}/front_low",
        (0, -sy / 2 + t / 2, open_lo / 2),
        (sx / 2, t / 2, open_lo / 2),
        _COLORS["machine_trim"],
    )
    body.add_geom(
        name=f"{name}/lamp",
        type=G.mjGEOM_CYLINDER,
        pos=[sx / 2 - 0.12, sy / 2 - 0.12, sz + 0.1],
        size=[0.04, 0.1, 0],
        rgba=[0.5, 0.5, 0.5, 1],
        contype=0,
        conaffinity=0,
    )
    if m.has_door:  # type: ignore[attr-defined]
        door_h = open_hi - open_lo
        door = body.add_body(name=f"{name}/door", pos=[0, -sy / 2 - t / 2, (open_lo + open_hi) / 2])
        door.add_joint(
            name=f"{name}/door",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[0, 0, 1],
            range=[0, door_h],
            damping=[50.0, 0, 0],
        )
        _box(door, f"{name}/door", (0, 0, 0), (sx / 2 - 0.05, t / 4, door_h / 2), _COLORS["door"], mass=5.0)
        door.gravcomp = 1.0
        # The door is stiff kinematics in practice: a position servo at its travel.
        pass


def _add_conveyor(wb: mujoco.MjsBody, name: str, m: object) -> None:
    pose = m.pose  # type: ignore[attr-defined]
    belt = m.belt  # type: ignore[attr-defined]
    assert belt is not None
    body = wb.add_body(name=name, pos=list(pose.xyz_m), quat=_quat(pose))
    L, W, H = belt.length_m, belt.width_m, belt.height_m
    fr = _COLORS["frame"]
    for sx in (-L / 2 + 0.05, L / 2 - 0.05):
        for sy in (-W / 2 + 0.03, W / 2 - 0.03):
            _box(body, None, (sx, sy, (H - 0.05) / 2), (0.025, 0.025, (H - 0.05) / 2), fr)
    for sy in (-W / 2 - 0.02, W / 2 + 0.02):
        _box(body, None, (0, sy, H + 0.01), (L / 2, 0.015, 0.035), fr)
    g = _box(body, f"{name}/belt", (0, 0, H - 0.025), (L / 2, W / 2, 0.025), _COLORS["belt"], collide=STATIC)
    g.friction = [1.2, 0.01, 0.001]
    # The belt runs by surface velocity: the contact sees a moving surface, no python per step.
    g.surfacevel = [0.0] * 6
    body.add_geom(
        name=f"{name}/lamp",
        type=G.mjGEOM_CYLINDER,
        pos=[-L / 2 + 0.05, W / 2 + 0.05, H + 0.25],
        size=[0.03, 0.08, 0],
        rgba=[0.5, 0.5, 0.5, 1],
        contype=0,
        conaffinity=0,
    )
    for x in (-L / 2, L / 2):
        body.add_geom(
            type=G.mjGEOM_CYLINDER,
            pos=[x, 0, H - 0.025],
            size=[0.03, W / 2, 0],
            quat=[0.7071068, 0.7071068, 0, 0],
            rgba=list(fr),
            contype=0,
            conaffinity=0,
        )


def _add_inspection(wb: mujoco.MjsBody, name: str, m: object) -> None:
    pose = m.pose  # type: ignore[attr-defined]
    sx, sy, sz = m.size_m  # type: ignore[attr-defined]
    body = wb.add_body(name=name, pos=list(pose.xyz_m), quat=_quat(pose))
    _box(body, f"{name}/table", (0, 0, sz / 2), (sx / 2, sy / 2, sz / 2), _COLORS["machine"])
    _box(body, f"{name}/post", (0, sy / 2 - 0.04, sz + 0.4), (0.03, 0.03, 0.4), _COLORS["frame"])
    _box(body, f"{name}/arm", (0, sy / 2 - 0.2, sz + 0.78), (0.03, 0.18, 0.03), _COLORS["frame"])
    _box(body, f"{name}/camera", (0, 0.0, sz + 0.72), (0.05, 0.05, 0.05), _COLORS["machine_trim"])
    body.add_geom(
        name=f"{name}/lamp",
        type=G.mjGEOM_CYLINDER,
        pos=[sx / 2 - 0.06, -sy / 2 + 0.06, sz + 0.05],
        size=[0.03, 0.05, 0],
        rgba=[0.5, 0.5, 0.5, 1],
        contype=0,
        conaffinity=0,
    )


def _add_inspection_camera(wb: mujoco.MjsBody, name: str, plant: PlantDescription) -> None:
    """The machine's camera on its table top under the station's view point, looking up at the
    underside of a part presented there, framing the largest part type; a spot light beside it."""
    view = plant.inspection_view(name)
    if view is None or not plant.part_types:
        return
    m = plant.machines[name]
    vx, vy, vz = view[1].xyz_m
    top = m.pose.xyz_m[2] + m.size_m[2]
    lens = top + 0.02
    # A part may come any face down, its centre up to half its size below the grip point.
    widest = max(max(t.size_m) for t in plant.part_types.values())
    distance = vz - widest - lens
    if distance <= 0.02:
        return  # the view point sits on the table: no room to look up at a part
    body = wb.add_body(name=f"{name}/camera_mount", pos=[vx, vy, top])
    body.add_geom(
        name=f"{name}/lens", type=G.mjGEOM_CYLINDER, pos=[0, 0, 0.01], size=[0.025, 0.01, 0], rgba=[0.05, 0.05, 0.06, 1]
    ).contype = 0
    # A camera looks along its -z: turned half a turn about x, it looks up.
    fovy = math.degrees(2 * math.atan(0.75 * widest / distance))
    wb.add_camera(name=f"{name}/camera", pos=[vx, vy, lens], quat=[0, 1, 0, 0], fovy=min(fovy, 90.0))
    wb.add_light(
        name=f"{name}/light",
        pos=[vx + 0.05, vy, lens],
        dir=[-0.2, 0, 1],
        castshadow=False,
        diffuse=[0.7, 0.7, 0.7],
        cutoff=70,
    )


def _add_bin(wb: mujoco.MjsBody, name: str, b: object) -> None:
    pose = b.pose  # type: ignore[attr-defined]
    sx, sy, sz = b.size_m  # type: ignore[attr-defined]
    x, y, z = pose.xyz_m
    color = _COLORS["quarantine"] if b.role in ("quarantine", "scrap") else _COLORS["bin"]  # type: ignore[attr-defined]
    stand = wb.add_body(name=f"{name}/stand", pos=[x, y, 0])
    _box(stand, None, (0, 0, z / 2), (sx / 2 - 0.02, sy / 2 - 0.02, z / 2), _COLORS["frame"])
    body = wb.add_body(name=name, pos=[x, y, z], quat=_quat(pose))
    t = 0.01
    _box(body, f"{name}/bottom", (0, 0, t / 2), (sx / 2, sy / 2, t / 2), color)
    _box(body, None, (sx / 2 - t / 2, 0, sz / 2), (t / 2, sy / 2, sz / 2), color)
    _box(body, None, (-sx / 2 + t / 2, 0, sz / 2), (t / 2, sy / 2, sz / 2), color)
    _box(body, None, (0, sy / 2 - t / 2, sz / 2), (sx / 2, t / 2, sz / 2), color)
    _box(body, None, (0, -sy / 2 + t / 2, sz / 2), (sx / 2, t / 2, sz / 2), color)


def _add_robot(spec: mujoco.MjSpec, name: str, robot: object, index: int, n_robots: int) -> None:
    model = robot.model  # type: ignore[attr-defined]
    base: Pose = robot.base  # type: ignore[attr-defined]
    tool_model = robot.tool.model  # type: ignore[attr-defined]
    cat = ROBOT_MODELS[model]
    arm = mujoco.MjSpec.from_file(str(robot_file(model)))
    # Replace the torque motors with joint position servos (what a robot driver offers) and
    # compensate gravity, so a commanded pose is held without a torque controller in python.
    for act in list(arm.actuators):
        arm.delete(act)
    limits = robot.limits()  # type: ignore[attr-defined]
    for i, jname in enumerate(cat.joint_names):
        j = arm.joint(jname)
        j.range = list(limits[i])
        j.damping = [2.0, 0.0, 0.0]
        j.armature = 0.1
        a = arm.add_actuator(name=jname, target=jname, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        kp = 2000.0 if i < 3 else 500.0
        a.set_to_position(kp=kp, kv=2 * math.sqrt(kp) * 1.5)
        a.ctrlrange = list(limits[i])
        a.ctrllimited = True
    for b in arm.bodies:
        if b.name not in ("world",):
            b.gravcomp = 1.0
    tool = mujoco.MjSpec.from_file(str(tool_file(tool_model)))
    for b in tool.bodies:
        if b.name not in ("world",):
            b.gravcomp = 1.0
    flange = arm.body(ROBOT_ASSETS[model].flange_body)
    frame = flange.add_frame()
    frame.attach_body(tool.worldbody.first_body(), "tool/", "")
    # Robot geoms collide with static things, parts, people and other robots, not themselves.
    own = 1 << (ROBOT_BITS_FROM + index)
    others = sum(1 << (ROBOT_BITS_FROM + k) for k in range(n_robots) if k != index)
    for g in arm.geoms:
        if g.contype or g.conaffinity:
            g.contype, g.conaffinity = own, STATIC | DYNAMIC | others
    wb = spec.worldbody
    x, y, z = base.xyz_m
    if z > 0.05:
        ped = wb.add_body(name=f"{name}/pedestal", pos=[x, y, 0])
        pg = ped.add_geom(
            type=G.mjGEOM_CYLINDER, pos=[0, 0, z / 2], size=[0.12, z / 2 - 0.001, 0], rgba=list(_COLORS["pedestal"])
        )
        pg.contype = pg.conaffinity = STATIC
        ped.add_geom(
            type=G.mjGEOM_BOX,
            pos=[0, 0, 0.01],
            size=[0.22, 0.22, 0.01],
            rgba=list(_COLORS["pedestal"]),
            contype=0,
            conaffinity=0,
        )
    mount = wb.add_frame(pos=list(base.xyz_m), quat=_quat(base))
    spec.attach(arm, prefix=f"{name}/", frame=mount)
    _ = TOOL_ASSETS[tool_model]

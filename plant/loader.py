"""Load a plant description from YAML, with errors for people.

Every problem is reported as ``file:line:column: field.path: reason``. Loading is all or
nothing: on any problem :class:`PlantError` is raised carrying every problem found, and no
partly built plant is returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from plant.catalog import ROBOT_MODELS
from plant.commands import arg_problem, check_commands
from plant.config import BIN_GAP_M, REQUIRED_TAGS, PlantDescription
from plant.skills import SKILLS

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plant file, and where."""

    file: str
    line: int
    column: int
    path: str
    reason: str

    def __str__(self) -> str:
        where = self.path or "(top level)"
        return f"{self.file}:{self.line}:{self.column}: {where}: {self.reason}"


class PlantError(ValueError):
    """A plant description could not be loaded. ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"plant description rejected ({count}):\n" + "\n".join(f"  {p}" for p in problems))


# --------------------------------------------------------------------------- YAML with positions


class _Positions:
    """Maps a field path to the (line, column) where its value starts (1-based)."""

    def __init__(self) -> None:
        self.at: dict[PathT, tuple[int, int]] = {}
        self.key_at: dict[PathT, tuple[int, int]] = {}

    def find(self, path: PathT) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that exists in the file."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.at:
                # A missing key is best shown at its parent mapping's first key.
                return self.at[path[:n]]
        return (1, 1)


def _at(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _key_error(file: str, key_node: yaml.Node, path: PathT, message: str) -> PlantError:
    return PlantError([Problem(file, *_at(key_node), ".".join(map(str, path)), message)])


def _construct(node: yaml.Node, path: PathT, pos: _Positions, file: str) -> Any:
    pos.at[path] = _at(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _key_error(file, key_node, path, "YAML merge keys (<<) are not allowed")
            key = _construct(key_node, (*path, "<key>"), pos, file)
            if not isinstance(key, str | int):
                raise _key_error(file, key_node, path, "a key must be a plain name")
            key = str(key)
            if key in out:
                first = pos.key_at[(*path, key)][0]
                raise _key_error(file, key_node, (*path, key), f"duplicate key {key!r} (the first is on line {first})")
            pos.key_at[(*path, key)] = _at(key_node)
            out[key] = _construct(value_node, (*path, key), pos, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*path, i), pos, file) for i, v in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return yaml.SafeLoader(" ").construct_object(node, deep=True)


def _parse(text: str, file: str) -> tuple[Any, _Positions]:
    pos = _Positions()
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PlantError([Problem(file, line, col, "", f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise PlantError([Problem(file, 1, 1, "", f"not valid YAML: {exc}")]) from None
    if node is None:
        raise PlantError([Problem(file, 1, 1, "", "the file is empty")])
    data = _construct(node, (), pos, file)
    if not isinstance(data, dict):
        raise PlantError([Problem(file, 1, 1, "", "a plant file must be a mapping at its top level")])
    return data, pos


# --------------------------------------------------------------------------- pydantic errors

_UNION_TAGS = {"opcua", "modbus", "box", "cylinder", "OpcuaMachine", "ModbusMachine", "BoxShape", "CylinderShape"}


def _clean_loc(loc: Iterable[str | int], data: Any) -> PathT:
    """Drop the discriminator labels pydantic adds to a union's error location."""
    out: list[str | int] = []
    cursor: Any = data
    for part in loc:
        if isinstance(cursor, dict) and part in cursor:
            out.append(part)
            cursor = cursor[part]
        elif isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor):
            out.append(part)
            cursor = cursor[part]
        elif part in _UNION_TAGS or (isinstance(part, str) and part.startswith(("function-", "tagged-union["))):
            continue
        else:
            out.append(part)
            cursor = None
    return tuple(out)


def _reason(err: Any) -> str:
    kind = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (not part of the plant description format; check its spelling)"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "string_pattern_mismatch" and "lower_snake_case" not in msg:
        return f"{msg} (got {err.get('input')!r})"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "required field is missing (it decides which kind this is)"
    return msg


def format_path(path: PathT) -> str:
    """A path into a file's data as it is written: ``robots.<name>.skills[2]``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# --------------------------------------------------------------------------- cross references


def check_references(plant: PlantDescription) -> list[tuple[PathT, str]]:
    """Everything that is well-typed but wrong in context: dangling names, overlaps, clashes.

    Returns (field path, reason) pairs; an empty list means the plant is consistent.
    """
    bad: list[tuple[PathT, str]] = []
    locations = plant.locations()
    agents = plant.agents()

    # One namespace for everything a plan can name, so an argument is never ambiguous.
    seen: dict[str, str] = {}
    groups: list[tuple[str, Iterable[str]]] = [
        ("stations", plant.stations),
        ("machines", plant.machines),
        ("robots", plant.robots),
        ("zones", plant.zones),
        ("part_types", plant.part_types),
        ("parts", plant.parts),
        ("recipes", plant.recipes),
    ]
    for sname, st in plant.stations.items():
        groups.append((f"stations.{sname}.locations", st.locations))
        groups.append((f"stations.{sname}.bins", st.bins))
    for group, names in groups:
        for n in names:
            if n in seen:
                bad.append(((*group.split("."), n), f"name {n!r} is already used in {seen[n]}; names must be unique"))
            else:
                seen[n] = group

    w, h = plant.cell.size_m

    def outside(x: float, y: float) -> bool:
        return not (0 <= x <= w and 0 <= y <= h)

    for name, m in plant.machines.items():
        if m.station is not None and m.station not in plant.stations:
            bad.append((("machines", name, "station"), f"no station named {m.station!r}"))
        missing = [t for t in (*REQUIRED_TAGS, *(("door_closed",) if m.has_door else ())) if t not in m.tags]
        if missing:
            why = " (door_closed: the machine has_door)" if "door_closed" in missing else ""
            bad.append((("machines", name, "tags"), f"missing required tags: {', '.join(missing)}{why}"))
        if "door_open" in m.tags and not m.has_door:
            bad.append((("machines", name, "tags", "door_open"), "door_open needs a door (has_door)"))
        for a, b in (("command_seq", "command_ack"), ("command_ack", "command_seq")):
            if a in m.tags and b not in m.tags:
                bad.append(
                    (("machines", name, "tags", a), f"{a} goes with {b} (the sequence handshake); map both or neither")
                )
        bad.extend(check_commands(name, m))
        for tname in ("command", "command_seq"):
            if tname in m.tags and not m.tags[tname].writable:
                bad.append((("machines", name, "tags", tname, "access"), f"the {tname} tag must be writable"))
        if outside(*m.pose.xyz_m[:2]):
            bad.append((("machines", name, "pose", "xyz_m"), f"lies outside the cell (0..{w}, 0..{h} m)"))
        if m.protocol == "modbus":
            bad.extend(_modbus_overlaps(name, m.tags))

    robot_items = list(plant.robots.items())
    for i, (name, r) in enumerate(robot_items):
        x, y, _ = r.base.xyz_m
        if outside(x, y):
            bad.append((("robots", name, "base", "xyz_m"), f"lies outside the cell (0..{w}, 0..{h} m)"))
        spec = ROBOT_MODELS[r.model]
        for other, r2 in robot_items[i + 1 :]:
            d = math.dist(r.base.xyz_m[:2], r2.base.xyz_m[:2])
            need = spec.footprint_radius_m + ROBOT_MODELS[r2.model].footprint_radius_m
            if d < need:
                bad.append(
                    (
                        ("robots", other, "base", "xyz_m"),
                        f"overlaps robot {name!r}: bases are {d:.3f} m apart, at least {need:.3f} m needed",
                    )
                )
        for zname, z in plant.zones.items():
            if z.kind == "keep_out" and z.shape.contains_xy(x, y):
                bad.append((("robots", name, "base", "xyz_m"), f"stands inside keep-out zone {zname!r}"))
        if r.tool.max_payload_kg is not None and r.payload_kg is not None and r.tool.max_payload_kg < r.payload_kg:
            bad.append((("robots", name, "payload_kg"), "exceeds the payload of its tool"))

    for name, p in plant.people.items():
        zone = plant.zones.get(p.walkway)
        if zone is None:
            bad.append((("people", name, "walkway"), f"no zone named {p.walkway!r}"))
        elif zone.kind != "walkway":
            bad.append((("people", name, "walkway"), f"zone {p.walkway!r} is a {zone.kind} zone, not a walkway"))
        else:
            for k, (x, y) in enumerate(p.path_m):
                if not zone.shape.contains_xy(x, y):
                    bad.append((("people", name, "path_m", k), f"point ({x}, {y}) lies outside walkway {p.walkway!r}"))

    for name, part in plant.parts.items():
        if part.type not in plant.part_types:
            bad.append((("parts", name, "type"), f"no part type named {part.type!r}"))
        elif part.defect not in (None, "none") and part.defect not in plant.part_types[part.type].defects:
            bad.append((("parts", name, "defect"), f"part type {part.type!r} does not list the defect {part.defect!r}"))
        if part.at not in locations:
            bad.append((("parts", name, "at"), f"no location or bin named {part.at!r}"))
    bins = plant.bins()
    for bname, container in bins.items():
        inside = [n for n, p in plant.parts.items() if p.at == bname and p.type in plant.part_types]
        if inside:
            side = max(max(plant.part_types[plant.parts[n].type].size_m[:2]) for n in inside)
            room = len(container.spots_m(side, BIN_GAP_M))
            if len(inside) > room:
                bad.append(
                    (
                        ("parts", inside[room], "at"),
                        f"bin {bname!r} has room for {room} such parts side by side, and this is part {room + 1}",
                    )
                )
    for name, m in plant.machines.items():
        feeder = m.belt.feeder if m.belt is not None else None
        if feeder is not None and (feeder not in bins or bins[feeder].role != "input"):
            what = f"a bin of role {bins[feeder].role}" if feeder in bins else "not a bin"
            bad.append((("machines", name, "belt", "feeder"), f"{feeder!r} is {what}; a feeder is an input bin"))

    for rname, recipe in plant.recipes.items():
        bad.extend(_check_recipe(plant, rname, recipe, locations, agents))
    return bad


def _modbus_overlaps(machine: str, tags: dict[str, Any]) -> list[tuple[PathT, str]]:
    bad: list[tuple[PathT, str]] = []
    used: dict[tuple[str, int], str] = {}
    for tname, t in tags.items():
        table = "bits" if t.table in ("coil", "discrete_input") else t.table
        table = f"{table}:{t.table}"
        for a in range(t.address, t.address + t.register_count):
            if (table, a) in used:
                bad.append(
                    (
                        ("machines", machine, "tags", tname, "address"),
                        f"{t.table} address {a} is also used by tag {used[(table, a)]!r}",
                    )
                )
                break
            used[(table, a)] = tname
    return bad


def _check_recipe(
    plant: PlantDescription, rname: str, recipe: Any, locations: dict[str, Any], agents: Mapping[str, str]
) -> list[tuple[PathT, str]]:
    bad: list[tuple[PathT, str]] = []
    step_ids: set[str] = set()
    for i, step in enumerate(recipe.steps):
        here: PathT = ("recipes", rname, "steps", i)
        if step.id in step_ids:
            bad.append(((*here, "id"), f"step id {step.id!r} is used twice"))
        for dep in step.after:
            if dep not in step_ids:
                bad.append(((*here, "after"), f"{dep!r} is not an earlier step of this recipe"))
        step_ids.add(step.id)
        if step.skill not in SKILLS and not any(step.skill in plant.agent_skills(a) for a in plant.machines):
            bad.append(((*here, "skill"), f"unknown skill {step.skill!r}; known: {', '.join(sorted(SKILLS))}"))
            continue
        skill = SKILLS.get(step.skill)
        param = _param_ref(step.agent)
        if param is not None:
            if param not in recipe.params:
                bad.append(((*here, "agent"), f"refers to {{{param}}}, which is not a parameter of this recipe"))
            if skill is None:
                # An agent chosen by the work order: the skill must be one some machine declares.
                skill = next(
                    (plant.skill_spec(a, step.skill) for a in plant.machines if step.skill in plant.agent_skills(a)),
                    None,
                )
        elif step.agent not in agents:
            bad.append(((*here, "agent"), f"no robot or machine named {step.agent!r}"))
        elif step.skill not in plant.agent_skills(step.agent):
            bad.append(((*here, "skill"), f"{step.agent!r} cannot perform skill {step.skill!r}"))
            skill = None
        else:
            skill = plant.skill_spec(step.agent, step.skill)
        if skill is None:
            continue
        for arg in step.args:
            if arg not in skill.args:
                bad.append(((*here, "args", arg), f"skill {step.skill!r} takes no argument {arg!r}"))
        for arg, spec in skill.args.items():
            if spec.required and arg not in step.args:
                bad.append(((*here, "args"), f"skill {step.skill!r} needs argument {arg!r}"))
                continue
            if arg not in step.args:
                continue
            value = step.args[arg]
            ref = _param_ref(value) if isinstance(value, str) else None
            if ref is not None:
                if ref not in recipe.params:
                    bad.append(((*here, "args", arg), f"refers to {{{ref}}}, which is not a parameter of this recipe"))
                continue
            reason = _check_arg_value(plant, spec.type, value, locations)
            if reason is None and spec.type in ("float", "int", "str"):
                reason = arg_problem(spec, value)
            if reason:
                bad.append(((*here, "args", arg), reason))
    return bad


def _param_ref(value: str) -> str | None:
    if value.startswith("{") and value.endswith("}"):
        return value[1:-1]
    return None


def _check_arg_value(plant: PlantDescription, kind: str, value: Any, locations: dict[str, Any]) -> str | None:
    lookup: dict[str, Any] = {
        "location": locations,
        "part_type": plant.part_types,
        "robot": plant.robots,
        "machine": plant.machines,
        "bin": plant.bins(),
    }
    if kind in lookup:
        if value not in lookup[kind]:
            return f"no {kind.replace('_', ' ')} named {value!r}"
    elif kind in ("float", "int") and not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    return None


# --------------------------------------------------------------------------- entry points


def load_plant_text(text: str, file: str = "<string>") -> PlantDescription:
    """Parse and validate a plant description; raise :class:`PlantError` listing every problem."""
    data, pos = _parse(text, file)
    try:
        plant = PlantDescription.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _clean_loc(err["loc"], data)
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                # Point at the discriminating field itself (protocol, type), not its parent.
                path = (*path, str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
            line, col = pos.key_at.get(path) or pos.find(path)
            problems.append(Problem(file, line, col, format_path(path), _reason(err)))
        raise PlantError(list(dict.fromkeys(problems))) from None
    refs = check_references(plant)
    if refs:
        problems = []
        for path, reason in refs:
            line, col = pos.key_at.get(path) or pos.find(path)
            problems.append(Problem(file, line, col, format_path(path), reason))
        raise PlantError(list(dict.fromkeys(problems)))
    return plant


def load_plant(path: str | Path | None = None) -> PlantDescription:
    """Load a plant file; ``None`` loads the shipped default plant (the demo cell)."""
    if path is None:
        return load_plant_text(default_plant_text(), "plants/demo_cell.yaml")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlantError([Problem(str(p), 0, 0, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise PlantError([Problem(str(p), 0, 0, "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise PlantError([Problem(str(p), 0, 0, "", f"cannot read the file: {exc.strerror}")]) from None
    return load_plant_text(text, str(p))


def default_plant_text() -> str:
    """The text of the shipped demo cell (packaged with ``plant``, mirrored in ``plants/``)."""
    return resources.files("plant").joinpath("data/demo_cell.yaml").read_text(encoding="utf-8")

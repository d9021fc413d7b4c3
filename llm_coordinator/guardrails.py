"""Guardrails: deterministic checks of a plan against the static rules of the plant.

:func:`check` takes only a :class:`~llm_coordinator.plan.Plan`, the static
:class:`~plant.config.PlantDescription` and, for interlocks, a state snapshot with machine
states and door positions. It never reads model output other than the plan itself, nor any
text from machines or people, so nothing a model or a machine writes can change a rule.

Each check yields :class:`Finding` objects with a rule id, a step id, pass or fail, and a
reason a person understands. The rules:

``plan_shape``      unique step ids; dependencies name steps of the plan
``agent_exists``    the agent is a robot or a machine of the plant
``skill_allowed``   the skill exists and that agent is allowed it
``args_valid``      required arguments present, none unknown, names exist, numbers in range
``acyclic``         the dependencies have no cycle
``reach``           a robot's target lies within its model's reach
``zones``           the plant's safety model (:mod:`plant.safety_model`, which the robots'
                    supervisors enforce): no robot's tool at a target outside the geofence
                    or inside a zone the robot may not enter (keep-out zones, walkways,
                    hazard zones), and none so close to a walkway that the supervisor would
                    stop the robot whenever someone walks there (the ISO/TS 15066 protective
                    separation distance at the robot's lowest speed)
``resource``        steps that share an agent, a hand-over partner, a location or a machine's
                    inside are ordered (never run in parallel)
``machine_ready``   a machine in fault, aborted or unreachable is reset before it is used
``machine_alarm``   no step uses a machine in alarm (a reading outside its declared range)
``door_closed_before_start``   a machine with a door has it closed when a cycle starts
``no_robot_in_running_machine`` no robot is inside a machine when it runs or moves its door
``door_open_for_reach``        a robot reaches into a machine with a door only when it is open
``decisions``       each condition reads a readable tag of a machine of the plant, with a value
                    the tag can hold; each step that needs a decision comes after the steps the
                    decision waits for; decisions named exist and need only earlier decisions
``hazard``          steps near a hazard zone, joint-space moves and recipe steps marked
                    hazardous carry the hazard flag (so the approval needs an operator)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from llm_coordinator._geometry import machine_locations, reach_distance_m, step_location
from llm_coordinator.plan import Plan, Step
from llm_coordinator.snapshot import PlantSnapshot
from plant.commands import machine_commands
from plant.config import PlantDescription
from plant.safety_model import (
    HAZARD_REACH_MARGIN_M,
    TOOL_RADIUS_M,
    distance_to_zone_xy,
    entry_permit,
    geofence_m,
    keep_out_volumes,
    walkway_clearance,
    walkway_speed_m_s,
)

DOOR_SKILLS = frozenset({"open_door", "close_door"})
#: Skills whose target is a joint vector, not a named location: a person confirms them.
JOINT_SPACE_SKILLS = frozenset({"move_joints"})
#: Machine states from which only a reset brings the machine back to work.
NEEDS_RESET = frozenset({"ABORTED", "ABORTING", "STOPPED", "STOPPING", "UNREACHABLE", "UNDEFINED"})


@dataclass(frozen=True)
class Finding:
    """One rule applied to one step (or to the plan when ``step`` is None)."""

    rule: str
    step: str | None
    ok: bool
    reason: str

    def __str__(self) -> str:
        where = f"step {self.step}" if self.step else "plan"
        return f"[{self.rule}] {where}: {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """All findings for a plan; ``ok`` when none failed. ``hazards`` maps step id -> why."""

    findings: tuple[Finding, ...]
    hazards: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def reasons(self) -> list[str]:
        """The failures as sentences, for a person and for the model's next attempt."""
        return [str(f) for f in self.failures]


# --------------------------------------------------------------------------- hazards


def hazard_reasons(plan: Plan, plant: PlantDescription) -> dict[str, str]:
    """Steps that need an operator's confirmation, with the reason (from the static rules only).

    A step the plan itself flags stays hazardous; the rules can add flags, never remove one.
    """
    out: dict[str, str] = {}
    locations = plant.locations()
    for s in plan.steps:
        reasons: list[str] = []
        if s.skill in JOINT_SPACE_SKILLS:
            reasons.append("moves the robot to raw joint angles, not a named location")
        loc = step_location(plant, s.skill, s.args)
        if s.agent in plant.robots and loc in locations:
            # (Near a walkway the supervisor's speed and separation monitoring protects people:
            # the zones rule rejects a target where it would stop the robot; no flag here.)
            x, y, _ = locations[loc].xyz_m
            for zname, z in plant.zones.items():
                if z.kind == "hazard":
                    d = distance_to_zone_xy(z, x, y)
                    if d <= HAZARD_REACH_MARGIN_M:
                        reasons.append(
                            f"{loc} is {d:.2f} m from hazard zone {zname} ({z.hazard_class}); "
                            f"closer than {HAZARD_REACH_MARGIN_M} m"
                        )
        if s.hazardous and not reasons:
            reasons.append("marked hazardous by its recipe or plan")
        if reasons:
            out[s.id] = "; ".join(reasons)
    return out


def mark_hazards(plan: Plan, plant: PlantDescription) -> Plan:
    """The same plan with every step the rules find hazardous flagged as such."""
    hz = hazard_reasons(plan, plant)
    if all(s.hazardous == (s.id in hz) for s in plan.steps):
        return plan
    steps = [s.model_copy(update={"hazardous": s.id in hz}) for s in plan.steps]
    return plan.model_copy(update={"steps": steps})


# --------------------------------------------------------------------------- order analysis


def _ancestors(steps: list[Step]) -> dict[str, set[str]] | list[str]:
    """Transitive dependencies of each step, or a cycle (list of step ids) if there is one."""
    deps = {s.id: [d for d in s.after if d != s.id] for s in steps}
    out: dict[str, set[str]] = {}
    visiting: list[str] = []
    on_path: set[str] = set()

    def visit(n: str) -> list[str] | None:
        if n in out:
            return None
        if n in on_path:
            return [*visiting[visiting.index(n) :], n]
        on_path.add(n)
        visiting.append(n)
        acc: set[str] = set()
        for d in deps.get(n, []):
            if d not in deps:
                continue
            cyc = visit(d)
            if cyc is not None:
                return cyc
            acc.add(d)
            acc |= out[d]
        visiting.pop()
        on_path.discard(n)
        out[n] = acc
        return None

    for s in steps:
        cyc = visit(s.id)
        if cyc is not None:
            return cyc
    return out


def step_resources(
    plant: PlantDescription, agent: str, skill: str, args: Mapping[str, object], inside: Mapping[str, str]
) -> set[str]:
    """What a step occupies while it runs: its agent, a hand-over partner, the location a robot
    goes to, and the inside of a machine (claimed by robots reaching in and by the machine when
    it runs or moves its door). Two steps sharing one must never run in parallel."""
    res = {f"agent:{agent}"}
    to_robot = args.get("to_robot")
    if skill == "hand_over" and isinstance(to_robot, str):
        res.add(f"agent:{to_robot}")
    if agent in plant.robots:
        loc = step_location(plant, skill, args)
        if loc is not None:
            res.add(f"location:{loc}")
            if loc in inside:
                res.add(f"inside:{inside[loc]}")
    elif is_running(plant, agent, skill) or skill in DOOR_SKILLS:
        res.add(f"inside:{agent}")
    return res


def interlock_preconditions(
    plant: PlantDescription,
    agent: str,
    skill: str,
    args: Mapping[str, object],
    door: Mapping[str, bool | None],
    robot_in: Mapping[str, str | None],
) -> list[tuple[str, str, str]]:
    """The steps (agent, skill, why) a person puts in front of this step so that the interlock
    rules checked below hold: robots out of a machine before it runs or moves its door, the door
    closed before a cycle, and open before a robot reaches in. ``door`` is each machine's door
    (closed True, open False, unknown None) and ``robot_in`` the machine each robot is inside,
    as the plan leaves them just before the step. The one statement of these rules that the
    expansion of orders uses; :func:`check` holds every plan to them."""
    out: list[tuple[str, str, str]] = []
    machine = plant.machines.get(agent)
    if machine is not None and (is_running(plant, agent, skill) or skill in DOOR_SKILLS):
        for r, where in robot_in.items():
            if where == agent:
                out.append((r, "home", f"{r} must leave {agent} before it {skill.replace('_', ' ')}s"))
        if is_running(plant, agent, skill) and machine.has_door and door.get(agent) is not True:
            out.append((agent, "close_door", "the door must be closed before a cycle starts"))
    if agent in plant.robots:
        loc = step_location(plant, skill, args)
        target = machine_locations(plant).get(loc or "")
        if target is not None and plant.machines[target].has_door and door.get(target) is not False:
            out.append((target, "open_door", f"{agent} reaches into {target}"))
    return out


def is_running(plant: PlantDescription, agent: str, skill: str) -> bool:
    """Whether the machine moves (spindle, ram, belt, pump) while the step runs: a command that
    the plant's command table marks as interlocked (a cycle, start, a feed, a declared cycle)."""
    machine = plant.machines.get(agent)
    if machine is None:
        return False
    spec = machine_commands(machine).get(skill)
    return spec is not None and spec.interlock


def _check_decisions(plan: Plan, plant: PlantDescription, anc: dict[str, set[str]]) -> Iterable[Finding]:
    ids = {s.id for s in plan.steps}
    seen: list[str] = []
    for d in plan.decisions:
        bad: list[str] = []
        if d.id in seen:
            bad.append("decision id used twice")
        bad += [f"requires {r}, which is not an earlier decision" for r in d.requires if r not in seen]
        bad += [f"waits for step {a}, which is not in the plan" for a in d.after if a not in ids]
        c = d.condition
        machine = plant.machines.get(c.machine)
        tag = machine.tags.get(c.tag) if machine is not None else None
        if machine is None:
            bad.append(f"reads {c.machine!r}, which is no machine of the plant")
        elif tag is None:
            bad.append(f"reads {c.machine}.{c.tag}, which the machine does not have")
        elif tag.access == "write":
            bad.append(f"{c.machine}.{c.tag} cannot be read")
        elif isinstance(c.value, int | float) and not isinstance(c.value, bool):
            lo, hi = tag.min, tag.max
            if c.op in ("==", "!=") and ((lo is not None and c.value < lo) or (hi is not None and c.value > hi)):
                bad.append(f"{c.machine}.{c.tag} never holds {c.value:g} (its range is {lo}..{hi})")
        seen.append(d.id)
        yield Finding(
            "decisions", None, not bad, f"decision {d.id} ({c.describe()}): " + ("; ".join(bad) or "well formed")
        )
    known = {d.id: d for d in plan.decisions}
    for s in plan.steps:
        for did in s.when:
            needed = known.get(did)
            if needed is None:
                yield Finding("decisions", s.id, False, f"needs decision {did!r}, which the plan does not have")
                continue
            early = [a for a in needed.after if a in ids and a not in anc.get(s.id, set())]
            if early:
                yield Finding(
                    "decisions", s.id, False, f"may start before step {early[0]} ends, which decision {did} waits for"
                )


# --------------------------------------------------------------------------- the checks


def _check_step_static(s: Step, plant: PlantDescription) -> Iterable[Finding]:
    agents = plant.agents()
    if s.agent not in agents:
        yield Finding("agent_exists", s.id, False, f"there is no agent named {s.agent!r} in plant {plant.name}")
        return
    yield Finding("agent_exists", s.id, True, f"{s.agent} is a {agents[s.agent]}")
    allowed = plant.agent_skills(s.agent)
    if s.skill not in allowed:
        yield Finding(
            "skill_allowed", s.id, False, f"{s.agent} may not perform {s.skill}; it may: {', '.join(allowed)}"
        )
        return
    yield Finding("skill_allowed", s.id, True, f"{s.agent} may perform {s.skill}")
    yield from _check_args(s, plant)


def _check_args(s: Step, plant: PlantDescription) -> Iterable[Finding]:
    spec = plant.skill_spec(s.agent, s.skill)
    bad: list[str] = []
    for name in s.args:
        if name not in spec.args:
            bad.append(f"{s.skill} takes no argument {name!r}")
    for name, a in spec.args.items():
        if name not in s.args:
            if a.required:
                bad.append(f"argument {name!r} ({a.type}) is missing")
            continue
        v = s.args[name]
        match a.type:
            case "location":
                if v not in plant.locations():
                    bad.append(f"{name}={v!r} is not a location of the plant")
            case "bin":
                if v not in plant.bins():
                    bad.append(f"{name}={v!r} is not a bin of the plant")
            case "part_type":
                if v not in plant.part_types:
                    bad.append(f"{name}={v!r} is not a part type of the plant")
            case "part":
                if v not in plant.parts:
                    bad.append(f"{name}={v!r} is not a part of the plant")
            case "robot":
                if v not in plant.robots:
                    bad.append(f"{name}={v!r} is not a robot of the plant")
                elif v == s.agent:
                    bad.append(f"{s.agent} cannot hand a part to itself")
            case "machine":
                if v not in plant.machines:
                    bad.append(f"{name}={v!r} is not a machine of the plant")
                elif s.skill == "present" and plant.machines[v].kind != "inspection":
                    bad.append(f"{v} is a {plant.machines[v].kind}, not an inspection machine")
            case "int" | "float":
                if (
                    isinstance(v, bool)
                    or not isinstance(v, int | float)
                    or (a.type == "int" and not isinstance(v, int))
                ):
                    bad.append(f"{name}={v!r} is not {'an integer' if a.type == 'int' else 'a number'}")
                elif (a.min is not None and v < a.min) or (a.max is not None and v > a.max):
                    bad.append(
                        f"{name}={v} is outside {a.min:g}..{a.max:g}"
                        if a.min is not None and a.max is not None
                        else f"{name}={v} is out of range"
                    )
            case "str":
                choices = getattr(a, "choices", None)
                if not isinstance(v, str) or (choices and v not in choices):
                    bad.append(f"{name}={v!r} is not one of {', '.join(choices or [])}")
            case "joints":
                robot = plant.robots.get(s.agent)
                if robot is None or not isinstance(v, list):
                    bad.append(f"{name} must be a list of joint angles in rad")
                else:
                    limits = robot.limits()
                    if len(v) != len(limits):
                        bad.append(f"{name} has {len(v)} angles; {s.agent} has {len(limits)} joints")
                    else:
                        for i, (q, (lo, hi)) in enumerate(zip(v, limits, strict=True)):
                            if not lo <= q <= hi:
                                bad.append(f"{name}[{i}]={q:g} rad is outside the joint limits {lo:g}..{hi:g} rad")
    if bad:
        yield Finding("args_valid", s.id, False, "; ".join(bad))
    else:
        yield Finding("args_valid", s.id, True, "arguments are complete and in range")


def _check_geometry(s: Step, plant: PlantDescription) -> Iterable[Finding]:
    if s.agent not in plant.robots:
        return
    loc = step_location(plant, s.skill, s.args)
    if loc is None or loc not in plant.locations():
        return
    dist, reach = reach_distance_m(plant, s.agent, loc)
    if dist > reach:
        yield Finding("reach", s.id, False, f"{loc} is {dist:.2f} m from {s.agent}'s base; its reach is {reach:.2f} m")
    else:
        yield Finding("reach", s.id, True, f"{loc} is within reach of {s.agent} ({dist:.2f} of {reach:.2f} m)")
    robots = [s.agent]
    to_robot = s.args.get("to_robot")
    if s.skill == "hand_over" and isinstance(to_robot, str) and to_robot in plant.robots and to_robot != s.agent:
        robots.append(to_robot)  # the receiver's tool comes to the same point
    yield _check_zones(s.id, loc, robots, plant)


def _check_zones(step: str, loc: str, robots: list[str], plant: PlantDescription) -> Finding:
    """The zones rule for the tools of ``robots`` at location ``loc``: what the plant's safety
    model forbids there, which is what the robots' supervisors stop."""
    xyz = plant.locations()[loc].xyz_m
    x, y, _ = xyz
    low, high = geofence_m(plant)
    r = TOOL_RADIUS_M
    if any(c - r < lo for c, lo in zip(xyz, low, strict=True)) or any(
        c + r > hi for c, hi in zip(xyz, high, strict=True)
    ):
        return Finding(
            "zones",
            step,
            False,
            f"{loc} at {[round(c, 3) for c in xyz]} puts the tool (radius {r:.2f} m) outside the cell's geofence "
            f"{list(low)}..{list(high)} m; the robot's supervisor refuses the motion",
        )
    point = np.array([xyz], dtype=float)
    for vol in keep_out_volumes(plant):
        d = float(vol.distances_m(point)[0])  # (the supervisor's own arithmetic, to the last bit)
        if not d < r:
            continue
        zone = plant.zones[vol.name]
        where = f"{loc} puts the tool (radius {r:.2f} m) inside {zone.kind.replace('_', '-')} zone {vol.name}"
        if d > 0:
            where += f" ({d:.2f} m from it)"
        if zone.kind == "keep_out":
            why = "robots never enter it"
        elif zone.kind == "walkway":
            why = "people walk there and robots never enter it"
        elif entry_permit(zone) == "never":
            why = f"a {zone.hazard_class} hazard the plant lets no robot into (permits: never)"
        else:
            why = (
                f"a {zone.hazard_class} hazard the plant lets a robot into on an operator's confirmation; "
                "no confirmation reaches the robot yet, so its supervisor keeps every hazard zone out"
            )
        return Finding("zones", step, False, f"{where}: {why}; the robot's supervisor refuses the motion")
    notes: list[str] = []
    for robot in robots:
        for zname, zone in plant.zones.items():
            if zone.kind != "walkway":
                continue
            d = distance_to_zone_xy(zone, x, y)
            wc = walkway_clearance(plant.robots[robot], d, human_speed_m_s=walkway_speed_m_s(plant, zname))
            if wc.rule == "stopped":
                return Finding(
                    "zones",
                    step,
                    False,
                    f"{loc} is {d:.2f} m from walkway {zname}: a person walking on its edge would be "
                    f"{wc.separation_m:.2f} m from {robot}'s tool, inside its protective separation distance "
                    f"even at its lowest speed, {wc.slowest.explain()}; its supervisor would stop it whenever "
                    f"someone walks by. Keep {robot}'s targets {wc.needed_m:.2f} m from {zname}",
                )
            if wc.rule == "slowed":
                notes.append(
                    f"{robot} slows while someone walks in {zname} ({d:.2f} m away; full speed needs "
                    f"{wc.full_speed_m:.2f} m: S_p {wc.full.distance_m:.2f} m at {wc.full.robot_speed_m_s:.2f} m/s)"
                )
    ok = f"{loc} is inside the geofence and outside every zone robots may not enter"
    return Finding("zones", step, True, f"{ok}; {'; '.join(notes)}" if notes else ok)


def check(plan: Plan, plant: PlantDescription, snapshot: PlantSnapshot | None = None) -> Verdict:
    """Apply every rule to ``plan``; see the module docstring. Never raises on a bad plan."""
    snapshot = snapshot or PlantSnapshot()
    findings: list[Finding] = []
    ids = [s.id for s in plan.steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        findings.append(Finding("plan_shape", None, False, f"step ids used twice: {', '.join(dupes)}"))
    for s in plan.steps:
        missing = [d for d in s.after if d not in ids]
        if missing:
            findings.append(
                Finding("plan_shape", s.id, False, f"waits for steps that do not exist: {', '.join(missing)}")
            )
        if s.id in s.after:
            findings.append(Finding("plan_shape", s.id, False, "waits for itself"))
    static_ok = True
    for s in plan.steps:
        for f in _check_step_static(s, plant):
            findings.append(f)
            static_ok &= f.ok
        findings.extend(_check_geometry(s, plant))
    anc = _ancestors(plan.steps)
    if isinstance(anc, list):
        findings.append(Finding("acyclic", anc[0], False, f"the dependencies form a cycle: {' -> '.join(anc)}"))
        return Verdict(tuple(findings), hazard_reasons(plan, plant))
    findings.append(Finding("acyclic", None, True, "the dependencies have no cycle"))
    if static_ok and not dupes:
        findings.extend(_check_order(plan, plant, snapshot, anc))
    findings.extend(_check_decisions(plan, plant, anc))
    hz = hazard_reasons(plan, plant)
    for s in plan.steps:
        if s.id in hz and not s.hazardous:
            findings.append(
                Finding(
                    "hazard", s.id, False, f"is hazardous ({hz[s.id]}) but not flagged; an operator must confirm it"
                )
            )
        elif s.id in hz:
            findings.append(Finding("hazard", s.id, True, f"flagged hazardous: {hz[s.id]}; needs an operator"))
    return Verdict(tuple(findings), hz)


def _check_order(
    plan: Plan, plant: PlantDescription, snapshot: PlantSnapshot, anc: dict[str, set[str]]
) -> Iterable[Finding]:
    order = {s.id: i for i, s in enumerate(plan.steps)}
    inside = machine_locations(plant)
    res = {s.id: step_resources(plant, s.agent, s.skill, s.args, inside) for s in plan.steps}

    def ordered(a: str, b: str) -> bool:
        return a in anc[b] or b in anc[a]

    def apart(a: Step, b: Step) -> bool:
        """Steps of opposite branches of one decision: they never both run."""
        return any(d in b.when and b.when[d] != v for d, v in a.when.items())

    # Resource conflicts between steps that may run in parallel.
    conflicts = 0
    for i, a in enumerate(plan.steps):
        for b in plan.steps[i + 1 :]:
            shared = res[a.id] & res[b.id]
            if shared and not ordered(a.id, b.id) and not apart(a, b):
                conflicts += 1
                what = ", ".join(sorted(r.split(":", 1)[1] for r in shared))
                yield Finding(
                    "resource", b.id, False, f"may run at the same time as {a.id} and both need {what}; order them"
                )
    if not conflicts:
        yield Finding("resource", None, True, "no two steps that may run in parallel share an agent or a place")

    # Machines that need a reset before use.
    for m, ms in snapshot.machines.items():
        used = [s for s in plan.steps if s.agent == m]
        if not used:
            continue
        if ms.state in NEEDS_RESET or ms.fault_code:
            first = min(used, key=lambda s: (len(anc[s.id]), order[s.id]))
            if first.skill != "reset":
                why = f"{m} is {ms.state}" + (f" with fault {ms.fault_code}" if ms.fault_code else "")
                yield Finding("machine_ready", first.id, False, f"{why}; the plan must reset it before using it")
        # A machine in alarm (a reading outside its declared range) takes no command but stop
        # or abort, so no step may use it until a person has corrected the value.
        for s in used if ms.alarms else []:
            yield Finding(
                "machine_alarm", s.id, False, f"{m} is in alarm: {'; '.join(ms.alarms)}; correct it before use"
            )

    def last_before(target: str, pred: Iterable[Step]) -> Step | None:
        cands = [s for s in pred if s.id in anc[target]]
        return max(cands, key=lambda s: (len(anc[s.id]), order[s.id])) if cands else None

    def door_closed_at(m: str, target: str) -> bool | None:
        last = last_before(target, (s for s in plan.steps if s.agent == m and s.skill in DOOR_SKILLS))
        if last is not None:
            return last.skill == "close_door"
        ms = snapshot.machines.get(m)
        return ms.door_closed if ms is not None else None

    def robots_inside_at(m: str, target: str) -> list[str]:
        """Robots inside machine ``m`` when ``target`` starts, or that may be (unordered steps)."""
        out: list[str] = []
        for r in plant.robots:
            r_steps = [s for s in plan.steps if s.agent == r or s.args.get("to_robot") == r]
            parallel = [
                s
                for s in r_steps
                if not ordered(s.id, target) and inside.get(step_location(plant, s.skill, s.args) or "") == m
            ]
            if parallel:
                out.append(f"{r} (step {parallel[0].id} may run meanwhile)")
                continue
            last = last_before(target, (s for s in r_steps if s.agent == r))
            if last is not None:
                loc = step_location(plant, last.skill, last.args)
                if loc is not None and inside.get(loc) == m:
                    out.append(f"{r} (still at {loc} after step {last.id})")
            else:
                rs = snapshot.robots.get(r)
                at = rs.at if rs is not None else None
                if at is not None and inside.get(at) == m:
                    out.append(f"{r} (at {at} now)")
        return out

    for s in plan.steps:
        machine = plant.machines.get(s.agent)
        if machine is not None and (is_running(plant, s.agent, s.skill) or s.skill in DOOR_SKILLS):
            if is_running(plant, s.agent, s.skill) and machine.has_door:
                closed = door_closed_at(s.agent, s.id)
                state = "closed" if closed else "open" if closed is False else "in an unknown position"
                fix = "" if closed else " when the cycle starts; add close_door before it"
                yield Finding(
                    "door_closed_before_start", s.id, closed is True, f"the door of {s.agent} is {state}{fix}"
                )
            robots = robots_inside_at(s.agent, s.id)
            verb = "runs" if is_running(plant, s.agent, s.skill) else "moves its door"
            inside_now = f"{s.agent} {verb} while a robot may be inside it: {', '.join(robots)}"
            why = inside_now if robots else f"no robot is inside {s.agent}"
            yield Finding("no_robot_in_running_machine", s.id, not robots, why)
        if s.agent in plant.robots:
            loc = step_location(plant, s.skill, s.args)
            mname = inside.get(loc or "")
            if mname is None:
                continue
            running = [
                o
                for o in plan.steps
                if o.agent == mname and is_running(plant, o.agent, o.skill) and not ordered(o.id, s.id)
            ]
            if running:
                yield Finding(
                    "no_robot_in_running_machine",
                    s.id,
                    False,
                    f"{s.agent} reaches into {mname} at {loc} while {running[0].id} may run it",
                )
            if plant.machines[mname].has_door and door_closed_at(mname, s.id) is not False:
                yield Finding(
                    "door_open_for_reach",
                    s.id,
                    False,
                    f"{s.agent} reaches into {mname} at {loc} but its door is not known to be open; "
                    "add open_door before it",
                )
            elif plant.machines[mname].has_door:
                yield Finding("door_open_for_reach", s.id, True, f"the door of {mname} is open")

"""Robot skills: from a :class:`~robots.interface.SkillGoal` to a list of steps the runtime runs.

A skill plans once, when its goal starts (inverse kinematics on the MuJoCo model, damped least
squares within the joint limits), into steps: joint moves (timed by the runtime from wherever
the robot then is, within the speed and acceleration limits), gripper actions, dwells, checks,
waits, and tracking phases (:class:`Track`: close in on a goal that moves, such as a part on a
running conveyor, with the runtime's phase controllers; a ``pick`` of a part the locator sees
moving approaches it this way, with a trained policy when the runtime has one). Planning
blocks the calling thread for 1-300 ms (IK); it never moves anything.

Skill names and arguments are those of :mod:`plant.skills`: ``home``, ``move_joints``
(``joints_rad``), ``move_to`` (``location``), ``pick`` (``part_type``, ``location``), ``place``
(``location``), ``hand_over`` (``to_robot``, ``location``), ``present`` (``machine``); and one
skill the runtime uses for the receiving side of a hand-over, ``take`` (``from_robot``,
``location``), which plans never name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from plant.catalog import ROBOT_MODELS, TOOL_MODELS
from plant.config import BIN_GAP_M, PlantDescription
from robots.interface import FloatArray, SkillGoal
from robots.kinematics import ArmKinematics
from robots.parts import SEARCH_RADIUS_M

#: The tool's z axis points along the approach: straight down for a top grasp.
DOWN = np.array([0.0, 0.0, -1.0])


class SkillError(Exception):
    """A skill that cannot be planned or carried out; the message is the reason given back."""


class PartLocator(Protocol):
    """Where parts are (a vision system, or the twin's ground truth)."""

    def locate(self, part_type: str, near_m: FloatArray, radius_m: float) -> FloatArray | None:
        """Centre (m, world) of the part of ``part_type`` nearest ``near_m`` within ``radius_m``,
        or None. Must not block longer than a few milliseconds."""


@dataclass(frozen=True)
class Sighting:
    """A part (or a point tied to it) as seen: where (m, world), how fast it moves (m/s, world;
    for a part on a running conveyor the belt speed the conveyor reports, along the belt) and
    how old the measurement is (s)."""

    position_m: FloatArray
    velocity_m_s: FloatArray
    age_s: float = 0.0


@runtime_checkable
class MovingPartLocator(PartLocator, Protocol):
    """A part locator that also says how the part moves (a conveyor's reported belt speed)."""

    def sight(self, part_type: str, near_m: FloatArray, radius_m: float) -> Sighting | None:
        """Like :meth:`PartLocator.locate`, with the part's velocity and the measurement's age."""


class PeerView(Protocol):
    """What this robot can see of another robot's runtime (for hand-overs)."""

    def phase(self, robot: str) -> str:
        """The phase of the other robot's running skill ("" when idle or unknown)."""


@dataclass(frozen=True)
class Move:
    """Move to ``target_rad`` in a straight joint-space line; ``speed_scale`` of full speed."""

    target_rad: FloatArray
    label: str
    speed_scale: float = 1.0


@dataclass(frozen=True)
class Grip:
    """Set the gripper (0 open, 1 closed) and wait ``settle_s`` for the fingers."""

    closed_fraction: float
    label: str
    settle_s: float = 0.5


@dataclass(frozen=True)
class Dwell:
    seconds: float
    label: str


@dataclass(frozen=True)
class Check:
    """Fail the skill with the returned reason unless ``check()`` returns None."""

    check: Callable[[], str | None]
    label: str


@dataclass(frozen=True)
class WaitUntil:
    """Wait (holding still) until ``ready()``; fail after ``timeout_s``."""

    ready: Callable[[], bool]
    label: str
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Track:
    """Close in on a goal that may move, at control rate, every command through the supervisor.

    ``goal()`` says where the goal is now (None: lost, the skill fails). ``controller`` picks the
    runtime's phase controller: ``"approach"``, the robot's approach-phase controller (a trained
    policy when one is loaded and fits, else the scripted chase; see
    :func:`robots.learned.make_approach`), or ``"chase"``, always the scripted chase. The step is
    done when the tool has stayed within ``tolerance_m`` of the goal for ``hold_s``; it fails
    after ``timeout_s``. The controller is handed the goal ``lead_s`` ahead along its velocity
    (plus the measurement's age), while the tolerance is judged against the goal itself.
    """

    goal: Callable[[], Sighting | None]
    label: str
    controller: Literal["approach", "chase"] = "chase"
    tolerance_m: float = 0.02
    hold_s: float = 0.1
    timeout_s: float = 3.0
    lead_s: float = 0.0  # the controller aims this far ahead of the goal along its velocity (lag)


Step = Move | Grip | Dwell | Check | WaitUntil | Track


@dataclass(frozen=True)
class SkillPlan:
    """The steps of one goal and what the robot holds when they all succeed."""

    steps: list[Step]
    holding_after: str | None


@dataclass
class SkillContext:
    """What planning knows of the robot now."""

    position_rad: FloatArray
    holding: str | None = None
    tool_position_m: Callable[[], FloatArray] | None = None
    extra: dict[str, object] = field(default_factory=dict)


class SkillPlanner:
    """Plans the skills of one robot of a plant.

    ``kinematics`` must be this planner's own (its scratch data is not shared with a control
    loop). ``locator`` finds parts; without one a part is assumed to lie on the location's
    pose. ``peers`` lets a hand-over see the other robot's progress.
    """

    approach_height_m = 0.12  # above a grasp or release point, to come straight down from
    top_clearance_m = 0.08  # ... and at least this far above the top of a part to pick (a tall one)
    finger_clearance_m = 0.01  # the open fingers come down at least this far from each side of a part
    grasp_speed_scale = 0.3  # the last centimetres to a part, and leaving with it
    search_radius_m = SEARCH_RADIUS_M  # how far from the named location a part may lie
    moving_search_radius_m = 0.45  # ... or a moving part, still on its way to it
    still_speed_m_s = 1e-3  # a part slower than this is picked as a still one
    track_hover_m = 0.08  # the pre-grasp point above a moving part (what the shipped policies are trained for)
    track_radius_m = 0.1  # a tracked part is the one nearest where it was last seen, within this
    track_lead_s = 0.1  # the descent aims this far ahead of a moving part (its servo and re-planning lag)

    def __init__(
        self,
        plant: PlantDescription,
        robot: str,
        kinematics: ArmKinematics,
        locator: PartLocator | None = None,
        peers: PeerView | None = None,
    ) -> None:
        self.plant = plant
        self.robot = robot
        self.spec = plant.robots[robot]
        self.kin = kinematics
        self.locator = locator
        self.peers = peers
        self.home = np.asarray(self.spec.home(), dtype=float)
        self.locations = plant.locations()
        self.bins = plant.bins()
        self.joint_names = ROBOT_MODELS[self.spec.model].joint_names

    # ------------------------------------------------------------------ helpers

    def _location(self, name: object) -> FloatArray:
        if not isinstance(name, str) or name not in self.locations:
            raise SkillError(f"unknown location {name!r}")
        return np.asarray(self.locations[name].xyz_m, dtype=float)

    def solve(
        self,
        target_m: FloatArray,
        seeds: Sequence[FloatArray],
        what: str,
        axis: FloatArray = DOWN,
        fingers: FloatArray | None = None,
    ) -> FloatArray:
        """Joint angles that put the tool at ``target_m`` pointing along ``axis`` (IK, first seed
        that works); with ``fingers`` (a unit vector across ``axis``), also with the fingers
        closing along it, either way round (whichever the first seed is nearer)."""
        target = np.asarray(target_m, dtype=float)
        rots: list[FloatArray | None] = [None]
        if fingers is not None:
            both = _tool_rotations(np.asarray(axis, dtype=float), np.asarray(fingers, dtype=float))
            if seeds:
                _, now = self.kin.fk(np.asarray(seeds[0], dtype=float))
                if float(now[:, 0] @ both[1][:, 0]) > float(now[:, 0] @ both[0][:, 0]):
                    both.reverse()
            rots = [*both]
        best = None
        for rot in rots:
            for seed in seeds:
                if rot is None:
                    res = self.kin.ik(target, q0=seed, approach_axis=axis, max_iter=200)
                else:
                    res = self.kin.ik(target, rot, q0=seed, max_iter=200)
                if res.ok:
                    return res.q
                if best is None or res.position_error_m < best.position_error_m:
                    best = res
        err = best.position_error_m if best is not None else float("nan")
        pose = (
            "with the tool pointing down"
            if np.allclose(axis, DOWN)
            else f"with the tool pointing along {np.round(axis, 2).tolist()}"
        )
        raise SkillError(
            f"{what} at {np.round(target_m, 3).tolist()} is out of reach of {self.robot} "
            f"(closest {err:.3f} m off {pose})"
        )

    def _seeds(self, ctx: SkillContext, target_m: FloatArray | None, *extra: FloatArray) -> list[FloatArray]:
        """IK seeds for ``target_m``: ``extra``, where the arm is, its home; and first, when the
        target lies more than a quarter turn around the base from where the tool points now, the
        arm as it is turned on its first joint to face the target. (From a seed facing away, a
        local IK finds a pose reaching back over the arm's own base, and the move there sweeps
        the arm through whatever stands beside it.)"""
        seeds = [*extra, ctx.position_rad, self.home]
        if target_m is None:
            return seeds
        facing = self._facing(np.asarray(ctx.position_rad, dtype=float), target_m)
        return seeds if facing is None else [facing, *seeds]

    def _reach(self, target_m: FloatArray, ctx: SkillContext, what: str) -> FloatArray:
        """Joint angles for the tool at ``target_m`` pointing down (:meth:`solve` from
        :meth:`_seeds`), to be moved to from where the arm is: when that move would sweep the arm
        through something fixed in the cell (a machine, a table) and the same pose reached the
        other way round on the first joint would not, that one."""
        q = self.solve(target_m, self._seeds(ctx, target_m), what)
        start = np.asarray(ctx.position_rad, dtype=float)
        if self.kin.path_hits(start, q) is None:
            return q
        lo, hi = self.spec.limits()[0]
        for pan in (q[0] - 2 * math.pi, q[0] + 2 * math.pi):
            if lo <= pan <= hi:
                other = q.copy()
                other[0] = pan
                if self.kin.path_hits(start, other) is None:
                    return other
        return q

    def _facing(self, q: FloatArray, target_m: FloatArray) -> FloatArray | None:
        """``q`` turned on the first joint by the bearing from the tool to ``target_m`` around
        the base (the shorter way that the joint's limits allow), or None when that is under a
        quarter turn."""
        base = np.asarray(self.spec.base.xyz_m, dtype=float)
        tool, _ = self.kin.fk(q)
        now = math.atan2(tool[1] - base[1], tool[0] - base[0])
        want = math.atan2(float(target_m[1]) - base[1], float(target_m[0]) - base[0])
        turn = (want - now + math.pi) % (2 * math.pi) - math.pi
        if abs(turn) <= math.pi / 2:
            return None
        lo, hi = self.spec.limits()[0]
        for pan in sorted(
            (q[0] + turn, q[0] + turn - 2 * math.pi, q[0] + turn + 2 * math.pi), key=lambda a: abs(a - q[0])
        ):
            if lo <= pan <= hi:
                out = q.copy()
                out[0] = pan
                return out
        return None

    def _part_size(self, part_type: str) -> tuple[float, float, float]:
        pt = self.plant.part_types.get(part_type)
        if pt is None:
            raise SkillError(f"unknown part type {part_type!r}")
        return pt.size_m

    def _held_check(self, ctx: SkillContext, part_type: str, want: bool) -> Check:
        def check() -> str | None:
            if self.locator is None or ctx.tool_position_m is None:
                return None
            tool = ctx.tool_position_m()
            found = self.locator.locate(part_type, tool, 0.06)
            if want and found is None:
                return f"no {part_type} in the gripper after the grasp"
            if not want and found is not None:
                return f"the {part_type} is still in the gripper after release"
            return None

        return Check(check, "check grasp" if want else "check release")

    # ------------------------------------------------------------------ skills

    def plan(self, goal: SkillGoal, ctx: SkillContext) -> SkillPlan:
        """The steps of ``goal``; raises :class:`SkillError` with the reason when it cannot be done."""
        allowed = set(self.spec.allowed_skills()) | {"take"}
        if goal.skill not in allowed:
            raise SkillError(f"{self.robot} does not perform {goal.skill!r} (allowed: {', '.join(sorted(allowed))})")
        fn = getattr(self, f"_plan_{goal.skill}", None)
        if fn is None:
            raise SkillError(f"unknown skill {goal.skill!r}")
        plan: SkillPlan = fn(goal.args, ctx)
        return plan

    def _plan_home(self, args: object, ctx: SkillContext) -> SkillPlan:
        return SkillPlan([Move(self.home, "home")], ctx.holding)

    def _plan_move_joints(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        raw = args.get("joints_rad")
        if not isinstance(raw, list | tuple) or len(raw) != len(self.home):
            raise SkillError(f"joints_rad must list {len(self.home)} angles in rad")
        q = np.asarray([float(x) for x in raw], dtype=float)
        for i, (lo, hi) in enumerate(self.spec.limits()):
            if not lo <= q[i] <= hi:
                raise SkillError(f"joints_rad[{i}] = {q[i]:.3f} rad lies outside the joint limits ({lo:.3f}, {hi:.3f})")
        return SkillPlan([Move(q, "move_joints")], ctx.holding)

    def _plan_move_to(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        target = self._location(args.get("location"))
        q = self._reach(target, ctx, f"location {args.get('location')}")
        return SkillPlan([Move(q, f"move to {args.get('location')}")], ctx.holding)

    def _plan_pick(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        part_type = str(args.get("part_type", ""))
        size = self._part_size(part_type)
        where = self._location(args.get("location"))
        if ctx.holding is not None:
            raise SkillError(f"{self.robot} already holds a {ctx.holding}")
        across = min(size[0], size[1])
        opening = TOOL_MODELS[self.spec.tool.model].max_opening_m
        if across + 2 * self.finger_clearance_m > opening:
            raise SkillError(
                f"a {part_type} is {across:.3f} m across and the {self.spec.tool.model} of {self.robot} opens "
                f"{opening:.3f} m: less than {self.finger_clearance_m:.3f} m to spare on each side of it"
            )
        centre = where + np.array([0.0, 0.0, size[2] / 2])
        moving = self._sight_moving(part_type, centre)
        if moving is not None:
            return self._plan_moving_pick(part_type, moving, ctx)
        if self.locator is not None:
            found = self.locator.locate(part_type, centre, self.search_radius_m)
            if found is None:
                raise SkillError(f"no {part_type} within {self.search_radius_m} m of {args.get('location')}")
            centre = np.asarray(found, dtype=float)
        above = centre + np.array([0.0, 0.0, max(self.approach_height_m, size[2] / 2 + self.top_clearance_m)])
        q_above = self._reach(above, ctx, "the point above the part")
        q_grasp = self.solve(centre, [q_above], "the part")
        s = self.grasp_speed_scale
        steps: list[Step] = [
            Grip(0.0, "open gripper", 0.3),
            Move(q_above, "approach"),
            Move(q_grasp, "descend", s),
            Grip(1.0, "grasp", 0.6),
            Move(q_above, "lift", s),
            self._held_check(ctx, part_type, True),
        ]
        return SkillPlan(steps, part_type)

    def _sight_moving(self, part_type: str, centre: FloatArray) -> Sighting | None:
        """The part to pick when it moves (the locator reports a velocity): near the location, or
        upstream of it within :attr:`moving_search_radius_m`; None when it lies still."""
        loc = self.locator
        if not isinstance(loc, MovingPartLocator):
            return None
        for radius in (self.search_radius_m, self.moving_search_radius_m):
            seen = loc.sight(part_type, centre, radius)
            if seen is not None and float(np.linalg.norm(seen.velocity_m_s)) > self.still_speed_m_s:
                return seen
        return None

    def _plan_moving_pick(self, part_type: str, seen: Sighting, ctx: SkillContext) -> SkillPlan:
        """Pick a part that rides a running conveyor: close in on the pre-grasp point above it
        with the robot's approach-phase controller (a trained policy when one is loaded), follow
        it down, grasp, lift straight up."""
        loc = self.locator
        assert isinstance(loc, MovingPartLocator)
        self.solve(
            seen.position_m + np.array([0.0, 0.0, self.track_hover_m]),
            self._seeds(ctx, seen.position_m),
            "the moving part",
        )
        last = [np.asarray(seen.position_m, dtype=float)]

        def part() -> Sighting | None:
            s = loc.sight(part_type, last[0], self.track_radius_m)
            if s is not None:
                last[0] = np.asarray(s.position_m, dtype=float)
            return s

        def pre_grasp() -> Sighting | None:
            s = part()
            hover = np.array([0.0, 0.0, self.track_hover_m])
            return None if s is None else Sighting(s.position_m + hover, s.velocity_m_s, s.age_s)

        lift_to: list[FloatArray] = []

        def lift() -> Sighting:
            if not lift_to:  # straight up from where the part was grasped
                lift_to.append(last[0] + np.array([0.0, 0.0, self.approach_height_m]))
            return Sighting(lift_to[0], np.zeros(3))

        steps: list[Step] = [
            Grip(0.0, "open gripper", 0.0),  # the fingers open during the approach (far longer than they take)
            Track(pre_grasp, "approach", "approach", tolerance_m=0.02, hold_s=0.1, timeout_s=3.0),
            Track(part, "descend", "chase", tolerance_m=0.01, hold_s=0.08, timeout_s=2.0, lead_s=self.track_lead_s),
            Grip(1.0, "grasp", 0.6),
            Track(lift, "lift", "chase", tolerance_m=0.02, hold_s=0.0, timeout_s=3.0),
            self._held_check(ctx, part_type, True),
        ]
        return SkillPlan(steps, part_type)

    def _release_steps(self, target_m: FloatArray, ctx: SkillContext, what: str) -> tuple[list[Step], FloatArray]:
        if ctx.holding is None:
            raise SkillError(f"{self.robot} holds no part to place")
        # Let go with the part just above the surface: it hangs below the grip point by what the
        # locator sees (a grasp, a hand-over above all, is rarely centred on the part) and is not
        # necessarily upright (a hand-over turns it a quarter turn), so count its longest side.
        half = max(self._part_size(ctx.holding)) / 2
        # The grip point goes where the part's centre should be, shifted by how the part hangs.
        release = target_m + self._hang(ctx, ctx.holding) + np.array([0.0, 0.0, half + 0.02])
        above = release + np.array([0.0, 0.0, self.approach_height_m])
        q_above = self._reach(above, ctx, f"the point above {what}")
        q_release = self.solve(release, [q_above], what)
        return [Move(q_above, "approach"), Move(q_release, "descend", self.grasp_speed_scale)], q_above

    def bin_spots(self, name: str, part_type: str) -> list[FloatArray]:
        """Where a part of ``part_type`` may go down in bin ``name`` (m, world, on its floor):
        :meth:`plant.config.Bin.spots_m` for the part's longest side (a part is not necessarily
        held square), nearest this robot's base first."""
        spots = [np.asarray(p, dtype=float) for p in self.bins[name].spots_m(self._footprint(part_type), BIN_GAP_M)]
        base = np.asarray(self.spec.base.xyz_m, dtype=float)
        return sorted(spots, key=lambda p: float(np.hypot(*(p[:2] - base[:2]))))

    def _footprint(self, part_type: str) -> float:
        return max(self._part_size(part_type))

    def _bin_release_steps(self, name: str, ctx: SkillContext) -> tuple[list[Step], FloatArray]:
        """The release steps over the first free spot of bin ``name`` (:meth:`bin_spots`) this
        robot can reach: a spot is taken when the locator sees a part within half a spot of it."""
        if ctx.holding is None:
            raise SkillError(f"{self.robot} holds no part to place")
        spots = self.bin_spots(name, ctx.holding)
        side = self._footprint(ctx.holding) + BIN_GAP_M
        free = [p for p in spots if not self._taken(p, side)]
        if not free:
            raise SkillError(f"bin {name} has no free place for a {ctx.holding} ({len(spots)} places, all taken)")
        last: SkillError | None = None
        for spot in free:
            try:
                return self._release_steps(spot, ctx, f"a free place in bin {name}")
            except SkillError as exc:
                last = exc
        assert last is not None
        raise SkillError(f"no free place in bin {name} is in reach of {self.robot}: {last}")

    def _taken(self, spot: FloatArray, side_m: float) -> bool:
        """Whether the locator sees a part of any type lying on the spot (its centre nearer the
        spot than the next spot is, and low in the bin)."""
        if self.locator is None:
            return False
        for part_type in self.plant.part_types:
            seen = self.locator.locate(part_type, spot, 1.5 * side_m)
            if (
                seen is not None
                and float(np.hypot(*(seen[:2] - spot[:2]))) < 0.5 * side_m
                and float(seen[2]) - float(spot[2]) < 0.15
            ):
                return True
        return False

    def _hang(self, ctx: SkillContext, part_type: str) -> FloatArray:
        """Where the grip point lies from the centre of the held part (m, world; zero when
        unknown): mostly straight up, and to one side after a grasp off the part's centre."""
        if self.locator is None or ctx.tool_position_m is None:
            return np.zeros(3)
        tool = np.asarray(ctx.tool_position_m(), dtype=float)
        found = self.locator.locate(part_type, tool, 0.06)
        return np.zeros(3) if found is None else tool - found

    def _plan_place(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        name = args.get("location")
        if isinstance(name, str) and name in self.bins:
            steps, q_above = self._bin_release_steps(name, ctx)
        else:
            steps, q_above = self._release_steps(self._location(name), ctx, f"location {name}")
        held = ctx.holding or ""
        steps += [Grip(0.0, "release", 0.5), Move(q_above, "retreat", self.grasp_speed_scale)]
        steps.append(self._held_check(ctx, held, False))
        return SkillPlan(steps, None)

    def _plan_present(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        machine = args.get("machine")
        if not isinstance(machine, str) or machine not in self.plant.machines:
            raise SkillError(f"unknown machine {machine!r}")
        view = self.plant.inspection_view(machine)
        if view is None:
            raise SkillError(f"machine {machine} has no station location to present a part at")
        name = view[0]
        q = self._reach(self._location(name), ctx, f"location {name}")
        return SkillPlan([Move(q, f"present at {name}"), Dwell(0.5, "hold for inspection")], ctx.holding)

    def _plan_hand_over(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        """Offer the held part at the location to ``to_robot``, wait until it holds the part, let
        go and pull back the way the tool came.

        The tool comes in level, pointing from this robot's side at the receiver's base, its
        fingers closing across that line: the part sticks out toward the receiver, whose ``take``
        comes down on it from above and closes its fingers on the two faces along the line. The
        two hands never reach into each other's way, whichever way the part was picked up."""
        to_robot = str(args.get("to_robot", ""))
        if to_robot not in self.plant.robots or to_robot == self.robot:
            raise SkillError(f"cannot hand over to {to_robot!r}")
        if ctx.holding is None:
            raise SkillError(f"{self.robot} holds no part to hand over")
        where = self._location(args.get("location"))
        toward = _horizontal_toward(np.asarray(self.plant.robots[to_robot].base.xyz_m, dtype=float), where)
        across = np.array([-toward[1], toward[0], 0.0])
        back = where - toward * self.approach_height_m
        q_back = self.solve(back, self._seeds(ctx, None), "the point before the hand-over point", toward, across)
        q = self.solve(where, [q_back], f"location {args.get('location')}", toward, across)
        peers = self.peers

        def taken() -> bool:
            return peers is not None and peers.phase(to_robot) == "holding"

        s = self.grasp_speed_scale
        steps: list[Step] = [
            Move(q_back, "approach"),
            Move(q, "offer", s),
            WaitUntil(taken, "wait for the receiver to grasp", 60.0),
            Grip(0.0, "let go", 0.5),
            Move(q_back, "retreat", s),
        ]
        return SkillPlan(steps, None)

    def _plan_take(self, args: dict[str, object], ctx: SkillContext) -> SkillPlan:
        """The receiving side of a hand-over: wait above the hand-over point for the offer, come
        down on the part, grasp it across the faces along the line to the giver (whose fingers
        hold the other two, see ``hand_over``), hold until the giver let go, lift it."""
        giver = str(args.get("from_robot", ""))
        part_type = str(args.get("part_type", "")) or next(iter(self.plant.part_types), "")
        self._part_size(part_type)  # refuses an unknown part type
        where = self._location(args.get("location"))
        if ctx.holding is not None:
            raise SkillError(f"{self.robot} already holds a {ctx.holding}")
        toward = _horizontal_toward(np.asarray(self.spec.base.xyz_m, dtype=float), where)
        above = where + np.array([0.0, 0.0, self.approach_height_m])
        q_above = self.solve(above, self._seeds(ctx, None), "the point above the hand-over point", DOWN, toward)
        q_grasp = self.solve(where, [q_above], "the hand-over point", DOWN, toward)
        peers = self.peers

        def offered() -> bool:
            return peers is not None and peers.phase(giver) == "wait for the receiver to grasp"

        def released() -> bool:
            return peers is not None and peers.phase(giver) in ("retreat", "")

        s = self.grasp_speed_scale
        steps: list[Step] = [
            Grip(0.0, "open gripper", 0.3),
            Move(q_above, "approach"),
            WaitUntil(offered, "wait for the offer", 60.0),
            Move(q_grasp, "reach", s),
            Grip(1.0, "grasp", 0.6),
            WaitUntil(released, "holding", 30.0),
            Move(q_above, "lift", s),
            self._held_check(ctx, part_type, True),
        ]
        return SkillPlan(steps, part_type)


def _horizontal_toward(point_m: FloatArray, from_m: FloatArray) -> FloatArray:
    """The horizontal unit vector from ``from_m`` toward ``point_m`` (+x when one is above the other)."""
    d = np.array([point_m[0] - from_m[0], point_m[1] - from_m[1], 0.0])
    n = float(np.linalg.norm(d))
    return d / n if n > 1e-9 else np.array([1.0, 0.0, 0.0])


def _tool_rotations(axis: FloatArray, fingers: FloatArray) -> list[FloatArray]:
    """The two tool rotations (world frame, columns x y z) with z along ``axis`` and x along
    ``fingers`` or against it. The fingers close along the tool's x axis: the grip site's frame
    of every tool model the catalog names (Panda hand, Robotiq 2F-140, Rethink gripper)."""
    z = axis / np.linalg.norm(axis)
    x = fingers - float(fingers @ z) * z
    x = x / np.linalg.norm(x)
    out = []
    for sx in (x, -x):
        out.append(np.column_stack([sx, np.cross(z, sx), z]))
    return out

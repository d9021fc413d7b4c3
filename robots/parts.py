"""Where the parts are, and which picks of a plan they can serve: one reading of the pick
skill's search (a part of the type within the skill's radius of the location, or put there by
an earlier step, or on a fed conveyor's belt), shared by the planner (an order whose part is not
where it says is refused), the console and the twin's sessions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from plant.config import PlantDescription

__all__ = ["SEARCH_RADIUS_M", "PlanStep", "missing_parts"]

#: How far from a named location the pick skill looks for a part (m); the skill reads it here.
SEARCH_RADIUS_M = 0.15


#: A step of a plan as :func:`missing_parts` reads it: (step id, agent, skill, arguments).
PlanStep = tuple[str, str, str, Mapping[str, object]]


def _where(plant: PlantDescription, xyz: tuple[float, float, float]) -> str:
    """A part's place in words: the nearest named location or bin within 0.3 m, else coordinates."""
    best, best_d = "", 0.3
    for name, pose in plant.locations().items():
        d = _dist(pose.xyz_m, xyz)
        if d <= best_d:
            best, best_d = name, d
    return f"at {best}" if best else f"at ({xyz[0]:.2f}, {xyz[1]:.2f}, {xyz[2]:.2f}) m"


def _dist(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _on_belt(plant: PlantDescription, conveyor: str, xyz: tuple[float, float, float]) -> bool:
    m = plant.machines[conveyor]
    belt = m.belt
    if belt is None:
        return False
    cx, cy, _ = m.pose.xyz_m
    x, y, z = xyz
    return (
        abs(x - cx) <= belt.length_m / 2
        and abs(y - cy) <= belt.width_m / 2
        and belt.height_m - 0.01 <= z <= belt.height_m + 0.2
    )


def _in_feeder(plant: PlantDescription, conveyor: str, xyz: tuple[float, float, float]) -> bool:
    """The part lies in the bin that feeds the conveyor's belt (its magazine)."""
    belt = plant.machines[conveyor].belt
    b = plant.bins().get(belt.feeder) if belt is not None and belt.feeder is not None else None
    return b is not None and b.holds(xyz)


def missing_parts(
    plant: PlantDescription,
    parts: Mapping[str, tuple[float, float, float]],
    steps: Sequence[PlanStep],
    radius_m: float = SEARCH_RADIUS_M,
) -> list[str]:
    """Why the picks of ``steps`` (in order) would find no part, with the parts where they are
    now (``parts``: name to position, m; a part left out is not in the cell); empty when every
    pick can be served. A pick at a location is served by a part of its type within
    ``radius_m`` of it (the pick skill's search radius), by a part an earlier step placed or
    handed over there, or, once a conveyor of the location's station was fed by an earlier
    step, by a part of the type on that conveyor's belt or in the bin that feeds it. Each part
    serves one pick."""
    left = dict(parts)
    placed: dict[str, int] = {}
    fed: list[str] = []
    station_of = {loc: s for s, st in plant.stations.items() for loc in (*st.locations, *st.bins)}
    locations = plant.locations()
    problems: list[str] = []
    for step_id, agent, skill, args in steps:
        location = str(args.get("location", ""))
        if skill in ("place", "hand_over") and location:
            placed[location] = placed.get(location, 0) + 1
        elif skill == "feed" and agent in plant.machines and agent not in fed:
            fed.append(agent)
        if skill != "pick" or not location:
            continue
        part_type = str(args.get("part_type", ""))
        if placed.get(location, 0) > 0:
            placed[location] -= 1
            continue
        of_type = {n: p for n, p in left.items() if not part_type or plant.parts[n].type == part_type}
        centre = locations[location].xyz_m if location in locations else None
        near = [n for n, p in of_type.items() if centre is not None and _dist(p, centre) <= radius_m]
        station = station_of.get(location)
        belts = [c for c in fed if station is not None and plant.machines[c].station == station]
        # On a fed belt, or in the magazine that feeds it (the next feed puts it on the belt).
        on_belt = [n for n, p in of_type.items() for c in belts if _on_belt(plant, c, p) or _in_feeder(plant, c, p)]
        found = near or on_belt
        if found:
            del left[found[0]]
            continue
        what = part_type or "part"
        where = f"within {radius_m:g} m of {location}" + "".join(f" or on the belt of {c}" for c in belts)
        kind = [n for n, p in plant.parts.items() if not part_type or p.type == part_type]
        now = [f"{n} {_where(plant, parts[n])}" if n in parts else f"{n} not in the cell" for n in kind]
        seen = "; ".join(now) if now else "none in the plant file"
        problems.append(
            f"step {step_id} ({agent} picks a {what} at {location}) would find none: no {what} lies {where} "
            f"for it (the plant's {what} parts now: {seen}; each serves one pick). Put a {what} there and order again"
        )
    return problems

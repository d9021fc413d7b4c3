"""Where steps happen: locations of robot steps, locations inside machines.

Pure functions of the static plant (no state, no model text), shared by the guardrails and the
planner so that the two never disagree about geometry. Distances to zones, and what a zone
permits, are the plant's safety model's (:mod:`plant.safety_model`), which the robots'
supervisors read as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from plant.catalog import ROBOT_MODELS
from plant.config import BoxShape, PlantDescription


def machine_locations(plant: PlantDescription) -> dict[str, str]:
    """Location or bin name -> the machine whose footprint (plan view) contains it."""
    out: dict[str, str] = {}
    for loc, pose in plant.locations().items():
        x, y, _ = pose.xyz_m
        for name, m in plant.machines.items():
            box = BoxShape(type="box", center_m=m.pose.xyz_m, size_m=m.size_m, yaw_rad=m.pose.rpy_rad[2])
            if box.contains_xy(x, y):
                out[loc] = name
                break
    return out


def station_location(plant: PlantDescription, machine: str) -> str | None:
    """The first named location of a machine's station (where a part is presented to it)."""
    m = plant.machines.get(machine)
    if m is None or m.station is None or m.station not in plant.stations:
        return None
    locs = list(plant.stations[m.station].locations)
    return locs[0] if locs else None


def step_location(plant: PlantDescription, skill: str, args: Mapping[str, object]) -> str | None:
    """Where a robot step takes the tool (a location name), or None (home, joint moves)."""
    loc = args.get("location")
    if isinstance(loc, str):
        return loc
    machine = args.get("machine")
    if skill == "present" and isinstance(machine, str):
        return station_location(plant, machine)
    return None


def reach_distance_m(plant: PlantDescription, robot: str, location: str) -> tuple[float, float]:
    """(distance from the robot's base to the location, the robot model's reach), in metres."""
    r = plant.robots[robot]
    pose = plant.locations()[location]
    return math.dist(r.base.xyz_m, pose.xyz_m), ROBOT_MODELS[r.model].reach_m

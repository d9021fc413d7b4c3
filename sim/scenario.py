"""A scripted demonstration for ``atelier sim``: machines cycle and arms move, with no plan.

This drives the twin directly (PackML commands, joint targets), the way a commissioning
engineer exercises a cell before any planner is connected. Commands a machine refuses are
retried on the next update; none is forced.
"""

from __future__ import annotations

import math

import numpy as np

from plant.packml import Command, CommandRefused, State
from sim.twin import Twin
from sim.vision import part_at


class DemoScenario:
    """Feed parts on the conveyor, open and close the CNC door and run a cycle, inspect a part
    shown to the camera, and swing each arm slowly between home and a second pose (cosine-timed, under half speed)."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self._homes = {r: np.asarray(twin.plant.robots[r].home()) for r in twin.robot_names()}
        self._offsets = {}
        for r in twin.robot_names():
            n = len(self._homes[r])
            off = np.zeros(n)
            off[0] = 0.6  # turn the base
            off[1] = 0.25
            self._offsets[r] = off
        self._done: set[str] = set()

    def _try(self, machine: str, cmd: Command, key: str) -> None:
        if key in self._done or machine not in self.twin.machines:
            return
        try:
            self.twin.machines[machine].command(cmd)
            self._done.add(key)
        except CommandRefused:
            pass

    def update(self) -> None:
        t = self.twin.time_s
        for name, tm in self.twin.machines.items():
            st = tm.state
            if st in (State.STOPPED, State.COMPLETE):
                self._try(name, Command.RESET, f"{name}/reset/{tm.state_model.cycle_count}")
            if tm.kind == "conveyor" and st == State.IDLE:
                self._try(name, Command.START, f"{name}/start/{tm.state_model.cycle_count}")
            if tm.state_model.has_door:
                if t > 1.0:
                    self._try(name, Command.OPEN_DOOR, f"{name}/open")
                if t > 4.0:
                    self._try(name, Command.CLOSE_DOOR, f"{name}/close")
                if t > 4.0 and st == State.IDLE and tm.state_model.door_closed:
                    self._try(name, Command.START, f"{name}/start")
            elif tm.kind == "inspection" and st == State.IDLE and t > 2.0 and part_at(self.twin, name) is not None:
                # Only a part shown to it: an inspection with nothing at the camera faults.
                self._try(name, Command.START, f"{name}/start/{tm.state_model.cycle_count}")
        for r, home in self._homes.items():
            # 8 s period: peak joint speed 0.6 * pi / 8 = 0.24 rad/s, far below the limits.
            s = 0.5 - 0.5 * math.cos(2 * math.pi * t / 8.0)
            self.twin.set_joint_targets(r, home + s * self._offsets[r])

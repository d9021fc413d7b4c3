"""A robot's safety state as a watcher reads it from its supervisor's events (the console over a
served plant shows it); the watcher itself over ROS 2 is tested with the console
(``tests/console/test_live_plant.py``)."""

from __future__ import annotations

import time

import numpy as np

from plant.config import PlantDescription
from robots.interface import JointState
from robots.ros2.watch import SafetyTracker
from robots.safety import SafetySupervisor, safety_config_from_plant
from sim.hardware import compile_model, link_points


def test_stops_resumes_and_the_estop_latch_are_followed() -> None:
    t = SafetyTracker(slow_shown_s=0.5)
    assert t.state(0.0) == "ok"
    t.event("slow", "walker_1 at 1.2 m", "", 1.0)
    assert t.state(1.2) == "reduced_speed" and t.state(1.6) == "ok"
    t.event("protective_stop", "walker_1 inside", "2", 2.0)
    t.event("watchdog", "no command", "1", 2.1)
    t.event("resume", "walker_1 left", "", 2.5)
    assert t.state(2.6) == "protective_stop"  # the watchdog stop still holds
    t.event("resume", "acknowledged by a new goal", "", 2.7)
    assert t.state(2.8) == "ok"
    t.event("refuse", "a skill goal g1: forged", "", 3.0)  # a refused message stops nothing
    t.event("clamp", "clamped", "", 3.1)
    assert t.state(3.2) == "ok"
    t.event("estop", "e-stop (console): light curtain", "0", 4.0)
    t.event("estop", "e-stop latch file not written", "", 4.1)
    assert (t.state(4.2), t.estop, t.estop_reason) == ("estop", True, "e-stop (console): light curtain")
    t.event("resume", "e-stop reset by operator olga", "", 5.0)
    t.event("reset", "operator olga reset the e-stop", "", 5.0)
    assert (t.state(5.1), t.estop, t.estop_reason) == ("ok", False, "")


def test_the_tracker_agrees_with_the_supervisor_it_listens_to(demo_plant: PlantDescription) -> None:
    """Every event a real supervisor emits, fed to the tracker: the same state at every turn."""
    t = SafetyTracker()
    cfg = safety_config_from_plant(demo_plant, "ur5e_1", 0.004)
    points = link_points(compile_model(demo_plant), demo_plant, "ur5e_1")
    sup = SafetySupervisor(
        cfg,
        points,
        None,
        lambda ev: t.event(ev.kind, ev.reason, "" if ev.stop_category is None else str(int(ev.stop_category)), 0.0),
    )
    q = np.asarray(demo_plant.robots["ur5e_1"].home(), dtype=float)
    now = time.monotonic()
    sup.observe(JointState(now, q, q * 0), [], now)

    def same() -> None:
        want = "estop" if sup.estopped else "protective_stop" if sup.stopped else "ok"
        assert t.state(0.0) == want, (sup.stop_causes(), t.open_causes)

    sup.protective_stop("light curtain", now)
    same()
    sup.trip_estop("button", "test", now)
    same()
    sup.clear_external(now)
    same()
    sup.reset_estop("olga", now)
    same()
    sup.internal_fault("boom", now)
    same()
    sup.reset_estop("olga", now)
    same()

"""Skills through the runtime and the safety supervisor, in the in-process twin (lockstep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plant.config import BoxShape, Person, PlantDescription, Zone
from plant.packml import Command
from robots.interface import Outcome, SafetyEvent, SkillGoal, SkillResult
from robots.runtime import RobotRuntime, RuntimeConfig
from robots.safety import protective_separation_distance_m
from robots.trajectory import stopping_offset
from sim.hardware import build_runtime
from sim.twin import Twin


@pytest.fixture(scope="module")
def twin(demo_plant: PlantDescription) -> Twin:
    return Twin(demo_plant)


@pytest.fixture
def fresh(twin: Twin) -> Twin:
    twin.reset()
    return twin


def _run(rt: RobotRuntime, twin: Twin, skill: str, timeout_s: float = 30.0, **args: object) -> SkillResult:
    goal = SkillGoal(f"g{twin.ticks}-{skill}", rt.robot, skill, args)  # type: ignore[arg-type]
    ok, _ = rt.submit(goal)
    res = rt.result_of(goal.goal_id) if not ok else rt.run_lockstep(lambda: twin.step(1), timeout_s)
    assert res is not None, f"{skill} did not finish in {timeout_s} s"
    return res


def _feed_part(twin: Twin, rts: list[RobotRuntime]) -> None:
    belt = twin.machine("conveyor_1")
    belt.command(Command.RESET)
    for _ in range(200):
        twin.step(1)
        for rt in rts:
            rt.step()
    belt.command(Command.START)
    for _ in range(5000):
        twin.step(1)
        for rt in rts:
            rt.step()
        if belt.part_at_end():
            return
    raise AssertionError("no part reached the end of the belt")


def test_home_move_joints_move_to(fresh: Twin, demo_plant: PlantDescription) -> None:
    events: list[SafetyEvent] = []
    rt = build_runtime(fresh, "ur5e_1", on_event=events.append)
    rt.step()
    res = _run(rt, fresh, "move_to", location="handover_point")
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    target = np.array(demo_plant.locations()["handover_point"].xyz_m)
    assert np.linalg.norm(fresh.tool_position("ur5e_1") - target) < 0.01
    q = [0.5, -1.2, 1.2, -1.5, -1.5, 0.3]
    res = _run(rt, fresh, "move_joints", joints_rad=q)
    assert res.outcome == Outcome.SUCCEEDED
    assert np.allclose(fresh.joint_positions("ur5e_1"), q, atol=0.02)
    res = _run(rt, fresh, "home")
    assert res.outcome == Outcome.SUCCEEDED
    assert np.allclose(fresh.joint_positions("ur5e_1"), demo_plant.robots["ur5e_1"].home(), atol=0.02)
    # Well-timed trajectories need no clamping: the supervisor never had to step in.
    assert not [e for e in events if e.kind in ("clamp", "refuse")], events
    # Bad goals fail with their reason, nothing moves.
    res = _run(rt, fresh, "move_joints", joints_rad=[0.0, 0.0, 4.0, 0.0, 0.0, 0.0])
    assert res.outcome == Outcome.FAILED and "joint limits" in res.reason
    res = _run(rt, fresh, "move_to", location="output_bin")
    assert res.outcome == Outcome.FAILED and "out of reach" in res.reason
    res = _run(rt, fresh, "present", machine="insp_1")
    assert res.outcome == Outcome.FAILED and "does not perform" in res.reason


def test_pick_and_place_into_the_cnc(fresh: Twin, demo_plant: PlantDescription) -> None:
    rt = build_runtime(fresh, "ur5e_1")
    rt.step()
    _feed_part(fresh, [rt])
    res = _run(rt, fresh, "pick", part_type="blank_al", location="conveyor_pick")
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    assert fresh.held_part("ur5e_1") == "part_2" and rt.holding == "blank_al"
    assert fresh.part_positions()["part_2"][2] > 0.9  # lifted off the belt
    cnc = fresh.machine("cnc_1")
    cnc.command(Command.RESET)
    fresh.step(200)
    cnc.command(Command.OPEN_DOOR)
    fresh.step(400)
    res = _run(rt, fresh, "place", location="cnc_1_fixture")
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    assert fresh.held_part("ur5e_1") is None and rt.holding is None
    fixture = np.array(demo_plant.locations()["cnc_1_fixture"].xyz_m)
    part = np.array(fresh.part_positions()["part_2"])
    assert np.linalg.norm(part[:2] - fixture[:2]) < 0.03
    res = _run(rt, fresh, "pick", part_type="blank_al", location="cnc_1_fixture")
    assert res.outcome == Outcome.SUCCEEDED, res.reason
    # With the door closed the arm is blocked: the move fails, the part stays held, and the
    # next motion starts from where the arm really is.
    cnc.command(Command.CLOSE_DOOR)
    fresh.step(400)
    res = _run(rt, fresh, "place", location="cnc_1_fixture")
    assert res.outcome == Outcome.FAILED and "did not reach" in res.reason
    assert rt.holding == "blank_al"
    assert np.allclose(rt.supervisor.position_rad, fresh.joint_positions("ur5e_1"), atol=0.05)  # type: ignore[arg-type]


def test_present_and_failed_pick(fresh: Twin) -> None:
    rt = build_runtime(fresh, "panda_1")
    rt.step()
    res = _run(rt, fresh, "pick", part_type="blank_al", location="handover_point")
    assert res.outcome == Outcome.FAILED and "no blank_al" in res.reason
    res = _run(rt, fresh, "present", machine="insp_1")
    assert res.outcome == Outcome.SUCCEEDED, res.reason


def test_cancel_brakes_within_limits(fresh: Twin, demo_plant: PlantDescription) -> None:
    rt = build_runtime(fresh, "ur5e_1")
    rt.step()
    goal = SkillGoal("long", "ur5e_1", "move_joints", {"joints_rad": [-1.5, -2.2, 1.0, -1.5, -1.5, 1.5]})
    assert rt.submit(goal) == (True, "")
    applied = []
    for _ in range(150):
        fresh.step(1)
        applied.append(rt.step())
    assert np.max(np.abs(fresh.joint_velocities("ur5e_1"))) > 0.5
    assert rt.cancel("long")
    res = None
    for _ in range(500):
        fresh.step(1)
        applied.append(rt.step())
        res = rt.result_of("long")
        if res is not None:
            break
    assert res is not None and res.outcome == Outcome.CANCELLED
    fresh.step(250)
    assert np.max(np.abs(fresh.joint_velocities("ur5e_1"))) < 0.02
    # The braking stayed within the acceleration limits.
    amax = np.array(demo_plant.robots["ur5e_1"].joint_accels())
    v = np.array([a.velocity_rad_s for a in applied])
    assert np.all(np.abs(np.diff(v, axis=0)) <= amax * 0.004 * (1 + 1e-6))


def test_person_walking_in_brings_a_protective_stop(demo_plant: PlantDescription) -> None:
    # A person walks from the walkway straight at the Panda, stops short, then walks away.
    plant = demo_plant.model_copy(
        update={
            "people": {
                "walker_1": Person(
                    walkway="walkway_east",
                    path_m=[(5.9, 1.9), (4.8, 1.9), (5.9, 1.9)],
                    speed_m_s=1.2,
                    start_delay_s=0.3,
                    loop=False,
                )
            }
        }
    )
    twin = Twin(plant)
    events: list[SafetyEvent] = []
    rt = build_runtime(twin, "panda_1", on_event=events.append, config=RuntimeConfig(protective_stop_timeout_s=20.0))
    rt.step()
    sup = rt.supervisor
    ssm = sup.config.ssm
    pts_model = sup.points
    # Swing toward the walkway and back, the arm stretched out.
    far = [0.0, 0.6, 0.0, -1.2, 0.0, 1.9, 0.785]
    goal = SkillGoal("swing", "panda_1", "move_joints", {"joints_rad": far})
    assert rt.submit(goal)[0]
    dt = twin.config.ctrl_dt_s
    amax = sup.config.limits.max_accel_rad_s2
    intrusion_tick = stop_tick = None
    min_gap_moving = np.inf
    prev_pts = None
    res = None
    for tick in range(int(25 / dt)):
        twin.step(1)
        # Ground truth from the twin: measured joints, the person's true position.
        q, v = twin.joint_positions("panda_1"), twin.joint_velocities("panda_1")
        pts = pts_model.at(q)
        speed = 0.0 if prev_pts is None else float(np.max(np.linalg.norm(pts - prev_pts, axis=1))) / dt
        prev_pts = pts
        px, py, pv = twin.people_positions()["walker_1"]
        gap = float(np.min(np.hypot(pts[:, 0] - px, pts[:, 1] - py) - pts_model.radius_m)) - ssm.person_radius_m
        t_stop = float(np.max(np.abs(v) / amax)) + ssm.servo_settle_time_s
        s_stop = float(np.max(np.linalg.norm(pts_model.at(q + stopping_offset(v, amax)) - pts, axis=1)))
        sp = protective_separation_distance_m(
            max(ssm.human_speed_m_s, pv),
            speed,
            ssm.reaction_time_s,
            t_stop,
            s_stop,
            ssm.intrusion_distance_m,
            ssm.human_uncertainty_m,
            ssm.robot_uncertainty_m,
        )
        moving = speed > 0.02  # above the servo's jitter
        if moving:
            min_gap_moving = min(min_gap_moving, gap)
        if intrusion_tick is None and moving and gap <= sp:
            intrusion_tick = tick
        applied = rt.step()
        if stop_tick is None and applied.mode in ("stopping", "stopped") and sup.stopped:
            stop_tick = tick
        res = rt.result_of("swing")
        if res is not None:
            break
    assert stop_tick is not None and intrusion_tick is not None
    # The stop command went out within one control period of the intrusion.
    assert (stop_tick - intrusion_tick) * dt <= dt + 1e-9, (stop_tick, intrusion_tick)
    # While the robot moved it never came closer than the reserved distances allow.
    assert min_gap_moving >= ssm.intrusion_distance_m + ssm.human_uncertainty_m + ssm.robot_uncertainty_m - 0.01
    stop = next(e for e in events if e.kind == "protective_stop")
    assert "walker_1" in stop.reason
    assert "slow" in [e.kind for e in events]
    # The person left, the robot resumed on its own and finished the move.
    assert res is not None and res.outcome == Outcome.SUCCEEDED, res
    assert "resume" in [e.kind for e in events]
    assert np.allclose(twin.joint_positions("panda_1"), far, atol=0.02)


def test_keep_out_zone_refuses_and_limits_clamp(demo_plant: PlantDescription) -> None:
    zones = dict(demo_plant.zones)
    at = demo_plant.locations()["handover_point"].xyz_m
    zones["test_box"] = Zone(kind="keep_out", shape=BoxShape(type="box", center_m=at, size_m=(0.2, 0.2, 0.2)))
    twin = Twin(demo_plant.model_copy(update={"zones": zones}))
    events: list[SafetyEvent] = []
    rt = build_runtime(twin, "ur5e_1", on_event=events.append)
    rt.step()
    res = _run(rt, twin, "move_to", location="handover_point")
    assert res.outcome == Outcome.STOPPED_BY_SAFETY and "test_box" in res.reason
    refusal = next(e for e in events if e.kind == "refuse")
    assert "keep-out zone test_box" in refusal.reason
    # The tool stopped outside the box, all links too.
    box = next(v for v in rt.supervisor.config.keep_out if v.name == "test_box")
    pts = rt.supervisor.points.at(twin.joint_positions("ur5e_1"))
    assert min(box.distance_m(p) for p in pts) > 0
    # A streamed command past a joint limit is clamped, never passed through.
    res = _run(rt, twin, "home")
    assert res.outcome == Outcome.SUCCEEDED
    lim = rt.supervisor.config.limits
    q = twin.joint_positions("ur5e_1")
    bad = q.copy()
    bad[2] = 5.0  # the elbow's limit is pi
    for _ in range(400):
        rt.stream(bad, "test")
        twin.step(1)
        out = rt.step()
        assert out.position_rad[2] <= lim.upper_rad[2]
    assert "clamp" in [e.kind for e in events]
    assert twin.joint_positions("ur5e_1")[2] == pytest.approx(lim.upper_rad[2] - 0.01, abs=0.02)


def test_watchdog_stops_a_silent_stream(fresh: Twin) -> None:
    events: list[SafetyEvent] = []
    rt = build_runtime(fresh, "ur5e_1", on_event=events.append)
    rt.step()
    q = fresh.joint_positions("ur5e_1")
    for i in range(100):  # a teleoperation stream turning the base
        rt.stream(q + np.array([0.01 * i, 0, 0, 0, 0, 0]), "teleop")
        fresh.step(1)
        rt.step()
    assert np.abs(fresh.joint_velocities("ur5e_1")[0]) > 1.0
    silent_from = fresh.time_s
    for _ in range(400):  # the source dies
        fresh.step(1)
        rt.step()
    wd = next(e for e in events if e.kind == "watchdog")
    assert wd.stamp_s - silent_from <= rt.supervisor.config.watchdog_timeout_s + 2 * fresh.config.ctrl_dt_s
    assert rt.supervisor.mode == "stopped"
    assert np.max(np.abs(fresh.joint_velocities("ur5e_1"))) < 0.05  # the servos' last creep
    # A new goal acknowledges the watchdog stop.
    res = _run(rt, fresh, "home")
    assert res.outcome == Outcome.SUCCEEDED
    home = fresh.joint_positions("ur5e_1")
    for _ in range(500):  # the dead stream's last target is never taken up again
        fresh.step(1)
        rt.step()
    assert np.max(np.abs(fresh.joint_positions("ur5e_1") - home)) < 0.05  # settling at home, no more


def test_a_goal_ends_a_stream_for_good(fresh: Twin) -> None:
    """A stream cut short by a goal does not come back when the goal ends (a stranger's stream
    on an unsigned topic used to pull the arm back to its last target after every goal)."""
    rt = build_runtime(fresh, "ur5e_1")
    rt.step()
    q = fresh.joint_positions("ur5e_1")
    for i in range(50):
        rt.stream(q + np.array([0.005 * i, 0, 0, 0, 0, 0]), "teleop")
        fresh.step(1)
        rt.step()
    assert _run(rt, fresh, "home").outcome == Outcome.SUCCEEDED
    home = fresh.joint_positions("ur5e_1")
    for _ in range(300):
        fresh.step(1)
        rt.step()
    assert np.max(np.abs(fresh.joint_positions("ur5e_1") - home)) < 0.05  # settling at home, no more


def test_estop_refuses_goals_until_operator_reset(fresh: Twin, tmp_path: Path) -> None:
    latch = tmp_path / "ur5e_1.estop.json"
    results: list[SkillResult] = []
    rt = build_runtime(fresh, "ur5e_1", latch_path=latch, on_result=results.append)
    rt.step()
    rt.supervisor.trip_estop("operator pressed the button", "pendant")
    res = _run(rt, fresh, "home")
    assert res.outcome == Outcome.STOPPED_BY_SAFETY and "e-stop" in res.reason
    # The runtime restarts: the latch is still there.
    rt2 = build_runtime(fresh, "ur5e_1", latch_path=latch)
    rt2.step()
    assert rt2.supervisor.estopped
    res = _run(rt2, fresh, "home")
    assert res.outcome == Outcome.STOPPED_BY_SAFETY
    rt2.supervisor.reset_estop("alice", fresh.time_s)
    res = _run(rt2, fresh, "move_to", location="handover_point")
    assert res.outcome == Outcome.SUCCEEDED

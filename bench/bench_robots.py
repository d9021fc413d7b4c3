"""Robots over ROS 2: skill goals, joint states, the control loop and the safety stops, in one run.

    python bench/bench_robots.py [--goals 30] [--pings 500] [--trials 8] [--no-pin] [--no-realtime]

Three processes, as deployed: this one runs the live twin with its driver nodes (``sim.robot_drivers``)
and the agent (what the coordinator uses); a second runs the on-robot runtime of ``ur5e_1``
(``robots.ros2.serve_runtime``, as ``atelier robot runtime`` does); a third answers a bare rclpy
ping-pong. Prints, all measured in the same run so that the load of the shared machine falls on
every figure alike:

- skill-goal round trip (agent -> runtime -> result, a ``home`` goal at home) next to the bare
  rclpy ping-pong round trip (sensor_msgs/JointState, plain executors on both sides): the ratio
  is the figure to watch; goals and results are signed (HMAC-SHA256, ``plant.trust``), and
  beside the round trip is what the MACs cost in it: signing and checking a goal and its result
  (canonical JSON, HMAC, replay check), timed on this process's core, less the same messages
  sent unsigned (the budget: under 5% of the round trip); and what signing and checking one
  joint command costs (the runtime signs each period's command, the driver checks it);
- joint-state latency, driver publish -> subscriber in another process (the runtime's fast lane
  and a plain executor subscriber), next to half the bare round trip;
- the runtime control loop's period (p50/p99/max) and its jitter against the 4 ms period,
  holding and while moving, the compute time of a period (joint state in -> command out), and
  within it the safety supervisor's share (its ``observe`` + ``filter``; ``bench/bench_safety.py``
  times the supervisor alone, next to bare MuJoCo);
- safety stop latency: e-stop (service call -> supervisor trips -> first stopping command out of
  the supervisor -> the driver receives it) and intrusion (a person published by the tracker
  inside the protective distance -> stopping command -> driver).

Times across processes use ``time.monotonic`` (CLOCK_MONOTONIC, one clock for the machine).
By default this process is pinned to the first core and the other two to the last one
(``os.sched_setaffinity``), so that the bare ping-pong and the robot paths cross the same pair of
cores; the output says which. As deployed (``atelier twin serve``, ``atelier robot runtime``),
the threads that clock the robots (the twin's, the runtime's control loop, the fast lanes and the
middleware's receive threads of both) run real-time where the process is permitted
(``plant.workers.realtime``); ``--no-realtime`` keeps them at normal scheduling. The bare
ping-pong's echo process never has it (its pong comes back through this process's host); the
output says what each got. It is a benchmark, not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROBOT = "ur5e_1"
HOME = [0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0]
FAR = [-1.5, -2.2, 1.0, -1.5, -1.5, 1.5]


def _pin(core: int | None) -> str:
    if core is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {core})
    return f"core {core}"


def _cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    return cores[0], cores[-1]


def _q(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), p)) if len(xs) else float("nan")


def _ms(xs: Sequence[float]) -> str:
    if not xs:
        return "(none)"
    return f"p50 {_q(xs, 50) * 1e3:7.3f}  p99 {_q(xs, 99) * 1e3:7.3f}  max {max(xs) * 1e3:7.3f} ms  (n={len(xs)})"


# --------------------------------------------------------------------------- child: runtime


def _runtime_role(core: int | None, state_dir: str, priority: int | None) -> None:
    """The runtime of ROBOT, instrumented; answers commands on stdin with one JSON line each.
    Its keys are the bench's (``<state_dir>/trust``)."""
    from plant import load_plant
    from plant.trust import robot_keys
    from robots.ros2._host import RosHost
    from robots.ros2.driver import stamp_s
    from robots.ros2.hardware import RosHardware
    from robots.ros2.runtime_node import serve_runtime
    from robots.runtime import RuntimeConfig
    from sim.hardware import arm_kinematics, compile_model, link_points

    pinned = _pin(core)
    plant = load_plant()
    model = compile_model(plant)
    host = RosHost(realtime_priority=priority)
    _, rt = serve_runtime(
        host,
        plant,
        ROBOT,
        arm_kinematics(model, plant, ROBOT),
        link_points(model, plant, ROBOT),
        Path(state_dir) / f"{ROBOT}.estop.json",
        robot_keys(state_dir),
        config=RuntimeConfig(realtime_priority=priority),
    )
    sup, hw = rt.supervisor, rt.hw
    assert isinstance(hw, RosHardware)
    trips: list[float] = []
    stops: list[dict[str, Any]] = []
    mode: dict[str, Any] = {"prev": "run", "pending": None}
    trip_estop, sup_filter, sup_observe, hw_write = sup.trip_estop, sup.filter, sup.observe, hw.write
    supervised: list[float] = []  # the supervisor's time in a period: observe + filter
    observed = {"s": 0.0}

    def trip(reason: str, source: str, now_s: float | None = None, **kw: Any) -> None:
        trips.append(time.monotonic())
        trip_estop(reason, source, now_s, **kw)

    def observe(state: Any, people: Any = (), now_s: float | None = None) -> None:
        t = time.perf_counter()
        sup_observe(state, people, now_s)
        observed["s"] = time.perf_counter() - t

    def filt(command: Any, now_s: float) -> Any:
        t = time.perf_counter()
        applied = sup_filter(command, now_s)
        supervised.append(observed["s"] + time.perf_counter() - t)
        if applied.mode in ("stopping", "stopped") and mode["prev"] in ("run", "slow"):
            mode["pending"] = time.monotonic()
        mode["prev"] = applied.mode
        return applied

    computes: list[float] = []  # period start (joint state handed over) -> command published

    def write(position: Any) -> None:
        hw_write(position)
        if rt.period_log:
            computes.append(time.perf_counter() - rt.period_log[-1])
        if mode["pending"] is not None:
            stamp = stamp_s(hw._traj.header.stamp)
            causes = list(sup.stop_causes())
            stops.append({"filtered_s": mode["pending"], "sent_s": time.monotonic(), "stamp": stamp, "causes": causes})
            mode["pending"] = None

    # Instrumentation only: the runtime calls these through its attributes.
    setattr(sup, "trip_estop", trip)  # noqa: B010
    setattr(sup, "filter", filt)  # noqa: B010
    setattr(sup, "observe", observe)  # noqa: B010
    setattr(hw, "write", write)  # noqa: B010
    for _ in range(200):
        if rt.scheduling != "not started":
            break
        time.sleep(0.01)
    scheduling = f"control loop {rt.scheduling}; {host.scheduling}"
    print(json.dumps({"ready": True, "pinned": pinned, "scheduling": scheduling}), flush=True)
    marks = {"periods": 0, "lat": 0}
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "periods":
            log = rt.period_log[marks["periods"] :]
            marks["periods"] = len(rt.period_log)
            lat = hw.latencies_s[marks["lat"] :]
            marks["lat"] = len(hw.latencies_s)
            out = {"periods": np.diff(log).tolist(), "lat": list(lat), "compute": computes, "supervisor": supervised}
            print(json.dumps(out), flush=True)
            computes.clear()
            supervised.clear()
        elif cmd == "stops":
            print(json.dumps({"trips": trips, "stops": stops}), flush=True)
            trips.clear()
            stops.clear()
        elif cmd == "quit":
            break
    rt.stop()
    host.close()


# --------------------------------------------------------------------------- child: echo


def _echo_role(core: int | None) -> None:
    """Bare rclpy: echo /bench/ping to /bench/pong; count the robot's joint states (plain executor)."""
    from sensor_msgs.msg import JointState as JointStateMsg

    from robots.ros2._host import STREAM_QOS, RosHost
    from robots.ros2.driver import stamp_s

    pinned = _pin(core)
    lat: list[float] = []
    with RosHost() as host:
        node = host.node("bench_echo")
        pong = node.create_publisher(JointStateMsg, "/bench/pong", STREAM_QOS)
        node.create_subscription(JointStateMsg, "/bench/ping", pong.publish, STREAM_QOS)

        def on_state(msg: JointStateMsg) -> None:
            lat.append(time.time() - stamp_s(msg.header.stamp))

        node.create_subscription(JointStateMsg, f"/{ROBOT}/joint_states", on_state, STREAM_QOS)
        print(json.dumps({"ready": True, "pinned": pinned}), flush=True)
        for line in sys.stdin:
            if line.strip() == "lat":
                print(json.dumps({"lat": lat[-20000:]}), flush=True)
                lat.clear()
            elif line.strip() == "quit":
                break


class _Child:
    def __init__(self, role: str, core: int | None, *extra: str) -> None:
        args = [sys.executable, __file__, "--role", role, *extra]
        if core is not None:
            args += ["--core", str(core)]
        self.role = role
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self.ask(None)

    def ask(self, cmd: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.role} process ended")
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- the MACs


def _mac_cost(n: int) -> dict[str, list[float]]:
    """Per goal round trip, timed ``n`` times (s, after a warm-up): ``signed``, the path of the
    signed messages (the agent seals a goal, the runtime parses and admits it, the runtime seals
    the result, the agent parses and checks it), and ``unsigned``, the same messages without
    their MACs (dumps and loads only). Their difference is what the MACs cost."""
    from plant.trust import ReplayGuard, authentic, seal
    from robots.interface import Outcome, SkillGoal, SkillResult
    from robots.ros2.runtime_node import GOAL, RESULT, goal_body, result_body

    key = bytes(range(32))
    guard = ReplayGuard(key, not_before_s=0.0)
    goal = SkillGoal("plan27:home_1:0123456789abcdef", ROBOT, "move_joints", {"joints_rad": FAR}, "ab" * 32, "home_1")
    result = SkillResult(goal.goal_id, Outcome.SUCCEEDED, "", 1.234)
    out: dict[str, list[float]] = {"signed": [], "unsigned": []}
    for i in range(n + 200):
        t0 = time.perf_counter()
        g = json.dumps(seal(key, GOAL, goal_body(goal)))
        d = guard.admit(json.loads(g), GOAL)
        r = json.dumps(seal(key, RESULT, result_body(ROBOT, result, d["nonce"])))
        ok = authentic(key, json.loads(r))
        t1 = time.perf_counter()
        g = json.dumps(goal_body(goal))
        json.loads(g)
        r = json.dumps(result_body(ROBOT, result, ""))
        json.loads(r)
        t2 = time.perf_counter()
        assert ok
        if i >= 200:
            out["signed"].append(t1 - t0)
            out["unsigned"].append(t2 - t1)
    return out


def _stream_mac_cost(n: int) -> list[float]:
    """Per control period, timed ``n`` times (s): the runtime signs its joint command and the
    driver checks it (:class:`plant.trust.StreamSigner`, :class:`plant.trust.StreamGuard`)."""
    from plant.trust import StreamGuard, StreamSigner

    key = bytes(range(32))
    now = time.time()
    signer = StreamSigner(key, "joint_command", ROBOT)
    guard = StreamGuard(key, "joint_command", ROBOT, clock=lambda: now)
    out = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        guard.admit(signer.token(now, FAR), now, FAR)
        if i >= 200:
            out.append(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- the bench


async def _bench(args: argparse.Namespace) -> None:
    from sensor_msgs.msg import JointState as JointStateMsg
    from std_srvs.srv import Trigger

    from plant import load_plant
    from plant.workers import REALTIME_PRIORITY
    from robots.interface import Outcome, SkillGoal
    from robots.ros2._host import STREAM_QOS, RosHost
    from robots.ros2.agent import RosRobotAgent
    from robots.ros2.driver import RobotDriverNode, stamp_s
    from robots.ros2.runtime_node import EstopResetClient
    from robots.testing import make_robot_keys
    from sim.live import LiveTwin
    from sim.robot_drivers import start_robot_drivers
    from sim.twin import Twin

    first, last = _cores()
    here, there = (None, None) if args.no_pin else (first, last)
    pinned = _pin(here)

    # Every joint command the drivers receive: (receive time, header stamp).
    received: list[tuple[float, float]] = []
    on_command = RobotDriverNode._on_command

    def logged(self: RobotDriverNode, msg: Any) -> None:
        if self.robot == ROBOT:
            received.append((time.monotonic(), stamp_s(msg.header.stamp)))
        on_command(self, msg)

    setattr(RobotDriverNode, "_on_command", logged)  # noqa: B010

    twin = Twin(load_plant())
    # The tracker reports an intruder at the robot's base while armed (the twin's people are
    # published every tick; the first tick with the intruder is the intrusion time).
    people = twin.people_positions
    base = twin.plant.robots[ROBOT].base.xyz_m
    intrusion: dict[str, float | None] = {"armed": None, "published": None}

    def tracked() -> dict[str, tuple[float, float, float]]:
        out = people()
        if intrusion["armed"] is not None:
            if intrusion["published"] is None:
                intrusion["published"] = time.monotonic()
            out = {**out, "intruder": (base[0] + 0.3, base[1] - 0.3, 1.6)}
        return out

    setattr(twin, "people_positions", tracked)  # noqa: B010
    state_dir = tempfile.mkdtemp(prefix="bench-robots-")
    keys = make_robot_keys(state_dir, [ROBOT])  # the bench's own, in its temporary state folder
    # As deployed (atelier twin serve, atelier robot runtime): the threads that clock the robots
    # run real-time where permitted, unless --no-realtime; the bare ping-pong never does.
    priority = None if args.no_realtime else REALTIME_PRIORITY
    live = LiveTwin(twin, realtime_priority=priority).start()
    host = RosHost(realtime_priority=priority)
    drivers = start_robot_drivers(live, host)
    prio = [] if priority is None else ["--priority", str(priority)]
    runtime = _Child("runtime", there, "--state-dir", state_dir, *prio)
    echo = _Child("echo", there)
    try:
        node = host.node("bench")
        estop: Any = node.create_client(Trigger, f"/{ROBOT}/estop")
        reset = EstopResetClient(host, ROBOT, keys)  # the operator's signed reset
        agent = RosRobotAgent(host, ROBOT, keys)
        if not await agent.wait_ready(30):
            raise RuntimeError("the runtime does not answer")
        for _ in range(600):
            if estop.service_is_ready():
                break
            await asyncio.sleep(0.05)
        res = await agent.run_skill(SkillGoal("bench-home", ROBOT, "home"), 60)
        print(f"# {ROBOT} home: {res.outcome.value} {res.reason}")
        print(
            f"# pinning: bench/twin/drivers/agent {pinned}; runtime {runtime.hello['pinned']}; "
            f"ping-pong echo {echo.hello['pinned']}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        print(f"# scheduling: twin thread {live.scheduling}; twin's {host.scheduling}")
        print(f"#   runtime {runtime.hello['scheduling']}")
        print("#   bare ping-pong: its echo process normal scheduling (here, its pong comes through the twin's host)")

        # -- idle: bare ping-pong and joint-state latency, the runtime holding
        runtime.ask("periods")
        echo.ask("lat")
        pong = threading.Event()
        ping_pub = node.create_publisher(JointStateMsg, "/bench/ping", STREAM_QOS)
        node.create_subscription(JointStateMsg, "/bench/pong", lambda _m: pong.set(), STREAM_QOS)
        for _ in range(600):
            if ping_pub.get_subscription_count() > 0:
                break
            await asyncio.sleep(0.05)
        msg = JointStateMsg()
        msg.name = [f"joint{i}" for i in range(6)]
        msg.position = HOME
        msg.velocity = [0.0] * 6
        await asyncio.sleep(0.5)
        rtts: list[float] = []
        for i in range(args.pings + 20):
            pong.clear()
            t = time.monotonic()
            ping_pub.publish(msg)
            if not await asyncio.to_thread(pong.wait, 1.0):
                continue
            if i >= 20:  # warm-up
                rtts.append(time.monotonic() - t)
            await asyncio.sleep(0.002)
        idle = runtime.ask("periods")
        plain_lat = echo.ask("lat")["lat"]

        # -- skill-goal round trips (home, at home)
        goal_rtts: list[float] = []
        for i in range(args.goals):
            t = time.monotonic()
            res = await agent.run_skill(SkillGoal(f"bench-rtt-{i}", ROBOT, "home"), 30)
            goal_rtts.append(time.monotonic() - t)
            if res.outcome != Outcome.SUCCEEDED:
                print(f"# goal {i}: {res.outcome.value} {res.reason}")

        # -- safety stops while moving: e-stop and intrusion, alternately
        runtime.ask("periods")
        runtime.ask("stops")

        def speed() -> float:
            return float(live.read(lambda tw: float(np.max(np.abs(tw.joint_velocities(ROBOT))))))

        async def moving_goal(name: str, target: list[float]) -> asyncio.Task[Any] | None:
            task = asyncio.ensure_future(
                agent.run_skill(SkillGoal(name, ROBOT, "move_joints", {"joints_rad": target}), 60)
            )
            for _ in range(600):
                await asyncio.sleep(0.005)
                if speed() > 0.3:
                    return task
            await task
            return None

        async def call(client: Any) -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            fut = client.call_async(Trigger.Request())
            fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(done.set))
            await asyncio.wait_for(done.wait(), 10)

        estop_calls: list[float] = []
        intrusions: list[float] = []
        target = HOME  # the arm is at home: the first trial goes far
        for k in range(args.trials):
            for kind in ("estop", "intrusion"):
                target = HOME if target == FAR else FAR
                task = await moving_goal(f"bench-{kind}-{k}", target)
                if task is None:
                    print(f"# trial {kind} {k}: the arm did not get moving; skipped")
                    continue
                if kind == "estop":
                    estop_calls.append(time.monotonic())
                    await call(estop)
                    await task
                    await asyncio.sleep(0.3)
                    reset_ok = await asyncio.to_thread(reset.reset, "bench operator", 10.0)
                    if reset_ok is None or not reset_ok[0]:
                        print(f"# trial {kind} {k}: the e-stop reset was not taken: {reset_ok}")
                else:
                    intrusion["armed"], intrusion["published"] = time.monotonic(), None
                    await asyncio.sleep(0.3)
                    intrusions.append(intrusion["published"] or float("nan"))
                    intrusion["armed"] = None
                    await task  # resumes once the cell is clear and ends
                await asyncio.sleep(0.2)
        moving = runtime.ask("periods")
        stops = runtime.ask("stops")
        macs = _mac_cost(args.macs)
    finally:
        runtime.close()
        echo.close()
        drivers.close()
        live.stop()
        host.close()

    # -- figures
    by_stamp = {round(s, 6): t for t, s in received}
    estop_rows: list[tuple[float, float, float, float]] = []  # call->trip, trip->out, out->driver, total
    intr_rows: list[tuple[float, float, float]] = []  # published->out, out->driver, total
    trips = list(stops["trips"])
    records = list(stops["stops"])
    for t_call in estop_calls:
        trip = next((t for t in trips if t >= t_call), None)
        rec = next(
            (r for r in records if "estop" in r["causes"] and trip is not None and r["filtered_s"] >= trip), None
        )
        if trip is None or rec is None:
            continue
        t_drv = by_stamp.get(round(rec["stamp"], 6), float("nan"))
        estop_rows.append((trip - t_call, rec["filtered_s"] - trip, t_drv - rec["sent_s"], t_drv - t_call))
    for t_pub in intrusions:
        rec = next((r for r in records if "protective_stop" in r["causes"] and r["filtered_s"] >= t_pub), None)
        if rec is None:
            continue
        t_drv = by_stamp.get(round(rec["stamp"], 6), float("nan"))
        intr_rows.append((rec["filtered_s"] - t_pub, t_drv - rec["sent_s"], t_drv - t_pub))

    bare_rtt = statistics.median(rtts)
    print(f"bare rclpy ping-pong RTT (JointState)   {_ms(rtts)}")
    goal_rtt = statistics.median(goal_rtts)
    print(f"skill goal round trip (home at home)    {_ms(goal_rtts)}  (goals and results signed)")
    print(f"  ratio goal / bare (p50)                {goal_rtt / bare_rtt:7.1f}x")
    mac_s = _q(macs["signed"], 50) - _q(macs["unsigned"], 50)
    print(f"  signed goal + result path              {_ms(macs['signed'])}")
    print(f"  the same messages unsigned             {_ms(macs['unsigned'])}")
    print(f"  MAC cost per round trip (p50)          {mac_s * 1e3:7.3f} ms = {mac_s / goal_rtt:.2%} of the round trip")
    stream_macs = _stream_mac_cost(5000)
    print(
        f"  signed joint command (sign + check)    {_ms(stream_macs)}  = "
        f"{_q(stream_macs, 50) / 0.004:.2%} of a 4 ms control period (p50)"
    )
    fast = idle["lat"]
    print(f"joint state latency, runtime fast lane  {_ms(fast)}")
    print(f"joint state latency, plain subscriber   {_ms(plain_lat)}")
    print(f"  bare one way (RTT/2, p50)              {bare_rtt / 2 * 1e3:7.3f} ms")
    print(f"  ratio fast lane / bare one way (p50)   {_q(fast, 50) / (bare_rtt / 2):7.1f}x")
    for name, periods in (("holding", idle["periods"]), ("moving + stops", moving["periods"])):
        jit = [abs(p - 0.004) for p in periods]
        print(f"control period, {name:15s}         {_ms(periods)}")
        print(f"  jitter |period - 4 ms|                 {_ms(jit)}")
    for name, phase in (("holding", idle), ("moving + stops", moving)):
        print(f"control step compute, {name:15s}   {_ms(phase['compute'])}")
    for name, phase in (("holding", idle), ("moving + stops", moving)):
        sup_s = phase["supervisor"]
        print(f"  supervisor (observe+filter), {name:15s} {_ms(sup_s)}")
        print(f"    share of the 4 ms period (p50)       {_q(sup_s, 50) / 0.004:7.1%}")

    def col(rows: Sequence[tuple[float, ...]], i: int) -> list[float]:
        return [r[i] for r in rows if np.isfinite(r[i])]

    print(f"e-stop ({len(estop_rows)} trials): service call -> supervisor tripped   {_ms(col(estop_rows, 0))}")
    print(f"  tripped -> stop command out of the supervisor  {_ms(col(estop_rows, 1))}")
    print(f"  out of the supervisor -> driver received       {_ms(col(estop_rows, 2))}")
    print(f"  service call -> driver received                {_ms(col(estop_rows, 3))}")
    print(f"intrusion ({len(intr_rows)} trials): published -> stop out of the supervisor {_ms(col(intr_rows, 0))}")
    print(f"  out of the supervisor -> driver received       {_ms(col(intr_rows, 1))}")
    print(f"  published -> driver received                   {_ms(col(intr_rows, 2))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--goals", type=int, default=30, help="skill-goal round trips")
    ap.add_argument("--pings", type=int, default=500, help="bare ping-pong round trips")
    ap.add_argument("--trials", type=int, default=8, help="e-stop and intrusion trials, each")
    ap.add_argument("--macs", type=int, default=5000, help="timed sign-and-check rounds of a goal and its result")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--no-realtime", action="store_true", help="keep the robots' clocking threads at normal scheduling")
    ap.add_argument("--priority", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--role", choices=["bench", "runtime", "echo"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "bench":
        # A domain of its own, inherited by the children: other runs on the machine never interfere.
        os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    runners: dict[str, Callable[[], None]] = {
        "runtime": lambda: _runtime_role(args.core, args.state_dir, args.priority),
        "echo": lambda: _echo_role(args.core),
        "bench": lambda: asyncio.run(_bench(args)),
    }
    runners[args.role]()


if __name__ == "__main__":
    main()

"""The attacks of issue 12, each from a foreign ROS 2 node in a process of its own (no keys), on
the loopback against a runtime in a process of its own (``atelier robot runtime``) driving the
live twin: a foreign goal or cancel, a foreign e-stop reset, a forged result, a replayed or stale
goal. Each is refused (the arm does not move, no step is done, the e-stop stays latched) and
recorded on the robot's side (a ``refuse`` safety event and a line in the runtime's log); a
properly signed goal works. Keys are made in each test's temporary state folder."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from std_msgs.msg import String

from llm_coordinator.executor import MemoryProgress, PlanRunner
from llm_coordinator.plan import Plan, Step
from plant.config import PlantDescription
from plant.trust import KeyStore, reset_key_name, robot_key_name, seal
from robots.interface import Outcome, SkillGoal
from robots.ros2._host import LATCHED_QOS, RosHost
from robots.ros2.agent import RosRobotAgent
from robots.ros2.runtime_node import GOAL, RESET, EstopResetClient
from robots.safety import EstopLatch, latch_file
from robots.testing import make_robot_keys
from sim.live import LiveTwin
from sim.robot_drivers import RobotDrivers
from tests.robots.test_ros2 import ROOT, _coordinator, _Events, _kill, _runtime_log, _start_runtime, cell, runtime

__all__ = ["cell", "runtime"]  # the fixtures of test_ros2, used here

ROBOT = "ur5e_1"
HOME = [0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0]
BASE_TURNED = [2.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0]  # issue 12: the base turned 2 rad
Cell = tuple[LiveTwin, RobotDrivers, RosHost]

# A foreign node: no keys, plain topics and services. It reads one JSON command a line and
# answers with one JSON line: publish (volatile or latched), call a Trigger or the cancel
# service, capture a topic, list what it captured.
_FOREIGN = """
import json, sys, time
from action_msgs.srv import CancelGoal
from std_msgs.msg import String
from std_srvs.srv import Trigger
from unique_identifier_msgs.msg import UUID
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
pubs, captured = {}, {}
def call(client, req):
    if not client.wait_for_service(timeout_sec=10):
        return None
    fut = client.call_async(req)
    end = time.monotonic() + 10
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.01)
    return fut.result() if fut.done() else None
with RosHost() as h:
    n = h.node('mallory')
    print(json.dumps({'ready': True}), flush=True)
    for line in sys.stdin:
        c = json.loads(line)
        out = {'ok': True}
        if c['do'] == 'publish':
            key = (c['topic'], c.get('latched', False))
            if key not in pubs:
                pubs[key] = n.create_publisher(String, c['topic'], LATCHED_QOS if key[1] else STREAM_QOS)
            # Volatile: wait for the robot's reader (beside this node's own capture, if any).
            readers = 2 if c['topic'] in captured else 1
            end = time.monotonic() + 10
            while not key[1] and pubs[key].get_subscription_count() < readers and time.monotonic() < end:
                time.sleep(0.01)
            for data in c['data']:
                pubs[key].publish(String(data=data))
        elif c['do'] == 'trigger':
            r = call(n.create_client(Trigger, c['service']), Trigger.Request())
            out = {'answered': r is not None, 'success': bool(r and r.success), 'message': r.message if r else ''}
        elif c['do'] == 'cancel':
            req = CancelGoal.Request()
            req.goal_info.goal_id = UUID(uuid=list(goal_uuid(c['goal_id'])))
            r = call(n.create_client(CancelGoal, c['service']), req)
            out = {'answered': r is not None, 'return_code': r.return_code if r else -1}
        elif c['do'] == 'capture':
            got = captured.setdefault(c['topic'], [])
            qos = LATCHED_QOS if c.get('latched', False) else STREAM_QOS
            n.create_subscription(String, c['topic'], lambda m, got=got: got.append(m.data), qos)
        elif c['do'] == 'captured':
            out = {'messages': captured.get(c['topic'], [])}
        elif c['do'] == 'quit':
            break
        print(json.dumps(out), flush=True)
"""


class Foreign:
    """The foreign node's process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FOREIGN], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.ask(None).get("ready")

    def ask(self, command: dict[str, Any] | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the foreign node's process ended"
        out: dict[str, Any] = json.loads(line)
        return out

    async def do(self, **command: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.ask, command)

    async def publish(self, topic: str, *messages: dict[str, Any] | str, latched: bool = False) -> None:
        data = [m if isinstance(m, str) else json.dumps(m) for m in messages]
        await self.do(do="publish", topic=topic, data=data, latched=latched)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def foreign() -> Iterator[Foreign]:
    node = Foreign()
    yield node
    node.close()


def _q(live: LiveTwin) -> np.ndarray[Any, np.dtype[np.float64]]:
    q: np.ndarray[Any, np.dtype[np.float64]] = live.read(lambda tw: tw.joint_positions(ROBOT))
    return q


def _refusals(events: _Events, *needles: str) -> list[str]:
    """The refusals recorded on safety/events whose text holds every needle."""
    return [m for _, k, m in events.items if k == "refuse" and all(n in m for n in needles)]


async def _until(check: Any, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def _captured(foreign: Foreign, topic: str, needle: str) -> str:
    """The first message on ``topic`` the foreign node captured that holds ``needle`` (a reliable
    message reaches a reader that matched late at the writer's next heartbeat: wait for it)."""
    found: list[str] = []

    async def look() -> None:
        found[:] = [m for m in (await foreign.do(do="captured", topic=topic))["messages"] if needle in m]

    end = time.monotonic() + 20
    await look()
    while not found and time.monotonic() < end:
        await asyncio.sleep(0.2)
        await look()
    assert found, f"the foreign node captured no message with {needle} on {topic}"
    return found[0]


class _Results:
    """Every message on /ur5e_1/skill/result, as anyone would see it."""

    def __init__(self, host: RosHost) -> None:
        self.goal_ids: list[str] = []
        node = host.node("result_watch")
        node.create_subscription(String, f"/{ROBOT}/skill/result", self._on, LATCHED_QOS)

    def _on(self, msg: String) -> None:
        d = json.loads(msg.data)
        self.goal_ids.append(str(d.get("goal_id")))


async def _agent(host: RosHost, keys: KeyStore) -> RosRobotAgent:
    agent = RosRobotAgent(host, ROBOT, keys)
    assert await agent.wait_ready(20)
    return agent


@pytest.mark.slow
async def test_a_foreign_goal_or_cancel_is_refused_and_recorded(
    cell: Cell, runtime: tuple[subprocess.Popen[str], Path], foreign: Foreign
) -> None:
    live, _, host = cell
    _, state_dir = runtime
    keys = make_robot_keys(state_dir, [ROBOT])
    events, results = _Events(host, f"/{ROBOT}/safety/events"), _Results(host)
    agent = await _agent(host, keys)
    assert (await agent.run_skill(SkillGoal("fg-home", ROBOT, "home"), 30)).outcome == Outcome.SUCCEEDED
    await asyncio.sleep(0.5)  # settled
    q0 = _q(live)
    goal = f"/{ROBOT}/skill/goal"
    # Issue 12's goals, unsigned; the same signed with the attacker's own key; a made-up MAC.
    turn = {"goal_id": "evil-turn", "robot": ROBOT, "skill": "move_joints", "args": {"joints_rad": BASE_TURNED}}
    zeros = {"goal_id": "evil-zeros", "robot": ROBOT, "skill": "move_joints", "args": {"joints_rad": [0.0] * 6}}
    own_key = seal(b"mallory's own key, 32 bytes long", GOAL, {**turn, "goal_id": "evil-own-key"})
    made_up = {**seal(b"x" * 32, GOAL, {**zeros, "goal_id": "evil-made-up"}), "mac": "0" * 64}
    await foreign.publish(goal, turn, zeros, own_key, made_up, "not json")
    assert await _until(lambda: len(_refusals(events, "evil-")) >= 4), events.items
    await asyncio.sleep(1.0)  # anything admitted would be moving by now
    assert np.max(np.abs(_q(live) - q0)) < 0.01, "a foreign goal moved the arm"
    assert not [g for g in results.goal_ids if g.startswith("evil")], "a foreign goal got a result"
    assert _refusals(events, "evil-turn", "not signed")
    assert _refusals(events, "evil-own-key", "not authenticated")
    assert _refusals(events, "evil-made-up", "not authenticated")
    assert "evil-turn refused: not signed" in _runtime_log(state_dir)  # the robot's log, too

    # A foreign cancel of a running goal (its id seen on the wire): refused; the goal goes on.
    target = [-1.0, -2.0, 1.2, -1.5, -1.5, 1.0]
    for attempt in range(3):
        far = SkillGoal(f"fg-far-{attempt}", ROBOT, "move_joints", {"joints_rad": target})
        task = asyncio.ensure_future(agent.run_skill(far, 30))
        await _until(lambda t=task: t.done() or float(np.max(np.abs(_q(live) - q0))) > 0.05, 20)
        if not task.done():
            break
        # Refused before it moved (on a loaded machine the twin's joint states may pause for longer
        # than the runtime takes: it refuses goals until they are back): again.
    else:
        raise AssertionError(f"the arm never got moving: {task.result()}")
    answer = await foreign.do(do="cancel", service=f"/{ROBOT}/skill/cancel", goal_id=far.goal_id)
    assert answer["answered"] and answer["return_code"] != 0  # rejected
    await foreign.publish(goal, {"kind": "cancel", "robot": ROBOT, "goal_id": far.goal_id})
    res = await task
    assert res.outcome == Outcome.SUCCEEDED, res
    assert np.max(np.abs(_q(live) - np.array(far.args["joints_rad"]))) < 0.03
    assert _refusals(events, "skill/cancel", "unsigned") and _refusals(events, f"cancel {far.goal_id}", "not signed")


@pytest.mark.slow
async def test_a_foreign_or_replayed_reset_is_refused_and_recorded(
    cell: Cell, runtime: tuple[subprocess.Popen[str], Path], foreign: Foreign
) -> None:
    _, _, host = cell
    _, state_dir = runtime
    keys = make_robot_keys(state_dir, [ROBOT])
    events = _Events(host, f"/{ROBOT}/safety/events")
    latch = latch_file(state_dir, ROBOT)
    agent = await _agent(host, keys)

    async def trip() -> None:  # anyone may stop a robot: no key needed
        answer = await foreign.do(do="trigger", service=f"/{ROBOT}/estop")
        assert answer["success"], answer
        assert EstopLatch(latch).tripped

    await trip()
    # Issue 12: the Trigger service answered success and reset. Now: refused.
    answer = await foreign.do(do="trigger", service=f"/{ROBOT}/operator/estop_reset")
    assert answer["answered"] and not answer["success"] and "refused" in answer["message"], answer
    request = f"/{ROBOT}/operator/estop_reset_request"
    unsigned = {"kind": RESET, "robot": ROBOT, "operator": "mallory", "stamp_s": time.time(), "nonce": "n" * 32}
    own_key = seal(b"mallory's own key, 32 bytes long", RESET, {"robot": ROBOT, "operator": "mallory"})
    # A reset signed with the robot's *command* key (the coordinator's) is no reset either.
    command_key = seal(keys.key(robot_key_name(ROBOT)), RESET, {"robot": ROBOT, "operator": "the coordinator"})
    await foreign.publish(request, unsigned, own_key, command_key)
    assert await _until(lambda: len(_refusals(events, "e-stop reset")) >= 4), events.items
    assert _refusals(events, "operator/estop_reset", "unsigned")
    assert len(_refusals(events, "mallory", "not")) == 2 and _refusals(events, "the coordinator", "not authenticated")
    assert EstopLatch(latch).tripped
    res = await agent.run_skill(SkillGoal("fr-1", ROBOT, "home"), 30)
    assert res.outcome == Outcome.STOPPED_BY_SAFETY, res

    # The operator's signed reset works; captured on the wire and replayed later, it does not.
    await foreign.do(do="capture", topic=request)
    client = EstopResetClient(host, ROBOT, keys)
    # A volatile topic: the capture sees what is sent once it matched (the runtime and the capture).
    assert await _until(lambda: client._pub.get_subscription_count() >= 2)
    assert await asyncio.to_thread(client.reset, "alice", 5.0) == (True, "e-stop reset by alice")
    assert not EstopLatch(latch).tripped
    await trip()
    await foreign.publish(request, await _captured(foreign, request, '"alice"'))
    assert await _until(lambda: bool(_refusals(events, "alice", "replayed")))
    # An operator's request older than the window (captured long ago): refused as stale. (A
    # second later: beyond RobotRuntime.REFUSALS_PER_S a second, refusals are counted, not named.)
    await asyncio.sleep(1.1)
    stale = seal(keys.key(reset_key_name(ROBOT)), RESET, {"robot": ROBOT, "operator": "bob"}, now_s=time.time() - 60)
    await foreign.publish(request, stale)
    assert await _until(lambda: bool(_refusals(events, "bob", "stale"))), (
        (await foreign.do(do="captured", topic=request))["messages"],
        _runtime_log(state_dir),
    )
    await asyncio.sleep(0.5)
    assert EstopLatch(latch).tripped
    assert (await agent.run_skill(SkillGoal("fr-2", ROBOT, "home"), 30)).outcome == Outcome.STOPPED_BY_SAFETY
    assert "refused" in _runtime_log(state_dir)


@pytest.mark.slow
async def test_a_forged_or_old_result_finishes_no_step(
    cell: Cell,
    runtime: tuple[subprocess.Popen[str], Path],
    foreign: Foreign,
    demo_plant: PlantDescription,
) -> None:
    live, _, host = cell
    _, state_dir = runtime
    keys = make_robot_keys(state_dir, [ROBOT])
    agent = await _agent(host, keys)
    # A goal run by a coordinator that then stopped: its result stays latched on skill/result.
    old = ""
    for attempt in range(6):  # (a loaded machine may starve the twin: the runtime refuses then)
        old = f"old-{attempt}"
        if _coordinator(old, state_dir).startswith("succeeded"):
            break
    else:
        raise AssertionError("no goal succeeded")
    # Nothing can succeed now (so a "succeeded" could only be forged), and nothing moves.
    assert (await foreign.do(do="trigger", service=f"/{ROBOT}/estop"))["success"]
    await asyncio.sleep(0.5)  # stopped
    q0 = _q(live)
    # Issue 12: a foreign node latches "succeeded" for the predictable ids, and more.
    result = f"/{ROBOT}/skill/result"
    forged = [{"goal_id": g, "outcome": "succeeded"} for g in ("plan0:home_1", "forge-1")]
    signed = seal(b"mallory's own key, 32 bytes long", "result", {"robot": ROBOT, "goal_id": "forge-1"})
    ignored = agent.channel.ignored
    await foreign.publish(result, *forged, {**signed, "outcome": "succeeded", "goal_nonce": ""}, latched=True)
    assert await _until(lambda: agent.channel.ignored >= ignored + 3)  # there before the goals go out
    plan = Plan(work_order="home", mode="direct", steps=[Step(id="home_1", agent=ROBOT, skill="home")])
    report = await PlanRunner(demo_plant, {}, {ROBOT: agent}).execute(plan, MemoryProgress(0))
    assert report.status == "paused" and report.failed_step == "home_1", report
    assert "stopped_by_safety" in report.reason, report.reason
    res = await agent.run_skill(SkillGoal("forge-1", ROBOT, "home"), 30)
    assert res.outcome == Outcome.STOPPED_BY_SAFETY, res
    # A new coordinator sending the old goal id again: the runtime does not run it twice, and
    # the old latched result (another run's) is not taken for it.
    out = _coordinator(old, state_dir, timeout_s=4)
    assert out.startswith("failed") and "no result" in out, out
    assert np.max(np.abs(_q(live) - q0)) < 0.01


@pytest.mark.slow
async def test_a_replayed_or_stale_goal_is_refused_and_a_signed_one_works(
    cell: Cell, runtime: tuple[subprocess.Popen[str], Path], foreign: Foreign
) -> None:
    live, _, host = cell
    proc, state_dir = runtime
    keys = make_robot_keys(state_dir, [ROBOT])
    events = _Events(host, f"/{ROBOT}/safety/events")
    agent = await _agent(host, keys)
    goal = f"/{ROBOT}/skill/goal"
    await foreign.do(do="capture", topic=goal)
    assert await _until(lambda: agent.channel.goal_pub.get_subscription_count() >= 2)  # see the reset test
    turn = SkillGoal("rp-turn", ROBOT, "move_joints", {"joints_rad": [0.6, *HOME[1:]]})
    for g in (turn, SkillGoal("rp-home", ROBOT, "home")):  # properly signed: they work
        res = await agent.run_skill(g, 30)
        assert res.outcome == Outcome.SUCCEEDED, res
    await asyncio.sleep(0.5)  # settled
    q0 = _q(live)
    assert abs(q0[0]) < 0.03
    captured = await _captured(foreign, goal, "rp-turn")
    await foreign.publish(goal, captured)  # replayed within the window
    assert await _until(lambda: bool(_refusals(events, "rp-turn", "replayed"))), events.items
    # Signed with the robot's key, but a minute ago (a message captured then).
    key = keys.key(robot_key_name(ROBOT))
    body = {"goal_id": "rp-stale", "robot": ROBOT, "skill": "move_joints", "args": {"joints_rad": BASE_TURNED}}
    await foreign.publish(goal, seal(key, GOAL, body, now_s=time.time() - 60))
    assert await _until(lambda: bool(_refusals(events, "rp-stale", "stale")))
    await asyncio.sleep(1.0)
    assert np.max(np.abs(_q(live) - q0)) < 0.01
    # The runtime restarts (its memory of nonces is gone): the captured goal is still refused.
    _kill(proc)
    proc2 = _start_runtime(ROBOT, state_dir)
    try:
        assert await agent.wait_ready(20)
        await foreign.publish(goal, captured)
        assert await _until(
            lambda: bool(
                _refusals(events, "rp-turn", "before this receiver started") or _refusals(events, "rp-turn", "stale")
            )
        ), events.items
        await asyncio.sleep(1.0)
        assert np.max(np.abs(_q(live) - q0)) < 0.01
        res = await agent.run_skill(SkillGoal("rp-after", ROBOT, "move_joints", {"joints_rad": [0.3, *HOME[1:]]}), 30)
        assert res.outcome == Outcome.SUCCEEDED, res
        assert abs(_q(live)[0] - 0.3) < 0.03
    finally:
        _kill(proc2)

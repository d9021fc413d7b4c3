"""The robot agent over ROS 2: :class:`RosGoalChannel`, a robot's goal channel
(:class:`robots.agent.GoalChannel`) on its runtime's endpoints, and :class:`RosRobotAgent`, the
one robot agent (:class:`robots.agent.ChannelAgent`) over such channels.

A goal goes out on ``/<robot>/skill/goal``, signed with the robot's command key
(:func:`plant.trust.seal`; plan hash, step, skill, arguments, goal id, time and nonce), signed
afresh and sent again every second until the runtime acknowledges it (it may be restarting); a
cancel goes out the same way until the robot reports the goal ended. Results come back on
``/<robot>/skill/result``; a channel takes one only if it is signed with the robot's key, for a
goal this channel sent, naming the nonce of one of the messages that carried it: a forged result,
or one latched from another run (even for the same goal id), is ignored. Every goal sent is
logged (the coordinator's side of the audit). The agent has no way to reset an e-stop, and needs
no reset key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from action_msgs.msg import GoalStatusArray
from std_msgs.msg import String

from plant.text import safe_text
from plant.trust import KeyStore, TrustError, authentic, robot_key_name, robot_keys, seal
from robots.agent import ChannelAgent
from robots.interface import SkillFeedback, SkillGoal, SkillResult
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.runtime_node import CANCEL, GOAL, RESULT, goal_body, result_from_message

log = logging.getLogger(__name__)


def _resolve(fut: asyncio.Future[SkillResult], result: SkillResult) -> None:
    if not fut.done():
        fut.set_result(result)


class RosGoalChannel:
    """The goal, result, status and cancel endpoints of ``robot``'s runtime (a node on ``host``,
    named after ``tag``), signed with the robot's command key from ``keys`` (default
    :func:`plant.trust.robot_keys`: ``$ATELIER_STATE_DIR/trust``). Raises
    :class:`plant.trust.TrustError` if the key does not exist. ``resend_s``: how often an
    unacknowledged goal goes out again; ``cancel_wait_s``: how long :meth:`cancel` waits for the
    goal to end (wall clock)."""

    def __init__(
        self,
        host: RosHost,
        robot: str,
        tag: str = "self",
        resend_s: float = 1.0,
        cancel_wait_s: float = 5.0,
        keys: KeyStore | None = None,
    ) -> None:
        self.robot, self.resend_s, self.cancel_wait_s = robot, resend_s, cancel_wait_s
        self._key = (keys if keys is not None else robot_keys()).key(robot_key_name(robot), create=False)
        self.node = host.node(f"agent_{tag}", namespace=f"/{robot}")
        self.goal_pub = self.node.create_publisher(String, "skill/goal", STREAM_QOS)
        self.results: dict[str, SkillResult] = {}  # of goals this channel sent, as the robot signed them
        self.status: dict[bytes, int] = {}
        self.ignored = 0  # results not taken: unauthenticated, malformed, or not for a goal sent here
        self.lock = threading.Lock()
        self._goals: dict[str, SkillGoal] = {}  # submitted, sent again until acknowledged
        self._sent: set[str] = set()
        self._nonces: dict[str, set[str]] = {}  # goal id -> nonces of the messages that carried it
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[SkillResult]]]] = {}
        self._feedback: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[SkillFeedback]]] = []
        self.result_sub = self.node.create_subscription(String, "skill/result", self._on_result, LATCHED_QOS)
        self.node.create_subscription(GoalStatusArray, "skill/status", self._on_status, LATCHED_QOS)
        self.node.create_subscription(String, "skill/feedback", self._on_feedback, STREAM_QOS)

    def _on_result(self, msg: String) -> None:
        try:
            d: Any = json.loads(msg.data)
        except ValueError:
            d = None
        if not (isinstance(d, dict) and authentic(self._key, d) and d.get("kind") == RESULT):
            self._ignore(logging.WARNING, "a result not signed by its runtime", d)
            return
        goal_id, nonce = d.get("goal_id"), d.get("goal_nonce")
        with self.lock:
            sent = self._nonces.get(goal_id) if isinstance(goal_id, str) else None
            ours = d.get("robot") == self.robot and sent is not None and isinstance(nonce, str) and nonce in sent
            if ours and goal_id in self.results:
                return  # the same result again
        if not ours:  # another run's (latched), another agent's, or a replayed one
            self._ignore(logging.DEBUG, "a result for a goal this agent did not send", d)
            return
        try:
            r = result_from_message(d)
        except (KeyError, TypeError, ValueError):
            self._ignore(logging.WARNING, "a malformed result", d)
            return
        with self.lock:
            self.results[r.goal_id] = r
            self._goals.pop(r.goal_id, None)
            self._nonces.pop(r.goal_id, None)
            waiters = self._waiters.pop(r.goal_id, [])
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut, r)

    def _ignore(self, level: int, what: str, d: object) -> None:
        self.ignored += 1
        if level == logging.DEBUG or self.ignored <= 20 or self.ignored % 1000 == 0:
            goal_id = safe_text(str(d.get("goal_id", "?")), 80) if isinstance(d, dict) else "?"
            log.log(level, "%s: ignored %s (goal %s; %d ignored so far)", self.robot, what, goal_id, self.ignored)

    def _on_status(self, msg: GoalStatusArray) -> None:
        with self.lock:
            for s in msg.status_list:
                self.status[bytes(s.goal_info.goal_id.uuid)] = int(s.status)

    def _on_feedback(self, msg: String) -> None:
        d = json.loads(msg.data)
        fb = SkillFeedback(str(d["goal_id"]), float(d["progress"]), str(d["phase"]))
        with self.lock:
            queues = list(self._feedback)
        for loop, q in queues:
            loop.call_soon_threadsafe(q.put_nowait, fb)

    def ready(self) -> bool:
        """True once the robot's runtime listens for goals and cancels and publishes results."""
        return bool(self.goal_pub.get_subscription_count() > 0 and self.result_sub.get_publisher_count() > 0)

    def _send(self, goal_id: str) -> None:
        """Publish a submitted goal, signed afresh, once a runtime listens, until the runtime
        acknowledged it."""
        with self.lock:
            goal = self._goals.get(goal_id)
            if goal is None or goal_uuid(goal_id) in self.status or self.goal_pub.get_subscription_count() == 0:
                return
            msg = seal(self._key, GOAL, goal_body(goal))
            self._nonces.setdefault(goal_id, set()).add(msg["nonce"])
            first = goal_id not in self._sent
            self._sent.add(goal_id)
        if first:
            log.info(
                "%s: sent goal %s (%s, plan %s, step %s)",
                self.robot,
                goal_id,
                goal.skill,
                goal.plan_hash[:12] or "-",
                goal.step_id or "-",
            )
        self.goal_pub.publish(String(data=json.dumps(msg)))

    async def _await(self, goal_id: str, timeout_s: float, period_s: float, every: Callable[[], object]) -> bool:
        """Wait up to ``timeout_s`` for the goal's result (True if it came), calling ``every``
        after each ``period_s`` without it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SkillResult] = loop.create_future()
        with self.lock:
            if goal_id in self.results:
                return True
            self._waiters.setdefault(goal_id, []).append((loop, fut))
        end = time.monotonic() + timeout_s
        while (remaining := end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), min(period_s, remaining))
                return True
            every()
        return False

    async def submit(self, goal: SkillGoal) -> None:
        with self.lock:
            if goal.goal_id in self.results:
                return  # latched: it ran before
            self._goals[goal.goal_id] = goal
        self._send(goal.goal_id)

    async def result(self, goal_id: str, timeout_s: float) -> SkillResult:
        if not await self._await(goal_id, timeout_s, self.resend_s, lambda: self._send(goal_id)):
            raise TimeoutError(f"{self.robot}: no result for goal {goal_id} in {timeout_s:g} s")
        return self.results[goal_id]

    async def cancel(self, goal_id: str) -> None:
        with self.lock:
            self._goals.pop(goal_id, None)
            if goal_id not in self._sent:
                return  # never sent: nothing runs

        def ask() -> None:  # again until the goal ended: the request may overtake the goal itself
            msg = seal(self._key, CANCEL, {"robot": self.robot, "goal_id": goal_id})
            self.goal_pub.publish(String(data=json.dumps(msg)))

        log.info("%s: cancel goal %s", self.robot, goal_id)
        ask()
        await self._await(goal_id, self.cancel_wait_s, 0.25, ask)

    async def feedback(self) -> AsyncIterator[SkillFeedback]:
        """Progress of this robot's goals, as it arrives (an endless async iterator)."""
        q: asyncio.Queue[SkillFeedback] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), q)
        with self.lock:
            self._feedback.append(entry)
        try:
            while True:
                yield await q.get()
        finally:
            with self.lock:
                self._feedback.remove(entry)


class RosRobotAgent(ChannelAgent):
    """The robot agent of ``name`` over ROS 2 (nodes on ``host``): its own channel, and one to
    the receiver of a hand-over, made when first needed. ``keys`` holds the robots' command keys
    (default :func:`plant.trust.robot_keys`); raises :class:`plant.trust.TrustError` if ``name``
    has none (a receiver without a key cannot be handed over to: that hand-over fails)."""

    channel: RosGoalChannel

    def __init__(self, host: RosHost, name: str, keys: KeyStore | None = None) -> None:
        keys = keys if keys is not None else robot_keys()
        peers: dict[str, RosGoalChannel] = {}

        def peer(robot: str) -> RosGoalChannel | None:
            if robot not in peers:
                try:
                    peers[robot] = RosGoalChannel(host, robot, f"peer_of_{name}", keys=keys)
                except TrustError as exc:
                    log.error("%s cannot send %s goals: %s", name, robot, exc)
                    return None
            return peers[robot]

        super().__init__(RosGoalChannel(host, name, "self", keys=keys), peer)
        self._robot = self.channel  # its latched results, as tests/robots/test_ros2.py reads them

    async def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once the robot's runtime listens for goals (False after ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while not self.channel.ready():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

"""The robot agent over ROS 2: :class:`RosGoalChannel`, a robot's goal channel
(:class:`robots.agent.GoalChannel`) on its runtime's endpoints, and :class:`RosRobotAgent`, the
one robot agent (:class:`robots.agent.ChannelAgent`) over such channels.

A goal goes out on ``/<robot>/skill/goal``, again every second until the runtime acknowledges
it (it may be restarting); its result comes back latched on ``/<robot>/skill/result`` (a
coordinator that restarts still gets it); a cancel calls ``/<robot>/skill/cancel`` until the
robot reports the goal ended. The agent has no way to reset an e-stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from action_msgs.msg import GoalStatusArray
from action_msgs.srv import CancelGoal
from std_msgs.msg import String
from unique_identifier_msgs.msg import UUID

from robots.agent import ChannelAgent
from robots.interface import SkillFeedback, SkillGoal, SkillResult
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.runtime_node import goal_to_json, result_from_json


def _resolve(fut: asyncio.Future[SkillResult], result: SkillResult) -> None:
    if not fut.done():
        fut.set_result(result)


class RosGoalChannel:
    """The goal, result, status and cancel endpoints of ``robot``'s runtime (a node on ``host``,
    named after ``tag``). ``resend_s``: how often an unacknowledged goal goes out again;
    ``cancel_wait_s``: how long :meth:`cancel` waits for the goal to end (wall clock)."""

    def __init__(
        self, host: RosHost, robot: str, tag: str = "self", resend_s: float = 1.0, cancel_wait_s: float = 5.0
    ) -> None:
        self.robot, self.resend_s, self.cancel_wait_s = robot, resend_s, cancel_wait_s
        self.node = host.node(f"agent_{tag}", namespace=f"/{robot}")
        self.goal_pub = self.node.create_publisher(String, "skill/goal", STREAM_QOS)
        self.cancel_client: Any = self.node.create_client(CancelGoal, "skill/cancel")
        self.results: dict[str, SkillResult] = {}
        self.status: dict[bytes, int] = {}
        self.lock = threading.Lock()
        self._goals: dict[str, SkillGoal] = {}  # submitted, sent again until acknowledged
        self._sent: set[str] = set()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[SkillResult]]]] = {}
        self._feedback: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[SkillFeedback]]] = []
        self.node.create_subscription(String, "skill/result", self._on_result, LATCHED_QOS)
        self.node.create_subscription(GoalStatusArray, "skill/status", self._on_status, LATCHED_QOS)
        self.node.create_subscription(String, "skill/feedback", self._on_feedback, STREAM_QOS)

    def _on_result(self, msg: String) -> None:
        r = result_from_json(msg.data)
        with self.lock:
            self.results[r.goal_id] = r
            self._goals.pop(r.goal_id, None)
            waiters = self._waiters.pop(r.goal_id, [])
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut, r)

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
        """True once the robot's runtime listens for goals and cancels."""
        return bool(self.goal_pub.get_subscription_count() > 0 and self.cancel_client.service_is_ready())

    def _send(self, goal_id: str) -> None:
        """Publish a submitted goal once a runtime listens, until the runtime acknowledged it."""
        with self.lock:
            goal = self._goals.get(goal_id)
            if goal is None or goal_uuid(goal_id) in self.status or self.goal_pub.get_subscription_count() == 0:
                return
            self._sent.add(goal_id)
        self.goal_pub.publish(String(data=goal_to_json(goal)))

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
        req = CancelGoal.Request()
        req.goal_info.goal_id = UUID(uuid=list(goal_uuid(goal_id)))

        def ask() -> None:  # again until the goal ended: the request may overtake the goal itself
            if self.cancel_client.service_is_ready():
                self.cancel_client.call_async(req)

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
    the receiver of a hand-over, made when first needed."""

    channel: RosGoalChannel

    def __init__(self, host: RosHost, name: str) -> None:
        peers: dict[str, RosGoalChannel] = {}

        def peer(robot: str) -> RosGoalChannel:
            if robot not in peers:
                peers[robot] = RosGoalChannel(host, robot, f"peer_of_{name}")
            return peers[robot]

        super().__init__(RosGoalChannel(host, name, "self"), peer)
        self._robot = self.channel  # its latched results, as tests/robots/test_ros2.py reads them

    async def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once the robot's runtime listens for goals (False after ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while not self.channel.ready():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

"""The robot agent over ROS 2: what the coordinator's executor uses to run a skill on a robot.

:meth:`RosRobotAgent.run_skill` publishes the goal on ``/<robot>/skill/goal``, waits for its
result on ``/<robot>/skill/result`` and, when the awaiting task is cancelled, calls
``/<robot>/skill/cancel`` and waits for the robot to stop. It survives the runtime's restarts
(a goal not acknowledged is sent again) and its own (results are latched). A hand-over also
sends the receiving robot its ``take`` goal. The agent has no way to reset an e-stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from action_msgs.msg import GoalStatus, GoalStatusArray
from action_msgs.srv import CancelGoal
from std_msgs.msg import String
from unique_identifier_msgs.msg import UUID

from robots.interface import Outcome, SkillFeedback, SkillGoal, SkillResult
from robots.ros2._host import LATCHED_QOS, STREAM_QOS, RosHost, goal_uuid
from robots.ros2.runtime_node import goal_to_json, result_from_json


def _resolve(fut: asyncio.Future[SkillResult], result: SkillResult) -> None:
    if not fut.done():
        fut.set_result(result)


class _Robot:
    """Goal, result, status and cancel endpoints of one robot's runtime."""

    def __init__(self, host: RosHost, robot: str, tag: str) -> None:
        self.node = host.node(f"agent_{tag}", namespace=f"/{robot}")
        self.goal_pub = self.node.create_publisher(String, "skill/goal", STREAM_QOS)
        self.cancel: Any = self.node.create_client(CancelGoal, "skill/cancel")
        self.results: dict[str, SkillResult] = {}
        self.status: dict[bytes, int] = {}
        self.waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[SkillResult]]]] = {}
        self.feedback_queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[SkillFeedback]]] = []
        self.lock = threading.Lock()
        self.node.create_subscription(String, "skill/result", self._on_result, LATCHED_QOS)
        self.node.create_subscription(GoalStatusArray, "skill/status", self._on_status, LATCHED_QOS)
        self.node.create_subscription(String, "skill/feedback", self._on_feedback, STREAM_QOS)

    def _on_result(self, msg: String) -> None:
        r = result_from_json(msg.data)
        with self.lock:
            self.results[r.goal_id] = r
            waiters = self.waiters.pop(r.goal_id, [])
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
            queues = list(self.feedback_queues)
        for loop, q in queues:
            loop.call_soon_threadsafe(q.put_nowait, fb)

    def acknowledged(self, goal_id: str) -> bool:
        with self.lock:
            return goal_uuid(goal_id) in self.status or goal_id in self.results

    async def run(self, goal: SkillGoal, timeout_s: float, resend_s: float = 1.0) -> SkillResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SkillResult] = loop.create_future()
        with self.lock:
            if goal.goal_id in self.results:
                return self.results[goal.goal_id]
            self.waiters.setdefault(goal.goal_id, []).append((loop, fut))
        deadline = time.monotonic() + timeout_s
        text = String(data=goal_to_json(goal))
        try:
            while True:
                # Send once a runtime listens; again until it acknowledges (it may be restarting).
                if self.goal_pub.get_subscription_count() > 0 and not self.acknowledged(goal.goal_id):
                    self.goal_pub.publish(text)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{goal.robot}: no result for goal {goal.goal_id} in {timeout_s:.0f} s")
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(resend_s, remaining))
                except TimeoutError:
                    continue
        except asyncio.CancelledError:
            await self.cancel_goal(goal.goal_id)
            raise

    async def cancel_goal(self, goal_id: str, wait_s: float = 5.0) -> None:
        """Ask the runtime to cancel; wait (bounded) until the robot reports the goal ended."""
        req = CancelGoal.Request()
        req.goal_info.goal_id = UUID(uuid=list(goal_uuid(goal_id)))
        if self.cancel.service_is_ready():
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            fut = self.cancel.call_async(req)
            fut.add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), wait_s)
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            with self.lock:
                if goal_id in self.results:
                    return
                st = self.status.get(goal_uuid(goal_id))
            if st in (GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_SUCCEEDED):
                return
            await asyncio.sleep(0.005)


class RosRobotAgent:
    """A :class:`~robots.interface.RobotAgent` for ``name`` over ROS 2 (nodes on ``host``)."""

    def __init__(self, host: RosHost, name: str) -> None:
        self.name = name
        self._host = host
        self._robot = _Robot(host, name, "self")
        self._peers: dict[str, _Robot] = {}

    def _peer(self, robot: str) -> _Robot:
        if robot not in self._peers:
            self._peers[robot] = _Robot(self._host, robot, f"peer_of_{self.name}")
        return self._peers[robot]

    async def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once the robot's runtime listens for goals."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._robot.goal_pub.get_subscription_count() > 0 and self._robot.cancel.service_is_ready():
                return True
            await asyncio.sleep(0.02)
        return False

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        """Perform a skill and return its outcome (see the module docstring).

        Raises ``TimeoutError`` when no result came within ``timeout_s``; cancelling the awaiting
        task cancels the goal on the robot (it brakes to a stop) and re-raises.
        """
        if goal.robot != self.name:
            return SkillResult(goal.goal_id, Outcome.FAILED, f"goal for {goal.robot} given to {self.name}'s agent")
        if goal.skill != "hand_over":
            return await self._robot.run(goal, timeout_s)
        receiver = str(goal.args.get("to_robot", ""))
        take = SkillGoal(
            f"{goal.goal_id}/take",
            receiver,
            "take",
            {
                "from_robot": self.name,
                "location": goal.args.get("location", ""),
                "part_type": str(goal.args.get("part_type", "")),
            },
        )
        give_task = asyncio.ensure_future(self._robot.run(goal, timeout_s))
        take_task = asyncio.ensure_future(self._peer(receiver).run(take, timeout_s))
        try:
            give, took = await asyncio.gather(give_task, take_task)
        except BaseException:
            give_task.cancel()
            take_task.cancel()
            raise
        if give.outcome == Outcome.SUCCEEDED and took.outcome != Outcome.SUCCEEDED:
            return SkillResult(
                goal.goal_id, took.outcome, f"{receiver} did not take the part: {took.reason}", give.duration_s
            )
        return give

    async def feedback(self) -> AsyncIterator[SkillFeedback]:
        """Progress of this robot's skills, as it arrives (an endless async iterator)."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[SkillFeedback] = asyncio.Queue()
        entry = (loop, q)
        with self._robot.lock:
            self._robot.feedback_queues.append(entry)
        try:
            while True:
                yield await q.get()
        finally:
            with self._robot.lock:
                self._robot.feedback_queues.remove(entry)

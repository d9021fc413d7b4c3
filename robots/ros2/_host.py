"""An rclpy context with its executor spinning on a thread of its own."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

#: Reliable, keep the last few: commands and states (latest wins).
STREAM_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: Late joiners get the last values (results, status).
LATCHED_QOS = QoSProfile(
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

_GOAL_NS = uuid.UUID("6f1c4a52-8f0e-4a4e-9a55-2f6d0f6a7e01")


def goal_uuid(goal_id: str) -> bytes:
    """The 16-byte action UUID standing for a goal id (stable across processes)."""
    return uuid.uuid5(_GOAL_NS, goal_id).bytes


class RosHost:
    """One rclpy context and executor for the nodes of a process (or of a test fixture).

    ``domain_id`` None takes ``ROS_DOMAIN_ID`` from the environment. The executor spins on a
    daemon thread; callbacks run there. :meth:`close` shuts it all down (idempotent).
    """

    def __init__(self, domain_id: int | None = None) -> None:
        self.context = Context()
        if domain_id is None and os.environ.get("ROS_DOMAIN_ID"):
            domain_id = int(os.environ["ROS_DOMAIN_ID"])
        # No signal handlers: the process owner (a CLI, pytest) decides what a signal does.
        kwargs: dict[str, Any] = {"context": self.context, "signal_handler_options": SignalHandlerOptions.NO}
        if domain_id is not None:
            kwargs["domain_id"] = domain_id
        rclpy.init(**kwargs)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, name="atelier-ros2", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(ExternalShutdownException, KeyboardInterrupt):
            self.executor.spin()

    def node(self, name: str, namespace: str = "") -> Node:
        node = Node(name, namespace=namespace, context=self.context)
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        if not self.context.ok():
            return
        self.executor.shutdown(timeout_sec=1.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(2.0)

    def __enter__(self) -> RosHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

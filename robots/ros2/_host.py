"""An rclpy context with its executor spinning on a thread of its own, and a fast lane.

rclpy's executors are written in Python: every callback costs a rebuild of the wait set from
every entity of every node (0.3 to 0.7 ms of CPU under the GIL, measured on the shared 2-core
machine with 1 to 8 nodes). A few 250 Hz topics saturate one executor and the
rest of its callbacks (goals, services) queue behind them. So the high-rate, short callbacks
(joint states, joint commands, tracked people, streamed commands) go on a :class:`FastLane`:
their own node, which no executor spins, waited on by one thread with a wait set of just those
subscriptions. Publishing needs no executor at all (rclpy publishers are thread-safe), so
drivers publish on the thread that has the data.

A host made with a ``realtime_priority`` (:data:`plant.workers.REALTIME_PRIORITY` in the robot
runtime's and the twin drivers' processes) schedules its fast lane's thread and the middleware's
receive threads of user data real-time, where permitted (:func:`plant.workers.realtime`): a
joint state then reaches the control loop without waiting for the machine's other work. The
executor's thread (goals, services), the discovery threads (traffic from anyone on the
network) and other hosts' threads keep normal scheduling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription

from plant.workers import realtime

log = logging.getLogger(__name__)
MsgT = TypeVar("MsgT")

#: Reliable, keep the last few: commands and states (latest wins).
STREAM_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: Late joiners get the last values (results, status, events). A transient-local writer also
#: matches volatile readers; the reverse does not match (and rclpy only warns).
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


def _bare_node(name: str, namespace: str, context: Context) -> Node:
    # No parameter or type-description services: we use neither, and each adds 7 services to
    # every wait of the executor.
    return Node(
        name,
        namespace=namespace,
        context=context,
        start_parameter_services=False,
        parameter_overrides=[Parameter("start_type_description_service", value=False)],
    )


#: The names Fast DDS gives the threads that receive data: by transport (shared memory, UDP)
#: and port. Its shared-memory watchdog (``dds.shm.wdog``) is no receiver.
_RECEIVERS = ("dds.shm.", "dds.udp.")


def _receive_threads() -> dict[int, str]:
    """This process's middleware receive threads: native id -> name (none where ``/proc`` is not)."""
    found: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                name = (task / "comm").read_text().strip()
                if name.startswith(_RECEIVERS) and name != "dds.shm.wdog":
                    found[int(task.name)] = name
    return found


def _carries_user_data(name: str, domain_id: int) -> bool:
    """Whether a receive thread named ``name`` listens on a port of user data (topics) of
    ``domain_id``, not of discovery: in the RTPS well-known ports (7400 + 250 per domain), the
    offsets of user data are odd (1, multicast; 11 + 2 per participant, unicast) and those of
    discovery even (0; 10 + 2 per participant). Discovery traffic comes from anyone on the
    network, and must not run before the machine's other work."""
    try:
        offset = int(name.rsplit(".", 1)[1]) - 7400 - 250 * domain_id
    except (IndexError, ValueError):
        return False
    return 0 <= offset < 250 and offset % 2 == 1


class FastLane:
    """High-rate subscriptions served by a thread of their own, outside any executor.

    Callbacks run on the lane's thread, in arrival order, and must not block (hand the data
    over and return). An exception in a callback is logged; the lane keeps running. With a
    ``priority`` the thread schedules itself real-time first (:func:`plant.workers.realtime`);
    :attr:`scheduling` says what it got.
    """

    def __init__(self, context: Context, name: str, priority: int | None = None) -> None:
        self._context = context
        self._priority = priority
        self.scheduling = "normal scheduling"
        self._scheduled = threading.Event()
        self._node = _bare_node(name, "", context)
        self._wake = self._node.create_guard_condition(lambda: None)
        self._lock = threading.Lock()
        self._subs: list[tuple[Subscription[Any], Callable[[Any], None]]] = []
        self._changed = True
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"atelier-ros2-{name}", daemon=True)
        self._thread.start()

    def subscribe(self, msg_type: type[MsgT], topic: str, callback: Callable[[MsgT], None], qos: QoSProfile) -> None:
        """Subscribe ``callback`` to ``topic`` (give a fully qualified name: the lane's node has no namespace)."""
        sub = self._node.create_subscription(msg_type, topic, lambda _msg: None, qos)
        with self._lock:
            self._subs.append((sub, callback))
            self._changed = True
        self._wake.trigger()

    def _run(self) -> None:
        self.scheduling = realtime(self._priority)
        self._scheduled.set()
        wait_set: Any = None
        entries: list[tuple[Subscription[Any], Callable[[Any], None]]] = []
        handle = self._context.handle
        while not self._closing and self._context.ok() and handle is not None:
            with self._lock:
                if self._changed or wait_set is None:
                    entries = list(self._subs)
                    wait_set = _rclpy.WaitSet(len(entries), 1, 0, 0, 0, 0, handle)
                    self._changed = False
            try:
                wait_set.clear_entities()
                for sub, _ in entries:
                    wait_set.add_subscription(sub.handle)
                wait_set.add_guard_condition(self._wake.handle)
                wait_set.wait(200_000_000)  # ns; the GIL is released while waiting
                ready = set(wait_set.get_ready_entities("subscription"))
            except Exception:  # the context is shutting down
                if self._closing or not self._context.ok():
                    return
                raise
            for sub, callback in entries:
                if sub.handle.pointer not in ready:
                    continue
                while True:  # drain: every message is a period (callbacks keep the latest)
                    with sub.handle:
                        info = sub.handle.take_message(sub.msg_type, sub.raw)
                    if info is None:
                        break
                    try:
                        callback(info[0])
                    except Exception:
                        log.exception("fast-lane callback on %s failed", sub.topic_name)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._wake.trigger()
        self._thread.join(2.0)
        self._node.destroy_node()


class RosHost:
    """One rclpy context and executor for the nodes of a process (or of a test fixture).

    ``domain_id`` None takes ``ROS_DOMAIN_ID`` from the environment. The executor spins on a
    daemon thread; callbacks run there (an exception in one is logged, the executor goes on:
    one bad message must not silence every node of the process). :meth:`subscribe_fast` puts a
    subscription on the :class:`FastLane` instead. :meth:`close` shuts it all down (idempotent).
    """

    def __init__(self, domain_id: int | None = None, realtime_priority: int | None = None) -> None:
        # The middleware's receive threads before this host's: those of other hosts of the
        # process are not its own to schedule.
        self._other_receivers = set(_receive_threads()) if realtime_priority is not None else set()
        self.context = Context()
        self.realtime_priority = realtime_priority
        #: The native ids of the threads this host scheduled real-time.
        self.realtime_threads: list[int] = []
        #: What the fast lane's thread and the middleware's receive threads got (for the log).
        self.scheduling = "normal scheduling"
        if domain_id is None and os.environ.get("ROS_DOMAIN_ID"):
            domain_id = int(os.environ["ROS_DOMAIN_ID"])
        # No signal handlers: the process owner (a CLI, pytest) decides what a signal does.
        kwargs: dict[str, Any] = {"context": self.context, "signal_handler_options": SignalHandlerOptions.NO}
        if domain_id is not None:
            kwargs["domain_id"] = domain_id
        self.domain_id = domain_id or 0
        rclpy.init(**kwargs)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._lane: FastLane | None = None
        self._lane_lock = threading.Lock()
        self.callback_errors = 0
        self._closing = False
        self._thread = threading.Thread(target=self._spin, name="atelier-ros2", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok() and not self._closing:
            try:
                self.executor.spin_once(timeout_sec=0.2)
            except (ExternalShutdownException, KeyboardInterrupt):
                return
            except Exception:
                if self._closing or not self.context.ok():
                    return
                self.callback_errors += 1
                if self.callback_errors <= 20:
                    log.exception("a ROS 2 callback failed (the executor goes on)")

    def node(self, name: str, namespace: str = "") -> Node:
        """A node spun by this host's executor (no parameter services)."""
        node = _bare_node(name, namespace, self.context)
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def subscribe_fast(
        self, msg_type: type[MsgT], topic: str, callback: Callable[[MsgT], None], qos: QoSProfile = STREAM_QOS
    ) -> None:
        """Subscribe on the fast lane (fully qualified ``topic``; see :class:`FastLane`)."""
        with self._lane_lock:
            if self._lane is None:
                name = f"fast_lane_{os.getpid()}_{uuid.uuid4().hex[:8]}"
                self._lane = FastLane(self.context, name, self.realtime_priority)
                if self.realtime_priority is not None:
                    self._schedule_receivers(self._lane)
            lane = self._lane
        lane.subscribe(msg_type, topic, callback, qos)

    def _schedule_receivers(self, lane: FastLane) -> None:
        """Schedule this host's middleware threads that receive user data real-time, as the
        lane's thread is: they exist once a node does (the lane's). Threads that receive
        discovery traffic, those of other hosts of the process, and any the middleware starts
        later keep normal scheduling."""
        own = {t: n for t, n in _receive_threads().items() if t not in self._other_receivers}
        data = [t for t, n in own.items() if _carries_user_data(n, self.domain_id)]
        got = [realtime(self.realtime_priority, t) for t in data]
        self.realtime_threads = [t for t, g in zip(data, got, strict=True) if g.startswith("real-time")]
        lane._scheduled.wait(2.0)
        if lane.scheduling.startswith("real-time") and lane._thread.native_id is not None:
            self.realtime_threads.append(lane._thread.native_id)
        said = ", ".join(sorted(set(got))) or "none found"
        self.scheduling = (
            f"fast lane {lane.scheduling}; {len(data)} middleware receive threads of user data {said} "
            f"({len(own) - len(data)} of discovery: normal scheduling)"
        )
        log.info("ROS 2 host: %s", self.scheduling)

    def close(self) -> None:
        if self._closing or not self.context.ok():
            return
        self._closing = True
        if self._lane is not None:
            self._lane.close()
        self.executor.shutdown(timeout_sec=1.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(2.0)

    def __enter__(self) -> RosHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

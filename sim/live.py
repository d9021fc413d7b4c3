"""The twin in live mode: stepped in real time on a thread of its own.

Protocol servers (OPC-UA, Modbus) and robot driver nodes (ROS 2) run in other threads or event
loops. They never touch the :class:`~sim.twin.Twin` directly; they go through this class:

- :meth:`LiveTwin.submit` queues a function that runs on the twin thread between two ticks
  (commands: a PackML command, a joint target). It returns a future with the result or error.
- :meth:`LiveTwin.read` runs a function under the twin's lock from the caller's thread
  (snapshots: tag values, joint states). Keep it short; the twin waits meanwhile.
- :meth:`LiveTwin.add_listener` registers a function called on the twin thread after every
  ``every_ticks`` ticks (publishing joint states, pushing changed tag values). A listener
  must not block; it hands data to its own thread or loop (``call_soon_threadsafe``).

Starting moves nothing: :meth:`LiveTwin.start` first holds every arm where it is
(:meth:`~sim.twin.Twin.hold_robots`), and a restart (start after stop) cancels the jobs
queued while the twin was stopped, so a command sent to a stopped twin is never replayed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from plant.workers import normal_scheduling, realtime
from sim.twin import Twin

log = logging.getLogger(__name__)

#: A real-time twin thread that has not slept for this many ticks in a row (1 s at 4 ms) drops
#: to normal scheduling: it cannot keep up with real time on this machine.
REALTIME_MAX_BEHIND_TICKS = 250
T = TypeVar("T")


@dataclass
class _Listener:
    fn: Callable[[Twin], None]
    every_ticks: int
    name: str
    failures: int = 0


@dataclass
class LiveStats:
    """How well the twin keeps real time: ticks run, ticks late, worst lateness in s."""

    ticks: int = 0
    late_ticks: int = 0
    worst_lag_s: float = 0.0
    listener_errors: dict[str, int] = field(default_factory=dict)


class LiveTwin:
    """Steps a :class:`Twin` in real time (``speed`` x wall clock) on a daemon thread.

    With a ``realtime_priority`` (where it stands in for the robots' controllers: ``atelier twin
    serve``, the drivers' process) the thread schedules itself real-time where permitted
    (:func:`plant.workers.realtime`) when it runs at real time or slower: the joint states it
    publishes every tick clock the robots' control loops. A twin run faster than real time is
    batch work and keeps normal scheduling, and so does a twin that falls behind real time for
    :data:`REALTIME_MAX_BEHIND_TICKS` ticks in a row. :attr:`scheduling` says what the thread got.
    """

    def __init__(self, twin: Twin, speed: float = 1.0, realtime_priority: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.twin = twin
        self.speed = speed
        self.realtime_priority = realtime_priority if speed <= 1.0 else None
        self.scheduling = "not started"
        self.lock = threading.RLock()
        self.stats = LiveStats()
        #: When the current tick is due on the wall clock (epoch s), set on the twin thread.
        self.tick_wall_s = time.time()
        self._jobs: queue.SimpleQueue[tuple[Callable[[Twin], Any], Future[Any]]] = queue.SimpleQueue()
        self._listeners: list[_Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    # ------------------------------------------------------------------ life cycle

    def start(self) -> LiveTwin:
        """Start stepping: every arm held where it is first; on a restart, what was submitted
        while the twin was stopped is cancelled (its future raises ``CancelledError``)."""
        if self._thread is not None:
            raise RuntimeError("the live twin is already running")
        with self.lock:
            if self._started:
                dropped = self._drop_jobs()
                if dropped:
                    log.warning("live twin restarted: %d job(s) queued while it was stopped were cancelled", dropped)
            self._started = True
            self.twin.hold_robots()
        # Load the vision models and open the cameras now: the first inspection would otherwise
        # stall the stepping loop for a second or more (the drivers' joint states with it).
        self.twin.prepare_inspections()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="atelier-twin", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> LiveTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ access

    def submit(self, fn: Callable[[Twin], T]) -> Future[T]:
        """Run ``fn(twin)`` on the twin thread before the next tick; the future holds its result."""
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    def read(self, fn: Callable[[Twin], T]) -> T:
        """Run ``fn(twin)`` now under the twin lock, from the calling thread."""
        with self.lock:
            return fn(self.twin)

    def add_listener(self, fn: Callable[[Twin], None], every_ticks: int = 1, name: str = "") -> None:
        """Call ``fn(twin)`` on the twin thread after every ``every_ticks`` ticks."""
        with self.lock:
            self._listeners.append(_Listener(fn, max(1, every_ticks), name or getattr(fn, "__name__", "listener")))

    def remove_listener(self, fn: Callable[[Twin], None]) -> None:
        with self.lock:
            self._listeners = [item for item in self._listeners if item.fn is not fn]

    # ------------------------------------------------------------------ the loop

    def _drop_jobs(self) -> int:
        n = 0
        while True:
            try:
                _, fut = self._jobs.get_nowait()
            except queue.Empty:
                return n
            fut.cancel()
            n += 1

    def _run_jobs(self) -> None:
        while True:
            try:
                fn, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self.twin))
            except BaseException as exc:  # handed to the submitter, never lost
                fut.set_exception(exc)

    def _run(self) -> None:
        self.scheduling = realtime(self.realtime_priority)
        log.info("live twin thread: %s", self.scheduling)
        dt = self.twin.config.ctrl_dt_s
        wall0 = time.perf_counter()
        epoch0 = time.time()
        sim0 = self.twin.time_s
        behind = 0  # ticks in a row without a sleep
        while not self._stop.is_set():
            with self.lock:
                self._run_jobs()
                self.twin.step(1)
                # When this tick is due on the wall clock (epoch s): the sample time of what the
                # listeners publish, even when ticks run late and in a burst to catch up; never
                # later than now (a tick computed ahead of its time is published at once).
                self.tick_wall_s = min(epoch0 + (self.twin.time_s - sim0) / self.speed, time.time())
                tick = self.twin.ticks
                for item in self._listeners:
                    if tick % item.every_ticks == 0:
                        try:
                            item.fn(self.twin)
                        except Exception:
                            item.failures += 1
                            self.stats.listener_errors[item.name] = item.failures
                            if item.failures <= 3:
                                log.exception("twin listener %s failed", item.name)
            self.stats.ticks += 1
            due = wall0 + (self.twin.time_s - sim0) / self.speed
            now = time.perf_counter()
            if due > now:
                behind = 0
                time.sleep(due - now)
            else:
                behind += 1
                if behind == REALTIME_MAX_BEHIND_TICKS and self.scheduling.startswith("real-time"):
                    # A twin that cannot keep up never sleeps: at real-time priority it would
                    # take its core from everything else (the servers, the console).
                    normal_scheduling()
                    self.scheduling = f"normal scheduling (it fell {behind} ticks behind real time in a row)"
                    log.warning("live twin thread: %s", self.scheduling)
                lag = now - due
                if lag > dt:
                    self.stats.late_ticks += 1
                self.stats.worst_lag_s = max(self.stats.worst_lag_s, lag)
                if lag > 1.0:
                    # Far behind (a debugger, a stalled machine): resynchronise, do not sprint.
                    wall0, sim0, epoch0 = now, self.twin.time_s, time.time()
        self._run_jobs()

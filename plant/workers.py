"""Scheduling beside real-time loops: batch workers (rehearsals, the scenario suite, policy
training) yield the CPU and run on processes of this machine or on a Ray cluster
(:func:`run_batch`), and the threads that clock the robots (a runtime's control loop, the
middleware threads its joint states come through, the twin standing in for a robot controller)
get a real-time policy where permitted."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The SCHED_FIFO priority of the threads that clock the robots (the control loop, the threads
#: its joint states come through, a live twin's stepping): ros2_control's controller manager
#: takes the same by default. Above every thread of normal scheduling.
REALTIME_PRIORITY = 50

#: How often a worker looks whether the process that started it is still there (s).
PARENT_POLL_S = 1.0


def batch_worker_init() -> None:
    """The initializer of a batch worker process (a rehearsal's): it yields the CPU (``nice``
    10) to the real-time work of the same host (a live twin, robot runtimes, the console), and
    ends itself when the process that started it is gone, so that a console stopped by Ctrl-C
    or kill -9 leaves no worker behind holding its memory (a rehearsal worker holds over 1 GB)."""
    normal_scheduling()  # (started from a real-time thread, it would be real-time too)
    with contextlib.suppress(OSError):
        os.nice(10)
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:  # re-parented: the starter died
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def realtime(priority: int | None, tid: int | None = None) -> str:
    """Schedule thread ``tid`` (a native thread id; None: the calling thread) first-in first-out
    at real-time ``priority``, where the process is permitted to (``CAP_SYS_NICE``, which root
    has outside a container, or an ``rtprio`` limit in ``/etc/security/limits.conf``): the kernel
    then runs it before every thread of normal scheduling on its core. Threads and processes it
    starts do not inherit the policy (``SCHED_RESET_ON_FORK``). Says what the thread got, for
    the log: a thread that is refused keeps its normal scheduling and goes on (its timing is
    then as good as the machine's load allows; its process's heap is frozen all the same, below).
    None ``priority`` asks for nothing.

    What it cannot do: a Python thread still waits for the interpreter's lock (up to
    ``sys.getswitchinterval()``, 5 ms, behind a thread of the same process that computes) and
    for any lock a normal thread holds. The threads given it must wait for their input, never
    spin: the kernel keeps only 5% of each second for normal threads (``sched_rt_runtime_us``;
    real-time hosts often turn that off).

    Any ``priority`` also takes the objects alive now out of the garbage collector's full
    collections (:func:`gc.freeze`: microseconds, no collection, so a real-time loop already
    running in the process is not held up). With the robot stack loaded a process holds over
    200,000 of them, and a full collection, which can start in any allocation of any thread, held
    every thread of the process for 70 to 115 ms on this machine (a 334 ms control period under
    load). What is made later is still collected. The price: a cycle of objects alive at a freeze
    that becomes garbage later is never freed (a process starts its real-time threads once).
    """
    if priority is None:
        return "normal scheduling"
    if not hasattr(os, "sched_setscheduler"):
        gc.freeze()
        return "normal scheduling (no real-time scheduling on this system)"
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise ValueError(f"real-time priority {priority} is outside {low}..{high}")
    gc.freeze()
    target = threading.get_native_id() if tid is None else tid
    policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
    try:
        os.sched_setscheduler(target, policy, os.sched_param(priority))
    except OSError as exc:  # EPERM: not permitted; ESRCH: the thread has ended
        return f"normal scheduling (real-time priority {priority} refused: {exc.strerror or exc})"
    return f"real-time (SCHED_FIFO {priority})"


def policy_of(tid: int | None = None) -> int:
    """The scheduling policy of thread ``tid`` (None: the calling thread), without the
    reset-on-fork flag: ``os.SCHED_FIFO``, ``os.SCHED_OTHER``..."""
    policy = os.sched_getscheduler(threading.get_native_id() if tid is None else tid)
    return policy & ~getattr(os, "SCHED_RESET_ON_FORK", 0)


def normal_scheduling() -> None:
    """Give the calling thread normal scheduling (``SCHED_OTHER``), whatever the thread or
    process that started it had (a real-time policy given without reset-on-fork, by ``chrt`` or a
    parent process, is inherited), since batch
    work (planning, rehearsals) must never run before the loops that clock the robots. The
    initializer of such work's threads and processes. Never raises."""
    with contextlib.suppress(OSError, AttributeError):  # (no such policy on this system: nothing to undo)
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_OTHER, os.sched_param(0))


# --------------------------------------------------------------------------- batches

#: Ray puts Unix sockets under its folder, whose paths may not pass 107 bytes: its own names
#: take about 70, so a longer folder would fail to start.
RAY_DIR_MAX = 36


def ray_dir(wanted: Path) -> str:
    """``wanted`` (the project's state folder), or a short folder of this user under the
    system's temporary folder when ``wanted`` is too long a path for Ray's sockets."""
    path = wanted.resolve()
    if len(str(path).encode()) <= RAY_DIR_MAX:
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    short = Path(tempfile.gettempdir()) / f"atelier-ray-{os.getuid()}"
    log.info("Ray's files go to %s: %s is too long a path for its sockets", short, path)
    short.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(short)


def ray_map(
    fn: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    address: str,
    workers: int,
    temp_dir: Path | str | None = None,
) -> list[T]:
    """``fn(*a)`` for each ``a`` of ``args`` as Ray tasks of one CPU each, results in the order of
    ``args``. ``address``: a cluster's (``HOST:PORT``; its token comes from the environment, see
    the README), or ``"local"``: an instance started here with ``workers`` CPUs, its files under
    ``temp_dir``, stopped after. Blocks. ``fn`` must be a module-level function."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("Ray is not installed here: pip install 'ray[default]'") from exc
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if address == "local":
        kwargs["num_cpus"] = max(1, workers)
        if temp_dir is not None:
            kwargs["_temp_dir"] = ray_dir(Path(temp_dir))
    else:
        kwargs["address"] = address
    started = not ray.is_initialized()
    if started:
        ray.init(**kwargs)
    try:
        task = ray.remote(num_cpus=1)(fn)
        return list(ray.get([task.remote(*a) for a in args]))
    finally:
        if started:
            ray.shutdown()


def run_batch(
    fn: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    workers: int = 1,
    ray_address: str | None = None,
    ray_temp_dir: Path | str | None = None,
) -> list[T]:
    """``fn(*a)`` for each ``a`` of ``args``, results in the order of ``args``: on ``workers``
    batch worker processes of this machine (:func:`batch_worker_init`; one is a process all the
    same, so a run does not depend on how it was dealt out), or on Ray (:func:`ray_map`) when
    ``ray_address`` is given. Blocks; the first error is raised once the others are dropped."""
    if ray_address is not None:
        return ray_map(fn, args, ray_address, workers, ray_temp_dir)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, workers), mp_context=spawn, initializer=batch_worker_init) as pool:
        futures = [pool.submit(fn, *a) for a in args]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

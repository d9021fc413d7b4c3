"""Scheduling beside real-time loops: batch workers (rehearsals) yield the CPU, and the threads
that clock the robots (a runtime's control loop, the middleware threads its joint states come
through, the twin standing in for a robot controller) get a real-time policy where permitted."""

from __future__ import annotations

import contextlib
import os
import threading
import time

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
    then as good as the machine's load allows; nothing else changes). None ``priority`` asks for
    nothing.

    What it cannot do: a Python thread still waits for the interpreter's lock (up to
    ``sys.getswitchinterval()``, 5 ms, behind a thread of the same process that computes) and
    for any lock a normal thread holds. The threads given it must wait for their input, never
    spin: the kernel keeps only 5% of each second for normal threads (``sched_rt_runtime_us``;
    real-time hosts often turn that off).
    """
    if priority is None:
        return "normal scheduling"
    if not hasattr(os, "sched_setscheduler"):
        return "normal scheduling (no real-time scheduling on this system)"
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise ValueError(f"real-time priority {priority} is outside {low}..{high}")
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

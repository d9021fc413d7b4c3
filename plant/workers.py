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
    at real-time ``priority``, where the process is permitted to (root, ``CAP_SYS_NICE``, or an
    ``rtprio`` limit in ``/etc/security/limits.conf``); it then runs before every thread of
    normal scheduling on its core, whatever the rest of the machine does. Says what the thread
    got, for the log: a thread that is refused keeps its normal scheduling and goes on (the
    loop's timing is then as good as the machine's load allows; nothing else changes). None
    ``priority`` asks for nothing. The kernel keeps 5% of every second for normal threads
    (``sched_rt_runtime_us``), so a real-time thread that never sleeps cannot hang the machine.
    """
    if priority is None:
        return "normal scheduling"
    if not hasattr(os, "sched_setscheduler"):
        return "normal scheduling (no real-time scheduling on this system)"
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise ValueError(f"real-time priority {priority} is outside {low}..{high}")
    target = threading.get_native_id() if tid is None else tid
    try:
        os.sched_setscheduler(target, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:  # EPERM: not permitted; ESRCH: the thread has ended
        return f"normal scheduling (real-time priority {priority} refused: {exc.strerror or exc})"
    return f"real-time (SCHED_FIFO {priority})"


def normal_scheduling() -> None:
    """Give the calling thread normal scheduling (``SCHED_OTHER``), whatever the thread or
    process that started it had: threads and processes inherit a real-time policy, and batch
    work (planning, rehearsals) must never run before the loops that clock the robots. The
    initializer of such work's threads and processes. Never raises."""
    with contextlib.suppress(OSError, AttributeError):  # (no such policy on this system: nothing to undo)
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_OTHER, os.sched_param(0))

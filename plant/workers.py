"""Worker processes that do batch work (rehearsals) beside real-time loops."""

from __future__ import annotations

import contextlib
import os
import threading
import time

#: How often a worker looks whether the process that started it is still there (s).
PARENT_POLL_S = 1.0


def batch_worker_init() -> None:
    """The initializer of a batch worker process (a rehearsal's): it yields the CPU (``nice``
    10) to the real-time work of the same host (a live twin, robot runtimes, the console), and
    ends itself when the process that started it is gone, so that a console stopped by Ctrl-C
    or kill -9 leaves no worker behind holding its memory (a rehearsal worker holds over 1 GB)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:  # re-parented: the starter died
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

"""A batch worker ends itself when the process that started it is killed (kill -9), so that no
rehearsal worker is left behind holding its memory (the console review found three, 1.2 to
2.3 GB each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_STARTER = """
import contextlib, multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from plant.workers import batch_worker_init
if __name__ == "__main__":
    # Started from a real-time thread where permitted: the worker must not inherit it.
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=batch_worker_init)
    print(pool.submit(os.getpid).result(), flush=True)
    print(pool.submit(os.nice, 0).result(), flush=True)
    print(pool.submit(os.sched_getscheduler, 0).result(), flush=True)
    time.sleep(600)
"""

# A process that may not schedule real-time: as root, it gives up root first (an unprivileged
# user, no real-time priority allowed); otherwise it lowers its own limit to none.
_REFUSED = """
import os, resource, threading
from plant.workers import realtime
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
said = []
t = threading.Thread(target=lambda: said.append((realtime(50), os.sched_getscheduler(0))))
t.start()
t.join()
print(said[0][0])
print(said[0][1])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its new parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_batch_worker_yields_the_cpu_and_ends_with_its_starter() -> None:
    starter = subprocess.Popen([sys.executable, "-c", _STARTER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert starter.stdout is not None
        worker = int(starter.stdout.readline())
        nice = int(starter.stdout.readline())
        assert nice >= 10  # lower priority than the real-time loops beside it
        assert int(starter.stdout.readline()) == os.SCHED_OTHER
        assert _alive(worker)
        starter.send_signal(signal.SIGKILL)  # no clean-up, no shutdown of the pool
        starter.wait(10)
        deadline = time.monotonic() + 15
        while _alive(worker):
            assert time.monotonic() < deadline, "the worker outlived its starter"
            time.sleep(0.1)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(5)
        if starter.stdout is not None:
            starter.stdout.close()


def test_a_thread_that_may_not_run_real_time_keeps_normal_scheduling_and_says_why() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _REFUSED], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    said, policy = done.stdout.splitlines()
    assert said == "normal scheduling (real-time priority 50 refused: Operation not permitted)"
    assert int(policy) == os.SCHED_OTHER

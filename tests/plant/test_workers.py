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
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from plant.workers import batch_worker_init
if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=batch_worker_init)
    print(pool.submit(os.getpid).result(), flush=True)
    print(pool.submit(os.nice, 0).result(), flush=True)
    time.sleep(600)
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

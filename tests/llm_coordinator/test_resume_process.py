"""A coordinator process killed (SIGKILL) mid-plan, and a new one that resumes at the right step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.plan import Plan, Step
from llm_coordinator.store import Store
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[2]


def _run(plan_id: int, db: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "200"}
    with log.open("wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "llm_coordinator.cli_plan", "run", str(plan_id), "--in-process", "--db", db],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_killed_coordinator_resumes_without_repeating_a_finished_step(
    demo_plant: PlantDescription, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'plans.db'}"
    store = Store(db)
    steps = [
        Step(id="open_1", agent="cnc_1", skill="open_door", expected_duration_s=2),
        Step(id="close_1", agent="cnc_1", skill="close_door", after=["open_1"], expected_duration_s=2),
        Step(
            id="cycle_1",
            agent="cnc_1",
            skill="run_cycle",
            args={"program": 1},
            after=["close_1"],
            expected_duration_s=9,
        ),
        Step(id="open_2", agent="cnc_1", skill="open_door", after=["cycle_1"], expected_duration_s=2),
        Step(id="close_2", agent="cnc_1", skill="close_door", after=["open_2"], expected_duration_s=2),
        Step(
            id="cycle_2",
            agent="cnc_1",
            skill="run_cycle",
            args={"program": 2},
            after=["close_2"],
            expected_duration_s=9,
        ),
    ]
    plan = Plan(work_order="two cycles", mode="direct", steps=steps)
    pid = store.create(plan.work_order, "direct")
    store.add_version(pid, plan, [])
    store.add_rehearsal(pid, plan.content_hash(), True, 26.0, {}, [])
    store.set_status(pid, "rehearsed", actor="test")
    store.set_status(pid, "awaiting_approval", actor="test")
    ApprovalGate(store, demo_plant).approve(pid, "sam")

    first = _run(pid, db, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while store.progress(pid, plan.content_hash()).get("cycle_1") != "done":
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "the first run did not finish cycle_1 in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no clean-up, no last words
    first.wait(10)
    done_before = {k for k, v in store.progress(pid, plan.content_hash()).items() if v == "done"}
    assert {"open_1", "close_1", "cycle_1"} <= done_before and "cycle_2" not in done_before
    assert store.get(pid).status == "running"

    second = _run(pid, db, tmp_path / "second.log")
    assert second.wait(240) == 0, (tmp_path / "second.log").read_text()
    out = (tmp_path / "second.log").read_text()
    ran = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "done" in line]
    assert "cycle_1" not in ran and "cycle_2" in ran, out
    assert store.get(pid).status == "done"
    started = [r.payload["step"] for r in store.audit_rows(pid) if r.action == "step:running"]
    assert started.count("cycle_1") == 1 and started.count("cycle_2") == 1
    assert any(r.action == "resumed" for r in store.audit_rows(pid))
    assert store.verify_audit().ok
    store.engine.dispose()

"""Work-order jobs live in the database: a console killed without a clean shutdown (kill -9)
and started again over the same database shows every job and plan, loses no audit row, and says
which work orders the restart interrupted (failed jobs, ``interrupted`` plans that can be
drafted again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_coordinator.backends.scripted import ScriptedBackend as ScriptedModel
from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from llm_coordinator.console.services import JobView, WorkOrderRequest
from llm_coordinator.interface import ChatMessage
from llm_coordinator.status import REPLANNABLE
from plant.config import PlantDescription

from .conftest import build_backend


def _silent_model() -> ScriptedModel:
    """A model that never answers: the process 'dies' while the planner waits for it."""

    async def script(messages: Sequence[ChatMessage], schema: dict[str, Any]) -> str:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return ScriptedModel(script)


async def _wait(backend: CoordinatorBackend, job_id: str, states: set[str]) -> JobView:
    deadline = time.monotonic() + 30
    while True:
        job = await backend.job(job_id)
        assert job is not None
        if job.state in states:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.02)


async def test_jobs_and_plans_survive_a_kill(tmp_path: Path, demo_plant: PlantDescription) -> None:
    first = build_backend(demo_plant, tmp_path, model=_silent_model())
    done = await first.submit_work_order(WorkOrderRequest(recipe="machine_part"), "erin")
    done = await _wait(first, done.id, {"awaiting_approval", "failed"})
    assert done.state == "awaiting_approval" and done.plan_id is not None
    hanging = await first.submit_work_order(WorkOrderRequest(text="machine part, program 3"), "erin")
    hanging = await _wait(first, hanging.id, {"drafting"})
    deadline = time.monotonic() + 30
    while hanging.plan_id is None:  # the plan is created and drafted, the model is asked
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
        hanging = await first.job(hanging.id) or hanging
    stuck = int(hanging.plan_id)
    assert first.store.get(stuck).status == "drafted"
    audit_before = [(r.seq, r.hash) for r in first.store.audit_rows()]
    plans_before = {r.id for r in first.store.plans(1000)}

    # kill -9: no aclose, no clean shutdown; the first backend's work just stops mattering.
    second = build_backend(demo_plant, tmp_path)
    try:
        jobs = {j.id: j for j in await second.jobs()}
        assert set(jobs) == {done.id, hanging.id}
        assert jobs[done.id].state == "awaiting_approval" and jobs[done.id].plan_id == done.plan_id
        assert jobs[done.id].messages == done.messages
        lost = jobs[hanging.id]
        assert lost.state == "failed" and lost.error is not None and "interrupted" in lost.error
        assert lost.plan_id == str(stuck) and "console stopped" in lost.error

        row = second.store.get(stuck)
        assert row.status == "interrupted" and "interrupted" in row.reasons[0]
        assert "interrupted" in REPLANNABLE
        assert second.store.get(int(done.plan_id)).status == "awaiting_approval"
        assert {r.id for r in second.store.plans(1000)} == plans_before
        audit_after = [(r.seq, r.hash) for r in second.store.audit_rows()]
        assert audit_after[: len(audit_before)] == audit_before
        assert second.store.verify_audit().ok
        detail = await second.get_plan(str(stuck))
        assert detail is not None and detail.state == "interrupted" and "console stopped" in detail.decision

        # The interrupted work order can be drafted again; new job ids never reuse old ones.
        again = await second.replan(str(stuck), "erin")
        assert int(again.id) > max(int(done.id), int(hanging.id))
        again = await _wait(second, again.id, {"awaiting_approval", "failed"})
        assert again.state == "awaiting_approval", again

        # A third start changes nothing that is settled.
        third = build_backend(demo_plant, tmp_path)
        assert {j.id: j.state for j in await third.jobs()} == {j.id: j.state for j in await second.jobs()}
        third.store.engine.dispose()
    finally:
        await first.aclose()
        await second.aclose()
        first.store.engine.dispose()
        second.store.engine.dispose()


async def test_a_plan_running_when_the_console_died_is_paused_with_the_reason(
    tmp_path: Path, demo_plant: PlantDescription
) -> None:
    """The review killed a console mid-plan; after the restart the plan said ``running`` for
    minutes with nothing running it. It is paused, says why, and shows as an alarm."""
    first = build_backend(demo_plant, tmp_path)
    try:
        job = await first.submit_work_order(WorkOrderRequest(recipe="machine_part"), "erin")
        job = await _wait(first, job.id, {"awaiting_approval", "failed"})
        assert job.state == "awaiting_approval" and job.plan_id is not None
        pid = int(job.plan_id)
        plan = first.store.plan(pid)
        assert plan is not None
        first.gate.approve(pid, "sam")
        first.store.set_status(pid, "running", actor="executor")
        first.store.set_progress(pid, plan.content_hash(), plan.steps[0].id, "done")
        first.store.set_progress(pid, plan.content_hash(), plan.steps[1].id, "running")
    finally:
        await first.aclose()  # (a kill -9 would leave the same rows: the store is the record)
        first.store.engine.dispose()
    second = build_backend(demo_plant, tmp_path)
    try:
        row = second.store.get(pid)
        assert row.status == "paused"
        assert "console stopped while this plan ran" in row.reasons[0] and plan.steps[1].id in row.reasons[0]
        alarms = (await second.live()).alarms
        assert any(a.subject == f"plan {pid}" and "console stopped" in a.text for a in alarms), alarms
        assert "paused" in REPLANNABLE
        assert second.store.verify_audit().ok
    finally:
        await second.aclose()
        second.store.engine.dispose()

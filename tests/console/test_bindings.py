"""What binds a person's decision to what they saw: a supervisor's approval to the plan version
the page showed, an operator's confirmation to a plan version and a time (it expires, and the
executor checks it again right before the step starts), and an operator's refusal to a plan state
the supervisor sees, with the reason and a way to draft the work order again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from llm_coordinator.console.services import ActionRefused, WorkOrderRequest
from llm_coordinator.plan import Plan
from llm_coordinator.status import REPLANNABLE
from plant.config import PlantDescription

from .conftest import Console, build_backend


class Clock:
    """The store's clock, moved by hand (wall time plus an offset)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


async def _awaiting(backend: CoordinatorBackend) -> int:
    job = await backend.submit_work_order(WorkOrderRequest(recipe="machine_part"), "erin")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = await backend.job(job.id)
        assert seen is not None
        if seen.state in ("awaiting_approval", "failed"):
            assert seen.state == "awaiting_approval", seen
            assert seen.plan_id is not None
            return int(seen.plan_id)
        await asyncio.sleep(0.02)
    raise AssertionError("no plan awaiting approval")


async def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _edited(plan: Plan) -> Plan:
    """The same plan with one argument changed (a new version, a new hash)."""
    steps = [s.model_copy(update={"expected_duration_s": s.expected_duration_s + 1}) for s in plan.steps]
    return plan.model_copy(update={"steps": steps})


# --------------------------------------------------------------------------- (a) the approval


def test_the_page_approves_only_the_version_it_showed(console: Console) -> None:
    h = console.as_("sam")
    job = console.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    plan_id = int(str(console.wait_job(job["id"], h)["plan_id"]))
    page = console.client.get(f"/plans/{plan_id}", headers=h).text
    shown = console.backend.store.get(plan_id).content_hash
    assert shown and f'name="plan_hash" value="{shown}"' in page

    # Someone stores a new version of the plan while the supervisor reads the old one.
    store = console.backend.store
    plan = store.plan(plan_id)
    assert plan is not None
    store.add_version(plan_id, _edited(plan), [])

    r = console.client.post(f"/plans/{plan_id}/approve", data={"reason": "ok", "plan_hash": shown}, headers=h)
    assert r.status_code == 409, r.text
    assert "changed since you looked at it" in r.text
    assert store.get(plan_id).status == "awaiting_approval"

    # A form that does not say which version it showed, or names a part of it, approves nothing.
    now = store.get(plan_id).content_hash
    assert now is not None
    r = console.client.post(f"/plans/{plan_id}/approve", data={"reason": "ok"}, headers=h)
    assert r.status_code in (400, 422) and "Plan version" in r.text, r.text
    r = console.client.post(f"/plans/{plan_id}/approve", data={"reason": "ok", "plan_hash": now[:16]}, headers=h)
    assert r.status_code == 409 and "is not a plan version" in r.text, r.text
    assert store.get(plan_id).status == "awaiting_approval"

    # The API field binds the same way; the current hash goes through.
    r = console.client.post(f"/api/plans/{plan_id}/approve", json={"plan_hash": shown}, headers=h)
    assert r.status_code == 409 and "changed since you looked" in r.text
    now = store.get(plan_id).content_hash
    r = console.client.post(f"/api/plans/{plan_id}/approve", json={"plan_hash": now}, headers=h)
    assert r.status_code == 204, r.text
    assert store.get(plan_id).status in ("approved", "running", "done")


# --------------------------------------------------------------------------- (b) the confirmation


async def test_a_confirmation_binds_a_version_and_expires(tmp_path: Path, demo_plant: PlantDescription) -> None:
    backend = build_backend(demo_plant, tmp_path)
    clock = Clock()
    backend.store.clock = clock
    backend.gate.confirmation_ttl_s = 30.0
    backend.executor = None  # nothing runs here: the gate is asked directly
    try:
        pid = await _awaiting(backend)
        store, gate = backend.store, backend.gate
        await backend.approve(str(pid), "sam", "ok")
        await backend.confirm_step(str(pid), "hand_over", "olga", "")
        plan = store.plan(pid)
        assert plan is not None
        gate.authorize(pid, plan)  # approved and confirmed, just now

        clock.offset_s = 31.0
        with pytest.raises(Exception, match=r"confirmation of hazardous step hand_over by olga expired"):
            gate.authorize(pid, plan)
        assert "expired" in gate.check_step(pid, plan, "hand_over")
        assert gate.check_step(pid, plan, "feed") == ""  # not hazardous

        await backend.confirm_step(str(pid), "hand_over", "olga", "looked again")  # renewed
        gate.authorize(pid, plan)
        # Bound to the version: a changed plan has no confirmation.
        with pytest.raises(Exception, match="needs an operator's confirmation"):
            gate.authorize(pid, _edited(plan))
    finally:
        await backend.aclose()
        backend.store.engine.dispose()


async def test_the_executor_checks_the_confirmation_when_the_step_starts(
    tmp_path: Path, demo_plant: PlantDescription
) -> None:
    """Confirmed when the run starts, but 37 s of earlier steps later the confirmation (30 s)
    has expired: the hazardous step does not start, and the plan pauses saying why."""
    backend = build_backend(demo_plant, tmp_path)
    clock = Clock()
    backend.store.clock = clock
    backend.gate.confirmation_ttl_s = 30.0
    store = backend.store
    mark = store.set_progress

    def slow_steps(plan_id: int, content_hash: str, step_id: str, status: str, detail: str = "") -> None:
        if status == "done" and step_id == "unload_cnc":
            clock.offset_s += 37.0  # the earlier steps took that long
        mark(plan_id, content_hash, step_id, status, detail)

    store.set_progress = slow_steps  # type: ignore[method-assign]
    try:
        pid = await _awaiting(backend)
        await backend.confirm_step(str(pid), "hand_over", "olga", "")
        await backend.approve(str(pid), "sam", "ok")
        await _until(lambda: store.get(pid).status in ("paused", "done", "failed"))
        row = store.get(pid)
        assert row.status == "paused", row.reasons
        assert "hand_over" in row.reasons[0] and "expired" in row.reasons[0], row.reasons
        plan = store.plan(pid)
        assert plan is not None
        progress = store.progress(pid, plan.content_hash())
        assert progress["unload_cnc"] == "done" and progress.get("hand_over") == "failed"
        assert "present" not in progress  # nothing after it started

        # The operator sees the step waiting again, confirms it, and the run resumes from it.
        waiting = [c.step_id for c in await backend.pending_confirmations() if c.plan_id == str(pid)]
        assert waiting == ["hand_over"]
        detail = await backend.get_plan(str(pid))
        assert detail is not None
        assert next(s for s in detail.steps if s.id == "hand_over").confirmation == "awaiting"
        await backend.confirm_step(str(pid), "hand_over", "olga", "checked again")
        await _until(
            lambda: (
                store.get(pid).status in ("done", "failed")
                or (
                    store.get(pid).status == "paused"
                    and store.progress(pid, plan.content_hash()).get("present") == "done"
                )
            )
        )
        assert store.get(pid).status == "done", store.get(pid).reasons
        assert store.progress(pid, plan.content_hash())["hand_over"] == "done"
        assert not [c for c in await backend.pending_confirmations() if c.plan_id == str(pid)]
    finally:
        await backend.aclose()
        store.engine.dispose()


# --------------------------------------------------------------------------- (c) the refusal


def test_an_operators_refusal_is_a_state_the_supervisor_sees(console: Console) -> None:
    h = console.as_("sam")
    job = console.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    plan_id = str(console.wait_job(job["id"], h)["plan_id"])
    olga = console.as_("olga")
    r = console.client.post(
        f"/api/plans/{plan_id}/steps/hand_over/refuse", json={"reason": "a person is at the hand-over"}, headers=olga
    )
    assert r.status_code == 204, r.text
    assert "refused_by_operator" in REPLANNABLE
    sam = console.as_("sam")
    plan = console.client.get(f"/api/plans/{plan_id}", headers=sam).json()
    assert plan["state"] == "refused_by_operator"
    assert "olga refused step hand_over: a person is at the hand-over" in plan["decision"]
    page = console.client.get(f"/plans/{plan_id}", headers=sam).text
    assert "refused by operator" in page and 'id="replan"' in page
    # Nothing more to confirm or approve on it.
    assert not [c for c in console.client.get("/api/confirmations", headers=sam).json() if c["plan_id"] == plan_id]
    assert console.client.post(f"/api/plans/{plan_id}/approve", json={}, headers=sam).status_code == 409
    r = console.client.post(f"/api/plans/{plan_id}/replan", headers=sam)
    assert r.status_code == 202, r.text
    again = console.wait_job(r.json()["id"], sam)
    assert again["state"] == "awaiting_approval"


async def test_a_refused_step_cannot_be_confirmed_afterwards(tmp_path: Path, demo_plant: PlantDescription) -> None:
    backend = build_backend(demo_plant, tmp_path)
    try:
        pid = await _awaiting(backend)
        await backend.refuse_step(str(pid), "hand_over", "olga", "gripper worn")
        with pytest.raises(ActionRefused, match="refused by operator"):
            await backend.confirm_step(str(pid), "hand_over", "olga", "")
        with pytest.raises(ActionRefused):
            await backend.refuse_step(str(pid), "hand_over", "olga", "again")
    finally:
        await backend.aclose()
        backend.store.engine.dispose()


# --------------------------------------------------------------------------- what people read


def test_the_words_people_read_come_from_the_plant_and_the_records(console: Console) -> None:
    """The hazard reason is the plant file's (the recipe that marks the step, what its place is
    for); the audit view names the step of a step's record; the makespan is where the chart ends."""
    h = console.as_("sam")
    job = console.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    plan_id = str(console.wait_job(job["id"], h)["plan_id"])
    waiting = [c for c in console.client.get("/api/confirmations", headers=h).json() if c["plan_id"] == plan_id]
    reason = next(c["reason"] for c in waiting if c["step_id"] == "hand_over")
    assert "marked hazardous by its recipe or plan" not in reason
    assert reason.startswith("the plant's recipe machine_part (feed a blank, machine it in the CNC"), reason
    assert "ur5e_1 hand over to panda_1 at handover_point (where the UR5e hands parts to the Panda)" in reason

    plan = console.client.get(f"/api/plans/{plan_id}", headers=h).json()
    ends = [s["start_s"] + s["duration_s"] for s in plan["steps"]]
    assert all(s["start_s"] is not None for s in plan["steps"])
    assert plan["makespan_s"] == pytest.approx(max(ends))
    assert plan["rehearsal"]["makespan_s"] == pytest.approx(max(ends))
    page = console.client.get(f"/plans/{plan_id}", headers=h).text
    assert f"over {max(ends):.0f} s" in page  # the chart's extent

    olga = console.as_("olga")
    r = console.client.post(
        f"/api/plans/{plan_id}/steps/hand_over/refuse", json={"reason": "guard missing"}, headers=olga
    )
    assert r.status_code == 204
    audit = console.client.get(f"/api/plans/{plan_id}", headers=h).json()["audit"]
    assert any(a["action"] == "refuse_step" and a["detail"] == "step hand_over: guard missing" for a in audit)
    store = console.backend.store
    content_hash = store.get(int(plan_id)).content_hash
    assert content_hash is not None
    store.set_progress(int(plan_id), content_hash, "feed", "running")
    tail = console.client.get("/api/audit?limit=1", headers=h).json()
    assert tail[0]["action"] == "step:running" and tail[0]["detail"] == "step feed"

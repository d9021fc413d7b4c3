"""The console over the coordinator's own store, approval gate, coordinator and executor:
one plan store, one hash-chained audit log with the person's name on every console action."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llm_coordinator.backends.scripted import ScriptedBackend as ScriptedModel
from llm_coordinator.console.services import JOB_STATES
from llm_coordinator.snapshot import MachineSnapshot, PlantSnapshot
from llm_coordinator.status import PLAN_STATUSES
from llm_coordinator.store import Store
from llm_coordinator.testing import goal_script
from plant.config import PlantDescription

from .conftest import bearer, build_backend, make_users, serve


@pytest.fixture
def site(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[tuple[TestClient, Store]]:
    yield from _site(tmp_path, demo_plant)


def _site(
    tmp_path: Path, demo_plant: PlantDescription, state: Any = None, model: Any = None
) -> Iterator[tuple[TestClient, Store]]:
    backend = build_backend(demo_plant, tmp_path, model=model, state=state)
    with serve(backend, make_users(tmp_path / "atelier.db")) as client:
        yield client, backend.store


def _wait(client: TestClient, url: str, h: dict[str, str], key: str, values: set[str], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(url, headers=h).json()
        if body[key] in values:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url}: {body[key]} never reached {values}")


def test_work_order_to_done_through_the_coordinator(site: tuple[TestClient, Store]) -> None:
    client, store = site
    erin, sam, olga = bearer(client, "erin"), bearer(client, "sam"), bearer(client, "olga")
    job = client.post(
        "/api/work-orders", json={"recipe": "machine_part", "params": {"program": 7}}, headers=erin
    ).json()
    job = _wait(client, f"/api/work-orders/{job['id']}", erin, "state", {"awaiting_approval", "failed"})
    assert job["state"] == "awaiting_approval", job
    plan_id = job["plan_id"]

    plan = client.get(f"/api/plans/{plan_id}", headers=sam).json()
    assert plan["state"] == "awaiting_approval" and plan["guardrails"] and all(g["passed"] for g in plan["guardrails"])
    assert plan["rehearsal"]["ok"]
    assert {"planned_gantt.png", "rehearsal_gantt.png"} <= set(plan["rehearsal"]["evidence"])
    assert plan["recipe"] == "machine_part"
    assert plan["title"] == "run recipe machine_part with part_type=blank_al, program=7"
    assert plan["params"] == {"part_type": "blank_al", "program": 7}
    page = client.get(f"/plans/{plan_id}", headers=sam)
    assert page.status_code == 200 and "rules pass" in page.text
    assert client.get(f"/plans/{plan_id}/evidence/rehearsal_gantt.png", headers=sam).status_code == 200
    assert client.get(f"/plans/{plan_id}/evidence/..%2Fatelier.db", headers=sam).status_code == 404

    assert client.post(f"/api/plans/{plan_id}/approve", json={"reason": "x"}, headers=erin).status_code == 403
    assert client.post(f"/api/plans/{plan_id}/approve", json={"reason": "checked"}, headers=sam).status_code == 204
    for c in client.get("/api/confirmations", headers=olga).json():
        url = f"/api/plans/{c['plan_id']}/steps/{c['step_id']}/confirm"
        assert client.post(url, json={"reason": "area clear"}, headers=olga).status_code == 204
    done = _wait(client, f"/api/plans/{plan_id}", sam, "state", {"done", "failed", "paused"})
    assert done["state"] == "done", done["decision"]
    assert all(s["status"] == "done" for s in done["steps"])

    assert client.post("/api/estop/trip", json={"robot": "ur5e_1", "reason": "drill"}, headers=erin).status_code == 204
    assert client.post("/api/estop/reset", json={"robot": "ur5e_1", "area_clear": True}, headers=sam).status_code == 403
    ok = client.post("/api/estop/reset", json={"robot": "ur5e_1", "area_clear": True}, headers=olga)
    assert ok.status_code == 204

    rows = store.audit_rows()
    seen = {(r.actor, r.action) for r in rows}
    for expected in [("sam", "login"), ("erin", "estop_trip"), ("olga", "estop_reset"), ("erin", "refused")]:
        assert expected in seen, expected
    assert any(r.actor == "sam" and "approv" in r.action for r in rows)
    assert store.verify_audit().ok
    assert client.post(f"/api/plans/{plan_id}/approve", json={}, headers=sam).status_code == 409


def test_work_orders_are_planned_against_the_plants_state(tmp_path: Path, demo_plant: PlantDescription) -> None:
    """The backend reads the plant's state before planning: a recipe that uses a machine the
    state shows aborted gets a reset in front of its first use, and the interlock guardrails
    judge the plan against that state."""
    reads: list[float] = []

    async def state() -> PlantSnapshot:
        reads.append(time.monotonic())
        return PlantSnapshot(machines={"cnc_1": MachineSnapshot(state="ABORTED", fault_code=7, fault_text="spindle")})

    for client, store in _site(tmp_path, demo_plant, state):
        erin = bearer(client, "erin")
        job = client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=erin).json()
        job = _wait(client, f"/api/work-orders/{job['id']}", erin, "state", {"awaiting_approval", "failed"})
        assert job["state"] == "awaiting_approval", job
        assert reads
        plan = store.plan(int(job["plan_id"]))
        assert plan is not None
        cnc_steps = [s for s in plan.steps if s.agent == "cnc_1"]
        assert cnc_steps[0].skill == "reset" and cnc_steps[0].id in cnc_steps[1].after
        assert not any(s.skill == "reset" for s in plan.steps if s.agent != "cnc_1")  # the others are fine


def test_a_rejected_plan_is_drafted_again_with_the_reason(tmp_path: Path, demo_plant: PlantDescription) -> None:
    model = ScriptedModel(goal_script({"goal": '{"goal": "machine_part"}'}))  # type: ignore[arg-type]
    for client, store in _site(tmp_path, demo_plant, model=model):
        erin, sam = bearer(client, "erin"), bearer(client, "sam")
        job = client.post("/api/work-orders", json={"text": "Machine one blank"}, headers=erin).json()
        job = _wait(client, f"/api/work-orders/{job['id']}", erin, "state", {"awaiting_approval", "failed"})
        first = job["plan_id"]
        assert client.post(f"/api/plans/{first}/replan", headers=erin).status_code == 409  # not turned down
        r = client.post(f"/api/plans/{first}/reject", json={"reason": "use program 3 for this part"}, headers=sam)
        assert r.status_code == 204
        page = client.get(f"/plans/{first}", headers=erin)
        assert 'id="replan"' in page.text
        job = client.post(f"/api/plans/{first}/replan", headers=erin).json()
        assert "use program 3" in job["messages"][0]
        job = _wait(client, f"/api/work-orders/{job['id']}", erin, "state", {"awaiting_approval", "failed"})
        assert job["state"] == "awaiting_approval" and job["plan_id"] != first, job
        assert store.get(int(job["plan_id"])).parent_id == int(first)
        prompt = "\n".join(m.content for m in model.calls[-1].messages)
        assert "use program 3 for this part" in prompt
        assert any(r.actor == "erin" and r.action == "created" for r in store.audit_rows(int(job["plan_id"])))


async def test_a_recipe_order_takes_the_path_of_submit(tmp_path: Path, demo_plant: PlantDescription) -> None:
    """Coordinator.submit_recipe: the same stages, audit records, guardrail findings and
    rehearsal as a work order in words; a recipe the plant cannot run is a refused plan."""
    backend = build_backend(demo_plant, tmp_path)
    store, coordinator = backend.store, backend.coordinator
    stages: list[str] = []
    sub = await coordinator.submit_recipe(
        "inspect_part", {"part_type": "blank_al"}, actor="erin", on_stage=lambda s, _: stages.append(s)
    )
    assert sub.status == "awaiting_approval", sub.reasons
    assert stages == ["drafting", "checking", "rehearsing"]
    rows = store.audit_rows(sub.plan_id)
    assert (rows[0].actor, rows[0].action) == ("erin", "created")
    assert rows[0].payload["work_order"] == "run recipe inspect_part with part_type=blank_al"
    planned = next(r for r in rows if r.action == "planned")
    assert planned.payload["recipe"] == "inspect_part" and planned.payload["status"] == "planned"
    version, rehearsal = store.version(sub.plan_id), store.rehearsal(sub.plan_id)
    assert version is not None and version.verdict and rehearsal is not None and rehearsal.ok

    for params, count, why in [({"speed": 3}, 1, "no parameter speed"), ({}, 21, "1 to 20")]:
        refused = await coordinator.submit_recipe("inspect_part", params, count=count)
        assert refused.status == "refused" and why in refused.reasons[0], refused.reasons
        assert store.get(refused.plan_id).status == "refused"
    assert store.verify_audit().ok
    store.engine.dispose()


def test_every_plan_status_and_work_order_state_has_a_badge_colour() -> None:
    css = (Path(__file__).parents[2] / "llm_coordinator" / "console" / "static" / "console.css").read_text()
    for state in (*PLAN_STATUSES, *JOB_STATES):
        assert re.search(rf"\.st-{state.replace('_', '-')}[ ,{{]", css), state


def test_the_console_readies_the_model_and_the_twin_as_it_starts(tmp_path: Path, demo_plant: PlantDescription) -> None:
    """The first work order does not wait for the model's load or the twin's first session."""
    import threading

    readied = threading.Event()

    class SlowToLoad(ScriptedModel):
        async def _ready(self) -> None:
            readied.set()

    backend = build_backend(demo_plant, tmp_path, model=SlowToLoad(lambda messages, schema: '{"goal": "cannot"}'))
    assert backend.coordinator.rehearser is not None
    opened = []
    factory = backend.coordinator.rehearser.factory

    def counting(plant: PlantDescription) -> Any:
        opened.append(plant.name)
        return factory(plant)

    backend.coordinator.rehearser.factory = counting
    with serve(backend, make_users(tmp_path / "atelier.db")):
        assert readied.wait(30), "the model was not readied when the console started"
        deadline = time.monotonic() + 30
        while not opened and time.monotonic() < deadline:
            time.sleep(0.02)
        assert opened == [demo_plant.name], "no twin session was opened before the first work order"

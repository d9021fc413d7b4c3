"""The live plan and operator pages: ``/api/live/stream`` sends the plan's step progress, the
plans running now and the alarms (a machine in alarm, an e-stop, a paused plan) as server-sent
events, read here by an HTTP client from a console served by uvicorn; the pages carry the script
(no inline script) and the places it fills."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.console import app as app_module
from llm_coordinator.console.app import create_app
from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from llm_coordinator.console.services import MachineView, PlantView, RobotView, WorkOrderRequest
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.planner import Planner
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from llm_coordinator.testing import fake_agents, fake_twin_factory
from llm_coordinator.wiring import build_executor
from plant.config import PlantDescription

from ._live import uvicorn_thread
from .conftest import (
    FAKE_SPEED,
    PASSWORD,
    Console,
    MemoryEstops,
    await_plan,
    bearer,
    build_backend,
    make_users,
    order_recipe,
    recipe_model,
)

#: The run goes this many times faster than the plant: slow enough to see steps running.
RUN_SPEED = 40.0


def _backend(plant: PlantDescription, tmp: Path) -> CoordinatorBackend:
    """As conftest's ``build_backend``, with agents slow enough that a step is seen running."""
    store = Store(f"sqlite:///{tmp / 'atelier.db'}")
    gate = ApprovalGate(store, plant)
    rehearser = Rehearser(plant, fake_twin_factory(FAKE_SPEED))
    coordinator = Coordinator(
        plant, store, Planner(plant, recipe_model(plant)), gate, rehearser, evidence_dir=tmp / "evidence"
    )
    machines, robots = fake_agents(plant, RUN_SPEED)
    executor = build_executor(coordinator, machines, robots, CoordinatorConfig())
    return CoordinatorBackend(plant, store, gate, coordinator, MemoryEstops(), executor=executor)


@contextmanager
def _served(backend: CoordinatorBackend, tmp: Path) -> Iterator[str]:
    users = make_users(tmp / "atelier.db")
    try:
        with uvicorn_thread(create_app(backend, users), lifespan="auto", timeout_graceful_shutdown=2) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()


class Reader:
    """Reads ``live`` events of one stream in a thread."""

    def __init__(self, base: str, path: str, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base, path, headers), daemon=True)
        self._thread.start()

    def _read(self, base: str, path: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base, timeout=30) as client, client.stream("GET", path, headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            event = ""
            try:
                for line in r.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "live":
                        self.events.append(json.loads(line[6:]))
            except httpx.HTTPError:
                return  # the server went away at the end of the test

    def until(self, what: str, predicate: Any, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = next((e for e in list(self.events) if predicate(e)), None)
            if hit is not None:
                return hit
            time.sleep(0.02)
        raise AssertionError(f"no event with {what}; last: {self.events[-1:] or 'none'}")

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)


def test_the_stream_follows_a_plan_and_raises_alarms(
    tmp_path: Path, demo_plant: PlantDescription, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "LIVE_POLL_S", 0.02)
    backend = _backend(demo_plant, tmp_path)
    with _served(backend, tmp_path) as base, httpx.Client(base_url=base, timeout=30) as client:
        erin, sam, olga = bearer(client, "erin"), bearer(client, "sam"), bearer(client, "olga")
        plan_id = str(await_plan(client, erin, order_recipe(client, erin), timeout_s=30))
        assert httpx.get(f"{base}/api/live/stream", timeout=10).status_code == 401  # not logged in

        plan_stream = Reader(base, f"/api/live/stream?plan={plan_id}", erin)
        plant_stream = Reader(base, "/api/live/stream", olga)
        try:
            first = plan_stream.until("the plan", lambda e: e["plan"] is not None)
            assert first["plan"]["state"] == "awaiting_approval" and first["alarms"] == []
            assert {s["status"] for s in first["plan"]["steps"]} == {"pending"}
            hand_over = next(s for s in first["plan"]["steps"] if s["id"] == "hand_over")
            assert hand_over["confirmation"] == "awaiting"

            assert client.post(f"/api/plans/{plan_id}/approve", json={}, headers=sam).status_code == 204
            url = f"/api/plans/{plan_id}/steps/hand_over/confirm"
            assert client.post(url, json={}, headers=olga).status_code == 204

            running = plan_stream.until("a step running", lambda e: e["plan"]["current"])
            assert running["plan"]["state"] == "running"
            assert all(s["status"] == "running" for s in running["plan"]["current"])
            now = plant_stream.until("a plan running", lambda e: e["plans"] and e["plans"][0]["current"])
            assert now["plans"][0]["id"] == plan_id and now["plan"] is None
            done = plan_stream.until("the plan done", lambda e: e["plan"]["state"] in ("done", "paused"), 60)
            assert done["plan"]["state"] == "done", done["plan"]["reasons"]
            assert done["plan"]["done"] == done["plan"]["total"] == len(first["plan"]["steps"])
            plant_stream.until("no plan running", lambda e: not e["plans"])

            # A machine in alarm and a latched e-stop reach both streams as alarms.
            backend.feed.publish(
                PlantView(
                    time_s=1.0,
                    wall_s=time.time(),
                    machines=[MachineView(name="cnc_1", kind="cnc", state="IDLE", alarms=["spindle_rpm=99999"])],
                    robots=[
                        RobotView(
                            name="ur5e_1",
                            model="ur5e",
                            joints_rad=[0.0] * 6,
                            tool_xyz_m=(0.0, 0.0, 0.0),
                            estop=True,
                            estop_reason="drill",
                        )
                    ],
                )
            )
            for stream in (plan_stream, plant_stream):
                alarm = stream.until("two alarms", lambda e: len(e["alarms"]) == 2)
                texts = {a["kind"]: a["text"] for a in alarm["alarms"]}
                assert texts == {"machine": "cnc_1: spindle_rpm=99999", "estop": "e-stop of ur5e_1 latched: drill"}
        finally:
            plan_stream.close()
            plant_stream.close()


async def test_a_paused_plan_is_an_alarm(tmp_path: Path, demo_plant: PlantDescription) -> None:
    backend = build_backend(demo_plant, tmp_path)
    backend.executor = None
    try:
        job = await backend.submit_work_order(WorkOrderRequest(recipe="machine_part"), "erin")
        deadline = time.monotonic() + 30
        seen = await backend.job(job.id)
        while seen is None or seen.state != "awaiting_approval":
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.02)
            seen = await backend.job(job.id)
        assert seen is not None and seen.plan_id is not None
        pid = int(seen.plan_id)
        store = backend.store
        await backend.approve(str(pid), "sam", "ok")
        store.set_status(pid, "running", actor="executor")
        store.set_status(pid, "paused", actor="executor", reasons=["step machine failed: door stuck"])
        live = await backend.live(str(pid))
        assert [p.id for p in live.plans] == [str(pid)] and live.plans[0].state == "paused"
        assert [a.text for a in live.alarms] == [f"plan {pid} is paused: step machine failed: door stuck"]
        assert live.plan is not None and live.plan.state == "paused" and len(live.plan.steps) == live.plan.total
        assert (await backend.live("nope")).plan is None
    finally:
        await backend.aclose()
        backend.store.engine.dispose()


def test_the_pages_carry_the_live_script_and_its_places(console: Console) -> None:
    h = console.as_("sam")
    job = console.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    plan_id = str(console.wait_job(job["id"], h)["plan_id"])
    page = console.client.get(f"/plans/{plan_id}", headers=h).text
    assert f'id="live-banner" class="alarm-banner" hidden data-live-plan="{plan_id}"' in page
    assert '<script src="/static/live.js" defer></script>' in page
    assert 'data-step="hand_over"' in page and 'id="plan-progress"' in page
    for path in ("/plant", "/operator"):
        other = console.client.get(path, headers=h).text
        assert 'id="live-banner"' in other and 'id="current-steps"' in other and "/static/live.js" in other
    script = console.client.get("/static/live.js")
    assert script.status_code == 200 and "/api/live/stream" in script.text
    assert "innerHTML" not in script.text  # text only: nothing from the server is parsed as HTML
    live = console.client.get(f"/api/live?plan={plan_id}", headers=h).json()
    assert live["plan"]["state"] == "awaiting_approval" and live["plans"] == []


@pytest.mark.slow
def test_the_plan_page_follows_the_run_in_a_browser(tmp_path: Path, demo_plant: PlantDescription) -> None:
    """live.js under the console's own Content-Security-Policy (no bypass): the plan page's step
    badges and state follow the run, and an alarm appears in the banner."""
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium"  # Debian's, as test_e2e.py and test_security_browser.py use it
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is needed for the console's browser tests: apt-get install chromium")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    backend = _backend(demo_plant, tmp_path)
    with _served(backend, tmp_path) as base, httpx.Client(base_url=base, timeout=30) as client:
        erin, sam, olga = bearer(client, "erin"), bearer(client, "sam"), bearer(client, "olga")
        plan_id = str(await_plan(client, erin, order_recipe(client, erin), timeout_s=30))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=args)
            try:
                page = browser.new_context(base_url=base).new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto("/login")
                page.fill("#name", "erin")
                page.fill("#password", PASSWORD)
                page.click("#login")
                page.wait_for_url("**/plant")
                page.wait_for_selector("#current-steps li:text('No plan is running.')")
                page.goto(f"/plans/{plan_id}")
                assert page.inner_text("#plan-progress").startswith("0 of ")

                assert client.post(f"/api/plans/{plan_id}/approve", json={}, headers=sam).status_code == 204
                url = f"/api/plans/{plan_id}/steps/hand_over/confirm"
                assert client.post(url, json={}, headers=olga).status_code == 204
                page.wait_for_selector("#plan-state:text('running')", timeout=30_000)
                page.wait_for_selector("#plan-state:text('done')", timeout=60_000)
                page.wait_for_selector("tr[data-step='sort'] [data-f=status] .badge.st-done", timeout=10_000)
                assert "running now" not in page.inner_text("#plan-progress")
                assert page.is_hidden("#live-banner")

                backend.feed.publish(
                    PlantView(
                        time_s=2.0,
                        wall_s=time.time(),
                        machines=[MachineView(name="cnc_1", kind="cnc", state="IDLE", alarms=["spindle_rpm=99999"])],
                        robots=[],
                    )
                )
                page.wait_for_selector("#live-banner li:text('cnc_1: spindle_rpm=99999')", timeout=10_000)
                assert not [m for m in problems if "Content Security Policy" in m or "live.js" in m], problems
            finally:
                browser.close()

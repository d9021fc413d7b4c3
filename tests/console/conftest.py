"""Fixtures of the console tests: the product's own coordinator, store, guardrails, approval
gate and executor behind the console, with fakes only at the edges (a scripted model, fake
agents, a fake twin for rehearsal), a user database and a test client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.backends.scripted import ScriptedBackend as ScriptedModel
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.console.app import create_app
from llm_coordinator.console.auth import Role, UserStore, make_engine
from llm_coordinator.console.coordinator_backend import CoordinatorBackend, audit_view
from llm_coordinator.console.services import AuditView
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.interface import ChatMessage, LLMBackend
from llm_coordinator.planner import Planner
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from llm_coordinator.testing import fake_agents, fake_twin_factory
from llm_coordinator.wiring import build_executor
from plant.config import PlantDescription

PASSWORD = "correct horse battery"
#: One person per role, named after it.
PEOPLE = {"erin": Role.ENGINEER, "sam": Role.SUPERVISOR, "olga": Role.OPERATOR}
BY_ROLE = {role: name for name, role in PEOPLE.items()}

# Cheap hashes in tests; production uses the library's defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

#: The fake agents (in rehearsal and in the run) go this many times faster than the plant.
FAKE_SPEED = 500.0


class MemoryEstops:
    """E-stop latches in memory; the site uses the robots' file-backed latches."""

    def __init__(self) -> None:
        self.latched: dict[str, str] = {}

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason)."""
        return (robot in self.latched, self.latched.get(robot, ""))

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Latch (the first reason stays)."""
        self.latched.setdefault(robot, reason)

    def reset(self, robot: str, operator: str) -> None:
        """Clear."""
        self.latched.pop(robot, None)


def recipe_model(plant: PlantDescription) -> ScriptedModel:
    """A model that answers the goal question with the recipe the order names ("machine part"
    for ``machine_part``), and ``cannot`` otherwise (the planner then refuses the order)."""

    def script(messages: Sequence[ChatMessage], schema: dict[str, Any]) -> str:
        order = " ".join(m.content for m in messages if m.role == "user").lower().replace("_", " ")
        named = [r for r in plant.recipes if r.replace("_", " ") in order]
        return json.dumps({"goal": named[0] if named else "cannot"})

    return ScriptedModel(script)


def build_backend(
    plant: PlantDescription, tmp: Path, *, model: LLMBackend | None = None, state: Any = None
) -> CoordinatorBackend:
    """The console's backend over the product's coordinator, as :func:`~llm_coordinator.console.
    wiring.build_site` builds it, on a SQLite file in ``tmp``, with a scripted model (default
    :func:`recipe_model`), fake agents and a fake twin for the rehearsal."""
    store = Store(f"sqlite:///{tmp / 'atelier.db'}")
    gate = ApprovalGate(store, plant)
    planner = Planner(plant, model or recipe_model(plant))
    rehearser = Rehearser(plant, fake_twin_factory(FAKE_SPEED))
    coordinator = Coordinator(plant, store, planner, gate, rehearser, evidence_dir=tmp / "evidence")
    machines, robots = fake_agents(plant, FAKE_SPEED)
    executor = build_executor(coordinator, machines, robots, CoordinatorConfig())
    return CoordinatorBackend(plant, store, gate, coordinator, MemoryEstops(), executor=executor, state=state)


def audit_records(backend: CoordinatorBackend) -> list[AuditView]:
    """The whole audit log, oldest first, as the console shows it."""
    return [audit_view(r) for r in backend.store.audit_rows()]


@dataclass
class Console:
    app: FastAPI
    backend: CoordinatorBackend
    users: UserStore
    client: TestClient

    @property
    def records(self) -> list[AuditView]:
        """The audit log, oldest first."""
        return audit_records(self.backend)

    def login(self, name: str) -> str:
        """Log ``name`` in on the API; returns the bearer token (the client keeps the cookie too,
        and sends the session's CSRF token as a page's script would)."""
        r = self.client.post("/api/session", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        self.client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return token

    def as_(self, name: str | None) -> dict[str, str]:
        """Headers of a request as ``name`` (no login for None)."""
        self.client.cookies.clear()
        return {} if name is None else {"Authorization": f"Bearer {self.login(name)}"}

    def wait_job(self, job_id: str, headers: dict[str, str], timeout_s: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job: dict[str, object] = self.client.get(f"/api/work-orders/{job_id}", headers=headers).json()
            if job["state"] in ("awaiting_approval", "failed"):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not reach approval: {job}")


def bearer(client: httpx.Client, name: str) -> dict[str, str]:
    """Log ``name`` in over the API (with :data:`PASSWORD`); the header of their requests."""
    r = client.post("/api/session", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def order_recipe(client: httpx.Client, headers: dict[str, str], recipe: str = "machine_part") -> str:
    """Submit ``recipe`` as a work order; the work order's id."""
    return str(client.post("/api/work-orders", json={"recipe": recipe}, headers=headers).json()["id"])


def await_plan(client: httpx.Client, headers: dict[str, str], job_id: str, timeout_s: float = 60.0) -> int:
    """Wait until work order ``job_id`` has a plan awaiting approval; the plan's id."""
    deadline = time.monotonic() + timeout_s
    while (job := client.get(f"/api/work-orders/{job_id}", headers=headers).json())["state"] not in (
        "awaiting_approval",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "awaiting_approval", job
    return int(job["plan_id"])


def make_users(db: Path, hasher: PasswordHasher = FAST_HASHER, **kw: Any) -> UserStore:
    users = UserStore(make_engine(f"sqlite:///{db}"), hasher=hasher, **kw)
    for name, role in PEOPLE.items():
        users.add_user(name, role, PASSWORD)
    return users


@contextmanager
def serve(backend: CoordinatorBackend, users: UserStore, **app_kw: Any) -> Iterator[TestClient]:
    """A test client of the console over ``backend``; background work (drafting, runs) is
    cancelled and the database closed at the end."""
    app = create_app(backend, users, **app_kw)
    try:
        with TestClient(app, base_url="http://console.test") as client:
            try:
                yield client
            finally:
                assert client.portal is not None
                client.portal.call(backend.aclose)
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()


@pytest.fixture
def console(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[Console]:
    backend = build_backend(demo_plant, tmp_path)
    users = make_users(tmp_path / "atelier.db")
    with serve(backend, users) as client:
        yield Console(client.app, backend, users, client)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def _ensure_chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the console's browser tests: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    exe = _ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


#: Who did what in a whole plan of the browser tests: ordered, approved, confirmed, e-stop.
WHOLE_PLAN_AUDIT = [
    ("erin", "created"),
    ("sam", "approved"),
    ("olga", "operator_confirmed"),
    ("olga", "estop_trip"),
    ("olga", "estop_reset"),
]


def assert_whole_plan_audited(store: Store) -> None:
    """Each person's part of a whole plan is in the audit log, and the chain verifies."""
    audit = {(a.actor, a.action) for a in store.audit_rows()}
    for who, what in WHOLE_PLAN_AUDIT:
        assert (who, what) in audit, (who, what, sorted(audit))
    assert store.verify_audit().ok

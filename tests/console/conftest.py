"""Fixtures of the console tests: a user database in a temp dir, the scripted backend, a client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llm_coordinator.console.app import create_app
from llm_coordinator.console.auth import Role, UserStore, make_engine
from llm_coordinator.console.testing import ScriptedBackend
from plant.config import PlantDescription

PASSWORD = "correct horse battery"
#: One person per role, named after it.
PEOPLE = {"erin": Role.ENGINEER, "sam": Role.SUPERVISOR, "olga": Role.OPERATOR}
BY_ROLE = {role: name for name, role in PEOPLE.items()}

# Cheap hashes in tests; production uses the library's defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class Console:
    app: FastAPI
    backend: ScriptedBackend
    users: UserStore
    client: TestClient

    def login(self, name: str) -> str:
        """Log ``name`` in on the API; returns the bearer token (the client keeps the cookie too)."""
        r = self.client.post("/api/session", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    def as_(self, name: str | None) -> dict[str, str]:
        """Headers of a request as ``name`` (no login for None)."""
        self.client.cookies.clear()
        return {} if name is None else {"Authorization": f"Bearer {self.login(name)}"}

    def wait_job(self, job_id: str, headers: dict[str, str], timeout_s: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job: dict[str, object] = self.client.get(f"/api/work-orders/{job_id}", headers=headers).json()
            if job["state"] in ("awaiting_approval", "failed"):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not reach approval: {job}")


def make_users(db: Path) -> UserStore:
    users = UserStore(make_engine(f"sqlite:///{db}"), hasher=FAST_HASHER)
    for name, role in PEOPLE.items():
        users.add_user(name, role, PASSWORD)
    return users


@pytest.fixture
def console(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[Console]:
    backend = ScriptedBackend(demo_plant, stage_delay_s=0.01)
    users = make_users(tmp_path / "console.db")
    app = create_app(backend, users)
    with TestClient(app, base_url="http://console.test") as client:
        yield Console(app, backend, users, client)

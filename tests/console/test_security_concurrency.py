"""Fifty people at once through the console served by uvicorn: logins (good and bad, form and
API), approvals and rejections racing on the same plans, operators confirming hazardous steps
(the plans then run and write their step events), e-stop trips and resets, work orders. No
request may end in a 500 (the audit append used to fail with ``UNIQUE constraint failed:
audit.seq``), and the audit chain must verify afterwards."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llm_coordinator.console.app import create_app
from llm_coordinator.console.auth import LoginLimit, Role
from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from llm_coordinator.status import TERMINAL
from plant.config import PlantDescription

from ._live import uvicorn_thread
from .conftest import PASSWORD, await_plan, bearer, build_backend, make_users, order_recipe

WRITERS = 50
PLANS = 5


class Served:
    def __init__(self, url: str, backend: CoordinatorBackend) -> None:
        self.url, self.backend = url, backend


@pytest.fixture
def served(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[Served]:
    backend = build_backend(demo_plant, tmp_path)
    users = make_users(tmp_path / "atelier.db")
    for i in range(12):  # more people than the three of the other tests
        users.add_user(f"sup{i}", Role.SUPERVISOR, PASSWORD)
        users.add_user(f"op{i}", Role.OPERATOR, PASSWORD)
        users.add_user(f"eng{i}", Role.ENGINEER, PASSWORD)
    # Everybody comes from 127.0.0.1 here: a limit that a dozen wrong passwords cannot reach.
    limit = LoginLimit(max_failures=50, max_address_failures=1000, max_address_names=1000)
    try:
        with uvicorn_thread(create_app(backend, users, login_limit=limit), join_s=15) as port:
            yield Served(f"http://127.0.0.1:{port}", backend)
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()


def _plans_awaiting(url: str, n: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=30) as c:
        h = bearer(c, "sam")
        jobs = [order_recipe(c, h) for _ in range(n)]  # all drafted at once
        return [await_plan(c, h, job, timeout_s=120) for job in jobs]


def test_fifty_concurrent_writers_get_no_500_and_the_audit_chain_holds(served: Served) -> None:
    plans = _plans_awaiting(served.url, PLANS)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def note(what: str, r: httpx.Response) -> None:
        with lock:
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(f"{what}: {r.status_code} {r.text[:200]}")

    def supervisor(i: int, c: httpx.Client, rnd: random.Random) -> None:
        h = bearer(c, f"sup{i % 12}")
        for plan in rnd.sample(plans, len(plans)):
            if rnd.random() < 0.8:
                note("approve", c.post(f"/api/plans/{plan}/approve", json={"reason": f"ok {i}"}, headers=h))
            else:
                note("reject", c.post(f"/api/plans/{plan}/reject", json={"reason": f"no {i}"}, headers=h))

    def operator(i: int, c: httpx.Client, rnd: random.Random) -> None:
        # the form, as a browser: cookie and the page's token
        r = c.post("/login", data={"name": f"op{i % 12}", "password": PASSWORD}, follow_redirects=False)
        note("form login", r)
        token = c.get("/api/me").json()["csrf_token"]
        # Each plan's hazardous step has one operator here, confirming until the plan is approved
        # (two confirming the same step at once: test_operators_confirming_the_same_step_at_once).
        mine = plans[i // 3] if i // 3 < len(plans) else None
        for _ in range(40 if mine is not None else 0):
            r = c.post(
                "/operator/confirm",
                data={"plan_id": str(mine), "step_id": "hand_over", "csrf_token": token},
                follow_redirects=False,
            )
            note("confirm", r)
            if r.status_code == 303:
                break
            time.sleep(0.05)
        note("operator page", c.get("/operator"))
        if rnd.random() < 0.3:
            note("trip", c.post("/estop/trip", data={"robot": "panda_1", "csrf_token": token}, follow_redirects=False))
            note(
                "reset",
                c.post(
                    "/estop/reset",
                    data={"robot": "panda_1", "area_clear": "yes", "csrf_token": token},
                    follow_redirects=False,
                ),
            )

    def engineer(i: int, c: httpx.Client, rnd: random.Random) -> None:
        for _ in range(3):  # a few wrong passwords first
            note("bad login", c.post("/api/session", json={"name": f"eng{i % 12}", "password": "not it"}))
        h = bearer(c, f"eng{i % 12}")
        note("work order", c.post("/api/work-orders", json={"recipe": "inspect_part"}, headers=h))
        note("audit", c.get("/api/audit", headers=h))
        note("trip", c.post("/api/estop/trip", json={"robot": "UR5E_1", "reason": "x" * 2000, "extra": 1}, headers=h))

    roles: list[Callable[[int, httpx.Client, random.Random], None]] = [supervisor, operator, engineer]

    def writer(i: int) -> None:
        rnd = random.Random(i)
        with httpx.Client(base_url=served.url, timeout=60) as c:
            start.wait()
            try:
                roles[i % 3](i, c, rnd)
            except Exception as exc:  # a dropped connection or a failed assert is a failure too
                with lock:
                    failures.append(f"writer {i}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert statuses[500] == 0 and set(statuses) <= {200, 202, 204, 303, 401, 404, 409, 422}, statuses

    store = served.backend.store
    # every plan was decided, and approved at most once, whoever won the race (an approved plan
    # may still be rejected before it runs)
    decided = [(a.plan_id, a.action) for a in store.audit_rows() if a.action in ("approved", "rejected")]
    assert {p for p, _ in decided} >= set(plans), decided
    assert all([d for d in decided if d[0] == p].count((p, "approved")) <= 1 for p in plans), decided
    # the approved plans run once confirmed (step events written beside the audit appends); let them finish
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(store.get(p).status == "running" for p in plans):
        time.sleep(0.2)
    assert all(store.get(p).status in (*TERMINAL, "paused", "approved") for p in plans), [
        store.get(p).status for p in plans
    ]
    rows = store.audit_rows()
    assert len([a for a in rows if a.action == "login"]) >= WRITERS + 1
    assert {a.plan_id for a in rows if a.action == "operator_confirmed"}, "no step was confirmed"
    assert any(a.action.startswith("step:") for a in rows), "no plan ran a step"
    report = store.verify_audit()
    assert report.ok, report


def test_operators_confirming_the_same_step_at_once_get_no_500(served: Served) -> None:
    plans = _plans_awaiting(served.url, 2)
    with httpx.Client(base_url=served.url, timeout=30) as c:
        h = bearer(c, "sam")
        for plan in plans:
            assert c.post(f"/api/plans/{plan}/approve", json={}, headers=h).status_code == 204
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    for plan in plans:
        start = threading.Barrier(20)

        def confirm(i: int, plan: int = plan, start: threading.Barrier = start) -> None:
            with httpx.Client(base_url=served.url, timeout=30) as c:
                h = bearer(c, f"op{i % 12}")
                start.wait()
                r = c.post(f"/api/plans/{plan}/steps/hand_over/confirm", json={"reason": "clear"}, headers=h)
                with lock:
                    codes[r.status_code] += 1

        threads = [threading.Thread(target=confirm, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert codes[500] == 0, codes
    assert served.backend.store.verify_audit().ok

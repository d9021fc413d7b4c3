"""The plan store, the audit chain and the approval gate, on SQLite and on PostgreSQL (a
throwaway server, ``tests/_postgres.py``): one code path, the same results."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from llm_coordinator.approval import ApprovalGate, NotApproved
from llm_coordinator.plan import Plan, Step
from llm_coordinator.store import Store, StoreError
from plant.config import PlantDescription


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def simple_plan(hazardous: bool = False) -> Plan:
    steps = [Step(id="home", agent="ur5e_1", skill="home")]
    if hazardous:
        steps.append(
            Step(
                id="jog",
                agent="ur5e_1",
                skill="move_joints",
                args={"joints_rad": [0.0] * 6},
                after=["home"],
                hazardous=True,
            )
        )
    return Plan(work_order="home the ur5e", mode="intent", steps=steps)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(db_url, trust_dir=tmp_path / "trust")
    yield s
    s.engine.dispose()


def awaiting(store: Store, plan: Plan) -> int:
    pid = store.create(plan.work_order, "intent")
    store.add_version(pid, plan, [])
    store.add_rehearsal(pid, plan.content_hash(), True, 4.0, {}, [])
    store.set_status(pid, "rehearsed", actor="rehearsal")
    store.set_status(pid, "awaiting_approval", actor="coordinator")
    return pid


def test_approval_is_bound_to_the_exact_plan(store: Store, demo_plant: PlantDescription) -> None:
    gate = ApprovalGate(store, demo_plant)
    plan = simple_plan()
    pid = awaiting(store, plan)
    with pytest.raises(NotApproved, match="no supervisor approved it"):
        gate.authorize(pid, plan)
    gate.approve(pid, "sam (supervisor)")
    assert gate.authorize(pid, plan).approved_by == "sam (supervisor)"
    changed = plan.model_copy(update={"steps": [plan.steps[0].model_copy(update={"expected_duration_s": 1.0})]})
    with pytest.raises(NotApproved, match="hash differs"):
        gate.authorize(pid, changed)


def test_an_unused_approval_expires(db_url: str, tmp_path: Path, demo_plant: PlantDescription) -> None:
    clock = Clock()
    store = Store(db_url, clock=clock, trust_dir=tmp_path / "trust")
    gate = ApprovalGate(store, demo_plant, ttl_s=60)
    plan = simple_plan()
    pid = awaiting(store, plan)
    gate.approve(pid, "sam")
    clock.t += 61
    with pytest.raises(NotApproved, match="expired"):
        gate.authorize(pid, plan)
    store.engine.dispose()


def test_hazardous_steps_need_an_operator(store: Store, demo_plant: PlantDescription) -> None:
    gate = ApprovalGate(store, demo_plant)
    plan = simple_plan(hazardous=True)
    pid = awaiting(store, plan)
    gate.approve(pid, "sam")
    with pytest.raises(NotApproved, match="hazardous step jog needs an operator"):
        gate.authorize(pid, plan)
    with pytest.raises(StoreError, match="not hazardous"):
        gate.confirm(pid, "home", "olga (operator)")
    gate.confirm(pid, "jog", "olga (operator)")
    assert gate.authorize(pid, plan).content_hash == plan.content_hash()


def test_rejection_needs_a_reason_and_is_final(store: Store, demo_plant: PlantDescription) -> None:
    gate = ApprovalGate(store, demo_plant)
    plan = simple_plan()
    pid = awaiting(store, plan)
    with pytest.raises(StoreError, match="needs a reason"):
        gate.reject(pid, "sam", "  ")
    gate.reject(pid, "sam", "the cell is being cleaned")
    assert store.get(pid).status == "rejected"
    with pytest.raises(StoreError):
        gate.approve(pid, "sam")
    assert "rejection: the cell is being cleaned" in store.feedback_for(pid)


def _raw(url: str) -> tuple[Callable[[], Any], type[Exception], str]:
    """What someone with the database does, past the store: (connect, the error a trigger
    raises, the tail of DROP TRIGGER) for a SQLite file or a PostgreSQL database."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        return (lambda: sqlite3.connect(str(path))), sqlite3.DatabaseError, ""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return (lambda: psycopg.connect(plain)), psycopg.errors.RaiseException, " ON audit"


def test_audit_verify_detects_an_edited_and_a_deleted_row(
    db_url: str, tmp_path: Path, demo_plant: PlantDescription
) -> None:
    store = Store(db_url, trust_dir=tmp_path / "trust")
    gate = ApprovalGate(store, demo_plant)
    pid = awaiting(store, simple_plan())
    gate.approve(pid, "sam")
    report = store.verify_audit()
    assert report.ok and report.rows >= 6
    connect, refused, on = _raw(db_url)
    # The database itself refuses to change the log.
    with connect() as conn, pytest.raises(refused, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    # Someone with the database drops the trigger and edits a row: verify finds it.
    with connect() as conn:
        conn.execute(f"DROP TRIGGER audit_no_update{on}")
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    report = store.verify_audit()
    assert not report.ok and any("row 2" in p and "edited" in p for p in report.problems)
    with connect() as conn:
        conn.execute(f"DROP TRIGGER audit_no_delete{on}")
        conn.execute("DELETE FROM audit WHERE seq = 4")
    assert any("row 4: missing" in p for p in store.verify_audit().problems)
    store.engine.dispose()


def test_status_changes_follow_the_rules(store: Store) -> None:
    pid = store.create("x", "intent")
    with pytest.raises(StoreError, match="cannot become approved"):
        store.set_status(pid, "approved", actor="model")

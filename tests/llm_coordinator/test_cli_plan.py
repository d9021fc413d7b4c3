"""The work-order commands, registered on a Typer app as the ``atelier`` command does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llm_coordinator.cli_plan import register
from llm_coordinator.console.auth import UserStore
from llm_coordinator.plan import Plan, Step
from llm_coordinator.store import Store


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_plans_show_approve_and_audit_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_file = tmp_path / "a.db"
    db = f"sqlite:///{db_file}"
    store = Store(db)
    plan = Plan(work_order="home the panda", mode="intent", steps=[Step(id="home", agent="panda_1", skill="home")])
    pid = store.create(plan.work_order, "intent")
    store.add_version(pid, plan, [])
    store.add_rehearsal(pid, plan.content_hash(), True, 4.0, {}, [])
    store.set_status(pid, "rehearsed", actor="t")
    store.set_status(pid, "awaiting_approval", actor="t")
    store.engine.dispose()
    runner = CliRunner()
    r = runner.invoke(app(), ["plans", "--db", db])
    assert r.exit_code == 0 and "awaiting_approval" in r.output
    r = runner.invoke(app(), ["show", str(pid), "--db", db])
    assert r.exit_code == 0 and "panda_1" in r.output and "makespan 4.0 s" in r.output
    # A name on the command line is a claim: approving needs a supervisor's password.
    users = UserStore.from_url(db)
    users.add_user("sam", "supervisor", "a long supervisor password")
    users.add_user("olga", "operator", "a long operator password")
    users.engine.dispose()
    monkeypatch.setenv("ATELIER_PASSWORD", "a long operator password")
    r = runner.invoke(app(), ["approve", str(pid), "--as", "mallory", "--db", db])
    assert r.exit_code == 2 and "unknown user or wrong password" in r.output
    r = runner.invoke(app(), ["approve", str(pid), "--as", "olga", "--db", db])
    assert r.exit_code == 2 and "not theirs to do" in r.output
    monkeypatch.setenv("ATELIER_PASSWORD", "a long supervisor password")
    r = runner.invoke(app(), ["approve", str(pid), "--as", "sam", "--db", db])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app(), ["audit", "verify", "--db", db])
    assert r.exit_code == 0 and "chain intact" in r.output
    with sqlite3.connect(db_file) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("UPDATE audit SET payload = '{}' WHERE seq = 3")
    r = runner.invoke(app(), ["audit", "verify", "--db", db])
    assert r.exit_code == 1 and "row 3" in r.output

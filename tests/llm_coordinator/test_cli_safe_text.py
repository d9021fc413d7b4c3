"""The work-order commands print text from outside (a machine's fault text, the model's plan, a
person's words) escaped and cut: no ESC or NUL reaches the terminal, no 200,000-character line,
and rich markup in such text is shown, not obeyed. The product's own coordinator, store,
gate and executor run; only the model (scripted) and the agents (fakes) are stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import llm_coordinator.wiring as wiring
from llm_coordinator.approval import ApprovalGate
from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.cli_plan import register
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.planner import Planner
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from llm_coordinator.testing import FakeMachine, FakeTwinSession, fake_agents, fake_twin_factory, goal_script
from plant.config import PlantDescription
from plant.interface import MachineStatus
from plant.packml import Command

#: What a hostile or broken PLC might send as its fault text: clear the screen, retitle the
#: window, a NUL, rich markup, and 200,000 characters.
EVIL = "\x1b[2J\x1b]0;pwned\x07spindle\x00 [bold]overload[/bold] [/]" + "A" * 200_000


class EvilMachine(FakeMachine):
    """Faults on start with :data:`EVIL` as its fault text."""

    async def command(self, command: Command, timeout_s: float = 5.0) -> MachineStatus:
        st = await super().command(command, timeout_s)
        if command == Command.START:
            self.model.fault(42, EVIL)
            return await self.status()
        return st


def _evil_factory(render: bool = False) -> Any:
    @asynccontextmanager
    async def factory(plant: PlantDescription) -> AsyncIterator[FakeTwinSession]:
        machines, robots = fake_agents(plant, 200.0)
        machines["cnc_1"] = EvilMachine(plant, "cnc_1", 200.0)
        yield FakeTwinSession(machines, robots)  # type: ignore[arg-type]

    return factory


def _coordinator(plant: PlantDescription, config: CoordinatorConfig, *, evidence_dir: Path, **_: object) -> Coordinator:
    store = Store(config.database_url)
    backend = ScriptedBackend(goal_script({"goal": '{"goal": "machine_part"}'}))  # type: ignore[arg-type]
    gate = ApprovalGate(store, plant)
    rehearser = Rehearser(plant, fake_twin_factory(200.0))
    return Coordinator(plant, store, Planner(plant, backend, config), gate, rehearser, evidence_dir)


def _app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def _assert_safe(output: str) -> None:
    assert "\x1b" not in output and "\x00" not in output and "\x07" not in output
    assert "\\x1b[2J" in output.replace("\n", "")
    assert len(output) < 12_000, len(output)
    assert "of 200," in output.replace("\n", "")  # the cut marker says how much was cut


@pytest.fixture
def evil_twin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # default evidence folders (a recovery plan's Gantt) land here
    monkeypatch.setattr(wiring, "build_coordinator", _coordinator)
    monkeypatch.setattr(wiring, "twin_factory", _evil_factory)


def _operator(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_coordinator.console.auth import UserStore

    UserStore.from_url(db).add_user("olga", "operator", "a long operator password")
    monkeypatch.setenv("ATELIER_PASSWORD", "a long operator password")


def _supervisor(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sam, a line supervisor, whose password `order --as sam` reads from its own variable."""
    from llm_coordinator.console.auth import UserStore

    UserStore.from_url(db).add_user("sam", "supervisor", "a long supervisor password")
    monkeypatch.setenv("ATELIER_SUPERVISOR_PASSWORD", "a long supervisor password")


def test_order_shows_a_machines_fault_text_escaped_and_cut(
    evil_twin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    _operator(db, monkeypatch)
    _supervisor(db, monkeypatch)
    args = ["order", "Machine one blank", "--yes", "--as", "sam", "--confirm-as", "olga", "--db", db]
    r = CliRunner().invoke(_app(), [*args, "--evidence", str(tmp_path)])
    assert r.exit_code == 1, r.output
    _assert_safe(r.output)
    assert "[hazardous]" in r.output  # the hand-over's flag is shown, not taken for markup
    assert "[bold]overload[/bold]" in r.output.replace("\n", "")
    store = Store(db)
    assert store.verify_audit().ok
    store.engine.dispose()


def test_run_show_and_plans_print_outside_text_safely(
    evil_twin: None, tmp_path: Path, demo_plant: PlantDescription, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    co = _coordinator(demo_plant, CoordinatorConfig(database_url=db), evidence_dir=tmp_path)
    sub = asyncio.run(co.submit("Machine one blank [/] [bold]now[/bold]", actor="cli"))
    assert sub.status == "awaiting_approval", sub.reasons
    co.gate.approve(sub.plan_id, "sam\x1b[8m")
    plan = co.store.plan(sub.plan_id)
    assert plan is not None
    for step in co.gate.required_confirmations(plan):
        co.gate.confirm(sub.plan_id, step, "olga")
    evil_id = co.store.create("order\x1b]0;pwned\x07 [/]" + "B" * 200_000, "intent")
    co.store.engine.dispose()
    runner = CliRunner()
    r = runner.invoke(_app(), ["run", str(sub.plan_id), "--in-process", "--db", db])
    assert r.exit_code == 1, r.output
    _assert_safe(r.output)
    r = runner.invoke(_app(), ["show", str(sub.plan_id), "--db", db])
    assert r.exit_code == 0, r.output
    assert "[/] [bold]now[/bold]" in r.output and "\x1b" not in r.output
    for cmd in (["show", str(evil_id)], ["plans"]):
        r = runner.invoke(_app(), [*cmd, "--db", db])
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output and len(r.output) < 12_000
        assert "\\x1b]0;pwned" in r.output.replace("\n", "")
    from llm_coordinator.console.auth import UserStore

    UserStore.from_url(db).add_user("sam", "supervisor", "a long supervisor password")
    monkeypatch.setenv("ATELIER_PASSWORD", "a long supervisor password")
    r = runner.invoke(_app(), ["reject", str(evil_id), "--reason", "no\x1b[2J", "--as", "sam", "--db", db])
    assert r.exit_code == 2 and "\x1b" not in r.output and "Missing option" not in r.output


def test_yes_approves_and_confirms_nothing(evil_twin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--yes is the supervisor's approval only: a hazardous step still waits for an operator,
    and a name given for one is checked against the site's users."""
    db = f"sqlite:///{tmp_path / 'a.db'}"
    _supervisor(db, monkeypatch)
    order = ["order", "Machine one blank", "--yes", "--as", "sam", "--db", db, "--evidence", str(tmp_path)]
    r = CliRunner().invoke(_app(), order)
    assert r.exit_code == 4, r.output
    assert "wait for an operator" in r.output.replace("\n", " ")
    store = Store(db)
    (row,) = store.plans()
    assert row.status == "approved"
    plan = store.plan(row.id)
    assert plan is not None and store.confirmations(row.id, plan.content_hash()) == {}
    assert [a.actor for a in store.audit_rows() if a.action == "approved"] == ["sam"]
    store.engine.dispose()
    _operator(db, monkeypatch)
    monkeypatch.setenv("ATELIER_PASSWORD", "not the password")
    r = CliRunner().invoke(_app(), [*order, "--confirm-as", "olga"])
    assert r.exit_code == 2 and "wrong password" in r.output, r.output


def test_order_is_approved_by_a_checked_supervisor_or_not_at_all(
    evil_twin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever runs `atelier order` is not, by that, a supervisor: --yes needs a supervisor
    named with --as, whose password and role are checked before anything is planned."""
    db = f"sqlite:///{tmp_path / 'a.db'}"
    base = ["order", "Machine one blank", "--yes", "--db", db, "--evidence", str(tmp_path)]
    r = CliRunner().invoke(_app(), base)
    assert r.exit_code == 2 and "--as NAME" in r.output, r.output
    _supervisor(db, monkeypatch)
    _operator(db, monkeypatch)
    for who, password, why in (
        ("sam", "not the password", "wrong password"),
        ("mallory", "a long supervisor password", "unknown user"),
        ("olga", "a long operator password", "is not theirs to do"),  # an operator may not approve
    ):
        monkeypatch.setenv("ATELIER_SUPERVISOR_PASSWORD", password)
        r = CliRunner().invoke(_app(), [*base, "--as", who])
        assert r.exit_code == 2 and why in " ".join(r.output.split()), (who, r.output)
    store = Store(db)
    assert store.plans() == [] and not [a for a in store.audit_rows() if a.action == "approved"]
    # Each refusal is in the audit log, as the console records its own.
    refused = [(a.actor, a.action) for a in store.audit_rows() if a.action in ("login_failed", "refused")]
    assert refused == [("sam", "login_failed"), ("mallory", "login_failed"), ("olga", "refused")], refused
    assert store.verify_audit().ok
    store.engine.dispose()


def test_order_live_plans_against_the_plant_as_it_is(
    evil_twin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`atelier order --live` reads every machine before it plans: a machine in alarm (a reading
    out of its declared range) is seen by the planner and the guardrails, and the plan is not
    approved (the review planned and approved one on a conveyor in alarm; only the executor saw
    it). The reading is the one edge faked here: a live plant's snapshot."""
    import llm_coordinator.cli_plan as cli_plan
    from llm_coordinator.snapshot import MachineSnapshot, PlantSnapshot

    reason = "speed_setpoint reads 65.535 m/s (raw 65535, 0xFFFF): above its maximum 0.5 m/s"

    async def live_plant(plant: PlantDescription) -> PlantSnapshot:
        return PlantSnapshot(
            machines={"cnc_1": MachineSnapshot(state="IDLE", door_closed=True, alarms=(reason,))},
            alarms=[f"cnc_1: alarm: {reason}"],
        )

    monkeypatch.setattr(cli_plan, "_read_live_plant", live_plant)
    db = f"sqlite:///{tmp_path / 'a.db'}"
    _supervisor(db, monkeypatch)
    args = ["order", "Machine one blank", "--yes", "--as", "sam", "--live", "--db", db, "--evidence", str(tmp_path)]
    r = CliRunner().invoke(_app(), args)
    assert r.exit_code == 1, r.output
    flat = " ".join(r.output.split())
    assert "awaiting_approval" not in flat and "cnc_1" in flat and "alarm" in flat, flat
    store = Store(db)
    assert not [a for a in store.audit_rows() if a.action == "approved"]
    store.engine.dispose()

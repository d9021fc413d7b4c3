"""The ``atelier`` commands of the work-order loop; :func:`register` adds them to the app.

``plan``, ``plans``, ``show``, ``approve``, ``confirm``, ``reject``, ``run`` and
``audit verify``. This module is wiring: it builds backends through :mod:`llm_coordinator.wiring`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llm_coordinator.cli_console import checked_person
from llm_coordinator.config import CoordinatorConfig, ModelConfig
from llm_coordinator.store import Store, StoreError
from plant.interface import ConnectError
from plant.text import safe_text
from plant.trust import TrustError

#: Why a plan cannot start on the live plant: a machine unreachable, a robot's runtime not
#: listening, a robot's key missing. Each is said in one line, nothing moves.
_UNREACHABLE = (ConnectError, TimeoutError, TrustError)

if TYPE_CHECKING:
    from llm_coordinator.approval import ApprovalGate
    from llm_coordinator.coordinator import Submission
    from llm_coordinator.executor import ExecutionReport

out = Console()
err = Console(stderr=True)

DbOpt = Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the plan store")]
PlantOpt = Annotated[Path | None, typer.Option("--plant", "-p", help="plant description YAML (default: demo cell)")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="coordinator configuration (JSON or YAML; backend, mode, budgets)")
]

EvidenceOpt = Annotated[Path, typer.Option(help="directory for Gantt charts and frames")]


def _config(path: Path | None, db: str, mode: str | None) -> CoordinatorConfig:
    data: dict[str, object] = {}
    if path is not None:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data["database_url"] = db
    if mode is not None:
        data["mode"] = mode
    data.setdefault("model", ModelConfig().model_dump())
    return CoordinatorConfig.model_validate(data)


def _safe(value: object, limit: int = 500) -> str:
    """Text from outside (a model, a machine, a person, the store) for a line with rich markup:
    control characters escaped, at most ``limit`` characters, markup escaped."""
    return escape(safe_text(value, limit))


def _report(sub: Submission, note: str = "") -> NoReturn:
    """Where a submitted work order ended up; exit 0 when it awaits approval."""
    out.print(f"plan [bold]{sub.plan_id}[/]{note}: {sub.status}")
    for r in sub.reasons:
        out.print(f"  - {_safe(r)}", highlight=False)
    for e in sub.evidence or []:
        out.print(f"  evidence: {_safe(e)}", highlight=False)
    raise typer.Exit(0 if sub.status == "awaiting_approval" else 1)


@contextmanager
def _store_refusal() -> Iterator[None]:
    """What the store refuses (an unknown plan, a status that does not allow the change) is
    printed, and the command exits with code 2."""
    try:
        yield
    except StoreError as exc:
        err.print(_safe(exc), highlight=False)
        raise typer.Exit(2) from None


def _print_run(report: ExecutionReport) -> int:
    """The steps of a run and how it ended; returns the exit code (0 when the plan is done)."""
    for rec in report.records:
        took = f"{rec.end_s - rec.start_s:6.1f} s"
        line = f"  {_safe(rec.step, 40):20s} {_safe(rec.agent, 40):12s} {rec.status:7s} {took}  {_safe(rec.detail)}"
        out.print(line, highlight=False)
    why = f" ({_safe(report.reason)})" if report.reason else ""
    out.print(f"plan {report.plan_id}: {report.status} in {report.makespan_s:.1f} s{why}", highlight=False)
    if report.recovery_plan_id is not None:
        out.print(f"recovery plan {report.recovery_plan_id} drafted (see `atelier show {report.recovery_plan_id}`)")
    return 0 if report.status == "done" else 1


def _plant(path: Path | None) -> object:
    from plant import PlantError, load_plant

    try:
        return load_plant(path)
    except PlantError as exc:
        err.print(f"[bold red]error:[/] {escape(safe_text(exc, 20000, newlines=True))}", highlight=False)
        raise typer.Exit(2) from None


def _gate(db: str, plant_file: Path | None) -> ApprovalGate:
    from llm_coordinator.approval import ApprovalGate

    return ApprovalGate(Store(db), _plant(plant_file))  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the work-order commands to ``app`` (the ``atelier`` command)."""
    audit_app = typer.Typer(no_args_is_help=True, help="The audit log.")
    app.add_typer(audit_app, name="audit")

    @app.command("plan")
    def plan_cmd(
        order: Annotated[str, typer.Argument(help="the work order, in plain words")],
        mode: Annotated[str | None, typer.Option(help="intent (small models) or direct")] = None,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
    ) -> None:
        """Plan a work order: model, guardrails, rehearsal in the twin; ends awaiting approval."""
        from llm_coordinator.wiring import build_coordinator

        plant = _plant(plant_file)
        co = build_coordinator(plant, _config(config, db, mode), evidence_dir=evidence)  # type: ignore[arg-type]
        _report(asyncio.run(co.submit(order, actor="cli")))

    @app.command("replan")
    def replan_cmd(
        plan_id: int,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
    ) -> None:
        """Draft a turned-down plan's work order again as a new plan, telling the model why the
        last one was turned down (the supervisor's reason, the rules', the rehearsal's)."""
        from llm_coordinator.wiring import build_coordinator

        plant = _plant(plant_file)
        co = build_coordinator(plant, _config(config, db, None), evidence_dir=evidence)  # type: ignore[arg-type]
        with _store_refusal():
            feedback = co.replan_feedback(plan_id)
        for f in feedback:
            out.print(f"  feedback: {_safe(f)}", highlight=False)
        _report(asyncio.run(co.replan(plan_id, actor="cli")), f" (again for plan {plan_id})")

    @app.command("order")
    def order_cmd(
        order: Annotated[str, typer.Argument(help="the work order, in plain words")],
        yes: Annotated[bool, typer.Option("--yes", help="approve without asking (approval only)")] = False,
        confirm_as: Annotated[
            str | None,
            typer.Option(
                "--confirm-as",
                help="the robot operator who confirms the hazardous steps (checked against the site's users; "
                "password from $ATELIER_PASSWORD or a prompt)",
            ),
        ] = None,
        mode: Annotated[str | None, typer.Option(help="intent (small models) or direct")] = None,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
        live: Annotated[
            bool,
            typer.Option(
                "--live",
                help="execute on the live plant (machines over OPC-UA/Modbus, robots over ROS 2: "
                "`atelier twin serve` and the robot runtimes must be running) instead of an in-process twin",
            ),
        ] = False,
    ) -> None:
        """The whole loop: plan, guardrails, rehearsal, an approval prompt (or --yes), execution
        (on the live plant with --live, else on an in-process twin), summary."""
        from llm_coordinator.wiring import build_coordinator, build_executor, twin_factory

        plant = _plant(plant_file)
        cfg = _config(config, db, mode)
        co = build_coordinator(plant, cfg, evidence_dir=evidence)  # type: ignore[arg-type]
        sub = asyncio.run(co.submit(order, actor="cli"))
        out.print(f"plan [bold]{sub.plan_id}[/]: {sub.status}")
        for r in sub.reasons:
            out.print(f"  - {_safe(r)}", highlight=False)
        if sub.status != "awaiting_approval":
            raise typer.Exit(1)
        plan = co.store.plan(sub.plan_id)
        if plan is None:  # pragma: no cover - a plan awaiting approval always has a version
            raise typer.Exit(2)
        for s in plan.steps:
            flag = "  [hazardous]" if s.hazardous else ""
            line = f"  {s.id:18s} {s.agent:11s} {s.skill:11s} {json.dumps(s.args)}"
            out.print(safe_text(line, 300) + flag, highlight=False, markup=False)
        if sub.rehearsal is not None:
            out.print(f"rehearsed in the twin: makespan {sub.rehearsal.makespan_s:.1f} s")
        for e in sub.evidence or []:
            out.print(f"  evidence: {_safe(e)}", highlight=False)
        if not yes and not typer.confirm(f"approve plan {sub.plan_id}?", default=False):
            co.gate.reject(sub.plan_id, "cli", "not approved at the prompt")
            raise typer.Exit(1)
        co.gate.approve(sub.plan_id, "cli (--yes)" if yes else "cli")
        hazardous = co.gate.required_confirmations(plan)
        if hazardous:
            # A hazardous step is confirmed by a robot operator, never by a flag.
            operator = confirm_as
            if operator is None and not yes:
                operator = typer.prompt("robot operator who confirms the hazardous steps (empty: none)", default="")
            if not operator:
                out.print(
                    f"plan {sub.plan_id} approved; its hazardous steps wait for an operator: "
                    + ", ".join(safe_text(s, 80) for s in hazardous)
                    + f" (`atelier confirm {sub.plan_id} STEP --as NAME`, or the console)",
                    highlight=False,
                    markup=False,
                )
                raise typer.Exit(4)
            operator = checked_person(cfg.database_url, operator, "confirm_step")
            for step, why in hazardous.items():
                prompt = f"{operator}: confirm hazardous step {safe_text(step, 80)} ({safe_text(why, 200)})?"
                if confirm_as is None and not typer.confirm(prompt, default=False):
                    raise typer.Exit(4)
                co.gate.confirm(sub.plan_id, step, operator)

        @asynccontextmanager
        async def agents() -> AsyncIterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
            if live:
                from llm_coordinator.wiring import live_agents

                used = {s.agent for s in plan.steps if s.agent in plant.robots}  # type: ignore[attr-defined]
                async with live_agents(plant, robots=sorted(used)) as (machines, robots):  # type: ignore[arg-type]
                    yield machines, robots
            else:
                async with twin_factory(render=False)(plant) as twin:  # type: ignore[arg-type]
                    yield twin.machines, twin.robots

        async def go() -> int:
            try:
                async with agents() as (machines, robots):
                    out.print("executing on " + ("the live plant" if live else "an in-process twin"))
                    ex = build_executor(co, machines, robots, cfg)
                    report = await ex.run(sub.plan_id, actor="cli")
            except _UNREACHABLE as exc:
                err.print(f"plan {sub.plan_id} approved, not run: {_safe(str(exc))}", highlight=False)
                return 3
            return _print_run(report)

        raise typer.Exit(asyncio.run(go()))

    @app.command("plans")
    def plans_cmd(db: DbOpt = "sqlite:///atelier.db") -> None:
        """List plans, newest first."""
        t = Table()
        for c in ("id", "status", "mode", "work order"):
            t.add_column(c)
        for row in Store(db).plans():
            t.add_row(str(row.id), row.status, row.mode, _safe(row.work_order, 70))
        out.print(t)

    @app.command("show")
    def show_cmd(plan_id: int, db: DbOpt = "sqlite:///atelier.db") -> None:
        """Show a plan: status, steps, guardrail failures, rehearsal, Gantt and evidence files."""
        store = Store(db)
        with _store_refusal():
            row = store.get(plan_id)
        out.print(f"plan {row.id} [bold]{row.status}[/] ({row.mode}): {_safe(row.work_order)}", highlight=False)
        for r in row.reasons:
            out.print(f"  reason: {_safe(r)}", highlight=False)
        plan = store.plan(plan_id)
        if plan is not None:
            t = Table(title=f"hash {plan.content_hash()[:16]}")
            for c in ("step", "agent", "skill", "args", "after", "s", "hazard"):
                t.add_column(c)
            for s in plan.steps:
                t.add_row(
                    _safe(s.id, 40),
                    _safe(s.agent, 40),
                    _safe(s.skill, 40),
                    _safe(json.dumps(s.args), 200),
                    _safe(",".join(s.after), 200),
                    f"{s.expected_duration_s:g}",
                    "yes" if s.hazardous else "",
                )
            out.print(t)
        rh = store.rehearsal(plan_id)
        if rh is not None:
            out.print(f"rehearsal: {'ok' if rh.ok else 'FAILED'}, makespan {rh.makespan_s:.1f} s")
            for e in rh.evidence:
                out.print(f"  evidence: {_safe(e)}", highlight=False)

    @app.command("approve")
    def approve_cmd(
        plan_id: int,
        supervisor: Annotated[str, typer.Option("--as", help="the supervisor's name")],
        reason: str = "",
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A supervisor approves the plan's current version (bound to its hash)."""
        with _store_refusal():
            h = _gate(db, plant_file).approve(plan_id, supervisor, reason)
        out.print(f"plan {plan_id} approved (hash {h[:16]})")

    @app.command("confirm")
    def confirm_cmd(
        plan_id: int,
        step: str,
        operator: Annotated[str, typer.Option("--as", help="the robot operator's name")],
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A robot operator confirms one hazardous step (their password from $ATELIER_PASSWORD or a
        prompt, checked against the site's users)."""
        operator = checked_person(db, operator, "confirm_step")
        with _store_refusal():
            _gate(db, plant_file).confirm(plan_id, step, operator)
        out.print(f"step {_safe(step, 80)} of plan {plan_id} confirmed by {_safe(operator, 80)}", highlight=False)

    @app.command("reject")
    def reject_cmd(
        plan_id: int,
        reason: Annotated[str, typer.Option(help="why (kept as feedback for the next plans)")],
        supervisor: Annotated[str, typer.Option("--as")] = "supervisor",
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A supervisor rejects the plan, with a reason."""
        with _store_refusal():
            _gate(db, plant_file).reject(plan_id, supervisor, reason)
        out.print(f"plan {plan_id} rejected")

    @app.command("run")
    def run_cmd(
        plan_id: int,
        in_process: Annotated[
            bool, typer.Option("--in-process", help="run on a fresh in-process twin instead of the live plant")
        ] = False,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
    ) -> None:
        """Run (or resume) an approved plan on the plant: machines over OPC-UA/Modbus at the
        endpoints of the plant description, robots over ROS 2 (their runtimes must be running),
        or with --in-process on a fresh in-process twin. Refused unless approved for the plan's
        exact hash with every hazardous step confirmed."""
        from llm_coordinator.approval import NotApproved
        from llm_coordinator.wiring import build_coordinator, build_executor

        plant = _plant(plant_file)
        cfg = _config(config, db, None)
        # Recovery plans drafted on a failure are checked and rehearsed (without frames).
        co = build_coordinator(plant, cfg, evidence_dir=evidence, render=False)  # type: ignore[arg-type]

        def agents() -> AbstractAsyncContextManager[tuple[Mapping[str, Any], Mapping[str, Any]]]:
            if in_process:
                from llm_coordinator.wiring import twin_factory

                @asynccontextmanager
                async def twin() -> AsyncIterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
                    async with twin_factory(render=False)(plant) as session:  # type: ignore[arg-type]
                        yield session.machines, session.robots

                return twin()
            from llm_coordinator.wiring import live_agents

            # Only the robots this plan uses need their runtimes.
            stored = co.store.plan(plan_id)
            used = sorted({s.agent for s in stored.steps if s.agent in plant.robots}) if stored else []  # type: ignore[attr-defined]
            return live_agents(plant, robots=used)  # type: ignore[arg-type]

        async def go() -> int:
            try:
                async with agents() as (machines, robots):
                    ex = build_executor(co, machines, robots, cfg)
                    try:
                        report = await ex.run(plan_id, actor="cli")
                    except NotApproved as exc:
                        for r in exc.reasons:
                            err.print(f"  - {_safe(r)}", highlight=False)
                        return 2
            except _UNREACHABLE as exc:
                err.print(f"plan {plan_id} not run: {_safe(str(exc))}", highlight=False)
                return 3
            return _print_run(report)

        raise typer.Exit(asyncio.run(go()))

    @audit_app.command("verify")
    def audit_verify(
        db: DbOpt = "sqlite:///atelier.db",
        trust_dir: Annotated[
            Path | None,
            typer.Option(
                help="folder of the audit key and the anchored head (default: $ATELIER_STATE_DIR/trust, "
                "else <database file>.trust)"
            ),
        ] = None,
    ) -> None:
        """Check the audit log: its chain, every row's tag under the audit key, and the head
        anchored outside the database; print the head; exit 1 if a row was edited, deleted,
        re-chained or written without the key, or the tail was cut."""
        with _store_refusal():
            report = Store(db, trust_dir=trust_dir).verify_audit()
        h = report.head
        head = f"head: row {h.seq}, hash {h.hash[:16]}, anchored in {h.where}" if h else "head: none anchored"
        out.print(safe_text(head), highlight=False, markup=False)
        for n in report.notes:
            out.print(safe_text(f"note: {n}"), highlight=False, markup=False)
        if report.ok:
            out.print(f"audit log ok: {report.rows} rows, chain intact, tags match the audit key", highlight=False)
            return
        for problem in report.problems:
            err.print(safe_text(problem), highlight=False, markup=False)
        raise typer.Exit(1)


def main() -> None:
    """``python -m llm_coordinator.cli_plan``: these commands without the rest of ``atelier``."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
    register(app)
    app()


if __name__ == "__main__":
    main()

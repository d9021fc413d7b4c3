"""The plan store: plans and their versions, rehearsals, approvals, operator confirmations,
executor progress, feedback, and an append-only, hash-chained audit log.

SQLite in one file by default, through SQLAlchemy 2, so a PostgreSQL URL works for a site with
many users. Every decision goes into the audit log in the same transaction as the change it
records. Audit rows are never updated or deleted: the ORM refuses it, and on SQLite triggers
refuse it too. :meth:`Store.verify_audit` recomputes the chain and reports the first row that
was edited, removed or inserted out of turn.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from llm_coordinator.plan import Plan

PlanStatus = Literal[
    "drafted",
    "refused",
    "rejected_by_rules",
    "rehearsed",
    "rehearsal_failed",
    "awaiting_approval",
    "approved",
    "rejected",
    "running",
    "paused",
    "done",
    "failed",
]

#: Which status may follow which. Anything else is a bug and raises.
TRANSITIONS: dict[str, frozenset[str]] = {
    "drafted": frozenset({"rejected_by_rules", "rehearsed", "rehearsal_failed", "refused", "failed"}),
    "rehearsed": frozenset({"awaiting_approval"}),
    "awaiting_approval": frozenset({"approved", "rejected"}),
    "approved": frozenset({"running", "rejected", "awaiting_approval"}),
    "running": frozenset({"paused", "done", "failed", "running"}),
    "paused": frozenset({"running", "failed", "rejected"}),
    "refused": frozenset(),
    "rejected_by_rules": frozenset(),
    "rehearsal_failed": frozenset(),
    "rejected": frozenset(),
    "done": frozenset(),
    "failed": frozenset(),
}

GENESIS = "0" * 64


class StoreError(Exception):
    """A request the store refuses: an unknown plan, a status change that is not allowed."""


class _Base(DeclarativeBase):
    pass


class PlanRow(_Base):
    """A work order and where its plan stands."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    work_order: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class PlanVersion(_Base):
    """One exact plan (its JSON) and the hash an approval is bound to."""

    __tablename__ = "plan_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)


class RehearsalRow(_Base):
    """How a plan version ran in the twin, with the evidence files."""

    __tablename__ = "rehearsals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column()
    makespan_s: Mapped[float] = mapped_column(Float)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)


class ApprovalRow(_Base):
    """A supervisor's decision on one exact plan version."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ConfirmationRow(_Base):
    """A robot operator's confirmation of one hazardous step of one exact plan version."""

    __tablename__ = "confirmations"
    __table_args__ = (UniqueConstraint("plan_id", "content_hash", "step_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[float] = mapped_column(Float)


class ProgressRow(_Base):
    """Where a step of a plan version stands in execution."""

    __tablename__ = "progress"
    __table_args__ = (UniqueConstraint("plan_id", "content_hash", "step_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class FeedbackRow(_Base):
    """Rejection reasons and outcomes, kept for the next plans."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(24))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class AuditRow(_Base):
    """One decision, chained to the one before by ``prev_hash``."""

    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    plan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


@event.listens_for(AuditRow, "before_update")
def _no_update(*_: Any) -> None:
    raise StoreError("the audit log is append-only: rows are never updated")


@event.listens_for(AuditRow, "before_delete")
def _no_delete(*_: Any) -> None:
    raise StoreError("the audit log is append-only: rows are never deleted")


def audit_hash(prev_hash: str, seq: int, at: float, actor: str, action: str, plan_id: int | None, payload: Any) -> str:
    """SHA-256 over the previous hash and the canonical JSON of one row."""
    body = json.dumps(
        {"seq": seq, "at": repr(float(at)), "actor": actor, "action": action, "plan_id": plan_id, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class AuditReport:
    """Result of :meth:`Store.verify_audit`: ``ok``, rows checked, and what is wrong where."""

    ok: bool
    rows: int
    problems: tuple[str, ...]


class Store:
    """All persistent state of the coordinator (see the module docstring). Thread-safe per call."""

    def __init__(self, url: str = "sqlite:///atelier.db", clock: Any = time.time) -> None:
        self.engine = create_engine(url)
        self.clock = clock
        _Base.metadata.create_all(self.engine)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(
                        text(
                            f"CREATE TRIGGER IF NOT EXISTS audit_no_{op.lower()} BEFORE {op} ON audit "
                            f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                        )
                    )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as s:
            yield s

    # ------------------------------------------------------------------ audit

    def _audit(self, s: Session, actor: str, action: str, plan_id: int | None, payload: dict[str, Any]) -> None:
        last = s.execute(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1)).scalar_one_or_none()
        seq = 1 if last is None else last.seq + 1
        prev = GENESIS if last is None else last.hash
        at = self.clock()
        h = audit_hash(prev, seq, at, actor, action, plan_id, payload)
        s.add(
            AuditRow(
                seq=seq, at=at, actor=actor, action=action, plan_id=plan_id, payload=payload, prev_hash=prev, hash=h
            )
        )
        s.flush()

    def audit(self, actor: str, action: str, plan_id: int | None, payload: dict[str, Any]) -> None:
        """Append one decision to the audit log."""
        with self.session() as s:
            self._audit(s, actor, action, plan_id, payload)

    def audit_rows(self, plan_id: int | None = None) -> list[AuditRow]:
        """Audit rows in order (of one plan, or all)."""
        with self.session() as s:
            q = select(AuditRow).order_by(AuditRow.seq)
            if plan_id is not None:
                q = q.where(AuditRow.plan_id == plan_id)
            return list(s.execute(q).scalars())

    def verify_audit(self) -> AuditReport:
        """Recompute the chain; report every row edited, missing or out of order."""
        problems: list[str] = []
        prev = GENESIS
        expected_seq = 1
        rows = self.audit_rows()
        for r in rows:
            if r.seq != expected_seq:
                problems.append(f"row {expected_seq}: missing (the next row is {r.seq}); rows were deleted")
            if r.prev_hash != prev:
                problems.append(f"row {r.seq}: does not follow the row before it (chain broken)")
            h = audit_hash(r.prev_hash, r.seq, r.at, r.actor, r.action, r.plan_id, r.payload)
            if h != r.hash:
                problems.append(f"row {r.seq}: its content does not match its hash; the row was edited")
            prev, expected_seq = r.hash, r.seq + 1
        return AuditReport(not problems, len(rows), tuple(problems))

    # ------------------------------------------------------------------ plans

    def create(
        self,
        work_order: str,
        mode: str,
        *,
        actor: str = "coordinator",
        parent_id: int | None = None,
    ) -> int:
        """A new work order in status ``drafted``; returns its id."""
        now = self.clock()
        with self.session() as s:
            row = PlanRow(
                work_order=work_order,
                mode=mode,
                status="drafted",
                parent_id=parent_id,
                reasons=[],
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            self._audit(s, actor, "created", row.id, {"work_order": work_order, "mode": mode, "parent_id": parent_id})
            return row.id

    def add_version(
        self, plan_id: int, plan: Plan, verdict: Sequence[dict[str, Any]], *, actor: str = "coordinator"
    ) -> str:
        """Store one exact plan (and the guardrails' findings) as the plan's current version."""
        h = plan.content_hash()
        with self.session() as s:
            row = self._row(s, plan_id)
            s.add(
                PlanVersion(
                    plan_id=plan_id,
                    content_hash=h,
                    body=plan.model_dump(mode="json"),
                    verdict=list(verdict),
                    created_at=self.clock(),
                )
            )
            row.content_hash = h
            row.updated_at = self.clock()
            self._audit(s, actor, "plan_version", plan_id, {"content_hash": h, "steps": len(plan.steps)})
        return h

    def _row(self, s: Session, plan_id: int) -> PlanRow:
        row = s.get(PlanRow, plan_id)
        if row is None:
            raise StoreError(f"there is no plan {plan_id}")
        return row

    def set_status(self, plan_id: int, status: PlanStatus, *, actor: str, reasons: Sequence[str] = ()) -> None:
        """Move a plan to ``status`` (only along :data:`TRANSITIONS`), with reasons, audited."""
        with self.session() as s:
            self._set_status(s, plan_id, status, actor=actor, reasons=reasons)

    def _set_status(self, s: Session, plan_id: int, status: str, *, actor: str, reasons: Sequence[str] = ()) -> None:
        row = self._row(s, plan_id)
        if status not in TRANSITIONS.get(row.status, frozenset()):
            raise StoreError(f"plan {plan_id} is {row.status}; it cannot become {status}")
        old = row.status
        row.status = status
        row.reasons = [r[:500] for r in reasons]
        row.updated_at = self.clock()
        self._audit(
            s,
            actor,
            f"status:{status}",
            plan_id,
            {"from": old, "reasons": row.reasons, "content_hash": row.content_hash},
        )

    def get(self, plan_id: int) -> PlanRow:
        """The plan's row; :class:`StoreError` if there is none."""
        with self.session() as s:
            return self._row(s, plan_id)

    def plan(self, plan_id: int) -> Plan | None:
        """The current version of the plan, or None if it has none."""
        with self.session() as s:
            row = self._row(s, plan_id)
            if row.content_hash is None:
                return None
            v = s.execute(
                select(PlanVersion)
                .where(PlanVersion.plan_id == plan_id, PlanVersion.content_hash == row.content_hash)
                .order_by(PlanVersion.id.desc())
                .limit(1)
            ).scalar_one()
            return Plan.model_validate(v.body)

    def version(self, plan_id: int) -> PlanVersion | None:
        """The stored current version (plan JSON and guardrail findings)."""
        with self.session() as s:
            row = self._row(s, plan_id)
            return s.execute(
                select(PlanVersion)
                .where(PlanVersion.plan_id == plan_id, PlanVersion.content_hash == row.content_hash)
                .order_by(PlanVersion.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def plans(self, limit: int = 50) -> list[PlanRow]:
        """The newest plans first."""
        with self.session() as s:
            return list(s.execute(select(PlanRow).order_by(PlanRow.id.desc()).limit(limit)).scalars())

    # ------------------------------------------------------------------ rehearsal, approval, confirmation

    def add_rehearsal(
        self,
        plan_id: int,
        content_hash: str,
        ok: bool,
        makespan_s: float,
        report: dict[str, Any],
        evidence: Sequence[str],
    ) -> None:
        """Record how a plan version ran in the twin."""
        with self.session() as s:
            s.add(
                RehearsalRow(
                    plan_id=plan_id,
                    content_hash=content_hash,
                    ok=ok,
                    makespan_s=makespan_s,
                    report=report,
                    evidence=list(evidence),
                    created_at=self.clock(),
                )
            )
            self._audit(
                s, "rehearsal", "rehearsed", plan_id, {"content_hash": content_hash, "ok": ok, "makespan_s": makespan_s}
            )

    def rehearsal(self, plan_id: int) -> RehearsalRow | None:
        """The latest rehearsal of the plan's current version."""
        with self.session() as s:
            row = self._row(s, plan_id)
            return s.execute(
                select(RehearsalRow)
                .where(RehearsalRow.plan_id == plan_id, RehearsalRow.content_hash == row.content_hash)
                .order_by(RehearsalRow.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def add_decision(
        self,
        plan_id: int,
        content_hash: str,
        decision: str,
        who: str,
        reason: str,
        expires_at: float,
        status: PlanStatus,
    ) -> None:
        """Record a supervisor's decision and move the plan to ``status`` in one transaction."""
        with self.session() as s:
            s.add(
                ApprovalRow(
                    plan_id=plan_id,
                    content_hash=content_hash,
                    decision=decision,
                    who=who,
                    reason=reason,
                    created_at=self.clock(),
                    expires_at=expires_at,
                )
            )
            if decision == "rejected":
                s.add(FeedbackRow(plan_id=plan_id, kind="rejection", text=reason, created_at=self.clock()))
            self._audit(
                s, who, decision, plan_id, {"content_hash": content_hash, "reason": reason, "expires_at": expires_at}
            )
            self._set_status(s, plan_id, status, actor=who, reasons=[reason] if reason else [])

    def latest_decision(self, plan_id: int) -> ApprovalRow | None:
        """The newest supervisor decision on the plan (any version)."""
        with self.session() as s:
            return s.execute(
                select(ApprovalRow).where(ApprovalRow.plan_id == plan_id).order_by(ApprovalRow.id.desc()).limit(1)
            ).scalar_one_or_none()

    def mark_approval_used(self, approval_id: int) -> None:
        """Record that execution started under this approval (it then no longer expires)."""
        with self.session() as s:
            row = s.get(ApprovalRow, approval_id)
            if row is not None and row.used_at is None:
                row.used_at = self.clock()
                self._audit(s, "executor", "approval_used", row.plan_id, {"approval": approval_id})

    def confirm(self, plan_id: int, content_hash: str, step_id: str, operator: str) -> None:
        """Record an operator's confirmation of a hazardous step (idempotent)."""
        with self.session() as s:
            exists = s.execute(
                select(ConfirmationRow).where(
                    ConfirmationRow.plan_id == plan_id,
                    ConfirmationRow.content_hash == content_hash,
                    ConfirmationRow.step_id == step_id,
                )
            ).scalar_one_or_none()
            if exists is None:
                s.add(
                    ConfirmationRow(
                        plan_id=plan_id,
                        content_hash=content_hash,
                        step_id=step_id,
                        operator=operator,
                        created_at=self.clock(),
                    )
                )
                self._audit(s, operator, "operator_confirmed", plan_id, {"content_hash": content_hash, "step": step_id})

    def confirmations(self, plan_id: int, content_hash: str) -> dict[str, str]:
        """Step id -> operator, for one exact plan version."""
        with self.session() as s:
            rows = s.execute(
                select(ConfirmationRow).where(
                    ConfirmationRow.plan_id == plan_id, ConfirmationRow.content_hash == content_hash
                )
            ).scalars()
            return {r.step_id: r.operator for r in rows}

    # ------------------------------------------------------------------ execution progress and feedback

    def progress(self, plan_id: int, content_hash: str) -> dict[str, str]:
        """Step id -> status (running, done, failed) for one exact plan version."""
        with self.session() as s:
            rows = s.execute(
                select(ProgressRow).where(ProgressRow.plan_id == plan_id, ProgressRow.content_hash == content_hash)
            ).scalars()
            return {r.step_id: r.status for r in rows}

    def progress_detail(self, plan_id: int, content_hash: str, step_id: str) -> str:
        """The detail recorded with a step's latest status ("" if none)."""
        with self.session() as s:
            row = s.execute(
                select(ProgressRow).where(
                    ProgressRow.plan_id == plan_id,
                    ProgressRow.content_hash == content_hash,
                    ProgressRow.step_id == step_id,
                )
            ).scalar_one_or_none()
            return row.detail if row is not None else ""

    def set_progress(self, plan_id: int, content_hash: str, step_id: str, status: str, detail: str = "") -> None:
        """Record a step's status (committed before the executor moves on), audited."""
        now = self.clock()
        with self.session() as s:
            row = s.execute(
                select(ProgressRow).where(
                    ProgressRow.plan_id == plan_id,
                    ProgressRow.content_hash == content_hash,
                    ProgressRow.step_id == step_id,
                )
            ).scalar_one_or_none()
            if row is None:
                row = ProgressRow(plan_id=plan_id, content_hash=content_hash, step_id=step_id, status=status)
                s.add(row)
            row.status, row.detail = status, detail[:1000]
            if status == "running":
                row.started_at = now
            else:
                row.finished_at = now
            self._audit(s, "executor", f"step:{status}", plan_id, {"step": step_id, "detail": detail[:300]})

    def add_feedback(self, plan_id: int | None, kind: str, text_: str) -> None:
        """Keep a reason or an outcome for the next plans."""
        with self.session() as s:
            s.add(FeedbackRow(plan_id=plan_id, kind=kind, text=text_[:2000], created_at=self.clock()))

    def feedback_for(self, plan_id: int) -> list[str]:
        """The feedback kept for one plan (rejection reasons, refused steps), oldest first."""
        with self.session() as s:
            rows = s.execute(select(FeedbackRow).where(FeedbackRow.plan_id == plan_id).order_by(FeedbackRow.id))
            return [f"{r.kind}: {r.text}" for r in rows.scalars()]

    def recent_feedback(self, limit: int = 5) -> list[str]:
        """The newest rejection reasons and outcomes, newest last."""
        with self.session() as s:
            rows = list(s.execute(select(FeedbackRow).order_by(FeedbackRow.id.desc()).limit(limit)).scalars())
            return [f"{r.kind}: {r.text}" for r in reversed(rows)]

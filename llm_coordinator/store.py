"""The plan store: plans and their versions, rehearsals, approvals, operator confirmations,
executor progress, feedback, and an append-only, hash-chained audit log.

SQLite in one file by default, through SQLAlchemy 2, so a PostgreSQL URL works for a site with
many users. Every decision goes into the audit log in the same transaction as the change it
records. Audit rows are never updated or deleted: the ORM refuses it, and on SQLite triggers
refuse it too. :meth:`Store.verify_audit` recomputes the chain and reports the first row that
was edited, removed or inserted out of turn.

The chain alone proves nothing to someone who can write the database: they can edit a row and
compute the chain again with :func:`audit_hash`, or drop the last rows. So the log is anchored
outside the database, in a trust folder (see :func:`default_trust_dir`): every row carries an
HMAC-SHA256 tag under the ``audit`` key of a :class:`plant.trust.KeyStore` kept there, and after
every commit the store writes the newest row's sequence number and hash (with their own tag) to
a head file there, atomically. A rewritten log fails its tags; a deleted tail falls short of the
anchored head. Appends are serialised: a lock per process and, in the database, ``BEGIN
IMMEDIATE`` on SQLite or a transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from llm_coordinator.plan import Plan
from llm_coordinator.status import TRANSITIONS, PlanStatus
from plant.trust import KeyStore, TrustError, canonical, write_atomic

GENESIS = "0" * 64

#: Name of the audit log's key in the trust folder's :class:`~plant.trust.KeyStore`.
AUDIT_KEY = "audit"
#: The environment variable naming the state folder (as for ``atelier robot`` and the console).
STATE_DIR_ENV = "ATELIER_STATE_DIR"
# Any fixed 63-bit number; every writer of one PostgreSQL database takes this advisory lock.
_PG_AUDIT_LOCK = int.from_bytes(b"atelier!", "big")
#: The advisory lock under which a process makes the tables and triggers of a new database.
_PG_SCHEMA_LOCK = _PG_AUDIT_LOCK + 1

_log = logging.getLogger(__name__)


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


class JobRow(_Base):
    """A work order the console is drafting (or drafted): its stages and messages as the console
    shows them (``body``, the console's JSON), kept so that a restart loses none."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(24))
    plan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


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
    #: HMAC-SHA256 of (seq, hash) under the audit key; None on rows written before tags existed.
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)


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


def audit_mac_message(seq: int, hash_: str) -> bytes:
    """The bytes an audit row's tag covers: its sequence number and its chained hash (which
    covers the row's content and, through ``prev_hash``, every row before it)."""
    return canonical({"kind": "atelier-audit-row", "seq": seq, "hash": hash_})


def _head_mac_message(log_id: str, seq: int, hash_: str) -> bytes:
    return canonical({"kind": "atelier-audit-head", "log": log_id, "seq": seq, "hash": hash_})


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory or a non-SQLite database."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite"):
        return None
    db = u.database or ""
    if db in ("", ":memory:") or u.query.get("mode") == "memory":
        return None
    return Path(db.removeprefix("file:"))


def _in_memory(url: str) -> bool:
    return make_url(url).drivername.startswith("sqlite") and _sqlite_file(url) is None


def default_trust_dir(url: str) -> Path | None:
    """Where a database's audit key and anchored head live unless the caller says otherwise:
    ``$ATELIER_STATE_DIR/trust`` when that variable is set; else, for a SQLite file, the folder
    ``<file>.trust`` beside it; for another database ``$XDG_STATE_HOME/atelier/trust`` (by
    default ``~/.local/state/atelier/trust``). None (a key in memory, no head file) for an
    in-memory SQLite database. Every process that writes one database must find the same folder.
    """
    if _in_memory(url):
        return None
    state = os.environ.get(STATE_DIR_ENV)
    if state:
        return Path(state) / "trust"
    db = _sqlite_file(url)
    if db is not None:
        return db.parent / f"{db.name}.trust"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "atelier" / "trust"


def _log_id(url: str) -> str:
    """What the head file is anchored to: the SQLite file's absolute path, else the URL
    without its password."""
    db = _sqlite_file(url)
    if db is not None:
        return str(db.resolve())
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class AuditHead:
    """The newest audit row as anchored outside the database: its sequence number and hash,
    and where the anchor is kept (a head file, or ``memory``)."""

    seq: int
    hash: str
    where: str


@dataclass(frozen=True)
class AuditReport:
    """Result of :meth:`Store.verify_audit`: ``ok``, rows checked, and what is wrong where;
    the anchored ``head`` (None if there is none) and ``notes`` that are not failures."""

    ok: bool
    rows: int
    problems: tuple[str, ...]
    head: AuditHead | None = None
    notes: tuple[str, ...] = ()


class Store:
    """All persistent state of the coordinator (see the module docstring). Thread-safe per call.

    ``trust_dir`` is the folder of the audit key and the anchored head file (default:
    :func:`default_trust_dir` of ``url``); it must lie outside the repository and be the same
    for every process that writes the database. ``Store(url)`` and ``Store(url, clock=...)``
    keep working as before. A database made before audit tags existed gets the column added.
    """

    def __init__(
        self,
        url: str = "sqlite:///atelier.db",
        clock: Any = time.time,
        *,
        trust_dir: Path | str | None = None,
    ) -> None:
        sqlite_file = _sqlite_file(url)
        connect_args: dict[str, Any] = {}
        if sqlite_file is not None and "timeout" not in make_url(url).query:
            # Writers queue on SQLite's lock (BEGIN IMMEDIATE); give a busy site time to drain.
            connect_args["timeout"] = 30.0
        self.engine = create_engine(url, connect_args=connect_args)
        self.clock = clock
        self.where = str(sqlite_file) if sqlite_file is not None else make_url(url).render_as_string(hide_password=True)
        if self.engine.dialect.name == "postgresql":
            self._postgres_schema()
        else:
            _Base.metadata.create_all(self.engine)
        self._add_mac_column()
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
        folder = Path(trust_dir) if trust_dir is not None else default_trust_dir(url)
        #: The audit key (``audit.key``) lives here; in memory for an in-memory database.
        self.keys = KeyStore(folder)
        self._log_id = _log_id(url)
        #: The file holding the anchored head (None: the head is kept in memory).
        self.head_file: Path | None = None
        if folder is not None:
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", sqlite_file.name if sqlite_file else make_url(url).database or "db")
            digest = hashlib.sha256(self._log_id.encode()).hexdigest()[:12]
            self.head_file = folder / f"audit-head.{stem}.{digest}.json"
        self._memory_head: dict[str, Any] | None = None
        self._begin_lock = threading.Lock()
        self._head_lock = threading.Lock()

    def _postgres_schema(self) -> None:
        """Tables, and triggers that refuse to update or delete audit rows, made once under a
        lock: several processes may open a new database at the same moment."""
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            _Base.metadata.create_all(conn)
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION atelier_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
                )
            )
            for op in ("UPDATE", "DELETE"):
                conn.execute(
                    text(
                        f"CREATE OR REPLACE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit "
                        "FOR EACH ROW EXECUTE FUNCTION atelier_audit_append_only()"
                    )
                )

    def _add_mac_column(self) -> None:
        """Give an audit table made before tags existed its ``mac`` column (old rows keep NULL)."""
        if "mac" in {c["name"] for c in inspect(self.engine).get_columns("audit")}:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(text("ALTER TABLE audit ADD COLUMN mac VARCHAR(64)"))
        except DBAPIError as exc:
            # Another process may have added it meanwhile; anything else is for a person to fix.
            if "mac" not in {c["name"] for c in inspect(self.engine).get_columns("audit")}:
                raise StoreError(
                    f"the audit table of {self.where} has no mac column and it cannot be added ({exc.orig}); "
                    "add it with: ALTER TABLE audit ADD COLUMN mac VARCHAR(64)"
                ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error. After a commit that
        appended to the audit log, the new head is anchored outside the database."""
        with self._sessions.begin() as s:
            yield s
        head = s.info.get("audit_head")
        if head is not None:
            self._anchor(*head)

    # ------------------------------------------------------------------ audit

    def _serialise_appends(self, s: Session) -> None:
        """Hold the database's write lock for the rest of this transaction, so that reading the
        last row and appending the next one cannot interleave with another writer (another
        thread, another process). Once per transaction."""
        if s.info.get("audit_locked"):
            return
        conn = s.connection()
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            dbapi = conn.connection.dbapi_connection
            # pysqlite opens a transaction at the first write only; a transaction that has
            # written holds SQLite's write lock already. Otherwise take it now. Threads queue
            # on the process lock rather than all polling SQLite's lock.
            if not getattr(dbapi, "in_transaction", False):
                with self._begin_lock:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
        s.info["audit_locked"] = True

    def _audit(self, s: Session, actor: str, action: str, plan_id: int | None, payload: dict[str, Any]) -> None:
        self._serialise_appends(s)
        last = s.execute(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1).with_for_update()).scalar_one_or_none()
        seq = 1 if last is None else last.seq + 1
        prev = GENESIS if last is None else last.hash
        at = self.clock()
        h = audit_hash(prev, seq, at, actor, action, plan_id, payload)
        tag = self.keys.sign(AUDIT_KEY, audit_mac_message(seq, h))
        s.add(
            AuditRow(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                plan_id=plan_id,
                payload=payload,
                prev_hash=prev,
                hash=h,
                mac=tag,
            )
        )
        s.flush()
        s.info["audit_head"] = (seq, h)

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

    # The anchored head: {"log", "seq", "hash", "mac"} in ``head_file`` (or in memory).

    def _read_head(self) -> dict[str, Any] | None:
        """The anchored head as stored (None if there is none); ValueError if unreadable."""
        if self.head_file is None:
            return self._memory_head
        try:
            data = json.loads(self.head_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"head file {self.head_file} cannot be read: {exc}") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("seq"), int)
            or not isinstance(data.get("hash"), str)
            or not isinstance(data.get("mac"), str)
        ):
            raise ValueError(f"head file {self.head_file} is not a head file")
        return data

    def _head_tag_ok(self, data: dict[str, Any]) -> bool:
        return self.keys.verify(AUDIT_KEY, _head_mac_message(self._log_id, data["seq"], data["hash"]), data["mac"])

    def _in_log(self, seq: int, hash_: str) -> bool:
        with self._sessions() as s:
            return s.execute(select(AuditRow.hash).where(AuditRow.seq == seq)).scalar_one_or_none() == hash_

    def _anchor(self, seq: int, hash_: str) -> None:
        """Move the anchored head forward to (seq, hash_), after the commit that wrote that row.
        It only moves forward, and not at all while the head it would replace is no longer in
        the log (rows deleted or rewritten): that head is kept as evidence for ``verify``."""
        tag = self.keys.sign(AUDIT_KEY, _head_mac_message(self._log_id, seq, hash_))
        data = {"log": self._log_id, "seq": seq, "hash": hash_, "mac": tag}
        with self._head_lock:
            if self.head_file is None:
                if self._memory_head is None or self._memory_head["seq"] < seq:
                    self._memory_head = data
                return
            try:
                self.head_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with open(self.head_file.with_suffix(".lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # one writer across processes
                    try:
                        cur = self._read_head()
                    except ValueError as exc:
                        _log.error("audit head not moved: %s; run `atelier audit verify`", exc)
                        return
                    if cur is not None and cur["seq"] >= seq:
                        return
                    if cur is not None and not (self._head_tag_ok(cur) and self._in_log(cur["seq"], cur["hash"])):
                        _log.error(
                            "audit head not moved: the anchored row %d is no longer in the log %s as anchored; "
                            "run `atelier audit verify`",
                            cur["seq"],
                            self.where,
                        )
                        return
                    write_atomic(self.head_file, (json.dumps(data, indent=1) + "\n").encode())
            except (OSError, TrustError) as exc:
                # The row is committed; failing the caller now would hide that. verify will
                # show rows after the anchored head.
                _log.error("cannot anchor audit row %d of %s in %s: %s", seq, self.where, self.head_file, exc)

    def head(self) -> AuditHead | None:
        """The anchored head (newest row's sequence number and hash), None if nothing is
        anchored yet. Raises :class:`StoreError` if the head file cannot be read."""
        try:
            data = self._read_head()
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if data is None:
            return None
        return AuditHead(data["seq"], data["hash"], str(self.head_file) if self.head_file else "memory")

    def verify_audit(self) -> AuditReport:
        """Check the audit log against its chain, its tags and the anchored head; report every
        row edited, missing, out of order, written without the key, and a missing tail."""
        problems: list[str] = []
        notes: list[str] = []
        # The head first, then the rows: a writer anchors its head after its commit, so a head
        # read before the rows never runs ahead of them, even while people keep working.
        try:
            anchored: dict[str, Any] | ValueError | None = self._read_head()
        except ValueError as exc:
            anchored = exc
        rows = self.audit_rows()
        key_problem = ""
        try:
            key: bytes | None = self.keys.key(AUDIT_KEY, create=False)
        except TrustError as exc:
            key, key_problem = None, str(exc)
        prev = GENESIS
        expected_seq = 1
        untagged = 0
        tagged = False
        for r in rows:
            if r.seq != expected_seq:
                problems.append(f"row {expected_seq}: missing (the next row is {r.seq}); rows were deleted")
            if r.prev_hash != prev:
                problems.append(f"row {r.seq}: does not follow the row before it (chain broken)")
            h = audit_hash(r.prev_hash, r.seq, r.at, r.actor, r.action, r.plan_id, r.payload)
            if h != r.hash:
                problems.append(f"row {r.seq}: its content does not match its hash; the row was edited")
            if r.mac is None:
                if tagged:
                    problems.append(f"row {r.seq}: has no tag although rows before it have; written without the key")
                else:
                    untagged += 1
            else:
                tagged = True
                if key is not None and not self.keys.verify(AUDIT_KEY, audit_mac_message(r.seq, r.hash), r.mac):
                    problems.append(
                        f"row {r.seq}: its tag does not match; the row was written or re-chained without the audit key"
                    )
            prev, expected_seq = r.hash, r.seq + 1
        if key is None and tagged:
            problems.append(f"the rows' tags cannot be checked: {key_problem}")
        if untagged:
            notes.append(f"rows 1 to {untagged} were written before audit tags; the chain alone protects them")
        head = self._verify_head(anchored, rows, key, problems, notes)
        return AuditReport(not problems, len(rows), tuple(problems), head, tuple(notes))

    def _verify_head(
        self,
        data: dict[str, Any] | ValueError | None,
        rows: Sequence[AuditRow],
        key: bytes | None,
        problems: list[str],
        notes: list[str],
    ) -> AuditHead | None:
        where = str(self.head_file) if self.head_file is not None else "memory"
        if isinstance(data, ValueError):
            problems.append(f"{data}; a deleted tail cannot be ruled out")
            return None
        last = rows[-1].seq if rows else 0
        if data is None:
            if any(r.mac is not None for r in rows):
                problems.append(
                    f"no anchored head at {where}: a deleted tail cannot be ruled out (if the database was "
                    "moved, give the trust folder it was used with)"
                )
            elif rows:
                notes.append("the log is not anchored yet (the next entry anchors it)")
            return None
        head = AuditHead(data["seq"], data["hash"], where)
        if key is not None and not self._head_tag_ok(data):
            problems.append(f"the head file {where} was not written with the audit key (its tag does not match)")
        if data.get("log") != self._log_id:
            problems.append(f"the head file {where} anchors another log ({data.get('log')})")
        by_seq = {r.seq: r for r in rows}
        if head.seq > last:
            gone = f"row {head.seq} was" if last + 1 == head.seq else f"rows {last + 1} to {head.seq} were"
            problems.append(f"the log ends at row {last} but the anchored head is row {head.seq}: {gone} deleted")
        elif head.seq in by_seq and by_seq[head.seq].hash != head.hash:
            problems.append(f"row {head.seq}: its hash is not the anchored head's; the log was rewritten")
        if last > head.seq:
            notes.append(
                f"{last - head.seq} rows after the anchored head (tag-checked; a writer stopped before anchoring)"
            )
        if problems:
            notes.append(
                f"if the database was replaced on purpose, move {where} away; the next entry anchors the new log"
            )
        return head

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
        """Move a plan to ``status`` (only along :data:`~llm_coordinator.status.TRANSITIONS`), with
        reasons, audited."""
        with self.session() as s:
            self._set_status(s, plan_id, status, actor=actor, reasons=reasons)

    def _set_status(
        self, s: Session, plan_id: int, status: PlanStatus, *, actor: str, reasons: Sequence[str] = ()
    ) -> None:
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
        v = self.version(plan_id)
        return None if v is None else Plan.model_validate(v.body)

    def version(self, plan_id: int) -> PlanVersion | None:
        """The stored current version (plan JSON and guardrail findings)."""
        found: PlanVersion | None = self._current(PlanVersion, plan_id)
        return found

    def _current(self, table: Any, plan_id: int) -> Any:
        """The newest row of ``table`` for the plan's current version (None if there is none)."""
        with self.session() as s:
            row = self._row(s, plan_id)
            return s.execute(
                select(table)
                .where(table.plan_id == plan_id, table.content_hash == row.content_hash)
                .order_by(table.id.desc())
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
        found: RehearsalRow | None = self._current(RehearsalRow, plan_id)
        return found

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
        """Record an operator's confirmation of a hazardous step (again: renewed, audited)."""
        with self.session() as s:
            self._serialise_appends(s)  # two operators at once: one inserts, the other renews
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
            else:
                # Confirming again renews it (a confirmation expires: ApprovalGate.confirmation_ttl_s).
                exists.operator, exists.created_at = operator, self.clock()
            self._audit(s, operator, "operator_confirmed", plan_id, {"content_hash": content_hash, "step": step_id})

    def confirmation_times(self, plan_id: int, content_hash: str) -> dict[str, tuple[str, float]]:
        """Step id -> (operator, when confirmed), for one exact plan version."""
        with self.session() as s:
            rows = s.execute(
                select(ConfirmationRow).where(
                    ConfirmationRow.plan_id == plan_id, ConfirmationRow.content_hash == content_hash
                )
            ).scalars()
            return {r.step_id: (r.operator, r.created_at) for r in rows}

    def confirmations(self, plan_id: int, content_hash: str) -> dict[str, str]:
        """Step id -> operator, for one exact plan version."""
        return {step: who for step, (who, _) in self.confirmation_times(plan_id, content_hash).items()}

    # ------------------------------------------------------------------ execution progress and feedback

    def progress(self, plan_id: int, content_hash: str) -> dict[str, str]:
        """Step id -> status (running, done, failed) for one exact plan version."""
        with self.session() as s:
            rows = s.execute(
                select(ProgressRow).where(ProgressRow.plan_id == plan_id, ProgressRow.content_hash == content_hash)
            ).scalars()
            return {r.step_id: r.status for r in rows}

    def _progress_row(self, s: Session, plan_id: int, content_hash: str, step_id: str) -> ProgressRow | None:
        return s.execute(
            select(ProgressRow).where(
                ProgressRow.plan_id == plan_id, ProgressRow.content_hash == content_hash, ProgressRow.step_id == step_id
            )
        ).scalar_one_or_none()

    def progress_detail(self, plan_id: int, content_hash: str, step_id: str) -> str:
        """The detail recorded with a step's latest status ("" if none)."""
        with self.session() as s:
            row = self._progress_row(s, plan_id, content_hash, step_id)
            return row.detail if row is not None else ""

    def set_progress(self, plan_id: int, content_hash: str, step_id: str, status: str, detail: str = "") -> None:
        """Record a step's status (committed before the executor moves on), audited."""
        now = self.clock()
        with self.session() as s:
            row = self._progress_row(s, plan_id, content_hash, step_id)
            if row is None:
                row = ProgressRow(plan_id=plan_id, content_hash=content_hash, step_id=step_id, status=status)
                s.add(row)
            row.status, row.detail = status, detail[:1000]
            if status == "running":
                row.started_at = now
            else:
                row.finished_at = now
            self._audit(s, "executor", f"step:{status}", plan_id, {"step": step_id, "detail": detail[:300]})

    # ------------------------------------------------------------------ work-order jobs

    def add_job(self, body: dict[str, Any], state: str) -> int:
        """A new job; returns its id (never reused, across restarts too)."""
        now = self.clock()
        with self.session() as s:
            row = JobRow(state=state, body=body, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return row.id

    def update_job(self, job_id: int, body: dict[str, Any], state: str, plan_id: int | None) -> None:
        """Record where a job stands (committed before this returns)."""
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise StoreError(f"there is no job {job_id}")
            row.body, row.state, row.plan_id, row.updated_at = body, state, plan_id, self.clock()

    def job(self, job_id: int) -> JobRow | None:
        """One job, or None."""
        with self.session() as s:
            return s.get(JobRow, job_id)

    def jobs(self, limit: int = 200, states: Sequence[str] | None = None) -> list[JobRow]:
        """The newest jobs first (only those in ``states`` when given)."""
        with self.session() as s:
            q = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
            if states is not None:
                q = q.where(JobRow.state.in_(list(states)))
            return list(s.execute(q).scalars())

    def add_feedback(self, plan_id: int | None, kind: str, text_: str) -> None:
        """Keep a reason or an outcome for the next plans."""
        with self.session() as s:
            s.add(FeedbackRow(plan_id=plan_id, kind=kind, text=text_[:2000], created_at=self.clock()))

    def feedback_for(self, plan_id: int) -> list[str]:
        """The feedback kept for one plan (rejection reasons, refused steps), oldest first."""
        with self.session() as s:
            rows = s.execute(select(FeedbackRow).where(FeedbackRow.plan_id == plan_id).order_by(FeedbackRow.id))
            return [f"{r.kind}: {r.text}" for r in rows.scalars()]

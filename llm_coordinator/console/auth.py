"""People of the console: users, roles, what each role may do, password hashes and sessions.

Users and sessions live in two tables (``console_users``, ``console_sessions``) of the same
SQLAlchemy database as plans and the audit log, so one SQLite file (or one PostgreSQL URL)
holds a site's state. Passwords are stored as argon2id hashes only. A session is a random
token handed to the browser in an HttpOnly cookie; the database keeps its SHA-256, never the
token, and the session ends at a fixed expiry (``ttl_s`` after login) or at logout.

Every method blocks on the database (milliseconds on SQLite); call them from a worker thread
when inside an event loop (FastAPI runs plain ``def`` dependencies in its thread pool).
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, Float, ForeignKey, String, create_engine, delete, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Role(enum.StrEnum):
    """What a person does at the cell; it decides what the console lets them do."""

    ENGINEER = "engineer"
    SUPERVISOR = "supervisor"
    OPERATOR = "operator"


class Action(enum.StrEnum):
    """Everything the console lets a person do. Viewing needs only a login."""

    VIEW = "view"
    SUBMIT_WORK_ORDER = "submit_work_order"
    APPROVE_PLAN = "approve_plan"
    REJECT_PLAN = "reject_plan"
    CONFIRM_STEP = "confirm_step"
    REFUSE_STEP = "refuse_step"
    TRIP_ESTOP = "trip_estop"
    RESET_ESTOP = "reset_estop"


#: Who may do what (static, written by people, like the rest of the safety case).
#: Anyone logged in may trip an e-stop: stopping is always allowed. Only an operator, who can
#: see the robot, may reset one. Approving is the supervisor's; confirming a hazardous step is
#: the operator's; work orders come from engineers and supervisors.
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.VIEW: frozenset(Role),
    Action.SUBMIT_WORK_ORDER: frozenset({Role.ENGINEER, Role.SUPERVISOR}),
    Action.APPROVE_PLAN: frozenset({Role.SUPERVISOR}),
    Action.REJECT_PLAN: frozenset({Role.SUPERVISOR}),
    Action.CONFIRM_STEP: frozenset({Role.OPERATOR}),
    Action.REFUSE_STEP: frozenset({Role.OPERATOR}),
    Action.TRIP_ESTOP: frozenset(Role),
    Action.RESET_ESTOP: frozenset({Role.OPERATOR}),
}


def allowed(role: Role, action: Action) -> bool:
    """True when a person of ``role`` may perform ``action``."""
    return role in PERMISSIONS[action]


USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
MIN_PASSWORD_CHARS = 8


class AuthError(Exception):
    """A user could not be created or logged in; the message is safe to show to the person."""


class _Base(DeclarativeBase):
    pass


class _UserRow(_Base):
    __tablename__ = "console_users"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_s: Mapped[float] = mapped_column(Float)
    disabled: Mapped[bool] = mapped_column(default=False)


class _SessionRow(_Base):
    __tablename__ = "console_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("console_users.name", ondelete="CASCADE"), index=True)
    created_s: Mapped[float] = mapped_column(Float)
    expires_s: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True)
class User:
    """A logged-in person."""

    name: str
    role: Role

    def may(self, action: Action) -> bool:
        """True when this person may perform ``action``."""
        return allowed(self.role, action)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on and may be used from worker threads."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _fk_on(dbapi_conn: object, _record: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url)


class UserStore:
    """Users, password hashes and login sessions in a SQLAlchemy database.

    ``clock`` returns wall-clock seconds (``time.time`` by default; tests pass their own to
    expire sessions without waiting).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 8 * 3600.0,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        # argon2id with the library's defaults (RFC 9106 low-memory profile).
        self._hasher = hasher or PasswordHasher()
        _Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Verifying against a dummy hash for unknown names keeps login time the same for both.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    @classmethod
    def from_url(cls, url: str, **kwargs: float | Callable[[], float]) -> UserStore:
        """A store on a database URL such as ``sqlite:///atelier.db``."""
        return cls(make_engine(url), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, role: Role | str, password: str, *, replace: bool = False) -> User:
        """Create (or with ``replace``, update) a user; raise :class:`AuthError` on bad input."""
        if not USERNAME_RE.match(name):
            raise AuthError(
                f"user name {name!r} must be 2 to 32 characters: lower-case letters, digits, '_', '.', '-', "
                "starting with a letter"
            )
        try:
            r = Role(role)
        except ValueError:
            raise AuthError(f"unknown role {role!r}; roles: {', '.join(x.value for x in Role)}") from None
        if len(password) < MIN_PASSWORD_CHARS:
            raise AuthError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
        with self._sessions.begin() as db:
            row = db.get(_UserRow, name)
            if row is not None and not replace:
                raise AuthError(f"user {name!r} exists already")
            if row is None:
                db.add(
                    _UserRow(name=name, role=r.value, password_hash=self._hasher.hash(password), created_s=self.clock())
                )
            else:
                row.role, row.password_hash, row.disabled = r.value, self._hasher.hash(password), False
                db.execute(delete(_SessionRow).where(_SessionRow.user == name))
        return User(name, r)

    def users(self) -> list[User]:
        """Every enabled user, by name."""
        with self._sessions() as db:
            rows = db.scalars(select(_UserRow).where(_UserRow.disabled.is_(False)).order_by(_UserRow.name))
            return [User(row.name, Role(row.role)) for row in rows]

    def verify(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (same time for unknown names)."""
        with self._sessions() as db:
            row = db.get(_UserRow, name)
            stored = row.password_hash if row is not None and not row.disabled else self._dummy_hash
            try:
                self._hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if row is None or row.disabled:
                return None
            return User(row.name, Role(row.role))

    # ------------------------------------------------------------------ sessions

    def login(self, name: str, password: str) -> tuple[User, str]:
        """Check the password and open a session; return the user and the session token."""
        user = self.verify(name, password)
        if user is None:
            raise AuthError("unknown user name or wrong password")
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._sessions.begin() as db:
            db.execute(delete(_SessionRow).where(_SessionRow.expires_s <= now))
            db.add(_SessionRow(token_sha256=_digest(token), user=user.name, created_s=now, expires_s=now + self.ttl_s))
        return user, token

    def session_user(self, token: str) -> User | None:
        """The user of a live session, or None when the token is unknown or expired."""
        if not token:
            return None
        with self._sessions() as db:
            row = db.get(_SessionRow, _digest(token))
            if row is None or row.expires_s <= self.clock():
                return None
            user = db.get(_UserRow, row.user)
            if user is None or user.disabled:
                return None
            return User(user.name, Role(user.role))

    def logout(self, token: str) -> None:
        """End a session; unknown tokens are ignored."""
        with self._sessions.begin() as db:
            db.execute(delete(_SessionRow).where(_SessionRow.token_sha256 == _digest(token)))

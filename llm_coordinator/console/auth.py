"""People of the console: users, roles, what each role may do, password hashes and sessions.

Users and sessions live in two tables (``console_users``, ``console_sessions``) of the same
SQLAlchemy database as plans and the audit log, so one SQLite file (or one PostgreSQL URL)
holds a site's state. Passwords are stored as argon2id hashes only. A session is a random
token handed to the browser in an HttpOnly cookie; the database keeps its SHA-256, never the
token, and the session ends at a fixed expiry (``ttl_s`` after login) or at logout.

Failed logins are limited per user name (:class:`LoginLimit`, :class:`LoginThrottle`): after
``max_failures`` failures within ``window_s``, every attempt for that name is refused for
``lockout_s`` without checking the password. Names that do not exist are counted and locked
the same way, so the answers never tell whether a user exists. The counts are kept in memory,
not in the database: the console is one process (the form and the API share one store), a
count means nothing after ``window_s`` anyway, a guesser cannot restart the console to clear
them, and no table has to change. Several console processes over one database would each
keep their own counts; move :class:`LoginThrottle` into a table then.

Every method blocks on the database (milliseconds on SQLite); call them from a worker thread
when inside an event loop (FastAPI runs plain ``def`` dependencies in its thread pool).
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import secrets
import threading
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


class LoginFailed(AuthError):
    """Unknown user name or wrong password; ``failures`` counts this name's recent failures."""

    def __init__(self, message: str, failures: int) -> None:
        super().__init__(message)
        self.failures = failures


class LoginLocked(AuthError):
    """Too many failed logins for a user name: refused for ``retry_after_s`` more seconds.

    ``started`` is True for the failure that began the lock-out (its password was checked and
    wrong); False for an attempt refused during the lock-out (its password was not checked).
    """

    def __init__(self, message: str, retry_after_s: float, *, started: bool, failures: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s, self.started, self.failures = retry_after_s, started, failures


def _duration_words(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60.0))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


@dataclass(frozen=True)
class LoginLimit:
    """How many failed logins a user name may have: ``max_failures`` within ``window_s``
    seconds, then every attempt for that name is refused for ``lockout_s`` seconds."""

    max_failures: int = 5
    window_s: float = 15 * 60.0
    lockout_s: float = 15 * 60.0

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be >= 1")
        if self.window_s <= 0 or self.lockout_s <= 0:
            raise ValueError("window_s and lockout_s must be > 0")


class LoginThrottle:
    """Failed logins per user name, in memory, safe to use from several threads.

    Every name is tracked the same way whether or not such a user exists. Entries whose
    failures have left the window and whose lock-out has ended are dropped now and then, so
    guesses at many names do not grow memory without bound.
    """

    def __init__(self, limit: LoginLimit, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._swept = clock()

    def locked_for(self, name: str) -> float:
        """Seconds left of ``name``'s lock-out (0 when it may try)."""
        now = self.clock()
        with self._lock:
            until = self._locked_until.get(name, 0.0)
            if until <= now:
                self._locked_until.pop(name, None)
                return 0.0
            return until - now

    def failed(self, name: str) -> tuple[int, float]:
        """Count a failure of ``name``; return (failures in the window, lock-out seconds).

        The lock-out is 0 unless this failure reached ``max_failures``; then the lock-out
        starts now and the count starts again from zero when it ends.
        """
        now = self.clock()
        limit = self.limit
        with self._lock:
            self._sweep(now)
            recent = [t for t in self._failures.get(name, []) if t > now - limit.window_s]
            recent.append(now)
            if len(recent) >= limit.max_failures:
                self._failures.pop(name, None)
                self._locked_until[name] = now + limit.lockout_s
                return len(recent), limit.lockout_s
            self._failures[name] = recent
            return len(recent), 0.0

    def succeeded(self, name: str) -> None:
        """Forget ``name``'s failures (after a good login)."""
        with self._lock:
            self._failures.pop(name, None)

    def _sweep(self, now: float) -> None:
        if now - self._swept < 60.0 and len(self._failures) < 10_000:
            return
        self._swept = now
        horizon = now - self.limit.window_s
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > horizon}
        self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}


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
    expire sessions and lock-outs without waiting). ``login_limit`` limits failed logins per
    user name (5 within 15 minutes, then 15 minutes locked out, by default).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 8 * 3600.0,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        login_limit: LoginLimit | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        self.throttle = LoginThrottle(login_limit or LoginLimit(), clock)
        # argon2id with the library's defaults (RFC 9106 low-memory profile).
        self._hasher = hasher or PasswordHasher()
        _Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Verifying against a dummy hash for unknown names keeps login time the same for both.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    @classmethod
    def from_url(cls, url: str, **kwargs: float | Callable[[], float] | LoginLimit) -> UserStore:
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

    def set_login_limit(self, limit: LoginLimit) -> None:
        """Limit failed logins by ``limit`` from now on (the counts so far are forgotten)."""
        self.throttle = LoginThrottle(limit, self.clock)

    def login(self, name: str, password: str) -> tuple[User, str]:
        """Check the password and open a session; return the user and the session token.

        Raise :class:`LoginFailed` for an unknown name or a wrong password, and
        :class:`LoginLocked` when this failure used up the name's allowance or the name is
        locked out already (then the password is not checked). The messages are the same for
        names that exist and names that do not.
        """
        throttle = self.throttle
        left = throttle.locked_for(name)
        if left > 0:
            raise LoginLocked(
                f"too many failed logins for this user name; try again in {_duration_words(left)}",
                left,
                started=False,
            )
        user = self.verify(name, password)
        if user is None:
            failures, locked = throttle.failed(name)
            if locked > 0:
                raise LoginLocked(
                    "unknown user name or wrong password, and too many failed logins for this user name; "
                    f"try again in {_duration_words(locked)}",
                    locked,
                    started=True,
                    failures=failures,
                )
            raise LoginFailed("unknown user name or wrong password", failures)
        throttle.succeeded(name)
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

"""People of the console: users, roles, what each role may do, password hashes and sessions.

Users and sessions live in two tables (``console_users``, ``console_sessions``) of the same
SQLAlchemy database as plans and the audit log, so one SQLite file (or one PostgreSQL URL)
holds a site's state. Passwords are stored as argon2id hashes only. A session is a random
token handed to the browser in an HttpOnly cookie; the database keeps its SHA-256, never the
token, and the session ends at a fixed expiry (``ttl_s`` after login) or at logout.

Failed logins are limited so that the limit cannot be turned against the people it protects
(:class:`LoginLimit`, :class:`LoginThrottle`). Failures are counted per client address (an IPv4
address, an IPv6 /64) and per (user name, address); past an allowance every further failure
makes that address (or that name from that address) wait longer, doubling up to a ceiling. A
person's correct password from an address that has not failed is always accepted: somebody who
lacks the password cannot lock anybody out, only their own address. Spraying one password over
many names is limited per address (failures and distinct names). Names that do not exist are
counted the same way, so the answers never tell whether a user exists. Failures are not written
one by one to the audit log: :class:`LoginThrottle` says which to write (an address's first
failure and first lock-out of a window) and keeps a :class:`LoginReport` of the rest, to be
written as one summary row when the window closes (:meth:`LoginThrottle.due_reports`).

The counts are kept in memory, not in the database: the console is one process (the form and
the API share one store), a count means nothing after ``window_s`` anyway, a guesser cannot
restart the console to clear them, and no table has to change. Several console processes over
one database would each keep their own counts; move :class:`LoginThrottle` into a table then.
Behind a reverse proxy the client address is the proxy's unless the server is told to trust
its ``X-Forwarded-For`` (uvicorn trusts it from 127.0.0.1 by default).

A session's CSRF token (:func:`csrf_token`) is derived from the session token with HMAC, so
nothing more is stored: a page that knows the token proves it was served to the session's
browser; a page of another site cannot read it.

Every method blocks on the database (milliseconds on SQLite); call them from a worker thread
when inside an event loop (FastAPI runs plain ``def`` dependencies in its thread pool).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    OVERRULE_INSPECTION = "overrule_inspection"


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
    # The people at the line who can look at the part: its operator and the supervisor.
    Action.OVERRULE_INSPECTION: frozenset({Role.OPERATOR, Role.SUPERVISOR}),
}


USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
MIN_PASSWORD_CHARS = 8


class AuthError(Exception):
    """A user could not be created or logged in; the message is safe to show to the person."""


class LoginFailed(AuthError):
    """Unknown user name or wrong password.

    ``failures`` counts this name's recent failures from this address. ``audit`` is True when
    this failure should be written to the audit log on its own (the first of its address's
    window); the others are summed up in a :class:`LoginReport`.
    """

    def __init__(self, message: str, failures: int, *, audit: bool = True) -> None:
        super().__init__(message)
        self.failures, self.audit = failures, audit


class LoginLocked(AuthError):
    """Too many failed logins: refused for ``retry_after_s`` more seconds.

    ``scope`` is ``"user"`` when this user name is held back at this address, ``"address"``
    when the whole address is. ``started`` is True for the failure that began the delay (its
    password was checked and wrong); False for an attempt refused during it (its password was
    not checked). ``audit`` / ``audit_lockout``: write this failure / this lock-out to the
    audit log on its own (the rest go into a :class:`LoginReport`).
    """

    def __init__(
        self,
        message: str,
        retry_after_s: float,
        *,
        started: bool,
        failures: int = 0,
        scope: str = "user",
        audit: bool = False,
        audit_lockout: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after_s, self.started, self.failures = retry_after_s, started, failures
        self.scope, self.audit, self.audit_lockout = scope, audit, audit_lockout


def _duration_words(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60.0))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def client_key(host: str | None) -> str:
    """The address a login's failures are counted under: an IPv4 address, the /64 of an IPv6
    address (one subscriber usually holds a whole /64; an IPv4-mapped address counts as the
    IPv4 one), the host text itself when it is no address (test clients), ``"unknown"`` when
    the server does not know."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class LoginLimit:
    """How many failed logins are allowed before the answers are delayed, and how long.

    ``max_failures`` failures of one user name from one address within ``window_s`` seconds, or
    ``max_address_failures`` failures (or ``max_address_names`` different names failed) from
    one address, then every attempt of that name from that address (or of any name from that
    address) is refused for ``lockout_s`` seconds, doubling with each further failure within
    the window up to ``max_lockout_s``. Other addresses are never affected.
    """

    max_failures: int = 5
    window_s: float = 15 * 60.0
    lockout_s: float = 60.0
    max_lockout_s: float = 15 * 60.0
    max_address_failures: int = 20
    max_address_names: int = 10

    def __post_init__(self) -> None:
        if min(self.max_failures, self.max_address_failures, self.max_address_names) < 1:
            raise ValueError("max_failures, max_address_failures and max_address_names must be >= 1")
        if self.window_s <= 0 or self.lockout_s <= 0:
            raise ValueError("window_s and lockout_s must be > 0")
        if self.max_lockout_s < self.lockout_s:
            raise ValueError("max_lockout_s must be >= lockout_s")

    def delay_s(self, failures: int, allowed: int) -> float:
        """The wait after ``failures`` failures where ``allowed`` are allowed: 0 below the
        allowance, then ``lockout_s`` doubling per further failure, at most ``max_lockout_s``."""
        if failures < allowed:
            return 0.0
        return min(self.max_lockout_s, self.lockout_s * 2.0 ** min(failures - allowed, 40))


@dataclass(frozen=True)
class LoginReport:
    """The failed logins of one address (or of many, once too many addresses failed at once)
    in one window, to be written as one audit row: ``actor`` is the one name tried, else
    ``"?"``; ``detail`` says how many, which names, lock-outs and refused attempts."""

    address: str
    opened_s: float
    closed_s: float
    failures: int
    refused: int
    lockouts: int
    names: tuple[tuple[str, int], ...]
    more_names: int

    @property
    def actor(self) -> str:
        return self.names[0][0] if len(self.names) == 1 and not self.more_names else "?"

    @property
    def detail(self) -> str:
        def utc(t: float) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))

        shown = ", ".join(f"{name} {n}" for name, n in self.names)
        if self.more_names:
            shown += f", and {self.more_names} more"
        count = len(self.names) + self.more_names
        return (
            f"from {self.address} between {utc(self.opened_s)} and {utc(self.closed_s)}: "
            f"{self.failures} failed login{'s' if self.failures != 1 else ''} for {count} user "
            f"name{'s' if count != 1 else ''} ({shown}); {self.lockouts} lock-out{'s' if self.lockouts != 1 else ''} "
            f"began; {self.refused} attempt{'s' if self.refused != 1 else ''} refused while held back"
        )


@dataclass
class _Track:
    """Failed logins (times, or (time, name) pairs for an address) and the lock they set."""

    failures: list[Any]
    locked_until: float = 0.0


@dataclass
class _Report:
    opened_s: float
    failures: int = 0
    refused: int = 0
    lockouts: int = 0
    names: dict[str, int] | None = None
    more_names: int = 0


#: Names kept per report (the rest are counted only).
_REPORT_NAMES = 20
#: Addresses with a report of their own at once; failures from more go into one shared report.
_MAX_REPORTS = 200
_MANY = "(many addresses)"


class LoginThrottle:
    """Failed logins per address and per (user name, address), in memory, safe to use from
    several threads. ``clock`` returns wall-clock seconds.

    Every name is tracked the same way whether or not such a user exists. Entries whose
    failures have left the window and whose delay has ended are dropped now and then, so
    guesses at many names do not grow memory without bound.
    """

    def __init__(self, limit: LoginLimit, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Track] = {}
        self._addresses: dict[str, _Track] = {}
        self._reports: dict[str, _Report] = {}
        self._swept = clock()

    def locked_for(self, name: str, address: str = "") -> tuple[float, str]:
        """(seconds left, scope) of the delay on ``name`` from ``address``: scope ``"address"``
        when the whole address waits, ``"user"`` when this name from it does; (0, "") when it
        may try. A refused attempt is counted in the address's report."""
        now = self.clock()
        with self._lock:
            addr = self._addresses.get(address)
            pair = self._pairs.get((name, address))
            left_addr = addr.locked_until - now if addr is not None else 0.0
            left_pair = pair.locked_until - now if pair is not None else 0.0
            if left_addr <= 0 and left_pair <= 0:
                return 0.0, ""
            self._report(address, now).refused += 1
            return (left_addr, "address") if left_addr >= left_pair else (left_pair, "user")

    def failed(self, name: str, address: str = "") -> tuple[int, float, str, bool, bool]:
        """Count a failure of ``name`` from ``address``. Returns (failures of this name from
        this address in the window, delay that starts now in seconds (0: none), its scope
        ``"user"``/``"address"``, audit this failure on its own, audit this lock-out on its
        own)."""
        now = self.clock()
        limit = self.limit
        horizon = now - limit.window_s
        with self._lock:
            self._sweep(now)
            pair = self._pairs.setdefault((name, address), _Track([]))
            pair.failures = [t for t in pair.failures if t > horizon] + [now]
            addr = self._addresses.setdefault(address, _Track([]))
            addr.failures = [(t, n) for t, n in addr.failures if t > horizon] + [(now, name)]
            names = len({n for _, n in addr.failures})
            pair_delay = limit.delay_s(len(pair.failures), limit.max_failures)
            addr_delay = max(
                limit.delay_s(len(addr.failures), limit.max_address_failures),
                limit.delay_s(names, limit.max_address_names) if names >= limit.max_address_names else 0.0,
            )
            pair.locked_until = max(pair.locked_until, now + pair_delay) if pair_delay else pair.locked_until
            addr.locked_until = max(addr.locked_until, now + addr_delay) if addr_delay else addr.locked_until
            report = self._report(address, now)
            first = report.failures == 0
            report.failures += 1
            assert report.names is not None
            if name in report.names or len(report.names) < _REPORT_NAMES:
                report.names[name] = report.names.get(name, 0) + 1
            else:
                report.more_names += 1
            delay, scope = (addr_delay, "address") if addr_delay >= pair_delay else (pair_delay, "user")
            first_lockout = False
            if delay > 0:
                first_lockout = report.lockouts == 0
                report.lockouts += 1
            return len(pair.failures), delay, scope if delay > 0 else "", first, first_lockout

    def succeeded(self, name: str, address: str = "") -> None:
        """Forget the failures of ``name`` from ``address`` (after a good login). The address's
        own count stays: one good account does not wash a sprayer's address clean."""
        with self._lock:
            self._pairs.pop((name, address), None)

    def due_reports(self, *, everything: bool = False) -> list[LoginReport]:
        """The reports whose window has closed (every report with ``everything``), taken out:
        those with more to say than the individually audited first failure and lock-out."""
        now = self.clock()
        out: list[LoginReport] = []
        with self._lock:
            for address, r in list(self._reports.items()):
                closes = r.opened_s + self.limit.window_s
                if not everything and closes > now:
                    continue
                del self._reports[address]
                if r.failures <= 1 and r.refused == 0 and r.lockouts <= 1:
                    continue  # the first failure (and lock-out) were written on their own
                names = sorted((r.names or {}).items(), key=lambda kv: (-kv[1], kv[0]))
                out.append(
                    LoginReport(
                        address,
                        r.opened_s,
                        min(now, closes),
                        r.failures,
                        r.refused,
                        r.lockouts,
                        tuple(names),
                        r.more_names,
                    )
                )
        return out

    def _report(self, address: str, now: float) -> _Report:
        report = self._reports.get(address)
        if report is None:
            key = address if len(self._reports) < _MAX_REPORTS else _MANY
            report = self._reports.get(key)
            if report is None:
                report = self._reports[key] = _Report(now, names={})
        return report

    def _sweep(self, now: float) -> None:
        if now - self._swept < 60.0 and len(self._pairs) < 10_000 and len(self._addresses) < 10_000:
            return
        self._swept = now
        horizon = now - self.limit.window_s
        self._pairs = {k: v for k, v in self._pairs.items() if v.locked_until > now or v.failures[-1] > horizon}
        self._addresses = {
            k: v for k, v in self._addresses.items() if v.locked_until > now or v.failures[-1][0] > horizon
        }


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
        return self.role in PERMISSIONS[action]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _held_back(scope: str, seconds: float) -> str:
    what = "from your address" if scope == "address" else "for this user name from your address"
    return f"too many failed logins {what}; try again in {_duration_words(seconds)}"


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session token (which only the
    session's browser and the console know), so it needs no storage and ends with the session.
    Not the stored digest of the token, so the database does not give it away."""
    return hmac.new(session_token.encode("utf-8"), b"atelier-console-csrf-v1", hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, candidate: str) -> bool:
    """True when ``candidate`` is the CSRF token of ``session_token`` (constant time)."""
    if not session_token or not candidate:
        return False
    return hmac.compare_digest(csrf_token(session_token).encode("ascii"), candidate.encode("utf-8", "replace"))


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
    address and per (user name, address) (:class:`LoginLimit`'s defaults: 5 per name and 20 per
    address within 15 minutes, then a minute's wait doubling up to 15 minutes).
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

    def login(self, name: str, password: str, address: str = "") -> tuple[User, str]:
        """Check the password and open a session; return the user and the session token.

        ``address`` is the client's (:func:`client_key`); failures are limited per address and
        per (name, address) by :attr:`throttle`. Raise :class:`LoginFailed` for an unknown name
        or a wrong password, and :class:`LoginLocked` when this failure used up an allowance
        or the name or address is held back already (then the password is not checked). The
        messages are the same for names that exist and names that do not.
        """
        throttle = self.throttle
        left, scope = throttle.locked_for(name, address)
        if left > 0:
            raise LoginLocked(_held_back(scope, left), left, started=False, scope=scope)
        user = self.verify(name, password)
        if user is None:
            failures, delay, scope, first, first_lockout = throttle.failed(name, address)
            if delay > 0:
                raise LoginLocked(
                    f"unknown user name or wrong password, and {_held_back(scope, delay)}",
                    delay,
                    started=True,
                    failures=failures,
                    scope=scope,
                    audit=first,
                    audit_lockout=first_lockout,
                )
            raise LoginFailed("unknown user name or wrong password", failures, audit=first)
        throttle.succeeded(name, address)
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

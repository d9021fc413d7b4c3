"""Users, password hashes, sessions and the limit on failed logins."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from llm_coordinator.console.auth import (
    PERMISSIONS,
    Action,
    AuthError,
    LoginFailed,
    LoginLimit,
    LoginLocked,
    Role,
    UserStore,
    make_engine,
)
from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from plant.config import PlantDescription

from .conftest import FAST_HASHER, PASSWORD, PEOPLE, audit_records, build_backend, serve


def store(tmp_path: Path, **kw: object) -> UserStore:
    return UserStore(make_engine(f"sqlite:///{tmp_path / 'u.db'}"), hasher=FAST_HASHER, **kw)  # type: ignore[arg-type]


def test_passwords_are_stored_as_argon2id_hashes(tmp_path: Path) -> None:
    users = store(tmp_path)
    users.add_user("sam", Role.SUPERVISOR, PASSWORD)
    with users.engine.connect() as db:
        stored = db.execute(text("select password_hash from console_users where name='sam'")).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert users.verify("sam", PASSWORD) is not None
    assert users.verify("sam", PASSWORD + "x") is None
    assert users.verify("nobody", PASSWORD) is None


def test_bad_users_are_refused_with_reasons(tmp_path: Path) -> None:
    users = store(tmp_path)
    with pytest.raises(AuthError, match="at least 8"):
        users.add_user("sam", "supervisor", "short")
    with pytest.raises(AuthError, match="unknown role"):
        users.add_user("sam", "boss", PASSWORD)
    with pytest.raises(AuthError, match="user name"):
        users.add_user("Robert'); drop table", "operator", PASSWORD)
    users.add_user("sam", "supervisor", PASSWORD)
    with pytest.raises(AuthError, match="exists"):
        users.add_user("sam", "operator", PASSWORD)
    assert users.add_user("sam", "operator", PASSWORD + "2", replace=True).role is Role.OPERATOR


def test_sessions_expire_and_end_at_logout(tmp_path: Path) -> None:
    now = [1000.0]
    users = store(tmp_path, ttl_s=60.0, clock=lambda: now[0])
    users.add_user("olga", "operator", PASSWORD)
    user, token = users.login("olga", PASSWORD)
    assert users.session_user(token) == user
    now[0] += 59.0
    assert users.session_user(token) == user
    now[0] += 2.0
    assert users.session_user(token) is None
    _, token2 = users.login("olga", PASSWORD)
    users.logout(token2)
    assert users.session_user(token2) is None
    with pytest.raises(AuthError):
        users.login("olga", "wrong password")


def test_sessions_keep_only_a_digest_of_the_token(tmp_path: Path) -> None:
    users = store(tmp_path)
    users.add_user("erin", "engineer", PASSWORD)
    _, token = users.login("erin", PASSWORD)
    with users.engine.connect() as db:
        rows = db.execute(text("select token_sha256 from console_sessions")).scalars().all()
    assert rows and token not in rows


def test_permission_table_says_who_does_what() -> None:
    assert PERMISSIONS[Action.APPROVE_PLAN] == {Role.SUPERVISOR}
    assert PERMISSIONS[Action.RESET_ESTOP] == {Role.OPERATOR}
    assert PERMISSIONS[Action.TRIP_ESTOP] == set(Role)
    assert Role.ENGINEER not in PERMISSIONS[Action.APPROVE_PLAN]
    assert set(PERMISSIONS) == set(Action)


# --------------------------------------------------------------------------- failed-login limit


def test_default_login_limit_is_five_per_name_and_twenty_per_address_then_growing_delays(tmp_path: Path) -> None:
    limit = store(tmp_path).throttle.limit
    assert limit == LoginLimit(
        max_failures=5,
        window_s=900.0,
        lockout_s=60.0,
        max_lockout_s=900.0,
        max_address_failures=20,
        max_address_names=10,
    )
    assert [limit.delay_s(n, 5) for n in (4, 5, 6, 7, 8, 9, 30)] == [0, 60, 120, 240, 480, 900, 900]
    with pytest.raises(ValueError):
        LoginLimit(max_failures=0)
    with pytest.raises(ValueError):
        LoginLimit(lockout_s=60.0, max_lockout_s=30.0)


def test_store_locks_a_name_after_n_failures_until_the_lockout_ends(tmp_path: Path) -> None:
    now = [1000.0]
    users = store(tmp_path, clock=lambda: now[0], login_limit=LoginLimit(max_failures=3, window_s=60, lockout_s=300))
    users.add_user("olga", "operator", PASSWORD)
    for n in (1, 2):
        with pytest.raises(LoginFailed) as failed:
            users.login("olga", "wrong password")
        assert failed.value.failures == n
    with pytest.raises(LoginLocked) as locked:
        users.login("olga", "wrong password")
    assert locked.value.started and locked.value.retry_after_s == 300
    now[0] += 299.0
    with pytest.raises(LoginLocked, match="try again in 1 minute") as locked:
        users.login("olga", PASSWORD)  # the right password does not help while locked out
    assert not locked.value.started
    now[0] += 2.0
    assert users.login("olga", PASSWORD)[0].name == "olga"


def test_store_counts_failures_within_the_window_only_and_forgets_them_at_success(tmp_path: Path) -> None:
    now = [1000.0]
    users = store(tmp_path, clock=lambda: now[0], login_limit=LoginLimit(max_failures=3, window_s=60, lockout_s=300))
    users.add_user("olga", "operator", PASSWORD)
    for _ in range(5):  # one failure a minute never makes three within a minute
        with pytest.raises(LoginFailed):
            users.login("olga", "wrong password")
        now[0] += 61.0
    for _ in range(3):
        for _ in range(2):
            with pytest.raises(LoginFailed):
                users.login("olga", "wrong password")
        users.login("olga", PASSWORD)  # resets the count


def test_unknown_names_are_limited_like_real_ones(tmp_path: Path) -> None:
    users = store(tmp_path, login_limit=LoginLimit(max_failures=2))
    users.add_user("olga", "operator", PASSWORD)
    answers = {}
    for name in ("olga", "nobody"):
        seen = []
        for _ in range(3):
            with pytest.raises(AuthError) as exc:
                users.login(name, "wrong password")
            seen.append((type(exc.value).__name__, str(exc.value)))
        answers[name] = seen
    assert answers["olga"] == answers["nobody"]
    assert answers["olga"][-1][0] == "LoginLocked"


@dataclass
class Limited:
    client: TestClient
    backend: CoordinatorBackend
    now: list[float]

    def api(self, name: str, password: str) -> Any:  # the test client's response
        return self.client.post("/api/session", json={"name": name, "password": password})

    def form(self, name: str, password: str) -> Any:
        self.client.cookies.clear()
        return self.client.post("/login", data={"name": name, "password": password}, follow_redirects=False)

    def audit(self, name: str) -> list[str]:
        return [a.action for a in audit_records(self.backend) if a.actor == name]


@pytest.fixture
def limited(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[Limited]:
    """A console whose user store runs on a clock the test moves; 3 failures in 60 s lock 300 s."""
    now = [1_000_000.0]
    users = store(tmp_path, clock=lambda: now[0])
    for name, role in PEOPLE.items():
        users.add_user(name, role, PASSWORD)
    backend = build_backend(demo_plant, tmp_path)
    with serve(backend, users, login_limit=LoginLimit(max_failures=3, window_s=60.0, lockout_s=300.0)) as client:
        yield Limited(client, backend, now)


def test_api_login_is_refused_with_429_after_n_failures(limited: Limited) -> None:
    assert [limited.api("olga", "wrong password").status_code for _ in range(2)] == [401, 401]
    third = limited.api("olga", "wrong password")
    assert third.status_code == 429 and "too many failed logins" in third.json()["detail"]
    refused = limited.api("olga", PASSWORD)  # the right password, during the lock-out, from the same address
    assert refused.status_code == 429
    assert refused.json()["detail"] == (
        "too many failed logins for this user name from your address; try again in 5 minutes"
    )
    assert 299 <= int(refused.headers["retry-after"]) <= 300
    assert "token" not in refused.json() and "atelier_session" not in refused.cookies
    assert limited.api("sam", PASSWORD).status_code == 200  # other names are not affected
    # the first failure and the lock-out are in the audit log; the rest in one summary per window
    assert limited.audit("olga") == ["login_failed", "login_locked_out"]
    locked_out = next(a for a in audit_records(limited.backend) if a.action == "login_locked_out")
    assert locked_out.actor == "olga" and "3 failed logins" in locked_out.detail
    limited.now[0] += 61.0  # the window closes; the next look at the audit log writes its summary
    limited.client.get(
        "/api/audit", headers={"Authorization": f"Bearer {limited.api('sam', PASSWORD).json()['token']}"}
    )
    summary = [a for a in audit_records(limited.backend) if a.action == "login_failures"]
    assert len(summary) == 1 and summary[0].actor == "olga"
    assert "3 failed logins for 1 user name (olga 3)" in summary[0].detail
    assert "1 attempt refused while held back" in summary[0].detail


def test_unknown_names_get_the_same_answers_as_real_ones(limited: Limited) -> None:
    def answers(name: str) -> list[tuple[int, object]]:
        rs = [limited.api(name, "wrong password") for _ in range(4)]
        return [(r.status_code, r.json()) for r in rs]

    assert answers("olga") == answers("nobody")
    # one address: its first failure and first lock-out on their own, the rest summed up
    assert limited.audit("olga") == ["login_failed", "login_locked_out"] and limited.audit("nobody") == []
    assert limited.client.app.state.users.throttle.due_reports(everything=True)[0].names == (
        ("nobody", 3),
        ("olga", 3),
    )


def test_form_login_shows_the_lockout_message(limited: Limited) -> None:
    first = limited.form("olga", "wrong password")
    assert first.status_code == 401 and "wrong password" in first.text
    limited.form("olga", "wrong password")
    third = limited.form("olga", "wrong password")
    assert third.status_code == 429
    refused = limited.form("olga", PASSWORD)
    assert refused.status_code == 429 and "set-cookie" not in refused.headers
    assert 'id="errors"' in refused.text
    assert "Too many failed logins for this user name from your address; try again in 5 minutes." in refused.text
    assert 'value="olga"' in refused.text and 'id="login-form"' in refused.text  # the form, to try later
    assert limited.audit("olga") == ["login_failed", "login_locked_out"]


def test_the_limit_holds_across_form_and_api(limited: Limited) -> None:
    assert limited.form("erin", "wrong password").status_code == 401
    assert limited.api("erin", "wrong password").status_code == 401
    assert limited.form("erin", "wrong password").status_code == 429
    assert limited.api("erin", PASSWORD).status_code == 429
    assert limited.form("erin", PASSWORD).status_code == 429


def test_success_resets_the_count(limited: Limited) -> None:
    for _ in range(3):
        assert limited.api("sam", "wrong password").status_code == 401
        assert limited.form("sam", "wrong password").status_code == 401
        assert limited.form("sam", PASSWORD).status_code == 303
    assert "login_locked_out" not in limited.audit("sam")


def test_lockout_expires(limited: Limited) -> None:
    for _ in range(3):
        limited.api("olga", "wrong password")
    limited.now[0] += 299.0
    assert limited.api("olga", PASSWORD).status_code == 429
    limited.now[0] += 2.0
    ok = limited.api("olga", PASSWORD)
    assert ok.status_code == 200 and ok.json()["name"] == "olga"
    assert limited.form("olga", "wrong password").status_code == 401  # a fresh count after the lock-out


def test_failures_older_than_the_window_do_not_count(limited: Limited) -> None:
    for _ in range(6):
        assert limited.api("olga", "wrong password").status_code == 401
        limited.now[0] += 31.0  # two failures at most within any 60 s

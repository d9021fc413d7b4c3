"""Users, password hashes and sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from llm_coordinator.console.auth import PERMISSIONS, Action, AuthError, Role, UserStore, make_engine

from .conftest import FAST_HASHER, PASSWORD


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

"""The console against a hostile web: the e-stop that is never refused, CSRF tokens, login
limits that cannot lock a person out, security headers, and ids too large for the database.

Issue 13 of the web security test; the cross-site attack in a real browser is in
``test_security_browser.py``, concurrent writers in ``test_security_concurrency.py``, TLS in
``test_security_tls.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llm_coordinator.console.app import CSP, CSRF_HEADER
from llm_coordinator.console.auth import (
    LoginFailed,
    LoginLimit,
    LoginLocked,
    Role,
    UserStore,
    client_key,
    csrf_matches,
    csrf_token,
    make_engine,
)
from llm_coordinator.console.services import AuditView
from plant.config import PlantDescription

from .conftest import FAST_HASHER, PASSWORD, PEOPLE, Console, audit_records, build_backend, serve

ROBOTS = ("panda_1", "ur5e_1")


def latched(c: Console) -> set[str]:
    return {r for r in c.backend.plant.robots if c.backend.estops.state(r)[0]}


def actions(c: Console, action: str) -> list[AuditView]:
    return [a for a in c.records if a.action == action]


def browser_login(c: Console, name: str) -> str:
    """Log in through the form, as a browser does: the client keeps only the cookie (no CSRF
    header); returns the page's CSRF token, read from a page's hidden field."""
    c.client.cookies.clear()
    c.client.headers.pop(CSRF_HEADER, None)
    r = c.client.post("/login", data={"name": name, "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = c.client.get("/plant").text
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert found, "the page's forms carry the token"
    return found.group(1)


def plan_awaiting(c: Console) -> str:
    h = c.as_("sam")
    job = c.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    done = c.wait_job(job["id"], h)
    assert done["state"] == "awaiting_approval", done
    return str(done["plan_id"])


def plan_state(c: Console, plan_id: str) -> str:
    state: str = c.backend.store.get(int(plan_id)).status
    return state


# --------------------------------------------------------------------------- the e-stop is never refused


@pytest.mark.parametrize(
    ("body", "tripped"),
    [
        ({"robot": "ur5e_1", "reason": "x" * 5000}, {"ur5e_1"}),
        ({"robot": "ur5e_1", "reason": "hand \x00 caught\x1b[2J"}, {"ur5e_1"}),
        ({"robot": "ur5e_1", "reason": "drill", "urgent": True, "by": {"who": "me"}}, {"ur5e_1"}),
        ({"robot": "UR5E_1"}, {"ur5e_1"}),
        ({"robot": " Panda_1\u200b "}, {"panda_1"}),
        ({"robot": "ALL"}, set(ROBOTS)),
        ({"robot": None, "reason": 12345}, set(ROBOTS)),
        ({}, set(ROBOTS)),
        ([1, 2, 3], set(ROBOTS)),
        (b"{not json", set(ROBOTS)),
        (b"", set(ROBOTS)),
        (b"\xff\xfe garbage", set(ROBOTS)),
    ],
    ids=[
        "long-reason",
        "nul-and-escapes",
        "extra-fields",
        "upper-case",
        "spaces-and-invisible",
        "ALL",
        "reason-not-text",
        "empty-object",
        "json-list",
        "garbled-json",
        "no-body",
        "not-utf8",
    ],
)
@pytest.mark.parametrize("who", ["erin", "sam", "olga"])
def test_api_trip_latches_whatever_the_body(console: Console, who: str, body: Any, tripped: set[str]) -> None:
    h = console.as_(who)
    if isinstance(body, bytes):
        r = console.client.post("/api/estop/trip", content=body, headers={**h, "Content-Type": "application/json"})
    else:
        r = console.client.post("/api/estop/trip", json=body, headers=h)
    assert r.status_code == 204, r.text
    assert latched(console) == tripped
    trip = actions(console, "estop_trip")[-1]
    assert trip.actor == who
    for robot in tripped:
        reason = console.backend.estops.state(robot)[1]
        assert "\x00" not in reason and "\x1b" not in reason and len(reason) < 1100


def test_a_trip_reason_is_cleaned_up_and_shortened_not_refused(console: Console) -> None:
    h = console.as_("erin")
    r = console.client.post(
        "/api/estop/trip", json={"robot": "ur5e_1", "reason": "arm \x00 hit\n" + "y" * 3000}, headers=h
    )
    assert r.status_code == 204
    reason = console.backend.estops.state("ur5e_1")[1]
    assert reason.startswith("arm \\x00 hit\\n") and "[cut" in reason and "(by erin)" in reason
    assert actions(console, "estop_trip")[-1].detail.startswith("arm \\x00 hit\\n")


def test_an_unknown_robot_is_a_404_naming_the_robots(console: Console) -> None:
    h = console.as_("erin")
    r = console.client.post("/api/estop/trip", json={"robot": "r2d2"}, headers=h)
    assert r.status_code == 404
    assert "panda_1, ur5e_1" in r.json()["detail"] and "Nothing was tripped" in r.json()["detail"]
    assert latched(console) == set()
    refused = actions(console, "refused")[-1]
    assert refused.actor == "erin" and refused.subject == "trip_estop" and "r2d2" in refused.detail


@pytest.mark.parametrize(
    ("form", "tripped"),
    [
        ({"robot": "ur5e_1", "reason": "z" * 3000}, {"ur5e_1"}),
        ({"robot": "UR5e_1", "reason": "nul \x00 here"}, {"ur5e_1"}),
        ({"robot": "all", "surprise": "field"}, set(ROBOTS)),
        ({}, set(ROBOTS)),
    ],
    ids=["long-reason", "case-and-nul", "extra-field", "empty-form"],
)
def test_page_trip_latches_whatever_the_form(console: Console, form: dict[str, str], tripped: set[str]) -> None:
    token = browser_login(console, "sam")
    r = console.client.post("/estop/trip", data={**form, "csrf_token": token, "next": "/plans"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/plans?notice=")
    assert latched(console) == tripped
    assert not actions(console, "estop_trip_unverified")


def test_a_garbled_page_form_trips_every_robot(console: Console) -> None:
    browser_login(console, "erin")
    r = console.client.post(
        "/estop/trip",
        content=b"--xx\r\nnot a part",
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert latched(console) == set(ROBOTS)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"}, {CSRF_HEADER: "0" * 64}],
    ids=["no-token", "origin-null", "other-site", "stale-token"],
)
def test_a_trip_without_a_valid_token_latches_and_is_audited_as_unverified(
    console: Console, headers: dict[str, str]
) -> None:
    browser_login(console, "olga")
    r = console.client.post("/estop/trip", data={"robot": "panda_1"}, headers=headers, follow_redirects=False)
    assert r.status_code == 303
    assert latched(console) == {"panda_1"}
    trip, unverified = actions(console, "estop_trip")[-1], actions(console, "estop_trip_unverified")[-1]
    assert trip.actor == unverified.actor == "olga" and unverified.subject == "robot panda_1"
    assert "latched although" in unverified.detail


def test_the_trip_control_is_on_every_page_for_everybody(console: Console) -> None:
    plan_id = plan_awaiting(console)
    for who in PEOPLE:
        browser_login(console, who)
        for path in ("/plant", "/plans", f"/plans/{plan_id}", "/operator", "/work-orders", "/audit", "/nowhere"):
            page = console.client.get(path).text
            form = re.search(
                r'<form method="post" action="/estop/trip"[^>]*id="estop-all-form">(.*?)</form>', page, re.S
            )
            assert form, (who, path)
            assert 'name="csrf_token"' in form.group(1) and 'id="estop-all"' in form.group(1)


def test_a_reset_stays_with_operators_with_area_clear_and_the_token(console: Console) -> None:
    console.backend.estops.latched["ur5e_1"] = "drill"
    token = browser_login(console, "sam")
    r = console.client.post("/estop/reset", data={"robot": "ur5e_1", "area_clear": "yes", "csrf_token": token})
    assert r.status_code == 403 and latched(console) == {"ur5e_1"}
    token = browser_login(console, "olga")
    r = console.client.post("/estop/reset", data={"robot": "ur5e_1", "area_clear": "yes"})  # no token
    assert r.status_code == 403 and latched(console) == {"ur5e_1"}
    r = console.client.post("/estop/reset", data={"robot": "ur5e_1", "csrf_token": token})  # area not clear
    assert r.status_code == 422 and latched(console) == {"ur5e_1"}
    r = console.client.post("/estop/reset", data={"robot": "ur5e_1", "area_clear": "yes", "csrf_token": token})
    assert r.status_code == 200 and latched(console) == set()
    reset = actions(console, "estop_reset")[-1]
    assert reset.actor == "olga" and reset.subject == "robot ur5e_1"


# --------------------------------------------------------------------------- CSRF


def test_csrf_token_is_derived_from_the_session_and_checked_in_constant_time() -> None:
    t = csrf_token("session-a")
    assert t == csrf_token("session-a") and t != csrf_token("session-b") and len(t) == 64
    assert csrf_matches("session-a", t)
    assert not csrf_matches("session-b", t) and not csrf_matches("session-a", "") and not csrf_matches("", t)
    assert not csrf_matches("session-a", "ü" * 64)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "null"},
        {"Origin": "http://console.test"},  # the console's own origin, but no token
        {"Origin": "http://127.0.0.1:8000"},
        {"Referer": "http://console.test/plans"},
        {CSRF_HEADER: "f" * 64},
    ],
    ids=["no-origin", "origin-null", "same-origin-no-token", "other-port", "referer-only", "wrong-token"],
)
def test_a_form_post_without_the_sessions_token_is_refused(console: Console, headers: dict[str, str]) -> None:
    plan_id = plan_awaiting(console)
    browser_login(console, "sam")
    r = console.client.post(f"/plans/{plan_id}/approve", data={"reason": "ok"}, headers=headers, follow_redirects=False)
    assert r.status_code == 403, r.text
    assert "Nothing was done" in r.text and "reload the page" in r.text
    assert plan_state(console, plan_id) == "awaiting_approval"
    refused = actions(console, "csrf_refused")
    assert refused and refused[-1].actor == "sam" and refused[-1].subject == f"/plans/{plan_id}/approve"


def test_the_pages_token_lets_the_form_through(console: Console) -> None:
    plan_id = plan_awaiting(console)
    token = browser_login(console, "sam")
    page = console.client.get(f"/plans/{plan_id}").text
    assert f'<input type="hidden" name="csrf_token" value="{token}">' in page
    assert f'<meta name="csrf-token" content="{token}">' in page
    shown = console.backend.store.get(int(plan_id)).content_hash  # the version the page showed
    r = console.client.post(
        f"/plans/{plan_id}/approve",
        data={"reason": "ok", "csrf_token": token, "plan_hash": shown},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert plan_state(console, plan_id) == "approved"


def test_api_with_the_cookie_needs_the_header_and_with_a_bearer_token_does_not(console: Console) -> None:
    plan_id = plan_awaiting(console)
    console.client.cookies.clear()
    console.client.headers.pop(CSRF_HEADER, None)
    session = console.client.post("/api/session", json={"name": "sam", "password": PASSWORD}).json()
    # the cookie alone: refused, JSON
    r = console.client.post(f"/api/plans/{plan_id}/reject", json={"reason": "wrong program"})
    assert r.status_code == 403 and "security token" in r.json()["detail"]
    assert plan_state(console, plan_id) == "awaiting_approval"
    # the cookie and the header: done
    assert console.client.get("/api/me").json()["csrf_token"] == session["csrf_token"]
    r = console.client.post(
        f"/api/plans/{plan_id}/reject", json={"reason": "wrong program"}, headers={CSRF_HEADER: session["csrf_token"]}
    )
    assert r.status_code == 204
    # a Bearer token: no CSRF token needed (a cross-site page cannot send that header)
    plan2 = plan_awaiting(console)
    console.client.headers.pop(CSRF_HEADER, None)
    r = console.client.post(f"/api/plans/{plan2}/approve", json={}, headers=console.as_("sam"))
    assert r.status_code == 204


def test_logout_and_api_logout_need_the_token(console: Console) -> None:
    token = browser_login(console, "erin")
    assert console.client.post("/logout", follow_redirects=False).status_code == 403
    assert console.client.delete("/api/session").status_code == 403
    assert console.client.get("/api/me").status_code == 200  # still logged in
    assert console.client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert console.client.get("/api/me").status_code == 401


def test_a_cross_site_login_is_refused(console: Console) -> None:
    console.client.cookies.clear()
    for origin in ("null", "http://evil.example"):
        r = console.client.post("/login", data={"name": "sam", "password": PASSWORD}, headers={"Origin": origin})
        assert r.status_code == 403 and "atelier_session" not in r.cookies
        r = console.client.post("/api/session", json={"name": "sam", "password": PASSWORD}, headers={"Origin": origin})
        assert r.status_code == 403
    same = console.client.post(
        "/login",
        data={"name": "sam", "password": PASSWORD},
        headers={"Origin": "http://console.test"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_refusals_are_audited_at_most_once_a_minute_per_person(console: Console) -> None:
    browser_login(console, "sam")
    for _ in range(20):
        assert console.client.post("/work-orders", data={"recipe": "inspect_part"}).status_code == 403
    assert len(actions(console, "csrf_refused")) == 1


# --------------------------------------------------------------------------- headers, cookies, ids


def test_every_response_carries_the_security_headers(console: Console) -> None:
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP.split("script-src")[1].split(";")[0]
    browser_login(console, "erin")
    for path in ("/login", "/plant", "/api/plans", "/static/console.js", "/nowhere", "/api/docs"):
        r = console.client.get(path)
        h = r.headers
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "same-origin", path
        assert "strict-transport-security" not in h  # plain HTTP here
    assert console.client.get("/plant").headers["content-security-policy"] == CSP
    assert console.client.get("/plant").headers["cache-control"] == "no-store"


def test_no_page_has_an_inline_script(console: Console) -> None:
    plan_id = plan_awaiting(console)
    h = console.as_("erin")
    job = console.client.get("/api/work-orders", headers=h).json()[0]["id"]
    browser_login(console, "olga")
    inline = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
    for path in ("/plant", "/plans", f"/plans/{plan_id}", "/operator", "/work-orders", f"/work-orders/{job}", "/audit"):
        page = console.client.get(path).text
        assert not inline.search(page), path
        assert "javascript:" not in page and " onclick=" not in page, path
    console.client.cookies.clear()
    assert not inline.search(console.client.get("/login").text)


def test_the_session_cookie_is_httponly_strict_and_secure_over_https(
    tmp_path: Path, demo_plant: PlantDescription
) -> None:
    backend = build_backend(demo_plant, tmp_path)
    users = _users(tmp_path)
    with serve(backend, users) as client:
        plain = client.post("/api/session", json={"name": "erin", "password": PASSWORD}).headers["set-cookie"]
        assert "HttpOnly" in plain and "SameSite=strict" in plain and "Secure" not in plain
        client.base_url = client.base_url.copy_with(scheme="https")
        client.cookies.clear()
        r = client.post("/api/session", json={"name": "erin", "password": PASSWORD})
        assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        assert r.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/plans/99999999999999999999"),
        ("GET", "/plans/-99999999999999999999"),
        ("GET", "/plans/9223372036854775808"),
        ("GET", "/plans/99999999999999999999/evidence/video.mp4"),
        ("GET", "/api/plans/99999999999999999999"),
        ("POST", "/api/plans/99999999999999999999/approve"),
        ("POST", "/plans/99999999999999999999/reject"),
        ("POST", "/api/plans/99999999999999999999/steps/hand_over/confirm"),
        ("GET", "/work-orders/99999999999999999999"),
    ],
)
def test_a_huge_numeric_id_is_a_404(console: Console, method: str, path: str) -> None:
    h = console.as_("sam")
    r = console.client.request(method, path, headers=h, json={"reason": "looks fine"} if method == "POST" else None)
    assert r.status_code == 404, r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("plan_id", ["999", "0", "-1", "9223372036854775807", "1_0"])
def test_a_plan_that_does_not_exist_has_no_evidence_and_no_inspections(console: Console, plan_id: str) -> None:
    """Ids the database can hold, of no plan (the review found a 500 on these routes)."""
    h = console.as_("sam")
    r = console.client.get(f"/plans/{plan_id}/evidence/gantt.png", headers=h)
    assert r.status_code == 404, r.text
    r = console.client.post(
        f"/api/plans/{plan_id}/inspections/inspection_a.png/overrule",
        headers=h,
        json={"label": "good", "reason": "looked fine to me"},
    )
    assert r.status_code in (404, 409) and "Traceback" not in r.text, r.text


def test_a_huge_plan_id_in_the_operators_form_is_a_404(console: Console) -> None:
    token = browser_login(console, "olga")
    r = console.client.post(
        "/operator/confirm", data={"plan_id": "99999999999999999999", "step_id": "hand_over", "csrf_token": token}
    )
    assert r.status_code == 404 and "There is no plan" in r.text


# --------------------------------------------------------------------------- login limits


def _users(tmp_path: Path, **kw: Any) -> UserStore:
    users = UserStore(make_engine(f"sqlite:///{tmp_path / 'atelier.db'}"), hasher=FAST_HASHER, **kw)
    for name, role in PEOPLE.items():
        users.add_user(name, role, PASSWORD)
    return users


def test_addresses_are_counted_by_ipv4_address_and_ipv6_64() -> None:
    assert client_key("10.0.0.7") == "10.0.0.7"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "unknown" and client_key("testclient") == "testclient"


def test_nobody_without_the_password_can_lock_a_person_out(tmp_path: Path) -> None:
    now = [1000.0]
    users = _users(tmp_path, clock=lambda: now[0])
    for _ in range(200):  # an attacker hammers olga's name from one address
        with pytest.raises((LoginFailed, LoginLocked)):
            users.login("olga", "guess", "203.0.113.9")
        now[0] += 1.0
    assert users.login("olga", PASSWORD, "10.0.0.5")[0].name == "olga"  # olga, at her terminal
    with pytest.raises(LoginLocked) as held:  # the attacker's address, even with the password
        users.login("olga", PASSWORD, "203.0.113.9")
    assert held.value.scope in ("address", "user") and not held.value.started


def test_a_persons_own_mistakes_hold_back_only_that_name_at_that_address(tmp_path: Path) -> None:
    now = [1000.0]
    users = _users(tmp_path, clock=lambda: now[0])
    for _ in range(4):
        with pytest.raises(LoginFailed):
            users.login("olga", "typo", "10.0.0.5")
    with pytest.raises(LoginLocked) as held:
        users.login("olga", "typo", "10.0.0.5")
    assert held.value.started and held.value.scope == "user" and held.value.retry_after_s == 60.0
    with pytest.raises(LoginLocked, match="for this user name from your address; try again in 1 minute"):
        users.login("olga", PASSWORD, "10.0.0.5")
    assert users.login("sam", PASSWORD, "10.0.0.5")[0].name == "sam"  # the terminal is not locked
    assert users.login("olga", PASSWORD, "10.0.0.6")[0].name == "olga"  # nor olga elsewhere
    now[0] += 61.0
    assert users.login("olga", PASSWORD, "10.0.0.5")[0].name == "olga"


def test_delays_grow_with_each_further_failure_up_to_a_ceiling(tmp_path: Path) -> None:
    now = [1000.0]
    limit = LoginLimit(max_failures=3, window_s=3600.0, lockout_s=10.0, max_lockout_s=100.0)
    users = _users(tmp_path, clock=lambda: now[0], login_limit=limit)
    delays = []
    for _ in range(8):
        try:
            users.login("nobody", "guess", "198.51.100.1")
        except LoginLocked as exc:
            assert exc.started
            delays.append(exc.retry_after_s)
            now[0] += exc.retry_after_s  # wait it out, then guess again
        except LoginFailed:
            delays.append(0.0)
    assert delays == [0.0, 0.0, 10.0, 20.0, 40.0, 80.0, 100.0, 100.0]


def test_spraying_one_password_over_many_names_is_limited_per_address(tmp_path: Path) -> None:
    now = [1000.0]
    users = _users(tmp_path, clock=lambda: now[0])
    outcomes = []
    for i in range(15):
        try:
            users.login(f"user{i}", "Winter2024!", "198.51.100.7")
            outcomes.append("ok")
        except LoginLocked as exc:
            outcomes.append(f"held:{exc.scope}")
        except LoginFailed:
            outcomes.append("failed")
        now[0] += 1.0
    assert outcomes[:9] == ["failed"] * 9
    assert outcomes[9] == "held:address"  # the tenth name
    assert set(outcomes[10:]) == {"held:address"}
    assert users.login("sam", PASSWORD, "198.51.100.8")[0].name == "sam"  # other addresses are not affected
    # 20 failures of one name from an address hold the address too (on top of the name's delay)
    limit = LoginLimit(max_failures=50, max_address_failures=20)
    users.set_login_limit(limit)
    for _ in range(19):
        with pytest.raises(LoginFailed):
            users.login("olga", "guess", "198.51.100.9")
    with pytest.raises(LoginLocked) as held:
        users.login("olga", "guess", "198.51.100.9")
    assert held.value.scope == "address"


@pytest.fixture
def limited_console(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[tuple[TestClient, Console]]:
    now = [1_000_000.0]
    users = _users(tmp_path, clock=lambda: now[0])
    backend = build_backend(demo_plant, tmp_path)
    limit = LoginLimit(max_failures=3, window_s=600.0, lockout_s=1.0, max_lockout_s=1.0)
    with serve(backend, users, login_limit=limit) as client:
        c = Console(client.app, backend, users, client)  # type: ignore[arg-type]
        c.now = now  # type: ignore[attr-defined]
        yield client, c


def test_failed_logins_do_not_flood_the_audit_log(limited_console: tuple[TestClient, Console]) -> None:
    client, c = limited_console
    now: list[float] = c.now  # type: ignore[attr-defined]
    attacker = TestClient(c.app, base_url="http://console.test", client=("203.0.113.50", 4000))
    codes = []
    for i in range(60):
        codes.append(attacker.post("/api/session", json={"name": f"n{i % 6}", "password": "guess"}).status_code)
        now[0] += 2.0  # past each 1 s delay
    assert set(codes) <= {401, 429} and 429 in codes
    failed = [a for a in audit_records(c.backend) if a.action in ("login_failed", "login_locked_out", "login_failures")]
    assert [a.action for a in failed] == ["login_failed", "login_locked_out"]
    assert "203.0.113.50" in failed[0].detail and "login_failures" in failed[0].detail
    # the person at their own terminal is not affected, and is audited as always
    assert client.post("/api/session", json={"name": "olga", "password": PASSWORD}).status_code == 200
    now[0] += 600.0  # the window closes: one summary row
    assert client.post("/api/session", json={"name": "sam", "password": PASSWORD}).status_code == 200
    summaries = [a for a in audit_records(c.backend) if a.action == "login_failures"]
    assert len(summaries) == 1
    s = summaries[0]
    assert s.actor == "?" and "from 203.0.113.50" in s.detail
    assert re.search(r"\d+ failed logins for 6 user names \(n0 \d+, ", s.detail), s.detail
    total = int(re.search(r"(\d+) failed logins", s.detail).group(1))  # type: ignore[union-attr]
    refused = int(re.search(r"(\d+) attempts? refused", s.detail).group(1))  # type: ignore[union-attr]
    assert total + refused == 60
    assert c.backend.store.verify_audit().ok


def test_login_messages_do_not_tell_whether_a_user_exists(tmp_path: Path) -> None:
    users = _users(tmp_path)
    seen = {}
    for name in ("olga", "nobody"):
        answers = []
        for _ in range(7):
            try:
                users.login(name, "guess", f"192.0.2.{len(seen) + 1}")
            except (LoginFailed, LoginLocked) as exc:
                answers.append((type(exc).__name__, str(exc)))
        seen[name] = answers
    assert seen["olga"] == seen["nobody"]
    assert Role.OPERATOR.value not in str(seen)

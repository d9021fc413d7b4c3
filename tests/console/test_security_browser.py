"""Cross-site requests in headless Chromium, as the security tester made them: a page on another
port of the same host (same site, so the SameSite=Strict session cookie goes along) with
``<meta name="referrer" content="no-referrer">`` (so Chromium sends ``Origin: null``) posts to
the console while a supervisor or an operator is logged in. The approval is refused and the
plan stays unapproved; a forged e-stop trip still latches (stopping is never refused) and is
audited as unverified. The console's own pages still work under their Content-Security-Policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_coordinator.console.app import create_app
from llm_coordinator.console.coordinator_backend import CoordinatorBackend
from plant.config import PlantDescription

from ._live import uvicorn_thread
from .conftest import PASSWORD, await_plan, bearer, build_backend, make_users, order_recipe


@dataclass
class Site:
    url: str
    backend: CoordinatorBackend


@pytest.fixture
def site(tmp_path: Path, demo_plant: PlantDescription) -> Iterator[Site]:
    """The console's app (the product's coordinator, fake agents) served by uvicorn on 127.0.0.1."""
    backend = build_backend(demo_plant, tmp_path)
    users = make_users(tmp_path / "atelier.db")
    try:
        with uvicorn_thread(create_app(backend, users)) as port:
            yield Site(f"http://127.0.0.1:{port}", backend)
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()


@contextmanager
def _attacker(pages: dict[str, str]) -> Iterator[str]:
    """Serve ``pages`` (path -> HTML) on another port of 127.0.0.1: the hostile site."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="attacker", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _auto_post(action: str, fields: dict[str, str], enctype: str = "application/x-www-form-urlencoded") -> str:
    inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in fields.items())
    return (
        '<!doctype html><html><head><meta name="referrer" content="no-referrer"></head><body>'
        f'<form id="f" method="post" action="{action}" enctype="{enctype}">{inputs}</form>'
        '<script>document.getElementById("f").submit()</script></body></html>'
    )


def _no_cors_fetch(url: str, body: str) -> str:
    return (
        '<!doctype html><html><head><meta name="referrer" content="no-referrer"></head><body>'
        f"<script>fetch({url!r}, {{method: 'POST', mode: 'no-cors', credentials: 'include', "
        f"headers: {{'Content-Type': 'text/plain'}}, body: {body!r}}})"
        ".then(() => { document.title = 'sent'; }, () => { document.title = 'blocked'; });</script></body></html>"
    )


def _login(browser: Any, site: Site, name: str) -> tuple[Any, Any, list[str]]:
    """A browser context logged in as ``name`` through the login form; the page, and the
    Content-Security-Policy complaints its console reports."""
    ctx = browser.new_context(base_url=site.url)
    page = ctx.new_page()
    complaints: list[str] = []
    page.on("console", lambda m: complaints.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto("/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url("**/plant")
    return ctx, page, complaints


def _plan_awaiting(site: Site) -> int:
    with httpx.Client(base_url=site.url, timeout=30) as c:
        h = bearer(c, "erin")
        return await_plan(c, h, order_recipe(c, h))


def _wait(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_cross_site_page_cannot_approve_but_can_only_stop(browser: Any, site: Site) -> None:
    plan_id = _plan_awaiting(site)
    store = site.backend.store
    approve = f"{site.url}/plans/{plan_id}/approve"
    pages = {
        "/approve": _auto_post(approve, {"reason": "approved by a stranger"}),
        "/approve-text": _auto_post(approve, {"reason": "x"}, enctype="text/plain"),
        "/approve-fetch": _no_cors_fetch(f"{site.url}/api/plans/{plan_id}/approve", '{"reason": "x"}'),
        "/trip": _auto_post(f"{site.url}/estop/trip", {"robot": "ur5e_1", "reason": "forged"}),
        "/reset": _auto_post(f"{site.url}/estop/reset", {"robot": "ur5e_1", "area_clear": "yes"}),
    }
    with _attacker(pages) as attacker:
        # --- the supervisor, logged in, visits the hostile page in another tab
        ctx, sam, complaints = _login(browser, site, "sam")
        evil = ctx.new_page()
        seen: list[dict[str, str]] = []
        evil.on("request", lambda r: seen.append({"url": r.url, **r.headers}) if r.url.startswith(site.url) else None)
        evil.goto(f"{attacker}/approve")
        evil.wait_for_url(approve)
        assert "Refused" in evil.inner_text("main") and "security token" in evil.inner_text("main")
        assert store.get(plan_id).status == "awaiting_approval"
        sent = next(r for r in seen if r["url"] == approve)
        assert sent.get("origin") == "null"  # what the tester saw: no-referrer makes Chromium send Origin: null
        refused = [a for a in store.audit_rows() if a.action == "csrf_refused"]
        assert refused and refused[-1].actor == "sam"  # the session cookie went along: sam was identified
        evil.goto(f"{attacker}/approve-text")
        evil.wait_for_url(approve)
        evil.goto(f"{attacker}/approve-fetch")
        evil.wait_for_function("document.title !== ''")
        time.sleep(0.3)
        assert store.get(plan_id).status == "awaiting_approval"
        # --- the supervisor's own page still approves (the form carries the token; no CSP complaint)
        sam.goto(f"/plans/{plan_id}")
        sam.fill("#reason", "checked")
        sam.click("#approve")
        sam.wait_for_selector(".notice")
        assert "approved by sam" in sam.inner_text(".notice")
        assert store.get(plan_id).status in ("approved", "running", "done", "paused")
        assert not complaints, complaints
        ctx.close()

        # --- the operator, logged in, visits a page that forges a trip, then one that forges a reset
        ctx, olga, complaints = _login(browser, site, "olga")
        evil = ctx.new_page()
        evil.goto(f"{attacker}/trip")
        evil.wait_for_url(f"{site.url}/operator**")
        _wait(lambda: site.backend.estops.state("ur5e_1")[0])
        rows = [(a.actor, a.action) for a in store.audit_rows()]
        assert ("olga", "estop_trip") in rows and ("olga", "estop_trip_unverified") in rows
        evil.goto(f"{attacker}/reset")
        evil.wait_for_url(f"{site.url}/estop/reset")
        assert "Refused" in evil.inner_text("main")
        assert site.backend.estops.state("ur5e_1")[0]  # a forged reset does nothing
        # --- the operator resets it with the token of her own page (this fixture has no plant
        # feed to switch the operator table's row to its reset form)
        olga.goto("/operator")
        token = olga.get_attribute('meta[name="csrf-token"]', "content")
        r = olga.request.post(
            "/estop/reset", form={"robot": "ur5e_1", "area_clear": "yes", "csrf_token": token}, max_redirects=0
        )
        assert r.status == 303 and not site.backend.estops.state("ur5e_1")[0]
        # the header's E-STOP on any page latches every robot
        olga.goto("/audit")
        olga.click("#estop-all")
        olga.wait_for_selector(".notice")
        assert all(site.backend.estops.state(r)[0] for r in site.backend.plant.robots)
        assert "/audit" in olga.url
        assert not complaints, complaints
        ctx.close()


def test_the_pages_scripts_run_under_the_content_security_policy(browser: Any, site: Site) -> None:
    plan_id = _plan_awaiting(site)
    ctx, page, complaints = _login(browser, site, "erin")
    jobs = page.request.get("/api/work-orders").json()
    page.goto(f"/work-orders/{jobs[0]['id']}")
    page.wait_for_selector("#job-state:text('awaiting approval')")  # followJob started from the page data
    page.goto("/operator")
    page.wait_for_selector("#live-text:text('live')")  # liveEstops opened its stream
    page.goto("/plant")
    page.wait_for_selector("#live-text:text('live')")
    page.goto(f"/plans/{plan_id}")
    page.goto("/nowhere")
    page.click("a[data-back]")
    page.wait_for_url(f"**/plans/{plan_id}")
    assert not complaints, complaints
    ctx.close()

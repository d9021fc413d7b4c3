"""End to end in headless Chromium: every role logs in, a work order goes from the form to an
approved plan running on the live twin, an operator trips and resets an e-stop, and the page
keeps up with the twin. Screenshots go to $ATELIER_SCREENSHOTS (or the test's temp dir).

Needs Debian's ``chromium`` (the fixture installs it with apt-get when missing and allowed).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plant.config import PlantDescription
from plant.packml import Command, State
from sim.twin import Twin

from ._live import LiveConsole, serve_console
from .conftest import PASSWORD

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def _ensure_chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the console's browser tests: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    exe = _ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ATELIER_SCREENSHOTS", tmp_path / "shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _login(browser: object, live: LiveConsole, name: str) -> object:
    ctx = browser.new_context(base_url=live.url, viewport={"width": 1440, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    page.goto("/plant")
    assert "/login" in page.url
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url("**/plant")
    assert page.inner_text("#who").startswith(name)
    return page


def test_console_end_to_end(browser: object, demo_plant: PlantDescription, tmp_path: Path, shots: Path) -> None:
    with serve_console(demo_plant, tmp_path, step_time_scale=0.3, stage_delay_s=0.3) as live:
        # --- a wrong password is a message on the page
        ctx = browser.new_context(base_url=live.url)  # type: ignore[attr-defined]
        p0 = ctx.new_page()
        p0.goto("/login")
        p0.fill("#name", "erin")
        p0.fill("#password", "not the password")
        p0.click("#login")
        assert "wrong password" in p0.inner_text("#errors")
        ctx.close()

        # --- engineer: the live plant view, then a work order
        erin = _login(browser, live, "erin")
        erin.wait_for_selector("#live-text:text('live')")
        erin.wait_for_function("document.querySelector('#mrow-cnc_1 [data-f=state]').textContent === 'STOPPED'")
        erin.screenshot(path=str(shots / "plant_engineer.png"), full_page=True)

        erin.goto("/work-orders")
        erin.select_option("#wo-recipe", "machine_part")
        erin.fill("input[name='p.machine_part.program']", "seven")
        erin.click("#wo-submit")
        errors = erin.inner_text("#errors")
        assert "expected a whole number" in errors and "Traceback" not in erin.content()
        erin.screenshot(path=str(shots / "work_order_error.png"), full_page=True)
        erin.fill("input[name='p.machine_part.program']", "7")
        erin.fill("#wo-text", "machine one blank with program 7 and sort it")
        erin.click("#wo-submit")
        erin.wait_for_url("**/work-orders/*")
        erin.wait_for_selector(
            "#job-state:text('drafting'), #job-state:text('checking'), #job-state:text('rehearsing')"
        )
        erin.wait_for_selector("#open-plan", timeout=10_000)
        assert erin.inner_text("#job-state") == "awaiting approval"
        erin.screenshot(path=str(shots / "work_order_progress.png"), full_page=True)
        erin.click("#open-plan")
        erin.wait_for_url("**/plans/*")
        plan_url = erin.url
        assert "Waiting for a supervisor" in erin.inner_text("#decision")
        assert erin.query_selector("#approve") is None

        # --- supervisor: reads the plan at a glance, a bad reject, then approves
        sam = _login(browser, live, "sam")
        sam.goto(plan_url)
        assert "rules pass" in sam.inner_text("#v-guardrails")
        assert "0 collisions" in sam.inner_text("#v-rehearsal")
        assert "hand_over" in sam.inner_text("#gantt")
        sam.screenshot(path=str(shots / "plan_supervisor.png"), full_page=True)
        sam.click("#reject")  # no reason
        assert "Reason for rejecting: please fill this in." in sam.inner_text("#errors")
        sam.fill("#reason", "program 7 is the right one; cycle time checked")
        sam.click("#approve")
        sam.wait_for_selector(".notice")
        assert "approved by sam" in sam.inner_text(".notice")

        # --- operator: confirms the hazardous hand-over
        olga = _login(browser, live, "olga")
        olga.goto("/operator")
        box = olga.wait_for_selector("#confirmations .confirm")
        assert "hand_over" in box.inner_text()
        olga.screenshot(path=str(shots / "operator_confirm.png"), full_page=True)
        box.query_selector("input[name=reason]").fill("nobody near the hand-over point")
        box.query_selector("button:text('Confirm')").click()
        olga.wait_for_selector(".notice")
        assert "confirmed by olga" in olga.inner_text(".notice")

        # --- the plan runs on the twin: the conveyor feeds, the plan page says running
        sam.goto("/plant")
        sam.wait_for_function(
            "document.querySelector('#mrow-conveyor_1 [data-f=state]').textContent === 'EXECUTE'", timeout=15_000
        )
        sam.screenshot(path=str(shots / "plant_running.png"), full_page=True)
        sam.goto(plan_url)
        assert sam.inner_text("#plan-state") in ("running", "paused", "done")

        # --- e-stop: anyone may trip, only an operator resets
        olga.goto("/operator")
        olga.click("#trip-ur5e_1")
        olga.wait_for_selector("#estop-ur5e_1 .st-estop")
        sam.goto("/plant")
        sam.wait_for_function("document.querySelector('#rrow-ur5e_1 [data-f=safety]').textContent === 'E-STOP'")
        sam.screenshot(path=str(shots / "plant_estop.png"), full_page=True)
        sam.goto("/operator")
        assert "Only a robot operator may reset" in sam.inner_text("#estop-ur5e_1")
        olga.click("#reset-ur5e_1")  # without ticking "area clear"
        assert "nobody is in the robot's area" in olga.inner_text("#errors")
        olga.screenshot(path=str(shots / "operator_estop.png"), full_page=True)
        olga.check("#estop-ur5e_1 input[name=area_clear]")
        olga.click("#reset-ur5e_1")
        olga.wait_for_selector(".notice")
        assert "reset by olga" in olga.inner_text(".notice")
        sam.goto("/plant")
        sam.wait_for_function("document.querySelector('#rrow-ur5e_1 [data-f=safety]').textContent !== 'E-STOP'")

        # --- the page keeps up with the twin
        latencies = _page_latencies(live, sam)
        print(
            f"page latency (twin change -> DOM): median {statistics.median(latencies) * 1000:.0f} ms, "
            f"worst {max(latencies) * 1000:.0f} ms"
        )
        assert max(latencies) < 0.5, latencies

        audit = {(a.actor, a.action) for a in live.site.backend.records}
        for who, what in [
            ("erin", "submit_work_order"),
            ("sam", "approve"),
            ("olga", "confirm_step"),
            ("olga", "estop_trip"),
            ("olga", "estop_reset"),
        ]:
            assert (who, what) in audit, (who, what)


def _page_latencies(live: LiveConsole, page: object, samples: int = 6) -> list[float]:
    """Twin change (on the twin thread) to the changed text in the page's machines table."""
    out = []
    twin = live.site.live
    insp = "document.querySelector('#mrow-insp_1 [data-f=state]').textContent"
    for i in range(samples):
        cmd, want, settle = (
            (Command.RESET, State.RESETTING, State.IDLE)
            if i % 2 == 0
            else (Command.STOP, State.STOPPING, State.STOPPED)
        )
        current = twin.read(lambda t: t.machines["insp_1"].state)
        if current not in (State.STOPPED, State.IDLE, State.COMPLETE):
            break

        def apply(t: Twin, cmd: Command = cmd) -> float:
            t.machines["insp_1"].command(cmd)
            return time.perf_counter()

        changed_at = twin.submit(apply).result(5)
        page.wait_for_function(f"{insp} === '{want.name}'", polling=5, timeout=5000)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - changed_at)
        end = time.perf_counter() + 5
        while twin.read(lambda t: t.machines["insp_1"].state) != settle and time.perf_counter() < end:
            time.sleep(0.01)
    assert out, "insp_1 was busy; no latency measured"
    return out

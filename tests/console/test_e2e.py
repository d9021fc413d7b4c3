"""End to end in headless Chromium over the console as ``atelier console`` serves it: every role
logs in, work orders go from the form through the embedded model or a recipe, the guardrails
and a rehearsal in the twin to an approved plan running on the live twin, an operator confirms
a hazardous step and trips and resets an e-stop, and the page keeps up with the twin.
Screenshots go to $ATELIER_SCREENSHOTS (or the test's temp dir).

Needs Debian's ``chromium`` (the fixture installs it with apt-get when missing and allowed).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from plant.config import PlantDescription
from plant.packml import Command, State
from sim.twin import Twin

from ._live import LiveConsole, serve_console
from .conftest import PASSWORD, assert_whole_plan_audited

pytestmark = pytest.mark.slow


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ATELIER_SCREENSHOTS", tmp_path / "shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _login(browser: object, live: LiveConsole, name: str) -> object:
    # bypass_csp: wait_for_function evaluates its string in the page, which the console's CSP forbids (no
    # eval); test_security_browser.py checks the pages' own scripts under the CSP.
    ctx = browser.new_context(base_url=live.url, viewport={"width": 1440, "height": 900}, bypass_csp=True)  # type: ignore[attr-defined]
    page = ctx.new_page()
    page.goto("/plant")
    assert "/login" in page.url
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url("**/plant")
    assert page.inner_text("#who").startswith(name)
    return page


def _wait_job(page: object, timeout_s: float) -> str:
    """Wait on a work order's page until it reaches approval or fails; returns the stage shown."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "['awaiting approval', 'failed'].includes(document.querySelector('#job-state').textContent)",
        timeout=timeout_s * 1000,
    )
    return str(page.inner_text("#job-state"))  # type: ignore[attr-defined]


def test_console_end_to_end(browser: object, demo_plant: PlantDescription, tmp_path: Path, shots: Path) -> None:
    """The console as ``atelier console`` serves it: the embedded model plans, the guardrails
    judge, the twin rehearses (in a worker process), people decide, and the executor drives the
    live twin through the robots' own runtimes."""
    with serve_console(demo_plant, tmp_path, render_rehearsals=True) as live:
        store = live.site.backend.store
        # --- a wrong password is a message on the page
        ctx = browser.new_context(base_url=live.url)  # type: ignore[attr-defined]
        p0 = ctx.new_page()
        p0.goto("/login")
        p0.fill("#name", "erin")
        p0.fill("#password", "not the password")
        p0.click("#login")
        assert "wrong password" in p0.inner_text("#errors")
        ctx.close()

        # --- engineer: the live plant view, then a work order in plain words through the model
        erin = _login(browser, live, "erin")
        erin.wait_for_selector("#live-text:text('live')")
        erin.wait_for_function("document.querySelector('#mrow-cnc_1 [data-f=state]').textContent === 'STOPPED'")
        erin.screenshot(path=str(shots / "plant_engineer.png"), full_page=True)

        erin.goto("/work-orders")
        erin.fill("#wo-text", "Reset the conveyor")
        erin.click("#wo-submit")
        erin.wait_for_url("**/work-orders/*")
        erin.wait_for_selector(
            "#job-state:text('drafting'), #job-state:text('checking'), #job-state:text('rehearsing')"
        )
        assert _wait_job(erin, 180) == "awaiting approval", erin.inner_text("#job")
        words_plan = erin.get_attribute("#open-plan", "href")
        assert words_plan

        # --- a recipe: a malformed parameter is a message; then the real one
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
        erin.wait_for_selector("#job-state:text('checking'), #job-state:text('rehearsing')")
        erin.screenshot(path=str(shots / "work_order_progress.png"), full_page=True)
        assert _wait_job(erin, 300) == "awaiting approval", erin.inner_text("#job")
        erin.click("#open-plan")
        erin.wait_for_url("**/plans/*")
        plan_url = erin.url
        plan_id = int(plan_url.rstrip("/").rsplit("/", 1)[1])
        assert "Waiting for a supervisor" in erin.inner_text("#decision")
        assert erin.query_selector("#approve") is None

        # --- supervisor: reads the plan at a glance, a bad reject, then approves
        sam = _login(browser, live, "sam")
        sam.goto(plan_url)
        assert "rules pass" in sam.inner_text("#v-guardrails")
        assert "0 collisions" in sam.inner_text("#v-rehearsal")
        assert "need" in sam.inner_text("#v-hazard")  # the recipe marks the hand-over hazardous
        assert "hand_over" in sam.inner_text("#gantt")
        sam.screenshot(path=str(shots / "plan_supervisor.png"), full_page=True)
        sam.click("#reject")  # no reason
        assert "Reason for rejecting: please fill this in." in sam.inner_text("#errors")
        sam.fill("#reason", "program 7 is the right one; cycle time checked")
        sam.click("#approve")
        sam.wait_for_selector(".notice")
        assert "approved by sam" in sam.inner_text(".notice")
        # Approved but not yet confirmed: nothing runs.
        assert store.get(plan_id).status == "approved"

        # --- operator: confirms the hazardous step; then the plan runs
        olga = _login(browser, live, "olga")
        olga.goto("/operator")
        box = olga.wait_for_selector("#confirmations .confirm")
        assert "hand_over" in box.inner_text() and "hazardous" in box.inner_text()
        olga.screenshot(path=str(shots / "operator_confirm.png"), full_page=True)
        box.query_selector("input[name=reason]").fill("nobody near the hand-over point")
        box.query_selector("button:text('Confirm')").click()
        olga.wait_for_selector(".notice")
        assert "confirmed by olga" in olga.inner_text(".notice")

        # --- the plan runs on the twin: the conveyor feeds, the UR5e picks, the plan page says running
        sam.goto("/plant")
        sam.wait_for_function(
            "document.querySelector('#mrow-conveyor_1 [data-f=state]').textContent === 'EXECUTE'", timeout=20_000
        )
        sam.wait_for_function(
            "document.querySelector('#rrow-ur5e_1 [data-f=skill]').textContent.includes('pick')", timeout=60_000
        )
        sam.screenshot(path=str(shots / "plant_running.png"), full_page=True)
        sam.goto(plan_url)
        assert sam.inner_text("#plan-state") == "running"
        assert store.get(plan_id).status == "running"

        # --- e-stop: anyone may trip, only an operator resets; the robot's supervisor stops it
        olga.goto("/operator")
        olga.click("#trip-ur5e_1")
        olga.wait_for_selector("#estop-ur5e_1 .st-estop")
        assert live.site.plant_agents.runtimes["ur5e_1"].supervisor.estopped
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
        assert not live.site.plant_agents.runtimes["ur5e_1"].supervisor.estopped
        sam.goto("/plant")
        sam.wait_for_function("document.querySelector('#rrow-ur5e_1 [data-f=safety]').textContent !== 'E-STOP'")

        # --- the e-stop stopped the plan mid-step: the plan page says so, with the reason
        deadline = time.monotonic() + 60
        while store.get(plan_id).status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        row = store.get(plan_id)
        sam.goto(plan_url)
        sam.screenshot(path=str(shots / "plan_after_estop.png"), full_page=True)
        assert row.status in ("paused", "failed", "done"), row.status
        if row.status != "done":
            assert "e-stop" in "; ".join(row.reasons).lower(), row.reasons
            assert "e-stop" in sam.inner_text("#decision").lower()  # the page says why it stopped
        assert "confirmed by olga" in sam.inner_text("#v-hazard")
        if row.status == "paused":  # a recovery plan was drafted into the queue
            deadline = time.monotonic() + 120
            while not any(r.parent_id == plan_id for r in store.plans(50)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert any(r.parent_id == plan_id for r in store.plans(50))

        # --- the page keeps up with the twin
        sam.goto("/plant")
        sam.wait_for_selector("#live-text:text('live')")
        latencies = _page_latencies(live, sam)
        print(
            f"page latency (twin change -> DOM): median {statistics.median(latencies) * 1000:.0f} ms, "
            f"worst {max(latencies) * 1000:.0f} ms"
        )
        assert max(latencies) < 0.5, latencies

        assert_whole_plan_audited(store)


def _page_latencies(live: LiveConsole, page: object, samples: int = 6) -> list[float]:
    """Twin change (on the twin thread) to the changed text in the page's machines table: the
    inspection station is stopped and reset in turn."""
    out = []
    twin = live.site.live
    insp = "document.querySelector('#mrow-insp_1 [data-f=state]').textContent"
    moves = {
        State.STOPPED: (Command.RESET, State.RESETTING, State.IDLE),
        State.IDLE: (Command.STOP, State.STOPPING, State.STOPPED),
    }
    for _ in range(samples):
        current = twin.read(lambda t: t.machines["insp_1"].state)
        if current not in moves:
            break
        cmd, want, settle = moves[current]

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


def _recipe_plan(browser: object, live: LiveConsole) -> object:
    """An engineer's page on the plan of a ``machine_part`` work order, once it awaits approval."""
    erin = _login(browser, live, "erin")
    erin.goto("/work-orders")
    erin.select_option("#wo-recipe", "machine_part")
    erin.fill("#wo-text", "machine one blank and sort it")
    erin.click("#wo-submit")
    erin.wait_for_url("**/work-orders/*")
    assert _wait_job(erin, 600) == "awaiting approval", erin.inner_text("#job")
    erin.click("#open-plan")
    erin.wait_for_url("**/plans/*")
    return erin


def test_the_plan_page_shows_the_risk_of_perturbed_rehearsals(
    browser: object, demo_plant: PlantDescription, tmp_path: Path, shots: Path
) -> None:
    """A console configured for 3 perturbed rehearsals on 2 processes: the supervisor reads the
    success rate, the closest approach against the protective distance and the makespan on the
    plan page, and the worst run's frames are among the evidence."""
    from llm_coordinator.config import CoordinatorConfig

    config = CoordinatorConfig(rehearsals=3, rehearsal_workers=2)
    with serve_console(demo_plant, tmp_path, render_rehearsals=True, config=config) as live:
        erin = _recipe_plan(browser, live)
        sam = _login(browser, live, "sam")
        sam.goto(erin.url)
        risk = sam.inner_text("#risk")
        assert "3 of 3 perturbed rehearsals clean (100%), on 2 processes" in risk, risk
        assert "closest approach of a person to a robot" in risk and "ISO/TS 15066" in risk
        assert "makespan p50" in risk and "worst run: seed" in risk
        assert sam.query_selector("img[alt^='rehearsal frame worst_seed']") is not None
        assert sam.query_selector("img[alt='rehearsal frame risk_separation.png']") is not None
        sam.locator("#rehearsal").screenshot(path=str(shots / "plan_risk.png"))


def test_an_operator_overrules_an_inspection_verdict(
    browser: object, demo_plant: PlantDescription, tmp_path: Path, shots: Path
) -> None:
    """The rehearsal's inspection is on the plan page and the plant page: the camera's image with
    the vision model's heat map, the verdict and its confidence. An operator overrules it with a
    reason; the overrule is in the audit log and the image is kept as a labelled example. An
    engineer sees the verdict but has no overrule form."""
    import json

    with serve_console(demo_plant, tmp_path, render_rehearsals=False) as live:
        erin = _recipe_plan(browser, live)
        plan_url = erin.url
        text = erin.inner_text("#inspections")
        assert "insp_1 judged part_" in text and "confidence" in text, text
        assert erin.query_selector("#inspections form.overrule") is None  # an engineer does not overrule
        img = erin.query_selector("#inspections img")
        assert img is not None and erin.evaluate("i => i.naturalWidth", img) > 100  # the image is served
        olga = _login(browser, live, "olga")
        olga.goto(plan_url)
        verdict = "pass" if "pass" in olga.inner_text("#inspections figcaption") else "fail"
        olga.locator("#inspections").screenshot(path=str(shots / "plan_inspection.png"))
        other = "crack" if verdict == "pass" else "good"
        olga.select_option("#inspections select[name=label]", other)
        olga.fill("#inspections input[name=reason]", "a hairline crack under the light")
        olga.click("#inspections form.overrule button")
        olga.wait_for_load_state()
        assert f"Verdict overruled to {other} by olga" in olga.inner_text("body")
        assert f"overruled to {other} by olga" in olga.inner_text("#inspections")
        # Overruling to what it already says is refused, with the reason.
        olga.select_option("#inspections select[name=label]", other)
        olga.fill("#inspections input[name=reason]", "again")
        olga.click("#inspections form.overrule button")
        olga.wait_for_load_state()
        assert f"overruled to {other} already; there is nothing to overrule" in olga.inner_text("body")
        kept = list((tmp_path / "vision_examples" / "blank_al" / other).glob("*.png"))
        assert len(kept) == 1 and kept[0].stat().st_size > 1000
        note = json.loads(kept[0].with_suffix(".json").read_text())
        assert note["actor"] == "olga" and note["label"] == other
        from llm_coordinator.store import Store

        rows = [
            r for r in Store(f"sqlite:///{tmp_path / 'site.db'}").audit_rows() if r.action == "inspection_overruled"
        ]
        assert len(rows) == 1 and rows[0].actor == "olga" and rows[0].payload["label"] == other
        olga.goto("/plant")
        assert "Last inspections" in olga.inner_text("#inspections")
        olga.locator("#inspections").screenshot(path=str(shots / "plant_inspection.png"))

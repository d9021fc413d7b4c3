"""The console over its own twin says so on every page, rehearses from the twin as it is now,
and refuses a recipe whose picks find no part there with a reason that says where the parts
went (the twin "drifted": earlier runs used the blanks), instead of a rehearsal that fails on
a conveyor that never delivers; a rehearsal that fails placing a part onto parts already there
says so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import mujoco

from llm_coordinator.console.wiring import occupied_hint
from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.plan import RecipeIntent
from llm_coordinator.rehearsal import RehearsalReport, TwinObservations
from plant.config import PlantDescription
from sim.twin import Twin

from ._live import serve_console
from .conftest import PASSWORD


def test_a_recipe_without_blanks_is_refused_before_its_rehearsal(demo_plant: PlantDescription, tmp_path: Path) -> None:
    with serve_console(demo_plant, tmp_path) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        r = client.post("/api/session", json={"name": "sam", "password": PASSWORD})
        assert r.status_code == 200
        client.headers["Authorization"] = f"Bearer {r.json()['token']}"
        page = client.get("/plant").text
        assert 'id="plant-mode" data-mode="twin"' in page and "nothing real moves" in page
        assert client.get("/api/plant").json()["mode"] == "twin"
        # Every blank of the plant file (on the belt and in the magazine) went to the output bin
        # in earlier runs.
        spots = demo_plant.bins()["output_bin"].spots_m(0.06, 0.03)
        blanks = [n for n, p in demo_plant.parts.items() if p.type == "blank_al"]
        used = {n: (x, y, z + 0.03) for n, (x, y, z) in zip(blanks, spots, strict=True)}
        live.site.live.submit(lambda t: _put(t, used)).result(10)
        job = client.post("/api/work-orders", json={"recipe": "machine_part"}).json()
        end = time.monotonic() + 30
        state: dict[str, Any] = job
        while state["state"] not in ("awaiting_approval", "failed") and time.monotonic() < end:
            time.sleep(0.05)
            state = client.get(f"/api/work-orders/{job['id']}").json()
        assert state["state"] == "failed", state
        plan = client.get(f"/api/plans/{state['plan_id']}").json()
        assert plan["state"] == "rehearsal_failed"
        why = plan["decision"]
        assert "not rehearsed: step pick_blank (ur5e_1 picks a blank_al at conveyor_pick) would find none" in why
        assert "part_1 at output_bin; part_2 at output_bin" in why
        assert "restart `atelier console --twin`" in why


def _put(twin: Twin, where: dict[str, tuple[float, float, float]]) -> None:
    """Parts moved by hand (free joints set), between two ticks of the twin."""
    m, d = twin.model, twin.data
    for name, xyz in where.items():
        adr = int(m.jnt_qposadr[m.body_jntadr[m.body(name).id]])
        d.qpos[adr : adr + 3] = xyz
    mujoco.mj_forward(m, d)


def test_a_rehearsal_that_fails_placing_onto_parts_says_so(demo_plant: PlantDescription) -> None:
    """After one run of ``machine_part`` the sorted part lies in the output bin where the next
    sort lowers its part, and the Panda's descent stops on it: the reason names the part."""
    protos, notes = expand_recipe(demo_plant, RecipeIntent(goal="recipe", recipe="machine_part"))
    plan = finish_plan(demo_plant, protos, work_order="test", mode="intent", recipe="machine_part", notes=notes)
    failed = {"step": "sort", "agent": "panda_1", "skill": "place", "status": "failed"}
    report = RehearsalReport(False, 0.0, "step sort failed: descend", [failed], TwinObservations(), [], 0.0)
    after_one_run = {"part_1": (1.72, 0.9, 0.82), "part_2": (3.95, 1.6, 0.79)}
    hint = occupied_hint(demo_plant, plan, report, after_one_run)
    assert hint.startswith(" (output_bin already held part_2 when the rehearsal started")
    assert occupied_hint(demo_plant, plan, report, {"part_1": (1.72, 0.9, 0.82)}) == ""
    other = RehearsalReport(False, 0.0, "x", [{**failed, "step": "feed"}], TwinObservations(), [], 0.0)
    assert occupied_hint(demo_plant, plan, other, after_one_run) == ""

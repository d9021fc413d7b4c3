"""Every action of the console, as every role and as nobody, on the API and on the pages.

A request without the right role is refused (API: 401/403; pages: login redirect or a 403
page) and the refusal is in the audit log with the person's name; the right role gets through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from llm_coordinator.console.auth import PERMISSIONS, Action, Role

from .conftest import BY_ROLE, Console


def plan_awaiting(c: Console) -> dict[str, str]:
    h = c.as_("sam")
    job = c.client.post("/api/work-orders", json={"recipe": "machine_part"}, headers=h).json()
    done = c.wait_job(job["id"], h)
    shown = c.backend.store.get(int(str(done["plan_id"]))).content_hash or ""
    return {"plan": str(done["plan_id"]), "step": "hand_over", "hash": shown}


def step_awaiting(c: Console) -> dict[str, str]:
    ids = plan_awaiting(c)
    h = c.as_("sam")
    assert c.client.post(f"/api/plans/{ids['plan']}/approve", json={"reason": "ok"}, headers=h).status_code == 204
    return ids


def plan_rejected(c: Console) -> dict[str, str]:
    ids = plan_awaiting(c)
    h = c.as_("sam")
    r = c.client.post(f"/api/plans/{ids['plan']}/reject", json={"reason": "wrong program"}, headers=h)
    assert r.status_code == 204
    return ids


def estop_latched(c: Console) -> dict[str, str]:
    h = c.as_("olga")
    assert c.client.post("/api/estop/trip", json={"robot": "ur5e_1", "reason": "test"}, headers=h).status_code == 204
    return {}


def inspection_judged(c: Console) -> dict[str, str]:
    """A plan whose rehearsal judged a part (this console's twin is a fake: the verdict's
    evidence is written as the real twin writes it, the shipped model judging a blank image),
    and a label other than the verdict."""
    import numpy as np

    from policies.vision import SHIPPED, VisionModel
    from sim.vision import Inspection, write_inspection

    ids = plan_awaiting(c)
    store, pid = c.backend.store, int(ids["plan"])
    image = np.zeros((128, 128, 3), np.uint8)
    verdict = VisionModel(SHIPPED / "vision_demo_cell_blank_al").judge(image)
    out = c.backend.coordinator.evidence_dir / f"plan_{pid}"
    path = write_inspection(out, 1, Inspection("insp_1", "part_1", 1.0, verdict, image), c.backend.plant)
    old = store.rehearsal(pid)
    assert old is not None
    store.add_rehearsal(pid, old.content_hash, old.ok, old.makespan_s, old.report, [*old.evidence, str(path)])
    return {**ids, "image": path.name, "label": "crack" if verdict.passed else "good"}


def nothing(c: Console) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Case:
    action: Action
    setup: Callable[[Console], dict[str, str]]
    api: tuple[str, str, dict[str, object] | None]  # method, path, JSON body
    page: tuple[str, str, dict[str, str] | None]  # method, path, form


CASES = [
    Case(Action.VIEW, nothing, ("GET", "/api/plans", None), ("GET", "/plans", None)),
    Case(Action.VIEW, nothing, ("GET", "/api/audit", None), ("GET", "/plant", None)),
    Case(Action.VIEW, nothing, ("GET", "/api/confirmations", None), ("GET", "/operator", None)),
    Case(Action.VIEW, plan_awaiting, ("GET", "/api/plans/{plan}", None), ("GET", "/plans/{plan}", None)),
    Case(Action.VIEW, nothing, ("GET", "/api/work-orders", None), ("GET", "/work-orders", None)),
    Case(
        Action.SUBMIT_WORK_ORDER,
        nothing,
        ("POST", "/api/work-orders", {"recipe": "inspect_part"}),
        ("POST", "/work-orders", {"recipe": "inspect_part", "text": ""}),
    ),
    Case(
        Action.SUBMIT_WORK_ORDER,
        plan_rejected,
        ("POST", "/api/plans/{plan}/replan", None),
        ("POST", "/plans/{plan}/replan", {}),
    ),
    Case(
        Action.APPROVE_PLAN,
        plan_awaiting,
        ("POST", "/api/plans/{plan}/approve", {"reason": "looks right"}),
        ("POST", "/plans/{plan}/approve", {"reason": "looks right", "plan_hash": "{hash}"}),
    ),
    Case(
        Action.REJECT_PLAN,
        plan_awaiting,
        ("POST", "/api/plans/{plan}/reject", {"reason": "wrong program"}),
        ("POST", "/plans/{plan}/reject", {"reason": "wrong program"}),
    ),
    Case(
        Action.CONFIRM_STEP,
        step_awaiting,
        ("POST", "/api/plans/{plan}/steps/{step}/confirm", {"reason": "area clear"}),
        ("POST", "/operator/confirm", {"plan_id": "{plan}", "step_id": "{step}", "reason": "area clear"}),
    ),
    Case(
        Action.REFUSE_STEP,
        step_awaiting,
        ("POST", "/api/plans/{plan}/steps/{step}/refuse", {"reason": "person at the cell"}),
        ("POST", "/operator/refuse", {"plan_id": "{plan}", "step_id": "{step}", "reason": "person at the cell"}),
    ),
    Case(
        Action.TRIP_ESTOP,
        nothing,
        ("POST", "/api/estop/trip", {"robot": "panda_1", "reason": "drill"}),
        ("POST", "/estop/trip", {"robot": "panda_1", "reason": "drill"}),
    ),
    Case(
        Action.OVERRULE_INSPECTION,
        inspection_judged,
        ("POST", "/api/plans/{plan}/inspections/{image}/overrule", {"label": "{label}", "reason": "seen by eye"}),
        (
            "POST",
            "/plans/{plan}/inspections/overrule",
            {"image": "{image}", "label": "{label}", "reason": "seen by eye"},
        ),
    ),
    Case(
        Action.RESET_ESTOP,
        estop_latched,
        ("POST", "/api/estop/reset", {"robot": "ur5e_1", "area_clear": True}),
        ("POST", "/estop/reset", {"robot": "ur5e_1", "area_clear": "yes"}),
    ),
]

WHO = [None, *Role]


def _fill(value: object, ids: dict[str, str]) -> object:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def test_every_action_is_covered() -> None:
    assert {c.action for c in CASES} == set(Action)


@pytest.mark.parametrize("who", WHO, ids=lambda r: "anonymous" if r is None else r.value)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.action.value}:{c.api[1]}")
def test_api_refuses_the_wrong_role(console: Console, case: Case, who: Role | None) -> None:
    ids = case.setup(console)
    method, path, body = case.api
    name = None if who is None else BY_ROLE[who]
    headers = console.as_(name)
    r = console.client.request(method, str(_fill(path, ids)), json=_fill(body, ids), headers=headers)
    if who is None:
        assert r.status_code == 401, r.text
    elif who in PERMISSIONS[case.action]:
        assert r.status_code in (200, 202, 204), r.text
    else:
        assert r.status_code == 403, r.text
        assert who.value in r.json()["detail"]
        refused = [a for a in console.records if a.action == "refused"]
        assert refused and refused[-1].actor == name and refused[-1].subject == case.action.value


@pytest.mark.parametrize("who", WHO, ids=lambda r: "anonymous" if r is None else r.value)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.action.value}:{c.page[1]}")
def test_pages_refuse_the_wrong_role(console: Console, case: Case, who: Role | None) -> None:
    ids = case.setup(console)
    method, path, form = case.page
    console.client.cookies.clear()
    if who is not None:
        console.login(BY_ROLE[who])  # the cookie, as a browser would
    r = console.client.request(method, str(_fill(path, ids)), data=_fill(form, ids), follow_redirects=False)  # type: ignore[arg-type]
    if who is None:
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), r.text
    elif who in PERMISSIONS[case.action]:
        assert r.status_code in (200, 303), r.text
        if r.status_code == 303:
            assert not r.headers["location"].startswith("/login")
    else:
        assert r.status_code == 403, r.text
        assert "Not allowed" in r.text and f"A {who.value} may not" in r.text
        assert "Traceback" not in r.text


def test_actions_are_audited_with_the_persons_name(console: Console) -> None:
    ids = step_awaiting(console)
    h = console.as_("olga")
    console.client.post(f"/api/plans/{ids['plan']}/steps/hand_over/confirm", json={"reason": "clear"}, headers=h)
    console.client.post("/api/estop/trip", json={"robot": None, "reason": "drill"}, headers=h)
    console.client.post("/api/estop/reset", json={"robot": "panda_1", "area_clear": True}, headers=h)
    seen = {(a.actor, a.action) for a in console.records}
    # The coordinator's own records: the work order "created", the decision "approved", the
    # operator's "operator_confirmed"; the console adds logins and e-stops to the same log.
    for expected in [
        ("sam", "login"),
        ("sam", "created"),
        ("sam", "approved"),
        ("olga", "operator_confirmed"),
        ("olga", "estop_trip"),
        ("olga", "estop_reset"),
    ]:
        assert expected in seen


def test_openapi_document_describes_the_api(console: Console) -> None:
    doc = console.client.get("/api/openapi.json").json()
    paths = doc["paths"]
    for p in [
        "/api/session",
        "/api/plant",
        "/api/plant/stream",
        "/api/plans",
        "/api/plans/{plan_id}",
        "/api/plans/{plan_id}/approve",
        "/api/plans/{plan_id}/reject",
        "/api/plans/{plan_id}/steps/{step_id}/confirm",
        "/api/plans/{plan_id}/steps/{step_id}/refuse",
        "/api/estop/trip",
        "/api/estop/reset",
        "/api/work-orders",
        "/api/audit",
    ]:
        assert p in paths, p
    assert not any(not p.startswith("/api/") for p in paths)
    assert "PlanDetail" in doc["components"]["schemas"]


def test_cross_site_posts_are_refused_but_a_trip_still_stops(console: Console) -> None:
    console.as_(None)
    console.login("olga")
    console.backend.estops.latched["ur5e_1"] = "drill"
    evil = {"Origin": "http://evil.example"}
    r = console.client.post("/estop/reset", data={"robot": "ur5e_1", "area_clear": "yes"}, headers=evil)
    assert r.status_code == 403 and "another site" in r.text
    assert console.backend.estops.state("ur5e_1")[0]
    # Stopping is never refused to a logged-in person: a forged trip is at worst a stop (audited).
    r = console.client.post("/estop/trip", data={"robot": "all"}, headers=evil, follow_redirects=False)
    assert r.status_code == 303
    assert all(console.backend.estops.state(r)[0] for r in console.backend.plant.robots)
    assert any(a.action == "estop_trip_unverified" and a.actor == "olga" for a in console.records)

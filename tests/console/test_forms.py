"""Malformed input gets a clear message on the page (or a 422 with messages on the API), never
a stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_coordinator.cli_console import console_app
from llm_coordinator.console.auth import Role, UserStore, make_engine
from llm_coordinator.console.forms import FormError, check_work_order
from plant.config import PlantDescription

from .conftest import Console


def _page_says(r: object, status: int, *needles: str) -> None:
    text = r.text  # type: ignore[attr-defined]
    assert r.status_code == status, text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]
    assert "Traceback" not in text and "Internal Server Error" not in text
    for n in needles:
        assert n in text, n


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "describe the work in words, or choose a recipe"),
        ({"recipe": "machine_part", "p.machine_part.program": "seven"}, "expected a whole number, not &#39;seven&#39;"),
        ({"recipe": "machine_part", "p.machine_part.program": "99999"}, "above the maximum 9999"),
        ({"recipe": "machine_part", "p.machine_part.part_type": "steel"}, "is not a part type of this plant"),
        ({"recipe": "make_coffee"}, "is not a recipe of this plant"),
        ({"text": "x" * 5000}, "at most 4000 characters"),
        ({"text": "<script>alert(1)</script>"}, None),
    ],
)
def test_work_order_form_mistakes(console: Console, form: dict[str, str], message: str | None) -> None:
    console.as_(None)
    console.login("erin")
    r = console.client.post("/work-orders", data=form, follow_redirects=False)
    if message is None:  # accepted as words; shown escaped later
        assert r.status_code == 303
        page = console.client.get(r.headers["location"])
        assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
        return
    _page_says(r, 422, message)
    assert 'id="wo-form"' in r.text  # the form is there to correct


def test_other_form_mistakes(console: Console) -> None:
    console.as_(None)
    console.login("sam")
    _page_says(console.client.post("/plans/nope/approve", data={"reason": ""}), 404, "There is no plan")
    _page_says(console.client.post("/plans/p1/reject", data={}), 404, "There is no plan")
    _page_says(console.client.get("/plans/does-not-exist"), 404, "There is no plan")
    _page_says(console.client.post("/estop/trip", data={"robot": "r2d2"}), 404, "There is no robot", "ur5e_1")
    console.as_(None)
    console.login("olga")
    _page_says(console.client.post("/estop/reset", data={"robot": "ur5e_1"}), 422, "tick the box")
    _page_says(console.client.post("/operator/confirm", data={"plan_id": "p9"}), 422, "Step: please fill this in.")
    _page_says(
        console.client.post("/operator/refuse", data={"plan_id": "p9", "step_id": "x"}), 422, "Reason for refusing"
    )
    garbled = console.client.post(
        "/operator/confirm", content=b"--xx\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert garbled.status_code in (400, 422) and "Traceback" not in garbled.text
    _page_says(console.client.get("/no/such/page"), 404, "Not found")


def test_login_form_mistakes(console: Console) -> None:
    console.as_(None)
    _page_says(console.client.post("/login", data={"name": "", "password": ""}), 400, "user name and password")
    _page_says(console.client.post("/login", data={"name": "sam", "password": "nope"}), 401, "wrong password")
    creds = {"name": "sam", "password": "correct horse battery", "next": "//evil.example"}
    r = console.client.post("/login", data=creds, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/plant"


def test_api_mistakes_are_422_with_messages(console: Console) -> None:
    h = console.as_("sam")
    r = console.client.post("/api/work-orders", json={"recipe": "machine_part", "params": {"program": "x"}}, headers=h)
    assert r.status_code == 422 and "expected a whole number" in r.json()["detail"][0]
    r = console.client.post("/api/work-orders", json={"recipe": 5}, headers=h)
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    r = console.client.post("/api/plans/p1/reject", json={"reason": ""}, headers=h)
    assert r.status_code == 422 and "Reason" in r.json()["detail"][0]
    r = console.client.post(
        "/api/plans/p1/approve", content=b"{not json", headers={**h, "Content-Type": "application/json"}
    )
    assert r.status_code == 422


def test_check_work_order_reports_every_problem(demo_plant: PlantDescription) -> None:
    with pytest.raises(FormError) as err:
        check_work_order(demo_plant, "", "machine_part", {"program": "-1", "part_type": "gold", "speed": "9"})
    assert len(err.value.messages) == 3
    ok = check_work_order(demo_plant, " machine one ", "machine_part", {"program": "7"})
    assert ok.params == {"part_type": "blank_al", "program": 7} and ok.text == "machine one"


def test_add_user_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'site.db'}"
    runner = CliRunner()
    env = {"ATELIER_CONSOLE_PASSWORD": "a long enough secret"}
    r = runner.invoke(console_app, ["add-user", "olga", "--role", "operator", "--db", db], env=env)
    assert r.exit_code == 0, r.output
    bad = runner.invoke(console_app, ["add-user", "olga", "--role", "operator", "--db", db], env=env)
    assert bad.exit_code == 2 and "exists" in bad.output
    worse = runner.invoke(console_app, ["add-user", "bob", "--role", "boss", "--db", db], env=env)
    assert worse.exit_code == 2 and "unknown role" in worse.output
    users = UserStore(make_engine(db))
    assert [(u.name, u.role) for u in users.users()] == [("olga", Role.OPERATOR)]
    assert users.verify("olga", "a long enough secret") is not None

"""``atelier plan/show/order/replan --json`` and ``atelier plan --reading``, as a program runs them:
the real command in a subprocess, the real store, the real twin for the rehearsal. No model is
needed: orders come in the plan language, or go to the scripted backend of a configuration file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llm_coordinator.store import Store
from tests._cli import atelier

ROOT = Path(__file__).resolve().parents[2]

#: A compound order with a condition: run program 3; if a cycle was counted open the door, else reset.
CONDITIONAL = {
    "outcome": "plan",
    "goals": [
        {"kind": "task", "skill": "run_cycle", "agent": "cnc_1", "args": {"program": 3}},
        {
            "kind": "if",
            "test": {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": 1},
            "then": [{"kind": "task", "skill": "open_door", "agent": "cnc_1"}],
            "otherwise": [{"kind": "task", "skill": "reset", "agent": "cnc_1"}],
        },
    ],
}
#: Program 12000 is out of the CNC's range (1 to 9999).
OUT_OF_RANGE = {"goals": [{"kind": "task", "skill": "run_cycle", "agent": "cnc_1", "args": {"program": 12000}}]}

#: A model that finds nothing the plant can do (a refusal needs no rehearsal).
SCRIPTED = """\
model:
  backend:
    backend: scripted
    replies:
      - text: '{"goal": "cannot", "missing": "a paint booth"}'
"""


def one_document(stdout: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object (on one line) and nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout[:2000]
    doc, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:] == "\n"
    assert isinstance(doc, dict) and doc["schema"] == "atelier.plan/1"
    assert stdout.isascii() and "\x1b" not in stdout
    return doc


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Any]:
    db_file = tmp_path / "atelier.db"
    return {
        "dir": tmp_path,
        "db_file": db_file,
        "opts": ["--db", f"sqlite:///{db_file}", "--plant", str(ROOT / "plants" / "demo_cell.yaml")],
        "evidence": ["--evidence", str(tmp_path / "evidence")],
    }


def write(site: dict[str, Any], name: str, data: object) -> str:
    path = site["dir"] / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def show(site: dict[str, Any], plan_id: int) -> dict[str, Any]:
    r = atelier("show", str(plan_id), "--json", "--db", site["opts"][1], cwd=site["dir"])
    assert r.returncode == 0, r.stderr
    return one_document(r.stdout)


def test_a_conditional_reading_is_planned_rehearsed_and_shown(site: dict[str, Any]) -> None:
    """The whole reading path down to the real twin (a few seconds without frames)."""
    words = "run program 3, open the door if a cycle was counted, else reset"
    reading = write(site, "order.json", CONDITIONAL)
    r = atelier(
        "plan", "--reading", reading, "--order", words, "--no-frames", "--json", *site["opts"], *site["evidence"],
        cwd=site["dir"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = one_document(r.stdout)
    assert doc["status"] == "awaiting_approval" and doc["reason"] == "" and doc["question"] == ""
    assert doc["work_order"] == words and doc["model"] == "none: a reading a person wrote"
    assert re.fullmatch(r"[0-9a-f]{64}", doc["plan_hash"])
    (decision,) = doc["decisions"]
    assert decision["kind"] == "condition" and decision["outcome"] is None
    assert decision["condition"] == {"machine": "cnc_1", "tag": "cycle_count", "op": ">=", "value": 1, "label": ""}
    branches = {s["skill"]: s["when"] for s in doc["steps"] if s["when"]}
    assert branches == {"open_door": {decision["id"]: True}, "reset": {decision["id"]: False}}
    assert {s["status"] for s in doc["steps"]} == {"pending"}
    assert all(set(s) >= {"id", "agent", "skill", "args", "after", "hazardous", "expected_duration_s", "note"}
               for s in doc["steps"])  # fmt: skip
    assert [s["args"] for s in doc["steps"] if s["skill"] == "run_cycle"] == [{"program": 3}]
    rehearsal = doc["rehearsal"]
    assert rehearsal["ok"] and rehearsal["plan_hash"] == doc["plan_hash"] and rehearsal["makespan_s"] > 0
    assert len(rehearsal["variants"]) == 2 and all(v["ok"] for v in rehearsal["variants"])  # both branches
    assert any(e.endswith("planned_gantt.png") for e in rehearsal["evidence"])

    shown = show(site, doc["plan_id"])
    assert shown["plan_hash"] == doc["plan_hash"]
    assert shown["steps"] == doc["steps"] and shown["decisions"] == doc["decisions"]
    assert shown["rehearsal"] == doc["rehearsal"] and shown["status"] == "awaiting_approval"
    # Without --json, show still prints for a person.
    r = atelier("show", str(doc["plan_id"]), "--db", site["opts"][1], cwd=site["dir"])
    assert r.returncode == 0 and "awaiting_approval" in r.stdout and not r.stdout.lstrip().startswith("{")


def test_an_out_of_range_reading_is_refused_with_the_limit(site: dict[str, Any]) -> None:
    reading = write(
        site, "order.yaml", "goals:\n  - {kind: task, skill: run_cycle, agent: cnc_1, args: {program: 12000}}\n"
    )
    r = atelier("plan", "--reading", reading, "--json", *site["opts"], *site["evidence"], cwd=site["dir"])
    assert r.returncode == 1, r.stderr
    doc = one_document(r.stdout)
    assert doc["status"] == "refused" and "9999" in doc["reason"] and "12000" in doc["reason"]
    assert doc["plan_hash"] is None and doc["steps"] == [] and doc["rehearsal"] is None
    assert show(site, doc["plan_id"]) == doc


def test_a_reading_on_stdin_keeps_the_words_escaped(site: dict[str, Any]) -> None:
    """Words with a terminal escape come back exactly, as a JSON escape; a question is a question."""
    words = "machine \x1b[2J\x07 twelve thousand: program 12000 ü"
    r = atelier(
        "plan", "--reading", "-", "--order", words, "--json", *site["opts"], *site["evidence"],
        cwd=site["dir"], stdin=json.dumps(OUT_OF_RANGE),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    doc = one_document(r.stdout)
    assert doc["work_order"] == words and "\\u001b[2J" in r.stdout
    question = {"outcome": "clarify", "question": "which program, 3 or 7?"}
    r = atelier("plan", "--reading", "-", "--json", *site["opts"], cwd=site["dir"], stdin=json.dumps(question))
    assert r.returncode == 1, r.stderr
    doc = one_document(r.stdout)
    assert doc["status"] == "clarify" and "which program" in doc["question"] and doc["reason"] == ""


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("broken.json", '{"goals": [\n  {"kind": "task", "skill": "home",}\n]}', "broken.json:2:36: not valid JSON"),
        ("broken.yaml", "goals:\n  - kind: task\n    op: >=\n", "broken.yaml:3:10: not valid YAML"),
        ("list.yaml", "- kind: task\n", "list.yaml:1:1: (top level): a reading is a mapping"),
        (
            "fields.yaml",
            "goals:\n  - kind: if\n    test: {machine: cnc_1, tag: cycle_count, op: '=>', value: 1}\n"
            "    then:\n      - {kind: task, skill: open_door, colour: red}\n  - kind: fly\n",
            "fields.yaml:3:46: goals[0].test.op: Input should be",
        ),
    ],
)
def test_a_malformed_reading_stores_nothing(site: dict[str, Any], name: str, text: str, where: str) -> None:
    r = atelier("plan", "--reading", write(site, name, text), "--json", *site["opts"], cwd=site["dir"])
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert where in r.stderr, r.stderr
    if name == "fields.yaml":
        assert "fields.yaml:5:40: goals[0].then[0].colour: unknown field" in r.stderr
        assert "fields.yaml:6:5: goals[1]: kind 'fly' is not one of" in r.stderr
    assert not site["db_file"].exists()  # not even the database was made


def test_orders_read_by_a_model_print_one_document(site: dict[str, Any]) -> None:
    """plan, order and replan with --json, the scripted model refusing: the human text (the
    feedback of replan) goes to stderr, the document to stdout, with the model named."""
    config = ["--config", write(site, "scripted.yaml", SCRIPTED)]
    r = atelier("plan", "paint the part blue", "--json", *config, *site["opts"], *site["evidence"], cwd=site["dir"])
    assert r.returncode == 1, r.stderr
    first = one_document(r.stdout)
    assert first["status"] == "refused" and first["model"] == "scripted" and "model found none" in first["reason"]
    r = atelier("order", "paint the part blue", "--json", *config, *site["opts"], *site["evidence"], cwd=site["dir"])
    assert r.returncode == 1, r.stderr
    assert one_document(r.stdout)["status"] == "refused"
    r = atelier("replan", str(first["plan_id"]), "--json", *config, *site["opts"], *site["evidence"], cwd=site["dir"])
    assert r.returncode == 1, r.stderr
    again = one_document(r.stdout)
    assert again["parent_id"] == first["plan_id"] and again["work_order"] == "paint the part blue"
    assert "feedback: refused" in r.stderr
    assert len(Store(site["opts"][1]).plans()) == 3
    # An unknown plan: no document, the reason on stderr, exit 2.
    r = atelier("show", "99", "--json", "--db", site["opts"][1], cwd=site["dir"])
    assert r.returncode == 2 and r.stdout == "" and "no plan 99" in r.stderr

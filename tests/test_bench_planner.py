"""The scenario suite's judge (bench/bench_planner.py) on synthetic outcomes, and its order files.

No model and no twin: the judge is a pure function of an order, a status, a plan, reasons and
the rehearsal's outcome."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llm_coordinator.plan import Condition, Decision, Plan, Step

ROOT = Path(__file__).resolve().parents[1]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_planner", ROOT / "bench" / "bench_planner.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_planner"] = module
    spec.loader.exec_module(module)
    return module


bp = _load_bench()

PLAN_ORDER: dict[str, Any] = {
    "id": "x_01",
    "split": "test",
    "expect": "plan",
    "steps": [
        {"agent": "doser", "skill": "dose", "args": {"volume": 0.5}, "count": 2},
        {"agent": "arm", "skill": "place", "args": {"location": "bin"}},
    ],
    "forbid": [{"agent": "arm", "skill": "place", "args": {"location": "reject"}}],
}


def _plan(*steps: tuple[str, str, dict[str, Any]], decisions: tuple[str, ...] = ()) -> Plan:
    return Plan(
        work_order="synthetic",
        mode="intent",
        steps=[Step(id=f"s{k}", agent=a, skill=s, args=args) for k, (a, s, args) in enumerate(steps)],
        decisions=[
            Decision(id=f"d{k}", kind=kind, condition=Condition(machine="m", tag="t", value=1))  # type: ignore[arg-type]
            for k, kind in enumerate(decisions)
        ],
    )


GOOD = (
    ("doser", "dose", {"volume": 0.5000000001}),
    ("doser", "dose", {"volume": 0.5, "speed": 3}),
    ("arm", "pick", {"location": "scale"}),
    ("arm", "place", {"location": "bin"}),
)


def test_a_plan_with_every_expected_step_that_rehearsed_is_right() -> None:
    j = bp.judge(PLAN_ORDER, "planned", _plan(*GOOD), rehearsal_ok=True)
    assert (j.verdict, j.reached_approval, j.wrong_at_approval) == ("right", True, False)


def test_a_missing_count_is_partial_and_a_wrong_plan_at_approval() -> None:
    j = bp.judge(PLAN_ORDER, "planned", _plan(GOOD[0], GOOD[3]), rehearsal_ok=True)
    assert j.verdict == "partial" and "x1/2" in j.why
    assert j.reached_approval and j.wrong_at_approval


def test_arguments_are_a_subset_and_must_match() -> None:
    wrong_volume = (("doser", "dose", {"volume": 0.75}), GOOD[1], GOOD[3])
    j = bp.judge(PLAN_ORDER, "planned", _plan(*wrong_volume), rehearsal_ok=True)
    assert j.verdict == "partial"
    program = {
        "id": "x",
        "split": "dev",
        "expect": "plan",
        "steps": [{"agent": "cnc", "skill": "run", "args": {"program": 7}}],
    }
    assert bp.judge(program, "planned", _plan(("cnc", "run", {"program": 7.0})), rehearsal_ok=True).verdict == "right"


def test_a_failed_rehearsal_is_partial_and_never_reaches_approval() -> None:
    j = bp.judge(PLAN_ORDER, "planned", _plan(*GOOD), rehearsal_ok=False, rehearsal_reason="arm hit cnc")
    assert (j.verdict, j.reached_approval, j.wrong_at_approval) == ("partial", False, False)
    assert "arm hit cnc" in j.why


def test_a_forbidden_step_is_wrong_and_counted_at_approval() -> None:
    j = bp.judge(PLAN_ORDER, "planned", _plan(*GOOD, ("arm", "place", {"location": "reject"})), rehearsal_ok=True)
    assert (j.verdict, j.wrong_at_approval) == ("wrong", True)


@pytest.mark.parametrize("status", ["refused", "clarify", "rejected", "failed"])
def test_no_plan_where_one_is_expected_is_wrong(status: str) -> None:
    j = bp.judge(PLAN_ORDER, status, None, ["no"])
    assert (j.verdict, j.reached_approval) == ("wrong", False)


@pytest.mark.parametrize(("key", "kind"), [("conditional", "condition"), ("loop", "repetition")])
def test_conditions_and_repetitions_are_required_when_asked(key: str, kind: str) -> None:
    order = {**PLAN_ORDER, key: True}
    assert bp.judge(order, "planned", _plan(*GOOD), rehearsal_ok=True).verdict == "partial"
    other = "repetition" if kind == "condition" else "condition"
    assert bp.judge(order, "planned", _plan(*GOOD, decisions=(other,)), rehearsal_ok=True).verdict == "partial"
    assert bp.judge(order, "planned", _plan(*GOOD, decisions=(kind,)), rehearsal_ok=True).verdict == "right"


REFUSE = {"id": "x_02", "split": "test", "expect": "refused", "reason": ["5 l", "Doser"]}
CLARIFY = {"id": "x_03", "split": "test", "expect": "clarify"}


def test_refusals() -> None:
    assert bp.judge(REFUSE, "refused", None, ["the DOSER takes at most 5 L"]).verdict == "right"
    assert bp.judge(REFUSE, "refused", None, ["the doser cannot"]).verdict == "partial"
    assert bp.judge(REFUSE, "clarify", None, ["which doser?"]).verdict == "partial"
    assert bp.judge(REFUSE, "rejected", None, ["rule"]).verdict == "partial"
    j = bp.judge(REFUSE, "planned", _plan(*GOOD), rehearsal_ok=True)
    assert (j.verdict, j.wrong_at_approval) == ("wrong", True)
    j = bp.judge(REFUSE, "planned", _plan(*GOOD), rehearsal_ok=False, rehearsal_reason="stop")
    assert (j.verdict, j.reached_approval, j.wrong_at_approval) == ("wrong", False, False)


def test_questions_back() -> None:
    assert bp.judge(CLARIFY, "clarify", None, ["which part?"]).verdict == "right"
    assert bp.judge(CLARIFY, "refused", None, ["no"]).verdict == "partial"
    assert bp.judge(CLARIFY, "planned", _plan(*GOOD), rehearsal_ok=True).wrong_at_approval


def test_an_unrehearsed_plan_counts_as_reaching_approval() -> None:
    j = bp.judge(REFUSE, "planned", _plan(*GOOD), rehearsal_ok=None)
    assert j.reached_approval and j.wrong_at_approval


def test_causes_of_rows_that_are_not_right() -> None:
    row = {"why": "missing arm.place", "status": "planned", "expect": "plan"}
    assert "missing" in bp.cause(row)
    assert bp.cause({"why": "x", "status": "clarify", "expect": "plan"}) == "clarify where plan was expected"


@pytest.mark.parametrize("plant", bp.PLANTS)
def test_the_order_files_load_with_an_id_and_a_split(plant: str) -> None:
    plant_path, orders = bp.load_orders(plant)
    assert plant_path.is_file() and orders
    for o in orders:
        assert isinstance(o.get("id"), str) and o["id"], o
        assert o.get("split") in bp.SPLITS, o["id"]
        assert o.get("expect") in ("plan", "refused", "clarify"), o["id"]
    test = bp.select(orders, "test")
    assert test and all(o["split"] == "test" for o in test)
    assert len(bp.select(orders, "all")) == len(orders)
    assert len(bp.select(orders, "dev", limit=3)) == 3


@pytest.mark.slow
def test_orders_dealt_to_two_processes_get_the_verdicts_of_a_serial_run(tmp_path: Path) -> None:
    """The scenario suite with the embedded model and the real twin, serially and dealt to two
    worker processes: the same rows, order by order."""
    import json
    import subprocess

    def run(name: str, *extra: str) -> list[dict[str, Any]]:
        out = tmp_path / f"{name}.json"
        cmd = [sys.executable, str(ROOT / "bench" / "bench_planner.py"), "--plants", "demo_cell", "--split", "dev"]
        r = subprocess.run(
            [*cmd, "--limit", "4", "--json", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return list(json.loads(out.read_text(encoding="utf-8"))["rows"])

    serial = run("serial")
    spread = run("spread", "--workers", "2")
    keys = ("id", "status", "verdict", "rehearsal_ok", "steps", "reading")
    assert [{k: r[k] for k in keys} for r in spread] == [{k: r[k] for k in keys} for r in serial]
    assert len(serial) == 4

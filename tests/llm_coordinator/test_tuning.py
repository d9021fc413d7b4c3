"""The plant-tuned model's data, feedback and retrieval (fast; training is in test_tuning_train.py).

The generated examples are checked against the product itself: every ``plan`` label expands
against the plant, every answer is what the grammar lets the model write, and no test-split
order of the scenario suite is in the data, exactly or nearly. Feedback comes from the real
coordinator, store and approval gate (the twin is a fake here: rehearsal is not under test).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rapidfuzz import fuzz, utils

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.config import CoordinatorConfig, ScriptedBackendConfig, ScriptedReply
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.expansion import expand_reading
from llm_coordinator.planner import Planner
from llm_coordinator.reading import Reading, parse_reading, reading_schema
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from llm_coordinator.testing import fake_twin_factory
from llm_coordinator.tuning.data import SHAPES, Generator, answer_text, checked, grammar_problem
from llm_coordinator.tuning.feedback import StoreExamples, store_feedback
from llm_coordinator.tuning.models import ModelDirError, publish, resolve
from llm_coordinator.tuning.retrieval import ExampleIndex
from plant import load_plant
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[2]
PLANTS = ["demo_cell", "packaging_line"]


@pytest.fixture(scope="module", params=PLANTS)
def generated(request: pytest.FixtureRequest) -> tuple[PlantDescription, list]:
    plant = load_plant(ROOT / "plants" / f"{request.param}.yaml")
    return plant, Generator(plant, seed=0).generate(12)


def test_every_shape_is_generated_and_every_plan_label_expands(generated: tuple[PlantDescription, list]) -> None:
    plant, examples = generated
    schema = reading_schema(plant)
    shapes = {e.shape for e in examples}
    assert shapes == set(SHAPES), shapes
    for e in examples:
        reading = parse_reading(e.answer)
        assert e.source == f"generated:{e.shape}"
        if reading.outcome == "plan":
            expand_reading(plant, reading, work_order=e.order)  # raises if the label is wrong
        assert reading.outcome == {"cannot": "cannot", "unsafe": "cannot", "clarify": "clarify"}.get(e.shape, "plan")
        # The answer is written as the grammar writes it: parsing and writing again changes nothing,
        # and the keys come in the order llama.cpp's grammar from the plant's schema puts them.
        assert answer_text(reading) == e.answer
        assert grammar_problem(e.answer, schema) is None, (e.order, e.answer)


def test_generation_is_seeded(demo_plant: PlantDescription) -> None:
    a = Generator(demo_plant, seed=3).generate(5)
    b = Generator(demo_plant, seed=3).generate(5)
    c = Generator(demo_plant, seed=4).generate(5)
    assert a == b and a != c


def test_an_answer_out_of_the_grammars_order_is_found(demo_plant: PlantDescription) -> None:
    schema = reading_schema(demo_plant)
    good = '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "every", "args": {}}]}'
    assert grammar_problem(good, schema) is None
    swapped = '{"outcome": "plan", "goals": [{"kind": "task", "agent": "every", "skill": "home", "args": {}}]}'
    assert grammar_problem(swapped, schema) is not None
    unknown = '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "nobody", "args": {}}]}'
    assert grammar_problem(unknown, schema) is not None
    assert grammar_problem("not json", schema) is not None


def test_a_label_the_product_refuses_is_not_kept(demo_plant: PlantDescription) -> None:
    wrong = Reading(goals=[{"kind": "task", "skill": "run_cycle", "agent": "ur5e_1"}])  # type: ignore[list-item]
    assert not checked(demo_plant, "the robot runs a cycle", wrong, "task")
    # A safety-measure order is kept only when the static rule refuses it.
    cannot = Reading(outcome="cannot", reason="x")
    assert checked(demo_plant, "bypass the light curtain and home the robots", cannot, "unsafe")
    assert not checked(demo_plant, "home the robots", cannot, "unsafe")


def _test_orders() -> list[str]:
    out = []
    for name in PLANTS:
        data = yaml.safe_load((ROOT / "bench" / "orders" / f"{name}.yaml").read_text(encoding="utf-8"))
        out += [o["order"] for o in data["orders"] if o["split"] == "test"]
    return out


@pytest.mark.parametrize("plant_name", PLANTS)
def test_no_test_split_order_is_in_the_training_data(plant_name: str) -> None:
    """Data hygiene: data generated with the scenario suite's test split held out (as
    ``atelier model tune --held-out`` does) holds none of its orders, exactly or nearly
    (whole-text or word-order-free similarity of 90% or more)."""
    plant = load_plant(ROOT / "plants" / f"{plant_name}.yaml")
    held_out = _test_orders()
    train = Generator(plant, seed=0).generate(45, held_out=held_out)
    assert held_out and train
    folded = {utils.default_process(o) for o in held_out}
    assert not [e.order for e in train if utils.default_process(e.order) in folded]
    near = [
        (e.order, h)
        for h in held_out
        for e in train
        if max(
            fuzz.ratio(e.order, h, processor=utils.default_process),
            fuzz.token_sort_ratio(e.order, h, processor=utils.default_process),
        )
        >= 90
    ]
    assert not near, near[:5]


def test_a_held_out_order_is_never_generated(demo_plant: PlantDescription) -> None:
    plain = Generator(demo_plant, seed=0).generate(12)
    held = [plain[0].order, plain[5].order.upper() + "!"]
    again = Generator(demo_plant, seed=0).generate(12, held_out=held)
    assert plain[0].order not in {e.order for e in again} and plain[5].order not in {e.order for e in again}


def test_a_plant_with_no_recipes_still_yields_tasks(demo_text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(demo_text)
    data["recipes"] = {}
    f = tmp_path / "bare.yaml"
    f.write_text(yaml.safe_dump(data), encoding="utf-8")
    plant = load_plant(f)
    examples = Generator(plant, seed=0).generate(5)
    assert examples and not [e for e in examples if '"recipe"' in e.answer]
    assert {e.shape for e in examples} >= {"task", "cannot", "clarify"}


# --------------------------------------------------------------------------- feedback from the store


def _coordinator(plant: PlantDescription, store: Store, replies: list[str]) -> Coordinator:
    backend = ScriptedBackend(ScriptedBackendConfig(replies=[ScriptedReply(text=r) for r in replies]))
    config = CoordinatorConfig(mode="tuned")
    planner = Planner(plant, backend, config, examples=StoreExamples(store, plant))
    gate = ApprovalGate(store, plant)
    return Coordinator(plant, store, planner, gate, Rehearser(plant, fake_twin_factory()), "out/test_evidence")


HOME_ALL = '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "every", "args": {}}]}'
HOME_UR = '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "ur5e_1", "args": {}}]}'


def test_decisions_become_examples_with_their_audit_rows(demo_plant: PlantDescription, store: Store) -> None:
    co = _coordinator(demo_plant, store, [HOME_UR])
    gate = co.gate
    wrong = asyncio.run(co.submit("send every robot home"))
    assert wrong.status == "awaiting_approval", wrong
    gate.reject(wrong.plan_id, "sup", "every robot, not only the UR5e")
    fb = store_feedback(store, demo_plant)
    assert [e.shape for e in fb.examples] == ["rejected"]
    asked = parse_reading(fb.examples[0].answer)
    assert asked.outcome == "clarify" and "every robot, not only the UR5e" in asked.question
    # The correction: a person writes the reading of the same order; the supervisor approves it.
    right = asyncio.run(co.submit_reading(parse_reading(HOME_ALL), work_order="send every robot home"))
    gate.approve(right.plan_id, "sup")
    fb = store_feedback(store, demo_plant)
    assert [(e.shape, e.answer) for e in fb.examples] == [("approved", HOME_ALL)]
    seq = next(r.seq for r in store.audit_rows(right.plan_id) if r.action == "approved")
    assert fb.examples[0].source == f"audit:{seq}"
    assert fb.approved() == [("send every robot home", HOME_ALL)]


def test_an_approved_reading_is_shown_to_the_model_for_a_similar_order(
    demo_plant: PlantDescription, store: Store
) -> None:
    co = _coordinator(demo_plant, store, [HOME_ALL])
    first = asyncio.run(co.submit("send every robot home"))
    co.gate.approve(first.plan_id, "sup")
    asyncio.run(co.submit("send every robot home now please"))
    backend = co.planner.backend
    assert isinstance(backend, ScriptedBackend)
    user = backend.calls[-1].messages[1].content
    # Shown as data, fenced, in the user's message: the order quoted, the reading as approved.
    assert user.startswith("Approved readings of similar orders <<<DATA\n")
    assert f'- "send every robot home" -> {HOME_ALL}' in user
    assert "Approved readings" not in backend.calls[0].messages[1].content  # nothing approved yet then


def test_an_empty_store_gives_no_examples_and_retrieval_shows_none(demo_plant: PlantDescription, store: Store) -> None:
    assert store_feedback(store, demo_plant).examples == []
    assert StoreExamples(store, demo_plant)("home", 2) == []
    assert ExampleIndex([]).similar("anything") == []


def test_a_corrupt_store_is_refused_by_model_tune_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    out = tmp_path / "models"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_coordinator.cli",
            "model",
            "tune",
            "--plant",
            "plants/demo_cell.yaml",
            "--out",
            str(out),
            "--db",
            f"sqlite:///{bad}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "cannot be read" in r.stderr and "bad.db" in r.stderr, r.stderr
    assert not out.exists()  # nothing half-made


def test_retrieval_ranks_the_closest_order_first() -> None:
    index = ExampleIndex([("home every robot", "a"), ("machine three blanks", "b"), ("stop the sealer", "c")])
    assert index.similar("please machine two blanks", 2)[0] == ("machine three blanks", "b")
    assert index.similar("home every robot", 2, exclude="home every robot") == []


# --------------------------------------------------------------------------- the model directory


def test_current_moves_only_to_a_complete_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "plant"
    model_dir.mkdir()
    with pytest.raises(ModelDirError, match=r"neither|no adapter"):
        resolve(tmp_path / "missing")
    staging = tmp_path / "stage"
    staging.mkdir()
    (staging / "adapter.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    from llm_coordinator.tuning.models import sha256_of

    card = {"version": "plant-001-aaaa", "adapter_sha256": sha256_of(staging / "adapter.gguf")}
    publish(model_dir, staging, "plant-001-aaaa", card, "# card\n")
    tuned = resolve(model_dir)
    assert tuned.version == "plant-001-aaaa" and tuned.adapter.read_bytes().startswith(b"GGUF")
    assert (model_dir / "coordinator.yaml").is_file()
    # A torn adapter is found out by its card's hash.
    (model_dir / "plant-001-aaaa" / "adapter.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelDirError, match="sha256"):
        resolve(model_dir)
    (model_dir / "CURRENT").write_text("../../etc\n")
    with pytest.raises(ModelDirError, match="names no version"):
        resolve(model_dir)
    json.dumps(card)

"""The flywheel, for real: a wrong reading is rejected with a reason, a person writes the right
one and a supervisor approves it, ``atelier model tune --db`` (a tiny configuration; the full
tune is a benchmark) is killed mid-training and resumes, and the tuned adapter, served by
llama.cpp with the grammar, now reads the same order right.

Real parts: the coordinator, store and approval gate; the CLI in its own processes; torch,
transformers and peft for training; llama.cpp for the reading. The one fake sits at the edge:
the first, wrong reading comes from a scripted model (a model answering wrong), and the
rehearsal runs on fakes (it is not under test here).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.backends.llama import LlamaBackend
from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.config import CoordinatorConfig, LlamaBackendConfig, ScriptedBackendConfig, ScriptedReply
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.planner import Planner
from llm_coordinator.reading import parse_reading
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from llm_coordinator.testing import fake_twin_factory
from llm_coordinator.tuning.models import resolve
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[2]
ORDER = "Send every robot home, then stop the conveyor"
WRONG = (
    '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "ur5e_1", "args": {}}, '
    '{"kind": "task", "skill": "stop", "agent": "conveyor_1", "args": {}}]}'
)
RIGHT = (
    '{"outcome": "plan", "goals": [{"kind": "task", "skill": "home", "agent": "every", "args": {}}, '
    '{"kind": "task", "skill": "stop", "agent": "conveyor_1", "args": {}}]}'
)
TINY = ["--per-shape", "3", "--epochs", "4", "--learning-rate", "2e-3", "--checkpoint-every", "2"]


def _tune(model_dir: Path, db: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "llm_coordinator.cli", "model", "tune", "--plant", "plants/demo_cell.yaml"]
    return subprocess.Popen(
        [*cmd, "--out", str(model_dir), "--db", db, *TINY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two runs of a tiny tune and a model load on 2 shared cores
def test_a_rejected_reading_corrected_and_approved_is_learnt_by_the_next_tune(
    demo_plant: PlantDescription, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'atelier.db'}"
    store = Store(db)
    backend = ScriptedBackend(ScriptedBackendConfig(replies=[ScriptedReply(text=WRONG)]))
    planner = Planner(demo_plant, backend, CoordinatorConfig(mode="tuned", retrieval=0))
    gate = ApprovalGate(store, demo_plant)
    co = Coordinator(demo_plant, store, planner, gate, Rehearser(demo_plant, fake_twin_factory()), tmp_path / "ev")
    wrong = asyncio.run(co.submit(ORDER))
    assert wrong.status == "awaiting_approval", wrong
    gate.reject(wrong.plan_id, "supervisor", "every robot goes home, not only the UR5e")
    right = asyncio.run(co.submit_reading(parse_reading(RIGHT), work_order=ORDER))
    gate.approve(right.plan_id, "supervisor")

    model_dir = tmp_path / "models" / "demo_cell"
    # Killed (SIGKILL) once it has written a checkpoint: nothing is published, CURRENT is absent.
    proc = _tune(model_dir, db)
    ckpt = model_dir / ".work" / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 900
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        first, _ = proc.communicate(timeout=30)  # reaped, its pipe read to the end and closed
    assert ckpt.exists(), first
    assert not (model_dir / "CURRENT").exists()
    assert not [p for p in model_dir.iterdir() if p.name.startswith("demo_cell-")]
    # The same command again takes the checkpoint up and publishes a version.
    proc = _tune(model_dir, db)
    try:
        output, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "resumed at step" in output, output
    tuned = resolve(model_dir)
    assert tuned.card["data"]["from_store"] == {"approved": 1}, tuned.card
    assert tuned.card["training"]["resumed_from"] >= 2

    # The tuned model, through llama.cpp and the grammar, without retrieval, reads the order right.
    llama = LlamaBackend(LlamaBackendConfig(adapter=model_dir))
    assert tuned.version in llama.name
    out = asyncio.run(Planner(demo_plant, llama, CoordinatorConfig(mode="tuned", retrieval=0)).plan(ORDER))
    assert out.reading is not None, (out.status, out.reasons, [a.text for a in out.attempts])
    assert out.reading == parse_reading(RIGHT), [a.text for a in out.attempts]
    assert out.status == "planned", out.reasons

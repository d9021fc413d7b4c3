"""Many rehearsals of one plan from perturbed starts: seeded, the same verdicts serial, on two
processes and on Ray, and the risk figures on the CLI, in the store and on the plan page.

Every rehearsal here is the real one: the MuJoCo twin, the robots' runtimes with their safety
supervisors, the plan runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_coordinator import wiring
from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.plan import Plan, RecipeIntent
from llm_coordinator.rehearsal import rehearse_many, risk_lines
from llm_coordinator.store import Store
from plant.config import PlantDescription
from sim.twin import Perturbation, Twin


def _plan(plant: PlantDescription) -> Plan:
    protos, notes = expand_recipe(plant, RecipeIntent(goal="recipe", recipe="machine_part"))
    return finish_plan(plant, protos, work_order="machine one part", mode="intent", recipe="machine_part", notes=notes)


def test_a_seed_draws_one_start_within_the_tolerances(demo_plant: PlantDescription) -> None:
    p = Perturbation(7)
    a, b, c = Twin(demo_plant), Twin(demo_plant), Twin(demo_plant)
    drawn = a.perturb(p)
    assert b.perturb(Perturbation(7)) == drawn
    assert c.perturb(Perturbation(8)) != drawn
    assert a.part_positions() == b.part_positions() != c.part_positions()
    fresh = Twin(demo_plant).part_positions()
    for name, (x, y, _z) in a.part_positions().items():
        assert abs(x - fresh[name][0]) <= p.part_xy_m + 1e-9 and abs(y - fresh[name][1]) <= p.part_xy_m + 1e-9
    # People keep to their walkways, however far to the side they were drawn, over a long walk.
    for _ in range(200):
        a.step(25)
        for name, (x, y, _v) in a.people_positions().items():
            zone = demo_plant.zones[demo_plant.people[name].walkway].shape
            assert zone.contains_xy(x, y), (name, x, y)


_ONE_RUN = """
import asyncio, json, sys
from llm_coordinator import wiring
from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.plan import RecipeIntent
from llm_coordinator.rehearsal import rehearse_many
from plant.loader import load_plant
plant = load_plant()
protos, notes = expand_recipe(plant, RecipeIntent(goal="recipe", recipe="machine_part"))
plan = finish_plan(plant, protos, work_order="x", mode="intent", recipe="machine_part", notes=notes)
rep = asyncio.run(rehearse_many(plant, plan, wiring.twin_factory, sys.argv[1], 1, seed=2, render_worst=False))
print(json.dumps(rep.runs))
"""


@pytest.mark.slow
def test_a_run_does_not_depend_on_how_many_threads_the_process_gives_linear_algebra(tmp_path: Path) -> None:
    """Ray gives its workers one BLAS thread; a process of this machine has two. OpenBLAS rounds
    differently on each, and seed 2's makespan came out 0.2 s apart: the same seed must give the
    same run (the session does its linear algebra on one thread)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS has one thread either way")
    runs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        out = subprocess.run(
            [sys.executable, "-c", _ONE_RUN, str(tmp_path / threads)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(out.stdout.strip().splitlines()[-1])
    assert runs[0] == runs[1]


@pytest.mark.slow
async def test_the_same_seeds_give_the_same_verdicts_serial_and_on_two_processes(
    demo_plant: PlantDescription, tmp_path: Path
) -> None:
    plan = _plan(demo_plant)
    serial = await rehearse_many(demo_plant, plan, wiring.twin_factory, tmp_path / "a", 3, seed=10, render_worst=False)
    pooled = await rehearse_many(demo_plant, plan, wiring.twin_factory, tmp_path / "b", 3, seed=10, workers=2)
    assert serial.runs == pooled.runs
    assert [r["seed"] for r in serial.runs] == [10, 11, 12]
    assert len({r["closest_at"] for r in serial.runs}) > 1  # the starts differ
    s = pooled.summary()
    assert s["runs"] == 3 and s["success_rate"] == 1.0 and s["workers"] == "2 processes"
    assert s["makespan_p50_s"] <= s["makespan_p95_s"]
    assert len(s["closest_m"]) == 3 and all(c > 0 for c in s["closest_m"])
    # The worst run (nearest the protective distance) was rehearsed again, with frames of its own.
    assert s["worst_seed"] in (10, 11, 12)
    assert any(Path(e).name.startswith(f"worst_seed{s['worst_seed']}_") for e in s["evidence"])
    assert all(os.path.isfile(e) for e in s["evidence"])  # noqa: ASYNC240 (a test's check)
    assert Path(s["evidence"][0]).name == "risk_separation.png"  # the plot of every run's closest approach
    assert any("perturbed rehearsals clean" in line for line in risk_lines(s))


@pytest.mark.slow
async def test_ray_gives_the_verdicts_of_a_serial_run(demo_plant: PlantDescription, tmp_path: Path) -> None:
    """On a Ray instance started here, as on a cluster (its files in a short folder: the test's
    own is too long a path for Ray's sockets, and Atelier moves them to one of its own)."""
    plan = _plan(demo_plant)
    serial = await rehearse_many(demo_plant, plan, wiring.twin_factory, tmp_path / "a", 2, seed=3, render_worst=False)
    on_ray = await rehearse_many(
        demo_plant,
        plan,
        wiring.twin_factory,
        tmp_path / "b",
        2,
        seed=3,
        workers=2,
        ray_address="local",
        ray_temp_dir=tmp_path / "ray",
        render_worst=False,
    )
    assert on_ray.runs == serial.runs
    assert on_ray.workers.startswith("Ray")


@pytest.mark.slow
def test_atelier_plan_keeps_the_risk_figures_with_the_plan(tmp_path: Path) -> None:
    """The command a plant engineer runs: the figures printed, stored, and on the plan page's
    view of the plan (the console's backend over the same store)."""
    reading = tmp_path / "order.yaml"
    reading.write_text('{"outcome": "plan", "goals": [{"kind": "recipe", "recipe": "machine_part"}]}', encoding="utf-8")
    env = {**os.environ, "ATELIER_STATE_DIR": str(tmp_path / "state"), "MUJOCO_GL": "egl"}
    db = f"sqlite:///{tmp_path / 'a.db'}"
    args = ["--reading", str(reading), "--order", "machine one part", "--db", db, "--evidence", str(tmp_path / "ev")]
    out = subprocess.run(
        [sys.executable, "-m", "llm_coordinator.cli", "plan", *args, "--rehearsals", "3", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "risk: 3 of 3 perturbed rehearsals clean (100%), on 2 processes" in out.stdout
    assert "closest approach of a person to a robot" in out.stdout
    rehearsal = Store(db).rehearsal(1)
    assert rehearsal is not None
    risk = rehearsal.report["risk"]
    assert risk["runs"] == 3 and [r["seed"] for r in risk["per_run"]] == [0, 1, 2]
    shown = subprocess.run(
        [sys.executable, "-m", "llm_coordinator.cli", "show", "1", "--db", db],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "risk: 3 of 3 perturbed rehearsals clean" in shown.stdout

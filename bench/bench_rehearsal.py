"""Rehearsal speed against the twin alone, in the same run, on one core.

    python bench/bench_rehearsal.py [--plant plants/demo_cell.yaml] [--recipe machine_part]
                                    [--parts 1] [--repeats 3] [--profile]

Prints, for one recipe run ``--parts`` times:

- the twin alone (``Twin.step`` with machines running and people walking, no robots driven):
  steps per second and real-time factor over the rehearsal's twin time;
- the rehearsal without frames (skills, robot runtimes and their safety supervisors, the plan
  runner): twin seconds per wall second, and its ratio to the twin alone;
- the rehearsal with evidence frames, rendered on a thread beside it (on a second core when
  there is one): the time to the verdict with the frames written.

The twin alone and the rehearsal without frames are pinned to one core; the median of
``--repeats`` is printed, because this machine is shared and noisy. ``--profile`` prints the
top of a cProfile of one rehearsal. ``--many N`` also rehearses the plan N times from perturbed
starts on 1 and on 2 worker processes (and on a local Ray instance with ``--ray``) and prints
the scaling, with the check that every way gives the same verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from llm_coordinator import wiring
from llm_coordinator.expansion import expand_recipe, finish_plan
from llm_coordinator.plan import Plan, RecipeIntent
from llm_coordinator.rehearsal import RehearsalReport, Rehearser
from plant import load_plant
from plant.config import PlantDescription
from plant.packml import Command
from sim.twin import Twin


def _plan(plant: PlantDescription, recipe: str, parts: int) -> Plan:
    protos, notes = expand_recipe(plant, RecipeIntent(goal="recipe", recipe=recipe, count=parts, params={}))
    return finish_plan(plant, protos, work_order=f"{recipe} x{parts}", mode="intent", recipe=recipe, notes=notes)


def _rehearse(plant: PlantDescription, plan: Plan, render: bool, out: Path) -> RehearsalReport:
    return asyncio.run(Rehearser(plant, wiring.twin_factory(render=render)).rehearse(plan, out))


def _twin_alone(plant: PlantDescription, sim_s: float) -> float:
    """Twin seconds per wall second for ``sim_s`` of twin time, machines reset and belts running."""
    twin = Twin(plant)
    for tm in twin.machines.values():
        tm.command(Command.RESET)
    twin.step(100)
    for name, m in plant.machines.items():
        if m.kind == "conveyor":
            twin.machine(name).command(Command.START)
    ticks = max(1, round(sim_s / twin.config.ctrl_dt_s))
    t = time.perf_counter()
    twin.step(ticks)
    return ticks * twin.config.ctrl_dt_s / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", default=None, help="plant file (default: the demo cell)")
    ap.add_argument("--recipe", default="machine_part")
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one rehearsal without frames")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to a core")
    ap.add_argument("--many", type=int, default=0, metavar="N", help="also N perturbed rehearsals on 1 and 2 workers")
    ap.add_argument("--ray", action="store_true", help="with --many, also on a local Ray instance of 2 CPUs")
    args = ap.parse_args()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin = hasattr(os, "sched_setaffinity") and not args.no_pin

    def one_core() -> None:
        if pin:
            os.sched_setaffinity(0, {sorted(cores)[0]})

    def all_cores() -> None:
        if pin:
            os.sched_setaffinity(0, cores)

    plant = load_plant(args.plant) if args.plant else load_plant()
    plan = _plan(plant, args.recipe, args.parts)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            _rehearse(plant, plan, False, out / "profile")
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        alone, bare, framed, verdict, written = [], [], [], [], []
        sim_s = 0.0
        for k in range(args.repeats):
            one_core()
            t = time.perf_counter()
            rep = _rehearse(plant, plan, False, out / f"bare_{k}")
            wall = time.perf_counter() - t
            if not rep.ok:
                print(f"rehearsal failed: {rep.reason}")
            sim_s = rep.observations.sim_time_s
            bare.append(sim_s / wall)
            alone.append(_twin_alone(plant, sim_s))
            all_cores()
            t = time.perf_counter()
            rep = _rehearse(plant, plan, True, out / f"framed_{k}")
            written.append(time.perf_counter() - t)
            verdict.append(rep.wall_s)
            framed.append(rep.observations.sim_time_s / rep.wall_s)
    a, b, f = statistics.median(alone), statistics.median(bare), statistics.median(framed)
    print(
        f"{args.recipe} x{args.parts} on {plant.name}: {len(plan.steps)} steps, {sim_s:.1f} s of twin time, "
        f"one core, median of {args.repeats}"
    )
    print(f"twin alone                    real-time factor {a:6.1f}")
    print(f"rehearsal, no frames          real-time factor {b:6.1f}   {a / b:5.2f}x the twin alone's time")
    print(
        f"rehearsal with frames         real-time factor {f:6.1f}   verdict, frames written, after "
        f"{statistics.median(verdict):5.1f} s ({statistics.median(written):5.1f} s for the whole call)"
    )
    if args.many:
        all_cores()
        _scaling(plant, plan, args.many, args.ray)


def _scaling(plant: PlantDescription, plan: Plan, n: int, ray: bool) -> None:
    """N perturbed rehearsals on 1 and 2 worker processes (and Ray): wall time and speed-up."""
    from llm_coordinator.rehearsal import rehearse_many

    ways: list[tuple[str, dict[str, object]]] = [("1 worker", {"workers": 1}), ("2 workers", {"workers": 2})]
    if ray:
        ways.append(("Ray, 2 CPUs", {"workers": 2, "ray_address": "local"}))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in ways:
            t = time.perf_counter()
            rep = asyncio.run(
                rehearse_many(
                    plant,
                    plan,
                    wiring.twin_factory,
                    Path(tmp) / name.replace(" ", "_"),
                    n,
                    render_worst=False,
                    **kw,  # type: ignore[arg-type]
                )
            )
            results.append((name, time.perf_counter() - t, rep.runs))
    base = results[0][1]
    for name, wall, runs in results:
        odd = [r["seed"] for r, r0 in zip(runs, results[0][2], strict=True) if r != r0]
        same = "same verdicts" if not odd else f"DIFFERENT runs (seeds {', '.join(map(str, odd))})"
        ok = sum(1 for r in runs if r["ok"])
        print(f"{n} perturbed rehearsals on {name:12s} {wall:6.1f} s   {base / wall:4.2f}x   {ok}/{n} clean, {same}")


if __name__ == "__main__":
    main()

"""Work order to approved-ready plan on the demo cell: latency and the share that end right.

For each work order of ``bench/work_orders.yaml`` (with its expected outcome written down), per
mode (intent, direct) and per model available here: plan (model time, guardrail time), rehearse
(time), and judge the end: right is a plan the guardrails accept, that rehearsed, and that does
what was asked (the expected recipe, count and parameters, or the expected skills in order), or
a refusal where one is expected. Prints a table and the figures.

Usage: python bench/bench_planner.py [--modes intent,direct] [--model PATH.gguf] [--attempts N]
       [--limit N] [--json out.json]

Rehearsal runs in the in-process twin (``--rehearsal twin``, default) or, to measure planning
alone quickly, over the fake agents of ``llm_coordinator.testing`` (``--rehearsal fake``; the
output says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from llm_coordinator.backends import make_backend
from llm_coordinator.config import CoordinatorConfig, LlamaBackendConfig, ModelConfig
from llm_coordinator.planner import Planner, PlanningOutcome
from llm_coordinator.rehearsal import Rehearser, TwinFactory
from plant import load_plant
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[1]


def _twin_factory(kind: str) -> tuple[TwinFactory, str]:
    if kind == "twin":
        from llm_coordinator.wiring import twin_factory

        return twin_factory(), "the in-process twin (MuJoCo, robot runtimes with their safety supervisors)"
    from llm_coordinator.testing import fake_twin_factory

    return fake_twin_factory(500.0), "FAKE agents (llm_coordinator.testing), not the twin"


def judge(out: PlanningOutcome, expect: Any) -> tuple[bool, str]:
    if expect == "refuse":
        return out.status == "refused", out.status
    if out.plan is None:
        return False, f"{out.status}: {'; '.join(out.reasons)[:80]}"
    plan = out.plan
    if "recipe" in expect:
        if plan.recipe != expect["recipe"]:
            return False, f"recipe {plan.recipe}"
        runs = len(plan.steps) // max(1, len(plant.recipes[expect["recipe"]].steps))
        if runs != expect.get("count", 1):
            return False, f"count {runs}"
        for k, v in (expect.get("params") or {}).items():
            vals = {s.args.get(k) for s in plan.steps if k in s.args}
            if vals != {v}:
                return False, f"{k}={vals}"
        return True, "ok"
    if plan.recipe is not None:
        return False, f"recipe {plan.recipe}"
    want = [tuple(x) for x in expect["skills"]]
    # Steps the planner added as preconditions (a door closed before a cycle) do not count.
    got = [(s.agent, s.skill) for s in plan.steps if not s.note.startswith("added")]
    return got == want, "ok" if got == want else f"steps {got[:4]}"


async def bench_mode(
    plant: PlantDescription,
    orders: list[dict[str, Any]],
    mode: str,
    model: Path | None,
    attempts: int,
    factory: TwinFactory,
    max_tokens: int = 768,
) -> dict[str, Any]:
    model_cfg = ModelConfig(timeout_s=300, max_tokens=max_tokens)
    cfg = CoordinatorConfig(mode=mode, max_attempts=attempts, model=model_cfg)  # type: ignore[arg-type]
    backend = make_backend(LlamaBackendConfig(model_path=model))
    planner = Planner(plant, backend, cfg)
    rehearser = Rehearser(plant, factory)
    rows = []
    for item in orders:
        t0 = time.monotonic()
        out = await planner.plan(item["order"])
        plan_s = time.monotonic() - t0
        reh_s, reh_ok = 0.0, None
        if out.plan is not None:
            with tempfile.TemporaryDirectory() as d:
                r0 = time.monotonic()
                rep = await rehearser.rehearse(out.plan, d)
                reh_s, reh_ok = time.monotonic() - r0, rep.ok
        right, why = judge(out, item["expect"])
        right = right and reh_ok is not False
        rows.append(
            {
                "order": item["order"],
                "status": out.status,
                "right": right,
                "why": why,
                "model_s": out.model_s,
                "guardrails_s": out.guardrails_s,
                "planner_s": out.planner_s,
                "rehearsal_s": reh_s,
                "total_s": plan_s + reh_s,
                "calls": len(out.attempts),
            }
        )
        verdict = "RIGHT" if right else "wrong"
        line = f"  [{mode}] {verdict} {out.status:8s} {plan_s + reh_s:6.2f}s  {item['order'][:60]}  ({why})"
        print(line, flush=True)
    await backend.aclose()
    planned = [r for r in rows if r["status"] == "planned"]

    def med(key: str, rs: list[dict[str, Any]]) -> float:
        return statistics.median([r[key] for r in rs]) if rs else 0.0

    return {
        "mode": mode,
        "model": backend.name,
        "orders": len(rows),
        "right": sum(r["right"] for r in rows),
        "share_right": sum(r["right"] for r in rows) / len(rows),
        "median_model_s": med("model_s", rows),
        "median_guardrails_ms": 1000 * med("guardrails_s", planned),
        "median_rehearsal_s": med("rehearsal_s", planned),
        "median_total_s_planned": med("total_s", planned),
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="intent,direct")
    ap.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the embedded SmolLM2-135M)")
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=768, help="longest answer of one model call")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rehearsal", choices=["twin", "fake"], default="twin", help="where plans are rehearsed")
    args = ap.parse_args()
    orders = yaml.safe_load((ROOT / "bench" / "work_orders.yaml").read_text())
    if args.limit:
        orders = orders[: args.limit]
    factory, what = _twin_factory(args.rehearsal)
    print(f"{len(orders)} work orders on {plant.name}; rehearsal on {what}")
    results = []
    for mode in args.modes.split(","):
        res = asyncio.run(bench_mode(plant, orders, mode, args.model, args.attempts, factory, args.max_tokens))
        results.append(res)
    print(
        "\nmode    model                                   right   share  model s  guardrails ms  rehearsal s  total s"
    )
    for r in results:
        print(
            f"{r['mode']:7s} {r['model']:38s} {r['right']:3d}/{r['orders']:<3d} {r['share_right']:6.0%} "
            f"{r['median_model_s']:8.2f} {r['median_guardrails_ms']:14.1f} {r['median_rehearsal_s']:12.2f} "
            f"{r['median_total_s_planned']:8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


plant = load_plant(ROOT / "plants" / "demo_cell.yaml")

if __name__ == "__main__":
    sys.exit(main())

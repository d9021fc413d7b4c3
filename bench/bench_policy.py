"""Policy inference latency: eager torch, TorchScript and ONNX Runtime in one run, on one core.

    python bench/bench_policy.py [--checkpoint policies/checkpoints/track_conveyor_part_ur5e]
                                 [--calls 20000] [--budget-us 1000]

Pins the process to one core (``os.sched_setaffinity``), one torch thread and one ONNX Runtime
thread, then times single-observation answers of each backend, interleaved in rounds so that
noise from the shared machine falls on all three alike. Prints p50/p99/max per backend in
microseconds, then loads the checkpoint through :class:`policies.runtime.PolicyRuntime` (which
picks a backend by its own calibration) and reports its choice against the budget.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from policies.checkpoint import read_info
from policies.export import probe_observations
from policies.runtime import BACKENDS, PolicyRuntime, backend_function, latencies

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "checkpoints" / "track_conveyor_part_ur5e"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT)
    ap.add_argument("--calls", type=int, default=20_000, help="timed answers per backend")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    ap.add_argument("--budget-us", type=float, default=1000.0)
    ap.add_argument("--core", type=int, default=None, help="the core to pin to (default: the last one allowed)")
    args = ap.parse_args()
    core = args.core if args.core is not None else sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    info = read_info(args.checkpoint)
    x = probe_observations(info, n=1, seed=0)
    funcs = {name: backend_function(args.checkpoint, name, threads=1) for name in BACKENDS}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in BACKENDS}
    per_round = max(1, args.calls // args.rounds)
    for _ in range(args.rounds):
        for name, f in funcs.items():
            samples[name].append(latencies(f, x, per_round, warmup=100))
    print(
        f"{info.env_id}: network {info.observation.shape[0]} -> {list(info.hidden)} -> {info.action.shape[0]}, "
        f"batch 1, core {core}, torch {torch.__version__}, {per_round * args.rounds} calls per backend"
    )
    print(f"{'backend':<12} {'p50 us':>8} {'p99 us':>8} {'max us':>9}")
    for name in BACKENDS:
        t = np.concatenate(samples[name]) * 1e6
        print(f"{name:<12} {np.percentile(t, 50):8.1f} {np.percentile(t, 99):8.1f} {t.max():9.1f}")
    env_obs = info.observation.box()
    env_act = info.action.box()
    rt = PolicyRuntime.load(args.checkpoint, env_obs, env_act, budget_s=args.budget_us * 1e-6, calibration_calls=2000)
    lat = np.array([rt.act(x[0]).latency_s for _ in range(args.calls)]) * 1e6
    p99 = float(np.percentile(lat, 99))
    ok = p99 <= args.budget_us
    print(
        f"runtime choice: {rt.backend} (calibration p99 {rt.calibration_p99_s * 1e6:.1f} us); through "
        f"PolicyRuntime.act: p50 {np.percentile(lat, 50):.1f} us, p99 {p99:.1f} us, late {rt.late}/{args.calls} "
        f"-> {'meets' if ok else 'MISSES'} the {args.budget_us:.0f} us budget at p99"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

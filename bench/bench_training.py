"""Policy training of several seeds: in this process, on 1 and 2 worker processes, and on Ray.

    python bench/bench_training.py [--env atelier/Reach-UR5e-v0] [--seeds 4] [--timesteps 4096] [--no-ray]

Trains ``--seeds`` seeds of one small PPO budget (``atelier policy train --seeds``):

- in this process, one after another, calling ``policies.training.train`` (the bare library:
  Stable-Baselines3 with our settings, no workers);
- on 1 and on 2 batch worker processes (``plant.workers.run_batch``);
- on a local Ray instance of 2 CPUs, started for the run (its start counts).

Prints the wall time of each way, its speed-up over the bare serial run, and whether every way
trained the same networks, seed by seed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from llm_coordinator.cli_policy import _train_seed
from plant.workers import run_batch
from policies.checkpoint import WEIGHTS_FILE
from policies.training import TrainResult, TrainSettings


def _settings(env: str, seed: int, timesteps: int) -> TrainSettings:
    return TrainSettings(
        env_id=env,
        total_timesteps=timesteps,
        seed=seed,
        n_envs=4,
        n_steps=128,
        batch_size=128,
        n_epochs=4,
        env_kwargs={"config": {"episode_s": 1.0}},
        eval_every_steps=timesteps // 2,
        eval_episodes=2,
        progress_bar=False,
    )


def _same(a: list[TrainResult], b: list[TrainResult]) -> bool:
    for ra, rb in zip(a, b, strict=True):
        wa = torch.load(ra.directory / WEIGHTS_FILE, weights_only=True)
        wb = torch.load(rb.directory / WEIGHTS_FILE, weights_only=True)
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="atelier/Reach-UR5e-v0")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--timesteps", type=int, default=4096)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def jobs(name: str) -> list[tuple[TrainSettings, str, str]]:
            return [(_settings(args.env, s, args.timesteps), str(root / name / str(s)), "none") for s in seeds]

        ways: list[tuple[str, float, list[TrainResult]]] = []
        t = time.perf_counter()
        bare = [_train_seed(*job) for job in jobs("bare")]
        ways.append(("this process (bare)", time.perf_counter() - t, bare))
        for workers in (1, 2):
            t = time.perf_counter()
            got = run_batch(_train_seed, jobs(f"w{workers}"), workers)
            ways.append((f"{workers} worker process{'es' if workers > 1 else ''}", time.perf_counter() - t, got))
        if not args.no_ray:
            t = time.perf_counter()
            got = run_batch(_train_seed, jobs("ray"), 2, ray_address="local", ray_temp_dir=root / "rayfiles")
            ways.append(("Ray, 2 CPUs", time.perf_counter() - t, got))
        print(f"{args.seeds} seeds of PPO on {args.env}, {args.timesteps} steps each")
        base = ways[0][1]
        for name, wall, runs in ways:
            same = "same networks" if _same(bare, runs) else "DIFFERENT networks"
            print(f"{name:22s} {wall:7.1f} s   {base / wall:4.2f}x the bare serial run   {same}")


if __name__ == "__main__":
    main()

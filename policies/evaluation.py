"""Seeded evaluation of any actor (a policy, a scripted controller) on a Gymnasium environment.

An episode succeeds when its last step's ``info["is_success"]`` is true; its time to goal is
``info["time_to_goal_s"]`` when the environment reports it, else steps x ``policy_dt_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

Actor = Callable[[Any], Any]


@dataclass(frozen=True)
class EvalResult:
    """Per-episode outcomes of one actor over seeds ``seed .. seed + n - 1``."""

    seeds: list[int]
    success: list[bool]
    time_to_goal_s: list[float | None]
    returns: list[float]
    final_distance_m: list[float]

    @property
    def successes(self) -> int:
        return int(sum(self.success))

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.success) if self.success else 0.0

    def _ttg(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([t for t in self.time_to_goal_s if t is not None], dtype=float)

    @property
    def ttg_mean_s(self) -> float:
        t = self._ttg()
        return float(t.mean()) if t.size else float("nan")

    @property
    def ttg_median_s(self) -> float:
        t = self._ttg()
        return float(np.median(t)) if t.size else float("nan")

    @property
    def ttg_p90_s(self) -> float:
        t = self._ttg()
        return float(np.percentile(t, 90)) if t.size else float("nan")

    @property
    def final_distance_mean_m(self) -> float:
        d = [x for x in self.final_distance_m if np.isfinite(x)]
        return float(np.mean(d)) if d else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures and per-episode outcomes."""
        return {
            "success_rate": self.success_rate,
            "successes": self.successes,
            "episodes": len(self.success),
            "time_to_goal_mean_s": self.ttg_mean_s,
            "time_to_goal_median_s": self.ttg_median_s,
            "time_to_goal_p90_s": self.ttg_p90_s,
            "final_distance_mean_m": self.final_distance_mean_m,
            "mean_return": float(np.mean(self.returns)) if self.returns else float("nan"),
            "per_episode": [
                {"seed": s, "success": ok, "time_to_goal_s": t}
                for s, ok, t in zip(self.seeds, self.success, self.time_to_goal_s, strict=True)
            ],
        }


def run_episodes(env: gymnasium.Env[Any, Any], act: Actor, episodes: int, seed: int = 0) -> EvalResult:
    """Run ``episodes`` episodes, episode ``i`` from ``env.reset(seed=seed + i)``; blocks."""
    dt = env.unwrapped.metadata.get("policy_dt_s")
    seeds, success, ttg, returns, final = [], [], [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        total, steps = 0.0, 0
        while True:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
        ok = bool(info.get("is_success", False))
        seeds.append(seed + i)
        success.append(ok)
        t = info.get("time_to_goal_s")
        if ok and t is None and isinstance(dt, int | float):
            t = steps * float(dt)
        ttg.append(float(t) if ok and t is not None else None)
        returns.append(total)
        final.append(float(info.get("distance_m", float("nan"))))
    return EvalResult(seeds, success, ttg, returns, final)


def compare(policy: EvalResult, baseline: EvalResult) -> dict[str, Any]:
    """Time to goal of both on the episodes both reached the goal (a like-for-like comparison)."""
    both = [
        (p, b)
        for p, b, sp, sb in zip(
            policy.time_to_goal_s, baseline.time_to_goal_s, policy.seeds, baseline.seeds, strict=True
        )
        if p is not None and b is not None and sp == sb
    ]
    if not both:
        return {"episodes": 0}
    p, b = np.array(both, dtype=float).T
    return {
        "episodes": len(both),
        "policy_ttg_mean_s": float(p.mean()),
        "baseline_ttg_mean_s": float(b.mean()),
        "policy_faster_in": int(np.sum(p < b)),
    }

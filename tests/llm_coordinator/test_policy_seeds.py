"""``atelier policy train --seeds``: one training per seed, spread over worker processes or Ray,
the best kept. A seed trains the same network in this process, in a worker process and in a
Ray task; the checkpoint kept is the best seed's, with every seed's score beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from llm_coordinator.cli_policy import SWEEP_FILE, _train_seed, policy_app
from plant.workers import run_batch
from policies.checkpoint import WEIGHTS_FILE, read_info
from policies.training import TrainResult, best_of, checkpoint_score
from tests.policies.test_training import _tiny

ENV = "atelier/Reach-UR5e-v0"
TINY = [
    "--timesteps", "512", "--n-envs", "2", "--eval-every", "256", "--eval-episodes", "1", "--no-progress",
]  # fmt: skip


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(directory / WEIGHTS_FILE, weights_only=True))


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


@pytest.mark.slow
def test_a_seed_trains_the_same_network_here_on_two_processes_and_on_ray(tmp_path: Path) -> None:
    seeds = (0, 1)
    here = [_train_seed(_tiny(s), str(tmp_path / "here" / str(s)), "none") for s in seeds]
    two = run_batch(_train_seed, [(_tiny(s), str(tmp_path / "two" / str(s)), "none") for s in seeds], workers=2)
    on_ray = run_batch(
        _train_seed,
        [(_tiny(s), str(tmp_path / "ray" / str(s)), "none") for s in seeds],
        workers=2,
        ray_address="local",
        ray_temp_dir=tmp_path / "ray_files",
    )
    for runs in (two, on_ray):
        assert [r.info.seed for r in runs] == list(seeds)  # (in the order asked)
        for a, b in zip(here, runs, strict=True):
            _same(a.directory, b.directory)
            assert a.evaluations == b.evaluations
    # Different seeds are different runs (else the sweep would choose among copies).
    assert not torch.equal(*(next(iter(_weights(r.directory).values())) for r in here))


def test_the_best_seed_is_the_one_whose_checkpoint_scored_best() -> None:
    def run(seed: int, at: int, rows: list[tuple[int, float, float]]) -> TrainResult:
        class Info:
            pass

        info = Info()
        info.seed, info.checkpoint_step = seed, at  # type: ignore[attr-defined]
        evaluations = [{"timesteps": t, "success_rate": s, "mean_return": r} for t, s, r in rows]
        return TrainResult(Path(str(seed)), info, [], evaluations)  # type: ignore[arg-type]

    # Seed 0's checkpoint (step 100) succeeded less than seed 1's, though its last evaluation did better.
    a = run(0, 100, [(100, 0.2, 5.0), (200, 0.9, 1.0)])
    b = run(1, 200, [(100, 0.0, 0.0), (200, 0.5, -3.0)])
    c = run(2, 200, [(200, 0.5, -1.0)])  # as many successes as seed 1, more return
    assert checkpoint_score(a) == (0.2, 5.0)
    assert best_of([a, b]) is b
    assert best_of([a, b, c]) is c
    assert best_of([c, run(3, 200, [(200, 0.5, -1.0)])]) is c  # equal: the first
    assert checkpoint_score(run(4, 0, [])) < checkpoint_score(a)  # no evaluation scores lowest
    with pytest.raises(ValueError, match="no training runs"):
        best_of([])


@pytest.mark.slow
def test_the_command_keeps_the_best_seed_s_checkpoint_and_every_seed_s_score(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(policy_app, ["train", ENV, "--out", str(out), "--seeds", "3,4", *TINY])
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / SWEEP_FILE).read_text())
    assert [r["seed"] for r in sweep["seeds"]] == [3, 4]
    kept = [r for r in sweep["seeds"] if r["kept"]]
    assert len(kept) == 1 and kept[0]["seed"] == sweep["kept_seed"]
    best = max(sweep["seeds"], key=lambda r: (r["success_rate"], r["mean_return"]))
    assert best["seed"] == sweep["kept_seed"]
    seed_dir = out / "seeds" / f"seed_{sweep['kept_seed']}"
    _same(out, seed_dir)
    info = read_info(out)
    assert info.seed == sweep["kept_seed"]
    # The kept checkpoint's command reproduces that seed's run.
    assert f"--seed {sweep['kept_seed']}" in info.command and str(seed_dir) in info.command
    assert "kept seed" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,x"], "--seeds must be whole numbers"),
        (["--seeds", "1,1"], "--seeds must be distinct"),
        (["--seeds", "-1,2"], "--seeds must be distinct numbers of 0 or more"),
        (["--workers", "2"], "give --seeds"),
        (["--ray", "local"], "give --seeds"),
    ],
)
def test_bad_seeds_are_refused_before_anything_is_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(policy_app, ["train", ENV, "--out", str(out), *args, *TINY])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()

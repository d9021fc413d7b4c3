"""Training on a tiny budget proves the pipeline end to end: loss falls, a checkpoint is written,
it loads in the runtime, and the same seed gives the same network. Full training is a command."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest
import torch

import sim.envs  # noqa: F401  (registers atelier/ environments)
from policies.checkpoint import CURVE_FILE, INFO_FILE, ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, read_info
from policies.runtime import PolicyRuntime
from policies.training import LOG_FILE, TrainSettings, train

ENV = "atelier/Reach-UR5e-v0"


def _tiny(seed: int = 0) -> TrainSettings:
    # 0.4 s episodes (20 steps), 4 PPO updates of 2 x 64 steps: a few seconds of CPU.
    return TrainSettings(
        env_id=ENV,
        algorithm="ppo",
        total_timesteps=512,
        seed=seed,
        n_envs=2,
        n_steps=64,
        batch_size=64,
        n_epochs=4,
        env_kwargs={"config": {"episode_s": 0.4}},
        eval_every_steps=256,
        eval_episodes=1,
        progress_bar=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ckpt")
    return out, train(_tiny(), out)


def test_loss_goes_down(trained: tuple[Path, object]) -> None:
    _, result = trained
    losses = [u["train/value_loss"] for u in result.updates]  # type: ignore[attr-defined]
    assert len(losses) == 4
    assert losses[-1] < losses[0]


def test_a_checkpoint_is_written_and_loads(trained: tuple[Path, object]) -> None:
    out, _ = trained
    for name in (INFO_FILE, WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE, CURVE_FILE, LOG_FILE):
        assert (out / name).is_file(), name
    info = read_info(out)
    assert info.env_id == ENV and info.total_timesteps == 512 and info.policy_dt_s == 0.02
    assert info.command.startswith(f"atelier policy train {ENV}")
    assert set(info.files) == {WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE}
    log = json.loads((out / LOG_FILE).read_text())
    assert len(log["evaluations"]) == 2 and "running" not in log
    env = gymnasium.make(ENV, **info.env_kwargs)
    runtime = PolicyRuntime.load(out, env.observation_space, env.action_space, budget_s=0.05, calibration_calls=20)
    obs, _ = env.reset(seed=0)
    decision = runtime.act(obs)
    assert env.action_space.contains(decision.action)


def test_the_same_seed_trains_the_same_network(trained: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = trained
    train(_tiny(), tmp_path)
    a = torch.load(out / WEIGHTS_FILE, weights_only=True)
    b = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_sac_checkpoints_squash_their_actions(tmp_path: Path) -> None:
    # train() itself checks that the extracted network equals the trained policy's predictions.
    settings = TrainSettings(
        env_id=ENV,
        algorithm="sac",
        total_timesteps=300,
        learning_starts=100,
        sac_batch_size=32,
        n_envs=2,
        env_kwargs={"config": {"episode_s": 0.4}},
        eval_every_steps=300,
        eval_episodes=1,
        progress_bar=False,
    )
    result = train(settings, tmp_path)
    assert result.info.squash and result.info.activation == "relu"
    assert any("train/critic_loss" in u for u in result.updates)
    assert result.info.command.startswith(f"atelier policy train {ENV} --algorithm sac")


def test_a_teacher_is_cloned_before_reinforcement_learning(tmp_path: Path) -> None:
    from sim.envs.baselines import VelocityTeacher

    settings = TrainSettings(
        env_id="atelier/TrackConveyorPart-UR5e-v0",
        algorithm="ppo",
        total_timesteps=256,
        n_envs=2,
        n_steps=64,
        batch_size=64,
        n_epochs=2,
        env_kwargs={"config": {"episode_s": 0.6}},
        teacher="sim.envs.baselines.VelocityTeacher",
        bc_episodes=3,
        bc_epochs=150,
        eval_every_steps=256,
        eval_episodes=1,
        progress_bar=False,
    )
    result = train(settings, tmp_path, VelocityTeacher)
    log = json.loads((tmp_path / LOG_FILE).read_text())
    cloning = log["behaviour_cloning"]
    assert cloning["samples"] > 0 and cloning["loss_end"] < cloning["loss_start"] / 3
    assert result.evaluations[0]["timesteps"] == 0  # the clone is evaluated before RL starts
    assert result.info.teacher == "sim.envs.baselines.VelocityTeacher"
    assert result.info.checkpoint_step in (0, 256)
    with pytest.raises(ValueError, match="needs a teacher"):
        train(settings, tmp_path)


def test_an_unregistered_id_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(gymnasium.error.NameNotFound, match="import the package that registers it"):
        train(TrainSettings(env_id="atelier/NoSuchTask-v0", total_timesteps=256, progress_bar=False), tmp_path)

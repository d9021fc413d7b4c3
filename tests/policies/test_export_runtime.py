"""Exports agree with the network; the runtime refuses what does not fit or is damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plant.config import PlantDescription
from policies.checkpoint import (
    INFO_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointInfo,
    SpaceInfo,
    read_info,
    save,
)
from policies.export import EXPORT_ATOL, export_checkpoint, load_torchscript, onnx_session, probe_observations
from policies.networks import PolicyNet
from policies.runtime import LatencyBudgetError, PolicyRuntime, SpaceMismatchError
from robots.learned import ArmLimits, approach_spaces

# The runtime's 1 ms budget is measured by bench/bench_policy.py on a pinned core; tests share a
# busy machine, so they give the runtime room and test the budget logic with explicit values.
ROOMY = 0.05


@pytest.fixture(scope="module")
def ur5e_spaces(demo_plant: PlantDescription):  # type: ignore[no-untyped-def]
    return approach_spaces(ArmLimits.from_robot(demo_plant.robots["ur5e_1"]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, ur5e_spaces) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    obs_space, act_space = ur5e_spaces
    net = PolicyNet(obs_space.shape[0], act_space.shape[0], (32, 32))
    net.set_normalisation(torch.randn(obs_space.shape[0]) * 0.1, torch.rand(obs_space.shape[0]) + 0.5, 5.0)
    net.set_action_bounds(torch.as_tensor(act_space.low), torch.as_tensor(act_space.high))
    info = CheckpointInfo(
        env_id="atelier/TrackConveyorPart-UR5e-v0",
        algorithm="none (random weights)",
        seed=0,
        total_timesteps=0,
        command="(made by the test)",
        observation=SpaceInfo.of(obs_space),
        action=SpaceInfo.of(act_space),
        hidden=(32, 32),
        activation="tanh",
        policy_dt_s=0.02,
    )
    out = tmp_path_factory.mktemp("random_policy")
    save(out, info, net)
    export_checkpoint(out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_eager_torchscript_and_onnx_agree(checkpoint: Path) -> None:
    info = read_info(checkpoint)
    state = torch.load(checkpoint / WEIGHTS_FILE, weights_only=True)
    net = info.network()
    net.load_state_dict(state)
    net.eval()
    obs = probe_observations(info, n=33, seed=7)
    obs[0] = 1e6  # far outside the normalisation clip: still the same everywhere
    with torch.inference_mode():
        eager = net(torch.from_numpy(obs)).numpy()
        script = load_torchscript(checkpoint / TORCHSCRIPT_FILE)(torch.from_numpy(obs)).numpy()
    session = onnx_session(checkpoint / ONNX_FILE)
    batch = session.run(None, {"obs": obs})[0]
    single = np.concatenate([session.run(None, {"obs": row[None]})[0] for row in obs])
    for other in (script, batch, single):
        np.testing.assert_allclose(other, eager, atol=EXPORT_ATOL, rtol=0)
    low, high = np.array(info.action.low), np.array(info.action.high)
    assert np.all(eager >= low - 1e-7) and np.all(eager <= high + 1e-7)


@pytest.mark.parametrize("backend", ["auto", "eager", "torchscript", "onnx"])
def test_runtime_answers_with_every_backend(checkpoint: Path, ur5e_spaces, backend: str) -> None:  # type: ignore[no-untyped-def]
    obs_space, act_space = ur5e_spaces
    rt = PolicyRuntime.load(checkpoint, obs_space, act_space, backend=backend, budget_s=ROOMY, calibration_calls=30)  # type: ignore[arg-type]
    assert backend == "auto" or rt.backend == backend
    d = rt.act(obs_space.sample())
    assert act_space.contains(d.action) and d.on_time and 0 < d.latency_s < ROOMY
    with pytest.raises(ValueError, match="shape"):
        rt.act(np.zeros(7))
    bad = obs_space.sample()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        rt.act(bad)


def test_a_policy_for_another_arm_is_refused(checkpoint: Path, demo_plant: PlantDescription) -> None:
    obs_space, act_space = approach_spaces(ArmLimits.from_robot(demo_plant.robots["panda_1"]))
    with pytest.raises(SpaceMismatchError, match=r"observation shape \(19,\).*has shape \(20,\)"):
        PolicyRuntime.load(checkpoint, obs_space, act_space, budget_s=ROOMY)


def test_a_policy_for_other_limits_is_refused(checkpoint: Path, demo_plant: PlantDescription) -> None:
    ur5e = demo_plant.robots["ur5e_1"]
    narrow = ur5e.model_copy(update={"joint_limits_rad": [(-3.0, 3.0)] * 6})
    obs_space, act_space = approach_spaces(ArmLimits.from_robot(narrow))
    with pytest.raises(SpaceMismatchError, match=r"observation low bound .* at index 0"):
        PolicyRuntime.load(checkpoint, obs_space, act_space, budget_s=ROOMY)
    slow = ur5e.model_copy(update={"max_tcp_speed_m_s": 0.25})
    obs_space, act_space = approach_spaces(ArmLimits.from_robot(slow))
    with pytest.raises(SpaceMismatchError, match="bound"):
        PolicyRuntime.load(checkpoint, obs_space, act_space, budget_s=ROOMY)


@pytest.mark.parametrize("victim", [WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE])
def test_a_corrupt_file_is_refused(checkpoint: Path, ur5e_spaces, tmp_path: Path, victim: str) -> None:  # type: ignore[no-untyped-def]
    ckpt = _copy(checkpoint, tmp_path / "ckpt")
    data = bytearray((ckpt / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ckpt / victim).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{victim} is corrupt: SHA-256"):
        PolicyRuntime.load(ckpt, *ur5e_spaces, budget_s=ROOMY)


def test_a_truncated_or_missing_checkpoint_is_refused(checkpoint: Path, ur5e_spaces, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = _copy(checkpoint, tmp_path / "ckpt")
    (ckpt / INFO_FILE).write_text((ckpt / INFO_FILE).read_text()[:100])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        PolicyRuntime.load(ckpt, *ur5e_spaces)
    (ckpt / INFO_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not an atelier-policy/1 metadata file"):
        PolicyRuntime.load(ckpt, *ur5e_spaces)
    with pytest.raises(CheckpointError, match=r"policy\.json is missing"):
        PolicyRuntime.load(tmp_path / "nowhere", *ur5e_spaces)
    ckpt2 = _copy(checkpoint, tmp_path / "ckpt2")
    (ckpt2 / ONNX_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"listed in policy\.json but missing"):
        PolicyRuntime.load(ckpt2, *ur5e_spaces, backend="onnx")
    # A hash-consistent file that is not a state dict of this network is refused too.
    ckpt3 = _copy(checkpoint, tmp_path / "ckpt3")
    torch.save({"weights": torch.zeros(3)}, ckpt3 / WEIGHTS_FILE)
    info = read_info(ckpt3)
    from policies.checkpoint import sha256, write_info

    write_info(ckpt3, info.model_copy(update={"files": {**info.files, WEIGHTS_FILE: sha256(ckpt3 / WEIGHTS_FILE)}}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        PolicyRuntime.load(ckpt3, *ur5e_spaces)


def test_latency_budget(checkpoint: Path, ur5e_spaces) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LatencyBudgetError, match="over the 0 us budget"):
        PolicyRuntime.load(checkpoint, *ur5e_spaces, budget_s=1e-9, calibration_calls=20)
    rt = PolicyRuntime.load(checkpoint, *ur5e_spaces, budget_s=ROOMY, calibration_calls=20)
    rt.budget_s = 0.0  # from now on every answer is late
    d = rt.act(ur5e_spaces[0].sample())
    assert not d.on_time and rt.late == 1

"""Every ``atelier/`` environment passes Gymnasium's checker and replays exactly from a seed."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim.envs
from plant.config import PlantDescription
from robots.learned import OBS_EXTRA, ArmLimits
from sim.envs import ENV_IDS, TaskConfig
from sim.envs.arm_tasks import ArmTaskEnv
from sim.envs.baselines import ScriptedBaseline


def _unwrapped(env: gymnasium.Env[Any, Any]) -> ArmTaskEnv:
    u = env.unwrapped
    assert isinstance(u, ArmTaskEnv)
    return u


def _rollout(env_id: str, seed: int, steps: int = 15) -> list[np.ndarray]:
    env = gymnasium.make(env_id)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append(np.concatenate([obs, [reward, terminated, truncated]]))
        if terminated or truncated:
            break
    env.close()
    return out


def test_the_package_registers_every_task_for_both_arms() -> None:
    assert set(ENV_IDS) == {
        "atelier/Reach-UR5e-v0",
        "atelier/Reach-Panda-v0",
        "atelier/TrackConveyorPart-UR5e-v0",
        "atelier/TrackConveyorPart-Panda-v0",
    }
    sim.envs.register_envs()  # registering again is harmless
    for env_id in ENV_IDS:
        assert env_id in gymnasium.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gymnasium.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_are_equal(env_id: str) -> None:
    a, b = _rollout(env_id, seed=3), _rollout(env_id, seed=3)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = _rollout(env_id, seed=4)
    assert not np.array_equal(a[0], c[0]), "another seed must draw another episode"


def test_tasks_take_the_robot_and_its_limits_from_the_plant(demo_plant: PlantDescription) -> None:
    env = _unwrapped(gymnasium.make("atelier/TrackConveyorPart-UR5e-v0"))
    robot = demo_plant.robots["ur5e_1"]
    lim = ArmLimits.from_robot(robot)
    np.testing.assert_array_equal(env.limits.max_speed_rad_s, lim.max_speed_rad_s)
    np.testing.assert_array_equal(env.limits.max_accel_rad_s2, lim.max_accel_rad_s2)
    assert env.limits.max_tcp_speed_m_s == robot.max_tcp_speed_m_s
    assert env.observation_space.shape == (6 + OBS_EXTRA,)
    np.testing.assert_allclose(env.observation_space.low[:6], lim.lower_rad.astype(np.float32))
    assert env.twin.config.ctrl_dt_s == 0.004  # the twin's own control rate
    panda = _unwrapped(gymnasium.make("atelier/Reach-Panda-v0"))
    assert panda.observation_space.shape == (7 + OBS_EXTRA,)
    with pytest.raises(ValueError, match="is a ur5e"):
        gymnasium.make("atelier/Reach-Panda-v0", robot="ur5e_1")


def test_domain_randomisation_draws_belt_speed_latency_and_part_pose() -> None:
    env = _unwrapped(gymnasium.make("atelier/TrackConveyorPart-UR5e-v0"))
    draws = []
    for seed in range(6):
        env.reset(seed=seed)
        draws.append((env._belt_speed, env._lag, *env.twin.part_positions()["part"][:2]))
    speeds, lags, xs, ys = (np.array(v) for v in zip(*draws, strict=True))
    c = TaskConfig()
    assert np.all((speeds >= c.belt_speed_m_s[0]) & (speeds <= c.belt_speed_m_s[1]))
    for v in (speeds, lags, xs, ys):
        assert len(set(v.round(6))) > 2


def test_joint_commands_stay_within_the_plant_limits() -> None:
    env = _unwrapped(gymnasium.make("atelier/Reach-UR5e-v0", action_mode="joint_velocity"))
    env.reset(seed=0)
    q_prev, qd_prev = env.commanded_q, np.zeros(6)
    dt = env.config.policy_dt_s / env._ticks
    for _ in range(10):
        env.step(np.ones(6, dtype=np.float32))  # everything flat out
        q = env.commanded_q
        qd = (q - q_prev) / env.config.policy_dt_s
        assert np.all(np.abs(qd) <= env.limits.max_speed_rad_s + 1e-9)
        # per policy step, at most `ticks` control periods of full acceleration
        assert np.all(np.abs(qd - qd_prev) <= env.limits.max_accel_rad_s2 * dt * env._ticks + 1e-9)
        q_prev, qd_prev = q, qd


def test_the_scripted_baseline_closes_in_on_a_slow_part() -> None:
    config = TaskConfig(belt_speed_m_s=(0.05, 0.05), latency_s=(0.0, 0.0))
    env = gymnasium.make("atelier/TrackConveyorPart-UR5e-v0", action_mode="joint_velocity", config=config)
    baseline = ScriptedBaseline(env)
    obs, info = env.reset(seed=1)
    start = info["distance_m"]
    for _ in range(150):
        obs, _, terminated, truncated, info = env.step(baseline(obs))
        if terminated or truncated:
            break
    assert info["is_success"], info
    assert info["time_to_goal_s"] < 2.0 and start > 0.1
    with pytest.raises(ValueError, match="joint_velocity"):
        ScriptedBaseline(gymnasium.make("atelier/TrackConveyorPart-UR5e-v0"))

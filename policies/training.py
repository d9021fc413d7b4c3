"""Train a small policy on any Gymnasium environment id with Stable-Baselines3 (SAC or PPO).

``train`` is seeded and reproducible (one torch thread, environments seeded ``seed + i``),
normalises observations and rewards with running statistics (``VecNormalize``), evaluates the
deterministic policy every ``eval_every_steps`` steps, shows a progress bar when asked, and
writes a checkpoint directory (:mod:`policies.checkpoint`) with TorchScript and ONNX exports, a
``training_log.json`` of losses and evaluations, and ``learning_curve.png``. It blocks until
training ends (minutes for a full budget, seconds for a test budget).

Environments arrive through Gymnasium's registry only: import the package that registers an id
first, or name it as ``"package.module:namespace/Name-v0"``.

Optionally the policy starts from a teacher (any controller the caller supplies, as a function of
the environment returning an actor): ``bc_episodes`` episodes of the teacher, with noise on the
executed actions so that the data covers recoveries, are cloned into the policy by supervised
regression on its deterministic action before reinforcement learning fine-tunes it. The
checkpoint is the best evaluated policy of the run (the cloned one counts), not merely the last.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from policies.checkpoint import CURVE_FILE, CheckpointInfo, SpaceInfo, save
from policies.export import export_checkpoint
from policies.networks import PolicyNet

LOG_FILE = "training_log.json"

#: A teacher: given an environment, a function from its observation to its action.
Teacher = Callable[[gymnasium.Env[Any, Any]], Callable[[Any], Any]]


@dataclass(frozen=True)
class TrainSettings:
    """What to train and how. Steps count environment steps summed over the parallel copies."""

    env_id: str
    algorithm: Literal["ppo", "sac"] = "ppo"
    total_timesteps: int = 200_000
    seed: int = 0
    n_envs: int = 8
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 5e-4
    gamma: float = 0.99
    hidden: tuple[int, ...] = (64, 64)  # the policy network: small, so it answers in microseconds
    obs_clip: float = 10.0
    # SAC: off-policy, so each transition is learnt from many times; on the tracking task PPO had
    # no success after 60,000 steps. Small critics and a gradient step per two transitions keep
    # a sample within about twice the CPU of a PPO sample.
    buffer_size: int = 300_000
    learning_starts: int = 1_000
    sac_batch_size: int = 128
    sac_gradient_steps: int = 2  # per step of all copies: 2 for 4 copies is one per 2 transitions
    tau: float = 0.005
    critic_hidden: tuple[int, ...] = (64, 64)
    # PPO: n_envs x 128 steps per update (8 updates per 1,000 episodes' worth of 150-step
    # episodes); 10 epochs of minibatches of 256; learning rate above SB3's 3e-4 for a short run.
    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 10
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    log_std_init: float = -1.6  # exploration noise std 0.2 of the action range's half width
    # Warm start from a teacher (0 episodes: none). Noise: the std of the executed action's
    # perturbation as a fraction of the action range's half width.
    teacher: str = ""
    bc_episodes: int = 0
    bc_action_noise: float = 0.2
    bc_epochs: int = 40
    bc_learning_rate: float = 1e-3
    eval_every_steps: int = 20_000
    eval_episodes: int = 20
    progress_bar: bool = True
    command: str = ""

    def reproduce_command(self) -> str:
        """The ``atelier`` command line that repeats this training (``command`` if given)."""
        if self.command:
            return self.command
        return (
            f"atelier policy train {self.env_id} --algorithm {self.algorithm} --timesteps {self.total_timesteps} "
            f"--seed {self.seed} --n-envs {self.n_envs}"
        )


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoint went, its metadata, and the curves of the run."""

    directory: Path
    info: CheckpointInfo
    updates: list[dict[str, float]]  # one entry per PPO update: losses and rollout statistics
    evaluations: list[dict[str, float]]  # timesteps, mean/std return, success rate


def checkpoint_score(result: TrainResult) -> tuple[float, float]:
    """What the checkpoint of a run scored at its evaluation (success rate, mean return); a run
    with no evaluation scores lowest."""
    at = result.info.checkpoint_step
    rows = [e for e in result.evaluations if int(e["timesteps"]) == at] or result.evaluations[-1:]
    if not rows:
        return (-math.inf, -math.inf)
    return (float(rows[0]["success_rate"]), float(rows[0]["mean_return"]))


def best_of(results: Sequence[TrainResult]) -> TrainResult:
    """The run, of several seeds of one training, whose checkpoint scored best: the highest
    success rate, then the highest return, then the first given."""
    if not results:
        raise ValueError("no training runs to choose from")
    return max(results, key=checkpoint_score)  # (max keeps the first of equals)


class _Recorder(KVWriter):
    """Keeps every value Stable-Baselines3 logs, one dict per dump (one per PPO update)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        row = {k: float(v) for k, v in key_values.items() if isinstance(v, int | float | np.floating | np.integer)}
        row["timesteps"] = float(step)
        self.rows.append(row)

    def close(self) -> None:
        pass


class _WriteProgress(BaseCallback):
    """After each evaluation, rewrite the training log so a long run can be watched."""

    def __init__(self, path: Path, recorder: _Recorder) -> None:
        super().__init__()
        self.path, self.recorder = path, recorder

    def _on_step(self) -> bool:
        parent = self.parent
        if isinstance(parent, EvalCallback):
            self.path.write_text(
                json.dumps(
                    {"updates": self.recorder.rows, "evaluations": _evaluations(parent), "running": True}, indent=1
                )
                + "\n"
            )
        return True


def _evaluations(evaluator: EvalCallback) -> list[dict[str, float]]:
    successes = evaluator.evaluations_successes or [[]] * len(evaluator.evaluations_timesteps)
    return [
        {
            "timesteps": float(t),
            "mean_return": float(np.mean(r)),
            "std_return": float(np.std(r)),
            "success_rate": float(np.mean(s)) if len(s) else float("nan"),
        }
        for t, r, s in zip(evaluator.evaluations_timesteps, evaluator.evaluations_results, successes, strict=True)
    ]


def _behaviour_cloning(
    model: BaseAlgorithm, venv: VecNormalize, settings: TrainSettings, teacher: Teacher
) -> dict[str, float]:
    """Clone the teacher into the model's policy; returns the regression loss before and after."""
    env = gymnasium.make(settings.env_id, **settings.env_kwargs)
    act_space = env.action_space
    assert isinstance(act_space, gymnasium.spaces.Box)
    low, high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
    actor = teacher(env)
    rng = np.random.default_rng(settings.seed + 300_000)
    xs, ys = [], []
    for ep in range(settings.bc_episodes):
        obs, _ = env.reset(seed=settings.seed + 200_000 + ep)
        done = False
        while not done:
            a = np.clip(np.asarray(actor(obs), dtype=np.float64), low, high)
            xs.append(obs)
            ys.append(a)
            noisy = np.clip(a + rng.normal(0.0, settings.bc_action_noise, a.shape) * (high - low) / 2, low, high)
            obs, _, terminated, truncated, _ = env.step(noisy.astype(np.float32))
            done = terminated or truncated
    env.close()
    x = np.asarray(xs, dtype=np.float64)
    # The teacher's states set the normalisation the clone learns under.
    venv.obs_rms.update(x)
    obs_t = torch.as_tensor(venv.normalize_obs(x), dtype=torch.float32)
    policy = model.policy
    if isinstance(model, SAC):
        target = torch.as_tensor(model.policy.scale_action(np.asarray(ys)), dtype=torch.float32)
        params = list(model.actor.parameters())

        def predict(o: torch.Tensor) -> torch.Tensor:
            return model.actor(o, deterministic=True)  # type: ignore[no-any-return]

    else:
        target = torch.as_tensor(np.asarray(ys), dtype=torch.float32)
        params = [p for n, p in policy.named_parameters() if not n.startswith(("value_net", "mlp_extractor.value_net"))]

        def predict(o: torch.Tensor) -> torch.Tensor:
            return policy.get_distribution(o).mode()  # type: ignore[operator, no-any-return]

    opt = torch.optim.Adam(params, lr=settings.bc_learning_rate)
    gen = torch.Generator().manual_seed(settings.seed)
    n = len(obs_t)
    with torch.no_grad():
        first = float(torch.mean((predict(obs_t) - target) ** 2))
    for _ in range(settings.bc_epochs):
        for idx in torch.randperm(n, generator=gen).split(256):  # type: ignore[no-untyped-call]
            loss = torch.mean((predict(obs_t[idx]) - target[idx]) ** 2)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    with torch.no_grad():
        last = float(torch.mean((predict(obs_t) - target) ** 2))
    return {"samples": float(n), "loss_start": first, "loss_end": last}


class _KeepBest(BaseCallback):
    """On each new best evaluation, keep the policy as it is (normalisation included)."""

    def __init__(self, venv: VecNormalize, hidden: Sequence[int]) -> None:
        super().__init__()
        self.venv, self.hidden = venv, hidden
        self.best: PolicyNet | None = None
        self.best_at = -1

    def snapshot(self, model: BaseAlgorithm) -> None:
        self.best = copy.deepcopy(policy_net_from_sb3(model, self.venv, self.hidden))
        self.best_at = int(model.num_timesteps)

    def _on_step(self) -> bool:
        self.snapshot(self.model)
        return True


def _check_registered(env_id: str) -> None:
    if ":" in env_id:
        return
    if env_id not in gymnasium.registry:
        ns = env_id.split("/")[0] if "/" in env_id else ""
        known = sorted(k for k in gymnasium.registry if ns and k.startswith(ns + "/"))
        raise gymnasium.error.NameNotFound(
            f"environment {env_id!r} is not registered; import the package that registers it "
            f"(for atelier/ ids: sim.envs) or pass 'module:{env_id}'"
            + (f"; registered under {ns}/: {', '.join(known)}" if known else "")
        )


def _factory(settings: TrainSettings, seed: int) -> Any:
    def make() -> gymnasium.Env[Any, Any]:
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(gymnasium.make(settings.env_id, **settings.env_kwargs), info_keywords=("is_success",))
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return make


def policy_net_from_sb3(model: BaseAlgorithm, vecnorm: VecNormalize, hidden: Sequence[int]) -> PolicyNet:
    """The deterministic actor of a trained PPO or SAC model with the running observation
    statistics baked in: equal to ``model.predict(vecnorm.normalize_obs(obs), deterministic=True)``."""
    obs_space, act_space = model.observation_space, model.action_space
    assert isinstance(obs_space, gymnasium.spaces.Box) and isinstance(act_space, gymnasium.spaces.Box)
    obs_dim, act_dim = int(obs_space.shape[0]), int(act_space.shape[0])
    if isinstance(model, SAC):
        net = PolicyNet(obs_dim, act_dim, hidden, "relu", squash=True)
        net.body.load_state_dict(model.actor.latent_pi.state_dict())
        net.head.load_state_dict(model.actor.mu.state_dict())
    elif isinstance(model, PPO):
        net = PolicyNet(obs_dim, act_dim, hidden, "tanh")
        net.body.load_state_dict(model.policy.mlp_extractor.policy_net.state_dict())
        net.head.load_state_dict(model.policy.action_net.state_dict())
    else:
        raise TypeError(f"cannot extract a policy from {type(model).__name__}")
    rms = vecnorm.obs_rms
    assert isinstance(rms, RunningMeanStd), "Box observations have one set of running statistics"
    net.set_normalisation(torch.as_tensor(rms.mean), torch.as_tensor(rms.var), vecnorm.clip_obs, vecnorm.epsilon)
    net.set_action_bounds(torch.as_tensor(act_space.low), torch.as_tensor(act_space.high))
    return net.eval()


def _model(settings: TrainSettings, venv: VecNormalize) -> BaseAlgorithm:
    if settings.algorithm == "sac":
        return SAC(
            "MlpPolicy",
            venv,
            learning_rate=settings.learning_rate,
            buffer_size=settings.buffer_size,
            learning_starts=settings.learning_starts,
            batch_size=settings.sac_batch_size,
            tau=settings.tau,
            gamma=settings.gamma,
            train_freq=1,
            gradient_steps=settings.sac_gradient_steps,
            policy_kwargs={"net_arch": {"pi": list(settings.hidden), "qf": list(settings.critic_hidden)}},
            seed=settings.seed,
            device="cpu",
            verbose=0,
        )
    return PPO(
        "MlpPolicy",
        venv,
        n_steps=settings.n_steps,
        batch_size=settings.batch_size,
        n_epochs=settings.n_epochs,
        learning_rate=settings.learning_rate,
        gamma=settings.gamma,
        gae_lambda=settings.gae_lambda,
        clip_range=settings.clip_range,
        ent_coef=settings.ent_coef,
        policy_kwargs={
            "net_arch": {"pi": list(settings.hidden), "vf": list(settings.hidden)},
            "activation_fn": torch.nn.Tanh,
            "log_std_init": settings.log_std_init,
        },
        seed=settings.seed,
        device="cpu",
        verbose=0,
    )


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("stable_baselines3", "torch", "gymnasium", "mujoco", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def train(settings: TrainSettings, out_dir: Path, teacher: Teacher | None = None) -> TrainResult:
    """Train, then write the checkpoint, its exports, the training log and the learning curve to
    ``out_dir`` (created; files of the same names are replaced). Blocks until done. ``teacher``
    is required when ``settings.bc_episodes`` > 0."""
    _check_registered(settings.env_id)
    if settings.bc_episodes > 0 and teacher is None:
        raise ValueError("bc_episodes > 0 needs a teacher")
    torch.set_num_threads(1)
    set_random_seed(settings.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    venv = VecNormalize(
        DummyVecEnv([_factory(settings, settings.seed + i) for i in range(settings.n_envs)]),
        norm_obs=True,
        # PPO learns from returns scaled by their running spread; SAC's critic wants raw rewards.
        norm_reward=settings.algorithm == "ppo",
        clip_obs=settings.obs_clip,
        gamma=settings.gamma,
    )
    eval_env = VecNormalize(
        DummyVecEnv([_factory(settings, settings.seed + 100_000)]),
        training=False,
        norm_obs=True,
        norm_reward=False,
        clip_obs=settings.obs_clip,
    )
    model = _model(settings, venv)
    recorder = _Recorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    keep = _KeepBest(venv, settings.hidden)
    cloning: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = EvalCallback(
            eval_env,
            n_eval_episodes=settings.eval_episodes,
            eval_freq=max(1, settings.eval_every_steps // settings.n_envs),
            log_path=tmp,
            deterministic=True,
            verbose=0,
            callback_on_new_best=keep,
            callback_after_eval=_WriteProgress(out_dir / LOG_FILE, recorder),
        )
        if settings.bc_episodes > 0:
            assert teacher is not None
            cloning = _behaviour_cloning(model, venv, settings, teacher)
            # The cloned policy is evaluated like any other and is the best to beat.
            evaluator.init_callback(model)
            evaluator.n_calls = evaluator.eval_freq - 1
            evaluator.on_step()
        model.learn(total_timesteps=settings.total_timesteps, callback=evaluator, progress_bar=settings.progress_bar)
    # Stable-Baselines3 writes an update's losses with the next rollout's statistics; the last
    # update's are still pending.
    model.logger.dump(model.num_timesteps)
    evaluations = _evaluations(evaluator)
    updates = [row for row in recorder.rows if any(k.startswith("train/") for k in row)]

    last = policy_net_from_sb3(model, venv, settings.hidden)
    probe = np.stack([venv.observation_space.sample() for _ in range(16)])
    expected, _ = model.predict(venv.normalize_obs(probe), deterministic=True)
    with torch.inference_mode():
        got = last(torch.as_tensor(probe, dtype=torch.float32)).numpy()
    if not np.allclose(got, expected, atol=1e-5):
        raise RuntimeError("the extracted policy differs from the trained one; Stable-Baselines3's layout changed?")
    net = keep.best if keep.best is not None else last
    chosen_at = keep.best_at if keep.best is not None else int(model.num_timesteps)

    probe_env = gymnasium.make(settings.env_id, **settings.env_kwargs)
    dt = probe_env.unwrapped.metadata.get("policy_dt_s")
    probe_env.close()
    info = CheckpointInfo(
        env_id=settings.env_id,
        env_kwargs=dict(settings.env_kwargs),
        algorithm=f"{settings.algorithm.upper()} (stable-baselines3)",
        seed=settings.seed,
        total_timesteps=int(model.num_timesteps),
        checkpoint_step=chosen_at,
        teacher=settings.teacher or None,
        command=settings.reproduce_command(),
        observation=SpaceInfo.of(venv.observation_space),
        action=SpaceInfo.of(venv.action_space),
        hidden=tuple(settings.hidden),
        activation=net.activation,
        squash=net.squash,
        policy_dt_s=float(dt) if isinstance(dt, int | float) else None,
        versions=_versions(),
    )
    save(out_dir, info, net)
    info = export_checkpoint(out_dir)
    settings_json = {k: v for k, v in asdict(settings).items() if k != "progress_bar"}
    log = {
        "settings": settings_json,
        "behaviour_cloning": cloning,
        "checkpoint_from_step": chosen_at,
        "updates": updates,
        "evaluations": evaluations,
    }
    (out_dir / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    plot_learning_curve(updates, evaluations, out_dir / CURVE_FILE, title=settings.env_id)
    venv.close()
    eval_env.close()
    return TrainResult(out_dir, info, updates, evaluations)


def plot_learning_curve(
    updates: list[dict[str, float]], evaluations: list[dict[str, float]], path: Path, title: str = ""
) -> None:
    """Two panels over environment steps: returns (training episodes and evaluations) and the
    evaluation success rate with the value loss. Written as a PNG without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    tr = [(u["timesteps"], u["rollout/ep_rew_mean"]) for u in updates if "rollout/ep_rew_mean" in u]
    if tr:
        ax1.plot(*zip(*tr, strict=True), color="0.6", label="training episodes (mean return)")
    if evaluations:
        t = np.array([e["timesteps"] for e in evaluations])
        m = np.array([e["mean_return"] for e in evaluations])
        s = np.array([e["std_return"] for e in evaluations])
        ax1.plot(t, m, color="tab:blue", marker="o", ms=3, label="evaluation (deterministic)")
        ax1.fill_between(t, m - s, m + s, color="tab:blue", alpha=0.15)
        ax2.plot(t, [e["success_rate"] for e in evaluations], color="tab:green", marker="o", ms=3, label="success rate")
    ax1.set_xlabel("environment steps")
    ax1.set_ylabel("episode return")
    if tr or evaluations:
        ax1.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("environment steps")
    ax2.set_ylabel("evaluation success rate")
    ax2.set_ylim(-0.02, 1.02)
    key = "train/value_loss" if any("train/value_loss" in u for u in updates) else "train/critic_loss"
    vl = [(u["timesteps"], u[key]) for u in updates if key in u]
    if vl:
        ax3 = ax2.twinx()
        ax3.plot(*zip(*vl, strict=True), color="tab:red", alpha=0.5, lw=1)
        ax3.set_ylabel(key.split("/")[1].replace("_", " "), color="tab:red")
    if evaluations:
        ax2.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""``atelier policy``: train, evaluate and export the small on-robot control policies.

Wiring (like ``cli.py``): it imports ``sim.envs`` so that the ``atelier/`` environments are in
Gymnasium's registry, then hands ids to ``policies``, which imports nothing of ours.

    atelier policy train atelier/TrackConveyorPart-UR5e-v0 --out policies/checkpoints/track_conveyor_part_ur5e
    atelier policy eval atelier/TrackConveyorPart-UR5e-v0 --checkpoint policies/checkpoints/track_conveyor_part_ur5e
    atelier policy export policies/checkpoints/track_conveyor_part_ur5e
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from policies.training import TrainResult, TrainSettings

#: What a training of several seeds writes beside the kept checkpoint.
SWEEP_FILE = "sweep.json"

policy_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

out = Console()
err = Console(stderr=True)

EnvId = Annotated[str, typer.Argument(help="a Gymnasium id, e.g. atelier/TrackConveyorPart-UR5e-v0")]
CheckpointDir = Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint directory")]


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _one_thread() -> None:
    # Training and evaluation share the machine; one thread each keeps runs reproducible too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _teachers() -> dict[str, Any]:
    from sim.envs.baselines import VelocityTeacher

    return {"none": None, "velocity": VelocityTeacher}


def _train_seed(settings: TrainSettings, out_dir: str, teacher: str) -> TrainResult:
    """One seed's training, here or in a batch worker or Ray task (module level, so that it can
    be sent there): the environments registered, linear algebra on one thread, so a seed trains
    the same network whichever way it runs."""
    _one_thread()
    from threadpoolctl import threadpool_limits

    import sim.envs  # noqa: F401  (registers the atelier/ environments)
    from policies.training import train

    with threadpool_limits(1):
        return train(settings, Path(out_dir), _teachers()[teacher])


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise _fail(f"--seeds must be whole numbers separated by commas, not {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise _fail(f"--seeds must be distinct numbers of 0 or more, not {text!r}")
    return seeds


@policy_app.command("train")
def train_cmd(
    env_id: EnvId,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="checkpoint directory to write")] = Path(
        "out/policies/latest"
    ),
    algorithm: Annotated[str, typer.Option(help="ppo or sac (Stable-Baselines3)")] = "ppo",
    timesteps: Annotated[int, typer.Option(min=256, help="environment steps over all copies")] = 200_000,
    seed: Annotated[int, typer.Option(min=0, help="seed of everything random in training")] = 0,
    seeds: Annotated[
        str | None,
        typer.Option(help="train one run per seed (e.g. 0,1,2) and keep the best; each run goes to OUT/seeds/"),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="with --seeds: runs at once, each a process")] = 1,
    ray: Annotated[
        str | None, typer.Option("--ray", help="with --seeds: run on Ray (HOST:PORT, or local: started here)")
    ] = None,
    n_envs: Annotated[int, typer.Option(min=1, max=64, help="environment copies stepped in turn")] = 8,
    eval_every: Annotated[int, typer.Option(min=256, help="evaluate every this many steps")] = 20_000,
    eval_episodes: Annotated[int, typer.Option(min=1, help="episodes per evaluation")] = 20,
    teacher: Annotated[str, typer.Option(help="warm start: none, or velocity (sim.envs.baselines)")] = "none",
    bc_episodes: Annotated[int, typer.Option(min=0, help="teacher episodes cloned before RL")] = 0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a policy with SAC or PPO (Stable-Baselines3) and write a checkpoint with its exports
    and learning curve. Same arguments, same checkpoint. With ``--seeds``, one run per seed, on
    ``--workers`` processes or a Ray cluster (the same seed gives the same network every way),
    and the checkpoint is the best run's (success rate, then return, at its evaluation)."""
    _one_thread()
    import gymnasium

    import sim.envs  # noqa: F401  (registers the atelier/ environments)
    from plant.trust import default_state_dir
    from plant.workers import run_batch
    from policies.training import TrainSettings, best_of

    if algorithm not in ("sac", "ppo"):
        raise _fail(f"--algorithm must be sac or ppo, not {algorithm!r}")
    teachers = _teachers()
    if teacher not in teachers:
        raise _fail(f"--teacher must be one of {', '.join(teachers)}, not {teacher!r}")
    if (teacher == "none") != (bc_episodes == 0):
        raise _fail("--teacher and --bc-episodes go together")
    chosen = _seed_list(seeds) if seeds is not None else [seed]
    if seeds is None and (workers > 1 or ray is not None):
        raise _fail("--workers and --ray spread the runs of --seeds: give --seeds")
    many = seeds is not None

    def settings_for(s: int, out: Path) -> TrainSettings:
        command = shlex.join(
            [
                "atelier", "policy", "train", env_id, "--out", str(out), "--algorithm", algorithm,
                "--timesteps", str(timesteps),
                "--seed", str(s), "--n-envs", str(n_envs), "--eval-every", str(eval_every),
                "--eval-episodes", str(eval_episodes),
                *(["--teacher", teacher, "--bc-episodes", str(bc_episodes)] if teacher != "none" else []),
            ]
        )  # fmt: skip
        return TrainSettings(
            env_id=env_id,
            algorithm="sac" if algorithm == "sac" else "ppo",
            total_timesteps=timesteps,
            seed=s,
            n_envs=n_envs,
            eval_every_steps=eval_every,
            eval_episodes=eval_episodes,
            progress_bar=progress and (workers == 1 and ray is None),
            command=command,
            teacher="" if teacher == "none" else f"sim.envs.baselines.{teachers[teacher].__name__}",
            bc_episodes=bc_episodes,
        )

    dirs = {s: out_dir / "seeds" / f"seed_{s}" if many else out_dir for s in chosen}
    args = [(settings_for(s, d), str(d), teacher) for s, d in dirs.items()]
    try:
        if workers == 1 and ray is None:
            results = [_train_seed(*a) for a in args]
        else:
            results = run_batch(_train_seed, args, workers, ray, default_state_dir() / "ray")
    except gymnasium.error.Error as exc:
        raise _fail(str(exc)) from None
    result = results[0]
    if many:
        result = best_of(results)
        _keep_best(out_dir, results, result, workers, ray)
    last = result.evaluations[-1] if result.evaluations else None
    out.print(f"[green]wrote[/] {out_dir}: {', '.join(sorted(result.info.files))}, learning_curve.png")
    if last:
        out.print(
            f"last evaluation at {last['timesteps']:.0f} steps: return {last['mean_return']:.1f}, "
            f"success {last['success_rate']:.0%}"
        )


def _keep_best(out_dir: Path, results: list[TrainResult], best: TrainResult, workers: int, ray: str | None) -> None:
    """Copy the best run's checkpoint into ``out_dir``, write ``sweep.json`` (every seed's score,
    which was kept, how the runs ran) and print the table."""
    import shutil

    from policies.training import checkpoint_score as score

    table = Table("seed", "checkpoint at step", "success", "return", "")
    rows = []
    for r in results:
        success, ret = score(r)
        rows.append(
            {
                "seed": r.info.seed,
                "directory": str(r.directory),
                "checkpoint_step": r.info.checkpoint_step,
                "success_rate": success,
                "mean_return": ret,
                "kept": r is best,
            }
        )
        table.add_row(
            str(r.info.seed), str(r.info.checkpoint_step), f"{success:.0%}", f"{ret:.1f}", "kept" if r is best else ""
        )
    shutil.copytree(best.directory, out_dir, dirs_exist_ok=True)
    how = f"Ray at {ray}" if ray is not None else f"{workers} worker processes" if workers > 1 else "in one process"
    sweep = {"seeds": rows, "kept_seed": best.info.seed, "ran": how}
    (out_dir / SWEEP_FILE).write_text(json.dumps(sweep, indent=1) + "\n")
    out.print(table)
    out.print(f"kept seed {best.info.seed}'s checkpoint ({how}); every seed's in {out_dir / 'seeds'}")


@policy_app.command("export")
def export_cmd(checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")]) -> None:
    """Write TorchScript and ONNX exports of a checkpoint and check they match its network."""
    _one_thread()
    from policies.checkpoint import CheckpointError
    from policies.export import check_exports, export_checkpoint

    try:
        info = export_checkpoint(checkpoint)
        worst = check_exports(checkpoint, info)
    except CheckpointError as exc:
        raise _fail(str(exc)) from None
    out.print(f"[green]exported[/] {checkpoint}: policy.ts, policy.onnx (max difference {worst:.1e})")


@policy_app.command("eval")
def eval_cmd(
    env_id: EnvId,
    checkpoint: CheckpointDir,
    episodes: Annotated[int, typer.Option(min=1, help="seeded episodes for each controller")] = 100,
    seed: Annotated[int, typer.Option(help="episode i uses seed + i, the same for both controllers")] = 0,
    backend: Annotated[str, typer.Option(help="auto, eager, torchscript or onnx")] = "auto",
    report: Annotated[
        Path | None, typer.Option(help="JSON report (default: eval_report.json in the checkpoint)")
    ] = None,
    baseline: Annotated[bool, typer.Option(help="also run the scripted (IK) baseline")] = True,
    teacher: Annotated[bool, typer.Option(help="also run the velocity teacher the policy was cloned from")] = False,
) -> None:
    """Run the policy (through the on-robot runtime) and the scripted IK baseline over the same
    seeded episodes in the twin; report success rate and time to goal side by side."""
    _one_thread()
    import gymnasium

    import sim.envs  # noqa: F401
    from policies.checkpoint import CheckpointError
    from policies.evaluation import compare, run_episodes
    from policies.runtime import LatencyBudgetError, PolicyRuntime, SpaceMismatchError
    from sim.envs.baselines import ScriptedBaseline, VelocityTeacher

    try:
        env = gymnasium.make(env_id)
    except gymnasium.error.Error as exc:
        raise _fail(str(exc)) from None
    try:
        runtime = PolicyRuntime.load(checkpoint, env.observation_space, env.action_space, backend=backend)  # type: ignore[arg-type]
    except (CheckpointError, SpaceMismatchError, LatencyBudgetError) as exc:
        raise _fail(str(exc)) from None
    if runtime.info.env_id != env_id:
        err.print(f"[yellow]note:[/] the checkpoint was trained on {runtime.info.env_id}, evaluated on {env_id}")
    results: dict[str, Any] = {}
    with out.status(f"policy ({runtime.backend}) over {episodes} episodes..."):
        results["policy"] = run_episodes(env, lambda obs: runtime.act(obs).action, episodes, seed)
    if baseline:
        benv = gymnasium.make(env_id, action_mode="joint_velocity")
        actor = ScriptedBaseline(benv)
        with out.status(f"scripted IK baseline over {episodes} episodes..."):
            results["scripted IK baseline"] = run_episodes(benv, actor, episodes, seed)
    if teacher:
        tenv = gymnasium.make(env_id)
        with out.status(f"velocity teacher over {episodes} episodes..."):
            results["velocity teacher"] = run_episodes(tenv, VelocityTeacher(tenv), episodes, seed)
    table = Table(title=f"{env_id}: {episodes} episodes, seeds {seed}..{seed + episodes - 1}")
    for col in ("controller", "success rate", "time to goal (mean)", "median", "p90", "mean distance at end"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(
            name,
            f"{r.success_rate:.1%}",
            f"{r.ttg_mean_s:.3f} s" if r.successes else "-",
            f"{r.ttg_median_s:.3f} s" if r.successes else "-",
            f"{r.ttg_p90_s:.3f} s" if r.successes else "-",
            f"{r.final_distance_mean_m * 100:.1f} cm",
        )
    out.print(table)
    doc: dict[str, Any] = {
        "env_id": env_id,
        "checkpoint": str(checkpoint),
        "backend": runtime.backend,
        "episodes": episodes,
        "seeds": [seed, seed + episodes - 1],
        "results": {k: v.summary() for k, v in results.items()},
        "runtime_latency_p99_s": runtime.calibration_p99_s,
        "runtime_late_answers": runtime.late,
    }
    if "scripted IK baseline" in results:
        both = compare(results["policy"], results["scripted IK baseline"])
        doc["both_succeeded"] = both
        if both["episodes"]:
            out.print(
                f"on the {both['episodes']} episodes both reached the goal: policy {both['policy_ttg_mean_s']:.3f} s, "
                f"baseline {both['baseline_ttg_mean_s']:.3f} s mean time to goal"
            )
    path = report or (checkpoint / "eval_report.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    out.print(f"report: {path}")


if __name__ == "__main__":  # python -m llm_coordinator.cli_policy ..., until the lead registers it
    policy_app()

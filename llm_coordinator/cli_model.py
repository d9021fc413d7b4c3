"""``atelier model``: the plant-tuned model.

    atelier model tune --plant PLANT.yaml --out models/PLANT [--db sqlite:///atelier.db] [--held-out FILE]
    atelier model show models/PLANT

``tune`` makes a version from the plant description and, with ``--db``, from the decisions its
supervisors and operators recorded (the audit log must verify). It shows a progress bar, resumes
an interrupted run, and moves the directory's ``CURRENT`` only once the new version is complete.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from llm_coordinator.tuning.config import TuneConfig

_DEFAULT = TuneConfig()

model_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

out = Console()
err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@model_app.command("tune")
def tune_cmd(
    plant_file: Annotated[Path, typer.Option("--plant", help="the plant description (YAML)")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="the plant's model directory")] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="a plan store whose decisions to learn from (SQLAlchemy URL)")
    ] = None,
    epochs: Annotated[float, typer.Option(help="passes over the examples")] = _DEFAULT.epochs,
    per_shape: Annotated[int, typer.Option(help="generated examples per order shape")] = _DEFAULT.per_shape,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = _DEFAULT.rank,
    seed: Annotated[int, typer.Option(help="seed of the data, the split and the training")] = 0,
    time_limit_s: Annotated[
        float, typer.Option(help="training stops here (the adapter is still made)")
    ] = _DEFAULT.time_limit_s,
    threads: Annotated[int, typer.Option(help="CPU threads")] = 2,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate of the LoRA")] = _DEFAULT.learning_rate,
    checkpoint_every: Annotated[int, typer.Option(help="steps between resumable checkpoints")] = 10,
    promote: Annotated[
        bool, typer.Option(help="run the new version even if the current one scored better on its dev examples")
    ] = False,
    held_out: Annotated[
        list[Path] | None,
        typer.Option(
            "--held-out",
            help="orders the model is measured on, kept out of its data (near duplicates too): a text file, one "
            "order a line, or a scenario file (bench/orders/*.yaml; its test split)",
        ),
    ] = None,
) -> None:
    """Tune the plant's model on this CPU and publish it as the plant's current version."""
    from plant import PlantError, load_plant

    try:
        plant = load_plant(plant_file)
    except (PlantError, OSError) as exc:
        raise _fail(f"{plant_file}: {exc}") from None
    from llm_coordinator.tuning.feedback import FeedbackError
    from llm_coordinator.tuning.tune import TuneError, tune_plant

    store = None
    if db is not None:
        from llm_coordinator.store import Store

        try:
            store = Store(db)
            report = store.verify_audit()
        except Exception as exc:  # a corrupt or foreign file: say which and why, change nothing
            raise _fail(f"the plan store {db} cannot be read: {exc}") from None
        if not report.ok:
            raise _fail(
                f"the audit log of {db} does not verify ({'; '.join(report.problems[:3])}): nothing is learnt from it"
            )
    try:
        held = [o for f in held_out or [] for o in _held_out_orders(f)]
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    target = out_dir or Path("models") / plant.name
    config = TuneConfig(
        learning_rate=learning_rate,
        epochs=epochs,
        per_shape=per_shape,
        rank=rank,
        alpha=2 * rank,
        seed=seed,
        time_limit_s=time_limit_s,
        checkpoint_every=checkpoint_every,
        threads=threads,
    )
    command = "atelier model tune " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        try:
            result = tune_plant(
                plant,
                target,
                store=store,
                config=config,
                progress=progress,
                say=lambda m: bar.console.print(m, highlight=False),
                command=command,
                held_out=held,
                promote=promote,
            )
        except (TuneError, FeedbackError) as exc:
            raise _fail(str(exc)) from None
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            # The training libraries, the adapter's export or llama.cpp failed: nothing was
            # published, CURRENT is unchanged; a rerun resumes from the last checkpoint.
            raise _fail(f"tuning into {target} failed, nothing published: {type(exc).__name__}: {exc}") from None
        except KeyboardInterrupt:
            raise _fail(f"interrupted: {target} is unchanged; the next run resumes from its checkpoint", 130) from None
    out.print(f"{result.version}: {result.path}", highlight=False)
    out.print(json.dumps(result.card["figures"], indent=2), highlight=False)
    out.print(f"use it with: atelier plan --config {target / 'coordinator.yaml'} ...", highlight=False)


def _held_out_orders(path: Path) -> list[str]:
    """The orders of a held-out file (see ``--held-out``)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML ({exc})") from None
        orders = data.get("orders") if isinstance(data, dict) else None
        if not isinstance(orders, list):
            raise ValueError(f"{path}: no list of orders (a scenario file has 'orders: [...]')")
        return [str(o["order"]) for o in orders if isinstance(o, dict) and o.get("split") == "test" and "order" in o]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@model_app.command("show")
def show_cmd(model_dir: Annotated[Path, typer.Argument(help="a model directory, version or adapter")]) -> None:
    """The version a model directory runs, and its card."""
    from llm_coordinator.tuning.models import ModelDirError, resolve

    try:
        tuned = resolve(model_dir)
    except ModelDirError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{tuned.version}: {tuned.adapter}", highlight=False)
    out.print(json.dumps(tuned.card, indent=2, sort_keys=True), highlight=False)

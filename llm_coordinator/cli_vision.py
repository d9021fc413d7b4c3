"""``atelier vision``: train and evaluate the inspection camera's vision model in the twin."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from plant import PlantError, load_plant
from plant.text import safe_text

vision_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
out = Console()
err = Console(stderr=True)

PlantOpt = Annotated[Path | None, typer.Option("--plant", "-p", help="plant description YAML (default: the demo cell)")]


def _fail(message: str) -> None:
    err.print(safe_text(message, 2000), markup=False, highlight=False)
    raise typer.Exit(2)


@contextlib.contextmanager
def _bars() -> Iterator[tuple[Progress, Callable[[str, int, int], None]]]:
    """Progress bars on stderr, one per stage, and the callback that moves them."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=n)
            bar.update(tasks[stage], completed=i)

        yield bar, progress


def _inspection_machine(plant: Any, machine: str | None) -> str:
    found = [n for n, m in plant.machines.items() if m.kind == "inspection"]
    if machine is None:
        if not found:
            _fail(f"{plant.name} has no inspection machine")
        return str(found[0])
    if machine not in found:
        _fail(f"{machine!r} is not an inspection machine of {plant.name}; its are: {', '.join(found) or 'none'}")
    return machine


@vision_app.command("train")
def train_cmd(
    part_type: Annotated[str, typer.Argument(help="the part type to judge")],
    out_dir: Annotated[Path, typer.Option("--out", help="the checkpoint folder to write")],
    plant_file: PlantOpt = None,
    machine: Annotated[str | None, typer.Option(help="the inspection machine (default: the first)")] = None,
    mode: Annotated[
        str, typer.Option(help="supervised (labelled defects) or anomaly (good parts only)")
    ] = "supervised",
    images: Annotated[int, typer.Option(min=50, help="training renders")] = 2400,
    epochs: Annotated[int, typer.Option(min=1)] = 14,
    size: Annotated[int, typer.Option(min=32, max=256, help="image side, pixels")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
    examples: Annotated[
        Path | None,
        typer.Option(help="labelled examples to add (the console keeps overruled verdicts in <state>/vision_examples)"),
    ] = None,
) -> None:
    """Render parts at the inspection camera in the twin (randomised lights, pose, noise and
    defects), train a small model on them and write its checkpoint with an ONNX export."""
    import torch

    from policies.vision import VisionError
    from sim.vision import train_checkpoint

    try:
        plant = load_plant(plant_file)
    except PlantError as exc:
        _fail(str(exc))
    machine = _inspection_machine(plant, machine)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    command = "atelier vision train " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    with _bars() as (bar, progress):
        try:
            path = train_checkpoint(
                plant,
                machine,
                part_type,
                out_dir,
                mode=mode,
                images=images,
                epochs=epochs,
                size=size,
                seed=seed,
                command=command,
                examples=examples,
                say=lambda m: bar.console.print(safe_text(m), markup=False, highlight=False),
                progress=progress,
            )
        except VisionError as exc:
            _fail(f"vision train: {exc}")
    out.print(safe_text(f"wrote {path} (evaluate it: atelier vision eval {path})"), markup=False, highlight=False)


def _row(name: str, f: dict[str, Any], targets: dict[str, float] | None) -> list[str]:
    def mark(ok: bool) -> str:
        return "" if targets is None else (" ok" if ok else " MISSED")

    t = targets or {}
    cells = [
        name,
        f"{f['auroc']:.4f}" + mark(f["auroc"] >= t.get("auroc", 0)),
        f"{100 * f['recall']:.1f}%" + mark(f["recall"] >= t.get("recall", 0)),
        f"{100 * f['false_reject']:.1f}%" + mark(f["false_reject"] <= t.get("false_reject", 1)),
    ]
    if "p99_ms" in f:
        cells.append(f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f}" + mark(f["p99_ms"] <= t.get("p99_ms", 1e9)))
    else:
        cells.append("-")
    return cells


@vision_app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="a vision checkpoint folder")],
    plant_file: PlantOpt = None,
    images: Annotated[int, typer.Option(min=20, help="held-out renders")] = 1000,
    seed: Annotated[
        int | None, typer.Option(help="seed of the held-out renders (default: one training never uses)")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="where to write the report (default: the checkpoint's eval_report.json)")
    ] = None,
) -> None:
    """Judge held-out renders (poses, lights and defect placements training never saw) and print
    AUROC, defect recall, false rejects and one-core latency beside a classical baseline."""
    from policies.vision import VisionError
    from sim.vision import EVAL_SEED, evaluate_checkpoint

    try:
        plant = load_plant(plant_file)
    except PlantError as exc:
        _fail(str(exc))
    with _bars() as (_bar, progress):
        try:
            result: dict[str, Any] = evaluate_checkpoint(
                plant,
                checkpoint,
                images=images,
                seed=EVAL_SEED if seed is None else seed,
                report_file=report,
                progress=progress,
            )
        except VisionError as exc:
            _fail(f"vision eval: {exc}")
    table = Table(title=f"{result['part_type']} ({result['mode']}), {images} held-out renders")
    for col in ("", "image AUROC", "defect recall", "false rejects", "p50 / p99 ms (1 core)"):
        table.add_column(col)
    table.add_row(*_row("model", result["model"], result["targets"]))
    table.add_row(*_row("baseline: reference difference", result["baseline"], None))
    t = result["targets"]
    table.add_row(
        "target",
        f">= {t['auroc']}",
        f">= {100 * t['recall']:.0f}%",
        f"<= {100 * t['false_reject']:.0f}%",
        f"p99 <= {t['p99_ms']:g}",
    )
    out.print(table)
    per = Table(title="recall per defect")
    per.add_column("defect")
    per.add_column("model")
    per.add_column("baseline")
    for d, r in result["model"]["recall_per_defect"].items():
        per.add_row(d, f"{100 * r:.1f}%", f"{100 * result['baseline']['recall_per_defect'].get(d, 0.0):.1f}%")
    out.print(per)
    out.print(f"report: {result['report_file']}", markup=False, highlight=False)

"""The ``atelier`` command line. This module is wiring: it may import the twin and adapters."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

# MuJoCo picks its OpenGL platform when it is first imported, by whichever module that is:
# offscreen EGL unless the person chose another, before any command imports it.
os.environ.setdefault("MUJOCO_GL", "egl")

from llm_coordinator.cli_plan import _safe
from plant import PlantError, load_plant
from plant.config import PlantDescription
from plant.text import safe_text

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
plant_app = typer.Typer(no_args_is_help=True, help="Check and inspect plant descriptions.")
app.add_typer(plant_app, name="plant")


def _register_subcommands() -> None:
    # Each command group lives in its own module; they import their heavy libraries lazily.
    from llm_coordinator import cli_console, cli_plan
    from llm_coordinator.cli_model import model_app
    from llm_coordinator.cli_policy import policy_app
    from llm_coordinator.cli_robot import robot_app
    from llm_coordinator.cli_twin import twin_app
    from llm_coordinator.cli_vision import vision_app

    app.add_typer(twin_app, name="twin", help="Run the twin live: machines served over OPC-UA and Modbus TCP.")
    app.add_typer(policy_app, name="policy", help="Train, evaluate and export robot control policies.")
    app.add_typer(model_app, name="model", help="Tune the plant's own model, and show which version it runs.")
    app.add_typer(robot_app, name="robot", help="The on-robot runtime, and the operator's e-stop commands.")
    app.add_typer(vision_app, name="vision", help="Train and evaluate the inspection camera's vision model.")
    cli_plan.register(app)
    cli_console.register(app)


_register_subcommands()

out = Console()
err = Console(stderr=True)

PlantOpt = Annotated[
    Path | None,
    typer.Option("--plant", "-p", help="plant description YAML (default: the shipped demo cell)"),
]


def _load(path: Path | None) -> PlantDescription:
    try:
        return load_plant(path)
    except PlantError as exc:
        shown = escape(safe_text(exc, 20000, newlines=True))
        err.print(f"[bold red]error:[/] {shown}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


@plant_app.command("validate")
def plant_validate(file: Annotated[Path, typer.Argument(help="plant description YAML")]) -> None:
    """Validate a plant file; print every problem as file:line:column: field: reason."""
    plant = _load(file)
    out.print(
        f"[green]ok[/] {_safe(file)}: plant [bold]{_safe(plant.name, 80)}[/] with {len(plant.machines)} machines, "
        f"{len(plant.robots)} robots, {len(plant.zones)} zones, {len(plant.recipes)} recipes"
    )


@plant_app.command("show")
def plant_show(plant_file: PlantOpt = None) -> None:
    """Summarise a plant: machines, robots, zones and recipes."""
    plant = _load(plant_file)
    t = Table(title=f"plant {_safe(plant.name, 80)}")
    for col in ("kind", "name", "what"):
        t.add_column(col)
    for n, m in plant.machines.items():
        t.add_row("machine", _safe(n, 80), _safe(f"{m.kind} over {m.protocol} at {m.endpoint}"))
    for n, r in plant.robots.items():
        t.add_row(
            "robot", _safe(n, 80), _safe(f"{r.model} with {r.tool.model}, skills: {', '.join(r.allowed_skills())}")
        )
    for n, z in plant.zones.items():
        t.add_row("zone", _safe(n, 80), _safe(z.kind + (f" ({z.hazard_class})" if z.hazard_class else "")))
    for n, rc in plant.recipes.items():
        t.add_row("recipe", _safe(n, 80), _safe(rc.description))
    out.print(t)


@app.command("sim")
def sim_cmd(
    seconds: Annotated[float, typer.Option(min=0.01, max=3600, help="simulated seconds to run")] = 10.0,
    render: Annotated[Path | None, typer.Option(help="write frames to .mp4, .gif or .png")] = None,
    camera: Annotated[str, typer.Option(help="camera: overview, top or robots")] = "overview",
    fps: Annotated[int, typer.Option(min=1, max=60)] = 20,
    width: Annotated[int, typer.Option(min=64, max=1920)] = 960,
    height: Annotated[int, typer.Option(min=64, max=1080)] = 540,
    realtime: Annotated[bool, typer.Option(help="pace the twin to the wall clock")] = False,
    plant_file: PlantOpt = None,
) -> None:
    """Build the twin of a plant, run a demonstration cycle in it, and render it."""
    import time

    from sim.render import Camera, RenderError, check_output_path, write_frames
    from sim.scenario import DemoScenario
    from sim.twin import Twin

    plant = _load(plant_file)
    if render is not None:
        try:
            check_output_path(render)
        except RenderError as exc:
            err.print(f"[bold red]error:[/] {_safe(exc)}", highlight=False)
            raise typer.Exit(2) from None
    t0 = time.perf_counter()
    twin = Twin(plant)
    out.print(
        f"twin of [bold]{_safe(plant.name, 80)}[/] built in {time.perf_counter() - t0:.1f} s: "
        f"{twin.model.nbody} bodies, {twin.model.ngeom} geoms, {twin.model.nu} actuators, "
        f"physics step {twin.config.sim_dt_s * 1000:g} ms, control tick {twin.config.ctrl_dt_s * 1000:g} ms"
    )
    scenario = DemoScenario(twin)
    frames = []
    cam = None
    if render is not None:
        try:
            cam = Camera(twin, camera, width, height)
        except RenderError as exc:
            err.print(f"[bold red]error:[/] {_safe(exc)}", highlight=False)
            raise typer.Exit(2) from None
    shown = 0
    still = render is not None and render.suffix.lower() == ".png"
    # Frames are taken every whole number of control ticks; the clip's rate follows from that.
    ticks_per_frame = max(1, round(1.0 / fps / twin.config.ctrl_dt_s))
    clip_fps = 1.0 / (ticks_per_frame * twin.config.ctrl_dt_s)
    wall0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]twin[/]"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("run", total=seconds)

        def on_tick(tw: Twin) -> None:
            nonlocal shown
            scenario.update()
            bar.update(task, completed=tw.time_s)
            if cam is not None and not still:
                frames.append(cam.frame())
            for ev in tw.events[shown:]:
                bar.console.print(
                    f"  t={ev.time_s:6.2f} s  {_safe(ev.source, 40):<12} {_safe(ev.text)}", highlight=False
                )
            shown = len(tw.events)

        twin.run(seconds, realtime=realtime, on_tick=on_tick, every_s=ticks_per_frame * twin.config.ctrl_dt_s)
    wall = time.perf_counter() - wall0
    if cam is not None:
        if still:
            frames = [cam.frame()]
        cam.close()
    out.print(
        f"ran {twin.time_s:.2f} simulated s in {wall:.2f} wall s"
        + (" (including rendering)" if render else f" (real-time factor {twin.time_s / wall:.1f})")
    )
    t = Table(title="state at the end")
    t.add_column("thing")
    t.add_column("state")
    for n, tm in twin.machines.items():
        extra = f", belt {tm.belt_speed_m_s:.2f} m/s" if tm.kind == "conveyor" else ""
        extra += f", door {'closed' if tm.state_model.door_closed else 'open'}" if tm.state_model.has_door else ""
        t.add_row(_safe(n, 80), f"{tm.state.name}, cycles {tm.state_model.cycle_count}{extra}")
    for n, (x, y, z) in twin.part_positions().items():
        t.add_row(_safe(n, 80), f"at ({x:.2f}, {y:.2f}, {z:.2f}) m")
    for n, (x, y, v) in twin.people_positions().items():
        t.add_row(_safe(n, 80), f"at ({x:.2f}, {y:.2f}) m walking {v:.1f} m/s")
    for r in twin.robot_names():
        tool = twin.tool_position(r)
        t.add_row(_safe(r, 80), f"tool at ({tool[0]:.2f}, {tool[1]:.2f}, {tool[2]:.2f}) m")
    out.print(t)
    contacts = [c for c in twin.contacts() if "floor" not in (c.geom1, c.geom2)]
    out.print(
        f"contacts now (floor excluded): {len(contacts)}"
        + "".join(f"\n  {_safe(c.body1, 80)} / {_safe(c.body2, 80)} ({c.depth_m * 1000:.1f} mm)" for c in contacts[:8]),
        highlight=False,
    )
    if render is not None:
        try:
            written = write_frames(render, frames, round(clip_fps))
        except (RenderError, OSError) as exc:
            err.print(f"[bold red]error:[/] cannot write {_safe(render)}: {_safe(exc)}", highlight=False)
            raise typer.Exit(1) from None
        out.print(
            f"wrote {_safe(', '.join(str(p) for p in written))} ({len(frames)} frames, {width}x{height}, "
            f"camera {_safe(camera, 80)})",
            highlight=False,
        )


def main() -> None:
    import logging

    from plant.text import SafeLogFormatter

    # Log lines carry text from machines, models and people: escaped and capped like the rest.
    handler = logging.StreamHandler()
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    # asyncua logs routine negotiation (revised subscription values) as warnings; people see
    # outages and refusals through the agents' own events and errors instead.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""``atelier robot``: the on-robot runtime process and the operator's e-stop commands.

Wiring (like ``cli.py``): it builds the robot's kinematics from the plant's MuJoCo model (``sim``)
and starts the runtime of ``robots.ros2``.

    atelier robot runtime ur5e_1                 # the runtime of one robot, until killed
    atelier robot estop ur5e_1                   # trip the e-stop (anyone may)
    atelier robot estop-reset ur5e_1 --operator alice   # the operator's reset, the only one

The runtime keeps the e-stop latch in ``--state-dir`` (``<robot>.estop.json``) so a tripped
e-stop survives a restart of the runtime and of the coordinator. ``estop-reset`` calls the
runtime's ``/<robot>/operator/estop_reset`` service; when no runtime answers, it clears the
latch file itself (the runtime reads it when it starts).

    python -m llm_coordinator.cli_robot runtime ur5e_1   # the same without the atelier command
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from plant import PlantError, load_plant
from plant.config import PlantDescription
from plant.text import safe_text

robot_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
out = Console()
err = Console(stderr=True)

PlantOpt = Annotated[Path | None, typer.Option("--plant", "-p", help="plant YAML (default: the demo cell)")]
StateOpt = Annotated[Path, typer.Option(help="folder of the e-stop latch files")]
DomainOpt = Annotated[int | None, typer.Option(help="ROS 2 domain id (default: ROS_DOMAIN_ID or 0)")]
DEFAULT_STATE = Path(os.environ.get("ATELIER_STATE_DIR", "var/robots"))


def _plant(path: Path | None, robot: str) -> PlantDescription:
    try:
        plant = load_plant(path) if path else load_plant()
    except PlantError as exc:
        err.print(f"[red]{escape(safe_text(exc, 20000, newlines=True))}[/]", highlight=False)
        raise typer.Exit(2) from None
    if robot not in plant.robots:
        known = safe_text(f"no robot {robot!r} in plant {plant.name}; robots: {', '.join(plant.robots)}")
        err.print(f"[red]{escape(known)}[/]", highlight=False)
        raise typer.Exit(2)
    return plant


@robot_app.command("runtime")
def runtime_cmd(
    robot: Annotated[str, typer.Argument(help="robot name in the plant")],
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    domain_id: DomainOpt = None,
    seconds: Annotated[float, typer.Option(help="stop after this long (0: until killed)")] = 0.0,
) -> None:
    """Run the on-robot runtime: skill goals over ROS 2, the safety supervisor at control rate."""
    from robots.ros2._host import RosHost
    from robots.ros2.runtime_node import serve_runtime
    from robots.safety import latch_file
    from sim.hardware import arm_kinematics, compile_model, link_points

    plant = _plant(plant_file, robot)
    model = compile_model(plant)
    host = RosHost(domain_id)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _, runtime = serve_runtime(
        host,
        plant,
        robot,
        arm_kinematics(model, plant, robot),
        link_points(model, plant, robot),
        latch_file(state_dir, robot),
    )
    out.print(f"ready: runtime of {robot} (e-stop {'LATCHED' if runtime.supervisor.estopped else 'clear'})")
    end = time.monotonic() + seconds if seconds > 0 else float("inf")
    while not stop.is_set() and time.monotonic() < end:
        stop.wait(0.2)
    runtime.stop()
    host.close()


def _trigger(robot: str, service: str, domain_id: int | None, timeout_s: float) -> str | None:
    from robots.ros2._host import RosHost

    with RosHost(domain_id) as host:
        from std_srvs.srv import Trigger

        node = host.node("operator_cli")
        client: Any = node.create_client(Trigger, f"/{robot}/{service}")
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        fut = client.call_async(Trigger.Request())
        end = time.monotonic() + timeout_s
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        res = fut.result() if fut.done() else None
        return None if res is None or not res.success else str(res.message)


@robot_app.command("estop")
def estop_cmd(
    robot: Annotated[str, typer.Argument(help="robot name")],
    db: Annotated[
        str, typer.Option("--db", envvar="ATELIER_DB", help="SQLAlchemy URL of the site database (audit log)")
    ] = "sqlite:///atelier.db",
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    domain_id: DomainOpt = None,
) -> None:
    """Trip the robot's e-stop (through its runtime, else in its latch file)."""
    from robots.safety import EstopLatch, latch_file

    _plant(plant_file, robot)
    msg = _trigger(robot, "estop", domain_id, 3.0)
    if msg is None:
        EstopLatch(latch_file(state_dir, robot)).trip("e-stop from the command line", "cli")
        msg = "no runtime answered; latch file tripped"
    # Stopping needs no identity; it is recorded all the same (a broken database never blocks it).
    try:
        from llm_coordinator.store import Store

        store = Store(db)
        store.audit("cli", "estop_trip", None, {"robot": robot, "reply": safe_text(msg, 500)})
        store.engine.dispose()
    except Exception as exc:
        err.print(safe_text(f"(the e-stop latched; recording it failed: {exc})"), markup=False, highlight=False)
    # The message comes from whatever answered on the robot's service: shown escaped.
    out.print(safe_text(f"{robot}: {msg}"), highlight=False, markup=False)


@robot_app.command("estop-reset")
def estop_reset_cmd(
    robot: Annotated[str, typer.Argument(help="robot name")],
    operator: Annotated[
        str, typer.Option(help="the robot operator who resets (checked against the site's users; recorded)")
    ],
    db: Annotated[
        str, typer.Option("--db", envvar="ATELIER_DB", help="SQLAlchemy URL of the site database (users, audit log)")
    ] = "sqlite:///atelier.db",
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    domain_id: DomainOpt = None,
) -> None:
    """The operator's e-stop reset: the only way to clear a tripped e-stop. The operator's password
    ($ATELIER_PASSWORD, else a prompt) is checked against the site's users, and the reset is
    recorded in the site's audit log."""
    from llm_coordinator.cli_console import checked_person
    from llm_coordinator.store import Store
    from robots.safety import EstopLatch, latch_file

    _plant(plant_file, robot)
    operator = checked_person(db, operator, "reset_estop")
    msg = _trigger(robot, "operator/estop_reset", domain_id, 3.0)
    if msg is None:
        EstopLatch(latch_file(state_dir, robot)).reset(operator)
        msg = "no runtime answered; latch file cleared"
    store = Store(db)
    store.audit(operator, "estop_reset", None, {"robot": robot, "source": "cli", "reply": safe_text(msg, 500)})
    store.engine.dispose()
    out.print(safe_text(f"{robot}: {msg} (by {operator})"), highlight=False, markup=False)


if __name__ == "__main__":
    import logging

    from plant.text import SafeLogFormatter

    _handler = logging.StreamHandler()
    _handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[_handler])
    robot_app()

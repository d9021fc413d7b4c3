"""``atelier robot``: the on-robot runtime process and the operator's e-stop commands.

Wiring (like ``cli.py``): it builds the robot's kinematics from the plant's MuJoCo model (``sim``)
and starts the runtime of ``robots.ros2``.

    atelier robot keys ROBOT                    # make the robot's keys (--rotate: new ones)
    atelier robot runtime ROBOT                 # the runtime of one robot, until killed
    atelier robot estop ROBOT                   # trip the e-stop (anyone may)
    atelier robot estop-reset ROBOT --operator NAME   # the operator's reset, the only one

The runtime keeps the e-stop latch in ``--state-dir`` (``<robot>.estop.json``) so a tripped
e-stop survives a restart of the runtime and of the coordinator. Over ROS 2 every goal, cancel,
result and e-stop reset is signed (HMAC-SHA256) with the robot's keys, kept in
``<state dir>/trust`` (``robot.<robot>.key``: goals, cancels and results, held by the coordinator
and the runtime; ``estop-reset.<robot>.key``: resets, held by the operators' command and the
runtime). ``keys`` makes them; the runtime does not start without them. ``estop-reset`` checks the
operator's password, signs a reset request in their name and waits for the runtime's signed
answer; only when no runtime listens does it clear the latch file itself (the runtime reads it
when it starts).

    python -m llm_coordinator.cli_robot runtime ROBOT   # the same without the atelier command
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from plant import PlantError, load_plant
from plant.config import PlantDescription
from plant.text import safe_text
from plant.trust import KeyStore, TrustError, default_state_dir, reset_key_name, robot_key_name, robot_keys
from plant.workers import REALTIME_PRIORITY

robot_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
out = Console()
err = Console(stderr=True)

PlantOpt = Annotated[Path | None, typer.Option("--plant", "-p", help="plant YAML (default: the demo cell)")]
StateOpt = Annotated[Path, typer.Option(help="folder of the e-stop latch files and of the robots' keys (trust/)")]
DomainOpt = Annotated[int | None, typer.Option(help="ROS 2 domain id (default: ROS_DOMAIN_ID or 0)")]
DEFAULT_STATE = default_state_dir()  # $ATELIER_STATE_DIR, else var/robots
CONTROL_PERIOD_S = 0.004  # the runtime's control period: 250 Hz, the rate of the drivers' joint states


def _plant(path: Path | None, robot: str | None) -> PlantDescription:
    try:
        plant = load_plant(path) if path else load_plant()
    except PlantError as exc:
        err.print(f"[red]{escape(safe_text(exc, 20000, newlines=True))}[/]", highlight=False)
        raise typer.Exit(2) from None
    if robot is not None:
        _plant_has(plant, robot)
    return plant


def _plant_has(plant: PlantDescription, robot: str) -> None:
    if robot not in plant.robots:
        known = safe_text(f"no robot {robot!r} in plant {plant.name}; robots: {', '.join(plant.robots)}")
        err.print(f"[red]{escape(known)}[/]", highlight=False)
        raise typer.Exit(2)


def _fail(message: str, code: int = 2) -> NoReturn:
    """Say why on stderr (as safe text: it may quote a file, a runtime or an exception) and exit."""
    err.print(safe_text(message), markup=False, highlight=False)
    raise typer.Exit(code)


def _in_repository(folder: Path) -> Path | None:
    """The git working tree ``folder`` lies in, unless git ignores ``folder`` there (None)."""
    folder = folder.resolve()
    root = next((p for p in (folder, *folder.parents) if (p / ".git").exists()), None)
    if root is None:
        return None
    try:
        ignored = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "-q", "--no-index", str(folder / "x.key")],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return root
    return None if ignored.returncode == 0 else root


@robot_app.command("keys")
def keys_cmd(
    robots: Annotated[list[str] | None, typer.Argument(help="robot names (default: every robot of the plant)")] = None,
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    rotate: Annotated[bool, typer.Option(help="replace existing keys with new ones")] = False,
) -> None:
    """Make each robot's keys (a command key and an e-stop reset key, 32 random bytes each, files
    of mode 0600 in <state dir>/trust) if missing, or new ones with --rotate; print where they
    are, never a key. Copy them to the robot's controller (its runtime's --state-dir) and to the
    coordinator's and operators' state folders; restart the runtimes after a rotation."""
    plant = _plant(plant_file, None)
    names = list(robots or plant.robots)
    for robot in names:
        _plant_has(plant, robot)
    keys = robot_keys(state_dir)
    assert keys.directory is not None
    repo = _in_repository(keys.directory)
    if repo is not None:
        _fail(
            f"{keys.directory} lies in the git working tree {repo} and git does not ignore it: keys "
            "live outside the repository. Use --state-dir or ATELIER_STATE_DIR (e.g. ~/.local/state/atelier)."
        )
    for robot in names:
        for name, use in ((robot_key_name(robot), "goals, cancels, results"), (reset_key_name(robot), "e-stop resets")):
            try:
                if rotate and keys.exists(name):
                    path, what = keys.rotate(name), "rotated"
                else:
                    what = "kept" if keys.exists(name) else "made"
                    keys.key(name)
                    path = keys.path(name)
            except TrustError as exc:
                _fail(str(exc), 1)
            out.print(safe_text(f"{robot}: {what} {path} ({use})"), markup=False, highlight=False, soft_wrap=True)
    if rotate:
        out.print("restart the robots' runtimes (and copy the new keys to their controllers) to use the new keys")


@robot_app.command("runtime")
def runtime_cmd(
    robot: Annotated[str, typer.Argument(help="robot name in the plant")],
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    domain_id: DomainOpt = None,
    seconds: Annotated[float, typer.Option(help="stop after this long (0: until killed)")] = 0.0,
    state_timeout_s: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="without a joint state for this long the driver counts as lost: a sensor fault stops the "
            "robot (default: the runtime's, 25 control periods)",
        ),
    ] = None,
    realtime_priority: Annotated[
        int,
        typer.Option(
            min=0,
            max=99,
            help="SCHED_FIFO priority of the control loop and of the threads its joint states come through, "
            "where permitted (0: normal scheduling)",
        ),
    ] = REALTIME_PRIORITY,
    clock_speed: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=100.0,
            help="how fast the driver's clock runs against the wall: 1 for a robot, N for `atelier twin serve "
            "--speed N`; joint states faster than that run no more control periods",
        ),
    ] = 1.0,
) -> None:
    """Run the on-robot runtime: skill goals over ROS 2, the safety supervisor at control rate."""
    from robots.ros2._host import RosHost
    from robots.ros2.runtime_node import serve_runtime
    from robots.runtime import RuntimeConfig
    from robots.safety import latch_file
    from sim.hardware import arm_kinematics, compile_model, link_points

    plant = _plant(plant_file, robot)
    keys = robot_keys(state_dir)
    try:  # before anything starts: a runtime on ROS 2 never runs unauthenticated
        keys.key(robot_key_name(robot), create=False)
        keys.key(reset_key_name(robot), create=False)
    except TrustError as exc:
        _fail(f"{exc}; make the keys with: atelier robot keys {robot} --state-dir {state_dir}")
    model = compile_model(plant)
    config = RuntimeConfig(realtime_priority=realtime_priority or None, clock_speed=clock_speed)
    if state_timeout_s is not None:
        periods = max(1, round(state_timeout_s / CONTROL_PERIOD_S))
        config = dataclasses.replace(config, state_timeout_periods=periods)
    # The joint states that clock the control loop come through the host's receiving threads.
    host = RosHost(domain_id, realtime_priority=config.realtime_priority)
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
        keys,
        control_period_s=CONTROL_PERIOD_S,
        config=config,
    )
    # Ready once it works from the driver's joint states (a goal before is refused), or after
    # a while without them (the driver may start later).
    end = time.monotonic() + 10.0
    while not runtime.synced and time.monotonic() < end and not stop.is_set():
        stop.wait(0.02)
    estop = "LATCHED" if runtime.supervisor.estopped else "clear"
    hw = "" if runtime.synced else "; no joint state from the driver yet"
    ready = (
        f"ready: runtime of {robot} (e-stop {estop}{hw}; keys in {keys.directory}; "
        f"control loop {runtime.scheduling}; {host.scheduling})"
    )
    out.print(safe_text(ready), markup=False, highlight=False, soft_wrap=True)
    end = time.monotonic() + seconds if seconds > 0 else float("inf")
    while not stop.is_set() and time.monotonic() < end:
        stop.wait(0.2)
    runtime.stop()
    host.close()


def _trigger(robot: str, domain_id: int | None, timeout_s: float) -> str | None:
    from robots.ros2._host import RosHost
    from robots.ros2.watch import EstopTrigger

    with RosHost(domain_id) as host:
        return EstopTrigger(host).trip(robot, timeout_s)


@robot_app.command("estop")
def estop_cmd(
    robot: Annotated[str, typer.Argument(help="robot name")],
    db: Annotated[
        str, typer.Option("--db", envvar="ATELIER_DB", help="SQLAlchemy URL of the site database (audit log)")
    ] = "sqlite:///atelier.db",
    plant_file: PlantOpt = None,
    state_dir: StateOpt = DEFAULT_STATE,
    domain_id: DomainOpt = None,
    wait_s: Annotated[
        float, typer.Option(help="how long to wait for the runtime to answer before tripping its latch file")
    ] = 3.0,
) -> None:
    """Trip the robot's e-stop (through its runtime, else in its latch file)."""
    from robots.safety import EstopLatch, latch_file

    _plant(plant_file, robot)
    if not wait_s > 0:
        _fail(f"--wait-s must be a positive number of seconds, not {wait_s}")
    msg = _trigger(robot, domain_id, wait_s)
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
    try:
        answer = _signed_reset(robot, operator, robot_keys(state_dir), domain_id, 10.0)  # discovery may be slow
    except TrustError as exc:
        _fail(f"{exc}; the operators' state folder needs the robot's reset key (atelier robot keys)")
    if answer is None:
        EstopLatch(latch_file(state_dir, robot)).reset(operator)
        answer = True, "no runtime answered; latch file cleared"
    reset, msg = answer
    store = Store(db)
    store.audit(
        operator,
        "estop_reset" if reset else "estop_reset_refused",
        None,
        {"robot": robot, "source": "cli", "reply": safe_text(msg, 500)},
    )
    store.engine.dispose()
    # The message comes from the runtime (signed, but text all the same): shown escaped.
    if not reset:
        _fail(f"{robot}: not reset: {msg} (by {operator})", 1)
    out.print(safe_text(f"{robot}: {msg} (by {operator})"), highlight=False, markup=False)


def _signed_reset(
    robot: str, operator: str, keys: KeyStore, domain_id: int | None, timeout_s: float
) -> tuple[bool, str] | None:
    """The operator's signed reset request and the runtime's signed answer (None: no runtime)."""
    from robots.ros2._host import RosHost
    from robots.ros2.runtime_node import EstopResetClient

    keys.key(reset_key_name(robot), create=False)  # a missing key is the caller's message, before ROS 2 starts
    with RosHost(domain_id) as host:
        return EstopResetClient(host, robot, keys).reset(operator, timeout_s)


if __name__ == "__main__":
    import logging

    from plant.text import SafeLogFormatter

    _handler = logging.StreamHandler()
    _handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[_handler])
    robot_app()

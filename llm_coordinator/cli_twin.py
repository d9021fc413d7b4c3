"""``atelier twin``: the twin as a plant, for clients that cannot tell it from one.

Wiring (like ``cli.py``): it builds the twin and its servers from ``sim``.

    atelier twin serve                          # the demo cell, in real time, until Ctrl-C
    atelier twin serve --plant cell.yaml --speed 2 --seconds 60

``serve`` runs the twin in real time (``--speed`` times the wall clock) and serves every machine
of the plant description on its endpoint: an OPC-UA server (one object per machine with its
state, counters, fault, door and command methods) or a Modbus TCP server with the declared
register map. Machines with OPC-UA security need the server's certificate and key
(``--cert``/``--key``; ``--trusted-dir`` for the client certificates it accepts; passwords come
from the environment variables the plant names).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plant import PlantError, load_plant
from plant.text import safe_text
from plant.workers import REALTIME_PRIORITY

twin_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

out = Console()
err = Console(stderr=True)


@twin_app.callback()
def _twin() -> None:
    """The twin as a plant (a group, so that ``serve`` stays a subcommand as others join it)."""


def _fail(msg: str, code: int = 2) -> typer.Exit:
    # Messages carry plant files' and servers' text: escaped, capped, markup shown as written.
    err.print(f"[bold red]error:[/] {escape(safe_text(msg, 20000, newlines=True))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _safe(value: object, limit: int = 200) -> str:
    return escape(safe_text(value, limit))


@twin_app.command("serve")
def serve_cmd(
    plant_file: Annotated[
        Path | None, typer.Option("--plant", "-p", help="plant description YAML (default: the shipped demo cell)")
    ] = None,
    speed: Annotated[float, typer.Option(min=0.1, max=20.0, help="simulated seconds per wall-clock second")] = 1.0,
    seconds: Annotated[
        float | None, typer.Option(min=0.1, help="stop after this many wall-clock seconds (default: until Ctrl-C)")
    ] = None,
    machines: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="serve only this machine (repeatable)")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="the OPC-UA servers' certificate (DER or PEM)")] = None,
    key: Annotated[Path | None, typer.Option(help="the OPC-UA servers' private key (PEM)")] = None,
    trusted_dir: Annotated[Path | None, typer.Option(help="certificates of the clients to accept")] = None,
    robots: Annotated[bool, typer.Option(help="serve each robot as a ROS 2 driver node (JointState at 250 Hz)")] = True,
    realtime_priority: Annotated[
        int,
        typer.Option(
            min=0,
            max=99,
            help="SCHED_FIFO priority of the twin's thread and of the drivers' receiving threads, where permitted, "
            "at a speed of 1 or less (0: normal scheduling)",
        ),
    ] = REALTIME_PRIORITY,
) -> None:
    """Run the twin in real time; serve each machine on its endpoint (OPC-UA or Modbus TCP) and
    each robot as a ROS 2 driver node under /<robot>/ (with the cell's people on /cell/people)."""
    from sim.live import LiveTwin
    from sim.serve import ServerSecurity
    from sim.twin import Twin

    try:
        plant = load_plant(plant_file)
    except PlantError as exc:
        raise _fail(str(exc)) from None
    if (cert is None) != (key is None):
        raise _fail("--cert and --key go together")
    security = ServerSecurity(cert, key, trusted_dir) if cert is not None and key is not None else None
    names = list(machines) if machines else list(plant.machines)
    unknown = [n for n in names if n not in plant.machines]
    if unknown:
        raise _fail(f"no machine named {', '.join(unknown)} in plant {plant.name}; it has {', '.join(plant.machines)}")
    t0 = time.perf_counter()
    # Import the servers and drivers before the twin thread starts: imports hold the GIL for long
    # stretches, and a twin thread starved of it falls behind real time.
    import sim.robot_drivers
    import sim.serve

    twin = Twin(plant)
    # The twin stands in for the robots' controllers: its thread clocks their control loops.
    live = LiveTwin(twin, speed=speed, realtime_priority=realtime_priority or None).start()
    drivers = None

    def start_drivers() -> None:
        # Once the servers listen: building their address spaces holds the GIL for seconds (and
        # sets off full garbage collections), and a runtime that had begun on the drivers' joint
        # states would see them stop for over a second and latch a sensor fault.
        nonlocal drivers
        if robots and plant.robots:
            drivers = sim.robot_drivers.start_robot_drivers(live)
            nodes = _safe(", ".join("/" + r for r in plant.robots), 1000)
            out.print(f"ROS 2 driver nodes: {nodes} (sensor_msgs/JointState)", highlight=False)
            out.print(f"drivers' {drivers.host.scheduling}", highlight=False)

    try:
        asyncio.run(_serve(live, names, security, seconds, t0, start_drivers))
    except KeyboardInterrupt:
        err.print("interrupted")
    except (OSError, RuntimeError, ValueError) as exc:
        raise _fail(f"cannot serve: {exc}", 1) from None
    finally:
        if drivers is not None:
            drivers.close()
        live.stop()
    st = live.stats
    out.print(
        f"twin ran {twin.time_s:.1f} simulated s; {st.late_ticks} of {st.ticks} ticks late "
        f"(worst {st.worst_lag_s * 1000:.1f} ms)"
    )


async def _serve(
    live: object,
    names: list[str],
    security: object,
    seconds: float | None,
    t0: float,
    on_listening: Callable[[], None] = lambda: None,
) -> None:
    from sim.live import LiveTwin
    from sim.serve import ServerSecurity, serve_plant

    assert isinstance(live, LiveTwin)
    assert security is None or isinstance(security, ServerSecurity)
    plant = live.twin.plant
    async with serve_plant(live, plant, machines=names, opcua_security=security) as servers:
        on_listening()
        t = Table(
            title=f"twin of {_safe(plant.name, 80)} serving (speed {live.speed:g}x), "
            f"ready in {time.perf_counter() - t0:.1f} s"
        )
        for col in ("machine", "kind", "protocol", "endpoint"):
            t.add_column(col)
        for n in names:
            m = plant.machines[n]
            extra = f" (device {m.device_id})" if m.protocol == "modbus" else ""
            if m.protocol == "opcua" and m.security.policy != "None":
                extra = f" ({m.security.policy} {m.security.mode})"
            t.add_row(_safe(n, 80), m.kind, m.protocol, _safe(m.endpoint + extra))
        out.print(t)
        out.print(f"twin thread: {live.scheduling}", highlight=False)
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)
        done = {n: servers.plc(n).commands_executed for n in names}
        out.print("commands executed: " + _safe(", ".join(f"{n} {c}" for n, c in done.items()), 2000), highlight=False)


if __name__ == "__main__":
    twin_app()

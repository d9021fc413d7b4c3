"""A console served for real: the coordinator, a live twin, uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.console.auth import UserStore
from llm_coordinator.console.wiring import ConsoleSite, build_site
from plant.config import PlantDescription

from .conftest import FAST_HASHER, PASSWORD, PEOPLE


@dataclass
class LiveConsole:
    site: ConsoleSite
    url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def uvicorn_thread(app: Any, *, join_s: float = 10.0, **config: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free loopback port, in a thread of its own, until the block
    ends; yields the port. ``config`` goes to :class:`uvicorn.Config` (``lifespan`` off unless given)."""
    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the console server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(join_s)


@contextmanager
def serve_console(
    plant: PlantDescription, tmp: Path, *, render_rehearsals: bool = False, config: CoordinatorConfig | None = None
) -> Iterator[LiveConsole]:
    """Serve the console as ``atelier console`` does (the embedded model, the coordinator, a live
    twin driven by the robots' runtimes); users erin/sam/olga exist with :data:`PASSWORD`."""
    site = build_site(
        plant,
        f"sqlite:///{tmp / 'site.db'}",
        tmp / "state",
        evidence_dir=tmp / "evidence",
        render_rehearsals=render_rehearsals,
        config=config,
    )
    users: UserStore = site.app.state.users
    users._hasher = FAST_HASHER  # cheap hashes in tests
    for name, role in PEOPLE.items():
        users.add_user(name, role, PASSWORD)
    site.start()
    try:
        with uvicorn_thread(site.app) as port:
            yield LiveConsole(site, f"http://127.0.0.1:{port}")
    finally:
        site.stop()

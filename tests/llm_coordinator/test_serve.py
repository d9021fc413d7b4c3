"""``atelier serve`` and ``atelier plan --server``, as people run them: the real server in a
process of its own (the embedded model, the real store, the rehearsal in the real twin), the real
command line in others, over a real Unix socket. Only who is asking is faked, at the edge (the
operating system's peer credentials), in the last test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_coordinator.store import Store
from tests._cli import atelier

ROOT = Path(__file__).resolve().parents[2]
ORDER = "Machine one blank and sort it"
#: A work order written in the plan language: open the machine's door (no model reads it).
READING = {"goals": [{"kind": "task", "skill": "open_door", "agent": "cnc_1"}]}


def raw(sock_path: Path, data: bytes, timeout_s: float = 120) -> dict[str, Any]:
    """What the server answers to ``data``, sent as is."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(sock_path))
        with contextlib.suppress(BrokenPipeError):
            s.sendall(data)  # (refused before it was read: the answer is there to read)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    answer: dict[str, Any] = json.loads(got)
    return answer


class Served:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sock = folder / "a.sock"
        self.db = f"sqlite:///{folder / 'a.db'}"
        self.log: list[str] = []
        env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_coordinator.cli", "serve", "--socket", str(self.sock), "--db", self.db],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def wait_for(self, start: str, timeout_s: float = 180) -> None:
        end = time.monotonic() + timeout_s
        while not any(line.startswith(start) for line in self.log):
            assert self.proc.poll() is None, f"atelier serve ended: {''.join(self.log)}"
            assert time.monotonic() < end, f"no {start!r} from atelier serve in {timeout_s} s: {''.join(self.log)}"
            time.sleep(0.1)

    def plans(self) -> list[int]:
        store = Store(self.db)
        try:
            return sorted(p.id for p in store.plans(10_000))
        finally:
            store.engine.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("served"))
    try:
        # (not "ready:": the first test's order comes while the server readies itself, and waits)
        server.wait_for("listening at")
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait(30)
        server._reader.join(10)
        assert server.proc.stderr is not None
        server.proc.stderr.close()


def test_a_served_order_is_planned_by_the_warm_coordinator_and_kept(served: Served, tmp_path: Path) -> None:
    assert stat.S_IMODE(served.sock.stat().st_mode) == 0o600, "only the server's user may open the socket"
    # (the client runs in another folder: nothing of the server's is in it)
    done = atelier("plan", "--server", str(served.sock), ORDER, "--json", cwd=tmp_path)
    served.wait_for("ready:", 0)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "awaiting_approval", doc
    assert doc["work_order"] == ORDER and doc["model"].startswith("llama:")
    store = Store(served.db)
    try:
        row = store.get(doc["plan_id"])
        assert row.status == "awaiting_approval" and row.content_hash == doc["plan_hash"]
    finally:
        store.engine.dispose()
    assert not list(tmp_path.iterdir()), "the client made no store or evidence of its own"
    # The text report names the evidence by paths the client can open.
    (tmp_path / "reading.json").write_text(json.dumps(READING))
    text = atelier("plan", "--server", str(served.sock), "--reading", "reading.json", "--order", "open", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    evidence = [line.split("evidence: ", 1)[1] for line in text.stdout.splitlines() if "evidence: " in line]
    assert evidence and all(Path(e).is_absolute() and Path(e).is_file() for e in evidence), text.stdout
    assert "awaiting_approval" in text.stdout


def test_a_bad_request_is_refused_with_its_reason_and_stores_nothing(served: Served, tmp_path: Path) -> None:
    before = served.plans()
    not_json = raw(served.sock, b"plan this please\n")
    assert not not_json["ok"] and "not a request" in not_json["error"]
    extra = raw(served.sock, json.dumps({"order": ORDER, "priority": "high"}).encode() + b"\n")
    assert not extra["ok"] and "priority" in extra["error"]
    empty = raw(served.sock, json.dumps({"order": "   "}).encode() + b"\n")
    assert not empty["ok"] and "no work order" in empty["error"]
    bad_reading = raw(served.sock, json.dumps({"reading": {"goals": "all of them"}}).encode() + b"\n")
    assert not bad_reading["ok"] and "goals" in bad_reading["error"]
    assert served.plans() == before
    # The command line says so too, and refuses what belongs to the server before asking.
    own = atelier("plan", "--server", str(served.sock), "--db", "sqlite:///elsewhere.db", ORDER, cwd=tmp_path)
    assert own.returncode == 2 and "--db" in own.stderr and "atelier serve" in own.stderr
    none = atelier("plan", "--server", str(tmp_path / "nobody.sock"), ORDER, cwd=tmp_path)
    assert none.returncode == 1 and "no atelier serve is listening" in none.stderr
    long = atelier("plan", "--server", str(served.sock), "a" * 4001, cwd=tmp_path)
    assert long.returncode == 2 and "not a work order the server takes" in long.stderr
    assert "Traceback" not in long.stderr
    assert served.plans() == before
    # A server refused its socket path stops before it makes anything.
    (tmp_path / "taken").write_text("not a socket")
    refused = atelier("serve", "--socket", "taken", "--db", "sqlite:///never.db", cwd=tmp_path)
    assert refused.returncode == 2 and "is not a socket" in refused.stderr
    assert not (tmp_path / "never.db").exists()


def test_a_client_that_hangs_up_does_not_lose_its_order(served: Served) -> None:
    before = served.plans()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(served.sock))
        s.sendall(json.dumps({"order": "", "reading": READING}).encode() + b"\n")
    # A second order waits its turn behind the first, which goes on without its client.
    second = raw(served.sock, json.dumps({"order": "", "reading": READING}).encode() + b"\n", timeout_s=300)
    assert second["ok"] and second["status"] == "awaiting_approval", second
    after = served.plans()
    assert len(after) == len(before) + 2, (before, after)


def test_stopping_the_server_finishes_and_removes_its_socket(served: Served) -> None:
    # Ctrl-C, after orders that CP-SAT scheduled (it used to take SIGINT for itself and leave
    # the default action behind: the server died without finishing or removing its socket)
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(60) == 0, "".join(served.log)
    assert not served.sock.exists()
    assert any("stopping" in line for line in served.log)


def test_another_user_is_refused_before_the_request_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from llm_coordinator import serve

    monkeypatch.setattr(serve, "_peer", lambda sock: (4242, os.getuid() + 1))
    path = tmp_path / "s.sock"

    async def main() -> dict[str, Any]:
        server = serve.Server(Untouchable(), path)  # type: ignore[arg-type]
        await server.start()
        try:
            return await asyncio.to_thread(raw, path, json.dumps({"order": ORDER}).encode() + b"\n", 30)
        finally:
            await server.close()

    answer = asyncio.run(main())
    assert not answer["ok"] and "only the user who started this server" in answer["error"]
    assert not path.exists()


class Untouchable:
    """A coordinator that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the coordinator was used ({name})")


def test_a_request_read_once_the_server_stops_is_refused_and_its_socket_left_to_a_newer_server(
    tmp_path: Path,
) -> None:
    import asyncio

    from llm_coordinator import serve

    path = tmp_path / "s.sock"

    async def main() -> tuple[dict[str, Any], bool]:
        server = serve.Server(Untouchable(), path)  # type: ignore[arg-type]
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        closing = asyncio.create_task(server.close())
        await asyncio.sleep(0.1)
        assert not path.exists(), "the socket goes as soon as the server stops listening"
        # A newer server took the path meanwhile: the old one does not remove its socket.
        newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        newer.bind(str(path))
        writer.write(json.dumps({"order": ORDER}).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await reader.readline())
        writer.close()
        await closing
        kept = path.exists()
        newer.close()
        return answer, kept

    answer, kept = asyncio.run(main())
    assert not answer["ok"] and "stopping" in answer["error"]
    assert kept, "a stopping server removed the socket of the server after it"

"""``atelier serve``: one coordinator kept warm, for ``atelier plan --server``.

A command-line ``atelier plan`` pays for its start every time: the imports, the model's load, the
twin's first compile (about 9 s of a cold order against 5 s warm on this project's 2-core
machine). :func:`serve` keeps one :class:`~llm_coordinator.coordinator.Coordinator` in a process
that stays: it readies the model and the rehearsal first (:meth:`Coordinator.warm_up`), then
answers work orders on a Unix socket; :func:`ask` is the client's side.

Who may ask: the socket file is made with mode 0600 in a folder of the caller's choosing, and
each connection's peer credentials (``SO_PEERCRED``) must be this process's own user; any other
is refused before it is read. Nothing listens on a network.

The exchange: one request per connection, one JSON line each way (at most
:data:`MAX_REQUEST_BYTES`). A request is ``{"order": "words"}`` or ``{"order": "words",
"reading": {...}}`` (a work order written in the plan language; no model reads it). The answer
is ``{"ok": true, "plan_id", "status", "reasons", "risk", "evidence", "model", "document"}``
(``document``: the plan's JSON document, ``docs/plan-json.md``) or ``{"ok": false, "error"}``
naming what was wrong; a bad request stores nothing. Work orders are planned one at a time, in
the order they came; a client that goes away does not stop its order, whose plan is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_coordinator.coordinator import Coordinator, Submission

log = logging.getLogger(__name__)

#: The longest request line (a reading file may be up to 1 MB).
MAX_REQUEST_BYTES = 2_000_000
#: How long a client may take to send its request once connected (s).
REQUEST_TIMEOUT_S = 10.0
#: Unix socket paths longer than this do not fit ``sockaddr_un`` (108 bytes with the NUL).
_MAX_PATH_BYTES = 107


class ServeError(RuntimeError):
    """The server cannot start, or the client cannot reach it or understand it; says why."""


class Request(BaseModel):
    """What a client asks: a work order's words, and optionally the order in the plan language."""

    model_config = ConfigDict(extra="forbid")

    order: Annotated[str, Field(max_length=4000)] = ""
    reading: dict[str, Any] | None = None


def _peer(sock: socket.socket) -> tuple[int, int]:
    """The (pid, uid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()[:8])


def answer_of(co: Coordinator, sub: Submission, model: str | None) -> dict[str, Any]:
    """What the server answers for a submission (see the module docstring)."""
    from llm_coordinator.plan_json import plan_document
    from llm_coordinator.rehearsal import risk_lines

    risk = risk_lines(sub.rehearsal.risk) if sub.rehearsal is not None and sub.rehearsal.risk is not None else []
    return {
        "ok": True,
        "plan_id": sub.plan_id,
        "status": sub.status,
        "reasons": [str(r) for r in sub.reasons],
        "risk": risk,
        "evidence": [str(e) for e in sub.evidence or []],
        "model": model,
        "document": plan_document(co.store, sub.plan_id, submission=sub, model=model),
    }


def check_socket_path(path: Path, *, remove_stale: bool = False) -> None:
    """:class:`ServeError` unless a server can listen at ``path``: short enough for a Unix
    socket, and free, or a socket no server listens on (left by one that was killed; removed
    with ``remove_stale``). Only a refused connection means nobody listens; any other error
    (a socket of another user's, say) is said, and nothing is removed."""
    if len(os.fsencode(path.resolve())) > _MAX_PATH_BYTES:
        raise ServeError(f"socket path {path} is longer than {_MAX_PATH_BYTES} bytes: choose a shorter one")
    if not (path.exists() or path.is_symlink()):
        if not path.parent.is_dir():
            raise ServeError(f"cannot listen at {path}: folder {path.parent} does not exist")
        return
    if path.is_symlink() or not path.is_socket():
        raise ServeError(f"{path} exists and is not a socket: choose another --socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            pass  # (a socket nobody listens on)
        except OSError as exc:
            raise ServeError(f"cannot tell whether a server listens at {path}: {exc.strerror or exc}") from None
        else:
            raise ServeError(f"another atelier serve is listening at {path}")
    if remove_stale:
        try:
            path.unlink()
        except OSError as exc:
            raise ServeError(f"cannot remove the stale socket {path}: {exc.strerror or exc}") from None


class Server:
    """The coordinator ``co`` answering on the Unix socket at ``path`` (see the module docstring)."""

    def __init__(self, co: Coordinator, path: Path | str, actor: str = "cli") -> None:
        self.co, self.path, self.actor = co, Path(path), actor
        self.turn = asyncio.Lock()  # (one work order at a time)
        #: Set once the server is stopping: a request read from now on is refused, nothing done.
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (device, inode) of the socket this server made
        self._tasks: set[asyncio.Task[Any]] = set()  # connections and their orders, until they end

    async def start(self) -> None:
        """Listen (the socket made 0600); :class:`ServeError` if the path is taken or unusable."""
        check_socket_path(self.path, remove_stale=True)
        path = self.path
        old = os.umask(0o177)  # (the socket is never, even for a moment, open to others)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(path), limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise ServeError(f"cannot listen at {path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        st = path.stat()
        self._bound = (st.st_dev, st.st_ino)

    async def close(self) -> None:
        """Stop listening and remove the socket at once (if it is still this server's), refuse
        what comes after, and finish the orders already read."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._bound is not None:
            with contextlib.suppress(OSError):
                st = self.path.stat()
                if (st.st_dev, st.st_ino) == self._bound:  # (not a newer server's socket)
                    self.path.unlink()
            self._bound = None
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._track(current)
        try:
            reply = await self._reply(reader, writer)
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # (the client went away; its plan, if it made one, is in the store)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid = _peer(sock)
        except OSError as exc:
            return {"ok": False, "error": f"cannot tell who is asking ({exc.strerror or exc}): refused"}
        if uid != os.getuid():
            log.warning("refused a request from uid %d (pid %d): only uid %d may ask", uid, pid, os.getuid())
            return {"ok": False, "error": f"only the user who started this server (uid {os.getuid()}) may ask it"}
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                line = await reader.readline()
        except TimeoutError:
            return {"ok": False, "error": f"no request within {REQUEST_TIMEOUT_S:g} s"}
        except (ValueError, asyncio.LimitOverrunError):
            return {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            request = Request.model_validate_json(line)
        except ValidationError as exc:
            return {"ok": False, "error": f"not a request: {_problems(exc)}"}
        if self.stopping:
            return {"ok": False, "error": "the server is stopping: nothing was done; send the order to a running one"}
        # The order runs as a task of its own: a client that hangs up does not cancel it.
        task = asyncio.create_task(self._plan(request))
        self._track(task)
        return await asyncio.shield(task)

    async def _plan(self, request: Request) -> dict[str, Any]:
        from llm_coordinator.reading import Reading

        reading = None
        if request.reading is not None:
            try:
                reading = Reading.model_validate(request.reading)
            except ValidationError as exc:
                return {"ok": False, "error": f"not a reading in the plan language: {_problems(exc)}"}
        elif not request.order.strip():
            return {"ok": False, "error": "no work order: give its words, or a reading"}
        async with self.turn:
            co = self.co
            try:
                if reading is not None:
                    sub = await co.submit_reading(reading, work_order=request.order, actor=self.actor)
                    model = None
                else:
                    sub = await co.submit(request.order, actor=self.actor)
                    name = getattr(co.planner.backend, "name", None)
                    model = str(name) if name else None
                return await asyncio.to_thread(answer_of, co, sub, model)
            except Exception as exc:  # (the server stays up; the client is told)
                log.exception("a served work order failed")
                return {"ok": False, "error": f"the work order failed: {type(exc).__name__}: {exc}"}


async def serve(co: Coordinator, path: Path | str, *, say: Callable[[str], None] = print) -> None:
    """Answer on ``path`` until SIGINT or SIGTERM, readying ``co`` first (:meth:`Coordinator.warm_up`;
    a work order that comes meanwhile waits for it; a signal then stops the warm-up);
    ``say`` is told each stage. :class:`ServeError` if it cannot listen."""
    server = Server(co, path)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def warm() -> None:
        async with server.turn:
            for problem in await co.warm_up():
                say(f"warning: {problem}")
        say(f'ready: atelier plan --server {path} "..." (Ctrl-C stops)')

    warming = asyncio.create_task(warm())
    try:
        say(f"listening at {path}; readying the model and the twin (work orders wait for it)")
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("stopping: orders under way are finished first")
        warming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warming
        await server.close()


def ask(path: Path | str, request: Request, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Send ``request`` to the server at ``path`` and return its answer (``ok`` true or false).
    :class:`ServeError` when there is no server there, or it does not answer in ``timeout_s``."""
    data = (request.model_dump_json(exclude_none=True) + "\n").encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ServeError(
                f"no atelier serve is listening at {path} (start one: atelier serve --socket {path})"
            ) from None
        except OSError as exc:
            raise ServeError(f"cannot reach atelier serve at {path}: {exc.strerror or exc}") from None
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)  # (refused before it was read: the answer says why)
            chunks: list[bytes] = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise ServeError(f"atelier serve at {path} did not answer in {timeout_s:g} s") from None
        except OSError as exc:
            raise ServeError(f"atelier serve at {path} broke off: {exc.strerror or exc}") from None
    if not chunks:
        raise ServeError(
            f"atelier serve at {path} closed the connection without an answer (did it stop?); "
            "the order may have been stored: see atelier plans"
        )
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ServeError(f"atelier serve at {path} answered something that is not JSON") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ServeError(f"atelier serve at {path} answered something that is not an answer")
    return reply

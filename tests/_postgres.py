"""A throwaway PostgreSQL server for the tests: ``initdb`` in a temporary folder, started on a
free loopback port, stopped and removed at the end of the session. Root may not run the server,
so as root it runs as the ``postgres`` user (as the Debian package sets it up).

Set ``ATELIER_TEST_POSTGRES_URL`` (a SQLAlchemy URL of a server whose user may create databases)
to use a server of your own instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def why_not() -> str:
    """Why no server can be started here ("" when one can)."""
    if os.environ.get("ATELIER_TEST_POSTGRES_URL"):
        return ""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return ""


@contextmanager
def postgres_server() -> Iterator[str]:
    """The base URL (``postgresql+psycopg://user@127.0.0.1:port``) of a running server."""
    given = os.environ.get("ATELIER_TEST_POSTGRES_URL")
    if given:
        yield given.rstrip("/")
        return
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    assert initdb and pg_ctl, why_not()
    folder = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "atelier", "-E", "UTF8"], **run)  # type: ignore[call-overload]
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    log = folder / "server.log"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"], **run)  # type: ignore[call-overload]
    try:
        yield f"postgresql+psycopg://atelier@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], check=False, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(base_url: str) -> str:
    """A new, empty database on the server of ``base_url``; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    plain = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"

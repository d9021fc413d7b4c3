"""Trust helpers: named secret keys kept outside the database and the repository, and
HMAC-SHA256 tags made and checked with them.

The coordinator signs (its audit log, later the goals it sends to robots) and the robots verify,
so this lives in ``plant``, which both may import. A :class:`KeyStore` is a folder of key files,
``<name>.key``, each 32 random bytes in hex, created with mode 0600 the first time a key is
asked for and refused later if anyone but the owner may read it. The folder belongs in a state
directory (``ATELIER_STATE_DIR``), never in the repository. ``KeyStore(None)`` keeps its keys in
memory only, for in-memory databases and tests.

    keys = KeyStore(state_dir / "trust")
    tag = keys.sign("audit", b"message")
    keys.verify("audit", b"message", tag)   # True; constant-time comparison
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TrustError(Exception):
    """A key that cannot be created or read, is missing, or lies in a file others may read."""


def canonical(value: Any) -> bytes:
    """The canonical JSON of ``value`` (sorted keys, no spaces, UTF-8): the bytes one signs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` under ``key``, as 64 lower-case hex digits."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mac_ok(key: bytes, message: bytes, tag: str | None) -> bool:
    """Whether ``tag`` is ``message``'s HMAC-SHA256 under ``key``, compared in constant time.
    A missing or malformed tag is simply not valid (never raises)."""
    if not isinstance(tag, str):
        return False
    return hmac.compare_digest(mac(key, message).encode(), tag.encode("utf-8", "replace"))


def write_atomic(path: Path | str, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a
    part: temporary file in the same folder (created with ``mode``), fsync, rename, fsync of the
    folder. Blocks on the disk; raises :class:`OSError` if it cannot write (the old file stays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class KeyStore:
    """Named HMAC keys in a folder (``directory``), or in memory when ``directory`` is None.

    Thread-safe; several processes may share a folder (the first to create a key wins, the
    others read it). Key names are 1 to 64 characters of letters, digits, ``_ . -``.
    """

    def __init__(self, directory: Path | str | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def persistent(self) -> bool:
        """Whether keys live in files (False: in memory, gone with this object)."""
        return self.directory is not None

    def path(self, name: str) -> Path | None:
        """The file of key ``name`` (None for an in-memory store)."""
        if not _NAME.fullmatch(name):
            raise TrustError(f"bad key name {name!r}: use letters, digits, '_', '.', '-'")
        return None if self.directory is None else self.directory / f"{name}.key"

    def exists(self, name: str) -> bool:
        """Whether key ``name`` exists already (in memory, or its file)."""
        p = self.path(name)
        with self._lock:
            return name in self._keys or (p is not None and p.exists())

    def key(self, name: str, *, create: bool = True) -> bytes:
        """The secret bytes of key ``name``; made (32 random bytes, file mode 0600) if it does not
        exist and ``create`` is true. Raises :class:`TrustError` if the key is missing (and not
        to be created), unreadable, malformed, or in a file that group or others may read."""
        p = self.path(name)
        with self._lock:
            k = self._keys.get(name)
            if k is not None:
                return k
            if p is None:
                if not create:
                    raise TrustError(f"there is no key {name!r} (in-memory key store)")
                k = secrets.token_bytes(KEY_BYTES)
            else:
                k = self._load(p) if p.exists() or not create else self._create(p)
            self._keys[name] = k
            return k

    def sign(self, name: str, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under key ``name`` (made if missing), 64 hex digits."""
        return mac(self.key(name), message)

    def verify(self, name: str, message: bytes, tag: str | None) -> bool:
        """Whether ``tag`` is valid for ``message`` under key ``name``; constant-time. Raises
        :class:`TrustError` if the key does not exist (a check never makes a key)."""
        return mac_ok(self.key(name, create=False), message, tag)

    @staticmethod
    def _load(p: Path) -> bytes:
        try:
            st = p.stat()
            if os.name == "posix" and st.st_mode & 0o077:
                raise TrustError(
                    f"key file {p} may be read by others (mode {stat.filemode(st.st_mode)}); "
                    f"make it private with: chmod 600 {p}"
                )
            raw = p.read_text(encoding="ascii").strip()
            k = bytes.fromhex(raw)
        except FileNotFoundError:
            raise TrustError(f"there is no key file {p}") from None
        except (OSError, ValueError) as exc:
            raise TrustError(f"cannot read key file {p}: {exc}") from None
        if len(k) < KEY_BYTES:
            raise TrustError(f"key file {p} holds {len(k)} bytes; a key has at least {KEY_BYTES}")
        return k

    @classmethod
    def _create(cls, p: Path) -> bytes:
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                # link, not rename: if another process made the key meanwhile, keep theirs.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, p)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            _fsync_dir(p.parent)
        except OSError as exc:
            raise TrustError(f"cannot create key file {p}: {exc}") from None
        return cls._load(p)

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

Signed commands between machines (a robot's goals, cancels and results; an operator's e-stop
reset) are JSON objects sealed by :func:`seal`: the sender adds its wall time (``stamp_s``), a
random ``nonce`` and ``mac``, the HMAC-SHA256 of the canonical JSON of everything else. The
receiver admits each through a :class:`ReplayGuard`: right MAC, expected kind, time within
:data:`REPLAY_WINDOW_S` of its own clock and not before it started, nonce never seen. Per-robot
keys are named by :func:`robot_key_name` and :func:`reset_key_name` and kept in
``<state dir>/trust`` (:func:`robot_keys`).

Commands streamed at the control rate (a runtime's joint and gripper commands to its driver, a
teleoperation stream to a runtime) carry a short token instead (:class:`StreamSigner`,
:class:`StreamGuard`): a session, a rising number and a MAC over the values, checked against a
one-second window.
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
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TrustError(Exception):
    """A key that cannot be created or read, is missing, or lies in a file others may read."""


class MessageRefused(Exception):
    """A signed message that is not admitted; the message says why, for a person (never a key)."""


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

    def rotate(self, name: str) -> Path | None:
        """Replace key ``name`` with 32 new random bytes (file mode 0600, written atomically) and
        return its file (None in memory). Whoever verifies with the old key must load the new one
        (restart it). Raises :class:`TrustError` if the file cannot be written."""
        p = self.path(name)
        k = secrets.token_bytes(KEY_BYTES)
        with self._lock:
            if p is not None:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    write_atomic(p, (k.hex() + "\n").encode("ascii"))
                except OSError as exc:
                    raise TrustError(f"cannot write key file {p}: {exc}") from None
            self._keys[name] = k
        return p


# --------------------------------------------------------------------------- signed commands

#: How far a signed command's ``stamp_s`` may lie from the receiver's wall clock (s), either way.
#: Senders and receivers keep their clocks in step (NTP or PTP, as a ROS 2 cell needs anyway) to
#: well within it; a goal is re-signed each time it is sent again, so a short window costs a legit
#: sender nothing, and a captured command is useless once older. Within the window each nonce is
#: admitted once.
REPLAY_WINDOW_S = 30.0

#: At most this many nonces are remembered; beyond them a receiver refuses (fail closed). Only
#: authentic messages are remembered, so only a key holder could fill it.
MAX_NONCES = 100_000


def robot_key_name(robot: str) -> str:
    """Name of ``robot``'s command key: its goals and cancels (coordinator -> runtime) and its
    results (runtime -> coordinator)."""
    return f"robot.{robot}"


def reset_key_name(robot: str) -> str:
    """Name of ``robot``'s e-stop reset key: the operator's command signs with it, the runtime
    verifies. Kept apart from the command key so that a coordinator can hold the one without the
    other (no plan and no model may reset an e-stop)."""
    return f"estop-reset.{robot}"


def default_state_dir() -> Path:
    """The robots' state folder: ``$ATELIER_STATE_DIR``, else ``var/robots`` (relative to the
    working directory, as ``atelier robot --state-dir`` defaults)."""
    return Path(os.environ.get("ATELIER_STATE_DIR") or "var/robots")


def robot_keys(state_dir: Path | str | None = None) -> KeyStore:
    """The key store of the robots' keys: ``<state_dir>/trust`` (default
    :func:`default_state_dir`). Nothing is read until a key is asked for."""
    return KeyStore(Path(state_dir if state_dir is not None else default_state_dir()) / "trust")


def seal(key: bytes, kind: str, body: Mapping[str, Any], *, now_s: float | None = None) -> dict[str, Any]:
    """``body`` as a signed message of ``kind``: with ``kind``, ``stamp_s`` (the wall clock,
    s since the epoch, or ``now_s``), a random 128-bit ``nonce``, and ``mac``, the HMAC-SHA256
    under ``key`` of the canonical JSON of all the rest. ``body`` must be JSON data; it may not
    use those four names."""
    msg = {**body, "kind": kind, "stamp_s": time.time() if now_s is None else float(now_s)}
    msg["nonce"] = secrets.token_hex(16)
    msg["mac"] = mac(key, canonical(msg))
    return msg


def authentic(key: bytes, message: Mapping[str, Any]) -> bool:
    """Whether ``message`` carries the right ``mac`` under ``key`` (constant-time; never raises
    on a malformed message)."""
    try:
        body = canonical({k: v for k, v in message.items() if k != "mac"})
    except (TypeError, ValueError, AttributeError):
        return False
    return mac_ok(key, body, message.get("mac"))


class ReplayGuard:
    """Admits the signed messages of one key, each at most once and only while fresh.

    :meth:`admit` takes a message when its MAC is right under ``key``, it is of the expected
    kind, its ``stamp_s`` lies within ``window_s`` of ``clock()`` (the wall clock) either way and
    not before ``not_before_s`` (default: when the guard was made, so a message captured before
    a receiver restarted is refused after it, although the nonces seen before are forgotten), and
    its nonce was never admitted. Nonces are remembered while their message would be fresh.
    Thread-safe; the MAC is checked first, so an unauthenticated message changes nothing.
    """

    def __init__(
        self,
        key: bytes,
        *,
        window_s: float = REPLAY_WINDOW_S,
        clock: Callable[[], float] = time.time,
        not_before_s: float | None = None,
    ) -> None:
        self._key = key
        self.window_s = window_s
        self.clock = clock
        self.not_before_s = clock() if not_before_s is None else not_before_s
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> stamp_s, oldest first
        self._lock = threading.Lock()

    def admit(self, message: object, kind: str) -> dict[str, Any]:
        """``message`` (a decoded JSON object) if admitted as a ``kind``; raises
        :class:`MessageRefused` saying why otherwise."""
        if not isinstance(message, dict):
            raise MessageRefused("not a signed message (not a JSON object)")
        if "mac" not in message:
            raise MessageRefused("not signed (no MAC)")
        if not authentic(self._key, message):
            raise MessageRefused("not authenticated (wrong MAC: unsigned, altered, or another key)")
        if message.get("kind") != kind:
            raise MessageRefused(f"a {str(message.get('kind'))[:40]!r} message where a {kind!r} was expected")
        stamp, nonce = message.get("stamp_s"), message.get("nonce")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp != stamp:
            raise MessageRefused("no valid time stamp")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise MessageRefused("no valid nonce")
        now = self.clock()
        if abs(now - stamp) > self.window_s:
            ago = now - stamp
            raise MessageRefused(f"stale: signed {ago:.1f} s ago (window +-{self.window_s:g} s; clocks in step?)")
        if stamp < self.not_before_s:
            raise MessageRefused(f"signed {self.not_before_s - stamp:.1f} s before this receiver started")
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.window_s:
                self._seen.popitem(last=False)
            if nonce in self._seen:
                raise MessageRefused("replayed (its nonce was admitted before)")
            if len(self._seen) >= MAX_NONCES:
                raise MessageRefused("too many messages in the window (refused until older ones expire)")
            self._seen[nonce] = float(stamp)
        return message


#: How far (s) a streamed command's stamp may lie from the receiver's clock: streams run at the
#: control rate, so only a short window is fresh.
STREAM_WINDOW_S = 1.0
#: Command streams (sessions) a :class:`StreamGuard` remembers.
MAX_SESSIONS = 64


def _stream_mac(key: bytes, kind: str, to: str, session: str, seq: int, stamp_s: float, values: Sequence[float]) -> str:
    head = f"{kind}|{to}|{session}|{seq}|{stamp_s!r}|".encode()
    return mac(key, head + struct.pack(f"<{len(values)}d", *values))[:32]


class StreamSigner:
    """Signs one sender's stream of commands of ``kind`` to ``to`` (a robot's joint and gripper
    commands, a teleoperation stream): each command gets a token ``<session>.<seq>.<mac>`` (a
    random session id, a sequence number counting up from 1, and HMAC-SHA256 cut to 128 bits
    over kind, receiver, session, number, stamp and the values). A message type with no field
    for it carries the token in its header's ``frame_id``. About 3 us a command."""

    def __init__(self, key: bytes, kind: str, to: str) -> None:
        self._key, self.kind, self.to = key, kind, to
        self.session = secrets.token_hex(8)
        self._seq = 0

    def token(self, stamp_s: float, values: Sequence[float]) -> str:
        """The token of the next command (stamped ``stamp_s``, wall clock) with these values."""
        self._seq += 1
        tag = _stream_mac(self._key, self.kind, self.to, self.session, self._seq, stamp_s, values)
        return f"{self.session}.{self._seq}.{tag}"


class StreamGuard:
    """Admits the commands of :class:`StreamSigner` streams under one key: the MAC right, the
    stamp within :data:`STREAM_WINDOW_S` of ``clock()`` and not before the guard was made (a
    stream captured before a receiver restarted is refused after it), and each session's
    numbers rising (a command replayed within the window is refused). Call from one thread."""

    def __init__(
        self,
        key: bytes,
        kind: str,
        to: str,
        *,
        window_s: float = STREAM_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self.kind, self.to = key, kind, to
        self.window_s, self.clock = window_s, clock
        self.started_s = clock()
        self._last: OrderedDict[str, int] = OrderedDict()  # session -> last admitted number

    def admit(self, token: str, stamp_s: float, values: Sequence[float]) -> str:
        """The command's session if admitted; raises :class:`MessageRefused` saying why."""
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 18:
            raise MessageRefused("not signed (no stream token)")
        session, seq, tag = parts[0][:32], int(parts[1]), parts[2]
        want = _stream_mac(self._key, self.kind, self.to, session, seq, stamp_s, values)
        if not hmac.compare_digest(want.encode(), tag.encode("utf-8", "replace")):
            raise MessageRefused("not authenticated (wrong MAC: unsigned, altered, or another key)")
        now = self.clock()
        if abs(now - stamp_s) > self.window_s:
            raise MessageRefused(f"stale: stamped {now - stamp_s:.2f} s ago (window +-{self.window_s:g} s)")
        if stamp_s < self.started_s:
            raise MessageRefused("stamped before this receiver started")
        if seq <= self._last.get(session, 0):
            raise MessageRefused("replayed (its number was admitted before)")
        self._last[session] = seq
        self._last.move_to_end(session)
        while len(self._last) > MAX_SESSIONS:
            self._last.popitem(last=False)
        return session

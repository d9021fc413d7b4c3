"""plant.trust: a folder of named keys, HMAC tags, atomic writes."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from plant.trust import KeyStore, TrustError, canonical, mac, mac_ok, write_atomic


def test_keys_are_made_private_once_and_read_back(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "trust")
    tag = keys.sign("audit", b"hello")
    path = keys.path("audit")
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text())) == 32
    again = KeyStore(tmp_path / "trust")
    assert again.verify("audit", b"hello", tag)
    assert not again.verify("audit", b"hellO", tag)
    assert not again.verify("audit", b"hello", None)
    assert not again.verify("audit", b"hello", "zz")
    assert keys.key("robot-goals") != keys.key("audit")


def test_a_check_never_makes_a_key_and_bad_names_are_refused(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    with pytest.raises(TrustError, match="no key file"):
        keys.verify("audit", b"x", "00")
    assert not keys.exists("audit")
    for bad in ("../etc/passwd", "", "a/b", ".hidden"):
        with pytest.raises(TrustError, match="bad key name"):
            keys.key(bad)


def test_a_key_others_may_read_or_a_short_key_is_refused(tmp_path: Path) -> None:
    KeyStore(tmp_path).key("audit")
    (tmp_path / "audit.key").chmod(0o640)
    with pytest.raises(TrustError, match="chmod 600"):
        KeyStore(tmp_path).key("audit")
    (tmp_path / "short.key").write_text("abcd\n")
    (tmp_path / "short.key").chmod(0o600)
    with pytest.raises(TrustError, match="at least 32"):
        KeyStore(tmp_path).key("short")


def test_in_memory_keys() -> None:
    keys = KeyStore(None)
    assert not keys.persistent and keys.path("audit") is None
    with pytest.raises(TrustError):
        keys.verify("audit", b"x", "00")
    assert keys.verify("audit", b"x", keys.sign("audit", b"x"))


def test_mac_and_canonical() -> None:
    key = b"k" * 32
    assert mac_ok(key, canonical({"b": 1, "a": "é"}), mac(key, b'{"a":"\xc3\xa9","b":1}'))
    assert not mac_ok(key, b"x", "é" * 64)


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "head.json"
    write_atomic(p, b"one")
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [q.name for q in p.parent.iterdir()] == ["head.json"]


def _make_key(folder: str) -> str:
    return KeyStore(folder).key("audit").hex()


def test_processes_racing_to_make_a_key_agree(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = pool.map(_make_key, [str(tmp_path)] * 8)
    assert len(set(made)) == 1

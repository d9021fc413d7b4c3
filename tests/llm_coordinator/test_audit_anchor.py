"""The audit log anchored outside the database: tags under a key in the trust folder, and the
newest head in a file there. Someone who can write the database file (but not the trust folder)
edits, deletes and re-chains rows; verify finds each. Appends from many threads and from two
processes at once keep one intact chain."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_coordinator.store import AUDIT_KEY, GENESIS, Store, audit_hash, default_trust_dir


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'atelier.db'}", trust_dir=tmp_path / "state" / "trust")


def _fill(store: Store, n: int = 6) -> None:
    for i in range(n):
        store.audit(f"person{i}", "note", None, {"i": i, "text": f"entry {i}"})


def _sql(store: Store, *statements: str) -> None:
    """What someone with the database file does: drop the append-only triggers and write."""
    with sqlite3.connect(store.where) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for st in statements:
            conn.execute(st)


def _rechain(store: Store, start: int) -> None:
    """Recompute every hash from row ``start`` on with the project's own hash function."""
    with sqlite3.connect(store.where) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        rows = conn.execute("SELECT seq, at, actor, action, plan_id, payload, hash FROM audit ORDER BY seq").fetchall()
        prev = GENESIS
        for seq, at, actor, action, plan_id, payload, h in rows:
            if seq >= start:
                h = audit_hash(prev, seq, at, actor, action, plan_id, json.loads(payload))
                conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
            prev = h


def test_an_intact_log_verifies_and_its_head_is_anchored_outside_the_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    report = store.verify_audit()
    assert report.ok and report.rows == 6 and not report.problems
    assert report.head is not None and report.head.seq == 6
    assert report.head.hash == store.audit_rows()[-1].hash
    assert store.head_file is not None and store.head_file.parent == tmp_path / "state" / "trust"
    assert json.loads(store.head_file.read_text())["seq"] == 6
    key_file = store.keys.path(AUDIT_KEY)
    assert key_file is not None and key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert all(r.mac is not None and len(r.mac) == 64 for r in store.audit_rows())


def test_an_edited_row_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    report = store.verify_audit()
    assert not report.ok
    assert any("row 3" in p and "edited" in p for p in report.problems)


def test_a_deleted_tail_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "DELETE FROM audit WHERE seq >= 5")
    report = store.verify_audit()
    assert not report.ok
    assert any("ends at row 4" in p and "rows 5 to 6 were deleted" in p for p in report.problems), report.problems


def test_a_deleted_middle_row_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "DELETE FROM audit WHERE seq = 3")
    report = store.verify_audit()
    assert not report.ok
    assert any("row 3: missing" in p for p in report.problems)


def test_a_log_rewritten_and_rechained_with_the_projects_own_hash_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    _rechain(store, 2)
    report = store.verify_audit()
    assert not report.ok
    # The chain holds, as the forger intended...
    assert not any("edited" in p or "chain broken" in p for p in report.problems)
    # ...but the tags of the re-chained rows do not, nor does the anchored head.
    for seq in range(2, 7):
        assert any(f"row {seq}: its tag does not match" in p for p in report.problems), report.problems
    assert any("row 6: its hash is not the anchored head's" in p for p in report.problems)


def test_a_rechained_log_with_its_tags_stripped_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "UPDATE audit SET actor = 'mallory' WHERE seq = 2", "UPDATE audit SET mac = NULL")
    _rechain(store, 2)
    report = store.verify_audit()
    assert not report.ok
    assert any("row 6: its hash is not the anchored head's" in p for p in report.problems)


def test_a_tail_deleted_then_written_past_keeps_its_evidence(tmp_path: Path) -> None:
    """Later appends must not move the anchor over a deletion: the anchored head stays."""
    store = _store(tmp_path)
    _fill(store)
    _sql(store, "DELETE FROM audit WHERE seq >= 5")
    _fill(store, 4)  # rows 5 to 8, new content
    report = store.verify_audit()
    assert not report.ok
    assert any("row 6: its hash is not the anchored head's" in p for p in report.problems)
    assert report.head is not None and report.head.seq == 6


def test_a_missing_head_file_or_key_is_a_problem(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, 3)
    assert store.head_file is not None
    store.head_file.unlink()
    assert any("no anchored head" in p for p in store.verify_audit().problems)
    key_file = store.keys.path(AUDIT_KEY)
    assert key_file is not None
    key_file.unlink()
    fresh = _store(tmp_path)  # a new process: nothing cached
    assert any("tags cannot be checked" in p for p in fresh.verify_audit().problems)


def test_a_forged_head_file_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, 3)
    assert store.head_file is not None
    data = json.loads(store.head_file.read_text())
    data["seq"] = 2
    data["hash"] = store.audit_rows()[1].hash
    store.head_file.write_text(json.dumps(data))
    assert any("not written with the audit key" in p for p in store.verify_audit().problems)


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, 2)
    key_file = store.keys.path(AUDIT_KEY)
    assert key_file is not None
    key_file.chmod(0o644)
    report = _store(tmp_path).verify_audit()
    assert not report.ok and any("chmod 600" in p for p in report.problems)


def test_a_database_from_before_tags_gets_the_column_and_keeps_verifying(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, at FLOAT, actor VARCHAR(80), action VARCHAR(40), "
            "plan_id INTEGER, payload JSON, prev_hash VARCHAR(64), hash VARCHAR(64))"
        )
        prev = GENESIS
        for seq in (1, 2):
            h = audit_hash(prev, seq, 1.0, "old", "note", None, {})
            conn.execute("INSERT INTO audit VALUES (?, 1.0, 'old', 'note', NULL, '{}', ?, ?)", (seq, prev, h))
            prev = h
    store = Store(f"sqlite:///{db}", trust_dir=tmp_path / "trust")
    report = store.verify_audit()
    assert report.ok and report.rows == 2 and any("before audit tags" in n for n in report.notes)
    _fill(store, 2)
    report = store.verify_audit()
    assert report.ok and report.rows == 4 and report.head is not None and report.head.seq == 4
    # An untagged row after tagged ones was written by someone without the key.
    last = store.audit_rows()[-1]
    h = audit_hash(last.hash, 5, 2.0, "mallory", "note", None, {})
    _sql(store, f"INSERT INTO audit VALUES (5, 2.0, 'mallory', 'note', NULL, '{{}}', '{last.hash}', '{h}', NULL)")
    assert any("row 5: has no tag" in p for p in store.verify_audit().problems)


def test_default_trust_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATELIER_STATE_DIR", raising=False)
    assert default_trust_dir(f"sqlite:///{tmp_path / 'a.db'}") == tmp_path / "a.db.trust"
    assert default_trust_dir("sqlite://") is None
    monkeypatch.setenv("ATELIER_STATE_DIR", str(tmp_path / "state"))
    assert default_trust_dir(f"sqlite:///{tmp_path / 'a.db'}") == tmp_path / "state" / "trust"
    assert default_trust_dir("postgresql://u:secret@db/atelier") == tmp_path / "state" / "trust"
    # Two databases sharing a state folder keep their own heads.
    a = Store(f"sqlite:///{tmp_path / 'atelier.db'}")
    (tmp_path / "two").mkdir()
    b = Store(f"sqlite:///{tmp_path / 'two' / 'atelier.db'}")
    assert a.head_file is not None and b.head_file is not None and a.head_file != b.head_file
    _fill(a, 3)
    _fill(b, 1)
    assert a.verify_audit().ok and b.verify_audit().ok


def test_an_in_memory_store_keeps_key_and_head_in_memory() -> None:
    store = Store("sqlite://")
    _fill(store, 3)
    report = store.verify_audit()
    assert report.ok and report.head is not None and report.head.where == "memory" and report.head.seq == 3
    assert store.head_file is None and not store.keys.persistent


def test_fifty_threads_append_at_once(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, trust_dir=tmp_path / "state" / "trust")
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def login(i: int) -> None:
        try:
            start.wait()
            for k in range(3):
                store.audit(f"user{i}", "login", None, {"k": k})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.rows == 150 and report.head is not None and report.head.seq == 150
    store.engine.dispose()


_WRITER = """
import sys
from llm_coordinator.store import Store
store = Store(sys.argv[1], trust_dir=sys.argv[2])
pid = store.create("order from " + sys.argv[3], "intent", actor=sys.argv[3])
for i in range(int(sys.argv[4])):
    store.audit(sys.argv[3], "note", pid, {"i": i})
"""


def test_two_processes_append_to_one_database(db_url: str, tmp_path: Path) -> None:
    """Two processes write one store at once, a SQLite file or a PostgreSQL database, as
    several consoles and coordinators of a site do: one intact chain."""
    db = db_url
    trust = tmp_path / "state" / "trust"
    Store(db, trust_dir=trust).engine.dispose()  # tables made once, as a site does
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, db, str(trust), name, "60"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alice", "bob")
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
    store = Store(db, trust_dir=trust)
    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.rows == 2 * 61 and report.head is not None and report.head.seq == 122
    assert {r.actor for r in store.audit_rows()} == {"alice", "bob"}
    store.engine.dispose()


def test_audit_verify_command_prints_the_head_and_the_problems(tmp_path: Path) -> None:
    from llm_coordinator.cli import app

    store = _store(tmp_path)
    _fill(store, 4)
    db = f"sqlite:///{store.where}"
    trust = str(tmp_path / "state" / "trust")
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", "--db", db, "--trust-dir", trust])
    assert r.exit_code == 0, r.output
    assert "chain intact" in r.output and "head: row 4" in r.output
    _sql(store, "DELETE FROM audit WHERE seq = 4")
    r = runner.invoke(app, ["audit", "verify", "--db", db, "--trust-dir", trust])
    assert r.exit_code == 1 and "row 4 was deleted" in r.output and "head: row 4" in r.output

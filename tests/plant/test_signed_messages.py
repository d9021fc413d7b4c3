"""Signed commands (:func:`plant.trust.seal`, :class:`plant.trust.ReplayGuard`): what a receiver
admits, and each way a message is refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from plant.trust import (
    REPLAY_WINDOW_S,
    KeyStore,
    MessageRefused,
    ReplayGuard,
    authentic,
    reset_key_name,
    robot_key_name,
    robot_keys,
    seal,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _wire(msg: dict[str, object]) -> dict[str, object]:
    """Through JSON, as it crosses the network."""
    out: dict[str, object] = json.loads(json.dumps(msg))
    return out


def test_a_sealed_message_is_admitted_once() -> None:
    clock = Clock()
    guard = ReplayGuard(KEY, clock=clock, not_before_s=clock.t - 1)
    msg = _wire(seal(KEY, "goal", {"goal_id": "g", "args": {"joints_rad": [0.1, -2.5e-7, 3.0]}}, now_s=clock.t))
    assert guard.admit(msg, "goal")["goal_id"] == "g"
    with pytest.raises(MessageRefused, match="replayed"):
        guard.admit(msg, "goal")
    # Sent again, signed afresh: a new nonce, admitted.
    assert guard.admit(_wire(seal(KEY, "goal", {"goal_id": "g"}, now_s=clock.t)), "goal")


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda m: m.pop("mac"), "not signed"),
        (lambda m: m.update(mac="0" * 64), "not authenticated"),
        (lambda m: m.update(goal_id="other"), "not authenticated"),
        (lambda m: m.update(stamp_s=float(m["stamp_s"]) + 1), "not authenticated"),
        (lambda m: m.update(extra=1), "not authenticated"),
    ],
)
def test_a_changed_or_unsigned_message_is_refused(tamper: object, why: str) -> None:
    clock = Clock()
    guard = ReplayGuard(KEY, clock=clock, not_before_s=0)
    msg = _wire(seal(KEY, "goal", {"goal_id": "g"}, now_s=clock.t))
    tamper(msg)  # type: ignore[operator]
    with pytest.raises(MessageRefused, match=why):
        guard.admit(msg, "goal")


def test_another_key_another_kind_stale_and_early_messages_are_refused() -> None:
    clock = Clock()
    guard = ReplayGuard(KEY, clock=clock, not_before_s=clock.t - 100)
    with pytest.raises(MessageRefused, match="not authenticated"):
        guard.admit(_wire(seal(OTHER, "goal", {}, now_s=clock.t)), "goal")
    with pytest.raises(MessageRefused, match="'result' message where a 'goal'"):
        guard.admit(_wire(seal(KEY, "result", {}, now_s=clock.t)), "goal")
    for skew in (REPLAY_WINDOW_S + 0.5, -(REPLAY_WINDOW_S + 0.5)):
        with pytest.raises(MessageRefused, match="stale"):
            guard.admit(_wire(seal(KEY, "goal", {}, now_s=clock.t - skew)), "goal")
    assert guard.admit(_wire(seal(KEY, "goal", {}, now_s=clock.t - REPLAY_WINDOW_S + 0.5)), "goal")
    # Captured before the receiver (re)started: refused though inside the window.
    restarted = ReplayGuard(KEY, clock=clock)
    with pytest.raises(MessageRefused, match="before this receiver started"):
        restarted.admit(_wire(seal(KEY, "goal", {}, now_s=clock.t - 5)), "goal")
    bad: object
    for bad in (None, [], "x", {"mac": 3}):
        with pytest.raises(MessageRefused):
            guard.admit(bad, "goal")


def test_nonces_are_forgotten_only_once_their_message_is_stale() -> None:
    clock = Clock()
    guard = ReplayGuard(KEY, clock=clock, not_before_s=0)
    msg = _wire(seal(KEY, "goal", {}, now_s=clock.t))
    guard.admit(msg, "goal")
    clock.t += REPLAY_WINDOW_S - 0.1
    with pytest.raises(MessageRefused, match="replayed"):
        guard.admit(msg, "goal")
    clock.t += 0.2
    guard.admit(_wire(seal(KEY, "goal", {}, now_s=clock.t)), "goal")  # prunes the first nonce
    with pytest.raises(MessageRefused, match="stale"):  # the stamp still refuses it
        guard.admit(msg, "goal")


def test_authentic_never_raises() -> None:
    assert not authentic(KEY, {"mac": None})
    assert not authentic(KEY, {"x": object(), "mac": "00"})
    assert authentic(KEY, seal(KEY, "k", {"a": [1, 2.5, "é"]}))


def test_robot_keys_live_in_the_state_folder_and_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_STATE_DIR", str(tmp_path / "state"))
    keys = robot_keys()
    assert keys.directory == tmp_path / "state" / "trust"
    assert robot_key_name("ur5e_1") != reset_key_name("ur5e_1")
    k = keys.key(robot_key_name("ur5e_1"))
    path = keys.rotate(robot_key_name("ur5e_1"))
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyStore(tmp_path / "state" / "trust").key(robot_key_name("ur5e_1"), create=False) != k
    assert keys.key(robot_key_name("ur5e_1")) != k

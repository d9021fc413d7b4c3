"""The plan statuses are written once (llm_coordinator.status); the groups name only real ones."""

from __future__ import annotations

from llm_coordinator.status import CONFIRMABLE, PLAN_STATUSES, REPLANNABLE, RUNNABLE, TERMINAL, TRANSITIONS


def test_every_status_has_its_transitions_and_every_group_names_statuses() -> None:
    assert set(TRANSITIONS) == set(PLAN_STATUSES)
    for status, following in TRANSITIONS.items():
        assert following <= set(PLAN_STATUSES), status
    assert (REPLANNABLE | CONFIRMABLE | RUNNABLE | TERMINAL).issubset(PLAN_STATUSES)
    assert not (RUNNABLE & TERMINAL) and "drafted" not in TERMINAL

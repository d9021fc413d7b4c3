"""Shared fixtures. The twin renders offscreen through EGL unless the caller chose a backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from plant import load_plant
from plant.config import PlantDescription

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "plants" / "demo_cell.yaml"


@pytest.fixture(scope="session")
def demo_plant() -> PlantDescription:
    return load_plant(DEMO)


@pytest.fixture(scope="session")
def demo_text() -> str:
    return DEMO.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    """A throwaway PostgreSQL server for this test session (see ``tests/_postgres.py``)."""
    from tests._postgres import postgres_server, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store database: a SQLite file, and a database on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'atelier.db'}"
    from tests._postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_base"))

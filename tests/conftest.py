"""Shared fixtures. The twin renders offscreen through EGL unless the caller chose a backend."""

from __future__ import annotations

import os
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

"""Fixtures of the coordinator tests: the demo plant, a store in a temporary SQLite file, and
the embedded model loaded once per session (it loads in a second or two)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_coordinator.backends import make_backend
from llm_coordinator.config import LlamaBackendConfig
from llm_coordinator.interface import LLMBackend
from llm_coordinator.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'atelier.db'}")
    yield s
    s.engine.dispose()


@pytest.fixture(scope="session")
def llama() -> LLMBackend:
    return make_backend(LlamaBackendConfig())

"""Model backends, chosen by name through a registry and imported only when used.

``register(name, "package.module:Class")`` adds a backend; :func:`make_backend` builds one from
its configuration (the ``backend`` field names it). A backend class takes its config object as
its only constructor argument. Importing this package imports no model library: llama.cpp and
httpx load only when a backend that needs them is built.
"""

from __future__ import annotations

import importlib
from typing import Any

from llm_coordinator.config import BackendConfig
from llm_coordinator.interface import BackendUnavailable, LLMBackend

#: Backend name -> "module:attribute" of its class.
_REGISTRY: dict[str, str] = {
    "llama": "llm_coordinator.backends.llama:LlamaBackend",
    "openai": "llm_coordinator.backends.openai:OpenAIBackend",
    "scripted": "llm_coordinator.backends.scripted:ScriptedBackend",
}


def register(name: str, entry_point: str) -> None:
    """Register (or replace) the backend ``name`` as ``"package.module:Class"``."""
    if ":" not in entry_point:
        raise ValueError(f"entry point {entry_point!r} must look like 'package.module:Class'")
    _REGISTRY[name] = entry_point


def unregister(name: str) -> None:
    """Remove a backend (tests that register one restore the registry with this)."""
    _REGISTRY.pop(name, None)


def registered() -> dict[str, str]:
    """A copy of the registry: backend name -> entry point."""
    return dict(_REGISTRY)


def make_backend(config: BackendConfig | Any) -> LLMBackend:
    """Build the backend that ``config.backend`` names; raise :class:`BackendUnavailable`."""
    name = getattr(config, "backend", None)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BackendUnavailable(f"no backend named {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    module_name, _, attr = _REGISTRY[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"backend {name!r} cannot be loaded from {_REGISTRY[name]}: {exc}") from exc
    backend = cls(config)
    if not isinstance(backend, LLMBackend):
        raise BackendUnavailable(f"{_REGISTRY[name]} does not implement LLMBackend")
    return backend


__all__ = ["make_backend", "register", "registered", "unregister"]

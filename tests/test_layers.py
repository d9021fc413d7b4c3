"""The layer check (scripts/check_layers.py) passes on this tree and fails on a bad one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_this_tree_follows_the_map() -> None:
    assert _check().violations(ROOT) == []


def test_a_core_module_importing_sim_is_caught(tmp_path: Path) -> None:
    for pkg in ("plant", "policies", "robots", "sim", "llm_coordinator"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "llm_coordinator" / "wiring.py").write_text("import sim.twin\n")
    (tmp_path / "llm_coordinator" / "console_helpers.py").write_text("from sim.twin import Twin\n")
    (tmp_path / "plant" / "bad.py").write_text("import robots\n")
    found = _check().violations(tmp_path)
    assert sorted(found) == [
        "llm_coordinator/console_helpers.py:1: only the coordinator's wiring modules may import sim",
        "plant/bad.py:1: plant may not import robots",
    ]

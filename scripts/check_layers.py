#!/usr/bin/env python3
"""Fail when an import goes against ARCHITECTURE.md (exit 1, one line per import).

Tighter than the layer contracts of import-linter in one way: inside ``llm_coordinator`` only
the wiring modules named in ``WIRING`` may import ``sim``; the core (planner, guardrails,
approval, executor, rehearsal...) talks to interfaces only. Usage: check_layers.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: Package -> packages of ours it may import.
MAY_IMPORT: dict[str, set[str]] = {
    "plant": set(),
    "policies": set(),
    "robots": {"plant", "policies"},
    "sim": {"plant", "robots", "policies"},
    "llm_coordinator": {"plant", "robots", "policies", "sim"},
}
#: The only modules of the coordinator that build backends, and so may import ``sim``.
WIRING = {
    "llm_coordinator/wiring.py",
    "llm_coordinator/cli.py",
    "llm_coordinator/cli_plan.py",
    "llm_coordinator/cli_policy.py",
    "llm_coordinator/cli_robot.py",
    "llm_coordinator/cli_twin.py",
    "llm_coordinator/cli_vision.py",
    "llm_coordinator/console/wiring.py",
}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(top-level package, line) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.partition(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.partition(".")[0], node.lineno))
    return found


def violations(root: Path) -> list[str]:
    out = []
    for pkg, allowed in MAY_IMPORT.items():
        files = sorted((root / pkg).rglob("*.py"))
        if not files:
            out.append(f"{pkg}/: no Python files found under {root.resolve()} (wrong root?)")
        for path in files:
            rel = path.relative_to(root).as_posix()
            for target, line in imports_of(path):
                if target not in MAY_IMPORT or target == pkg:
                    continue
                if target not in allowed:
                    out.append(f"{rel}:{line}: {pkg} may not import {target}")
                elif target == "sim" and pkg == "llm_coordinator" and rel not in WIRING:
                    out.append(f"{rel}:{line}: only the coordinator's wiring modules may import sim")
    return out


def main() -> int:
    bad = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(bad) if bad else "layers: every import follows ARCHITECTURE.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

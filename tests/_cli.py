"""The ``atelier`` command as a person runs it: in a process of its own, this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def atelier(
    *args: str, cwd: Path = ROOT, stdin: str | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``atelier ARGS`` run in ``cwd`` (wide lines, offscreen rendering, this checkout importable)."""
    env = {**os.environ, "COLUMNS": "200", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "llm_coordinator.cli", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )

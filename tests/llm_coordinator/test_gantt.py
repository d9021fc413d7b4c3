"""Charts are drawn in worker threads, several at once, and never on an event loop."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from llm_coordinator import rehearsal
from llm_coordinator.expansion import plan_recipe
from llm_coordinator.gantt import write_gantt
from llm_coordinator.plan import RecipeIntent
from llm_coordinator.testing import fake_twin_factory
from plant.config import PlantDescription


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_charts_drawn_in_threads_at_once_are_each_their_own(tmp_path: Path) -> None:
    """Eight charts of different heights (a row per agent), drawn by four threads at once, in a
    fresh interpreter: each file has its own chart's size, and pyplot (whose current figure
    and registry of figures threads would share) was never imported."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path
        from llm_coordinator.gantt import write_gantt, write_separation_plot

        out = Path({str(tmp_path)!r})

        def draw(n):
            bars = [(f"agent_{{a}}", f"step_{{k}}", k * 1.0, k + 0.8, "done") for a in range(n) for k in range(20)]
            return str(write_gantt(bars, out / f"gantt_{{n}}.png", f"{{n}} agents"))

        rows = [{{"seed": s, "closest_m": 1.0 + s, "closest_protective_m": 0.8, "ok": True}} for s in range(4)]
        with ThreadPoolExecutor(4) as pool:
            charts = list(pool.map(draw, range(1, 9)))
            plot = pool.submit(write_separation_plot, rows, out / "separation.png", "risk").result()
        print(json.dumps({{"charts": charts, "plot": str(plot), "pyplot": "matplotlib.pyplot" in sys.modules}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["pyplot"] is False
    for n, chart in enumerate(got["charts"], start=1):
        assert png_size(Path(chart)) == (1200, round(100 * (1.0 + 0.6 * n))), (n, png_size(Path(chart)))
    assert png_size(Path(got["plot"])) == (800, 320)


async def test_a_rehearsal_draws_its_chart_off_the_event_loop(
    demo_plant: PlantDescription, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal's Gantt chart is drawn in a worker thread: drawing blocks for a fifth of a
    second or more, and the console's live view and the robots share the event loop."""
    drawn_in: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Path:
        drawn_in.append(threading.get_ident())
        return write_gantt(*args, **kwargs)

    monkeypatch.setattr(rehearsal, "write_gantt", spy)
    recipe = next(iter(demo_plant.recipes))
    plan = plan_recipe(demo_plant, RecipeIntent(goal="recipe", recipe=recipe, count=1, params={}), work_order="test")
    report = await rehearsal.Rehearser(demo_plant, fake_twin_factory(200.0)).rehearse(plan, tmp_path)
    assert report.ok, report.reason
    assert drawn_in and threading.get_ident() not in drawn_in
    chart = tmp_path / "rehearsal_gantt.png"
    assert str(chart) in report.evidence and png_size(chart)[0] == 1200

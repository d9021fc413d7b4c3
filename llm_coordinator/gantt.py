"""Gantt charts of plans (planned) and runs (rehearsed or live), as PNG files (matplotlib)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llm_coordinator.plan import Plan
from plant.text import safe_text

Bar = tuple[str, str, float, float, str]  # (agent, step id, start s, end s, status)


def planned_bars(plan: Plan) -> list[Bar]:
    """Bars of a plan as scheduled (:meth:`~llm_coordinator.plan.Plan.planned_starts`)."""
    starts = plan.planned_starts()
    return [
        (s.agent, s.id, starts[s.id], starts[s.id] + s.expected_duration_s, "hazardous" if s.hazardous else "planned")
        for s in plan.steps
        if s.id in starts
    ]


_COLOURS = {"planned": "#4C78A8", "done": "#54A24B", "failed": "#E45756", "hazardous": "#F58518"}


def write_gantt(bars: Sequence[Bar], path: Path | str, title: str = "") -> Path:
    """Draw one row per agent, one bar per step (labelled), and save a PNG; returns the path."""
    agents = sorted({b[0] for b in bars})
    with _figure(path, (12, 1.0 + 0.6 * max(1, len(agents)))) as ax:
        _draw_gantt(ax, bars, agents, title)
    return Path(path)


def _draw_gantt(ax: Any, bars: Sequence[Bar], agents: list[str], title: str) -> None:
    for agent, step, start, end, status in bars:
        y = agents.index(agent)
        ax.barh(
            y,
            max(end - start, 0.05),
            left=start,
            height=0.6,
            color=_COLOURS.get(status, "#999999"),
            edgecolor="white",
            linewidth=0.8,
        )
        ax.text(start + (end - start) / 2, y, step, ha="center", va="center", fontsize=6, color="white", clip_on=True)
    ax.set_yticks(range(len(agents)), agents)
    ax.set_xlabel("time (s)")
    ax.invert_yaxis()
    ax.set_title(safe_text(title, 120) or "plan")  # a work order's text: outside text
    ax.grid(axis="x", alpha=0.3)


def write_separation_plot(rows: Sequence[dict[str, object]], path: Path | str, title: str = "") -> Path:
    """One bar per perturbed rehearsal (by seed): the closest a person came to a robot, against
    the protective separation distance of that moment (a tick on each bar; ISO/TS 15066); runs
    inside it, or failed, in red. Saves a PNG; returns the path."""
    with _figure(path, (8, 3.2)) as ax:
        _draw_separation(ax, rows, title)
    return Path(path)


def _draw_separation(ax: Any, rows: Sequence[dict[str, object]], title: str) -> None:
    xs = list(range(len(rows)))
    for x, r in zip(xs, rows, strict=True):
        near = r.get("closest_m")
        protective = float(r.get("closest_protective_m") or 0.0)  # type: ignore[arg-type]
        if not isinstance(near, int | float):
            ax.text(x, 0.02, "nobody near", rotation=90, ha="center", va="bottom", fontsize=7)
            continue
        bad = not r.get("ok") or near < protective
        ax.bar(x, near, color=_COLOURS["failed"] if bad else _COLOURS["done"], width=0.7)
        ax.plot([x - 0.35, x + 0.35], [protective, protective], color="black", linewidth=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(r.get("seed")) for r in rows], fontsize=7)
    ax.set_xlabel("perturbed start (seed)")
    ax.set_ylabel("closest approach (m)")
    ax.set_title(safe_text(title, 100) or "closest approach per run; black: protective separation distance", fontsize=9)


@contextlib.contextmanager
def _figure(path: Path | str, size: tuple[float, float]) -> Iterator[Any]:
    """The axes of a new figure, saved to ``path`` (a PNG) when the body ends without raising.

    The figure is matplotlib's object API, not pyplot: pyplot keeps global state (a current
    figure, a registry of open ones) that threads drawing at once would share, and charts are
    drawn in worker threads, several at a time (a planned chart, a rehearsal's, a risk plot)."""
    from matplotlib.figure import Figure

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=size, dpi=100)
    yield fig.subplots()
    fig.tight_layout()
    fig.savefig(path, format="png")

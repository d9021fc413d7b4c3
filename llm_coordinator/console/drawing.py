"""SVG drawings of the console: the top view of the cell and a plan's Gantt chart.

Both are plain functions of static data returning SVG markup (escaped, safe to embed). The
top view carries element ids (``m-<machine>``, ``r-<robot>-tool``, ``p-<person>``...) that
the page's script moves and recolours from the live feed; nothing else is redrawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from plant.catalog import ROBOT_MODELS
from plant.config import BoxShape, PlantDescription, Pose
from plant.skills import SKILLS

from .services import StepView, format_args

#: Pixels per metre of the top view (a 6 m cell is 720 px wide: crisp on a laptop screen).
PX_PER_M = 120.0
#: Margin around the cell in px, room for labels at the walls.
MARGIN_PX = 24.0


@dataclass(frozen=True)
class _Frame:
    """Cell frame (x right, y away from the viewer, metres) to SVG pixels (y down)."""

    height_m: float

    def x(self, x_m: float) -> float:
        return round(MARGIN_PX + x_m * PX_PER_M, 1)

    def y(self, y_m: float) -> float:
        return round(MARGIN_PX + (self.height_m - y_m) * PX_PER_M, 1)

    @staticmethod
    def d(length_m: float) -> float:
        return round(length_m * PX_PER_M, 1)


def _rect(f: _Frame, pose: Pose, size_x: float, size_y: float, attrs: str) -> str:
    cx, cy = f.x(pose.xyz_m[0]), f.y(pose.xyz_m[1])
    w, h = f.d(size_x), f.d(size_y)
    yaw_deg = -math.degrees(pose.rpy_rad[2])
    rot = f' transform="rotate({yaw_deg:.1f} {cx} {cy})"' if abs(yaw_deg) > 0.05 else ""
    return f'<rect x="{cx - w / 2}" y="{cy - h / 2}" width="{w}" height="{h}"{rot} {attrs}/>'


def _label(x: float, y: float, text: str, cls: str = "lbl", ident: str = "") -> str:
    id_attr = f' id="{escape(ident)}"' if ident else ""
    return f'<text x="{x}" y="{y}" class="{cls}"{id_attr}>{escape(text)}</text>'


def top_view_svg(plant: PlantDescription) -> Markup:
    """The cell seen from above: floor, zones, machines, bins, locations, robots, people, parts.

    Dynamic elements start at their plant-description positions; the page script moves them.
    """
    w_m, h_m = plant.cell.size_m
    f = _Frame(h_m)
    width, height = f.d(w_m) + 2 * MARGIN_PX, f.d(h_m) + 2 * MARGIN_PX
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="topview" '
        f'role="img" aria-label="top view of cell {escape(plant.name)}" data-px-per-m="{PX_PER_M}" '
        f'data-margin-px="{MARGIN_PX}" data-height-m="{h_m}">',
        "<defs>"
        '<pattern id="hatch-hazard" width="10" height="10" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="10" height="10" fill="#fff3d6"/><line x1="0" y1="0" x2="0" y2="10" stroke="#f0a020" '
        'stroke-width="4"/></pattern>'
        '<pattern id="hatch-keepout" width="10" height="10" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        '<rect width="10" height="10" fill="#fde2e2"/><line x1="0" y1="0" x2="0" y2="10" stroke="#d33" '
        'stroke-width="3"/></pattern>'
        "</defs>",
        f'<rect x="{MARGIN_PX}" y="{MARGIN_PX}" width="{f.d(w_m)}" height="{f.d(h_m)}" class="floor"/>',
    ]
    # 1 m grid, faint: distances at a glance.
    for i in range(1, math.ceil(w_m)):
        out.append(f'<line x1="{f.x(i)}" y1="{f.y(0)}" x2="{f.x(i)}" y2="{f.y(h_m)}" class="grid"/>')
    for j in range(1, math.ceil(h_m)):
        out.append(f'<line x1="{f.x(0)}" y1="{f.y(j)}" x2="{f.x(w_m)}" y2="{f.y(j)}" class="grid"/>')
    out.append(_label(f.x(w_m) - 4, f.y(0) + 16, "1 m grid", "lbl small end"))

    for name, zone in plant.zones.items():
        cls = f"zone zone-{zone.kind}"
        title = f"<title>{escape(name)}: {escape(zone.kind)} {escape(zone.hazard_class or '')}</title>"
        shape = zone.shape
        if isinstance(shape, BoxShape):
            pose = Pose(xyz_m=shape.center_m, rpy_rad=(0.0, 0.0, shape.yaw_rad))
            box = _rect(f, pose, shape.size_m[0], shape.size_m[1], f'class="{cls}"')
            out.append(f"<g>{title}{box}</g>")
        else:
            out.append(
                f'<g>{title}<circle cx="{f.x(shape.center_m[0])}" cy="{f.y(shape.center_m[1])}" '
                f'r="{f.d(shape.radius_m)}" class="{cls}"/></g>'
            )
        kind_text = {"walkway": "walkway", "hazard": f"hazard: {zone.hazard_class}", "keep_out": "keep out"}[zone.kind]
        out.append(
            _label(f.x(shape.center_m[0]), f.y(shape.center_m[1]) - 4, name.replace("_", " "), "lbl zone-lbl mid")
        )
        out.append(_label(f.x(shape.center_m[0]), f.y(shape.center_m[1]) + 10, kind_text, "lbl small mid"))

    on_top: list[str] = []
    for name, m in plant.machines.items():
        out.append(
            f'<g id="m-{escape(name)}" class="machine st-unknown"><title>{escape(name)} ({m.kind})</title>'
            + _rect(f, m.pose, m.size_m[0], m.size_m[1], 'class="mbox"')
            + "</g>"
        )
        cx, cy = f.x(m.pose.xyz_m[0]), f.y(m.pose.xyz_m[1])
        # Names and states go on top of everything else (drawn last), with a halo.
        on_top.append(_label(cx, cy - 3, name, "lbl mname mid"))
        on_top.append(_label(cx, cy + 12, "…", "lbl mstate mid", f"m-{name}-state"))

    for name, b in plant.bins().items():
        out.append(_rect(f, b.pose, b.size_m[0], b.size_m[1], f'class="bin bin-{b.role}"'))
        out.append(
            _label(f.x(b.pose.xyz_m[0]), f.y(b.pose.xyz_m[1]) + f.d(b.size_m[1]) / 2 + 11, name, "lbl small mid")
        )

    bins = plant.bins()
    for name, pose in plant.locations().items():
        if name in bins:
            continue
        x, y = f.x(pose.xyz_m[0]), f.y(pose.xyz_m[1])
        out.append(f'<g class="loc"><title>{escape(name)}</title><circle cx="{x}" cy="{y}" r="3"/></g>')
        out.append(_label(x, y + 11, name, "lbl tiny mid"))

    out.extend(on_top)
    for name, r in plant.robots.items():
        bx, by = f.x(r.base.xyz_m[0]), f.y(r.base.xyz_m[1])
        reach = f.d(ROBOT_MODELS[r.model].reach_m)
        out.append(f'<circle cx="{bx}" cy="{by}" r="{reach}" class="reach"/>')
        out.append(
            f'<g id="r-{escape(name)}" class="robot"><title>{escape(name)} ({escape(r.model)})</title>'
            f'<line id="r-{escape(name)}-arm" x1="{bx}" y1="{by}" x2="{bx}" y2="{by}" class="arm"/>'
            f'<circle id="r-{escape(name)}-base" cx="{bx}" cy="{by}" r="13" class="rbase"/>'
            f'<circle id="r-{escape(name)}-tool" cx="{bx}" cy="{by}" r="6" class="rtool"/></g>'
        )
        out.append(_label(bx, by + 28, name, "lbl rname mid"))
        out.append(_label(bx, by + 41, "", "lbl small mid rskill", f"r-{name}-skill"))

    for name in plant.parts:
        out.append(f'<rect id="part-{escape(name)}" x="-20" y="-20" width="7" height="7" class="part"/>')

    for name, person in plant.people.items():
        x0, y0 = person.path_m[0]
        out.append(
            f'<g id="p-{escape(name)}" class="person" transform="translate({f.x(x0)} {f.y(y0)})">'
            f"<title>{escape(name)}</title>"
            '<circle r="22" class="psep"/><circle r="9" class="pbody"/>'
            f'<text y="-26" class="lbl small mid">{escape(name)}</text></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- Gantt

_AGENT_COLOURS = ("#2f6db5", "#7a4fb0", "#1f8a70", "#b5651d", "#8a8a1f", "#b0306a", "#3b8ea5", "#6b6b6b")


def schedule(steps: Sequence[StepView]) -> list[tuple[float, float]]:
    """(start_s, duration_s) of each step: given values first, else the earliest start after
    its ``after`` steps and the agent's previous step (an agent does one thing at a time),
    with the skill's nominal duration."""
    ends: dict[str, float] = {}
    agent_free: dict[str, float] = {}
    out: list[tuple[float, float]] = []
    for s in steps:
        dur = (
            s.duration_s
            if s.duration_s is not None
            else SKILLS[s.skill].nominal_duration_s
            if s.skill in SKILLS
            else 5.0
        )
        if s.start_s is not None:
            start = s.start_s
        else:
            start = max([ends.get(a, 0.0) for a in s.after] + [agent_free.get(s.agent, 0.0)])
        ends[s.id] = start + dur
        agent_free[s.agent] = max(agent_free.get(s.agent, 0.0), start + dur)
        out.append((start, dur))
    return out


def _tick_step(total_s: float) -> float:
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600):
        if total_s / step <= 12:
            return float(step)
    return 1200.0


def gantt_svg(steps: Sequence[StepView], width_px: int = 980) -> Markup:
    """A Gantt chart of a plan: one row per step, bars coloured by agent, hazardous steps
    outlined in red with a warning sign, finished steps ticked."""
    if not steps:
        return Markup('<p class="muted">This plan has no steps.</p>')
    times = schedule(steps)
    total = max(s + d for s, d in times) or 1.0
    label_w, row_h, top, right = 330, 26, 30, 20
    chart_w = width_px - label_w - right
    height = top + row_h * len(steps) + 10
    scale = chart_w / total
    agents = list(dict.fromkeys(s.agent for s in steps))
    colour = {a: _AGENT_COLOURS[i % len(_AGENT_COLOURS)] for i, a in enumerate(agents)}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {height}" class="gantt" role="img" '
        f'aria-label="Gantt chart of {len(steps)} steps over {total:.0f} s">'
    ]
    tick = _tick_step(total)
    t = 0.0
    while t <= total + 1e-9:
        x = label_w + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 6}" class="gtick"/>')
        out.append(_label(round(x, 1), top - 10, f"{t:g} s", "lbl small mid"))
        t += tick
    for i, (s, (start, dur)) in enumerate(zip(steps, times, strict=True)):
        y = top + i * row_h
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{width_px}" height="{row_h}" class="grow"/>')
        sign = "⚠ " if s.hazardous else ""
        out.append(_label(6, y + 12, f"{i + 1}. {sign}{s.id}", "lbl gstep"))
        out.append(_label(6, y + 23, f"{s.agent}: {s.skill}", "lbl small muted-lbl"))
        x, w = label_w + start * scale, max(3.0, dur * scale)
        cls = f"gbar st-{s.status}" + (" hazardous" if s.hazardous else "")
        tip = f"{s.id}: {s.agent} {s.skill}({format_args(s.args)}), {start:.1f} s to {start + dur:.1f} s"
        if s.after:
            tip += f", after {', '.join(s.after)}"
        if s.hazardous:
            tip += f". Hazardous: {s.hazard_reason or 'needs an operator'}; confirmation {s.confirmation}"
        out.append(
            f'<g><title>{escape(tip)}</title><rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
            f'rx="3" fill="{colour[s.agent]}" class="{cls}"/></g>'
        )
        mark = {"done": "✓", "failed": "✗", "running": "▶", "skipped": "–"}.get(s.status, "")
        text = f"{mark} {dur:.0f} s".strip()
        tx = x + w + 4
        out.append(_label(round(tx, 1), y + 17, text, "lbl small"))
    out.append("</svg>")
    legend = "".join(
        f'<span class="chip"><span class="sw" style="background:{colour[a]}"></span>{escape(a)}</span>' for a in agents
    )
    legend += '<span class="chip"><span class="sw sw-haz"></span>hazardous (operator confirms)</span>'
    return Markup(f'{"".join(out)}<div class="legend">{legend}</div>')

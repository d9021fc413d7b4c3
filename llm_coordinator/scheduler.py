"""Order and time the steps of a plan: OR-Tools CP-SAT over the plant's shared resources.

Input: proto-steps with a duration, hard dependencies, and the resources each occupies (see
:func:`llm_coordinator.guardrails.step_resources`). Every agent does its own steps in the order
given; steps of different repetitions that share a resource keep repetition order (part 1
before part 2); steps that share a resource never overlap. A robot that reaches into a machine
stays inside until its next step starts, so its occupancy of the machine lasts that long. The
solver minimises the makespan; the result is turned back into dependencies (``after``) so that
the executor, which only follows dependencies, reproduces a safe order.

Without OR-Tools (or if the solver finds nothing in its time budget), every pair of steps that
shares a resource is ordered as listed: slower, equally safe.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_coordinator.plan import earliest_starts

log = logging.getLogger(__name__)

#: Time unit of the solver: 0.1 s (durations are rounded up to it).
_TICK_S = 0.1


@dataclass
class ProtoStep:
    """A step before scheduling: ``rep`` is its repetition (0 for single tasks)."""

    id: str
    agent: str
    duration_s: float
    after: list[str] = field(default_factory=list)
    resources: set[str] = field(default_factory=set)
    rep: int = 0
    #: A machine the agent (a robot) stays inside after this step, until its next step starts.
    stays_inside: str | None = None
    #: The outcomes of the plan's decisions this step needs (``Step.when``): two steps that need
    #: opposite outcomes of one decision never both run, so they may share a resource.
    when: dict[str, bool] = field(default_factory=dict)


def exclusive(a: ProtoStep, b: ProtoStep) -> bool:
    """Whether two steps can never both run (they need opposite outcomes of one decision)."""
    return any(d in b.when and b.when[d] != v for d, v in a.when.items())


@dataclass(frozen=True)
class Schedule:
    """Dependencies to give each step, planned start times (s) and the makespan (s)."""

    after: dict[str, list[str]]
    start_s: dict[str, float]
    makespan_s: float
    solver: str


def _ancestors(steps: Sequence[ProtoStep], after: dict[str, list[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in steps:  # listed order is topological for what the planner builds
        acc: set[str] = set()
        for d in after[s.id]:
            acc.add(d)
            acc |= out.get(d, set())
        out[s.id] = acc
    return out


def _longest_path(steps: Sequence[ProtoStep], after: dict[str, list[str]]) -> tuple[dict[str, float], float]:
    start = earliest_starts([s.id for s in steps], after, {s.id: s.duration_s for s in steps})
    return start, max((start[s.id] + s.duration_s for s in steps), default=0.0)


def _pairs_to_order(steps: Sequence[ProtoStep]) -> list[tuple[int, int]]:
    """Pairs (i, j), i listed before j, that must keep listed order whatever the solver does."""
    pairs = []
    for i, a in enumerate(steps):
        for j in range(i + 1, len(steps)):
            b = steps[j]
            if exclusive(a, b):
                continue
            if a.agent == b.agent or (a.rep != b.rep and a.resources & b.resources):
                pairs.append((i, j))
    return pairs


def _next_of_agent(steps: Sequence[ProtoStep]) -> dict[int, int]:
    nxt: dict[int, int] = {}
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.agent in last:
            nxt[last[s.agent]] = i
        last[s.agent] = i
    return nxt


def sequential(steps: Sequence[ProtoStep]) -> Schedule:
    """Every pair of steps sharing a resource (or an agent) ordered as listed."""
    after = {s.id: list(s.after) for s in steps}
    nxt = _next_of_agent(steps)
    for i, a in enumerate(steps):
        for j in range(i + 1, len(steps)):
            b = steps[j]
            if exclusive(a, b):
                continue
            inside = a.stays_inside is not None and f"inside:{a.stays_inside}" in b.resources and b.agent != a.agent
            if inside and i in nxt and nxt[i] < j:
                # The robot stays inside after ``a``: ``b`` waits until its next step took it out.
                dep = steps[nxt[i]].id
            elif a.agent == b.agent or a.resources & b.resources or inside:
                dep = a.id
            else:
                continue
            if dep not in after[b.id]:
                after[b.id].append(dep)
    after = _reduce(steps, after)
    start, makespan = _longest_path(steps, after)
    return Schedule(after, start, makespan, "sequential")


def _topological(steps: Sequence[ProtoStep], after: dict[str, list[str]], key: list[int]) -> list[ProtoStep] | None:
    """Steps in an order where each comes after its dependencies (earliest start first), or None."""
    pending = {s.id: set(after[s.id]) for s in steps}
    rank = {s.id: (key[i], i) for i, s in enumerate(steps)}
    by_id = {s.id: s for s in steps}
    out: list[ProtoStep] = []
    while pending:
        ready = [k for k, deps in pending.items() if not deps]
        if not ready:
            return None
        k = min(ready, key=rank.__getitem__)
        out.append(by_id[k])
        del pending[k]
        for deps in pending.values():
            deps.discard(k)
    return out


def _reduce(steps: Sequence[ProtoStep], after: dict[str, list[str]]) -> dict[str, list[str]]:
    """Drop dependencies already implied by others (a person reads fewer arrows)."""
    anc = _ancestors(steps, after)
    out: dict[str, list[str]] = {}
    for s in steps:
        direct = after[s.id]
        keep = [d for d in direct if not any(d in anc[o] for o in direct if o != d)]
        out[s.id] = sorted(set(keep), key=[x.id for x in steps].index)
    return out


def schedule(steps: Sequence[ProtoStep], time_limit_s: float = 2.0) -> Schedule:
    """Minimise the makespan with CP-SAT; fall back to :func:`sequential`. Never raises."""
    if not steps:
        return Schedule({}, {}, 0.0, "empty")
    try:
        from ortools.sat.python import cp_model
    except ImportError:  # pragma: no cover - ortools is a dependency; keep the planner working without it
        log.warning("ortools is not installed; steps are ordered as listed")
        return sequential(steps)
    index = {s.id: i for i, s in enumerate(steps)}
    dur = [max(1, round(s.duration_s / _TICK_S + 0.4999)) for s in steps]
    horizon = sum(dur) + 1
    m = cp_model.CpModel()
    start = [m.new_int_var(0, horizon, f"s{i}") for i in range(len(steps))]
    end = [m.new_int_var(0, horizon, f"e{i}") for i in range(len(steps))]
    iv = [m.new_interval_var(start[i], dur[i], end[i], f"i{i}") for i in range(len(steps))]
    for i, s in enumerate(steps):
        for d in s.after:
            if d in index:
                m.add(start[i] >= end[index[d]])
    for i, j in _pairs_to_order(steps):
        m.add(start[j] >= end[i])
    nxt = _next_of_agent(steps)
    by_resource: dict[str, list[tuple[int, Any, Any, cp_model.IntervalVar]]] = {}
    for i, s in enumerate(steps):
        for r in s.resources:
            if s.stays_inside is not None and r == f"inside:{s.stays_inside}":
                continue
            by_resource.setdefault(r, []).append((i, start[i], end[i], iv[i]))
        if s.stays_inside is not None:
            # Occupancy of the machine's inside: from this step's start to the robot's next step.
            occ_end = start[nxt[i]] if i in nxt else end[i]
            size = m.new_int_var(0, horizon, f"occ_size{i}")
            occ = m.new_interval_var(start[i], size, occ_end, f"occ{i}")
            by_resource.setdefault(f"inside:{s.stays_inside}", []).append((i, start[i], occ_end, occ))
    for group in by_resource.values():
        if len(group) < 2:
            continue
        if not any(exclusive(steps[a[0]], steps[b[0]]) for a, b in itertools.combinations(group, 2)):
            m.add_no_overlap([u[3] for u in group])
            continue
        # Steps of opposite branches may overlap (only one of them runs); any other pair may not.
        for (i, si, ei, _), (j, sj, ej, _) in itertools.combinations(group, 2):
            if exclusive(steps[i], steps[j]):
                continue
            first = m.new_bool_var(f"order_{i}_{j}")
            m.add(sj >= ei).only_enforce_if(first)
            m.add(si >= ej).only_enforce_if(~first)
    makespan = m.new_int_var(0, horizon, "makespan")
    m.add_max_equality(makespan, end)
    m.minimize(makespan * (len(steps) + 1) * horizon + sum(start))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    # (by default CP-SAT takes SIGINT for itself and puts it back to the default action after
    # each solve: a console or `atelier serve` would then die on Ctrl-C instead of stopping)
    solver.parameters.catch_sigint_signal = False
    status = solver.solve(m)
    if solver.status_name(status) not in ("OPTIMAL", "FEASIBLE"):
        log.warning("CP-SAT found no schedule (%s); steps are ordered as listed", solver.status_name(status))
        return sequential(steps)
    st = [solver.value(start[i]) for i in range(len(steps))]
    # Back to dependencies: agent order, then each resource in the solved order of starts.
    after = {s.id: [d for d in s.after if d in index] for s in steps}
    for i, j in _pairs_to_order(steps):
        if steps[j].agent == steps[i].agent:
            after[steps[j].id].append(steps[i].id)
    users: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        for r in s.resources | ({f"inside:{s.stays_inside}"} if s.stays_inside else set()):
            users.setdefault(r, []).append(i)
    for r, idx in users.items():
        idx.sort(key=lambda k: (st[k], k))
        for k, b in enumerate(idx):
            # Each user waits for the users of the resource before it, but for a step of the
            # opposite branch: the one before it in the solved order, or every one before it
            # that is not exclusive with it when branches share the resource (arrows implied
            # by others are dropped below).
            earlier = [a for a in idx[:k] if not exclusive(steps[a], steps[b])]
            for a in earlier[-1:] if all(not exclusive(steps[x], steps[b]) for x in idx[:k]) else earlier:
                sa = steps[a]
                if sa.stays_inside is not None and r == f"inside:{sa.stays_inside}" and a in nxt and nxt[a] != b:
                    # The robot leaves the machine with its next step: wait for that one instead.
                    after[steps[b].id].append(steps[nxt[a]].id)
                else:
                    after[steps[b].id].append(sa.id)
    after = {k: [d for d in v if d != k] for k, v in after.items()}
    ordered_steps = _topological(steps, after, [st[index[s.id]] for s in steps])
    if ordered_steps is None:  # pragma: no cover - defensive: the solver's order always has a topology
        return sequential(steps)
    after = _reduce(ordered_steps, after)
    start_s, makespan_s = _longest_path(ordered_steps, after)
    return Schedule(after, start_s, makespan_s, f"cp-sat ({solver.status_name(status).lower()})")

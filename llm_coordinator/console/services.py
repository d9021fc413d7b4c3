"""What the console shows and does, as one small port: :class:`ConsoleBackend`.

The console's pages and API talk to this port only. Its backends sit over the coordinator's
plan store, approval workflow, planner and audit log, and over the robots' safety supervisor
(e-stop latch); the console never keeps plans, approvals or audit records of its own. The
view models below are what the pages render and what the JSON API returns (they appear in the
OpenAPI document).

Live plant state reaches the browser through :class:`PlantFeed`: a producer on any thread (the
twin's listener, an agent's subscription) calls :meth:`PlantFeed.publish`; every subscriber (an
SSE stream) gets the newest snapshot, never a backlog.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from llm_coordinator.plan import ArgValue
from llm_coordinator.status import STAGES
from plant.config import PlantDescription
from robots.interface import SafetyState


class View(BaseModel):
    """Base of the console's view models: plain data, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- plant now


class MachineView(View):
    """A machine now: PackML state, counters, fault and door."""

    name: str
    kind: str
    state: str = Field(description="PackML state name, e.g. EXECUTE")
    cycle_count: int = 0
    part_count: int = 0
    fault_code: int = 0
    fault_text: str = ""
    door_closed: bool | None = None
    connected: bool = True
    alarms: list[str] = Field(
        default_factory=list,
        description="readings the tag map declares impossible (tag, raw value, range); only STOP and ABORT "
        "are sent to a machine in alarm",
    )


class RobotView(View):
    """A robot now: its skill, joints, tool position, safety state and e-stop latch."""

    name: str
    model: str
    skill: str | None = Field(default=None, description="skill being performed, None when idle")
    joints_rad: list[float]
    joint_speeds_rad_s: list[float] = Field(default_factory=list)
    tool_xyz_m: tuple[float, float, float]
    safety: SafetyState = "ok"
    estop: bool = Field(default=False, description="e-stop latched; only an operator can reset it")
    estop_reason: str = ""


class PersonView(View):
    """A person in the cell (from the twin's people or a site's tracking)."""

    name: str
    x_m: float
    y_m: float
    speed_m_s: float = 0.0


class PartView(View):
    """A part's position in the cell frame."""

    name: str
    xyz_m: tuple[float, float, float]


#: Where the console's plant is: ``twin``, its own in-process twin (nothing real moves), or
#: ``live``, a served plant (``atelier twin serve`` or a real one) over OPC-UA, Modbus and ROS 2.
PlantMode = Literal["twin", "live"]


class PlantView(View):
    """The plant at one instant as the console shows it; ``seq`` grows by one per published view."""

    seq: int = 0
    mode: PlantMode = Field(default="twin", description="twin: the console's own twin; live: a served plant")
    time_s: float = Field(description="plant (twin) clock, s")
    wall_s: float = Field(description="server wall clock when taken (time.time), s")
    machines: list[MachineView]
    robots: list[RobotView]
    people: list[PersonView] = Field(default_factory=list)
    parts: list[PartView] = Field(default_factory=list)


# --------------------------------------------------------------------------- plans


class StepView(View):
    """One step of a plan, placed in time (``start_s`` from the plan's start)."""

    id: str
    agent: str
    skill: str
    args: dict[str, ArgValue] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)
    hazardous: bool = False
    hazard_reason: str = ""
    start_s: float | None = Field(default=None, description="planned or rehearsed start; computed when None")
    duration_s: float | None = Field(default=None, description="expected or rehearsed duration, s")
    status: Literal["pending", "running", "done", "failed", "skipped"] = "pending"
    confirmation: Literal["not_needed", "awaiting", "confirmed", "refused"] = "not_needed"
    confirmed_by: str | None = None
    condition: str = Field(
        default="", description="when the step runs, decided as the plan runs ('only if CAMERA.result == fail')"
    )


class GuardrailView(View):
    """The result of one static rule on the plan."""

    rule: str
    passed: bool
    reason: str = ""


class InspectionView(View):
    """One part judged by an inspection machine's camera and vision model in the rehearsal."""

    image: str = Field(description="evidence file name: the camera's image beside its heat map")
    machine: str
    part: str
    passed: bool
    defect: str | None = None
    confidence: float
    labels: list[str] = Field(default_factory=list, description="what an operator may overrule the verdict to")
    overruled: str = Field(default="", description="the overrule recorded for it, if any")


class RehearsalView(View):
    """What the rehearsal in the twin showed."""

    ok: bool
    makespan_s: float | None = None
    collisions: list[str] = Field(default_factory=list)
    safety_stops: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list, description="file names of frames or video")
    risk: list[str] = Field(
        default_factory=list, description="the risk figures of rehearsals from perturbed starts, a line each"
    )
    risk_ok: bool = True
    inspections: list[InspectionView] = Field(default_factory=list)


class AuditView(View):
    """One record of the audit log."""

    seq: int
    time_s: float = Field(description="wall clock, s since the epoch")
    actor: str
    action: str
    subject: str = ""
    detail: str = ""
    hash: str = ""


class PlanSummary(View):
    """A plan in the queue."""

    id: str
    title: str
    state: str
    created_s: float
    created_by: str = ""
    makespan_s: float | None = None
    hazardous_steps: int = 0


class PlanDetail(PlanSummary):
    """A plan with everything a supervisor needs to decide."""

    work_order: str = ""
    recipe: str | None = None
    params: dict[str, ArgValue] = Field(default_factory=dict)
    plan_hash: str = ""
    steps: list[StepView] = Field(default_factory=list)
    guardrails: list[GuardrailView] = Field(default_factory=list)
    rehearsal: RehearsalView | None = None
    decision: str = Field(default="", description="who decided and why, once decided")
    audit: list[AuditView] = Field(default_factory=list)
    model: str = Field(default="", description="the model (and tuned version) that read the order, or who wrote it")


class ConfirmationView(View):
    """A hazardous step waiting for a robot operator's confirmation."""

    plan_id: str
    plan_title: str
    step_id: str
    agent: str
    skill: str
    args: dict[str, ArgValue] = Field(default_factory=dict)
    reason: str = ""


# --------------------------------------------------------------------------- work orders

#: A work order's state on the console: the coordinator's stages, then where its plan ended up.
JOB_STATES: tuple[str, ...] = (*STAGES, "awaiting_approval", "failed")


class WorkOrderRequest(View):
    """A work order: plain words, or a recipe with its parameters (one of the two)."""

    text: str = Field(default="", max_length=4000)
    recipe: str | None = None
    params: dict[str, int | float | str] = Field(default_factory=dict)


class JobView(View):
    """A work order being turned into a plan: its stage and what happened so far."""

    id: str
    state: str
    submitted_by: str
    submitted_s: float
    request: WorkOrderRequest
    messages: list[str] = Field(default_factory=list)
    plan_id: str | None = None
    error: str | None = None


class LiveStep(View):
    """One step of a plan as it runs."""

    id: str
    agent: str
    skill: str
    status: Literal["pending", "running", "done", "failed", "skipped"] = "pending"
    confirmation: Literal["not_needed", "awaiting", "confirmed", "refused"] = "not_needed"


class LivePlan(View):
    """Where a plan stands now: its state, the steps running, how far it got."""

    id: str
    title: str
    state: str
    reasons: list[str] = Field(default_factory=list, description="why it stopped or was turned down")
    current: list[LiveStep] = Field(default_factory=list, description="the steps running now")
    done: int = 0
    total: int = 0
    steps: list[LiveStep] = Field(default_factory=list, description="every step (only for the plan asked about)")


class Alarm(View):
    """Something wrong a person should see at once."""

    kind: Literal["machine", "estop", "safety", "plan"]
    subject: str
    text: str


class LiveView(View):
    """What the plan, plant and operator pages follow live: plans running or paused, one plan's
    steps when asked, and the alarms (machines in alarm or fault, e-stops, safety stops, plans
    paused or refused)."""

    plans: list[LivePlan] = Field(default_factory=list)
    plan: LivePlan | None = None
    alarms: list[Alarm] = Field(default_factory=list)


# --------------------------------------------------------------------------- the port


class ActionRefused(Exception):
    """The backend refused an action for a reason the person should read (wrong plan state,
    unknown step, stale plan hash...). ``status`` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 409) -> None:
        self.message, self.status = message, status
        super().__init__(message)


@runtime_checkable
class ConsoleBackend(Protocol):
    """Everything the console reads and does. Methods are coroutines and must not block the
    event loop (a backend over a synchronous store wraps its calls in ``asyncio.to_thread``).
    Actions raise :class:`ActionRefused` with a reason a person understands; each action
    writes its audit record (with ``actor``) in the coordinator's one audit log."""

    plant: PlantDescription
    feed: PlantFeed

    async def warm_up(self) -> None:
        """Ready what the first work order needs (the model, the rehearsal) while the console
        starts; never raises (what could not be readied, the first work order reports)."""

    async def list_plans(self) -> list[PlanSummary]:
        """Every plan, newest first."""

    async def get_plan(self, plan_id: str) -> PlanDetail | None:
        """A plan with its steps, guardrail results, rehearsal and audit trail; None if unknown."""

    async def evidence_file(self, plan_id: str, name: str) -> Path | None:
        """The file of one rehearsal evidence item (a frame or a video), or None."""

    async def approve(self, plan_id: str, actor: str, reason: str, plan_hash: str | None = None) -> None:
        """Approve a plan awaiting approval (bound to its current hash); refused
        (:class:`ActionRefused`) when ``plan_hash``, the version the supervisor saw, is not it."""

    async def reject(self, plan_id: str, actor: str, reason: str) -> None:
        """Reject a plan awaiting approval; ``reason`` goes back to the planner as feedback."""

    async def replan(self, plan_id: str, actor: str) -> JobView:
        """Draft the work order of a plan that was turned down (rejected by a supervisor or the
        rules, failed in rehearsal or in the plant, paused by an operator) again, with the
        reasons as feedback to the planner; returns at once, like a submitted work order."""

    async def pending_confirmations(self) -> list[ConfirmationView]:
        """Hazardous steps of approved or running plans that wait for an operator."""

    async def confirm_step(self, plan_id: str, step_id: str, actor: str, note: str) -> None:
        """An operator confirms a hazardous step may run."""

    async def refuse_step(self, plan_id: str, step_id: str, actor: str, reason: str) -> None:
        """An operator refuses a hazardous step, with a reason that becomes feedback for the next
        draft: a running plan stops and the plan becomes ``refused_by_operator`` (the supervisor
        sees the reason and may draft it again)."""

    async def recent_inspections(self, limit: int = 4) -> list[tuple[str, InspectionView]]:
        """The newest vision verdicts of rehearsals, newest plan first: (plan id, verdict)."""

    async def overrule_inspection(self, plan_id: str, image: str, actor: str, label: str, reason: str) -> None:
        """An operator or supervisor overrules a vision verdict of the plan's rehearsal with the
        right label (good, or a defect of the part's type): recorded in the audit log, and the
        camera's image kept as a labelled example for the next training."""

    async def trip_estop(self, robot: str | None, actor: str, reason: str) -> None:
        """Latch the e-stop of one robot, or of every robot when ``robot`` is None."""

    async def reset_estop(self, robot: str, actor: str, note: str) -> None:
        """Reset one robot's e-stop latch (the caller checked the operator role)."""

    async def submit_work_order(self, request: WorkOrderRequest, actor: str) -> JobView:
        """Start drafting, checking and rehearsing a plan for a work order; returns at once."""

    async def job(self, job_id: str) -> JobView | None:
        """A work order's progress, or None if unknown."""

    async def jobs(self) -> list[JobView]:
        """Recent work orders, newest first."""

    async def live(self, plan_id: str | None = None) -> LiveView:
        """Plans running or paused, ``plan_id``'s steps (if given and known), and the alarms."""

    async def audit(self, actor: str, action: str, subject: str = "", detail: str = "") -> None:
        """Append a record to the audit log (logins, logouts, refused requests)."""

    async def audit_tail(self, limit: int = 50) -> list[AuditView]:
        """The newest ``limit`` records of the audit log, newest first."""


@runtime_checkable
class EstopPort(Protocol):
    """The robots' e-stop latches as the console sees them (over ``robots.safety.EstopLatch``
    in the wiring). ``trip`` and ``reset`` block for a file write (milliseconds)."""

    def state(self, robot: str) -> tuple[bool, str]:
        """(latched, reason) of one robot's e-stop."""

    def trip(self, robot: str, reason: str, source: str) -> None:
        """Latch; idempotent (the first reason stays)."""

    def reset(self, robot: str, operator: str) -> None:
        """Clear the latch: the operator's path only (the console checks the role first)."""


# --------------------------------------------------------------------------- the live feed


class PlantFeed:
    """Latest-value broadcast of :class:`PlantView` from any thread to asyncio subscribers.

    :meth:`publish` never blocks and may be called from any thread (the twin's own, an agent's
    loop). Subscribers are async iterators that yield the newest snapshot each time it changes;
    a slow subscriber skips snapshots rather than queueing them.

    ``mode`` says where the plant is (every page shows it, and every view carries it);
    ``source`` says it in words (the plant's endpoints, or that it is the console's own twin).
    """

    def __init__(self, mode: PlantMode = "twin", source: str = "") -> None:
        self.mode: PlantMode = mode
        self.source = source
        self._lock = threading.Lock()
        self._latest: PlantView | None = None
        self._seq = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def latest(self) -> PlantView | None:
        """The newest snapshot, or None before the first."""
        return self._latest

    def publish(self, snapshot: PlantView) -> PlantView:
        """Make ``snapshot`` the newest (its ``seq`` is set here) and wake every subscriber."""
        with self._lock:
            self._seq += 1
            snap = snapshot.model_copy(update={"seq": self._seq, "mode": self.mode})
            self._latest = snap
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed; its subscriber is gone
                with self._lock:
                    self._waiters.discard((loop, ev))
        return snap

    async def subscribe(self, min_interval_s: float = 0.0) -> AsyncIterator[PlantView]:
        """Yield the newest snapshot now (if any) and after every change, at most once per
        ``min_interval_s``."""
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        key = (loop, ev)
        with self._lock:
            self._waiters.add(key)
        try:
            last_seq = -1
            while True:
                snap = self._latest
                if snap is not None and snap.seq != last_seq:
                    last_seq = snap.seq
                    yield snap
                    if min_interval_s > 0:
                        await asyncio.sleep(min_interval_s)
                    continue
                ev.clear()
                if self._latest is not None and self._latest.seq != last_seq:
                    continue
                await ev.wait()
        finally:
            with self._lock:
                self._waiters.discard(key)


def now_s() -> float:
    """Wall-clock seconds since the epoch (one place, so tests may patch it)."""
    return time.time()


def format_args(args: Mapping[str, Any]) -> str:
    """``key=value`` pairs for a one-line display of skill arguments."""
    return ", ".join(f"{k}={v}" for k, v in args.items())

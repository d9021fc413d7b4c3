"""The executor: runs an approved plan on the agents, step by step, and remembers where it is.

It talks to agents through interfaces only: :class:`~plant.interface.MachineAgent` for
machines (the twin in-process, the twin's OPC-UA or Modbus server, or a real PLC) and
:class:`~robots.interface.RobotAgent` for robots (in-process runtime or ROS 2). The same code
runs the rehearsal in the twin and the live run.

- :class:`PlanRunner` runs a plan over a :class:`Progress` port and authorizes nothing. Stored
  plans run through :class:`Executor`, which runs nothing without an
  :class:`~llm_coordinator.approval.Authorization` for the exact plan and keeps progress in the
  store (:class:`StoreProgress`); a rehearsal runs the runner in the twin over
  :class:`MemoryProgress`.
- A step starts when every step it waits for is done; independent steps run concurrently.
- Each step's status is recorded in the progress before the next decision, so a coordinator
  killed mid-plan and restarted resumes after the last finished step. A step caught in flight
  is checked before it is repeated: a machine cycle whose counter advanced counts as done.
- A resumed run first reads every machine again (the plant went on, or restarted, while nobody
  watched). A door that is not as the plan's finished steps left it is moved back, when that
  move is one of the plan's own without a confirmation; anything else that changed (a machine
  aborted, faulted, in alarm or unreachable; a door whose move needs a confirmation) pauses the
  plan with the reason and drafts a recovery plan, which goes through approval. Goal ids are new in every
  run, so no result of a goal sent before the restart can finish a step.
- Machine skills become PackML commands and waits (open_door, close_door, reset, run_cycle,
  feed, inspect); robot skills go to :meth:`RobotAgent.run_skill`. Every outcome is checked.
- On a failure no new step starts; running steps finish; the plan is paused and a recovery
  draft is handed to ``on_failure`` (which sends it through guardrails, rehearsal, approval).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, Unpack

from llm_coordinator._geometry import step_location
from llm_coordinator.approval import ApprovalGate
from llm_coordinator.guardrails import DOOR_SKILLS, NEEDS_RESET
from llm_coordinator.plan import Decision, Plan, Step
from llm_coordinator.recovery import recovery_plan
from llm_coordinator.snapshot import MachineSnapshot, PlantSnapshot, RobotSnapshot, read_snapshot
from llm_coordinator.store import Store
from plant.commands import CommandFailed, machine_commands, perform
from plant.config import Machine, PlantDescription
from plant.interface import MachineAgent, MachineError
from robots.interface import Outcome, RobotAgent, SkillGoal

#: How often a door position is polled (s): doors take about a second to move.
DOOR_POLL_S = 0.05
#: Progress key of a decision's outcome (step ids never contain a colon).
DECISION_KEY = "decision:"
#: Progress key of a door moved again on resume: ``resume:<machine>:<skill>``.
RESUME_KEY = "resume:"
#: Shortest time budget of any step (s): covers network round trips and acting states.
MIN_STEP_TIMEOUT_S = 30.0


class StepFailed(Exception):
    """A step did not achieve its purpose; the message says why, for a person."""


@dataclass
class StepRecord:
    """How one step went in this run."""

    step: str
    agent: str
    skill: str
    status: str
    start_s: float
    end_s: float
    detail: str = ""


@dataclass
class ExecutionReport:
    """The end of a run: ``done``, ``paused`` (a step failed), or ``refused`` (not authorized)."""

    plan_id: int
    status: str
    records: list[StepRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed_step: str | None = None
    reason: str = ""
    recovery_plan_id: int | None = None
    makespan_s: float = 0.0
    #: Each decision's outcome (a step on the branch not taken is not run).
    decisions: dict[str, bool] = field(default_factory=dict)


RecoveryHook = Callable[[int, Plan, PlantSnapshot], Awaitable[int | None]]


class RunOptions(TypedDict, total=False):
    """How a :class:`PlanRunner` runs; the defaults are its constructor's."""

    timeout_margin: float
    on_failure: RecoveryHook | None
    clock: Callable[[], float]
    forced: Mapping[str, bool]


async def run_machine_skill(agent: MachineAgent, machine: Machine, step: Step, timeout_s: float) -> str:
    """Carry out a machine step (a standard PackML command, a built-in one or one the plant file
    declares; :func:`plant.commands.perform`); return a detail, raise :class:`StepFailed`."""
    try:
        return await perform(agent, machine, step.skill, step.args, timeout_s)
    except CommandFailed as exc:
        raise StepFailed(str(exc)) from None


class Progress(Protocol):
    """Where one run of one plan version stands: read when a run starts, written after every step.

    The executor's only memory. :class:`StoreProgress` keeps it in the store (a restart resumes
    without repeating a finished step); :class:`MemoryProgress` keeps it for one rehearsal.
    """

    #: The plan this progress belongs to (names robot goals, is given to the recovery hook).
    plan_id: int

    def load(self) -> dict[str, str]:
        """Step id -> ``running``, ``done``, ``failed`` or ``skipped``, as last recorded; and
        ``decision:<id>`` -> ``true`` or ``false`` for each decision taken."""

    def detail(self, step_id: str) -> str:
        """The detail recorded with a step's latest status ("" if none)."""

    def mark(self, step_id: str, status: str, detail: str = "") -> None:
        """Record a step's status; it is kept before the executor decides anything else."""

    def finish(self, report: ExecutionReport) -> None:
        """The run ended ``done`` or ``paused`` (see ``report``)."""


@dataclass
class MemoryProgress:
    """Progress in memory: a rehearsal records nothing that outlives it."""

    plan_id: int = 0
    steps: dict[str, tuple[str, str]] = field(default_factory=dict)

    def load(self) -> dict[str, str]:
        return {sid: st for sid, (st, _) in self.steps.items()}

    def detail(self, step_id: str) -> str:
        return self.steps.get(step_id, ("", ""))[1]

    def mark(self, step_id: str, status: str, detail: str = "") -> None:
        self.steps[step_id] = (status, detail)

    def finish(self, report: ExecutionReport) -> None:
        pass


@dataclass
class StoreProgress:
    """Progress of one stored plan version: step rows, the plan's status, feedback, all audited."""

    store: Store
    plan_id: int
    content_hash: str
    actor: str = "executor"

    def load(self) -> dict[str, str]:
        return self.store.progress(self.plan_id, self.content_hash)

    def detail(self, step_id: str) -> str:
        return self.store.progress_detail(self.plan_id, self.content_hash, step_id)

    def mark(self, step_id: str, status: str, detail: str = "") -> None:
        self.store.set_progress(self.plan_id, self.content_hash, step_id, status, detail)

    def finish(self, report: ExecutionReport) -> None:
        current = self.store.get(self.plan_id).status
        if current != "running":
            # Paused by someone else (an e-stop, an operator) while the last steps ran: the plan
            # keeps the status they gave it, and the record says how the run itself ended.
            how = {"run": report.status, "failed_step": report.failed_step, "reason": report.reason[:300]}
            self.store.audit(self.actor, f"run_ended_while_{current}", self.plan_id, how)
            return
        if report.status == "done":
            self.store.set_status(self.plan_id, "done", actor=self.actor)
            self.store.add_feedback(self.plan_id, "outcome", f"done in {report.makespan_s:.1f} s")
            return
        why = f"step {report.failed_step} failed: {report.reason}"
        self.store.set_status(self.plan_id, "paused", actor=self.actor, reasons=[why])
        self.store.add_feedback(self.plan_id, "failure", why)


@dataclass
class _GatedProgress(StoreProgress):
    """A live run's progress that asks the gate again right before each step starts: an
    operator's confirmation that expired while earlier steps ran does not let its step start."""

    gate: ApprovalGate | None = None
    plan: Plan | None = None

    def mark(self, step_id: str, status: str, detail: str = "") -> None:
        if status == "running" and self.gate is not None and self.plan is not None:
            problem = self.gate.check_step(self.plan_id, self.plan, step_id)
            if problem:
                raise StepFailed(f"not started: {problem}")
        super().mark(step_id, status, detail)


def _unfit(ms: MachineSnapshot) -> str:
    """Why a machine cannot take its next command as it is ("" if it can)."""
    if not ms.reachable:
        return "unreachable"
    if ms.fault_code:
        return f"{ms.state} with fault {ms.fault_code}"
    if ms.alarms:
        return f"in alarm ({ms.alarms[0]})"
    # Stopped is where a machine powers up; the commands reset it themselves (PackML).
    return ms.state if ms.state in NEEDS_RESET and ms.state != "STOPPED" else ""


class PlanRunner:
    """Runs a plan on agents over a :class:`Progress`, authorizing nothing (see the module
    docstring). ``on_failure`` (none in rehearsal) gets a recovery draft when a step fails;
    ``clock`` times steps: the wall clock live, the twin's clock in rehearsal."""

    def __init__(
        self,
        plant: PlantDescription,
        machines: Mapping[str, MachineAgent],
        robots: Mapping[str, RobotAgent],
        *,
        timeout_margin: float = 4.0,
        on_failure: RecoveryHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        forced: Mapping[str, bool] | None = None,
    ) -> None:
        self.plant = plant
        #: Decisions taken as given instead of read (a rehearsal of the branch a twin would not take).
        self.forced: dict[str, bool] = dict(forced or {})
        self.machines, self.robots = dict(machines), dict(robots)
        self.timeout_margin, self.on_failure, self.clock = timeout_margin, on_failure, clock

    def _counts_cycles(self, step: Step) -> bool:
        machine = self.plant.machines.get(step.agent)
        if step.agent not in self.machines or machine is None or "cycle_count" not in machine.tags:
            return False
        spec = machine_commands(machine).get(step.skill)
        return spec is not None and spec.completes == "cycle"

    async def _settled_in_flight(self, progress: Progress, step: Step) -> bool:
        """Whether a step caught in flight by a crash had in fact finished (machine cycles only)."""
        if not self._counts_cycles(step):
            return False
        try:
            before = int(json.loads(progress.detail(step.id)).get("cycle_count_before", -1))
        except (ValueError, AttributeError):
            return False
        st = await self.machines[step.agent].status()
        return before >= 0 and st.cycle_count > before

    async def execute(self, plan: Plan, progress: Progress) -> ExecutionReport:
        """Run ``plan`` from where ``progress`` stands; return a report (``done`` or ``paused``).

        Blocks until no step runs. Cancelling it cancels the running steps; ``progress`` then
        says which finished. A step whose decisions (``Step.when``) came out otherwise is
        skipped; skipped steps count as ended for the steps that wait for them.
        """
        report = ExecutionReport(progress.plan_id, "running")
        recorded = progress.load()
        done: set[str] = {sid for sid, st in recorded.items() if st == "done"}
        not_taken: set[str] = {sid for sid, st in recorded.items() if st == "skipped"}
        decided: dict[str, bool] = {
            sid.removeprefix(DECISION_KEY): st == "true" for sid, st in recorded.items() if sid.startswith(DECISION_KEY)
        }
        ids = {s.id for s in plan.steps}
        for sid, st in recorded.items():
            if st == "running" and sid in ids and await self._settled_in_flight(progress, plan.step(sid)):
                progress.mark(sid, "done", "finished while the coordinator was down")
                done.add(sid)
        report.skipped = [s.id for s in plan.steps if s.id in done]
        t0 = self.clock()
        failed: tuple[str, str] | None = None
        if recorded:  # a resumed run: the plant may have changed while nobody watched
            failed = await self._recheck(plan, progress, done, not_taken)
        running: dict[str, asyncio.Task[str]] = {}
        started: dict[str, float] = {}
        pending = [s for s in plan.steps if s.id not in done and s.id not in not_taken]
        try:
            while pending or running:
                progressed = failed is None
                while progressed and failed is None:
                    progressed = False
                    for s in list(pending):
                        ended = done | not_taken
                        if not all(d in ended for d in s.after):
                            continue
                        if s.when:
                            try:
                                why_not = await self._why_not(plan, s, decided, ended, progress)
                            except StepFailed as exc:
                                failed = (s.id, str(exc))
                                break
                            if why_not is None:
                                continue  # a decision it needs cannot be taken yet
                            if why_not:
                                pending.remove(s)
                                not_taken.add(s.id)
                                now = self.clock() - t0
                                report.records.append(StepRecord(s.id, s.agent, s.skill, "skipped", now, now, why_not))
                                progress.mark(s.id, "skipped", why_not)
                                progressed = True
                                continue
                        if self._blocked(s, running, plan):
                            continue
                        pending.remove(s)
                        running[s.id] = asyncio.create_task(self._start(progress, s))
                        started[s.id] = self.clock() - t0
                        progressed = True
                if not running:
                    if failed is None and pending:
                        failed = (pending[0].id, "its dependencies can never finish")
                    break
                finished, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for sid, task in list(running.items()):
                    if task not in finished:
                        continue
                    del running[sid]
                    step = plan.step(sid)
                    try:
                        status, detail = "done", task.result()
                        done.add(sid)
                    except StepFailed as exc:
                        status, detail = "failed", str(exc)
                        failed = failed or (sid, detail)
                    report.records.append(
                        StepRecord(sid, step.agent, step.skill, status, started[sid], self.clock() - t0, detail)
                    )
                    progress.mark(sid, status, detail)
        except asyncio.CancelledError:
            for task in running.values():
                task.cancel()
            raise
        report.makespan_s = self.clock() - t0
        report.status = "done"
        report.decisions = dict(decided)
        if failed is not None:
            report.status, report.failed_step, report.reason = "paused", failed[0], failed[1]
        progress.finish(report)
        if failed is not None and self.on_failure is not None:
            snapshot = await self._snapshot(plan, done)
            draft = recovery_plan(self.plant, plan, done | not_taken, failed[0], failed[1], snapshot)
            report.recovery_plan_id = await self.on_failure(progress.plan_id, draft, snapshot)
        return report

    async def _recheck(
        self, plan: Plan, progress: Progress, done: set[str], not_taken: set[str]
    ) -> tuple[str, str] | None:
        """Before resuming: read every machine again. A machine the rest of the plan uses that
        cannot take a command as it is, is returned as (its next step, reason), which pauses the
        plan. A door that is not as the plan's finished steps left it is moved back when the plan
        itself makes that move without a confirmation (recorded under :data:`RESUME_KEY`);
        otherwise that pauses the plan too."""
        snap = await read_snapshot(self.machines)
        ended = done | not_taken
        first_use: dict[str, Step] = {}
        for step in plan.steps:
            if step.id not in ended and step.agent in snap.machines:
                first_use.setdefault(step.agent, step)
        for name, step in first_use.items():
            unfit = _unfit(snap.machines[name]) if step.skill != "reset" else ""
            if unfit:
                return step.id, f"on resume: {name} is {unfit}, not as the plan left it"
        left: dict[str, Step] = {}  # each machine's last finished door move
        for step in plan.steps:
            if step.id in done and step.skill in DOOR_SKILLS and step.agent in snap.machines:
                left[step.agent] = step
        for name, moved in left.items():
            want_closed = moved.skill == "close_door"
            if snap.machines[name].door_closed is want_closed:
                continue
            why = f"the plan left {name}'s door {'closed' if want_closed else 'open'} ({moved.id}) and it is not"
            nxt = first_use.get(name) or next((s for s in plan.steps if s.id not in ended), moved)
            if moved.hazardous:
                return nxt.id, f"on resume: {why}; moving it again needs an operator's confirmation"
            key = f"{RESUME_KEY}{name}:{moved.skill}"
            progress.mark(key, "running", f"on resume: {why}")
            try:
                detail = await run_machine_skill(
                    self.machines[name], self.plant.machines[name], moved, MIN_STEP_TIMEOUT_S
                )
            except StepFailed as exc:
                progress.mark(key, "failed", str(exc))
                return nxt.id, f"on resume: {why}; {moved.skill} again failed: {exc}"
            progress.mark(key, "done", f"on resume: {why}: {detail}")
        return None

    async def _why_not(
        self, plan: Plan, step: Step, decided: dict[str, bool], ended: set[str], progress: Progress
    ) -> str | None:
        """Why ``step`` does not run ("" if it runs), or None while a decision it needs waits for
        steps that have not ended. Takes (and records) each decision once."""
        for did, want in step.when.items():
            if did not in decided:
                d = plan.decision(did)
                if not all(a in ended for a in d.after) or not all(r in decided for r in d.requires):
                    return None
                decided[did], detail = await self._decide(d, decided)
                progress.mark(DECISION_KEY + did, "true" if decided[did] else "false", detail)
            if decided[did] != want:
                d = plan.decision(did)
                return f"not taken: {d.condition.describe()} is {str(decided[did]).lower()}"
        return ""

    async def _decide(self, d: Decision, decided: Mapping[str, bool]) -> tuple[bool, str]:
        if d.id in self.forced:
            return self.forced[d.id], f"forced {self.forced[d.id]} for this rehearsal"
        unmet = [r for r, want in d.requires.items() if decided.get(r) != want]
        if unmet:
            return False, f"not needed: decision {unmet[0]} came out {str(decided.get(unmet[0])).lower()}"
        c = d.condition
        agent = self.machines.get(c.machine)
        if agent is None:
            raise StepFailed(f"decision {d.id}: no machine {c.machine!r} is connected to read {c.tag}")
        try:
            value = await agent.read(c.tag)
        except (MachineError, TimeoutError, OSError) as exc:
            raise StepFailed(f"decision {d.id}: reading {c.machine}.{c.tag} failed: {exc}") from None
        outcome = c.holds(value)
        return outcome, json.dumps(
            {
                "read": value if isinstance(value, int | float | bool) else str(value)[:80],
                "condition": c.describe(),
                "outcome": outcome,
            }
        )

    def _blocked(self, step: Step, running: Mapping[str, asyncio.Task[str]], plan: Plan) -> bool:
        """An agent does one thing at a time, whatever the plan's arrows say."""
        busy = {plan.step(sid).agent for sid in running}
        return step.agent in busy or (step.skill == "hand_over" and step.args.get("to_robot") in busy)

    async def _start(self, progress: Progress, step: Step) -> str:
        timeout_s = max(MIN_STEP_TIMEOUT_S, self.timeout_margin * step.expected_duration_s)
        try:
            if self._counts_cycles(step):
                # Kept so that a restart can tell a cycle that finished while nobody watched.
                st = await self.machines[step.agent].status()
                progress.mark(step.id, "running", json.dumps({"cycle_count_before": st.cycle_count}))
            else:
                progress.mark(step.id, "running")
            if step.agent in self.machines:
                if step.agent not in self.plant.machines:
                    raise StepFailed(f"{step.agent} is no machine of plant {self.plant.name}")
                return await run_machine_skill(
                    self.machines[step.agent], self.plant.machines[step.agent], step, timeout_s
                )
            if step.agent not in self.robots:
                raise StepFailed(f"no agent {step.agent!r} is connected")
            # A hand-over goes to the giver's agent, which also has the receiver take the part
            # (the plan's step occupies both robots, so nothing else runs on either meanwhile).
            # The goal id is new in every run and unpredictable (a random part): no result latched
            # before, or forged by someone who guessed it, can answer it. The plan hash and the
            # step are signed with the goal over ROS 2.
            goal = SkillGoal(
                goal_id=f"plan{progress.plan_id}:{step.id}:{secrets.token_hex(8)}",
                robot=step.agent,
                skill=step.skill,
                args=dict(step.args),
                plan_hash=str(getattr(progress, "content_hash", "")),  # the stored plan's (none in rehearsal)
                step_id=step.id,
            )
            result = await self.robots[step.agent].run_skill(goal, timeout_s=timeout_s)
        except (MachineError, TimeoutError, OSError) as exc:
            raise StepFailed(f"{step.agent} {step.skill}: {type(exc).__name__}: {exc}") from None
        if result.goal_id != goal.goal_id:  # only the result of the goal sent in this run counts
            raise StepFailed(f"{step.agent} {step.skill}: a result for goal {result.goal_id}, not {goal.goal_id}")
        if result.outcome != Outcome.SUCCEEDED:
            raise StepFailed(
                f"{step.agent} {step.skill}: {result.outcome.value}: {result.reason} (goal {goal.goal_id})"
            )
        return f"{result.outcome.value} in {result.duration_s:.1f} s (goal {goal.goal_id})"

    async def _snapshot(self, plan: Plan, done: set[str]) -> PlantSnapshot:
        snap = await read_snapshot(self.machines)
        robots: dict[str, RobotSnapshot] = {}
        for s in plan.steps:
            if s.id in done and s.agent in self.plant.robots:
                robots[s.agent] = RobotSnapshot(at=step_location(self.plant, s.skill, s.args))
        return PlantSnapshot(machines=snap.machines, robots=robots, alarms=snap.alarms)


class Executor:
    """Runs (or resumes) approved stored plans: the approval gate in front of a :class:`PlanRunner`
    over the store's progress. Deny unless approved, after pydantic-ai's ``approval_required``."""

    def __init__(
        self,
        plant: PlantDescription,
        store: Store,
        gate: ApprovalGate,
        machines: Mapping[str, MachineAgent],
        robots: Mapping[str, RobotAgent],
        **options: Unpack[RunOptions],
    ) -> None:
        self.store, self.gate = store, gate
        self.runner = PlanRunner(plant, machines, robots, **options)

    async def run(self, plan_id: int, *, actor: str = "executor") -> ExecutionReport:
        """Run (or resume) stored plan ``plan_id``. Raises
        :class:`~llm_coordinator.approval.NotApproved` when the plan is not authorized (nothing
        moves then); otherwise returns a report."""
        plan = self.store.plan(plan_id)
        if plan is None:
            return ExecutionReport(plan_id, "refused", reason="the plan has no steps stored")
        auth = self.gate.authorize(plan_id, plan)
        self.store.mark_approval_used(auth.approval_id)
        if self.store.get(plan_id).status != "running":
            self.store.set_status(plan_id, "running", actor=actor)
        else:
            self.store.audit(actor, "resumed", plan_id, {"content_hash": auth.content_hash})
        progress = _GatedProgress(self.store, plan_id, auth.content_hash, actor, gate=self.gate, plan=plan)
        return await self.runner.execute(plan, progress)

"""The executor's robot goals (issue 12): a goal id nobody can predict and no run reuses, the plan
and step it carries out, and only the result of the goal sent counts."""

from __future__ import annotations

from pathlib import Path

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.executor import Executor, MemoryProgress, PlanRunner
from llm_coordinator.plan import Plan, Step
from llm_coordinator.store import Store
from llm_coordinator.testing import FakeRobot
from plant.config import PlantDescription
from robots.interface import Outcome, SkillGoal, SkillResult

PLAN = Plan(work_order="home", mode="direct", steps=[Step(id="home_1", agent="ur5e_1", skill="home")])


async def test_goal_ids_are_new_every_run_and_carry_plan_and_step(demo_plant: PlantDescription) -> None:
    robot = FakeRobot("ur5e_1")
    for _ in range(2):
        report = await PlanRunner(demo_plant, {}, {"ur5e_1": robot}).execute(PLAN, MemoryProgress(27))
        assert report.status == "done", report.reason
    first, second = robot.goals
    assert first.goal_id != second.goal_id
    for goal in robot.goals:
        plan, step, nonce = goal.goal_id.split(":")
        assert (plan, step, goal.step_id) == ("plan27", "home_1", "home_1")
        assert len(nonce) == 16 and int(nonce, 16) >= 0  # 64 random bits
    assert report.records[0].detail.endswith(f"(goal {second.goal_id})")  # what it sent, recorded


async def test_the_stored_plan_hash_goes_with_the_goal(demo_plant: PlantDescription, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'plans.db'}", trust_dir=tmp_path / "trust")
    pid = store.create(PLAN.work_order, "direct")
    store.add_version(pid, PLAN, [])
    store.add_rehearsal(pid, PLAN.content_hash(), True, 1.0, {}, [])
    store.set_status(pid, "rehearsed", actor="test")
    store.set_status(pid, "awaiting_approval", actor="test")
    gate = ApprovalGate(store, demo_plant)
    gate.approve(pid, "sam")
    robot = FakeRobot("ur5e_1")
    report = await Executor(demo_plant, store, gate, {}, {"ur5e_1": robot}).run(pid)
    assert report.status == "done", report.reason
    assert robot.goals[0].plan_hash == PLAN.content_hash()
    store.engine.dispose()


class _Forged(FakeRobot):
    """An agent answering with the latched result of another goal (a forged or an old one)."""

    async def run_skill(self, goal: SkillGoal, timeout_s: float = 60.0) -> SkillResult:
        self.goals.append(goal)
        return SkillResult("plan27:home_1", Outcome.SUCCEEDED)


async def test_a_result_for_another_goal_does_not_finish_the_step(demo_plant: PlantDescription) -> None:
    progress = MemoryProgress(27)
    report = await PlanRunner(demo_plant, {}, {"ur5e_1": _Forged("ur5e_1")}).execute(PLAN, progress)
    assert report.status == "paused" and report.failed_step == "home_1"
    assert "a result for goal plan27:home_1, not plan27:home_1:" in report.reason
    assert progress.load() == {"home_1": "failed"}

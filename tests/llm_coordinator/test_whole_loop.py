"""The whole loop: work order in, plan, guardrails, rehearsal in the twin, approval, execution.

- ``test_whole_loop_in_process``: the real embedded model, rehearsal in the in-process twin,
  and execution on a second in-process twin standing in for the plant (agents of ``sim``).
- ``test_whole_loop_over_the_protocols``: the acceptance test of issue 6. Same loop, with the
  twin served live over OPC-UA, Modbus TCP and ROS 2 (the robot runtime in a process of its
  own) and the executor talking to it through the real protocol agents
  (:func:`llm_coordinator.wiring.live_agents`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_coordinator import wiring
from llm_coordinator.approval import ApprovalGate
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.executor import Executor
from llm_coordinator.interface import LLMBackend
from llm_coordinator.planner import Planner
from llm_coordinator.rehearsal import Rehearser
from llm_coordinator.store import Store
from plant.config import PlantDescription
from plant.packml import State
from plant.testing import on_free_ports

ROOT = Path(__file__).resolve().parents[2]

os.environ.setdefault("MUJOCO_GL", "egl")

ORDER = "Home ur5e_1"


@pytest.mark.slow
async def test_whole_loop_in_process(
    demo_plant: PlantDescription, llama: LLMBackend, store: Store, tmp_path: Path
) -> None:
    planner = Planner(demo_plant, llama, CoordinatorConfig())
    gate = ApprovalGate(store, demo_plant)
    co = Coordinator(demo_plant, store, planner, gate, Rehearser(demo_plant, wiring.twin_factory()), tmp_path)
    sub = await co.submit(ORDER)
    assert sub.status == "awaiting_approval", sub.reasons
    assert sub.rehearsal is not None and sub.rehearsal.ok
    plan = store.plan(sub.plan_id)
    assert plan is not None and [(s.agent, s.skill) for s in plan.steps] == [("ur5e_1", "home")]
    gate.approve(sub.plan_id, "sam (supervisor)")
    async with wiring.twin_factory()(demo_plant) as plant_twin:  # stands in for the live plant
        report = await Executor(demo_plant, store, gate, plant_twin.machines, plant_twin.robots).run(sub.plan_id)
    assert report.status == "done", report.reason
    assert [(r.step, r.status) for r in report.records] == [(plan.steps[0].id, "done")]
    assert store.get(sub.plan_id).status == "done"
    assert store.verify_audit().ok


def _start_runtime(robot: str, state_dir: Path, domain: int) -> subprocess.Popen[str]:
    """``atelier robot runtime`` in a process of its own, as on a robot's controller."""
    log_path = state_dir / f"{robot}.runtime.log"
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "llm_coordinator.cli_robot", "runtime", robot),
                *("--state-dir", str(state_dir), "--domain-id", str(domain)),
                # The twin and its drivers share this test's process with the embedded model
                # (its load holds the interpreter for a second or more) and the rehearsal, so
                # joint states pause now and then; the runtime's default 0.1 s would latch a
                # sensor fault that this test is not about. A real driver has its own process.
                *("--state-timeout-s", "5.0"),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    end = time.monotonic() + 120
    while "ready" not in log_path.read_text(encoding="utf-8"):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"runtime did not start: {log_path.read_text(encoding='utf-8')}")
        time.sleep(0.1)
    return proc


@pytest.fixture
def live_cell(
    demo_plant: PlantDescription, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PlantDescription, Any, Any]]:
    """The twin served live: machines on OPC-UA and Modbus TCP (free loopback ports), each robot
    as a ROS 2 driver node, and the UR5e's runtime in a process of its own (a ROS 2 domain of
    this test's own, so that other tests' robots do not answer)."""
    with warnings.catch_warnings():
        # rclpy's type support imports lark, which imports the deprecated sre_parse once.
        warnings.simplefilter("ignore", DeprecationWarning)
        import rosidl_generator_py  # noqa: F401

    from robots.ros2._host import RosHost
    from sim.live import LiveTwin
    from sim.robot_drivers import start_robot_drivers
    from sim.twin import Twin

    domain = 40 + os.getpid() % 50
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    plant = on_free_ports(demo_plant)
    host = RosHost(domain)
    live = LiveTwin(Twin(plant)).start()
    drivers = start_robot_drivers(live, host)
    # The robot's keys (as `atelier robot keys` makes them) in this test's state folder, which
    # the runtime and the coordinator's agents (through $ATELIER_STATE_DIR) both read.
    from robots.testing import make_robot_keys

    make_robot_keys(tmp_path, ["ur5e_1"])
    monkeypatch.setenv("ATELIER_STATE_DIR", str(tmp_path))
    runtime = _start_runtime("ur5e_1", tmp_path, domain)
    try:
        yield plant, live, host
    finally:
        runtime.terminate()
        try:
            runtime.wait(10)
        except subprocess.TimeoutExpired:
            runtime.kill()
        drivers.close()
        live.stop()
        host.close()


@pytest.mark.slow
async def test_whole_loop_over_the_protocols(
    live_cell: tuple[PlantDescription, Any, Any], llama: LLMBackend, store: Store, tmp_path: Path
) -> None:
    """Issue 6's acceptance test: the embedded model plans, the twin rehearses, a supervisor
    approves, and the executor runs the plan on the twin served over OPC-UA, Modbus and ROS 2."""
    from sim.serve import serve_plant

    plant, live, host = live_cell
    planner = Planner(plant, llama, CoordinatorConfig())
    gate = ApprovalGate(store, plant)
    co = Coordinator(plant, store, planner, gate, Rehearser(plant, wiring.twin_factory(render=False)), tmp_path)
    ids = []
    for order in (ORDER, "Reset the conveyor"):
        sub = await co.submit(order)
        assert sub.status == "awaiting_approval", (order, sub.reasons)
        gate.approve(sub.plan_id, "sam (supervisor)")
        ids.append(sub.plan_id)
    async with (
        serve_plant(live, plant),
        wiring.live_agents(plant, ros_host=host, robots=["ur5e_1"]) as (machines, robots),
    ):
        assert (await machines["conveyor_1"].status()).state == State.STOPPED
        for plan_id in ids:
            report = await Executor(plant, store, gate, machines, robots).run(plan_id)
            assert report.status == "done", report.reason
            assert store.get(plan_id).status == "done"
        # The reset went over Modbus TCP to the twin's PLC; the home over ROS 2 to the runtime.
        assert (await machines["conveyor_1"].status()).state == State.IDLE
    assert store.verify_audit().ok

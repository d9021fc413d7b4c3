"""Wiring: the composition root of the coordinator, the one module that builds backends and
imports ``sim``.

- :func:`build_coordinator`: store, model backend, planner, gate and rehearser from a
  :class:`~llm_coordinator.config.CoordinatorConfig`.
- :func:`build_executor`: the executor over given agents, with the configured time budgets and
  recovery (the CLI and the console both use it).
- :func:`live_agents`: the agents of a served plant (``atelier twin serve`` or a real one),
  over OPC-UA, Modbus TCP and ROS 2.

The twin's sessions (:func:`sim.session.twin_factory` for rehearsals,
:class:`sim.session.LiveTwinPlant` for a live twin in this process) live in ``sim``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from llm_coordinator.approval import ApprovalGate
from llm_coordinator.backends import make_backend
from llm_coordinator.config import CoordinatorConfig
from llm_coordinator.coordinator import Coordinator
from llm_coordinator.executor import Executor
from llm_coordinator.planner import Planner
from llm_coordinator.rehearsal import ManyRehearsals, ProcessRehearser, Rehearser
from llm_coordinator.store import Store
from llm_coordinator.tuning.feedback import StoreExamples
from plant.config import PlantDescription
from plant.interface import MachineAgent
from plant.trust import default_state_dir
from robots.interface import RobotAgent
from sim.session import LiveTwinPlant, twin_factory

__all__ = ["LiveTwinPlant", "ProcessRehearser", "build_coordinator", "build_executor", "live_agents", "twin_factory"]


def build_coordinator(
    plant: PlantDescription,
    config: CoordinatorConfig,
    *,
    evidence_dir: Path | str = "atelier_evidence",
    rehearse: bool = True,
    render: bool = True,
    isolated: bool = False,
) -> Coordinator:
    """Everything a command needs to plan: store, model, planner, gate, rehearsal in the twin
    (with frames as evidence when ``render``; in a worker process when ``isolated``, for a
    process that also runs live control loops)."""
    store = Store(config.database_url)
    backend = make_backend(config.model.backend)
    examples = StoreExamples(store, plant) if config.retrieval else None
    planner = Planner(plant, backend, config, examples=examples)
    gate = ApprovalGate(store, plant, ttl_s=config.approval_ttl_s, confirmation_ttl_s=config.confirmation_ttl_s)
    rehearser: Rehearser | None = None
    if rehearse and isolated:
        rehearser = ProcessRehearser(plant, twin_factory, config.step_timeout_margin, render=render)
    elif rehearse:
        rehearser = Rehearser(plant, twin_factory(render=render), config.step_timeout_margin)
    many = None
    if rehearse and config.rehearsals > 1:
        many = ManyRehearsals(
            plant,
            twin_factory,
            config.rehearsals,
            seed=config.rehearsal_seed,
            workers=config.rehearsal_workers,
            ray_address=config.ray_address,
            ray_temp_dir=default_state_dir() / "ray",
            timeout_margin=config.step_timeout_margin,
        )
    return Coordinator(plant, store, planner, gate, rehearser, evidence_dir, many)


def build_executor(
    coordinator: Coordinator,
    machines: Mapping[str, MachineAgent],
    robots: Mapping[str, RobotAgent],
    config: CoordinatorConfig,
) -> Executor:
    """The executor over these agents, as every command runs it: behind the approval gate of
    ``coordinator``, with the configured time budgets, and with recovery wired (a failed step
    pauses the plan and drafts a recovery plan, which goes through the rules, a rehearsal and
    an approval like any other plan)."""
    return Executor(
        coordinator.plant,
        coordinator.store,
        coordinator.gate,
        machines,
        robots,
        timeout_margin=config.step_timeout_margin,
        on_failure=coordinator.submit_recovery,
    )


#: Machine agent class per protocol of the plant description, imported when used.
MACHINE_AGENTS: dict[str, str] = {"opcua": "plant.opcua:OpcuaAgent", "modbus": "plant.modbus:ModbusAgent"}


@asynccontextmanager
async def live_agents(
    plant: PlantDescription, *, ros_host: Any = None, robots: Iterable[str] | None = None, ready_timeout_s: float = 30.0
) -> AsyncIterator[tuple[dict[str, MachineAgent], dict[str, RobotAgent]]]:
    """Agents of a live plant (the twin served by ``atelier twin serve``, or a real plant): each
    machine over its protocol at the endpoint of the plant description, each robot over ROS 2.

    ``robots`` limits the robots (default all; each needs its runtime running). Raises
    :class:`~plant.interface.ConnectError` if a machine cannot be reached and ``TimeoutError``
    if a robot's runtime does not listen within ``ready_timeout_s``. Disconnects on exit.
    """
    import importlib

    from robots.ros2._host import RosHost
    from robots.ros2.agent import RosRobotAgent

    machines: dict[str, MachineAgent] = {}
    for name, m in plant.machines.items():
        module, _, cls = MACHINE_AGENTS[m.protocol].partition(":")
        machines[name] = getattr(importlib.import_module(module), cls)(name, m)
    host = ros_host if ros_host is not None else RosHost()
    try:
        from llm_coordinator.inspection import vision_agents

        # An inspection machine with an outside camera: our camera and model judge its cycles.
        machines = vision_agents(plant, machines, host)
        for agent in machines.values():
            await agent.connect()
        robot_agents: dict[str, RobotAgent] = {}
        for r in robots if robots is not None else plant.robots:
            ros_agent = RosRobotAgent(host, r)
            if not await ros_agent.wait_ready(ready_timeout_s):
                raise TimeoutError(f"the runtime of {r} does not listen on ROS 2 (is it running?)")
            robot_agents[r] = ros_agent
        yield machines, robot_agents
    finally:
        for agent in machines.values():
            await agent.disconnect()
        if ros_host is None:
            host.close()

"""Gymnasium environments of the twin, registered under ``atelier/`` when this package is imported.

``import sim.envs`` (or ``gymnasium.make("sim.envs:atelier/Reach-UR5e-v0")``, which imports it)
makes these ids available:

- ``atelier/Reach-UR5e-v0``, ``atelier/Reach-Panda-v0``: bring the tool to a still goal;
- ``atelier/TrackConveyorPart-UR5e-v0``, ``atelier/TrackConveyorPart-Panda-v0``: close in on a
  part riding the conveyor, to the pre-grasp point above it.

Keyword arguments of ``gymnasium.make`` reach the environment: ``action_mode``
(``"tool_velocity"`` or ``"joint_velocity"``), ``config`` (:class:`TaskConfig`), ``plant_file``
and ``robot`` (which robot of which plant supplies the model and limits; default the demo cell).
"""

from __future__ import annotations

import gymnasium

from sim.envs.arm_tasks import ArmTaskEnv, ReachEnv, TrackConveyorPartEnv
from sim.envs.config import TaskConfig

__all__ = ["ENV_IDS", "ArmTaskEnv", "ReachEnv", "TaskConfig", "TrackConveyorPartEnv", "register_envs"]

_ROBOTS = {"UR5e": "ur5e", "Panda": "panda"}
_TASKS = {"Reach": "sim.envs.arm_tasks:ReachEnv", "TrackConveyorPart": "sim.envs.arm_tasks:TrackConveyorPartEnv"}

#: Every environment id this package registers.
ENV_IDS: tuple[str, ...] = tuple(f"atelier/{task}-{robot}-v0" for task in _TASKS for robot in _ROBOTS)


def register_envs() -> None:
    """Register every ``atelier/`` environment with Gymnasium (again is harmless)."""
    for task, entry_point in _TASKS.items():
        for label, model in _ROBOTS.items():
            env_id = f"atelier/{task}-{label}-v0"
            if env_id in gymnasium.registry:
                continue
            gymnasium.register(
                id=env_id,
                entry_point=entry_point,
                kwargs={"robot_model": model},
                disable_env_checker=True,  # the test suite runs check_env on every id
            )


register_envs()

"""Where the robot and gripper models come from: files shipped inside an installed package.

The models are robosuite 1.5.2's MJCF files with their meshes (MIT licence, see ``LICENCES``).
We locate the package's files without importing it, so none of its code runs here. Nothing is
ever downloaded: a missing package is a clear error at build time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path


class AssetError(RuntimeError):
    """A robot or tool model file is not installed."""


@dataclass(frozen=True)
class RobotAsset:
    file: str
    flange_body: str  # where the tool is attached


@dataclass(frozen=True)
class ToolAsset:
    file: str
    open_ctrl: tuple[float, ...]
    closed_ctrl: tuple[float, ...]
    grip_site: str = "grip_site"


ROBOT_ASSETS: dict[str, RobotAsset] = {
    "ur5e": RobotAsset("robots/ur5e/robot.xml", "right_hand"),
    "panda": RobotAsset("robots/panda/robot.xml", "right_hand"),
}
TOOL_ASSETS: dict[str, ToolAsset] = {
    "panda_hand": ToolAsset("grippers/panda_gripper.xml", (0.04, -0.04), (0.0, 0.0)),
    "robotiq_2f140": ToolAsset("grippers/robotiq_gripper_140.xml", (0.0, 0.0), (0.7, -0.7)),
    "rethink_gripper": ToolAsset("grippers/rethink_gripper.xml", (0.020833, -0.020833), (-0.0115, 0.0115)),
}

LICENCES = {
    "robosuite": "MIT, Copyright (c) 2022 Stanford Vision and Learning Lab and UT Robot "
    "Perception and Learning Lab; UR5e, Panda, Robotiq 2F-140, Panda hand and "
    "Rethink gripper models and meshes",
}


@cache
def asset_root() -> Path:
    """The folder of robosuite's model assets, found without importing robosuite."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            "the robot models are not installed: the 'robosuite' package (which carries the UR5e "
            "and Panda models) is missing; reinstall atelier with 'pip install -e .'"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "models" / "assets"
    if not root.is_dir():
        raise AssetError(f"robosuite is installed but has no model assets at {root}")
    return root


def robot_file(model: str) -> Path:
    return _existing(asset_root() / ROBOT_ASSETS[model].file)


def tool_file(model: str) -> Path:
    return _existing(asset_root() / TOOL_ASSETS[model].file)


def _existing(p: Path) -> Path:
    if not p.is_file():
        raise AssetError(f"model file missing from the installed package: {p}")
    return p

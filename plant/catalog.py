"""Static facts about the robot and tool models a plant may name.

These are the manufacturers' published figures, used to default and bound the limits in a
plant description. The MuJoCo models themselves live with the twin (``sim``), which maps each
name here to a model file shipped inside an installed package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class RobotModelSpec:
    """Published limits of an arm. Angles in rad, speeds in rad/s, reach in m."""

    dof: int
    joint_names: tuple[str, ...]
    joint_limits_rad: tuple[tuple[float, float], ...]
    max_joint_speed_rad_s: tuple[float, ...]
    max_joint_accel_rad_s2: tuple[float, ...]
    home_rad: tuple[float, ...]
    max_payload_kg: float
    reach_m: float
    footprint_radius_m: float
    maker: str
    licence: str


ROBOT_MODELS: dict[str, RobotModelSpec] = {
    # Universal Robots UR5e: every joint +-360 deg, 180 deg/s; 5 kg; 850 mm reach.
    "ur5e": RobotModelSpec(
        dof=6,
        joint_names=(
            "shoulder_pan_joint",
            "shoulder_lift_joint",
            "elbow_joint",
            "wrist_1_joint",
            "wrist_2_joint",
            "wrist_3_joint",
        ),
        joint_limits_rad=(
            (-TWO_PI, TWO_PI),
            (-TWO_PI, TWO_PI),
            (-math.pi, math.pi),
            (-TWO_PI, TWO_PI),
            (-TWO_PI, TWO_PI),
            (-TWO_PI, TWO_PI),
        ),
        max_joint_speed_rad_s=(math.pi,) * 6,
        # UR does not publish joint accelerations; 8 rad/s^2 is a conservative tending value.
        max_joint_accel_rad_s2=(8.0,) * 6,
        home_rad=(0.0, -math.pi / 2, math.pi / 2, -math.pi / 2, -math.pi / 2, 0.0),
        max_payload_kg=5.0,
        reach_m=0.85,
        footprint_radius_m=0.095,
        maker="Universal Robots",
        licence="MJCF and meshes from robosuite 1.5.2 (MIT), derived from UR's published CAD",
    ),
    # Franka Emika Panda: limits from Franka's FCI documentation.
    "panda": RobotModelSpec(
        dof=7,
        joint_names=("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "joint7"),
        joint_limits_rad=(
            (-2.8973, 2.8973),
            (-1.7628, 1.7628),
            (-2.8973, 2.8973),
            (-3.0718, -0.0698),
            (-2.8973, 2.8973),
            (-0.0175, 3.7525),
            (-2.8973, 2.8973),
        ),
        max_joint_speed_rad_s=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
        max_joint_accel_rad_s2=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
        home_rad=(0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785),
        max_payload_kg=3.0,
        reach_m=0.855,
        footprint_radius_m=0.11,
        maker="Franka Emika",
        licence="MJCF and meshes from robosuite 1.5.2 (MIT), derived from Franka's published CAD",
    ),
}


@dataclass(frozen=True)
class ToolModelSpec:
    """A gripper: its stroke and the payload it can hold."""

    max_opening_m: float
    max_payload_kg: float
    licence: str


TOOL_MODELS: dict[str, ToolModelSpec] = {
    "robotiq_2f140": ToolModelSpec(0.14, 2.5, "robosuite 1.5.2 (MIT)"),
    "panda_hand": ToolModelSpec(0.08, 3.0, "robosuite 1.5.2 (MIT)"),
    "rethink_gripper": ToolModelSpec(0.04, 2.0, "robosuite 1.5.2 (MIT)"),
}

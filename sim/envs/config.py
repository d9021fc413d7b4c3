"""Settings of the twin's training tasks: rates, tolerances and domain randomisation, with reasons."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

Range = tuple[float, float]


class TaskConfig(BaseModel):
    """How an arm task runs and what it randomises at each reset. Metres, seconds, radians."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 20 ms (50 Hz): five ticks of the twin's 250 Hz control loop. Learned arm policies run at
    # 20-50 Hz (mujoco_playground's Panda tasks at 50 Hz); between policy steps the runtime holds
    # the commanded velocity and integrates it at the control rate.
    policy_dt_s: float = Field(0.02, gt=0, le=0.1)
    # 3 s: a part at the slowest belt speed crosses the arm's pick window (about 0.6 m) in 12 s,
    # but a good approach closes in within 1.5 s; longer episodes only add steps without signal.
    episode_s: float = Field(3.0, gt=0)
    # 2 cm: the Robotiq 2F-140 opens 14 cm and the Panda hand 8 cm around a 6 cm blank, so a
    # pre-grasp point within 2 cm still lets the fingers close around the part.
    goal_tolerance_m: float = Field(0.02, gt=0)
    # 0.1 s inside the tolerance: a moving part must be tracked, not crossed.
    hold_s: float = Field(0.1, ge=0)
    # 8 cm above the part's centre: the pre-grasp point, high enough that open fingers clear a
    # 4 cm part and the belt's side rails.
    hover_m: float = Field(0.08, gt=0)

    # --- domain randomisation (drawn at each reset from the episode's seed)
    # Belt speeds the demo conveyor's speed tag allows, short of its 0.5 m/s maximum.
    belt_speed_m_s: Range = (0.05, 0.35)
    # Where the part starts along the belt, relative to the robot base (upstream is negative).
    part_start_x_m: Range = (-0.55, -0.15)
    # Across the belt (0.4 m wide): parts arrive anywhere but the last 5 cm at the rails.
    part_start_y_m: Range = (-0.12, 0.12)
    # Camera-to-robot latency of the part position: 0-60 ms covers a 30 fps camera plus
    # detection; the age is reported with the measurement (frames carry time stamps).
    latency_s: Range = (0.0, 0.06)
    # 2 mm: a calibrated overhead camera's position noise on a 6 cm part.
    part_noise_m: float = Field(0.002, ge=0)
    # Encoder noise: UR and Franka encoders resolve far finer; 0.5 mrad also covers backlash.
    joint_noise_rad: float = Field(0.0005, ge=0)
    # Joint velocity noise (rad/s): finite-difference velocities of a 250 Hz joint state stream.
    joint_velocity_noise_rad_s: float = Field(0.01, ge=0)
    # Relative error of the reported belt speed (the PLC's speed tag is scaled to 1 mm/s).
    belt_speed_noise: float = Field(0.02, ge=0)
    # Start pose: home plus up to 0.15 rad per joint, and the part disturbed after the start: a
    # recovery from a disturbance looks like a start away from home.
    start_jitter_rad: float = Field(0.15, ge=0)
    # Reach task: goals in a box over the belt in front of the robot (relative to the base).
    reach_goal_x_m: Range = (-0.35, 0.35)
    reach_goal_y_m: Range = (-0.65, -0.4)
    reach_goal_z_m: Range = (0.1, 0.4)

    # --- reward weights
    # Distance (m) costs every step, so a faster approach earns more; smoothness is weighted to
    # stay under a tenth of the distance term for sensible motions.
    w_distance: float = 1.0
    # Progress toward the goal (m) is rewarded too (potential-based shaping: over an episode it
    # sums to start minus end distance, so it changes which policy is best by nothing but the
    # last step). It gives each action a signal well above the noise: without it, PPO had not
    # begun to close in after 40,000 steps.
    w_progress: float = 30.0
    w_smooth: float = 0.05
    # Reaching the goal ends the episode with a bonus worth a few seconds of distance cost.
    # Touching the belt, the part or the floor ends it with a penalty above the cost of a whole
    # episode spent far away (150 steps x 0.5 m = 75), so ending an episode by a crash never pays
    # (with 20, PPO learnt to crash early to stop the distance cost).
    success_bonus: float = 10.0
    contact_penalty: float = 100.0

    @model_validator(mode="after")
    def _ranges(self) -> TaskConfig:
        for name in ("belt_speed_m_s", "part_start_x_m", "part_start_y_m", "latency_s"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: lower {lo} above upper {hi}")
        if self.latency_s[1] > 0.25:
            raise ValueError("latency_s above 0.25 s: measurements that old are stale")
        return self

"""Time steps and rates of the twin, each with the reason for its value."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TwinConfig(BaseModel):
    """How the twin steps. Physics runs at ``sim_dt_s``; people, belts, machines and
    lamps update once per control tick of ``ctrl_dt_s`` (a whole number of physics steps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 4 ms: the joint servos (kp <= 2000 on >= 0.1 kg m^2 with armature) and 40 mm parts on a
    # belt stay stable with the implicit-fast integrator, and it doubles the real-time factor
    # over 2 ms. mujoco_playground's Panda pick task runs at 5 ms.
    sim_dt_s: float = Field(0.004, gt=0, le=0.01)
    # 4 ms = 250 Hz: the robot drivers publish joint states at this rate, and a person at
    # 1.6 m/s moves 6.4 mm per tick, well inside the separation-distance margins.
    ctrl_dt_s: float = Field(0.004, gt=0, le=0.1)
    # 20 ms: machine logic (state model, door, belt photo-eye) runs like a PLC scan; real PLCs
    # scan every 1-20 ms, and the belt moves 3 mm per scan at 0.15 m/s.
    plc_scan_s: float = Field(0.02, gt=0, le=0.2)
    seed: int = 0

    @model_validator(mode="after")
    def _whole_steps(self) -> TwinConfig:
        n = self.ctrl_dt_s / self.sim_dt_s
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ValueError("ctrl_dt_s must be a whole multiple of sim_dt_s")
        k = self.plc_scan_s / self.ctrl_dt_s
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError("plc_scan_s must be a whole multiple of ctrl_dt_s")
        return self

    @property
    def scan_ticks(self) -> int:
        return round(self.plc_scan_s / self.ctrl_dt_s)

    @property
    def substeps(self) -> int:
        return round(self.ctrl_dt_s / self.sim_dt_s)

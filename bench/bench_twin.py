"""Twin speed against bare MuJoCo on the same compiled model, in the same run.

    python bench/bench_twin.py [--seconds 20] [--repeats 5]

Prints, for the demo cell: bare ``mujoco.mj_step`` steps/s (one call per step, as a bare
python loop would, and one ``nstep`` call), the twin's steps/s with machines, belts and people
ticking, the ratio (the figure to watch, aim < 1.3x), and the twin's real-time factor. The
process is pinned to one core. Runs alternate and the median is reported, because this
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import mujoco

from plant import load_plant
from sim.twin import Twin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    twin = Twin(load_plant())
    m = twin.model
    steps = round(args.seconds / m.opt.timestep)
    ticks = round(args.seconds / twin.config.ctrl_dt_s)
    bare_loop, bare_n, tw = [], [], []
    for _ in range(args.repeats):
        twin.reset()
        d = mujoco.MjData(m)
        d.qpos[:] = twin.data.qpos
        d.ctrl[:] = twin.data.ctrl
        t = time.perf_counter()
        for _ in range(steps):
            mujoco.mj_step(m, d)
        bare_loop.append(steps / (time.perf_counter() - t))
        d2 = mujoco.MjData(m)
        d2.qpos[:] = twin.data.qpos
        d2.ctrl[:] = twin.data.ctrl
        t = time.perf_counter()
        mujoco.mj_step(m, d2, nstep=steps)
        bare_n.append(steps / (time.perf_counter() - t))
        # The twin with its machines running, belt moving and the person walking.
        from plant.packml import Command

        for tm in twin.machines.values():
            tm.command(Command.RESET)
        twin.step(100)
        twin.machine("conveyor_1").command(Command.START)
        t = time.perf_counter()
        twin.step(ticks)
        tw.append(ticks * twin.config.substeps / (time.perf_counter() - t))
    bl, bn, tt = statistics.median(bare_loop), statistics.median(bare_n), statistics.median(tw)
    print(
        f"demo cell: {m.nbody} bodies, {m.ngeom} geoms, physics step {m.opt.timestep * 1000:g} ms, "
        f"control tick {twin.config.ctrl_dt_s * 1000:g} ms, one core, median of {args.repeats}"
    )
    print(f"bare mj_step loop      {bl:10.0f} steps/s   real-time factor {bl * m.opt.timestep:6.1f}")
    print(f"bare mj_step(nstep=N)  {bn:10.0f} steps/s   real-time factor {bn * m.opt.timestep:6.1f}")
    print(f"twin.step              {tt:10.0f} steps/s   real-time factor {tt * m.opt.timestep:6.1f}")
    print(f"twin overhead: {bl / tt:.2f}x over the bare loop, {bn / tt:.2f}x over bare nstep")


if __name__ == "__main__":
    main()

"""From a work order to a rehearsed plan awaiting approval: each stage, cold and warm.

    python bench/bench_latency.py [--order "Machine one blank and sort it"] [--warm 3]

In one fresh process, as `atelier plan` runs it (cold), then again in the same process with the
model loaded and the plant's twin compiled (warm: the console, or any long-running process):

- importing the coordinator's wiring (the twin, the robots, the backends);
- building the coordinator (the store; the embedded model loads at its first question, inside
  the cold submission);
- the submission: the model's reading and the planner, the guardrails, the rehearsal in the twin
  (frames rendered beside it), until the plan is stored awaiting approval;

next to the bare library in the same process: llama.cpp loading the same GGUF and answering one
prompt, and the twin stepping alone for the rehearsal's twin time. Then, as a person types it, in
processes of their own: ``atelier plan`` cold, and ``atelier plan --server`` against an
``atelier serve`` that keeps the coordinator warm (``--no-command-line`` skips this). Times are wall seconds on
this shared machine; the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--order", default="Machine one blank and sort it")
    ap.add_argument("--warm", type=int, default=3, help="warm submissions after the cold one")
    ap.add_argument("--no-frames", action="store_true")
    ap.add_argument(
        "--no-command-line",
        dest="command_line",
        action="store_false",
        help="skip timing `atelier plan` cold against `atelier plan --server` in processes of their own",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    from llm_coordinator import wiring
    from llm_coordinator.config import CoordinatorConfig
    from plant import load_plant

    t_import = time.perf_counter() - t0
    plant = load_plant()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CoordinatorConfig(database_url=f"sqlite:///{Path(tmp) / 'a.db'}")
        t = time.perf_counter()
        co = wiring.build_coordinator(plant, cfg, evidence_dir=Path(tmp) / "ev", render=not args.no_frames)
        t_build = time.perf_counter() - t
        rows = []
        for k in range(1 + args.warm):
            stages: dict[str, float] = {}
            last = [time.perf_counter()]

            def on_stage(
                stage: str, _plan_id: int, stages: dict[str, float] = stages, last: list[float] = last
            ) -> None:
                now = time.perf_counter()
                stages[stage] = now
                last[0] = now

            t = time.perf_counter()
            sub = asyncio.run(co.submit(args.order, actor="bench", on_stage=on_stage))
            end = time.perf_counter()
            marks = [("drafting", "model + planner"), ("checking", "guardrails"), ("rehearsing", "rehearsal")]
            times = {}
            for (stage, name), nxt in zip(marks, [*(m[0] for m in marks[1:]), None], strict=True):
                start = stages.get(stage)
                stop = stages.get(nxt) if nxt is not None else end
                if start is not None and stop is not None:
                    times[name] = stop - start
            rows.append((k, sub.status, end - t, times, sub.rehearsal))
        # The bare libraries, in the same process.
        from llama_cpp import Llama

        from llm_coordinator.backends.llama import default_model_path, llama_thread
        from sim.twin import Twin

        # (on the thread the backend runs llama.cpp on: see llama_thread)
        t = time.perf_counter()
        path = str(default_model_path())
        llm = llama_thread().submit(lambda: Llama(model_path=path, n_ctx=2048, n_threads=2, verbose=False)).result()
        t_llm_load = time.perf_counter() - t
        t = time.perf_counter()
        order = [{"role": "user", "content": args.order}]
        llama_thread().submit(lambda: llm.create_chat_completion(order, max_tokens=24)).result()
        t_llm_answer = time.perf_counter() - t
        twin = Twin(plant)
        sim_s = rows[-1][4].observations.sim_time_s if rows[-1][4] is not None else 50.0
        t = time.perf_counter()
        twin.step(round(sim_s / twin.config.ctrl_dt_s))
        t_twin = time.perf_counter() - t
    print(f"order: {args.order!r}, frames {'off' if args.no_frames else 'on'}")
    print(f"import the wiring        {t_import:6.2f} s")
    print(f"build the coordinator    {t_build:6.2f} s   (bare llama.cpp load {t_llm_load:5.2f} s)")
    for k, status, total, times, reh in rows:
        label = "cold" if k == 0 else f"warm {k}"
        parts = ", ".join(f"{n} {v:5.2f} s" for n, v in times.items())
        print(f"{label:7s} {status:18s} {total:6.2f} s: {parts}")
        if reh is not None and k == len(rows) - 1:
            print(
                f"  rehearsal {reh.observations.sim_time_s:.1f} s of twin time in {reh.wall_s:.2f} s; "
                f"the bare twin steps it in {t_twin:.2f} s ({reh.wall_s / t_twin:.1f}x)"
            )
    warm = [total for k, _s, total, _t, _r in rows if k > 0]
    if warm:
        cold = rows[0][2] + t_import + t_build
        print(f"warm median {statistics.median(warm):.2f} s; cold {cold:.2f} s with the import and the model's load")
    print(f"bare llama.cpp: one answer {t_llm_answer:.2f} s after loading")
    if args.command_line:
        _command_line(args.order, args.warm, args.no_frames)


def _command_line(order: str, warm: int, no_frames: bool) -> None:
    """The command a person types, end to end in processes of its own: ``atelier plan`` cold,
    then ``atelier plan --server`` against an ``atelier serve`` started (and readied) first."""
    import os
    import signal
    import subprocess
    import sys

    frames = ["--no-frames"] if no_frames else []
    atelier = [sys.executable, "-m", "llm_coordinator.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MUJOCO_GL": "egl"}

        def timed(*argv: str) -> float:
            t = time.perf_counter()
            done = subprocess.run([*atelier, *argv], cwd=tmp, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"atelier {' '.join(argv)} failed: {done.stdout}{done.stderr}")
            return time.perf_counter() - t

        cold = timed("plan", order, *frames)
        sock = str(Path(tmp) / "a.sock")
        t = time.perf_counter()
        server = subprocess.Popen(
            [*atelier, "serve", "--socket", sock, *frames], cwd=tmp, env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if line.startswith("ready:"):
                    break
            else:
                raise SystemExit("atelier serve ended before it was ready")
            t_ready = time.perf_counter() - t
            served = [timed("plan", "--server", sock, order) for _ in range(max(1, warm))]
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
    median = statistics.median(served)
    print(f"command line: atelier plan, cold        {cold:6.2f} s")
    print(f"command line: atelier serve ready after {t_ready:6.2f} s (once)")
    print(
        f"command line: atelier plan --server     {median:6.2f} s median of {len(served)} "
        f"({cold / median:.2f}x faster than cold)"
    )


if __name__ == "__main__":
    main()

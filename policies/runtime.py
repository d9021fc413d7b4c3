"""The on-robot policy runtime: load a checkpoint, check it fits the robot, answer within budget.

:meth:`PolicyRuntime.load` refuses, with an exception that says why, a checkpoint that is

- missing, incomplete or corrupt (a file's SHA-256 differs from its metadata):
  :class:`~policies.checkpoint.CheckpointError`;
- made for other observation or action spaces than the ones the caller gives for its robot
  (shape, or any bound, e.g. another arm's joint count or joint limits): :class:`SpaceMismatchError`;
- too slow: no backend answers within the latency budget at the 99th percentile on this machine:
  :class:`LatencyBudgetError`.

The caller keeps its scripted behaviour in every one of these cases. Once loaded, :meth:`act`
runs the chosen backend (eager torch, TorchScript or ONNX Runtime, all on one thread) and
reports the latency of each answer; an answer over budget is still returned but marked late,
which is the signal to fall back. The runtime does not block on anything but the CPU and is not
thread-safe (one runtime per control loop).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from numpy.typing import NDArray

from policies.checkpoint import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    CheckpointError,
    CheckpointInfo,
    SpaceInfo,
    load_network,
    read_info,
    verified,
)
from policies.export import EXPORT_ATOL, load_torchscript, onnx_session, probe_observations

Backend = Literal["eager", "torchscript", "onnx"]
BACKENDS: tuple[Backend, ...] = ("eager", "torchscript", "onnx")
#: 1 ms: a quarter of the twin's 4 ms control period, leaving the rest to the supervisor and I/O.
DEFAULT_BUDGET_S = 1e-3
#: Bounds may differ by float32 rounding between a checkpoint's JSON and a space built at run time.
BOUND_RTOL = 1e-6
BOUND_ATOL = 1e-5


class SpaceMismatchError(ValueError):
    """The policy was trained for other observation or action spaces than the robot's."""


class LatencyBudgetError(RuntimeError):
    """No backend answers within the latency budget on this machine."""


@dataclass(frozen=True)
class Decision:
    """One answer of the policy: the action, how long it took (s), and whether that was in budget."""

    action: NDArray[np.float32]
    latency_s: float
    on_time: bool


def check_spaces(info: CheckpointInfo, observation_space: spaces.Space[Any], action_space: spaces.Space[Any]) -> None:
    """Raise :class:`SpaceMismatchError` unless the checkpoint's spaces equal the given ones."""
    for what, recorded, given in (
        ("observation", info.observation, observation_space),
        ("action", info.action, action_space),
    ):
        try:
            actual = SpaceInfo.of(given)
        except TypeError as exc:
            raise SpaceMismatchError(f"the robot's {what} space is not supported: {exc}") from None
        if actual.shape != recorded.shape:
            raise SpaceMismatchError(
                f"policy {info.env_id} was trained with {what} shape {recorded.shape}, but this robot's "
                f"{what} has shape {actual.shape}; a policy for another arm (joint count) or task does not fit"
            )
        for bound in ("low", "high"):
            want = np.asarray(getattr(recorded, bound), dtype=float)
            have = np.asarray(getattr(actual, bound), dtype=float)
            same = np.isclose(want, have, rtol=BOUND_RTOL, atol=BOUND_ATOL) | (np.isinf(want) & (want == have))
            if not np.all(same):
                i = int(np.argmin(same))
                raise SpaceMismatchError(
                    f"policy {info.env_id} was trained with {what} {bound} bound {want[i]:.6g} at index {i}, but "
                    f"this robot's is {have[i]:.6g} (limits differ: {int(np.sum(~same))} of {len(same)} entries)"
                )


class PolicyRuntime:
    """A loaded, checked policy with a fixed latency budget. Create with :meth:`load`."""

    def __init__(
        self, info: CheckpointInfo, backend: Backend, run: Any, budget_s: float, calibration_p99_s: float
    ) -> None:
        self.info = info
        self.backend: Backend = backend
        self._run = run
        self.budget_s = budget_s
        self.calibration_p99_s = calibration_p99_s
        self.late = 0  # answers over budget so far
        self._obs_dim = info.observation.shape[0]
        self._buf = np.zeros((1, self._obs_dim), dtype=np.float32)

    @classmethod
    def load(
        cls,
        directory: Path | str,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        backend: Backend | Literal["auto"] = "auto",
        budget_s: float = DEFAULT_BUDGET_S,
        calibration_calls: int = 300,
        threads: int = 1,
        prefer: Backend | None = None,
    ) -> PolicyRuntime:
        """Load and check a checkpoint for a robot whose spaces are given; choose a backend.

        ``auto`` times every backend on this machine (``calibration_calls`` answers each, after
        a warm-up) and keeps the one with the lowest 99th-percentile latency; a named backend is
        timed alone. ``prefer`` (with ``auto``): every backend is checked, and that one kept
        whatever the timings (a run that must not depend on the machine's load); with no budget
        (``inf``) as well, nothing is timed and ``calibration_p99_s`` is NaN. Every backend
        used must reproduce the eager network on probe observations. Sets torch to ``threads``
        intra-op threads (an on-robot policy gets one core). Raises :class:`CheckpointError`,
        :class:`SpaceMismatchError` or :class:`LatencyBudgetError`.
        """
        if prefer is not None and (backend != "auto" or prefer not in BACKENDS):
            raise ValueError(f"prefer takes one of {', '.join(BACKENDS)}, with backend auto ({backend!r}, {prefer!r})")
        directory = Path(directory)
        info = read_info(directory)
        check_spaces(info, observation_space, action_space)
        torch.set_num_threads(threads)
        _, net = load_network(directory, info)
        probe = probe_observations(info, n=8, seed=1)
        with torch.inference_mode():
            reference = net(torch.from_numpy(probe)).numpy()
        candidates = BACKENDS if backend == "auto" else (backend,)
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be auto or one of {', '.join(BACKENDS)}, not {backend!r}")
        timed: list[tuple[float, Backend, Any]] = []
        # (a preferred backend and no budget: timings would choose nothing, so none are taken)
        timing = not (prefer is not None and budget_s == math.inf)
        for name in candidates:
            run = _make_backend(name, directory, info, net, threads)
            got = np.concatenate([run(row[None]) for row in probe])
            if not np.allclose(got, reference, atol=EXPORT_ATOL):
                raise CheckpointError(f"{directory}: the {name} backend disagrees with the network")
            timed.append((_p99(run, probe[0][None], calibration_calls) if timing else math.nan, name, run))
        p99, name, run = next((t for t in timed if t[1] == prefer), None) or min(timed, key=lambda t: t[0])
        if p99 > budget_s:
            which = "the preferred" if prefer else "the fastest"
            raise LatencyBudgetError(
                f"policy {info.env_id}: {which} backend {name} answers in {p99 * 1e6:.0f} us at p99, over the "
                f"{budget_s * 1e6:.0f} us budget"
            )
        return cls(info, name, run, budget_s, p99)

    def act(self, obs: NDArray[Any]) -> Decision:
        """The action for one observation (shape ``(obs_dim,)``; any float dtype).

        Raises ``ValueError`` for a wrong shape or a non-finite entry (a sensor fault is not a
        policy input). ``on_time`` is False when this answer took longer than the budget.
        """
        x = np.asarray(obs)
        if x.shape != (self._obs_dim,):
            raise ValueError(f"observation of shape {x.shape}, the policy takes ({self._obs_dim},)")
        if not np.all(np.isfinite(x)):
            raise ValueError("observation has non-finite entries")
        self._buf[0] = x
        t0 = time.perf_counter()
        action = self._run(self._buf)[0]
        latency = time.perf_counter() - t0
        on_time = latency <= self.budget_s
        if not on_time:
            self.late += 1
        return Decision(np.array(action, dtype=np.float32), latency, on_time)


def _make_backend(name: Backend, directory: Path, info: CheckpointInfo, net: Any, threads: int) -> Any:
    if name == "eager":

        def eager(x: NDArray[np.float32]) -> NDArray[np.float32]:
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

        return eager
    if name == "torchscript":
        module = load_torchscript(verified(directory, info, TORCHSCRIPT_FILE))

        def script(x: NDArray[np.float32]) -> NDArray[np.float32]:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

        return script
    session = onnx_session(verified(directory, info, ONNX_FILE), threads)
    run = session.run

    def onnx(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return run(["action"], {"obs": x})[0]  # type: ignore[no-any-return]

    return onnx


def latencies(run: Any, x: NDArray[np.float32], calls: int, warmup: int = 50) -> NDArray[np.float64]:
    """Wall-clock seconds of ``calls`` answers of a backend function after ``warmup`` answers."""
    for _ in range(warmup):
        run(x)
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        run(x)
        out[i] = time.perf_counter() - t0
    return out


def _p99(run: Any, x: NDArray[np.float32], calls: int) -> float:
    return float(np.percentile(latencies(run, x, calls), 99))


def backend_function(directory: Path, name: Backend, threads: int = 1) -> Any:
    """The raw batch function of one backend of a checkpoint (for benchmarks), hash checked."""
    info = read_info(directory)
    _, net = load_network(directory, info)
    return _make_backend(name, directory, info, net, threads)

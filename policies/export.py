"""Export a checkpoint's network to TorchScript and ONNX, and check the exports agree with it.

Both exports contain the observation normalisation and the action clamp (they are part of
:class:`~policies.networks.PolicyNet`). Input ``obs``: float32 ``[batch, obs_dim]`` (batch is
dynamic in ONNX); output ``action``: float32 ``[batch, act_dim]``.

torch 2.13 marks ``torch.jit`` deprecated in favour of ``torch.export``; TorchScript still loads
in C++ without Python (the reason robot vendors ask for it), so we keep writing it and silence
only that deprecation notice. ONNX goes through the maintained ``torch.export`` based exporter.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.checkpoint import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    CheckpointError,
    CheckpointInfo,
    load_network,
    sha256,
    verified,
    write_info,
)
from policies.networks import PolicyNet

#: Largest difference between an export and the eager network that counts as equal (float32 maths
#: in another order).
EXPORT_ATOL = 1e-5


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch 2.13's deprecation notice for ``torch.jit`` (and nothing else)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    # The exporter logs a line per torchvision operator it skips and warns about torch's own
    # pytree internals; neither concerns a small MLP.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec.*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def to_torchscript(net: PolicyNet, path: Path) -> None:
    """Write ``net`` as a TorchScript module (scripted, so it needs no example input)."""
    with quiet_torchscript():
        scripted = torch.jit.script(net.eval())
        scripted.save(str(path))  # type: ignore[no-untyped-call]


def to_onnx(net: PolicyNet, path: Path) -> None:
    """Write ``net`` as an ONNX model with a dynamic batch dimension."""
    export_onnx(net, torch.zeros(1, net.obs_dim), "obs", ["action"], path, 4096)


def export_onnx(
    net: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], path: Path, max_batch: int
) -> None:
    """Write ``net`` (one input, batch first) as an ONNX model whose batch dimension is dynamic up
    to ``max_batch``, through the ``torch.export`` based exporter; shared by policies and vision
    models."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with quiet_onnx_export():
        program = torch.onnx.export(
            net.eval(),
            (example,),
            None,
            dynamo=True,
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes={input_name: {0: batch}},
            verbose=False,
        )
    if program is None:
        raise RuntimeError("the ONNX exporter returned no program")
    program.save(str(path))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """A TorchScript module from a file (no hash check: see :func:`policies.checkpoint.verified`)."""
    with quiet_torchscript():
        module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module.eval()


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` threads (one for an on-robot policy)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def probe_observations(info: CheckpointInfo, n: int = 64, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Observations spread over the observation bounds (finite ones; unbounded entries draw from
    a unit normal), for comparing backends."""
    rng = np.random.default_rng(seed)
    low = np.asarray(info.observation.low, dtype=np.float64)
    high = np.asarray(info.observation.high, dtype=np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    out = rng.standard_normal((n, len(low)))
    span = np.where(finite, high - low, 1.0)
    out = np.where(finite, np.where(finite, low, 0.0) + rng.random((n, len(low))) * span, out)
    return out.astype(np.float32)


def export_checkpoint(directory: Path) -> CheckpointInfo:
    """Write ``policy.ts`` and ``policy.onnx`` for a checkpoint, check both reproduce the eager
    network on probe observations within :data:`EXPORT_ATOL`, and record their hashes."""
    directory = Path(directory)
    info, net = load_network(directory)
    ts, ox = directory / TORCHSCRIPT_FILE, directory / ONNX_FILE
    to_torchscript(net, ts)
    to_onnx(net, ox)
    info = write_info(
        directory,
        info.model_copy(update={"files": {**info.files, TORCHSCRIPT_FILE: sha256(ts), ONNX_FILE: sha256(ox)}}),
    )
    check_exports(directory, info)
    return info


def check_exports(directory: Path, info: CheckpointInfo) -> float:
    """Largest difference between the eager network and either export on probe observations;
    raises :class:`CheckpointError` above :data:`EXPORT_ATOL`."""
    _, net = load_network(directory, info)
    obs = probe_observations(info)
    with torch.inference_mode():
        eager = net(torch.from_numpy(obs)).numpy()
        script = load_torchscript(verified(directory, info, TORCHSCRIPT_FILE))(torch.from_numpy(obs)).numpy()
    onnx = onnx_session(verified(directory, info, ONNX_FILE)).run(None, {"obs": obs})[0]
    worst = float(max(np.max(np.abs(eager - script)), np.max(np.abs(eager - onnx))))
    if not worst <= EXPORT_ATOL:
        raise CheckpointError(f"{directory}: the exports differ from the network by {worst:.2e} (> {EXPORT_ATOL})")
    return worst

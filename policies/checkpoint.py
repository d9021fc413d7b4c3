"""Policy checkpoints: a directory of small files with a metadata file that names and hashes them.

Layout of a checkpoint directory::

    policy.json          metadata (:class:`CheckpointInfo`): environment, spaces, network, the
                         command that reproduces it, and the SHA-256 of every file below
    policy.pt            the :class:`~policies.networks.PolicyNet` state dict (tensors only)
    policy.ts            TorchScript export          (written by :mod:`policies.export`)
    policy.onnx          ONNX export                 (written by :mod:`policies.export`)
    learning_curve.png   evaluation return and success rate over training (not hashed)

Loading checks every hash before it reads a file, and reads tensors with
``torch.load(weights_only=True)``: a truncated, edited or foreign file is refused with
:class:`CheckpointError`, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.networks import Activation, PolicyNet

FORMAT: Final = "atelier-policy/1"
INFO_FILE = "policy.json"
WEIGHTS_FILE = "policy.pt"
TORCHSCRIPT_FILE = "policy.ts"
ONNX_FILE = "policy.onnx"
CURVE_FILE = "learning_curve.png"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt (a hash does not match) or not ours."""


class SpaceInfo(BaseModel):
    """A Gymnasium ``Box``: shape and bounds (floats; infinities are written as such)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    low: list[float]
    high: list[float]
    dtype: Literal["float32"] = "float32"

    @classmethod
    def of(cls, box: spaces.Space[Any]) -> SpaceInfo:
        """The description of a ``Box`` space (other spaces are not supported by these policies)."""
        if not isinstance(box, spaces.Box):
            raise TypeError(f"policies act on Box spaces, not {type(box).__name__}")
        return cls(
            shape=tuple(int(s) for s in box.shape),
            low=[float(v) for v in np.asarray(box.low, dtype=np.float64).ravel()],
            high=[float(v) for v in np.asarray(box.high, dtype=np.float64).ravel()],
        )

    def box(self) -> spaces.Box:
        """The ``Box`` this describes."""
        return spaces.Box(
            low=np.asarray(self.low, dtype=np.float32).reshape(self.shape),
            high=np.asarray(self.high, dtype=np.float32).reshape(self.shape),
            dtype=np.float32,
        )


class CheckpointInfo(BaseModel):
    """The metadata file of a checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["atelier-policy/1"] = "atelier-policy/1"
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    algorithm: str
    seed: int
    total_timesteps: int
    checkpoint_step: int | None = Field(default=None, description="the step of the evaluation this policy won")
    teacher: str | None = Field(default=None, description="the controller the policy was warm-started from")
    command: str = Field(description="the command that reproduces this checkpoint")
    observation: SpaceInfo
    action: SpaceInfo
    hidden: tuple[int, ...]
    activation: Activation
    squash: bool = Field(default=False, description="tanh output rescaled to the action bounds (SAC)")
    policy_dt_s: float | None = Field(default=None, description="the period the policy was trained to act at")
    versions: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="file name to SHA-256 (hex)")

    def network(self) -> PolicyNet:
        """An untrained network of this checkpoint's shape."""
        return PolicyNet(self.observation.shape[0], self.action.shape[0], self.hidden, self.activation, self.squash)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def save(directory: Path, info: CheckpointInfo, net: PolicyNet) -> CheckpointInfo:
    """Write ``policy.pt`` and ``policy.json`` into ``directory`` (created); returns the info with
    the weights' hash. Other files already listed in ``info.files`` keep their entries."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, weights)
    return write_info(directory, info.model_copy(update={"files": {**info.files, WEIGHTS_FILE: sha256(weights)}}))


def write_info(directory: Path, info: CheckpointInfo) -> CheckpointInfo:
    """Write ``policy.json`` (sorted keys, so a reproduced checkpoint diffs cleanly)."""
    (directory / INFO_FILE).write_text(json.dumps(info.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
    return info


def read_info(directory: Path) -> CheckpointInfo:
    """The metadata of a checkpoint; raises :class:`CheckpointError` when it is missing or invalid."""
    path = Path(directory) / INFO_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return CheckpointInfo.model_validate(raw)
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a policy checkpoint: {INFO_FILE} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt: not valid JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{path} is not an {FORMAT} metadata file: {where}: {first['msg']}") from None


def verified(directory: Path, info: CheckpointInfo, name: str) -> Path:
    """The path of a checkpoint file whose hash matches the metadata; else :class:`CheckpointError`."""
    return hashed_file(directory, info.files, name, INFO_FILE, CheckpointError)


def hashed_file(directory: Path, files: dict[str, str], name: str, listing: str, error: type[Exception]) -> Path:
    """The path of file ``name`` of a folder whose metadata (``listing``) records ``files``
    (name -> SHA-256), when its hash matches; else ``error`` saying what is wrong. Shared by
    policy and vision checkpoints."""
    path = Path(directory) / name
    expected = files.get(name)
    if expected is None:
        raise error(f"{directory}: {name} is not part of this checkpoint (not listed in {listing})")
    if not path.is_file():
        raise error(f"{directory}: {name} is listed in {listing} but missing")
    actual = sha256(path)
    if actual != expected:
        raise error(
            f"{path} is corrupt: SHA-256 {actual[:12]}... does not match {expected[:12]}... recorded in {listing}"
        )
    return path


def load_network(directory: Path, info: CheckpointInfo | None = None) -> tuple[CheckpointInfo, PolicyNet]:
    """The metadata and the eager network of a checkpoint, hash checked (eval mode, on CPU)."""
    info = info or read_info(directory)
    path = verified(directory, info, WEIGHTS_FILE)
    net = info.network()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises many kinds for a bad pickle or mismatched tensors
        raise CheckpointError(f"{path} cannot be loaded as this checkpoint's network: {exc}") from None
    return info, net.eval()

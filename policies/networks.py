"""The network of a small control policy, observation normalisation and action bounds included.

:class:`PolicyNet` is what every backend runs (eager torch, TorchScript, ONNX): observation in,
action out, with the running-statistics normalisation learnt in training and the clamp to the
action bounds inside the module, so no runtime re-implements either.
"""

# No ``from __future__ import annotations``: TorchScript reads the annotations of this module.

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["tanh", "relu"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class PolicyNet(nn.Module):
    """Deterministic policy: ``clamp(out(mlp(clip((obs - mean) * scale, -clip, clip))), low, high)``
    where ``out`` is the identity (a Gaussian policy's mean, PPO) or, with ``squash``, ``tanh``
    rescaled to ``[low, high]`` (a squashed Gaussian's mode, SAC).

    Input: float32 ``[batch, obs_dim]``; output: float32 ``[batch, act_dim]``. The normalisation
    (``obs_mean``, ``obs_scale = 1 / sqrt(var + eps)``, ``obs_clip``) and the action bounds are
    buffers, so they travel in the state dict and in every export.
    """

    obs_mean: torch.Tensor
    obs_scale: torch.Tensor
    obs_clip: torch.Tensor
    act_low: torch.Tensor
    act_high: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "tanh",
        squash: bool = False,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {activation!r}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden, self.activation = tuple(int(h) for h in hidden), activation
        self.squash = bool(squash)
        layers: list[nn.Module] = []
        width = self.obs_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.act_dim)
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_scale", torch.ones(self.obs_dim))
        self.register_buffer("obs_clip", torch.tensor(10.0))
        self.register_buffer("act_low", -torch.ones(self.act_dim))
        self.register_buffer("act_high", torch.ones(self.act_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions for a batch of raw (unnormalised) observations."""
        x = (obs - self.obs_mean) * self.obs_scale
        x = torch.maximum(torch.minimum(x, self.obs_clip), -self.obs_clip)
        a = self.head(self.body(x))
        if self.squash:
            a = self.act_low + 0.5 * (torch.tanh(a) + 1.0) * (self.act_high - self.act_low)
        return torch.maximum(torch.minimum(a, self.act_high), self.act_low)

    def set_normalisation(self, mean: torch.Tensor, var: torch.Tensor, clip: float, eps: float = 1e-8) -> None:
        """Bake running observation statistics (as Stable-Baselines3's ``VecNormalize`` keeps them) in."""
        with torch.no_grad():
            self.obs_mean.copy_(mean.to(torch.float32))
            self.obs_scale.copy_(1.0 / torch.sqrt(var.to(torch.float64) + eps).to(torch.float32))
            self.obs_clip.fill_(float(clip))

    def set_action_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """The box actions are clamped to."""
        with torch.no_grad():
            self.act_low.copy_(low.to(torch.float32))
            self.act_high.copy_(high.to(torch.float32))

"""How a plant's model is tuned (:class:`TuneConfig`): a module of its own, light to import, as
the command line's defaults are read from it at every start."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The projections of SmolLM2's attention and MLP that the LoRA adapts.
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TuneConfig:
    """How a plant's model is tuned. The defaults fit the 30-minute budget of a 2-core machine."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: float = 3.0
    batch_size: int = 8
    #: Sequences through the model at once; gradients accumulate to ``batch_size``. Memory
    #: grows with it (the vocabulary's logits and 30 layers of activations per sequence).
    micro_batch: int = 4
    learning_rate: float = 2e-3
    max_tokens: int = 512
    per_shape: int = 45
    dev_fraction: float = 0.12
    seed: int = 0
    threads: int = 2
    time_limit_s: float = 1800.0
    checkpoint_every: int = 10
    targets: tuple[str, ...] = TARGETS
    #: Share of training examples shown with retrieved examples in their prompt, so the model
    #: learns to use them.
    with_examples: float = 0.15
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """What makes two runs train the same adapter (not the time limit)."""
        d = asdict(self)
        d.pop("time_limit_s")
        d.pop("checkpoint_every")
        d.pop("micro_batch")
        return d

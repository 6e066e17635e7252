"""What a training run produces (`TrainResult`) and how a callback stops one (`StopTraining`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradviz.errors import GradvizError
from gradviz.train.data import TrainData

if TYPE_CHECKING:
    from gradviz.train.recipe import Preset

__all__ = ["StopTraining", "TrainResult"]


class StopTraining(GradvizError):
    """Raise from a training callback to stop the run cleanly (the result is kept)."""


@dataclass(eq=False)
class TrainResult:
    """What a run produced: the loss curve, the metrics, the trained model and optimizer.

    ``losses`` holds one value per weight update (the batch loss before that update),
    including the steps of a checkpoint the run resumed from; ``losses[start_step:]``
    is this call's part. ``test_losses`` holds ``(step, loss)`` pairs measured on the
    test split after every epoch.
    """

    losses: list[float]
    metrics: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    steps_done: int
    start_step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 1
    stopped: bool = False
    diverged: bool = False
    test_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0
    preset: Preset | None = None
    data: TrainData | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    rng_state: torch.Tensor | None = field(default=None, repr=False)

    @property
    def epochs_done(self) -> float:
        return self.steps_done / self.steps_per_epoch

    @property
    def message(self) -> str:
        """One line for the UI: how the run ended."""
        head = f"{self.steps_done}/{self.total_steps} steps"
        if self.diverged:
            return (
                f"{head}: the loss became {self.losses[-1]} — the run diverged; try a "
                f"smaller lr than {self.settings.get('lr')}"
            )
        if self.stopped:
            return f"{head}: stopped early"
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return f"{head} in {self.seconds:.1f}s: {shown}"

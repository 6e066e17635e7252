"""The tutorials' own losses, each registered with the NumPy backprop as the loss it equals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradviz.backward.netprop import register_loss


def quadrant_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 002: Σ over samples and classes of −t·log p − (1−t)·log(1−p), over the sample count."""
    E = pred.shape[0]
    return (-target * torch.log(pred) - (1 - target) * torch.log(1 - pred)).sum() / E


def sum_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 003 (tensors/autograd): (y_pred − y).pow(2).sum()."""
    return (pred - target).pow(2).sum()


def half_sum_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 004 from scratch: ½·Σ(targets − outputs)², summed over the batch too."""
    return 0.5 * (target - pred).pow(2).sum()


def categorical_crossentropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras' categorical cross-entropy on softmax outputs: −Σ t·log p, batch mean.

    Keras clips the probabilities to [1e-7, 1 − 1e-7] before the log; so does this.
    """
    return -(target * torch.log(pred.clamp(1e-7, 1 - 1e-7))).sum(dim=1).mean()


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 004 TF regression: reduce_mean(square(y − prediction))."""
    return (target - pred).square().mean()


def mse_mean(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 000: F.mse_loss, the mean over every entry."""
    return F.mse_loss(pred, target)


mse_sum = nn.MSELoss(reduction="sum")  # seed 003 nn/optim/module/dynamic: loss_fn

# What each loss is, for the NumPy backprop that checks the presets' gradients
register_loss(quadrant_loss, "bce", "batchmean")  # Σ −t·log p − (1−t)·log(1−p), over N
register_loss(sum_squared_error, "mse", "sum")
register_loss(half_sum_squared_error, "half_sse", "sum")
register_loss(mean_squared_error, "mse", "mean")
register_loss(categorical_crossentropy, "categorical_crossentropy", "batchmean")
register_loss(mse_mean, "mse", "mean")


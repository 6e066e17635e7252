"""The optimizers and losses a run can name, and the checks of the numbers a run is given."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.errors import ArgumentError

__all__ = ["OPTIMIZERS", "LOSSES"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]] = {
    "mse": (F.mse_loss, "mean"),
    "mse_sum": (lambda p, t: F.mse_loss(p, t, reduction="sum"), "sum"),
    "cross_entropy": (F.cross_entropy, "mean"),
    "nll": (F.nll_loss, "mean"),
    "bce": (F.binary_cross_entropy, "mean"),
}


def _check_int(name: str, value: Any, low: int = 1, example: str = "100") -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ArgumentError(name, value, f"use a whole number ≥ {low}, e.g. {name}={example}")
    return int(value)


def _check_lr(value: Any, default: float | None) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        hint = f" (this preset uses {default:g})" if default else ""
        raise ArgumentError("lr", value, f"use a positive finite number such as 0.01{hint}")
    return float(value)


def _resolve_optimizer(name: Any) -> str:
    if not isinstance(name, str):
        raise ArgumentError("optimizer", name, f"give an optimizer name: {', '.join(OPTIMIZERS)}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in OPTIMIZERS:
        close = difflib.get_close_matches(key, list(OPTIMIZERS), n=2, cutoff=0.4)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ArgumentError("optimizer", name, f"{hint}known: {', '.join(OPTIMIZERS)}")
    return key


def _resolve_loss(
    loss: Any, task: str, reduction: str | None = None
) -> tuple[Callable[..., torch.Tensor], str, str]:
    if loss is None:
        name = "cross_entropy" if task == "classification" else "mse"
        return LOSSES[name][0], name, LOSSES[name][1]
    if isinstance(loss, str):
        if loss not in LOSSES:
            close = difflib.get_close_matches(loss, list(LOSSES), n=2, cutoff=0.4)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ArgumentError("loss", loss, f"{hint}known: {', '.join(LOSSES)}, or a callable")
        return LOSSES[loss][0], loss, LOSSES[loss][1]
    if callable(loss):
        return loss, getattr(loss, "__name__", type(loss).__name__), reduction or "mean"
    raise ArgumentError(
        "loss",
        loss,
        f"give a loss name ({', '.join(LOSSES)}) or a callable loss(output, target) -> tensor",
    )



def _make_optimizer(
    name: str,
    params: list[nn.Parameter],
    lr: float,
    hyper: Mapping[str, float],
    momentum: float | None,
) -> torch.optim.Optimizer:
    kwargs = {k: v for k, v in hyper.items() if k != "lr"}
    if momentum is not None:
        if name not in ("sgd", "rmsprop"):
            raise ArgumentError(
                "momentum",
                momentum,
                f"{name} has no momentum; use optimizer='sgd' or 'rmsprop', or leave momentum out",
            )
        kwargs["momentum"] = momentum
    if not params:
        raise ArgumentError(
            "model", "no parameters", "the network has nothing to train; add a layer with weights"
        )
    # every class here takes lr=; torch.optim.Optimizer's own __init__ does not
    make: Callable[..., torch.optim.Optimizer] = OPTIMIZERS[name]
    return make(params, lr=lr, **kwargs)

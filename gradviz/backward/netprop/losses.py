"""The losses `numpy_backprop` ends with: value and gradient in NumPy, the same in torch.

A loss is given by name (`LOSSES`), as a torch loss module, or as a function registered
with `register_loss` (torch's functionals are; the zoo registers its tutorial losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.backward.netprop.layers import Array
from gradviz.errors import ArgumentError


@dataclass(frozen=True)
class _Loss:
    name: str
    reductions: tuple[str, ...]  # the first is the default
    target: str  # "same" (same shape as the output), "classes", "classes_or_probs", "none"
    # (output, target, reduction) → (loss, ∂loss/∂output). The target is an Array, or None
    # for target "none": Any, since each function takes the one its `target` kind gives.
    fn: Callable[[Array, Any, str], tuple[float, Array]]


def _divisor(reduction: str, y: Array) -> float:
    return {"mean": y.size, "sum": 1, "batchmean": y.shape[0] if y.ndim else 1}[reduction]


def _mse(y: Array, t: Array, reduction: str) -> tuple[float, Array]:
    d = _divisor(reduction, y)
    diff = y - t
    return float((diff**2).sum() / d), 2.0 * diff / d  # seed 003: g_y = 2(y_pred − y)


def _half_sse(y: Array, t: Array, reduction: str) -> tuple[float, Array]:
    diff = y - t
    return float(0.5 * (diff**2).sum()), diff  # seed 004: −output_errors = outputs − targets


def _plain_sum(y: Array, t: Any, reduction: str) -> tuple[float, Array]:
    return float(y.sum()), np.ones_like(y)


def _bce(p: Array, t: Array, reduction: str) -> tuple[float, Array]:
    d = _divisor(reduction, p)
    with np.errstate(divide="ignore"):
        # torch clamps each log at −100, so a probability of exactly 0 or 1 stays finite
        log_p, log_q = np.maximum(np.log(p), -100.0), np.maximum(np.log1p(-p), -100.0)
    value = -(t * log_p + (1 - t) * log_q).sum() / d
    grad = (p - t) / np.maximum(p * (1 - p), 1e-12) / d  # torch's ε keeps p ∈ {0, 1} finite
    return float(value), grad


def _nll(logp: Array, t: Array, reduction: str) -> tuple[float, Array]:
    rows = np.arange(logp.shape[0])
    d = logp.shape[0] if reduction == "mean" else 1
    grad = np.zeros_like(logp)
    grad[rows, t] = -1.0 / d  # only each row's target entry counts
    return float(-logp[rows, t].sum() / d), grad


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(z: Array, t: Array, reduction: str) -> tuple[float, Array]:
    logp = _log_softmax(z)
    d = z.shape[0] if reduction == "mean" else 1
    probs = t if t.dtype.kind == "f" else np.eye(z.shape[1])[t]  # class indices → one-hot
    # ∂/∂z of −Σ t·log softmax(z) = softmax(z)·Σt − t
    grad = (np.exp(logp) * probs.sum(axis=1, keepdims=True) - probs) / d
    return float(-(probs * logp).sum() / d), grad


def _categorical_crossentropy(p: Array, t: Array, reduction: str) -> tuple[float, Array]:
    clipped = np.clip(p, 1e-7, 1 - 1e-7)  # Keras clips before the log
    inside = (p >= 1e-7) & (p <= 1 - 1e-7)
    n = p.shape[0]
    return float(-(t * np.log(clipped)).sum() / n), -t / clipped * inside / n


# name → reductions (the first is the default), the target it takes, the function.
# "mean" divides by the number of output entries (rows for nll/cross_entropy), "batchmean"
# by the batch size (seed 002's quadrant loss), "sum" by nothing.
LOSSES: dict[str, _Loss] = {
    loss.name: loss
    for loss in (
        _Loss("mse", ("mean", "sum", "batchmean"), "same", _mse),  # Σ(y − t)²
        _Loss("half_sse", ("sum",), "same", _half_sse),  # ½·Σ(t − y)²
        _Loss("sum", ("sum",), "none", _plain_sum),  # Σ y
        _Loss("bce", ("mean", "sum", "batchmean"), "same", _bce),  # −Σ t·log p + (1−t)·log(1−p)
        _Loss("nll", ("mean", "sum"), "classes", _nll),  # −Σ log p[target]
        _Loss("cross_entropy", ("mean", "sum"), "classes_or_probs", _cross_entropy),
        _Loss("categorical_crossentropy", ("batchmean",), "same", _categorical_crossentropy),
    )
}


def _loss_from_module(loss: nn.Module) -> tuple[str, str]:
    kinds = {
        nn.MSELoss: "mse",
        nn.NLLLoss: "nll",
        nn.CrossEntropyLoss: "cross_entropy",
        nn.BCELoss: "bce",
    }
    name = kinds.get(type(loss))
    if name is None:
        raise ArgumentError(
            "loss",
            type(loss).__name__,
            "use MSELoss, NLLLoss, CrossEntropyLoss or BCELoss, or a name: " + ", ".join(LOSSES),
        )
    if getattr(loss, "weight", None) is not None:
        raise ArgumentError(
            "loss",
            f"{type(loss).__name__}(weight=…)",
            "class weights are not supported; drop weight=",
        )
    if getattr(loss, "label_smoothing", 0.0):
        raise ArgumentError(
            "loss", f"label_smoothing={loss.label_smoothing}", "use label_smoothing=0"
        )
    # Module attributes type as Tensor | Module; torch's loss modules keep reduction a str.
    return name, str(loss.reduction)


# Loss callables read as a named loss: torch's functionals here, the zoo's own losses
# registered by the module that defines them.
_CALLABLES: dict[Callable[..., Any], tuple[str, str]] = {
    F.mse_loss: ("mse", "mean"),
    F.nll_loss: ("nll", "mean"),
    F.cross_entropy: ("cross_entropy", "mean"),
    F.binary_cross_entropy: ("bce", "mean"),
}


def register_loss(fn: Callable[..., Any], name: str, reduction: str) -> Callable[..., Any]:
    """Read the loss function ``fn`` as `LOSSES` entry ``name`` with ``reduction``.

    For a loss written with tensor ops that equals a known loss, e.g. seed 002's quadrant
    loss is ``register_loss(quadrant_loss, "bce", "batchmean")``. Returns ``fn``.
    """
    if not callable(fn) or isinstance(fn, (str, nn.Module)):
        raise ArgumentError("fn", fn, "give a loss function (output, target) -> tensor")
    if name not in LOSSES:
        raise ArgumentError("name", name, "use one of " + ", ".join(LOSSES))
    if reduction not in LOSSES[name].reductions:
        raise ArgumentError(
            "reduction",
            reduction,
            f"loss {name!r} takes reduction " + " or ".join(map(repr, LOSSES[name].reductions)),
        )
    _CALLABLES[fn] = (name, reduction)
    return fn


def _resolve_loss(loss: Any, reduction: str | None) -> tuple[_Loss, str]:
    if isinstance(loss, nn.Module):
        name, own = _loss_from_module(loss)
        if reduction is not None and reduction != own:
            raise ArgumentError(
                "reduction", reduction, f"the loss module already says reduction={own!r}; drop one"
            )
        reduction = own
    elif callable(loss) and not isinstance(loss, str):
        if loss not in _CALLABLES:
            raise ArgumentError(
                "loss",
                getattr(loss, "__name__", loss),
                "give a loss name (" + ", ".join(LOSSES) + ") or a torch loss module",
            )
        name, own = _CALLABLES[loss]
        reduction = own if reduction is None else reduction
    elif isinstance(loss, str) and loss in LOSSES:
        name = loss
    else:
        raise ArgumentError(
            "loss", loss, "use one of " + ", ".join(LOSSES) + " or a torch loss module"
        )
    spec = LOSSES[name]
    reduction = spec.reductions[0] if reduction is None else reduction
    if reduction not in spec.reductions:
        fix = "give a scalar loss: " if reduction == "none" else ""
        raise ArgumentError(
            "reduction",
            reduction,
            f"{fix}loss {name!r} takes reduction " + " or ".join(map(repr, spec.reductions)),
        )
    return spec, reduction


def _target(spec: _Loss, y: Array, target: Any) -> Array | None:
    """The target as NumPy, checked against the network's output ``y``."""
    if spec.target == "none":
        return None
    if target is None:
        raise ArgumentError("target", None, f"loss {spec.name!r} needs a target")
    t = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    integer = t.dtype.kind in "iub"
    if spec.target in ("classes", "classes_or_probs") and (integer or spec.target == "classes"):
        if y.ndim != 2:
            raise ArgumentError(
                "output", y.shape, f"loss {spec.name!r} needs (batch, classes) outputs"
            )
        if not integer or t.shape != (y.shape[0],):
            raise ArgumentError(
                "target",
                f"{t.dtype} array of shape {t.shape}",
                f"loss {spec.name!r} takes one class index per row: an integer array of "
                f"shape ({y.shape[0]},)",
            )
        if t.size and (t.min() < 0 or t.max() >= y.shape[1]):
            raise ArgumentError(
                "target", t.tolist(), f"class indices must lie in 0…{y.shape[1] - 1}"
            )
        return t.astype(np.int64)
    t = t.astype(np.float64)
    if t.shape != y.shape:
        raise ArgumentError(
            "target",
            f"shape {t.shape}",
            f"the network's output has shape {y.shape}; give a target of that shape",
        )
    if spec.name == "bce" and (y.min() < 0 or y.max() > 1):
        raise ArgumentError(
            "loss", "bce", "bce takes probabilities in [0, 1]: end the network with Sigmoid"
        )
    return t


def _torch_loss(
    spec: _Loss, reduction: str, y: torch.Tensor, t: torch.Tensor | None
) -> torch.Tensor:
    d = {"mean": y.numel(), "sum": 1, "batchmean": y.shape[0]}.get(reduction, 1)
    if spec.name == "sum":
        return y.sum()
    if t is None:  # `_target` gives every other loss one
        raise ArgumentError("target", None, f"loss {spec.name!r} needs a target")
    if spec.name == "mse":
        return F.mse_loss(y, t, reduction="sum") / d
    if spec.name == "bce":
        return F.binary_cross_entropy(y, t, reduction="sum") / d
    if spec.name == "half_sse":
        return 0.5 * (t - y).pow(2).sum()
    if spec.name == "nll":
        return F.nll_loss(y, t, reduction=reduction)
    if spec.name == "cross_entropy":
        return F.cross_entropy(y, t, reduction=reduction)
    return -(t * torch.log(y.clamp(1e-7, 1 - 1e-7))).sum() / y.shape[0]

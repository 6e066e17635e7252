"""The whole-network pass: NumPy forward and backward over `layers_of`, autograd beside it."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.backward.netprop.architectures import layers_of
from gradviz.backward.netprop.layers import Array, _array, _Mismatch
from gradviz.backward.netprop.losses import _resolve_loss, _target, _torch_loss
from gradviz.errors import ArgumentError, GradvizError


@dataclass(frozen=True)
class NumpyBackprop:
    """What `numpy_backprop` found: the loss, every parameter's gradient, the steps taken."""

    grads: dict[str, Array]
    loss: float
    output: Array = field(repr=False)
    grad_input: Array = field(repr=False)
    layers: tuple[str, ...]
    loss_name: str

    def compare(self, torch_grads: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One row per parameter: NumPy's gradient beside torch's.

        Each row has ``name``, ``shape``, ``max_abs_diff``, ``max_rel_diff`` (the largest
        difference over the largest |torch| entry of that parameter), and the worst entry:
        ``worst_index`` with its ``numpy`` and ``torch`` values. ``None`` counts as zeros
        (autograd leaves unused parameters without a gradient).
        """
        missing = [n for n in self.grads if n not in torch_grads]
        extra = [n for n in torch_grads if n not in self.grads]
        if missing or extra:
            raise ArgumentError(
                "torch_grads",
                sorted(torch_grads),
                f"give one gradient per parameter (missing {missing}, unknown {extra}); "
                "autograd_grads() builds it",
            )
        rows = []
        for name, ours in self.grads.items():
            theirs = torch_grads[name]
            theirs = np.zeros_like(ours) if theirs is None else _array(theirs)
            if theirs.shape != ours.shape:
                raise ArgumentError(
                    f"torch_grads[{name!r}]",
                    f"shape {theirs.shape}",
                    f"the parameter has shape {ours.shape}",
                )
            diff = np.abs(ours - theirs)
            worst = np.unravel_index(int(diff.argmax()), diff.shape) if diff.size else ()
            max_abs = float(diff.max()) if diff.size else 0.0
            scale = float(np.abs(theirs).max()) if theirs.size else 0.0
            rows.append(
                {
                    "name": name,
                    "shape": tuple(ours.shape),
                    "max_abs_diff": max_abs,
                    "max_rel_diff": max_abs / scale
                    if scale
                    else (0.0 if max_abs == 0 else math.inf),
                    "worst_index": tuple(int(i) for i in worst),
                    "numpy": float(ours[worst]) if diff.size else 0.0,
                    "torch": float(theirs[worst]) if diff.size else 0.0,
                }
            )
        return rows

    def __str__(self) -> str:
        lines = [f"loss ({self.loss_name}) = {self.loss:.6g}", "layers:"]
        lines += [f"  {i}. {layer}" for i, layer in enumerate(self.layers)]
        lines.append("gradients:")
        lines += [
            f"  {n} {tuple(g.shape)}  |g|max = {np.abs(g).max() if g.size else 0:.3g}"
            for n, g in self.grads.items()
        ]
        return "\n".join(lines)


def _input(x: Any) -> Array:
    try:
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if a.dtype.kind not in "biuf":
            raise TypeError(a.dtype)
        return a.astype(np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError("x", x, "give a tensor or array of real numbers") from None


def numpy_backprop(
    model: nn.Module, x: Any, target: Any = None, loss: Any = "mse", *, reduction: str | None = None
) -> NumpyBackprop:
    """Every parameter's gradient of ``loss(model(x), target)``, with NumPy alone.

    ``loss`` is a name from `LOSSES` (``"mse"``, ``"nll"``, ``"cross_entropy"``,
    ``"bce"``, ``"sum"``, ``"half_sse"``, ``"categorical_crossentropy"``), a torch loss
    module (``nn.MSELoss(reduction='sum')``, ``NLLLoss``, ``CrossEntropyLoss``,
    ``BCELoss``), or one of the functional/preset losses (``F.nll_loss``,
    ``presets.quadrant_loss``, …). ``reduction`` is ``"mean"``, ``"sum"`` or
    ``"batchmean"`` (the sum over the batch size, seed 002's loss) where the loss allows it.

    The model is only read: its parameters and running statistics are copied to float64
    first. Dropout must be off (``model.eval()`` or ``p=0``): its masks are random.
    """
    spec, reduction = _resolve_loss(loss, reduction)
    layers = layers_of(model)
    x_np = _input(x)

    h, caches = x_np, []
    for i, layer in enumerate(layers):
        try:
            h, cache = layer.forward(h)
        except _Mismatch as e:
            raise ArgumentError(
                "x", f"shape {x_np.shape}", f"layer {i} ({layer.where}: {layer!r}) {e}"
            ) from None
        caches.append(cache)

    t = _target(spec, h, target)
    value, g = spec.fn(h, t, reduction)

    names = {id(p): name for name, p in model.named_parameters()}
    grads = {
        name: np.zeros(tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad
    }
    for layer, cache in zip(reversed(layers), reversed(caches), strict=True):
        g, param_grads = layer.backward(g, cache)
        for role, grad in param_grads.items():
            name = names.get(id(layer.params[role]))
            if name is None:
                raise GradvizError(
                    f"{layer.where}: {layer!r} uses a {role} that is not a parameter of the model"
                )
            if name in grads:
                grads[name] += grad  # a shared weight (DynamicNet) collects every use
    return NumpyBackprop(
        grads=grads,
        loss=value,
        output=h,
        grad_input=g,
        layers=tuple(f"{layer.where}: {layer!r}" for layer in layers),
        loss_name=f"{spec.name}, reduction={reduction!r}",
    )


def autograd_grads(
    model: nn.Module, x: Any, target: Any = None, loss: Any = "mse", *, reduction: str | None = None
) -> tuple[float, dict[str, Array]]:
    """The same loss and gradients as `numpy_backprop`, from torch.autograd.

    Runs on a float64 deep copy, so the model (its gradients, its BatchNorm running
    statistics) is left as it was. Unused parameters get zeros.
    """
    spec, reduction = _resolve_loss(loss, reduction)
    layers_of(model)  # the same checks: no live dropout, DynamicNet's depth pinned, …
    m = copy.deepcopy(model).double()
    xt = torch.as_tensor(_input(x))
    y = m(xt)
    t = None
    if spec.target != "none":
        t_np = _target(spec, y.detach().numpy(), target)
        t = torch.from_numpy(t_np)
    value = _torch_loss(spec, reduction, y, t)
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    if not named:
        return value.item(), {}
    got = torch.autograd.grad(value, [p for _, p in named], allow_unused=True)
    grads = {
        n: np.zeros(tuple(p.shape)) if g is None else g.detach().numpy().copy()
        for (n, p), g in zip(named, got, strict=True)
    }
    return value.item(), grads

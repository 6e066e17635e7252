"""The NumPy programs' numbers beside autograd's, per weight, from the same initial weights."""

from __future__ import annotations

import numpy as np
import torch

from gradviz.errors import ArgumentError
from gradviz.train.recipe import get_preset
from gradviz.zoo.presets.losses import half_sum_squared_error
from gradviz.zoo.seednets import NeuralNetWork, TwoLayerNumpy


def numpy_vs_autograd(
    name: str, seed: int = 0, sample: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The NumPy program's numbers beside autograd's, per weight: ``{key: (numpy, autograd)}``.

    * ``two-layer-numpy``: ``w1``, ``w2``: the hand-derived gradients of Σ(y_pred − y)²
      and autograd's. They agree.
    * ``scratch-784-250-10``: the weight change of one ``NeuralNetWork.train`` call on
      sample ``sample`` beside −lr × autograd's gradient of ½·Σ(targets − outputs)².
      ``who`` agrees. ``wih`` does not: the tutorial sends the raw output errors back
      through who and skips the output sigmoid's derivative o·(1−o) (see
      `NeuralNetWork`). ``wih_tutorial_rule`` shows what the update is instead: −lr ×
      autograd's gradient with the output sigmoid's backward replaced by the identity
      (straight-through); that pair agrees.

    Both sides run in float64 from the preset's initial weights for ``seed``.
    """
    preset = get_preset(name)
    model = preset.build(seed)
    d = preset.data(seed)
    if preset.name == "two-layer-numpy":
        w1, w2 = model.get_parameter("w1"), model.get_parameter("w2")
        prog = TwoLayerNumpy(w1.detach().numpy().copy(), w2.detach().numpy().copy())
        _, g1, g2 = prog.gradients(d.X.numpy(), d.y.numpy())
        loss = preset.forward_loss(model, (d.X, d.y))
        loss.backward()
        return {"w1": (g1, _grad(w1).copy()), "w2": (g2, _grad(w2).copy())}
    if preset.name == "scratch-784-250-10":
        if not isinstance(sample, int) or isinstance(sample, bool) or not 0 <= sample < d.n:
            raise ArgumentError("sample", sample, f"use a sample index from 0 to {d.n - 1}")
        lr = preset.lr
        x, t = d.X[sample : sample + 1], d.y[sample : sample + 1]
        wih_p, who_p = model.get_parameter("wih"), model.get_parameter("who")
        wih0, who0 = wih_p.detach().numpy().copy(), who_p.detach().numpy().copy()
        net = NeuralNetWork(784, 250, 10, lr, wih=wih0.copy(), who=who0.copy())
        net.train(x[0].numpy(), t[0].numpy())
        preset.forward_loss(model, (x, t)).backward()
        # the tutorial's rule for wih: the output sigmoid passes gradients straight through
        wih = wih_p.detach().clone().requires_grad_()
        z = torch.sigmoid(x.mm(wih.t())).mm(who_p.detach().t())
        o = z + (torch.sigmoid(z) - z).detach()
        half_sum_squared_error(o, t).backward()
        return {
            "who": (net.who - who0, -lr * _grad(who_p)),
            "wih": (net.wih - wih0, -lr * _grad(wih_p)),
            "wih_tutorial_rule": (net.wih - wih0, -lr * _grad(wih)),
        }
    raise ArgumentError("name", name, "use 'two-layer-numpy' or 'scratch-784-250-10'")


def _grad(t: torch.Tensor) -> np.ndarray:
    # every caller ran backward() through t just before; no grad here is a bug in this module
    if t.grad is None:
        raise RuntimeError("numpy_vs_autograd: backward() left no gradient on a weight")
    return t.grad.numpy()

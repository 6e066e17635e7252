"""Backprop through a whole network in NumPy, layer by layer, to set beside autograd's gradients.

Seed 003 first trains its two-layer net in NumPy with a backward pass derived by hand::

    g_y = 2(y_pred − y);  g_w2 = h_reluᵀ·g_y;  g_hrelu = g_y·w2ᵀ
    g_h = g_hrelu·[h > 0];  g_w1 = xᵀ·g_h

`numpy_backprop` does the same for any network it can read: each layer is a small class
whose ``forward(x) -> (y, cache)`` keeps what its ``backward(grad_y, cache) ->
(grad_x, {role: grad})`` needs, the two written side by side. Torch is used only to read
the parameters, inputs and targets into float64 arrays; all the arithmetic is NumPy.

A module becomes a list of layers through `ARCHITECTURES`, one entry per module class.
An entry may list other modules (expanded in turn), so a network class written by hand,
such as the seed 001 CNN, is one entry that names its submodules and its functional steps::

    register_architecture(MyNet, lambda m: [m.fc1, ReLU(), m.fc2, LogSoftmax(dim=1)])

This package knows torch's layers only; network classes (the zoo's presets and examples)
and loss functions (`register_loss`) are registered by the modules that define them, so
nothing here imports the packages above it.

`autograd_grads` computes the same loss and gradients with torch.autograd (on a float64
copy of the model) and `NumpyBackprop.compare` puts the two side by side per parameter.

Modules: `layers` (weighted sums, shapes, activations), `windows` (convolution, pools),
`norm`, `architectures` (module → layers, the registry), `losses`, `backprop` (the pass).
"""

from __future__ import annotations

from gradviz.backward.netprop.architectures import (
    ARCHITECTURES,
    dropout_layer,
    layers_of,
    register_architecture,
    supported_modules,
)
from gradviz.backward.netprop.backprop import NumpyBackprop, autograd_grads, numpy_backprop
from gradviz.backward.netprop.layers import (
    GELU,
    Clamp,
    Dropout,
    Flatten,
    FoldedLinear,
    Layer,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MatMul,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from gradviz.backward.netprop.losses import LOSSES, register_loss
from gradviz.backward.netprop.norm import BatchNorm, LayerNorm
from gradviz.backward.netprop.windows import AdaptiveAvgPool, AvgPool2d, Conv2d, MaxPool2d

__all__ = [
    "ARCHITECTURES",
    "AdaptiveAvgPool",
    "AvgPool2d",
    "BatchNorm",
    "Clamp",
    "Conv2d",
    "Dropout",
    "Flatten",
    "FoldedLinear",
    "GELU",
    "LOSSES",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MatMul",
    "MaxPool2d",
    "NumpyBackprop",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "autograd_grads",
    "dropout_layer",
    "layers_of",
    "numpy_backprop",
    "register_architecture",
    "register_loss",
    "supported_modules",
]

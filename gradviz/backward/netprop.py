"""Backprop through a whole network in NumPy, layer by layer, to set beside autograd's gradients.

Seed 003 first trains its two-layer net in NumPy with a backward pass derived by hand::

    g_y = 2(y_pred − y);  g_w2 = h_reluᵀ·g_y;  g_hrelu = g_y·w2ᵀ;  g_h = g_hrelu·[h > 0];  g_w1 = xᵀ·g_h

`numpy_backprop` does the same for any network it can read: each layer is a small class
whose ``forward(x) -> (y, cache)`` keeps what its ``backward(grad_y, cache) ->
(grad_x, {role: grad})`` needs, the two written side by side. Torch is used only to read
the parameters, inputs and targets into float64 arrays; all the arithmetic is NumPy.

A module becomes a list of layers through `ARCHITECTURES`, one entry per module class.
An entry may list other modules (expanded in turn), so a network class written by hand,
such as the seed 001 CNN, is one entry that names its submodules and its functional steps::

    ARCHITECTURES[MyNet] = lambda m: [m.fc1, ReLU(), m.fc2, LogSoftmax(dim=1)]

`autograd_grads` computes the same loss and gradients with torch.autograd (on a float64
copy of the model) and `NumpyBackprop.compare` puts the two side by side per parameter.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from gradviz.errors import ArgumentError, GradvizError
from gradviz.zoo.examples import MnistNet
from gradviz.zoo.examples import TwoLayerNet as ExampleTwoLayerNet

__all__ = [
    "ARCHITECTURES",
    "AdaptiveAvgPool",
    "AvgPool2d",
    "BatchNorm",
    "Clamp",
    "Conv2d",
    "Dropout",
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
    "layers_of",
    "numpy_backprop",
    "supported_modules",
]

Array = np.ndarray


class _Mismatch(Exception):
    """A layer cannot take the array it was given; numpy_backprop adds where and raises."""


def _array(t: Any) -> Array:
    """A float64 NumPy copy of a tensor or array (the one place torch values are read)."""
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy().copy()
    return np.array(t, dtype=np.float64)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# =========================================================================== layers


class Layer:
    """One step of the forward pass with its backward beside it.

    ``params`` maps a role (``"weight"``, ``"bias"``) to the module's parameter, so the
    driver can file each gradient under the parameter's name; ``where`` says which module
    (or which line of a ``forward``) the layer stands for.
    """

    where: str = ""

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}

    def param(self, role: str, tensor: torch.Tensor | None) -> Array | None:
        """Remember ``tensor`` under ``role`` and return its values as float64."""
        if tensor is None:
            return None
        self.params[role] = tensor
        return _array(tensor)

    def forward(self, x: Array) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, grad_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


def _rows(a: Array) -> Array:
    """Every leading axis folded into one: (…, features) → (rows, features)."""
    return a.reshape(-1, a.shape[-1])


def _sum_to(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a broadcast gradient back down to ``shape`` (the adjoint of broadcasting)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


# ----------------------------------------------------------------- weighted sums


class Linear(Layer):
    """nn.Linear: y = x·Wᵀ + b, W stored (out × in)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = self.param("weight", weight)
        self.b = self.param("bias", bias)

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim == 0 or x.shape[-1] != self.w.shape[1]:
            raise _Mismatch(f"expects {self.w.shape[1]} input features, got shape {x.shape}")
        y = x @ self.w.T
        if self.b is not None:
            y = y + self.b
        return y, x

    def backward(self, g_y: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        grads = {"weight": _rows(g_y).T @ _rows(x)}  # g_W = g_yᵀ·x
        if self.b is not None:
            grads["bias"] = _rows(g_y).sum(axis=0)  # g_b = Σ_rows g_y
        return g_y @ self.w, grads  # g_x = g_y·W

    def __repr__(self) -> str:
        return f"Linear({self.w.shape[1]}→{self.w.shape[0]}{'' if self.b is not None else ', no bias'})"


class MatMul(Layer):
    """x·W + b with W stored (in × out), as the seed programs write with loose Parameters."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = self.param("weight", weight)
        self.b = self.param("bias", bias)

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim != 2 or x.shape[1] != self.w.shape[0]:
            raise _Mismatch(f"expects (rows, {self.w.shape[0]}), got shape {x.shape}")
        y = x @ self.w
        if self.b is not None:
            y = y + self.b
        return y, x

    def backward(self, g_y: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        grads = {"weight": x.T @ g_y}  # g_W = xᵀ·g_y, as seed 003's g_w2 = h_reluᵀ·g_y
        if self.b is not None:
            grads["bias"] = _sum_to(g_y, self.b.shape)  # b was broadcast over the rows
        return g_y @ self.w.T, grads

    def __repr__(self) -> str:
        return f"MatMul({self.w.shape[0]}→{self.w.shape[1]})"


class FoldedLinear(Layer):
    """Seed 002's bias folded into W: [x 1]·W, the last row of W being the bias."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.w = self.param("weight", weight)

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim != 2 or x.shape[1] + 1 != self.w.shape[0]:
            raise _Mismatch(f"expects (rows, {self.w.shape[0] - 1}), got shape {x.shape}")
        x1 = np.hstack([x, np.ones((x.shape[0], 1))])
        return x1 @ self.w, x1

    def backward(self, g_y: Array, x1: Array) -> tuple[Array, dict[str, Array]]:
        # the column of ones is a constant: its gradient is dropped
        return g_y @ self.w[:-1].T, {"weight": x1.T @ g_y}

    def __repr__(self) -> str:
        return f"FoldedLinear({self.w.shape[0] - 1}+1→{self.w.shape[1]})"


# ------------------------------------------------------------ windows (conv, pools)


def _windows(
    xp: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Array:
    """(…, H, W) → (…, OH, OW, kh, kw): every patch the kernel sees, as a strided view."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    v = sliding_window_view(xp, span, axis=(-2, -1))
    return v[..., ::sh, ::sw, ::dh, ::dw]


def _add_windows(
    g_win: Array, shape: tuple[int, ...], stride: tuple[int, int], dilation: tuple[int, int]
) -> Array:
    """The adjoint of `_windows`: add each patch's gradient back where the patch came from."""
    *_, oh, ow, kh, kw = g_win.shape
    (sh, sw), (dh, dw) = stride, dilation
    g = np.zeros(shape)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            g[..., rows, cols] += g_win[..., i, j]
    return g


def _pad(x: Array, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> Array:
    width = [(0, 0)] * (x.ndim - 2) + list(pads)
    return np.pad(x, width, constant_values=value)


def _unpad(g: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    (t, b), (left, r) = pads
    return g[..., t : g.shape[-2] - b, left : g.shape[-1] - r]


def _check_windows(x: Array, pads, kernel, dilation, what: str) -> None:
    for axis, (lo, hi), k, d in zip((-2, -1), pads, kernel, dilation, strict=True):
        if x.shape[axis] + lo + hi < d * (k - 1) + 1:
            raise _Mismatch(f"{what} of size {kernel} does not fit the padded input {x.shape[-2:]}")


class Conv2d(Layer):
    """nn.Conv2d (groups=1) through im2col: y[n,o,i,j] = Σ_{c,k,l} W[o,c,k,l]·x_patch[n,c,i,j,k,l] + b[o]."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        pads: tuple[tuple[int, int], tuple[int, int]],
        dilation: tuple[int, int],
    ) -> None:
        super().__init__()
        self.w = self.param("weight", weight)
        self.b = self.param("bias", bias)
        self.stride, self.pads, self.dilation = stride, pads, dilation

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim != 4 or x.shape[1] != self.w.shape[1]:
            raise _Mismatch(
                f"expects (batch, {self.w.shape[1]}, height, width), got shape {x.shape}"
                + (" (add a batch axis: x.unsqueeze(0))" if x.ndim == 3 else "")
            )
        kernel = self.w.shape[2:]
        _check_windows(x, self.pads, kernel, self.dilation, "the kernel")
        xp = _pad(x, self.pads)
        patches = _windows(xp, kernel, self.stride, self.dilation)  # (N, C, OH, OW, kh, kw)
        y = np.einsum("ncijkl,ockl->noij", patches, self.w, optimize=True)
        if self.b is not None:
            y = y + self.b[None, :, None, None]
        return y, (xp.shape, patches)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xp_shape, patches = cache
        grads = {"weight": np.einsum("noij,ncijkl->ockl", g_y, patches, optimize=True)}
        if self.b is not None:
            grads["bias"] = g_y.sum(axis=(0, 2, 3))
        g_patches = np.einsum("noij,ockl->ncijkl", g_y, self.w, optimize=True)
        g_xp = _add_windows(g_patches, xp_shape, self.stride, self.dilation)
        return _unpad(g_xp, self.pads), grads

    def __repr__(self) -> str:
        o, c, kh, kw = self.w.shape
        return f"Conv2d({c}→{o}, kernel {kh}×{kw}, stride {self.stride}, padding {self.pads})"


class MaxPool2d(Layer):
    """The largest entry of each window; backward sends the gradient to that entry only."""

    def __init__(self, kernel, stride=None, padding=0, dilation=1) -> None:
        super().__init__()
        self.kernel = _pair(kernel)
        self.stride = self.kernel if stride is None else _pair(stride)
        ph, pw = _pair(padding)
        self.pads = ((ph, ph), (pw, pw))
        self.dilation = _pair(dilation)

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim not in (3, 4):
            raise _Mismatch(f"expects (batch, channels, height, width), got shape {x.shape}")
        _check_windows(x, self.pads, self.kernel, self.dilation, "the window")
        xp = _pad(x, self.pads, -np.inf)  # padding never wins the max
        patches = _windows(xp, self.kernel, self.stride, self.dilation)
        flat = patches.reshape(*patches.shape[:-2], -1)
        # first largest entry in row-major order, as torch picks among ties
        idx = flat.argmax(axis=-1)[..., None]
        return np.take_along_axis(flat, idx, axis=-1)[..., 0], (xp.shape, idx, patches.shape)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xp_shape, idx, patches_shape = cache
        g_flat = np.zeros((*patches_shape[:-2], patches_shape[-2] * patches_shape[-1]))
        np.put_along_axis(g_flat, idx, g_y[..., None], axis=-1)
        g_xp = _add_windows(g_flat.reshape(patches_shape), xp_shape, self.stride, self.dilation)
        return _unpad(g_xp, self.pads), {}

    def __repr__(self) -> str:
        return f"MaxPool2d(kernel {self.kernel}, stride {self.stride})"


class AvgPool2d(Layer):
    """The mean of each window; backward spreads the gradient evenly over the window."""

    def __init__(
        self, kernel, stride=None, padding=0, count_include_pad=True, divisor_override=None
    ) -> None:
        super().__init__()
        self.kernel = _pair(kernel)
        self.stride = self.kernel if stride is None else _pair(stride)
        ph, pw = _pair(padding)
        self.pads = ((ph, ph), (pw, pw))
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def _divisor(self, x: Array) -> Array | float:
        if self.divisor_override:
            return float(self.divisor_override)
        if self.count_include_pad:
            return float(self.kernel[0] * self.kernel[1])
        # how many real (unpadded) entries each window covers
        ones = _pad(np.ones(x.shape[-2:]), self.pads)
        return _windows(ones, self.kernel, self.stride, (1, 1)).sum(axis=(-2, -1))

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim not in (3, 4):
            raise _Mismatch(f"expects (batch, channels, height, width), got shape {x.shape}")
        _check_windows(x, self.pads, self.kernel, (1, 1), "the window")
        xp = _pad(x, self.pads)
        patches = _windows(xp, self.kernel, self.stride, (1, 1))
        divisor = self._divisor(x)
        return patches.sum(axis=(-2, -1)) / divisor, (xp.shape, patches.shape, divisor)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xp_shape, patches_shape, divisor = cache
        g_patches = np.broadcast_to((g_y / divisor)[..., None, None], patches_shape)
        g_xp = _add_windows(g_patches, xp_shape, self.stride, (1, 1))
        return _unpad(g_xp, self.pads), {}

    def __repr__(self) -> str:
        return f"AvgPool2d(kernel {self.kernel}, stride {self.stride})"


def _bins(n_in: int, n_out: int) -> list[slice]:
    # torch's adaptive bins: start ⌊i·n/m⌋, end ⌈(i+1)·n/m⌉ (they overlap when m ∤ n)
    return [slice(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


class AdaptiveAvgPool(Layer):
    """nn.AdaptiveAvgPool1d/2d: the mean over each of torch's adaptive bins of the last axes."""

    def __init__(self, output_size: Sequence[int | None]) -> None:
        super().__init__()
        self.output_size = tuple(output_size)

    def forward(self, x: Array) -> tuple[Array, Any]:
        k = len(self.output_size)
        if x.ndim < k + 1:
            raise _Mismatch(f"expects (channels, …) with {k} spatial axes, got shape {x.shape}")
        sizes = [n if o is None else o for n, o in zip(x.shape[-k:], self.output_size, strict=True)]
        bins = [_bins(n, o) for n, o in zip(x.shape[-k:], sizes, strict=True)]
        y = np.zeros((*x.shape[:-k], *sizes))
        for out_index in np.ndindex(*sizes):
            window = tuple(b[i] for b, i in zip(bins, out_index, strict=True))
            y[(..., *out_index)] = x[(..., *window)].mean(axis=tuple(range(-k, 0)))
        return y, (x.shape, bins)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        x_shape, bins = cache
        k = len(bins)
        g_x = np.zeros(x_shape)
        for out_index in np.ndindex(*g_y.shape[-k:]):
            window = tuple(b[i] for b, i in zip(bins, out_index, strict=True))
            count = math.prod(s.stop - s.start for s in window)
            g_x[(..., *window)] += g_y[(..., *out_index)][(...,) + (None,) * k] / count
        return g_x, {}

    def __repr__(self) -> str:
        return f"AdaptiveAvgPool{len(self.output_size)}d({self.output_size})"


# ------------------------------------------------------------------------ shapes


class Reshape(Layer):
    """x.view(shape), e.g. seed 001's x.view(-1, 320)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Array) -> tuple[Array, Any]:
        known = math.prod(s for s in self.shape if s != -1)
        if x.size % max(known, 1) or (-1 not in self.shape and known != x.size):
            raise _Mismatch(f"cannot view {x.size} numbers as {self.shape}")
        return x.reshape(self.shape), x.shape

    def backward(self, g_y: Array, x_shape: Any) -> tuple[Array, dict[str, Array]]:
        return g_y.reshape(x_shape), {}

    def __repr__(self) -> str:
        return f"Reshape{self.shape}"


class Flatten(Layer):
    """nn.Flatten: axes start_dim … end_dim merged into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim == 0:
            return x.reshape(1), x.shape
        start, end = self.start_dim % x.ndim, self.end_dim % x.ndim
        return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :]), x.shape

    def backward(self, g_y: Array, x_shape: Any) -> tuple[Array, dict[str, Array]]:
        return g_y.reshape(x_shape), {}


# ------------------------------------------------------------------- activations


class ReLU(Layer):
    """max(x, 0); the gradient passes where x > 0 (seed 003: g_h[h < 0] = 0)."""

    def forward(self, x: Array) -> tuple[Array, Any]:
        return np.maximum(x, 0.0), x > 0

    def backward(self, g_y: Array, positive: Array) -> tuple[Array, dict[str, Array]]:
        return g_y * positive, {}


class Clamp(Layer):
    """x.clamp(min, max), seed 003's ReLU; the gradient passes where min ≤ x ≤ max."""

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: Array) -> tuple[Array, Any]:
        inside = np.ones(x.shape, dtype=bool)
        if self.min is not None:
            inside &= x >= self.min
        if self.max is not None:
            inside &= x <= self.max
        return np.clip(x, self.min, self.max), inside

    def backward(self, g_y: Array, inside: Array) -> tuple[Array, dict[str, Array]]:
        return g_y * inside, {}

    def __repr__(self) -> str:
        return f"Clamp(min={self.min}, max={self.max})"


class LeakyReLU(Layer):
    """x for x > 0, slope·x otherwise; the gradient is 1 or slope."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.slope = negative_slope

    def forward(self, x: Array) -> tuple[Array, Any]:
        return np.where(x > 0, x, self.slope * x), x > 0

    def backward(self, g_y: Array, positive: Array) -> tuple[Array, dict[str, Array]]:
        return np.where(positive, g_y, self.slope * g_y), {}

    def __repr__(self) -> str:
        return f"LeakyReLU({self.slope})"


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):  # e^−x → inf for x < −709; 1/inf is the right 0
        return 1.0 / (1.0 + np.exp(-x))


class Sigmoid(Layer):
    """σ(x) = 1/(1 + e^−x); σ' = σ·(1 − σ), read from the output."""

    def forward(self, x: Array) -> tuple[Array, Any]:
        y = _sigmoid(x)
        return y, y

    def backward(self, g_y: Array, y: Array) -> tuple[Array, dict[str, Array]]:
        return g_y * y * (1.0 - y), {}


class Tanh(Layer):
    """tanh(x); tanh' = 1 − tanh², read from the output."""

    def forward(self, x: Array) -> tuple[Array, Any]:
        y = np.tanh(x)
        return y, y

    def backward(self, g_y: Array, y: Array) -> tuple[Array, dict[str, Array]]:
        return g_y * (1.0 - y * y), {}


_erf = np.vectorize(math.erf, otypes=[np.float64])


class GELU(Layer):
    """x·Φ(x) with Φ(x) = ½(1 + erf(x/√2)); GELU' = Φ(x) + x·φ(x). ``approximate='tanh'`` too."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Array) -> tuple[Array, Any]:
        if self.approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
            t = np.tanh(inner)
            return 0.5 * x * (1 + t), (x, t)
        cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2)))
        return x * cdf, (x, cdf)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        x, c = cache
        if self.approximate == "tanh":
            d_inner = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
            return g_y * (0.5 * (1 + c) + 0.5 * x * (1 - c * c) * d_inner), {}
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g_y * (c + x * pdf), {}

    def __repr__(self) -> str:
        return "GELU" if self.approximate == "none" else f"GELU({self.approximate})"


class Softmax(Layer):
    """e^x / Σ e^x along ``dim``; g_x = y·(g_y − Σ g_y·y)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Array) -> tuple[Array, Any]:
        e = np.exp(x - x.max(axis=self.dim, keepdims=True))
        y = e / e.sum(axis=self.dim, keepdims=True)
        return y, y

    def backward(self, g_y: Array, y: Array) -> tuple[Array, dict[str, Array]]:
        return y * (g_y - (g_y * y).sum(axis=self.dim, keepdims=True)), {}

    def __repr__(self) -> str:
        return f"Softmax(dim={self.dim})"


class LogSoftmax(Layer):
    """x − log Σ e^x along ``dim``; g_x = g_y − softmax·Σ g_y."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Array) -> tuple[Array, Any]:
        shifted = x - x.max(axis=self.dim, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=self.dim, keepdims=True))
        return y, y

    def backward(self, g_y: Array, y: Array) -> tuple[Array, dict[str, Array]]:
        return g_y - np.exp(y) * g_y.sum(axis=self.dim, keepdims=True), {}

    def __repr__(self) -> str:
        return f"LogSoftmax(dim={self.dim})"


class Dropout(Layer):
    """Dropout that is off (eval mode or p = 0): the identity, forward and backward."""

    def forward(self, x: Array) -> tuple[Array, Any]:
        return x, None

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        return g_y, {}


# ------------------------------------------------------------------ normalization


def _normalize_backward(g_xhat: Array, xhat: Array, inv_std: Array, axes: tuple[int, ...]) -> Array:
    """Backward of x̂ = (x − mean)/√(var + ε) with mean and var taken over ``axes``:
    g_x = (g_x̂ − mean(g_x̂) − x̂·mean(g_x̂·x̂)) / √(var + ε)."""
    mean_g = g_xhat.mean(axis=axes, keepdims=True)
    mean_gx = (g_xhat * xhat).mean(axis=axes, keepdims=True)
    return inv_std * (g_xhat - mean_g - xhat * mean_gx)


class BatchNorm(Layer):
    """nn.BatchNorm1d/2d on axis 1: batch statistics in training, running ones in eval.

    Training mode normalizes by the batch's mean and biased variance, so every sample's
    gradient depends on the others; eval mode is a fixed affine map per channel. (The
    NumPy pass does not update the running statistics; torch's forward does.)
    """

    def __init__(self, module: nn.modules.batchnorm._BatchNorm, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.w = self.param("weight", module.weight)
        self.b = self.param("bias", module.bias)
        self.eps = module.eps
        self.dims = dims  # the input ranks torch accepts
        # torch's rule: batch statistics when training or when no running ones are kept
        self.use_batch = module.training or module.running_mean is None
        if not self.use_batch:
            self.running_mean = _array(module.running_mean)
            self.running_var = _array(module.running_var)
        self.channels = module.num_features

    def _channel(self, v: Array, ndim: int) -> Array:
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x: Array) -> tuple[Array, Any]:
        if x.ndim not in self.dims or x.shape[1] != self.channels:
            raise _Mismatch(
                f"expects a {' or '.join(f'{d}-D' for d in self.dims)} input with "
                f"{self.channels} channels on axis 1, got shape {x.shape}"
            )
        axes = tuple(a for a in range(x.ndim) if a != 1)
        if self.use_batch:
            if x.size // x.shape[1] < 2:
                raise _Mismatch(
                    f"batch statistics need more than one value per channel, got shape {x.shape}"
                )
            mean = x.mean(axis=axes, keepdims=True)
            var = x.var(axis=axes, keepdims=True)  # biased, as torch normalizes
        else:
            mean = self._channel(self.running_mean, x.ndim)
            var = self._channel(self.running_var, x.ndim)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv_std
        y = xhat
        if self.w is not None:
            y = y * self._channel(self.w, x.ndim) + self._channel(self.b, x.ndim)
        return y, (xhat, inv_std, axes)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xhat, inv_std, axes = cache
        grads = {}
        g_xhat = g_y
        if self.w is not None:
            grads = {"weight": (g_y * xhat).sum(axis=axes), "bias": g_y.sum(axis=axes)}
            g_xhat = g_y * self._channel(self.w, g_y.ndim)
        if self.use_batch:
            return _normalize_backward(g_xhat, xhat, inv_std, axes), grads
        return g_xhat * inv_std, grads  # running statistics are constants

    def __repr__(self) -> str:
        mode = "batch statistics" if self.use_batch else "running statistics"
        return f"BatchNorm({self.channels}, {mode})"


class LayerNorm(Layer):
    """nn.LayerNorm: each sample normalized over its last len(normalized_shape) axes."""

    def __init__(self, module: nn.LayerNorm) -> None:
        super().__init__()
        self.shape = tuple(module.normalized_shape)
        self.eps = module.eps
        self.w = self.param("weight", module.weight)
        self.b = self.param("bias", module.bias)

    def forward(self, x: Array) -> tuple[Array, Any]:
        k = len(self.shape)
        if x.shape[x.ndim - k :] != self.shape:
            raise _Mismatch(f"expects inputs ending in {self.shape}, got shape {x.shape}")
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + self.eps)
        xhat = (x - mean) * inv_std
        y = xhat if self.w is None else xhat * self.w
        if self.b is not None:
            y = y + self.b
        return y, (xhat, inv_std, axes)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xhat, inv_std, axes = cache
        lead = tuple(range(g_y.ndim - len(axes)))
        grads = {}
        if self.w is not None:
            grads["weight"] = (g_y * xhat).sum(axis=lead)
        if self.b is not None:
            grads["bias"] = g_y.sum(axis=lead)
        g_xhat = g_y if self.w is None else g_y * self.w
        return _normalize_backward(g_xhat, xhat, inv_std, axes), grads

    def __repr__(self) -> str:
        return f"LayerNorm{self.shape}"


# ==================================================================== architectures

Entry = Callable[[nn.Module], list["Layer | nn.Module"]]


def _conv2d(m: nn.Conv2d) -> list[Layer]:
    _require(m, m.groups == 1, f"groups={m.groups}", "only groups=1 convolutions are written out")
    _require(
        m, m.padding_mode == "zeros", f"padding_mode={m.padding_mode!r}", "use padding_mode='zeros'"
    )
    kernel, dilation = m.kernel_size, m.dilation
    if m.padding == "same":
        # torch pads d·(k−1) in total, the odd one on the bottom/right
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    elif m.padding == "valid":
        pads = ((0, 0), (0, 0))
    else:
        ph, pw = _pair(m.padding)
        pads = ((ph, ph), (pw, pw))
    return [Conv2d(m.weight, m.bias, _pair(m.stride), pads, _pair(dilation))]


def _maxpool(m: nn.MaxPool2d) -> list[Layer]:
    _require(m, not m.ceil_mode, "ceil_mode=True", "use ceil_mode=False")
    _require(m, not m.return_indices, "return_indices=True", "use return_indices=False")
    return [MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation)]


def _avgpool(m: nn.AvgPool2d) -> list[Layer]:
    _require(m, not m.ceil_mode, "ceil_mode=True", "use ceil_mode=False")
    return [AvgPool2d(m.kernel_size, m.stride, m.padding, m.count_include_pad, m.divisor_override)]


def _adaptive(k: int) -> Entry:
    def entry(m: nn.Module) -> list[Layer]:
        size = m.output_size
        return [AdaptiveAvgPool((size,) * k if isinstance(size, int) or size is None else size)]

    return entry


def _dropout(m: nn.modules.dropout._DropoutNd) -> list[Layer]:
    return [_dropout_layer(m.p, m.training, type(m).__name__)]


def _dropout_layer(p: float, training: bool, what: str) -> Dropout:
    if training and p > 0:
        raise ArgumentError(
            "model",
            f"{what} (p={p}) in training mode",
            "dropout draws a random mask on every forward that NumPy cannot replay; "
            "call model.eval() first (or use p=0)",
        )
    return Dropout()


def _softmax_dim(m: nn.Softmax | nn.LogSoftmax) -> int:
    _require(m, m.dim is not None, "dim=None", "give the axis, e.g. nn.Softmax(dim=1)")
    return m.dim


def _batchnorm(dims: tuple[int, ...]) -> Entry:
    return lambda m: [BatchNorm(m, dims)]


def _mnist_net(m: MnistNet) -> list[Layer | nn.Module]:
    # Net.forward, line by line
    return [
        m.conv1, MaxPool2d(2), ReLU(),  # relu(max_pool2d(conv1(x), 2))
        m.conv2, m.conv2_drop, MaxPool2d(2), ReLU(),  # relu(max_pool2d(conv2_drop(conv2(x)), 2))
        Reshape((-1, 320)),  # x.view(-1, 320)
        m.fc1, ReLU(),  # relu(fc1(x))
        _dropout_layer(0.5, m.training, "F.dropout in Net.forward"),  # F.dropout(x, training=…)
        m.fc2, LogSoftmax(dim=1),  # log_softmax(fc2(x), dim=1)
    ]  # fmt: skip


ARCHITECTURES: dict[type, Entry] = {
    # torch layers
    nn.Sequential: lambda m: list(m.children()),
    nn.Identity: lambda m: [],
    nn.Linear: lambda m: [Linear(m.weight, m.bias)],
    nn.Conv2d: _conv2d,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool1d: _adaptive(1),
    nn.AdaptiveAvgPool2d: _adaptive(2),
    nn.Flatten: lambda m: [Flatten(m.start_dim, m.end_dim)],
    nn.ReLU: lambda m: [ReLU()],
    nn.LeakyReLU: lambda m: [LeakyReLU(m.negative_slope)],
    nn.Sigmoid: lambda m: [Sigmoid()],
    nn.Tanh: lambda m: [Tanh()],
    nn.GELU: lambda m: [GELU(m.approximate)],
    nn.Softmax: lambda m: [Softmax(_softmax_dim(m))],
    nn.LogSoftmax: lambda m: [LogSoftmax(_softmax_dim(m))],
    nn.Dropout: _dropout,
    nn.Dropout1d: _dropout,
    nn.Dropout2d: _dropout,
    nn.BatchNorm1d: _batchnorm((2, 3)),
    nn.BatchNorm2d: _batchnorm((4,)),
    nn.LayerNorm: lambda m: [LayerNorm(m)],
    # the example networks (seed 001's CNN, seed 003's nn TwoLayerNet)
    MnistNet: _mnist_net,
    ExampleTwoLayerNet: lambda m: [m.linear1, m.relu, m.linear2],
}


def _preset_architectures(p: Any) -> dict[type, Entry]:
    """Entries for the network classes of gradviz.zoo.presets, each its forward() line by line."""

    def dynamic(m: Any) -> list[Layer | nn.Module]:
        if m.fixed_depth is None:
            raise ArgumentError(
                "model",
                "DynamicNet with fixed_depth=None",
                "DynamicNet draws how often it reuses middle_linear on every forward; set "
                "model.fixed_depth = 0…3 so NumPy and torch run the same graph",
            )
        layers: list[Layer | nn.Module] = [m.input_linear, Clamp(min=0)]
        for _ in range(m.fixed_depth):
            layers += [m.middle_linear, Clamp(min=0)]  # one weight, used again each time
        return [*layers, m.output_linear]

    entries: dict[str, Entry] = {
        "SingleNeuron": lambda m: [MatMul(m.weights, m.bias), Sigmoid()],
        "TwoLayerSigmoid": lambda m: [MatMul(m.W1), Sigmoid(), MatMul(m.W2), Sigmoid()],
        "QuadrantParams": lambda m: [
            MatMul(m.W1, m.b1),
            Sigmoid(),
            MatMul(m.W2, m.b2),
            Sigmoid(),
            MatMul(m.W3, m.b3),
            Sigmoid(),
        ],
        "FoldedBiasNet": lambda m: [
            FoldedLinear(m.W1),
            Sigmoid(),
            FoldedLinear(m.W2),
            Sigmoid(),
            FoldedLinear(m.W3),
            Sigmoid(),
        ],
        "weightedsum": lambda m: [FoldedLinear(m.W)],
        "WeightedSumNet": lambda m: [m.MAC1, Sigmoid(), m.MAC2, Sigmoid(), m.MAC3, Sigmoid()],
        "MyLayer": lambda m: [FoldedLinear(m.W), Sigmoid()],
        "SoftmaxNet": lambda m: [m.layer1, m.layer2, m.layer3, Softmax(dim=1)],
        "TopologyNet": lambda m: [m.model],
        "LooseTwoLayer": lambda m: [MatMul(m.w1), Clamp(min=0), MatMul(m.w2)],
        "MyReLUTwoLayer": lambda m: [MatMul(m.w1), Clamp(min=0), MatMul(m.w2)],  # MyReLU = clamp
        "TwoLayerNet": lambda m: [m.linear1, Clamp(min=0), m.linear2],
        "DynamicNet": dynamic,
        "ScratchNet": lambda m: [Linear(m.wih), Sigmoid(), Linear(m.who), Sigmoid()],
    }
    return {getattr(p, name): entry for name, entry in entries.items() if hasattr(p, name)}


_presets_registered = False


def _register_presets() -> None:
    # presets imports half of gradviz; read it only when a model is expanded, so this module
    # can be imported from anywhere (presets included) without an import cycle.
    global _presets_registered
    if _presets_registered:
        return
    _presets_registered = True
    try:
        p = importlib.import_module("gradviz.zoo.presets")
    except ImportError:
        return
    for cls, entry in _preset_architectures(p).items():
        ARCHITECTURES.setdefault(cls, entry)


def supported_modules() -> list[str]:
    """The module classes `numpy_backprop` can read, by name."""
    _register_presets()
    return sorted({cls.__name__ for cls in ARCHITECTURES})


def _entry_for(module: nn.Module) -> Entry | None:
    cls = type(module)
    if cls in ARCHITECTURES:
        return ARCHITECTURES[cls]
    # a subclass is read as its base only if it keeps the base's forward (builder.Network)
    for base in cls.__mro__[1:]:
        if base in ARCHITECTURES:
            return ARCHITECTURES[base] if cls.forward is base.forward else None
    return None


def _require(module: nn.Module, ok: bool, setting: str, fix: str) -> None:
    if not ok:
        raise ArgumentError("model", f"{type(module).__name__} with {setting}", fix)


def layers_of(model: nn.Module) -> list[Layer]:
    """The model as a flat list of layers, each with ``where`` set to the module it came from."""
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", model, "give a torch.nn.Module")
    _register_presets()
    paths = {id(m): name for name, m in model.named_modules()}

    def expand(module: nn.Module, path: str) -> list[Layer]:
        entry = _entry_for(module)
        if entry is None:
            raise ArgumentError(
                "model",
                f"{type(module).__name__} at {path or '(the model itself)'!r}",
                f"numpy_backprop has no NumPy backward for {type(module).__name__}; supported "
                f"modules: {', '.join(supported_modules())} (a new class is one entry in "
                "gradviz.backward.netprop.ARCHITECTURES)",
            )
        out: list[Layer] = []
        for item in entry(module):
            if isinstance(item, Layer):
                if not item.where:  # a layer of its own, or a functional step of a forward()
                    leaf = next(module.children(), None) is None
                    name = path or type(module).__name__
                    item.where = name if leaf else f"{name}.forward"
                out.append(item)
            elif isinstance(item, nn.Module):
                out += expand(item, paths.get(id(item), f"{path}.?"))
            else:
                raise GradvizError(
                    f"ARCHITECTURES[{type(module).__name__}] gave {item!r}; an entry lists "
                    "Layer objects and submodules"
                )
        return out

    return expand(model, "")


# =========================================================================== losses


@dataclass(frozen=True)
class _Loss:
    name: str
    reductions: tuple[str, ...]  # the first is the default
    target: str  # "same" (same shape as the output), "classes", "classes_or_probs", "none"
    # (output, target, reduction) → (loss, ∂loss/∂output)
    fn: Callable[[Array, Array | None, str], tuple[float, Array]]


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
    return name, loss.reduction


def _known_callables() -> dict[Any, tuple[str, str]]:
    known: dict[Any, tuple[str, str]] = {
        F.mse_loss: ("mse", "mean"),
        F.nll_loss: ("nll", "mean"),
        F.cross_entropy: ("cross_entropy", "mean"),
        F.binary_cross_entropy: ("bce", "mean"),
    }
    try:
        p = importlib.import_module("gradviz.zoo.presets")
    except ImportError:
        return known
    for attr, spec in {
        "quadrant_loss": ("bce", "batchmean"),  # Σ −t·log p − (1−t)·log(1−p), over N samples
        "sum_squared_error": ("mse", "sum"),
        "half_sum_squared_error": ("half_sse", "sum"),
        "mean_squared_error": ("mse", "mean"),
        "categorical_crossentropy": ("categorical_crossentropy", "batchmean"),
        "_mse_mean": ("mse", "mean"),
    }.items():
        if hasattr(p, attr):
            known[getattr(p, attr)] = spec
    return known


def _resolve_loss(loss: Any, reduction: str | None) -> tuple[_Loss, str]:
    if isinstance(loss, nn.Module):
        name, own = _loss_from_module(loss)
        if reduction is not None and reduction != own:
            raise ArgumentError(
                "reduction", reduction, f"the loss module already says reduction={own!r}; drop one"
            )
        reduction = own
    elif callable(loss) and not isinstance(loss, str):
        known = _known_callables()
        if loss not in known:
            raise ArgumentError(
                "loss",
                getattr(loss, "__name__", loss),
                "give a loss name (" + ", ".join(LOSSES) + ") or a torch loss module",
            )
        name, own = known[loss]
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


# ========================================================================== results


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


# ========================================================================== the pass


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


def _torch_loss(
    spec: _Loss, reduction: str, y: torch.Tensor, t: torch.Tensor | None
) -> torch.Tensor:
    d = {"mean": y.numel(), "sum": 1, "batchmean": y.shape[0]}.get(reduction, 1)
    if spec.name == "mse":
        return F.mse_loss(y, t, reduction="sum") / d
    if spec.name == "bce":
        return F.binary_cross_entropy(y, t, reduction="sum") / d
    if spec.name == "half_sse":
        return 0.5 * (t - y).pow(2).sum()
    if spec.name == "sum":
        return y.sum()
    if spec.name == "nll":
        return F.nll_loss(y, t, reduction=reduction)
    if spec.name == "cross_entropy":
        return F.cross_entropy(y, t, reduction=reduction)
    return -(t * torch.log(y.clamp(1e-7, 1 - 1e-7))).sum() / y.shape[0]


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

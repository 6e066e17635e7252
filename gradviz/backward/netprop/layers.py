"""The NumPy layers: each one step of a forward pass with its backward written beside it.

A layer's ``forward(x) -> (y, cache)`` keeps what its ``backward(grad_y, cache) ->
(grad_x, {role: grad})`` needs. Windowed layers (convolution, pools) are in `windows`,
normalizations in `norm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import torch

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


class Layer:
    """One step of the forward pass with its backward beside it.

    ``params`` maps a role (``"weight"``, ``"bias"``) to the module's parameter, so the
    driver can file each gradient under the parameter's name; ``where`` says which module
    (or which line of a ``forward``) the layer stands for.
    """

    where: str = ""

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}

    @overload
    def param(self, role: str, tensor: torch.Tensor) -> Array: ...
    @overload
    def param(self, role: str, tensor: torch.Tensor | None) -> Array | None: ...

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
        bias = "" if self.b is not None else ", no bias"
        return f"Linear({self.w.shape[1]}→{self.w.shape[0]}{bias})"


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



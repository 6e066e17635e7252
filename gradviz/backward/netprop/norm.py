"""Normalization layers: BatchNorm (batch or running statistics) and LayerNorm."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from gradviz.backward.netprop.layers import Array, Layer, _array, _Mismatch


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
        # weight and bias are each optional, as in F.batch_norm (affine=False has neither).
        if self.w is not None:
            y = y * self._channel(self.w, x.ndim)
        if self.b is not None:
            y = y + self._channel(self.b, x.ndim)
        return y, (xhat, inv_std, axes)

    def backward(self, g_y: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
        xhat, inv_std, axes = cache
        grads = {}
        g_xhat = g_y
        if self.w is not None:
            grads["weight"] = (g_y * xhat).sum(axis=axes)
            g_xhat = g_y * self._channel(self.w, g_y.ndim)
        if self.b is not None:
            grads["bias"] = g_y.sum(axis=axes)
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



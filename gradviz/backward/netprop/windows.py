"""Layers that slide a window over the last two axes: convolution and the pools."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from gradviz.backward.netprop.layers import Array, Layer, _Mismatch, _pair


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
    """nn.Conv2d (groups=1) through im2col.

    y[n,o,i,j] = Σ_{c,k,l} W[o,c,k,l]·x_patch[n,c,i,j,k,l] + b[o]
    """

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



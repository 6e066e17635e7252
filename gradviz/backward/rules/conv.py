"""Convolution (N-d, grouped, strided, dilated, transposed) by im2col, F.unfold/F.fold,
and pooling (max with indices, adaptive max/average, average)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch.nn.functional as F
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gradviz.backward.rules._common import edge_shape, shaped
from gradviz.backward.rules._examples import distinct_values, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Convolution (N-d, grouped, strided, dilated, transposed) with im2col
# ---------------------------------------------------------------------------------------


def _conv_cols(xp: np.ndarray, k, stride, dilation, out) -> np.ndarray:
    """Patches of a padded input (N, C, *L): (N, C, *out, *k), one kernel footprint per output."""
    nd = len(k)
    span = tuple((kk - 1) * d + 1 for kk, d in zip(k, dilation, strict=True))
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    picks: tuple[slice, ...] = (slice(None), slice(None))
    picks += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride, strict=True))
    picks += tuple(slice(None, None, d) for d in dilation)
    return win[picks]


def _patches(xp: np.ndarray, k, stride, dilation, out, groups: int) -> np.ndarray:
    """Patches of a padded input (N, C, *L) as one matrix per group, (G, C/G·K, N·P): row
    (c, k) holds x_pad[n, c, p·s + k·d] for every output position (n, p).

    Filled one kernel offset at a time, each a strided slice copied with its positions
    innermost: gathering through a sliding-window view moved 3 entries per inner loop and
    cost more than torch's whole convolution backward.
    """
    n, c = xp.shape[:2]
    nd = len(k)
    cols = np.empty((c, math.prod(k), n, *out))
    for j, kk in enumerate(np.ndindex(*k)):
        src = (slice(None), slice(None)) + tuple(
            slice(ki * d, ki * d + (o - 1) * s + 1, s)
            for ki, d, o, s in zip(kk, dilation, out, stride, strict=True))
        cols[:, j] = xp[src].transpose(1, 0, *range(2, 2 + nd))
    return cols.reshape(groups, (c // groups) * math.prod(k), n * math.prod(out))


def _unpatch(gcols: np.ndarray, n: int, out, in_spatial, k, stride, padding, dilation
             ) -> np.ndarray:
    """Adjoint of `_patches`: add each entry of (G, C/G·K, N·P) back where it was read."""
    nd = len(k)
    c = gcols.shape[0] * gcols.shape[1] // math.prod(k)
    gcols = gcols.reshape(c, math.prod(k), n, *out)
    padded = tuple(s + 2 * p for s, p in zip(in_spatial, padding, strict=True))
    gxp = np.zeros((n, c) + padded)
    for j, kk in enumerate(np.ndindex(*k)):
        dst = (slice(None), slice(None)) + tuple(
            slice(ki * d, ki * d + (o - 1) * s + 1, s)
            for ki, d, o, s in zip(kk, dilation, out, stride, strict=True))
        gxp[dst] += gcols[:, j].transpose(1, 0, *range(2, 2 + nd))
    crop = (slice(None), slice(None)) + tuple(
        slice(p, p + s) for p, s in zip(padding, in_spatial, strict=True)
    )
    return gxp[crop]


def _out_shape(x_spatial, k, stride, padding, dilation) -> tuple[int, ...]:
    return tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                 for n, kk, s, p, d in zip(x_spatial, k, stride, padding, dilation, strict=True))


def _pad(x: np.ndarray, padding) -> np.ndarray:
    return np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding]) if any(padding) else x


def _by_group(gy: np.ndarray, groups: int) -> np.ndarray:
    """(N, O, *out) -> (G, O/G, N·P): the output gradient as one matrix per group."""
    n, o = gy.shape[:2]
    return np.ascontiguousarray(np.moveaxis(gy, 0, 1)).reshape(groups, o // groups, -1)


def _conv_forward(x, w, stride, padding, dilation, groups):
    """y[n, o, p] = sum_{c, k} x_pad[n, c, p*s + k*d] w[o, c, k], per group (BLAS)."""
    k = w.shape[2:]
    out = _out_shape(x.shape[2:], k, stride, padding, dilation)
    cols = _patches(_pad(x, padding), k, stride, dilation, out, groups)
    y = np.matmul(w.reshape(groups, w.shape[0] // groups, -1), cols)  # (G, O/G, N·P)
    return np.moveaxis(y.reshape(w.shape[0], x.shape[0], *out), 1, 0)


def _conv_weight_grad(x, gy, k, stride, padding, dilation, groups):
    """dL/dw for y = conv(x, w): correlate each input patch with the output gradient."""
    cols = _patches(_pad(x, padding), k, stride, dilation, gy.shape[2:], groups)
    gw = np.matmul(_by_group(gy, groups), cols.transpose(0, 2, 1))  # (G, O/G, C/G·K)
    return gw.reshape(gy.shape[1], x.shape[1] // groups, *k)


def _col2im(gcols: np.ndarray, in_spatial, stride, padding, dilation) -> np.ndarray:
    """Adjoint of `_conv_cols`: add each patch entry (N, C, *out, *k) back where it was read."""
    nd = len(in_spatial)
    out, k = gcols.shape[2:2 + nd], gcols.shape[2 + nd:]
    padded = tuple(s + 2 * p for s, p in zip(in_spatial, padding, strict=True))
    gxp = np.zeros(gcols.shape[:2] + padded)
    for kk in np.ndindex(*k):
        dst = (slice(None), slice(None)) + tuple(
            slice(ki * d, ki * d + (o - 1) * s + 1, s)
            for ki, d, o, s in zip(kk, dilation, out, stride, strict=True))
        gxp[dst] += gcols[(Ellipsis,) + kk]
    crop = (slice(None), slice(None)) + tuple(
        slice(p, p + s) for p, s in zip(padding, in_spatial, strict=True)
    )
    return gxp[crop]


def _conv_input_grad(gy, w, in_shape, stride, padding, dilation, groups):
    """dL/dx for y = conv(x, w): spread each output gradient back over its patch (col2im)."""
    wg = w.reshape(groups, w.shape[0] // groups, -1)  # (G, O/G, C/G·K)
    gcols = np.matmul(wg.transpose(0, 2, 1), _by_group(gy, groups))  # (G, C/G·K, N·P)
    return _unpatch(gcols, gy.shape[0], gy.shape[2:], in_shape[2:], w.shape[2:], stride, padding,
                    dilation)


def _conv_example(draw) -> Case:
    nd = draw(st.sampled_from([1, 1, 2, 2, 2, 3]), label="spatial dims")
    transposed = draw(st.integers(0, 3), label="transposed if 0") == 0
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    side_max = 3 if nd == 3 else 4
    k = tuple(draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, kk // 2 + 1)) for kk in k)
    if transposed:
        # Output padding must stay below stride or dilation.
        output_padding = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
        )
        sides: list[int] = []
        for i in range(nd):
            lo = 1
            reach = dilation[i] * (k[i] - 1) + output_padding[i] + 1
            while (lo - 1) * stride[i] - 2 * padding[i] + reach < 1:
                lo += 1
            sides.append(draw(st.integers(lo, lo + side_max - 1)))
        x = tensor(draw, (n, groups * og) + tuple(sides), requires_grad=draw(st.booleans()))
        w = tensor(draw, (groups * og, cg) + k,
                   requires_grad=draw(st.booleans()) or not x.requires_grad)
        b = tensor(draw, (groups * cg,)) if draw(st.booleans()) else None
        inputs = (x, w) if b is None else (x, w, b)
        conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        return Case(inputs=inputs, fn=lambda x, w, b=None: conv_t(
            x, w, b, stride=stride, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation))
    lengths = tuple(
        draw(st.integers(max(1, dilation[i] * (k[i] - 1) + 1 - 2 * padding[i]),
                         max(1, dilation[i] * (k[i] - 1) + 1 - 2 * padding[i]) + side_max))
        for i in range(nd))
    x = tensor(draw, (n, groups * cg) + lengths, requires_grad=draw(st.booleans()))
    w = tensor(draw, (groups * og, cg) + k,
               requires_grad=draw(st.booleans()) or not x.requires_grad)
    b = None
    if draw(st.booleans()):
        b = tensor(draw, (groups * og,), requires_grad=draw(st.booleans()))
    inputs = (x, w) if b is None else (x, w, b)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return Case(inputs=inputs, fn=lambda x, w, b=None: conv(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups))


@rule("ConvolutionBackward0",
      formula=r"y_{n,o,p} = b_o + \textstyle\sum_{c,k} w_{o,c,k}\,x_{n,c,sp + dk - "
              r"\text{pad}}:\quad "
              r"\bar{x}_{n,c,sp+dk-\text{pad}} \mathrel{+}= \textstyle\sum_{o} \bar{y}_{n,o,p} "
              r"w_{o,c,k},\ "
              r"\bar{w}_{o,c,k} = \textstyle\sum_{n,p} \bar{y}_{n,o,p}\,x_{n,c,sp+dk-\text{pad}},\ "
              r"\bar{b}_o = \textstyle\sum_{n,p} \bar{y}_{n,o,p}\ \ (\text{per group; transposed: "
              r"the adjoint})",
      example=_conv_example)
def _convolution(ctx: RuleContext):
    x, w, gy = ctx["input"], ctx["weight"], ctx.grad
    stride, padding, dilation = ctx["stride"], ctx["padding"], ctx["dilation"]
    groups = ctx["groups"]
    k = w.shape[2:]
    gx = gw = None
    if ctx["transposed"]:
        # A transposed convolution is the input-gradient map of the plain one with the
        # same weight, so its gradients are the plain convolution and its weight gradient.
        if ctx.input_shapes[0] is not None:
            gx = _conv_forward(gy, w, stride, padding, dilation, groups)
            # With output_padding >= stride the plain convolution yields extra trailing
            # positions that no input entry fed: drop them.
            gx = gx[(slice(None), slice(None)) + tuple(slice(0, n) for n in x.shape[2:])]
        if ctx.input_shapes[1] is not None:
            gw = _conv_weight_grad(gy, x, k, stride, padding, dilation, groups)
    else:
        if ctx.input_shapes[0] is not None:
            gx = _conv_input_grad(gy, w, x.shape, stride, padding, dilation, groups)
        if ctx.input_shapes[1] is not None:
            gw = _conv_weight_grad(x, gy, k, stride, padding, dilation, groups)
    gb = None
    if len(ctx.input_shapes) > 2 and ctx.input_shapes[2] is not None:
        gb = gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))
    return shaped(ctx, 0, gx), shaped(ctx, 1, gw), shaped(ctx, 2, gb)


def _unfold_example(draw) -> Case:
    k = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(2))
    lengths = tuple(max(1, d * (kk - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
                    for kk, d, p in zip(k, dilation, padding, strict=True))
    batch = draw(st.sampled_from([(), (1,), (2,)]))
    x = tensor(draw, batch + (draw(st.integers(1, 3)),) + lengths)
    return Case(inputs=(x,), fn=lambda x: F.unfold(x, k, dilation, padding, stride))


@rule("Im2ColBackward0",
      formula=r"Y_{(c,k),\,p} = x_{c,\,sp + dk - \text{pad}}:\quad \bar{x}_{c,\,sp+dk-\text{pad}} "
              r"\mathrel{+}= \bar{Y}_{(c,k),\,p}",
      example=_unfold_example)
def _im2col(ctx: RuleContext):
    x_shape = edge_shape(ctx, 0)
    k, stride = ctx["kernel_size"], ctx["stride"]
    padding, dilation = ctx["padding"], ctx["dilation"]
    g = ctx.grad
    g = g.reshape((-1,) + g.shape[-2:])  # an unbatched input gets a batch of one
    spatial = x_shape[-2:]
    out = tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                for n, p, d, kk, s in zip(spatial, padding, dilation, k, stride, strict=True))
    c = g.shape[1] // math.prod(k)
    # Rows are ordered (channel, kernel offset); columns are output positions.
    gcols = g.reshape(g.shape[0], c, *k, *out)
    gcols = np.moveaxis(gcols, (2, 3), (4, 5))
    return (_col2im(gcols, spatial, stride, padding, dilation).reshape(x_shape),)


def _fold_example(draw) -> Case:
    k = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(2))
    size = tuple(max(1, d * (kk - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
                 for kk, d, p in zip(k, dilation, padding, strict=True))
    blocks = math.prod((n + 2 * p - d * (kk - 1) - 1) // s + 1
                       for n, p, d, kk, s in zip(size, padding, dilation, k, stride, strict=True))
    c = draw(st.integers(1, 2))
    batch = draw(st.sampled_from([(), (2,)]))
    x = tensor(draw, batch + (c * math.prod(k), blocks))
    return Case(inputs=(x,), fn=lambda x: F.fold(x, size, k, dilation, padding, stride))


@rule("Col2ImBackward0",
      formula=r"y_{c,\,sp+dk-\text{pad}} \mathrel{+}= X_{(c,k),\,p}:\quad \bar{X}_{(c,k),\,p} = "
              r"\bar{y}_{c,\,sp + dk - \text{pad}}",
      example=_fold_example)
def _col2im_rule(ctx: RuleContext):
    x_shape = edge_shape(ctx, 0)
    k, stride = ctx["kernel_size"], ctx["stride"]
    padding, dilation = ctx["padding"], ctx["dilation"]
    g = ctx.grad
    g = g.reshape((-1,) + g.shape[-3:])
    gp = np.pad(g, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    out = tuple((n - d * (kk - 1) - 1) // s + 1
                for n, d, kk, s in zip(gp.shape[2:], dilation, k, stride, strict=True))
    cols = _conv_cols(gp, k, stride, dilation, out)  # (N, C, *out, *k)
    cols = np.moveaxis(cols, (4, 5), (2, 3))
    return (cols.reshape(x_shape),)


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


def _scatter_to_argmax(ctx: RuleContext, nd: int):
    """Route each output gradient to the input entry its saved flat index points at."""
    x_shape = ctx["self"].shape
    idx = ctx["result1"].astype(np.int64)
    lead = x_shape[: len(x_shape) - nd]
    plane = math.prod(x_shape[len(x_shape) - nd:])
    rows = math.prod(lead)
    g = ctx.grad.reshape(rows, -1)
    gx = np.zeros((rows, plane))
    np.add.at(gx, (np.arange(rows)[:, None], idx.reshape(rows, -1)), g)
    return (gx.reshape(x_shape),)


def _max_pool_example(nd: int):
    def example(draw) -> Case:
        k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
        padding = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        ceil_mode = draw(st.booleans())
        # Every side at least the dilated kernel, so no window falls wholly in the padding:
        # max pooling reads out of bounds there (a torch bug, not a derivative question).
        lengths = tuple(draw(st.integers(d * (kk - 1) + 1, d * (kk - 1) + 4))
                        for kk, d in zip(k, dilation, strict=True))
        batch = draw(st.sampled_from([(), (1,), (2,)]))
        x = tensor(draw, batch + (draw(st.integers(1, 3)),) + lengths)
        distinct_values(x, draw)
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[nd]
        if nd == 2 and not batch and draw(st.booleans()):
            # max_pool1d runs as a 2-d pool over an unsqueezed input.
            x1 = tensor(draw, (2, 3, lengths[0]))
            distinct_values(x1, draw)
            return Case(inputs=(x1,), fn=lambda x: F.max_pool1d(
                x, k[0], stride[0], padding[0], dilation[0], ceil_mode))
        return Case(inputs=(x,), fn=lambda x: pool(x, k, stride, padding, dilation, ceil_mode))

    return example


@rule("MaxPool2DWithIndicesBackward0",
      formula=r"y_p = x_{i(p)},\ i(p) = \arg\max_{\text{window } p} x:\quad \bar{x}_{j} = "
              r"\textstyle\sum_{p:\,i(p) = j} \bar{y}_p",
      example=_max_pool_example(2))
def _max_pool2d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 2)


@rule("MaxPool3DWithIndicesBackward0",
      formula=r"y_p = x_{i(p)},\ i(p) = \arg\max_{\text{window } p} x:\quad \bar{x}_{j} = "
              r"\textstyle\sum_{p:\,i(p) = j} \bar{y}_p",
      example=_max_pool_example(3))
def _max_pool3d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 3)


# Callable[..., Any]: the max and avg functionals' stubs overload on different size types.
_ADAPTIVE_POOLS: dict[tuple[str, int], Callable[..., Any]] = {
    ("max", 2): F.adaptive_max_pool2d, ("max", 3): F.adaptive_max_pool3d,
    ("avg", 2): F.adaptive_avg_pool2d, ("avg", 3): F.adaptive_avg_pool3d,
}


def _adaptive_example(nd: int, kind: str):
    def example(draw) -> Case:
        lengths = tuple(draw(st.integers(1, 7)) for _ in range(nd))
        out = tuple(draw(st.integers(1, max(1, n + 1))) for n in lengths)
        if kind == "avg" and all(o == 1 for o in out):
            out = (2,) + out[1:]  # an output of all ones becomes a mean, not this node
        batch = draw(st.sampled_from([(), (2,)]))
        x = tensor(draw, batch + (draw(st.integers(1, 3)),) + lengths)
        if kind == "max":
            distinct_values(x, draw)
        pool = _ADAPTIVE_POOLS[kind, nd]
        if nd == 2 and not batch and draw(st.booleans()):
            x1 = tensor(draw, (2, 3, lengths[0]))
            if kind == "max":
                distinct_values(x1, draw)
                return Case(inputs=(x1,), fn=lambda x: F.adaptive_max_pool1d(x, out[0]))
            return Case(inputs=(x1,), fn=lambda x: F.adaptive_avg_pool1d(x, max(out[0], 2)))
        return Case(inputs=(x,), fn=lambda x: pool(x, out))

    return example


@rule("AdaptiveMaxPool2DBackward0",
      formula=r"y_p = \max_{\text{bin } p} x:\quad \bar{x}_{\arg\max_p} \mathrel{+}= \bar{y}_p",
      example=_adaptive_example(2, "max"))
def _adaptive_max_pool2d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 2)


@rule("AdaptiveMaxPool3DBackward0",
      formula=r"y_p = \max_{\text{bin } p} x:\quad \bar{x}_{\arg\max_p} \mathrel{+}= \bar{y}_p",
      example=_adaptive_example(3, "max"))
def _adaptive_max_pool3d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 3)


def _adaptive_avg(ctx: RuleContext, nd: int):
    x_shape = ctx["self"].shape
    g = ctx.grad
    lengths = x_shape[-nd:]
    out = g.shape[-nd:]
    gx = np.zeros(x_shape)
    # Bin o covers [floor(o L / O), ceil((o + 1) L / O)); bins may overlap.
    for o in np.ndindex(*out):
        window = tuple(
            slice((oi * li) // oo, -((-(oi + 1) * li) // oo))
            for oi, li, oo in zip(o, lengths, out, strict=True))
        size = math.prod(s.stop - s.start for s in window)
        gx[(Ellipsis,) + window] += g[(Ellipsis,) + o][(Ellipsis,) + (None,) * nd] / size
    return (gx,)


@rule("AdaptiveAvgPool2DBackward0",
      formula=r"y_p = \tfrac{1}{|B_p|}\textstyle\sum_{j \in B_p} x_j:\quad \bar{x}_j = "
              r"\textstyle\sum_{p:\,j \in B_p} \bar{y}_p / |B_p|,\ "
              r"B_p = [\lfloor pL/O \rfloor, \lceil (p+1)L/O \rceil)",
      example=_adaptive_example(2, "avg"))
def _adaptive_avg_pool2d(ctx: RuleContext):
    return _adaptive_avg(ctx, 2)


@rule("AdaptiveAvgPool3DBackward0",
      formula=r"y_p = \tfrac{1}{|B_p|}\textstyle\sum_{j \in B_p} x_j:\quad \bar{x}_j = "
              r"\textstyle\sum_{p:\,j \in B_p} \bar{y}_p / |B_p|",
      example=_adaptive_example(3, "avg"))
def _adaptive_avg_pool3d(ctx: RuleContext):
    return _adaptive_avg(ctx, 3)


def _avg_pool(ctx: RuleContext, nd: int):
    x_shape = ctx["self"].shape
    g = ctx.grad
    k = ctx["kernel_size"]
    k = k * nd if len(k) == 1 else k
    stride = ctx["stride"] or k
    stride = stride * nd if len(stride) == 1 else stride
    padding = ctx["padding"]
    padding = padding * nd if len(padding) == 1 else padding
    lengths = x_shape[-nd:]
    out = g.shape[-nd:]
    gx = np.zeros(x_shape)
    for o in np.ndindex(*out):
        starts = [oi * s - p for oi, s, p in zip(o, stride, padding, strict=True)]
        ends = [min(st_ + kk, n + p)
                for st_, kk, n, p in zip(starts, k, lengths, padding, strict=True)]
        # The divisor counts padded cells that lie inside the padded input...
        padded_size = math.prod(e - s for s, e in zip(starts, ends, strict=True))
        starts = [max(s, 0) for s in starts]
        ends = [min(e, n) for e, n in zip(ends, lengths, strict=True)]
        # ...unless count_include_pad is off, then only real cells count.
        real_size = math.prod(e - s for s, e in zip(starts, ends, strict=True))
        if ctx["divisor_override"]:
            div = ctx["divisor_override"]
        elif ctx["count_include_pad"]:
            div = padded_size
        else:
            div = real_size
        window = tuple(slice(s, e) for s, e in zip(starts, ends, strict=True))
        gx[(Ellipsis,) + window] += g[(Ellipsis,) + o][(Ellipsis,) + (None,) * nd] / div
    return (gx,)


def _avg_pool_example(nd: int):
    def example(draw) -> Case:
        k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        padding = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        ceil_mode = draw(st.booleans())
        count_include_pad = draw(st.booleans())
        divisor = draw(st.sampled_from([None, None, 2]))
        # avg_pool3d wants every side at least the kernel, padding aside.
        lengths = tuple(draw(st.integers(max(1, kk - (2 * p if nd == 2 else 0)), kk + 4))
                        for kk, p in zip(k, padding, strict=True))
        batch = draw(st.sampled_from([(), (2,)]))
        x = tensor(draw, batch + (draw(st.integers(1, 3)),) + lengths)
        if nd == 2 and not batch and draw(st.booleans()):
            x1 = tensor(draw, (2, 3, lengths[0]))
            return Case(inputs=(x1,), fn=lambda x: F.avg_pool1d(
                x, k[0], stride[0], padding[0], ceil_mode, count_include_pad))
        pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        return Case(inputs=(x,), fn=lambda x: pool(
            x, k, stride, padding, ceil_mode, count_include_pad, divisor))

    return example


@rule("AvgPool2DBackward0",
      formula=r"y_p = \tfrac{1}{D_p}\textstyle\sum_{j \in W_p} x_j:\quad \bar{x}_j = "
              r"\textstyle\sum_{p:\,j \in W_p} \bar{y}_p / D_p"
              r"\ \ (D_p: \text{window size, with or without padding, or the override})",
      example=_avg_pool_example(2))
def _avg_pool2d(ctx: RuleContext):
    return _avg_pool(ctx, 2)


@rule("AvgPool3DBackward0",
      formula=r"y_p = \tfrac{1}{D_p}\textstyle\sum_{j \in W_p} x_j:\quad \bar{x}_j = "
              r"\textstyle\sum_{p:\,j \in W_p} \bar{y}_p / D_p",
      example=_avg_pool_example(3))
def _avg_pool3d(ctx: RuleContext):
    return _avg_pool(ctx, 3)

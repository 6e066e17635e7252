"""Neural-network layers: softmax, losses, convolution, pooling, normalization, embedding, attention."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gradviz.backward.rules._examples import shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------

_MEAN, _SUM = 1, 2  # reduction codes saved by loss nodes (0 is 'none')


def _signed(value: int) -> int:
    """Saved ints such as dim=-1 or ignore_index=-100 arrive as unsigned 64-bit values."""
    return value - 2**64 if value >= 2**63 else value


def _axis(dim: int, ndim: int) -> int:
    return _signed(dim) % max(ndim, 1)


def _edge(ctx: RuleContext, i: int, grad) -> np.ndarray | None:
    """`grad` for edge i, reduced to that edge's shape; None when the edge is absent."""
    target = ctx.input_shapes[i] if i < len(ctx.input_shapes) else None
    if target is None or grad is None:
        return None
    return sum_to(np.asarray(grad, dtype=np.float64), target)


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="rng seed"))


def _reduction_example(draw) -> str:
    return draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")


def _loss_scale(ctx: RuleContext, numel: int):
    """The incoming gradient spread over every loss term (divided by numel for 'mean')."""
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        return g / numel
    return g


# ---------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------


def _softmax_example(op):
    def example(draw) -> Case:
        s = shape(draw, min_dims=1)
        dim = draw(st.integers(-len(s), len(s) - 1))
        x = tensor(draw, s)
        return Case(inputs=(x,), fn=lambda x: op(x, dim))

    return example


_plain_softmax_example = _softmax_example(F.softmax)


@rule("SoftmaxBackward0",
      formula=r"y = \operatorname{softmax}(x):\quad \bar{x} = y \odot \big(\bar{y} - \textstyle\sum_{d} \bar{y} \odot y\big)",
      example=_plain_softmax_example)
def _softmax(ctx: RuleContext):
    y, g = ctx["result"], ctx.grad
    axis = _axis(ctx["dim"], y.ndim)
    return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)


_log_softmax_example = _softmax_example(F.log_softmax)


@rule("LogSoftmaxBackward0",
      formula=r"y = \log\operatorname{softmax}(x):\quad \bar{x} = \bar{y} - e^{y} \textstyle\sum_{d} \bar{y}",
      example=_log_softmax_example)
def _log_softmax(ctx: RuleContext):
    y, g = ctx["result"], ctx.grad
    axis = _axis(ctx["dim"], y.ndim)
    return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)


def _safe_softmax_example(draw) -> Case:
    s = shape(draw, min_dims=2)
    x = tensor(draw, s)
    # Mask whole rows to -inf now and then: there the safe softmax outputs 0, not NaN.
    rows = torch.from_numpy(_rng(draw).random(s[:-1]) < 0.3)
    return Case(inputs=(x,), fn=lambda x: torch._safe_softmax(
        x.masked_fill(rows.unsqueeze(-1), float("-inf")), -1))


@rule("SafeSoftmaxBackward0",
      formula=r"y = \operatorname{softmax}(x) \text{ (0 on all-}{-\infty}\text{ rows)}:\quad \bar{x} = y \odot \big(\bar{y} - \textstyle\sum_{d} \bar{y} \odot y\big)",
      example=_safe_softmax_example)
def _safe_softmax(ctx: RuleContext):
    return _softmax(ctx)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def _nll_example(spatial: bool):
    def example(draw) -> Case:
        n = draw(st.integers(1, 4))
        c = draw(st.integers(2, 5))
        if spatial:
            extra = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            s, ts = (n, c) + extra, (n,) + extra
        elif draw(st.booleans()):
            s, ts = (n, c), (n,)
        else:
            s, ts = (c,), ()
        rng = _rng(draw)
        target = torch.from_numpy(np.asarray(rng.integers(0, c, size=ts)))
        reduction = _reduction_example(draw)
        ignore = draw(st.sampled_from([-100, 0]))
        if ignore == 0 and reduction == "mean" and bool((target == 0).all()):
            ignore = -100  # an all-ignored mean is 0/0
        weight = None
        if draw(st.booleans()):
            weight = torch.tensor(rng.uniform(0.2, 2.0, size=c), dtype=torch.float64)
        x = tensor(draw, s)
        via_log_softmax = draw(st.booleans())

        def fn(x):
            inp = F.log_softmax(x, 1 if len(s) > 1 else 0) if via_log_softmax else x
            return F.nll_loss(inp, target, weight=weight, ignore_index=ignore, reduction=reduction)

        return Case(inputs=(x,), fn=fn)

    return example


def _nll(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"].astype(np.int64)
    class_axis = 1 if x.ndim >= 2 else 0
    c = x.shape[class_axis]
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    ignore = _signed(ctx["ignore_index"])
    keep = t != ignore
    safe_t = np.where(keep, t, 0)
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        g = g / ctx["total_weight"]
    # Each loss term is -w[t] * x[t]: only the target class of each sample gets gradient.
    per_sample = np.where(keep, -w[safe_t] * g, 0.0)
    onehot = np.moveaxis(np.eye(c)[safe_t], -1, class_axis)
    return (np.expand_dims(per_sample, class_axis) * onehot,)


@rule("NllLossBackward0",
      formula=r"\ell_i = -w_{t_i} x_{i, t_i}:\quad \bar{x}_{i, t_i} = -w_{t_i}\,\bar{\ell}_i"
              r"\ \big(/\textstyle\sum_{j} w_{t_j} \text{ for mean}\big),\ 0 \text{ elsewhere and where } t_i = \text{ignore}",
      example=_nll_example(False))
def _nll_loss(ctx: RuleContext):
    return _nll(ctx)


@rule("NllLoss2DBackward0",
      formula=r"\ell_{i,h,w} = -w_{t} x_{i, t, h, w}:\quad \bar{x}_{i, t_{ihw}, h, w} = -w_{t_{ihw}}\,\bar{\ell}_{ihw}"
              r"\ \big(/\textstyle\sum w_{t} \text{ for mean}\big)",
      example=_nll_example(True))
def _nll_loss_2d(ctx: RuleContext):
    return _nll(ctx)


def _pair_loss_example(op, **kwargs):
    def example(draw) -> Case:
        s = shape(draw, min_dims=0)
        reduction = _reduction_example(draw)
        x = tensor(draw, s)
        t = tensor(draw, s, requires_grad=draw(st.booleans()))
        extra = {k: draw(st.sampled_from(v)) for k, v in kwargs.items()}
        # Keep |x - t| off the switch point between the quadratic and linear pieces.
        kink = extra.get("beta", extra.get("delta"))
        if kink is not None:
            with torch.no_grad():
                near = ((x - t).abs() - kink).abs() < 1e-3
                x[near] += 1e-2
        return Case(inputs=(x, t), fn=lambda x, t: op(x, t, reduction=reduction, **extra))

    return example


_mse_example = _pair_loss_example(F.mse_loss)


@rule("MseLossBackward0",
      formula=r"\ell = (x - t)^{2}:\quad \bar{x} = 2 (x - t) \odot \bar{\ell}\ (/N \text{ for mean}),\ \bar{t} = -\bar{x}",
      example=_mse_example)
def _mse(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    gx = 2.0 * (x - t) * _loss_scale(ctx, x.size)
    return _edge(ctx, 0, gx), _edge(ctx, 1, -gx)


_smooth_l1_example = _pair_loss_example(F.smooth_l1_loss, beta=[1.0, 0.5, 2.0])


@rule("SmoothL1LossBackward0",
      formula=r"d = x - t:\quad \bar{x} = \bar{\ell} \odot \begin{cases} d/\beta & |d| < \beta \\ \operatorname{sign}(d) & \text{else} \end{cases},\ \bar{t} = -\bar{x}",
      example=_smooth_l1_example)
def _smooth_l1(ctx: RuleContext):
    x, t, beta = ctx["self"], ctx["target"], ctx["beta"]
    d = x - t
    slope = np.where(np.abs(d) < beta, d / beta, np.sign(d))
    gx = slope * _loss_scale(ctx, x.size)
    return _edge(ctx, 0, gx), _edge(ctx, 1, -gx)


_huber_example = _pair_loss_example(F.huber_loss, delta=[1.0, 0.5, 2.0])


@rule("HuberLossBackward0",
      formula=r"d = x - t:\quad \bar{x} = \bar{\ell} \odot \begin{cases} d & |d| < \delta \\ \delta\operatorname{sign}(d) & \text{else} \end{cases},\ \bar{t} = -\bar{x}",
      example=_huber_example)
def _huber(ctx: RuleContext):
    x, t, delta = ctx["self"], ctx["target"], ctx["delta"]
    d = x - t
    slope = np.where(np.abs(d) < delta, d, delta * np.sign(d))
    gx = slope * _loss_scale(ctx, x.size)
    return _edge(ctx, 0, gx), _edge(ctx, 1, -gx)


def _bce_example(draw) -> Case:
    s = shape(draw, min_dims=0)
    reduction = _reduction_example(draw)
    p = tensor(draw, s, low=0.02, high=0.98)
    t = tensor(draw, s, low=0.0, high=1.0, requires_grad=draw(st.booleans()))
    weight = None
    if draw(st.booleans()):
        ws = s[len(s) - draw(st.integers(0, len(s))):]
        weight = torch.tensor(_rng(draw).uniform(0.2, 2.0, size=ws), dtype=torch.float64)
    return Case(inputs=(p, t), fn=lambda p, t: F.binary_cross_entropy(
        p, t, weight=weight, reduction=reduction))


@rule("BinaryCrossEntropyBackward0",
      formula=r"\ell = -w\,(t \ln p + (1 - t)\ln(1 - p)):\quad \bar{p} = \bar{\ell} \odot w\,\frac{p - t}{p(1 - p)},\ "
              r"\bar{t} = \bar{\ell} \odot w \ln\frac{1 - p}{p}\ \ (/N \text{ for mean})",
      example=_bce_example)
def _bce(ctx: RuleContext):
    p, t = ctx["self"], ctx["target"]
    g = _loss_scale(ctx, p.size)
    w = 1.0 if ctx["weight"] is None else ctx["weight"]
    # The denominator is floored at 1e-12 in the kernel, so p = 0 or 1 stays finite.
    gp = g * w * (p - t) / np.maximum(p * (1.0 - p), 1e-12)
    gt = None
    if ctx.input_shapes[1] is not None:
        gt = g * w * (np.log1p(-p) - np.log(p))
    return _edge(ctx, 0, gp), _edge(ctx, 1, gt)


def _bce_logits_example(draw) -> Case:
    s = shape(draw, min_dims=1)
    reduction = _reduction_example(draw)
    x = tensor(draw, s, low=-4.0, high=4.0)
    t = tensor(draw, s, low=0.0, high=1.0, requires_grad=draw(st.booleans()))
    rng = _rng(draw)
    weight = pos_weight = None
    if draw(st.booleans()):
        weight = torch.tensor(rng.uniform(0.2, 2.0, size=s[-1:]), dtype=torch.float64)
    if draw(st.booleans()):
        pos_weight = torch.tensor(rng.uniform(0.2, 3.0, size=s[-1:]), dtype=torch.float64)
    return Case(inputs=(x, t), fn=lambda x, t: F.binary_cross_entropy_with_logits(
        x, t, weight=weight, pos_weight=pos_weight, reduction=reduction))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@rule("BinaryCrossEntropyWithLogitsBackward0",
      formula=r"\ell = -w\,(q\,t \ln\sigma(x) + (1 - t)\ln(1 - \sigma(x))):\quad "
              r"\bar{x} = \bar{\ell} \odot w\,((q t + 1 - t)\sigma(x) - q t),\ "
              r"\bar{t} = \bar{\ell} \odot w\,(\ln\sigma(-x) - q \ln\sigma(x))\ \ (/N \text{ for mean})",
      example=_bce_logits_example)
def _bce_logits(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    g = _loss_scale(ctx, x.size)
    w = 1.0 if ctx["weight"] is None else ctx["weight"]
    q = 1.0 if ctx["pos_weight"] is None else ctx["pos_weight"]
    sig = np.exp(_log_sigmoid(x))
    qt = q * t
    gx = g * w * ((qt + 1.0 - t) * sig - qt)
    gt = None
    if ctx.input_shapes[1] is not None:
        gt = g * w * (_log_sigmoid(-x) - q * _log_sigmoid(x))
    return _edge(ctx, 0, gx), _edge(ctx, 1, gt)


def _multi_margin_example(draw) -> Case:
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    rng = _rng(draw)
    target = torch.from_numpy(rng.integers(0, c, size=n))
    p = draw(st.sampled_from([1, 2]))
    margin = draw(st.sampled_from([1.0, 0.5]))
    weight = None
    if draw(st.booleans()):
        weight = torch.tensor(rng.uniform(0.2, 2.0, size=c), dtype=torch.float64)
    reduction = _reduction_example(draw)
    x = tensor(draw, (n, c))
    with torch.no_grad():  # keep every hinge margin - x_t + x_j off zero
        for _ in range(3):
            h = margin - x.gather(1, target[:, None]) + x
            x[h.abs() < 1e-3] += 1e-2
    return Case(inputs=(x,), fn=lambda x: F.multi_margin_loss(
        x, target, p=p, margin=margin, weight=weight, reduction=reduction))


@rule("MultiMarginLossBackward0",
      formula=r"h_{ij} = \max(0, m - x_{i t_i} + x_{ij}),\ \ell_i = \tfrac1C \textstyle\sum_{j \ne t_i} w_{t_i} h_{ij}^{p}:\quad "
              r"\bar{x}_{ij} = \tfrac{\bar{\ell}_i}{C} w_{t_i} p\,h_{ij}^{p-1}\ (j \ne t_i),\ \bar{x}_{i t_i} = -\textstyle\sum_{j \ne t_i} \bar{x}_{ij}",
      example=_multi_margin_example)
def _multi_margin(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"].astype(np.int64)
    x2 = x.reshape(-1, x.shape[-1])
    t = t.reshape(-1)
    n, c = x2.shape
    p, m = ctx["p"], ctx["margin"]
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        g = np.full(n, g / n)
    elif ctx["reduction"] == _SUM:
        g = np.full(n, g)
    else:
        g = g.reshape(n)
    rows = np.arange(n)
    h = m - x2[rows, t][:, None] + x2
    active = (h > 0) & (np.arange(c)[None, :] != t[:, None])
    slope = (1.0 if p == 1 else 2.0 * h) * active * w[t][:, None] / c
    gx = g[:, None] * slope
    gx[rows, t] = -gx.sum(axis=1)
    return (gx.reshape(x.shape),)


# ---------------------------------------------------------------------------------------
# Convolution (N-d, grouped, strided, dilated, transposed) with im2col
# ---------------------------------------------------------------------------------------


def _conv_cols(xp: np.ndarray, k, stride, dilation, out) -> np.ndarray:
    """Patches of a padded input (N, C, *L): (N, C, *out, *k), one kernel footprint per output."""
    nd = len(k)
    span = tuple((kk - 1) * d + 1 for kk, d in zip(k, dilation, strict=True))
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    picks = (slice(None), slice(None))
    picks += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride, strict=True))
    picks += tuple(slice(None, None, d) for d in dilation)
    return win[picks]


def _grouped(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, ...) -> (N, G, C/G, ...)."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, *a.shape[2:])


def _conv_forward(x, w, stride, padding, dilation, groups):
    """y[n, o, p] = sum_{c, k} x_pad[n, c, p*s + k*d] w[o, c, k], per group."""
    nd = x.ndim - 2
    k = w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    out = tuple((xp.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nd))
    cols = _grouped(_conv_cols(xp, k, stride, dilation, out), groups)
    n, g, cg = cols.shape[:3]
    cols = cols.reshape(n, g, cg, math.prod(out), math.prod(k))
    wg = w.reshape(g, w.shape[0] // g, cg, math.prod(k))
    y = np.einsum("ngcpk,gock->ngop", cols, wg)
    return y.reshape(n, w.shape[0], *out)


def _conv_weight_grad(x, gy, k, stride, padding, dilation, groups):
    """dL/dw for y = conv(x, w): correlate each input patch with the output gradient."""
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    out = gy.shape[2:]
    cols = _grouped(_conv_cols(xp, k, stride, dilation, out), groups)
    n, g, cg = cols.shape[:3]
    cols = cols.reshape(n, g, cg, math.prod(out), math.prod(k))
    gyg = _grouped(gy, groups).reshape(n, g, gy.shape[1] // groups, math.prod(out))
    gw = np.einsum("ngcpk,ngop->gock", cols, gyg)
    return gw.reshape(gy.shape[1], cg, *k)


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
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, in_spatial, strict=True))
    return gxp[crop]


def _conv_input_grad(gy, w, in_shape, stride, padding, dilation, groups):
    """dL/dx for y = conv(x, w): spread each output gradient back over its patch (col2im)."""
    k = w.shape[2:]
    out = gy.shape[2:]
    n, g = gy.shape[0], groups
    cg = w.shape[1]
    gyg = _grouped(gy, g).reshape(n, g, w.shape[0] // g, math.prod(out))
    wg = w.reshape(g, w.shape[0] // g, cg, math.prod(k))
    gcols = np.einsum("ngop,gock->ngcpk", gyg, wg).reshape(n, g * cg, *out, *k)
    return _col2im(gcols, in_shape[2:], stride, padding, dilation)


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
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
        lengths = []
        for i in range(nd):
            lo = 1
            while (lo - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + output_padding[i] + 1 < 1:
                lo += 1
            lengths.append(draw(st.integers(lo, lo + side_max - 1)))
        x = tensor(draw, (n, groups * og) + tuple(lengths), requires_grad=draw(st.booleans()))
        w = tensor(draw, (groups * og, cg) + k, requires_grad=draw(st.booleans()) or not x.requires_grad)
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
    w = tensor(draw, (groups * og, cg) + k, requires_grad=draw(st.booleans()) or not x.requires_grad)
    b = tensor(draw, (groups * og,), requires_grad=draw(st.booleans())) if draw(st.booleans()) else None
    inputs = (x, w) if b is None else (x, w, b)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return Case(inputs=inputs, fn=lambda x, w, b=None: conv(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups))


@rule("ConvolutionBackward0",
      formula=r"y_{n,o,p} = b_o + \textstyle\sum_{c,k} w_{o,c,k}\,x_{n,c,sp + dk - \text{pad}}:\quad "
              r"\bar{x}_{n,c,sp+dk-\text{pad}} \mathrel{+}= \textstyle\sum_{o} \bar{y}_{n,o,p} w_{o,c,k},\ "
              r"\bar{w}_{o,c,k} = \textstyle\sum_{n,p} \bar{y}_{n,o,p}\,x_{n,c,sp+dk-\text{pad}},\ "
              r"\bar{b}_o = \textstyle\sum_{n,p} \bar{y}_{n,o,p}\ \ (\text{per group; transposed: the adjoint})",
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
    return _edge(ctx, 0, gx), _edge(ctx, 1, gw), _edge(ctx, 2, gb)


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
      formula=r"Y_{(c,k),\,p} = x_{c,\,sp + dk - \text{pad}}:\quad \bar{x}_{c,\,sp+dk-\text{pad}} \mathrel{+}= \bar{Y}_{(c,k),\,p}",
      example=_unfold_example)
def _im2col(ctx: RuleContext):
    x_shape = ctx.input_shapes[0]
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
      formula=r"y_{c,\,sp+dk-\text{pad}} \mathrel{+}= X_{(c,k),\,p}:\quad \bar{X}_{(c,k),\,p} = \bar{y}_{c,\,sp + dk - \text{pad}}",
      example=_fold_example)
def _col2im_rule(ctx: RuleContext):
    x_shape = ctx.input_shapes[0]
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


def _no_ties(x: torch.Tensor, draw) -> None:
    """Distinct values (a shuffled grid plus jitter), so every max is unique."""
    rng = _rng(draw)
    with torch.no_grad():
        vals = rng.permutation(x.numel()).astype(np.float64) / max(x.numel(), 1) * 6.0 - 3.0
        x.copy_(torch.from_numpy(vals.reshape(tuple(x.shape))))


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
        _no_ties(x, draw)
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[nd]
        if nd == 2 and not batch and draw(st.booleans()):
            # max_pool1d runs as a 2-d pool over an unsqueezed input.
            x1 = tensor(draw, (2, 3, lengths[0]))
            _no_ties(x1, draw)
            return Case(inputs=(x1,), fn=lambda x: F.max_pool1d(
                x, k[0], stride[0], padding[0], dilation[0], ceil_mode))
        return Case(inputs=(x,), fn=lambda x: pool(x, k, stride, padding, dilation, ceil_mode))

    return example


@rule("MaxPool2DWithIndicesBackward0",
      formula=r"y_p = x_{i(p)},\ i(p) = \arg\max_{\text{window } p} x:\quad \bar{x}_{j} = \textstyle\sum_{p:\,i(p) = j} \bar{y}_p",
      example=_max_pool_example(2))
def _max_pool2d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 2)


@rule("MaxPool3DWithIndicesBackward0",
      formula=r"y_p = x_{i(p)},\ i(p) = \arg\max_{\text{window } p} x:\quad \bar{x}_{j} = \textstyle\sum_{p:\,i(p) = j} \bar{y}_p",
      example=_max_pool_example(3))
def _max_pool3d(ctx: RuleContext):
    return _scatter_to_argmax(ctx, 3)


def _adaptive_example(nd: int, kind: str):
    def example(draw) -> Case:
        lengths = tuple(draw(st.integers(1, 7)) for _ in range(nd))
        out = tuple(draw(st.integers(1, max(1, n + 1))) for n in lengths)
        if kind == "avg" and all(o == 1 for o in out):
            out = (2,) + out[1:]  # an output of all ones becomes a mean, not this node
        batch = draw(st.sampled_from([(), (2,)]))
        x = tensor(draw, batch + (draw(st.integers(1, 3)),) + lengths)
        if kind == "max":
            _no_ties(x, draw)
            pool = {2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[nd]
        else:
            pool = {2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[nd]
        if nd == 2 and not batch and draw(st.booleans()):
            x1 = tensor(draw, (2, 3, lengths[0]))
            if kind == "max":
                _no_ties(x1, draw)
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
            slice((oi * li) // oo, -((-(oi + 1) * li) // oo)) for oi, li, oo in zip(o, lengths, out, strict=True))
        size = math.prod(s.stop - s.start for s in window)
        gx[(Ellipsis,) + window] += g[(Ellipsis,) + o][(Ellipsis,) + (None,) * nd] / size
    return (gx,)


@rule("AdaptiveAvgPool2DBackward0",
      formula=r"y_p = \tfrac{1}{|B_p|}\textstyle\sum_{j \in B_p} x_j:\quad \bar{x}_j = \textstyle\sum_{p:\,j \in B_p} \bar{y}_p / |B_p|,\ "
              r"B_p = [\lfloor pL/O \rfloor, \lceil (p+1)L/O \rceil)",
      example=_adaptive_example(2, "avg"))
def _adaptive_avg_pool2d(ctx: RuleContext):
    return _adaptive_avg(ctx, 2)


@rule("AdaptiveAvgPool3DBackward0",
      formula=r"y_p = \tfrac{1}{|B_p|}\textstyle\sum_{j \in B_p} x_j:\quad \bar{x}_j = \textstyle\sum_{p:\,j \in B_p} \bar{y}_p / |B_p|",
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
        ends = [min(st_ + kk, n + p) for st_, kk, n, p in zip(starts, k, lengths, padding, strict=True)]
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
      formula=r"y_p = \tfrac{1}{D_p}\textstyle\sum_{j \in W_p} x_j:\quad \bar{x}_j = \textstyle\sum_{p:\,j \in W_p} \bar{y}_p / D_p"
              r"\ \ (D_p: \text{window size, with or without padding, or the override})",
      example=_avg_pool_example(2))
def _avg_pool2d(ctx: RuleContext):
    return _avg_pool(ctx, 2)


@rule("AvgPool3DBackward0",
      formula=r"y_p = \tfrac{1}{D_p}\textstyle\sum_{j \in W_p} x_j:\quad \bar{x}_j = \textstyle\sum_{p:\,j \in W_p} \bar{y}_p / D_p",
      example=_avg_pool_example(3))
def _avg_pool3d(ctx: RuleContext):
    return _avg_pool(ctx, 3)


# ---------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------


def _batch_norm_example(draw) -> Case:
    n = draw(st.integers(2, 4))
    c = draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    x = tensor(draw, (n, c) + spatial, requires_grad=True)
    affine = draw(st.booleans())
    w = tensor(draw, (c,), low=0.5, high=2.0, requires_grad=draw(st.booleans())) if affine else None
    b = tensor(draw, (c,), requires_grad=draw(st.booleans())) if affine else None
    training = draw(st.booleans())
    track = draw(st.booleans()) or not training
    rng = _rng(draw)
    rm = torch.tensor(rng.normal(size=c), dtype=torch.float64) if track else None
    rv = torch.tensor(rng.uniform(0.5, 2.0, size=c), dtype=torch.float64) if track else None
    eps = draw(st.sampled_from([1e-5, 0.1]))

    def fn(x, w=None, b=None):
        mean = None if rm is None else rm.clone()
        var = None if rv is None else rv.clone()
        return F.batch_norm(x, mean, var, w, b, training=training, eps=eps)

    return Case(inputs=(x,) if w is None else (x, w, b), fn=fn)


@rule("NativeBatchNormBackward0",
      formula=r"\hat{x} = (x - \mu_c)\,r_c,\ y = \gamma_c \hat{x} + \beta_c:\quad "
              r"\bar{\beta}_c = \textstyle\sum \bar{y},\ \bar{\gamma}_c = \textstyle\sum \bar{y} \odot \hat{x},\ "
              r"\bar{x} = \gamma_c r_c \big(\bar{y} - \tfrac{1}{M}\bar{\beta}_c - \tfrac{1}{M}\hat{x}\,\bar{\gamma}_c\big) "
              r"\text{ (training: batch } \mu, r\text{); eval: } \bar{x} = \gamma_c r_c\,\bar{y}",
      example=_batch_norm_example)
def _batch_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    training = ctx["training"]
    if training:
        mean, invstd = ctx["result1"], ctx["result2"]
    else:
        mean = ctx["running_mean"]
        invstd = 1.0 / np.sqrt(ctx["running_var"] + ctx["eps"])
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    mean, invstd, wb = mean.reshape(bshape), invstd.reshape(bshape), w.reshape(bshape)
    xhat = (x - mean) * invstd
    gbeta = g.sum(axis=axes)
    ggamma = (g * xhat).sum(axis=axes)
    if training:
        m = x.size // c
        # The batch mean and variance depend on every x too: two extra terms.
        gx = wb * invstd * (g - gbeta.reshape(bshape) / m - xhat * ggamma.reshape(bshape) / m)
    else:
        gx = g * wb * invstd
    return _edge(ctx, 0, gx), _edge(ctx, 1, ggamma), _edge(ctx, 2, gbeta)


def _layer_norm_example(draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    k = draw(st.integers(1, len(s)))
    normalized = s[len(s) - k:]
    x = tensor(draw, s)
    affine = draw(st.sampled_from(["none", "weight", "both"]))
    w = tensor(draw, normalized, low=0.5, high=2.0, requires_grad=draw(st.booleans())) \
        if affine != "none" else None
    b = tensor(draw, normalized, requires_grad=draw(st.booleans())) if affine == "both" else None
    eps = draw(st.sampled_from([1e-5, 0.1]))
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(x, *params):
        weight = params[0] if params else None
        bias = params[1] if len(params) > 1 else None
        return F.layer_norm(x, normalized, weight, bias, eps)

    return Case(inputs=inputs, fn=fn)


@rule("NativeLayerNormBackward0",
      formula=r"\hat{x} = (x - \mu) r \text{ over the last dims},\ y = \gamma \odot \hat{x} + \beta:\quad "
              r"\bar{\beta} = \textstyle\sum_{\text{rows}} \bar{y},\ \bar{\gamma} = \textstyle\sum_{\text{rows}} \bar{y} \odot \hat{x},\ "
              r"\bar{x} = r\big(\hat{g} - \overline{\hat{g}} - \hat{x}\,\overline{\hat{g} \odot \hat{x}}\big),\ \hat{g} = \gamma \odot \bar{y}",
      example=_layer_norm_example)
def _layer_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    k = len(ctx["normalized_shape"])
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    mean, rstd = ctx["result1"], ctx["result2"]
    xhat = (x - mean) * rstd
    w = ctx["weight"]
    gh = g if w is None else g * w
    gx = rstd * (gh - gh.mean(axis=axes, keepdims=True)
                 - xhat * (gh * xhat).mean(axis=axes, keepdims=True))
    gw = (g * xhat).sum(axis=lead) if ctx.input_shapes[1] is not None else None
    gb = g.sum(axis=lead) if len(ctx.input_shapes) > 2 and ctx.input_shapes[2] is not None else None
    return _edge(ctx, 0, gx), _edge(ctx, 1, gw), _edge(ctx, 2, gb)


def _group_norm_example(draw) -> Case:
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 2))
    n = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    if c // groups * math.prod(spatial) == 1:
        spatial += (2,)  # a group of one value has no variance to normalize by
    x = tensor(draw, (n, c) + spatial)
    affine = draw(st.booleans())
    w = tensor(draw, (c,), low=0.5, high=2.0, requires_grad=draw(st.booleans())) if affine else None
    b = tensor(draw, (c,), requires_grad=draw(st.booleans())) if affine else None
    inputs = (x,) if w is None else (x, w, b)
    return Case(inputs=inputs, fn=lambda x, w=None, b=None: F.group_norm(x, groups, w, b))


@rule("NativeGroupNormBackward0",
      formula=r"\hat{x} = (x - \mu_{n,g}) r_{n,g},\ y = \gamma_c \hat{x} + \beta_c:\quad "
              r"\bar{x} = r\big(\hat{g} - \overline{\hat{g}} - \hat{x}\,\overline{\hat{g} \odot \hat{x}}\big) \text{ per (sample, group)},\ \hat{g} = \gamma_c \bar{y}",
      example=_group_norm_example)
def _group_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    n, c, groups = x.shape[0], x.shape[1], ctx["group"]
    shaped = (n, groups, c // groups, -1)
    xg, gg = x.reshape(shaped), g.reshape(shaped)
    mean = ctx["result1"].reshape(n, groups, 1, 1)
    rstd = ctx["result2"].reshape(n, groups, 1, 1)
    xhat = (xg - mean) * rstd
    w = ctx["weight"]
    gh = gg if w is None else gg * w.reshape(1, groups, c // groups, 1)
    gx = rstd * (gh - gh.mean(axis=(2, 3), keepdims=True)
                 - xhat * (gh * xhat).mean(axis=(2, 3), keepdims=True))
    gw = (gg * xhat).sum(axis=(0, 3)).reshape(c)
    gb = gg.sum(axis=(0, 3)).reshape(c)
    return _edge(ctx, 0, gx.reshape(x.shape)), _edge(ctx, 1, gw), _edge(ctx, 2, gb)


# ---------------------------------------------------------------------------------------
# Embedding and dropout
# ---------------------------------------------------------------------------------------


def _embedding_example(draw) -> Case:
    num, dim = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    idx_shape = shape(draw, min_dims=0, max_dims=2)
    # Few rows, many lookups: repeated indices must accumulate.
    idx = torch.from_numpy(np.asarray(_rng(draw).integers(0, num, size=idx_shape)))
    padding_idx = draw(st.sampled_from([None, 0, -1]))
    scale = draw(st.booleans())
    w = tensor(draw, (num, dim))
    return Case(inputs=(w,), fn=lambda w: F.embedding(
        idx, w, padding_idx=padding_idx, scale_grad_by_freq=scale))


@rule("EmbeddingBackward0",
      formula=r"y_{i} = W_{t_i}:\quad \bar{W}_{r} = \textstyle\sum_{i:\,t_i = r} \bar{y}_{i}"
              r"\ \ (0 \text{ for the padding row; } / \#\{i: t_i = r\} \text{ if scale\_grad\_by\_freq})",
      example=_embedding_example)
def _embedding(ctx: RuleContext):
    idx = ctx["indices"].astype(np.int64).reshape(-1)
    num = ctx["weight_sym_argsize_0"]
    g = ctx.grad
    rows = g.reshape(idx.size, -1)
    if ctx["scale_grad_by_freq"]:
        counts = np.bincount(idx, minlength=num)
        rows = rows / counts[idx][:, None]
    gw = np.zeros((num, rows.shape[1]))
    np.add.at(gw, idx, rows)
    pad = _signed(ctx["padding_idx"])
    if pad != -1:
        gw[pad] = 0.0
    return (gw,)


def _embedding_bag_example(draw) -> Case:
    num, dim = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    rng = _rng(draw)
    total = draw(st.integers(1, 8))
    idx = torch.from_numpy(rng.integers(0, num, size=total))
    bags = draw(st.integers(1, 3))
    offsets = torch.from_numpy(np.sort(np.concatenate([[0], rng.integers(0, total + 1, size=bags - 1)])))
    mode = draw(st.sampled_from(["sum", "mean", "max"]))
    psw = None
    if mode == "sum" and draw(st.booleans()):
        psw = tensor(draw, (total,), requires_grad=draw(st.booleans()))
    w = tensor(draw, (num, dim))
    if mode == "max":
        _no_ties(w, draw)
    padding_idx = draw(st.sampled_from([None, 0]))
    inputs = (w,) if psw is None else (w, psw)
    return Case(inputs=inputs, fn=lambda w, p=None: F.embedding_bag(
        idx, w, offsets, mode=mode, per_sample_weights=p, padding_idx=padding_idx))


@rule("EmbeddingBagBackward0",
      formula=r"y_b = \operatorname{reduce}_{i \in b}\,(s_i W_{t_i}):\quad "
              r"\bar{W}_{t_i} \mathrel{+}= s_i \bar{y}_{b(i)} \ (\text{sum}),\ \bar{y}_{b(i)}/|b| \ (\text{mean}),\ "
              r"\bar{y}_b \text{ at the argmax row (max)};\ \bar{s}_i = \bar{y}_{b(i)} \cdot W_{t_i}",
      example=_embedding_bag_example)
def _embedding_bag(ctx: RuleContext):
    idx = ctx["indices"].astype(np.int64)
    bag_of = ctx["result1"].astype(np.int64)  # offset2bag: the bag of each lookup
    bag_size = ctx["result2"].astype(np.int64)
    num = ctx["weight_sym_argsize_0"]
    mode = ctx["mode"]
    pad = _signed(ctx["padding_idx"])
    g = ctx.grad
    gw = np.zeros((num, g.shape[1]))
    real = idx != pad
    if mode == 2:  # max: each bag's gradient goes to the row that won each column
        winners = ctx["result3"].astype(np.int64)
        cols = np.broadcast_to(np.arange(g.shape[1]), winners.shape)
        won = np.broadcast_to(bag_size[:, None] > 0, winners.shape)  # empty bags: no winner
        np.add.at(gw, (winners[won], cols[won]), g[won])
        return gw, None
    rows = g[bag_of]
    if mode == 1:
        rows = rows / np.maximum(bag_size[bag_of], 1)[:, None]
    psw = ctx["per_sample_weights"]
    if psw is not None:
        rows = rows * psw[:, None]
    np.add.at(gw, idx[real], rows[real])
    gpsw = None
    if len(ctx.input_shapes) > 1 and ctx.input_shapes[1] is not None:
        gpsw = np.where(real, (g[bag_of] * ctx["weight"][idx]).sum(axis=1), 0.0)
    return gw, gpsw


def _native_dropout_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    p = draw(st.sampled_from([0.2, 0.5, 0.9]))
    torch.manual_seed(draw(st.integers(0, 1000)))
    return Case(inputs=(x,), fn=lambda x: torch.native_dropout(x, p, True)[0])


@rule("NativeDropoutBackward0",
      formula=r"y = x \odot m / (1 - p):\quad \bar{x} = \bar{y} \odot m / (1 - p)",
      example=_native_dropout_example)
def _native_dropout(ctx: RuleContext):
    p = ctx["p"]
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return (ctx.grad * ctx["result1"].astype(np.float64) * scale,)


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------


def _sdpa_example(draw) -> Case:
    if draw(st.integers(0, 3)) == 0:
        # Through nn.MultiheadAttention, with a key padding mask now and then.
        heads = draw(st.integers(1, 2))
        embed = heads * draw(st.integers(1, 3))
        n, length = draw(st.integers(1, 2)), draw(st.integers(1, 4))
        torch.manual_seed(draw(st.integers(0, 1000)))
        mha = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=torch.float64)
        x = tensor(draw, (n, length, embed))
        kpm = None
        if length > 1 and draw(st.booleans()):
            kpm = torch.zeros(n, length, dtype=torch.bool)
            kpm[:, -1] = True
        return Case(inputs=(x,), fn=lambda x: mha(x, x, x, need_weights=False,
                                                  key_padding_mask=kpm)[0])
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kv_heads = h if not draw(st.booleans()) else 1
    lq, lk, e = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    q = tensor(draw, (b, h, lq, e))
    k = tensor(draw, (b, kv_heads, lk, e), requires_grad=draw(st.booleans()))
    v = tensor(draw, (b, kv_heads, lk, e), requires_grad=draw(st.booleans()))
    scale = draw(st.sampled_from([None, 0.3]))
    masking = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    mask, causal = None, masking == "causal"
    rng = _rng(draw)
    if masking == "bool":
        keep = rng.random((lq, lk)) < 0.7
        keep[:, 0] = True  # no query may lose every key (its row would be 0/0)
        mask = torch.from_numpy(keep)
    elif masking == "float":
        mask = torch.tensor(rng.normal(size=(b, 1, lq, lk)), dtype=torch.float64)
    return Case(inputs=(q, k, v), fn=lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=kv_heads != h))


@rule("ScaledDotProductFlashAttentionForCpuBackward0",
      formula=r"S = s\,QK^{\top} + M,\ P = \operatorname{softmax}(S),\ O = PV:\quad "
              r"\bar{V} = P^{\top}\bar{O},\ \bar{P} = \bar{O}V^{\top},\ \bar{S} = P \odot (\bar{P} - \operatorname{rowsum}(\bar{P} \odot P)),\ "
              r"\bar{Q} = s\,\bar{S}K,\ \bar{K} = s\,\bar{S}^{\top}Q",
      example=_sdpa_example)
def _sdpa(ctx: RuleContext):
    q, k, v = ctx["query"], ctx["key"], ctx["value"]
    g = ctx.grad
    scale = ctx["scale"] if ctx["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    # Grouped-query attention: each key/value head serves a block of query heads.
    rep = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = scale * q @ np.swapaxes(kk, -1, -2)
    if ctx["attn_mask"] is not None:
        s = s + ctx["attn_mask"]
    if ctx["is_causal"]:
        lq, lk = s.shape[-2:]
        s = np.where(np.tril(np.ones((lq, lk), dtype=bool)), s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(s - top)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    gv = np.swapaxes(p, -1, -2) @ g
    gp = g @ np.swapaxes(vv, -1, -2)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
    gq = scale * gs @ kk
    gk = scale * np.swapaxes(gs, -1, -2) @ q

    def fold(a):  # sum the gradients of the query heads that shared one key/value head
        return a.reshape(a.shape[0], -1, rep, *a.shape[2:]).sum(axis=2)

    return _edge(ctx, 0, gq), _edge(ctx, 1, fold(gk)), _edge(ctx, 2, fold(gv))

"""Resampling (``F.interpolate`` / ``nn.Upsample``): nearest, nearest-exact, (bi/tri)linear,
bicubic, and antialiased bilinear/bicubic.

Every mode is separable and linear in its input: along each spatial axis the output is a
fixed (out, in) weight matrix times the input, built from the node's saved sizes, scales
and ``align_corners`` alone. So these rules read no forward values; the backward contracts
the incoming gradient with each axis's matrix. The matrices follow ATen's CPU index
formulas (``ATen/native/UpSample.h``) down to their float32 steps.

In a few corners torch's backward is not the derivative of its own forward (gradcheck
fails there); the rules follow the forward, each such rule's note says where.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._examples import tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Per-axis weight matrices, shape (out, in)
# ---------------------------------------------------------------------------------------


def _step(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> float:
    """Input pixels per output pixel: a scale_factor kept by the call wins over in/out."""
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else n_in / n_out


def _nearest_matrix(n_in: int, n_out: int, scale: float | None, exact: bool,
                    shortcuts: bool) -> np.ndarray:
    dst = np.arange(n_out)
    if shortcuts and n_out == n_in:
        src = dst
    elif shortcuts and n_out == 2 * n_in:
        src = dst >> 1
    else:
        # ATen computes these indices in float32 (floorf); float64 can land one pixel off
        # when o * step is an integer.
        step = np.float32(_step(n_in, n_out, scale, False))
        if exact:
            pos = ((dst + 0.5) * np.float64(step)).astype(np.float32)
        else:
            pos = dst.astype(np.float32) * step
        src = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    w = np.zeros((n_out, n_in))
    w[dst, src] = 1.0
    return w


def _source_position(n_in: int, n_out: int, scale: float | None, align_corners: bool,
                     cubic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the input: (floor index, fraction past it)."""
    dst = np.arange(n_out, dtype=np.float64)
    step = _step(n_in, n_out, scale, align_corners)
    if align_corners:
        real = step * dst
    else:
        real = step * (dst + 0.5) - 0.5
        if not cubic:
            real = np.maximum(real, 0.0)  # linear clamps the left border, cubic does not
    idx = np.minimum(np.floor(real.astype(np.float32)).astype(np.int64), n_in - 1)  # floorf
    return idx, np.clip(real - idx, 0.0, 1.0)


def _linear_matrix(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> np.ndarray:
    if n_out == n_in:
        return np.eye(n_in)  # ATen copies such an axis through, whatever the scale says
    idx, frac = _source_position(n_in, n_out, scale, align_corners, cubic=False)
    rows = np.arange(n_out)
    w = np.zeros((n_out, n_in))
    np.add.at(w, (rows, idx), 1.0 - frac)
    np.add.at(w, (rows, np.minimum(idx + 1, n_in - 1)), frac)
    return w


def _keys(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel (support |x| < 2)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _cubic_matrix(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> np.ndarray:
    idx, t = _source_position(n_in, n_out, scale, align_corners, cubic=True)
    taps = np.clip(idx[:, None] + np.arange(-1, 3), 0, n_in - 1)  # border pixels repeat
    weights = _keys(np.stack([t + 1, t, 1 - t, 2 - t], axis=-1), -0.75)
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    return w


def _antialias_matrix(n_in: int, n_out: int, scale: float | None, align_corners: bool,
                      cubic: bool) -> np.ndarray:
    """Pillow-style resampling: the kernel is stretched by the step when downsampling."""
    if n_out == n_in:
        return np.eye(n_in)  # the forward leaves such an axis alone
    step = _step(n_in, n_out, scale, align_corners)
    half_width = 2.0 if cubic else 1.0
    support = half_width * max(step, 1.0)
    max_taps = math.ceil(support) * 2 + 1
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        # ATen centres on (o + 1/2) step even with align_corners, and truncates toward 0.
        center = step * (o + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = lo + min(max(min(int(center + support + 0.5), n_in) - lo, 0), max_taps)
        x = (np.arange(lo, hi) - center + 0.5) / max(step, 1.0)
        k = _keys(x, -0.5) if cubic else np.maximum(1.0 - np.abs(x), 0.0)
        w[o, lo:hi] = k / k.sum() if k.sum() != 0 else k
    return w


# ---------------------------------------------------------------------------------------
# The rule: contract the gradient with each axis's matrix
# ---------------------------------------------------------------------------------------

_SCALE_NAMES = {1: ("scales",), 2: ("scales_h", "scales_w"), 3: ("scales_d", "scales_h", "scales_w")}


def _axis_matrix(kind: str, nd: int, n_in: int, n_out: int, scale, align: bool) -> np.ndarray:
    if kind == "nearest":
        # Of the forwards, only nearest 2-d takes ATen's out == in / out == 2 in shortcuts.
        return _nearest_matrix(n_in, n_out, scale, exact=False, shortcuts=nd == 2)
    if kind == "nearest-exact":
        return _nearest_matrix(n_in, n_out, scale, exact=True, shortcuts=False)
    if kind == "linear":
        return _linear_matrix(n_in, n_out, scale, align)
    if kind == "cubic":
        return _cubic_matrix(n_in, n_out, scale, align)
    return _antialias_matrix(n_in, n_out, scale, align, cubic=kind == "cubic-aa")


def _resample_backward(ctx: RuleContext, nd: int, kind: str):
    n_in = ctx["self_sym_sizes"][-nd:]
    scales = [ctx.saved.get(name) for name in _SCALE_NAMES[nd]]
    align = bool(ctx.saved.get("align_corners", False))
    g = ctx.grad
    lead = g.ndim - nd
    # Contracting the first spatial axis appends the input axis at the end, so after nd
    # steps the spatial axes are back in order.
    for i, o, s in zip(n_in, ctx["output_size"], scales, strict=True):
        g = np.tensordot(g, _axis_matrix(kind, nd, i, o, s, align), axes=([lead], [0]))
    return (g,)


# ---------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------

# Hand-picked factors hit ATen's shortcuts (out == in, out == 2 in under a factor other
# than 1 or 2) and downsampling; the float draw covers the rest.
_FACTORS = st.sampled_from([0.5, 0.6, 0.75, 1.0, 1.2, 1.5, 1.7, 2.0, 2.3, 2.5, 3.0])


def _resample_example(nd: int, mode: str, antialias: bool = False):
    # Torch's backward departs from its forward where a kept factor gives out == in (or
    # out == 2 in), for these modes; the examples move such a factor to 1 (or 2).
    same_breaks = antialias or mode == "bicubic" or (mode == "nearest" and nd != 2)
    double_breaks = mode == "nearest" and nd != 2
    # The antialiased forward mis-resamples when the width is 1 pixel in or out.
    min_side = 2 if antialias else 1

    def settle(n: int, f: float) -> float:
        out = math.floor(n * f)
        if out < min_side or (same_breaks and out == n):
            return 1.0
        return 2.0 if double_breaks and out == 2 * n else f

    def example(draw) -> Case:
        n_in = tuple(draw(st.integers(min_side, 5), label="in side") for _ in range(nd))
        x = tensor(draw, (draw(st.integers(1, 3)), draw(st.integers(1, 3))) + n_in)
        kwargs: dict = {"mode": mode}
        if mode not in ("nearest", "nearest-exact"):
            kwargs["align_corners"] = draw(st.booleans(), label="align_corners")
        if draw(st.booleans(), label="use size"):
            kwargs["size"] = tuple(draw(st.integers(min_side, 6), label="out side") for _ in range(nd))
        else:
            factors = [settle(n, draw(_FACTORS | st.floats(0.3, 3.2), label="factor")) for n in n_in]
            one = len(set(factors)) == 1 and draw(st.booleans(), label="one factor")
            kwargs["scale_factor"] = factors[0] if one else tuple(factors)
            kwargs["recompute_scale_factor"] = draw(st.sampled_from([None, False, True]))
        if antialias:
            return Case(inputs=(x,), fn=lambda x: F.interpolate(x, antialias=True, **kwargs))
        if draw(st.booleans(), label="as nn.Upsample"):
            return Case(inputs=(x,), fn=torch.nn.Upsample(**kwargs))
        return Case(inputs=(x,), fn=lambda x: F.interpolate(x, **kwargs))

    return example


# ---------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------

_STEP = r"\rho = 1/\text{scale (kept) or } L_{in}/L_{out}"
_NEAREST = (r"y_o = x_{s(o)},\ s(o) = \min(\lfloor o\,\rho \rfloor, L_{in} - 1),\ " + _STEP + r":\quad "
            r"\bar{x}_i = \textstyle\sum_{o:\,s(o) = i} \bar{y}_o \text{ per spatial axis}")
_NEAREST_EXACT = (r"y_o = x_{s(o)},\ s(o) = \min(\lfloor (o + \tfrac12)\,\rho \rfloor, L_{in} - 1):\quad "
                  r"\bar{x}_i = \textstyle\sum_{o:\,s(o) = i} \bar{y}_o \text{ per spatial axis}")
_LINEAR = (r"y = x \times_k W_k,\ W_k[o, \lfloor u \rfloor] = 1 - \lambda,\ W_k[o, \lfloor u \rfloor + 1] = \lambda,\ "
           r"u = \begin{cases} o\,\tfrac{L_{in} - 1}{L_{out} - 1} & \text{align corners} \\ "
           r"\max(\rho\,(o + \tfrac12) - \tfrac12,\ 0) & \text{else} \end{cases}:\quad "
           r"\bar{x} = \bar{y} \times_k W_k^{\top}")
_CUBIC = (r"y = x \times_k W_k,\ W_k[o, \operatorname{clamp}(\lfloor u \rfloor + j)] \mathrel{+}= "
          r"K_{-0.75}(j - \lambda),\ j \in \{-1, 0, 1, 2\}:\quad \bar{x} = \bar{y} \times_k W_k^{\top}")
_ANTIALIAS = (r"y = x \times_k W_k,\ W_k[o, i] \propto K\big((i + \tfrac12 - c_o)/\max(\rho, 1)\big),\ "
              r"c_o = \rho\,(o + \tfrac12),\ \textstyle\sum_i W_k[o, i] = 1,\ K: \text{triangle or } K_{-0.5}:\quad "
              r"\bar{x} = \bar{y} \times_k W_k^{\top}")

_NEAREST_NOTE = ("The derivative of torch's forward. Where a kept scale_factor other than 1 (2) "
                 "gives out == in (out == 2 in), torch's backward routes output o to input o "
                 "(o // 2) while its forward reads floor(o / scale): the two differ there.")


@rule("UpsampleNearest1DBackward0", formula=_NEAREST, example=_resample_example(1, "nearest"),
      note=_NEAREST_NOTE)
def _nearest1d(ctx: RuleContext):
    return _resample_backward(ctx, 1, "nearest")


@rule("UpsampleNearest2DBackward0", formula=_NEAREST, example=_resample_example(2, "nearest"))
def _nearest2d(ctx: RuleContext):
    return _resample_backward(ctx, 2, "nearest")


@rule("UpsampleNearest3DBackward0", formula=_NEAREST, example=_resample_example(3, "nearest"),
      note=_NEAREST_NOTE)
def _nearest3d(ctx: RuleContext):
    return _resample_backward(ctx, 3, "nearest")


@rule("UpsampleNearestExact1DBackward0", formula=_NEAREST_EXACT,
      example=_resample_example(1, "nearest-exact"))
def _nearest_exact1d(ctx: RuleContext):
    return _resample_backward(ctx, 1, "nearest-exact")


@rule("UpsampleNearestExact2DBackward0", formula=_NEAREST_EXACT,
      example=_resample_example(2, "nearest-exact"))
def _nearest_exact2d(ctx: RuleContext):
    return _resample_backward(ctx, 2, "nearest-exact")


@rule("UpsampleNearestExact3DBackward0", formula=_NEAREST_EXACT,
      example=_resample_example(3, "nearest-exact"))
def _nearest_exact3d(ctx: RuleContext):
    return _resample_backward(ctx, 3, "nearest-exact")


@rule("UpsampleLinear1DBackward0", formula=_LINEAR, example=_resample_example(1, "linear"))
def _linear1d(ctx: RuleContext):
    return _resample_backward(ctx, 1, "linear")


@rule("UpsampleBilinear2DBackward0", formula=_LINEAR, example=_resample_example(2, "bilinear"))
def _bilinear2d(ctx: RuleContext):
    return _resample_backward(ctx, 2, "linear")


@rule("UpsampleTrilinear3DBackward0", formula=_LINEAR, example=_resample_example(3, "trilinear"))
def _trilinear3d(ctx: RuleContext):
    return _resample_backward(ctx, 3, "linear")


_BICUBIC_NOTE = ("The derivative of torch's forward. When both sides keep their size under a kept "
                 "scale_factor other than 1, the forward still interpolates but torch's backward "
                 "copies the gradient straight through: the two differ there.")


@rule("UpsampleBicubic2DBackward0", formula=_CUBIC, example=_resample_example(2, "bicubic"),
      note=_BICUBIC_NOTE)
def _bicubic2d(ctx: RuleContext):
    return _resample_backward(ctx, 2, "cubic")


_ANTIALIAS_NOTE = ("The derivative of torch's forward. A side that keeps its size under a kept "
                   "scale_factor other than 1 is left alone by the forward but resampled by "
                   "torch's backward, so the two differ there; and the forward misbehaves when "
                   "the width is 1 pixel in or out, where this rule (like torch's backward) "
                   "uses the documented weights.")


@rule("UpsampleBilinear2DAaBackward0", formula=_ANTIALIAS,
      example=_resample_example(2, "bilinear", antialias=True), note=_ANTIALIAS_NOTE)
def _bilinear2d_aa(ctx: RuleContext):
    return _resample_backward(ctx, 2, "linear-aa")


@rule("UpsampleBicubic2DAaBackward0", formula=_ANTIALIAS,
      example=_resample_example(2, "bicubic", antialias=True), note=_ANTIALIAS_NOTE)
def _bicubic2d_aa(ctx: RuleContext):
    return _resample_backward(ctx, 2, "cubic-aa")

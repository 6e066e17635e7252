"""Resampling (``F.interpolate`` / ``nn.Upsample``): nearest, nearest-exact, (bi/tri)linear,
bicubic, and antialiased bilinear/bicubic; and grid sampling (``F.grid_sample``) with
affine grids.

Every interpolate mode is separable and linear in its input: along each spatial axis the
output is a fixed (out, in) weight matrix times the input, built from the node's saved
sizes, scales and ``align_corners`` alone. So these rules read no forward values; the
backward contracts the incoming gradient with each axis's matrix. The matrices follow
ATen's CPU index formulas (``ATen/native/UpSample.h``) down to their float32 steps.

In a few corners torch's backward is not the derivative of its own forward (gradcheck
fails there); the rules follow the forward, each such rule's note says where.

grid_sample saves ``input``/``grid`` and the integer ``interpolation_mode`` (0 bilinear,
1 nearest, 2 bicubic) and ``padding_mode`` (0 zeros, 1 border, 2 reflection); affine_grid
saves ``size``. Bicubic grid sampling exists in 2-D only (the rule raises ValueError for
anything else).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, leaf, shape, tensor
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

_SCALE_NAMES = {
    1: ("scales",), 2: ("scales_h", "scales_w"), 3: ("scales_d", "scales_h", "scales_w")
}


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
            sides = st.integers(min_side, 6)
            kwargs["size"] = tuple(draw(sides, label="out side") for _ in range(nd))
        else:
            factor = _FACTORS | st.floats(0.3, 3.2)
            factors = [settle(n, draw(factor, label="factor")) for n in n_in]
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
_NEAREST = (r"y_o = x_{s(o)},\ s(o) = \min(\lfloor o\,\rho \rfloor, L_{in} - 1),\ "
            + _STEP + r":\quad "
        r""
            r"\bar{x}_i = \textstyle\sum_{o:\,s(o) = i} \bar{y}_o \text{ per spatial axis}")
_NEAREST_EXACT = (r"y_o = x_{s(o)},\ s(o) = \min(\lfloor (o + \tfrac12)\,\rho \rfloor, L_{in} - "
                  r"1):\quad "
                  r"\bar{x}_i = \textstyle\sum_{o:\,s(o) = i} \bar{y}_o \text{ per spatial axis}")
_LINEAR = (r"y = x \times_k W_k,\ W_k[o, \lfloor u \rfloor] = 1 - \lambda,\ W_k[o, \lfloor u "
           r"\rfloor + 1] = \lambda,\ "
           r"u = \begin{cases} o\,\tfrac{L_{in} - 1}{L_{out} - 1} & \text{align corners} \\ "
           r"\max(\rho\,(o + \tfrac12) - \tfrac12,\ 0) & \text{else} \end{cases}:\quad "
           r"\bar{x} = \bar{y} \times_k W_k^{\top}")
_CUBIC = (r"y = x \times_k W_k,\ W_k[o, \operatorname{clamp}(\lfloor u \rfloor + j)] \mathrel{+}= "
          r"K_{-0.75}(j - \lambda),\ j \in \{-1, 0, 1, 2\}:\quad \bar{x} = \bar{y} \times_k "
          r"W_k^{\top}")
_ANTIALIAS = (r"y = x \times_k W_k,\ W_k[o, i] \propto K\big((i + \tfrac12 - c_o)/\max(\rho, "
              r"1)\big),\ "
              r"c_o = \rho\,(o + \tfrac12),\ \textstyle\sum_i W_k[o, i] = 1,\ K: \text{triangle or "
              r"} K_{-0.5}:\quad "
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


# ---------------------------------------------------------------------------------------
# Grid sampling and affine grids
# ---------------------------------------------------------------------------------------
# Grid coordinates are in [-1, 1], last component first: grid[..., 0] indexes the width
# (the last dim), grid[..., 1] the height, grid[..., 2] the depth. The NumPy code turns them
# around so that coordinate j indexes spatial dim j of the input.


def _unnormalize(c: np.ndarray, n: int, align: bool) -> tuple[np.ndarray, float]:
    """Grid coordinate -> pixel coordinate in a dim of size n, and d pixel / d grid."""
    if align:
        return (c + 1) / 2 * (n - 1), (n - 1) / 2
    return ((c + 1) * n - 1) / 2, n / 2


def _reflect(x: np.ndarray, twice_low: int, twice_high: int) -> tuple[np.ndarray, np.ndarray]:
    """x mirrored back and forth into [low, high], and d result / dx (+1 or -1)."""
    if twice_low == twice_high:
        return np.zeros_like(x), np.zeros_like(x)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    x = x - low
    sign = np.where(x < 0, -1.0, 1.0)
    x = np.abs(x)
    extra = np.fmod(x, span)
    even = np.floor(x / span) % 2 == 0
    return np.where(even, extra + low, span - extra + low), np.where(even, sign, -sign)


def _pad(x: np.ndarray, n: int, padding: int, align: bool) -> tuple[np.ndarray, np.ndarray]:
    """Apply padding_mode to pixel coordinates: zeros (0) leaves them, border (1) clips them
    into [0, n - 1], reflection (2) mirrors them about the edges first. Returns the new
    coordinates and their derivative."""
    if padding == 0:
        return x, np.ones_like(x)
    slope = np.ones_like(x)
    if padding == 2:
        x, slope = _reflect(x, 0, 2 * (n - 1)) if align else _reflect(x, -1, 2 * n - 1)
    # Clipped coordinates do not move; the derivative at the clip limit itself is 0 too.
    return np.clip(x, 0, n - 1), slope * ((x > 0) & (x < n - 1))


def _cubic(t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights of the taps at floor - 1 .. floor + 2 for fraction t (Keys, A = -0.75), and
    their derivatives in t."""
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1, (3 * (a + 2) * x - 2 * (a + 3)) * x

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, (3 * a * x - 10 * a) * x + 8 * a

    (w0, d0), (w1, d1), (w2, d2), (w3, d3) = far(t + 1), near(t), near(1 - t), far(2 - t)
    return [w0, w1, w2, w3], [d0, d1, -d2, -d3]


def _grid_sampler(ctx: RuleContext):
    x, grid, g = ctx["input"], ctx["grid"], ctx.grad
    mode, padding = int(ctx["interpolation_mode"]), int(ctx["padding_mode"])
    align = bool(ctx["align_corners"])
    if mode not in (0, 1, 2):
        raise ValueError(
            f"grid_sample interpolation mode {mode} is not bilinear, nearest or bicubic"
        )
    sizes = x.shape[2:]
    d = len(sizes)
    # Channels last, so that indexing with (batch, *pixel) arrays picks a vector of channels.
    xm, gm = np.moveaxis(x, 1, -1), np.moveaxis(g, 1, -1)
    grad_xm = np.zeros_like(xm)
    out_shape = grid.shape[:-1]
    batch = np.broadcast_to(
        np.arange(x.shape[0]).reshape((-1,) + (1,) * (len(out_shape) - 1)), out_shape
    )

    def visit(index: list[np.ndarray], weight: np.ndarray) -> np.ndarray:
        """Add grad * weight onto the input pixel at `index` (when inside the input);
        return sum over channels of grad * pixel value there (0 outside)."""
        inside = np.all([(i >= 0) & (i < n) for i, n in zip(index, sizes, strict=True)], axis=0)
        at = (batch, *(np.clip(i, 0, n - 1).astype(np.int64)
                       for i, n in zip(index, sizes, strict=True)))
        np.add.at(grad_xm, at, gm * (weight * inside)[..., None])
        return np.sum(gm * xm[at], axis=-1) * inside

    pixel, scale = zip(
        *(_unnormalize(grid[..., d - 1 - j], sizes[j], align) for j in range(d)), strict=True
    )
    grad_pixel = [np.zeros(out_shape) for _ in range(d)]
    if mode == 2:
        if d != 2:
            raise ValueError("bicubic grid_sample exists for 4-D inputs only")
        # Bicubic pads each of its 4 x 4 taps (whole pixels), not the sampling point, so
        # the grid gradient comes from the cubic weights alone.
        base = [np.floor(p) for p in pixel]
        taps = [_cubic(p - b) for p, b in zip(pixel, base, strict=True)]
        for i, k in itertools.product(range(4), repeat=2):
            index = [_pad(base[0] + i - 1, sizes[0], padding, align)[0],
                     _pad(base[1] + k - 1, sizes[1], padding, align)[0]]
            (w0, dw0), (w1, dw1) = (taps[0][0][i], taps[0][1][i]), (taps[1][0][k], taps[1][1][k])
            dot = visit(index, w0 * w1)
            grad_pixel[0] += dot * dw0 * w1
            grad_pixel[1] += dot * w0 * dw1
    else:
        padded = [_pad(p, n, padding, align) for p, n in zip(pixel, sizes, strict=True)]
        scale = [s * slope for s, (_, slope) in zip(scale, padded, strict=True)]
        pixel = [p for p, _ in padded]
        if mode == 1:  # nearest: round half to even, as nearbyint does; no grid gradient
            visit([np.rint(p) for p in pixel], np.ones(out_shape))
        else:
            base = [np.floor(p) for p in pixel]
            frac = [p - b for p, b in zip(pixel, base, strict=True)]
            for corner in itertools.product((0, 1), repeat=d):
                w = [f if c else 1 - f for f, c in zip(frac, corner, strict=True)]
                dot = visit([b + c for b, c in zip(base, corner, strict=True)], math.prod(w))
                for j in range(d):
                    rest = math.prod(w[:j] + w[j + 1:])
                    grad_pixel[j] += dot * rest * (1.0 if corner[j] else -1.0)
    grad_grid = np.stack([grad_pixel[d - 1 - j] * scale[d - 1 - j] for j in range(d)], axis=-1)
    return np.moveaxis(grad_xm, -1, 1), grad_grid


def _grid_sample_example(d: int):
    """F.grid_sample on a d-dim image. Sample points are drawn in pixel space, where the
    result is differentiable: 0.05 from the integers for bilinear/bicubic (corners, clip
    limits, align_corners mirrors), 0.1 from the half-integers for nearest (rounding);
    mirroring about integers or half-integers keeps those distances."""

    def example(draw: Draw) -> Case:
        modes = ["bilinear", "nearest", "bicubic"] if d == 2 else ["bilinear", "nearest"]
        mode = draw(st.sampled_from(modes), label="mode")
        padding = draw(st.sampled_from(["zeros", "border", "reflection"]), label="padding")
        align = draw(st.booleans(), label="align_corners")
        n, c = draw(st.integers(1, 2), label="batch"), draw(st.integers(1, 2), label="channels")
        sizes = shape(draw, min_dims=d, max_dims=d, max_side=4)
        out = shape(draw, min_dims=d, max_dims=d, max_side=3)
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="grid seed"))
        coords = []
        for side in reversed(sizes):  # grid order: width first
            whole = rng.integers(-side - 1, 2 * side + 1, size=(n, *out))
            low, high = (-0.4, 0.4) if mode == "nearest" else (0.05, 0.95)
            frac = rng.uniform(low, high, size=(n, *out))
            p = whole + frac
            if align:  # a size-1 side maps every grid value to pixel 0
                coords.append(p / (side - 1) * 2 - 1 if side > 1
                              else rng.uniform(-1.5, 1.5, size=p.shape))
            else:
                coords.append((2 * p + 1) / side - 1)
        which = draw(st.sampled_from(["both", "input", "grid"]), label="needs grad")
        x = tensor(draw, (n, c, *sizes), requires_grad=which != "grid")
        grid = leaf(np.stack(coords, axis=-1), which != "input")
        return Case(inputs=(x, grid), fn=lambda x, grid: F.grid_sample(
            x, grid, mode=mode, padding_mode=padding, align_corners=align))

    return example


_GRID_SAMPLE = (
    r"Y_{n,c,o} = \sum_{p} w_p(u_o)\, X_{n,c,p},\ u_o = "
    r"\operatorname{pad}(\operatorname{unnorm}(G_{n,o})):\quad "
    r"\bar{X}_{n,c,p} = \sum_o w_p(u_o)\,\bar{Y}_{n,c,o},\quad "
    r"\bar{G}_{n,o} = \sum_{c,p} \bar{Y}_{n,c,o} X_{n,c,p}\, \frac{\partial w_p}{\partial "
    r"u}\frac{\partial u}{\partial G}"
)
rule("GridSampler2DBackward0", formula=_GRID_SAMPLE, example=_grid_sample_example(2))(_grid_sampler)
rule("GridSampler3DBackward0", formula=_GRID_SAMPLE, example=_grid_sample_example(3))(_grid_sampler)


def _base_line(n: int, align: bool) -> np.ndarray:
    """The n grid coordinates of one axis of affine_grid's base grid."""
    if n <= 1:
        return np.zeros(max(n, 1))
    line = np.linspace(-1.0, 1.0, n)
    return line if align else line * (n - 1) / n


def _affine_grid_example(draw: Draw) -> Case:
    d = draw(st.sampled_from([2, 3]), label="spatial dims")
    n = draw(st.integers(1, 2), label="batch")
    sizes = shape(draw, min_dims=d, max_dims=d, max_side=4)
    align = draw(st.booleans(), label="align_corners")
    theta = tensor(draw, (n, d, d + 1))

    def fn(theta):
        with warnings.catch_warnings():  # unit-size sides with align_corners=True warn
            warnings.simplefilter("ignore", UserWarning)
            return F.affine_grid(theta, [n, 1, *sizes], align_corners=align)

    return Case(inputs=(theta,), fn=fn)


@rule(
    "AffineGridGeneratorBackward0",
    formula=r"G_{n,o} = \Theta_n\,(b_o, 1):\quad \bar{\Theta}_n = \sum_o \bar{G}_{n,o}\,(b_o, "
            r"1)^\top",
    example=_affine_grid_example,
)
def _affine_grid(ctx: RuleContext):
    sizes = tuple(ctx["size"])[2:]
    lines = [_base_line(s, bool(ctx["align_corners"])) for s in sizes]
    mesh = np.meshgrid(*lines, indexing="ij")
    # The base grid lists x (the width coordinate) first, then y (and z), then 1.
    base = np.stack([*reversed(mesh), np.ones(mesh[0].shape)], axis=-1)
    g = ctx.grad.reshape(ctx.grad.shape[0], -1, len(sizes))
    return (np.einsum("npi,pj->nij", g, base.reshape(-1, len(sizes) + 1)),)

"""Elementwise arithmetic and selection: add, sub, mul, div, pow, lerp, addcmul/addcdiv,
clamp, maximum/minimum, where and masked_fill. Each output entry depends on the same entry
of each (broadcast) input, so each gradient is the incoming one times a local derivative,
summed back over the axes the input was broadcast along."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import arr, shaped, zero_grads
from gradviz.backward.rules._examples import (
    binary_example,
    broadcast_shapes,
    seeded_rng,
    shape,
    tensor,
    unary_example,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------


def _value(v) -> np.ndarray:
    """A saved operand as a float64 array, or complex128 when it is complex."""
    a = np.asarray(v)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _complex_example(draw, op, away_from: float | None = None) -> Case:
    """`op` on two complex tensors (pairs of reals read by view_as_complex), seen as reals."""
    sa, sb = broadcast_shapes(draw)
    a = tensor(draw, (*sa, 2))
    b = tensor(draw, (*sb, 2), away_from=away_from, margin=0.3)
    return Case(inputs=(a, b), fn=lambda a, b: torch.view_as_real(
        op(torch.view_as_complex(a), torch.view_as_complex(b))))


def _add_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    if draw(st.booleans()):
        return binary_example(lambda a, b: torch.add(a, b, alpha=alpha))(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.add(x, 1.5, alpha=alpha))


@rule("AddBackward0", formula=r"\bar{a} = \bar{y},\quad \bar{b} = \alpha\,\bar{y}",
      example=_add_example, complex=True)
def _add(ctx: RuleContext):
    g = ctx.grad
    return shaped(ctx, 0, g), shaped(ctx, 1, g * ctx["alpha"])


def _add_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.add.Scalar(x, 2.5, alpha=3))


@rule("AddBackward1", formula=r"\bar{x} = \bar{y}", example=_add_scalar_example, complex=True)
def _add_scalar(ctx: RuleContext):
    return (ctx.grad,)


def _sub_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    if draw(st.booleans()):
        return binary_example(lambda a, b: torch.sub(a, b, alpha=alpha))(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: x - 1.5)


@rule("SubBackward0", formula=r"\bar{a} = \bar{y},\quad \bar{b} = -\alpha\,\bar{y}",
      example=_sub_example, complex=True)
def _sub(ctx: RuleContext):
    g = ctx.grad
    return shaped(ctx, 0, g), shaped(ctx, 1, -g * ctx["alpha"])


def _sub_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.sub.Scalar(x, 2.5))


@rule("SubBackward1", formula=r"\bar{x} = \bar{y}", example=_sub_scalar_example, complex=True)
def _sub_scalar(ctx: RuleContext):
    return (ctx.grad,)


def _rsub_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    return binary_example(lambda a, b: torch.rsub(a, b, alpha=alpha))(draw)


@rule("RsubBackward0", formula=r"y = b - \alpha a:\quad \bar{a} = -\alpha\,\bar{y},\quad \bar{b} = "
                               r"\bar{y}",
      example=_rsub_example)
def _rsub(ctx: RuleContext):
    g = ctx.grad
    return shaped(ctx, 0, -g * ctx["alpha"]), shaped(ctx, 1, g)


def _rsub_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    if draw(st.booleans()):
        return Case(inputs=(x,), fn=lambda x: 2.0 - x)
    return Case(inputs=(x,), fn=lambda x: torch.rsub(x, 2.0, alpha=3))


@rule("RsubBackward1", formula=r"y = s - \alpha x:\quad \bar{x} = -\alpha\,\bar{y}",
      example=_rsub_scalar_example)
def _rsub_scalar(ctx: RuleContext):
    return (-ctx.grad * ctx["alpha"],)


def _mul_example(draw) -> Case:
    kind = draw(st.sampled_from(["tensors", "scalar", "dropout2d"]))
    if kind == "tensors":
        return binary_example(torch.mul)(draw)
    if kind == "scalar":
        x = tensor(draw, shape(draw, min_dims=0))
        return Case(inputs=(x,), fn=lambda x: x * 2.5)
    if draw(st.booleans(), label="complex"):
        return _complex_example(draw, torch.mul)
    # In training, dropout on CPU multiplies by a (mask / (1 - p)) tensor: a MulBackward0.
    x = tensor(draw, (draw(st.integers(1, 3)), draw(st.integers(1, 4)), 3, 2))
    torch.manual_seed(draw(st.integers(0, 1000)))
    return Case(inputs=(x,), fn=lambda x: F.dropout2d(x, 0.4, training=True))


@rule("MulBackward0",
      formula=r"\bar{a} = \bar{y} \odot b^{*},\quad \bar{b} = \bar{y} \odot a^{*}\ "
              r"(^{*}\text{: conjugate, for complex operands})",
      example=_mul_example, complex=True)
def _mul(ctx: RuleContext):
    g = ctx.grad
    ga = None if ctx.input_shapes[0] is None else g * np.conj(_value(ctx["other"]))
    gb = None if ctx.input_shapes[1] is None else g * np.conj(_value(ctx["self"]))
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


def _mul_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    s = draw(st.sampled_from([2.5, -1.0, 3]))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.mul.Scalar(x, s))


@rule("MulBackward1", formula=r"\bar{x} = s^{*}\,\bar{y}", example=_mul_scalar_example,
      complex=True)
def _mul_scalar(ctx: RuleContext):
    return (ctx.grad * np.conj(ctx["other"]),)


def _div_example(draw) -> Case:
    if draw(st.integers(0, 3), label="kind") == 0:
        return _complex_example(draw, torch.div, away_from=0.0)
    if draw(st.booleans()):
        return binary_example(torch.div, low_b=0.5, high_b=3.0)(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: x / -2.5)


@rule("DivBackward0",
      formula=r"\bar{a} = \bar{y} \oslash b^{*},\quad \bar{b} = -\bar{y} \odot (a \oslash "
              r"b^{2})^{*}",
      example=_div_example, complex=True)
def _div(ctx: RuleContext):
    g = ctx.grad
    b = _value(ctx["other"])
    ga = None if ctx.input_shapes[0] is None else g / np.conj(b)
    gb = None if ctx.input_shapes[1] is None else -g * np.conj((_value(ctx["self"]) / b) / b)
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


def _div_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.div.Scalar(x, -2.5))


@rule("DivBackward1", formula=r"\bar{x} = \bar{y} / s^{*}", example=_div_scalar_example,
      complex=True)
def _div_scalar(ctx: RuleContext):
    return (ctx.grad / np.conj(ctx["other"]),)


def _div_mode_example(draw) -> Case:
    mode = draw(st.sampled_from(["floor", "trunc"]))
    return binary_example(lambda a, b: torch.div(a, b, rounding_mode=mode),
                           low_b=0.5, high_b=3.0)(draw)


@rule("DivBackward2",
      formula=r"y = \lfloor a / b \rceil \text{ (floor or trunc)}:\quad \bar{a} = 0,\ \bar{b} = 0",
      example=_div_mode_example)
def _div_mode(ctx: RuleContext):
    # A rounded quotient is piecewise constant: zero gradient almost everywhere.
    return zero_grads(ctx)


def _div_scalar_mode_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    mode = draw(st.sampled_from(["floor", "trunc"]))
    return Case(inputs=(x,),
                fn=lambda x: torch.ops.aten.div.Scalar_mode(x, 0.7, rounding_mode=mode))


@rule("DivBackward3", formula=r"y = \lfloor x / s \rceil:\quad \bar{x} = 0",
      example=_div_scalar_mode_example)
def _div_scalar_mode(ctx: RuleContext):
    return zero_grads(ctx)


_neg_example = unary_example(torch.neg)


@rule("NegBackward0", formula=r"\bar{x} = -\bar{y}", example=_neg_example)
def _neg(ctx: RuleContext):
    return (-ctx.grad,)


def _pow_example(draw) -> Case:
    exponent = draw(st.sampled_from([2, 3, -1, 0, 0.5, 1.5, -2.5]))
    positive = not float(exponent).is_integer()
    x = tensor(draw, shape(draw, min_dims=0), low=0.2 if positive else -3.0, high=3.0,
               away_from=None if positive else 0.0, margin=0.1)
    if exponent == 2 and draw(st.booleans()):
        return Case(inputs=(x,), fn=torch.square)
    return Case(inputs=(x,), fn=lambda x: x ** exponent)


@rule("PowBackward0", formula=r"y = x^{p}:\quad \bar{x} = \bar{y} \odot p\,x^{p-1}",
      example=_pow_example)
def _pow(ctx: RuleContext):
    p = ctx["exponent"]
    x = ctx["self"]
    if p == 0:
        return (np.zeros_like(x),)
    return (ctx.grad * (p * np.power(x, p - 1.0)),)


def _pow_tensor_example(draw) -> Case:
    sa, sb = broadcast_shapes(draw)
    which = draw(st.sampled_from(["both", "base", "exponent"]))
    if which == "exponent" and draw(st.booleans()):
        e = tensor(draw, sb, low=-2.0, high=2.0)
        base = torch.tensor(draw(st.sampled_from([0.5, 2.0, 3.0])), dtype=torch.float64)
        return Case(inputs=(e,), fn=lambda e: torch.pow(base, e))
    a = tensor(draw, sa, low=0.2, high=3.0, requires_grad=which != "exponent")
    b = tensor(draw, sb, low=-2.0, high=2.0, requires_grad=which != "base")
    return Case(inputs=(a, b), fn=torch.pow)


@rule("PowBackward1",
      formula=r"y = a^{b}:\quad \bar{a} = \bar{y} \odot b\,a^{b-1},\quad \bar{b} = \bar{y} \odot y "
              r"\ln a",
      example=_pow_tensor_example)
def _pow_tensor(ctx: RuleContext):
    g = ctx.grad
    a, b = arr(ctx["self"]), arr(ctx["exponent"])
    ga = gb = None
    if ctx.input_shapes[0] is not None:
        ga = np.where(b == 0, 0.0, g * (b * np.power(a, b - 1.0)))
    if ctx.input_shapes[1] is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            # 0^b with b >= 0: ln 0 = -inf, but the slope in b is taken as 0 there, not NaN.
            gb = g * np.where((b >= 0) & (a == 0), 0.0, arr(ctx["result"]) * np.log(a))
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


def _scalar_pow_example(draw) -> Case:
    e = tensor(draw, shape(draw, min_dims=0), low=-2.0, high=2.0)
    base = draw(st.sampled_from([0.5, 2, 3.0, math.e]))
    return Case(inputs=(e,), fn=lambda e: base ** e)


@rule("PowBackward2", formula=r"y = s^{x}:\quad \bar{x} = \bar{y} \odot y \ln s",
      example=_scalar_pow_example)
def _scalar_pow(ctx: RuleContext):
    s = float(ctx["self"])
    y = ctx["result"]
    g = ctx.grad
    if s == 0:
        return (g * np.where(ctx["exponent"] >= 0, 0.0, y * -np.inf),)
    return (g * (y * math.log(s)),)


def _lerp_example(draw) -> Case:
    w = draw(st.sampled_from([0.3, -0.5, 1.25]))
    s = shape(draw, min_dims=0)
    a = tensor(draw, s, requires_grad=draw(st.booleans()))
    b = tensor(draw, s)
    return Case(inputs=(a, b), fn=lambda a, b: torch.lerp(a, b, w))


@rule("LerpBackward0",
      formula=r"y = a + w(b - a):\quad \bar{a} = (1 - w)\,\bar{y},\quad \bar{b} = w\,\bar{y}",
      example=_lerp_example)
def _lerp(ctx: RuleContext):
    g, w = ctx.grad, ctx["weight"]
    return shaped(ctx, 0, g * (1 - w)), shaped(ctx, 1, g * w)


def _lerp_tensor_example(draw) -> Case:
    full = shape(draw, min_dims=0)
    sa = full
    sb, sw = (tuple(1 if draw(st.booleans()) else n for n in full) for _ in range(2))
    a, b = tensor(draw, sa), tensor(draw, sb)
    w = tensor(draw, sw, low=-1.0, high=2.0, requires_grad=draw(st.booleans()))
    return Case(inputs=(a, b, w), fn=torch.lerp)


@rule("LerpBackward1",
      formula=r"y = a + w \odot (b - a):\quad \bar{a} = (1 - w) \odot \bar{y},\ "
              r"\bar{b} = w \odot \bar{y},\ \bar{w} = (b - a) \odot \bar{y}",
      example=_lerp_tensor_example)
def _lerp_tensor(ctx: RuleContext):
    g = ctx.grad
    w = ctx["weight"]
    gw = None
    if ctx.input_shapes[2] is not None:
        gw = g * (ctx["end"] - ctx["self"])
    return shaped(ctx, 0, g * (1 - w)), shaped(ctx, 1, g * w), shaped(ctx, 2, gw)


def _addc_example(op, positive_t2: bool):
    def example(draw) -> Case:
        sa, s1, s2 = broadcast_shapes(draw, 3)
        value = draw(st.sampled_from([1, 0.5, -2]))
        a = tensor(draw, sa, requires_grad=draw(st.booleans()))
        t1 = tensor(draw, s1)
        t2 = tensor(draw, s2, low=0.5 if positive_t2 else -3.0, high=3.0,
                    requires_grad=draw(st.booleans()))
        return Case(inputs=(a, t1, t2), fn=lambda a, t1, t2: op(a, t1, t2, value=value))

    return example


_addcmul_example = _addc_example(torch.addcmul, False)


@rule("AddcmulBackward0",
      formula=r"y = a + v\,t_1 \odot t_2:\quad \bar{a} = \bar{y},\ "
              r"\bar{t}_1 = v\,\bar{y} \odot t_2,\ \bar{t}_2 = v\,\bar{y} \odot t_1",
      example=_addcmul_example)
def _addcmul(ctx: RuleContext):
    g, v = ctx.grad, ctx["value"]
    g1 = None if ctx.input_shapes[1] is None else g * v * ctx["tensor2"]
    g2 = None if ctx.input_shapes[2] is None else g * v * ctx["tensor1"]
    return shaped(ctx, 0, g), shaped(ctx, 1, g1), shaped(ctx, 2, g2)


_addcdiv_example = _addc_example(torch.addcdiv, True)


@rule("AddcdivBackward0",
      formula=r"y = a + v\,t_1 \oslash t_2:\quad \bar{a} = \bar{y},\ "
              r"\bar{t}_1 = v\,\bar{y} \oslash t_2,\ \bar{t}_2 = -v\,\bar{y} \odot t_1 \oslash "
              r"t_2^{2}",
      example=_addcdiv_example)
def _addcdiv(ctx: RuleContext):
    g, v = ctx.grad, ctx["value"]
    t2 = ctx["tensor2"]
    g1 = None if ctx.input_shapes[1] is None else g * v / t2
    g2 = None if ctx.input_shapes[2] is None else -g * v * ctx["tensor1"] / (t2 * t2)
    return shaped(ctx, 0, g), shaped(ctx, 1, g1), shaped(ctx, 2, g2)


# ---------------------------------------------------------------------------------------
# Clamping, max/min, selection
# ---------------------------------------------------------------------------------------


def _clamp_scalar_example(draw) -> Case:
    lo = draw(st.sampled_from([-1.0, -0.5, None]))
    hi = draw(st.sampled_from([1.0, 0.25, None])) if lo is not None else 1.0
    x = tensor(draw, shape(draw, min_dims=0))
    # Keep entries off both bounds, where the derivative jumps.
    with torch.no_grad():
        for b in (lo, hi):
            if b is not None:
                near = (x - b).abs() < 1e-3
                x[near] = b + 2e-3
    return Case(inputs=(x,), fn=lambda x: torch.clamp(x, lo, hi))


@rule("ClampBackward1",
      formula=r"y = \min(\max(x, lo), hi):\quad "
              r"\bar{x} = \bar{y} \odot \mathbb{1}[lo \le x \le hi]",
      example=_clamp_scalar_example)
def _clamp_scalar(ctx: RuleContext):
    x = ctx["self"]
    keep = np.ones(x.shape, dtype=bool)
    if ctx["min"] is not None:
        keep &= x >= ctx["min"]
    if ctx["max"] is not None:
        keep &= x <= ctx["max"]
    return (np.where(keep, ctx.grad, 0.0),)


def _clamp_tensor_example(draw) -> Case:
    sx, slo, shi = broadcast_shapes(draw, 3)
    # torch's clamp backward fails when the bounds broadcast x to a larger shape.
    sx = torch.broadcast_shapes(sx, slo, shi)
    kind = draw(st.sampled_from(["both", "min", "max"]))
    x = tensor(draw, sx)
    lo = tensor(draw, slo, low=-2.0, high=0.5, requires_grad=draw(st.booleans()))
    hi = tensor(draw, shi, low=-0.5, high=2.0, requires_grad=draw(st.booleans()))
    with torch.no_grad():
        full = torch.broadcast_shapes(sx, slo, shi)
        near = ((x.expand(full) - lo).abs() < 1e-3) | ((x.expand(full) - hi).abs() < 1e-3)
        if bool(near.any()):
            lo.sub_(0.01)
            hi.add_(0.01)
    if kind == "min":
        return Case(inputs=(x, lo), fn=lambda x, lo: torch.clamp(x, min=lo))
    if kind == "max":
        return Case(inputs=(x, hi), fn=lambda x, hi: torch.clamp(x, max=hi))
    return Case(inputs=(x, lo, hi), fn=torch.clamp)


@rule("ClampBackward0",
      formula=r"y = \min(\max(x, lo), hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[lo \le x \le "
              r"hi],\ "
              r"\bar{lo} = \bar{y} \odot \mathbb{1}[x < lo < hi],\ "
              r"\bar{hi} = \bar{y} \odot \mathbb{1}[x > hi \,\lor\, hi < lo]",
      example=_clamp_tensor_example)
def _clamp_tensor(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    lo, hi = ctx["min"], ctx["max"]
    if lo is not None and hi is not None:
        gx = np.where((x >= lo) & (x <= hi), g, 0.0)
        # When lo > hi the output is hi everywhere: the gradient goes to hi alone.
        glo = np.where((x < lo) & (lo < hi), g, 0.0)
        ghi = np.where((x > hi) | (hi < lo), g, 0.0)
        return shaped(ctx, 0, gx), shaped(ctx, 1, glo), shaped(ctx, 2, ghi)
    if lo is not None:
        return (shaped(ctx, 0, np.where(x >= lo, g, 0.0)),
                shaped(ctx, 1, np.where(x < lo, g, 0.0)), None)
    return (shaped(ctx, 0, np.where(x <= hi, g, 0.0)), None,
            shaped(ctx, 2, np.where(x > hi, g, 0.0)))


def _clamp_min_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), away_from=0.5)
    return Case(inputs=(x,), fn=lambda x: torch.clamp_min(x, 0.5))


@rule("ClampMinBackward0", formula=r"y = \max(x, lo):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x "
                                   r"\ge lo]",
      example=_clamp_min_example)
def _clamp_min(ctx: RuleContext):
    return (np.where(ctx["self"] >= ctx["min"], ctx.grad, 0.0),)


def _clamp_max_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), away_from=-0.5)
    return Case(inputs=(x,), fn=lambda x: torch.clamp_max(x, -0.5))


@rule("ClampMaxBackward0", formula=r"y = \min(x, hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x "
                                   r"\le hi]",
      example=_clamp_max_example)
def _clamp_max(ctx: RuleContext):
    return (np.where(ctx["self"] <= ctx["max"], ctx.grad, 0.0),)


def _no_ties(a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        full = torch.broadcast_shapes(a.shape, b.shape)
        if bool(((a.expand(full) - b.expand(full)).abs() < 1e-3).any()):
            a.add_(0.0101)


def _clamp_min_tensor_example(draw) -> Case:
    sx, sm = broadcast_shapes(draw)
    x, m = tensor(draw, sx), tensor(draw, sm, requires_grad=draw(st.booleans()))
    _no_ties(x, m)
    return Case(inputs=(x, m), fn=torch.clamp_min)


@rule("ClampMinBackward1",
      formula=r"y = \max(x, lo):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \ge lo],\ "
              r"\bar{lo} = \bar{y} \odot \mathbb{1}[x < lo]",
      example=_clamp_min_tensor_example)
def _clamp_min_tensor(ctx: RuleContext):
    g, x, lo = ctx.grad, ctx["self"], ctx["min"]
    return shaped(ctx, 0, np.where(x >= lo, g, 0.0)), shaped(ctx, 1, np.where(x < lo, g, 0.0))


def _clamp_max_tensor_example(draw) -> Case:
    sx, sm = broadcast_shapes(draw)
    x, m = tensor(draw, sx), tensor(draw, sm, requires_grad=draw(st.booleans()))
    _no_ties(x, m)
    return Case(inputs=(x, m), fn=torch.clamp_max)


@rule("ClampMaxBackward1",
      formula=r"y = \min(x, hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \le hi],\ "
              r"\bar{hi} = \bar{y} \odot \mathbb{1}[x > hi]",
      example=_clamp_max_tensor_example)
def _clamp_max_tensor(ctx: RuleContext):
    g, x, hi = ctx.grad, ctx["self"], ctx["max"]
    return shaped(ctx, 0, np.where(x <= hi, g, 0.0)), shaped(ctx, 1, np.where(x > hi, g, 0.0))


def _maxmin_example(op):
    def example(draw) -> Case:
        sa, sb = broadcast_shapes(draw)
        which = draw(st.sampled_from(["both", "a", "b"]))
        a = tensor(draw, sa, requires_grad=which != "b")
        b = tensor(draw, sb, requires_grad=which != "a")
        # Sometimes round both to a coarse grid, so exact ties occur: the convention
        # there (half the gradient to each side) is part of what the rule must match.
        if draw(st.booleans()):
            with torch.no_grad():
                a.copy_(a.round())
                b.copy_(b.round())
        return Case(inputs=(a, b), fn=op)

    return example


_maximum_example = _maxmin_example(torch.maximum)


@rule("MaximumBackward0",
      formula=r"y = \max(a, b):\quad \bar{a} = \bar{y} \odot (\mathbb{1}[a > b] + \tfrac12 "
              r"\mathbb{1}[a = b]),\ "
              r"\bar{b} = \bar{y} \odot (\mathbb{1}[b > a] + \tfrac12 \mathbb{1}[a = b])",
      example=_maximum_example)
def _maximum(ctx: RuleContext):
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    ga = np.where(a == b, g / 2, np.where(a > b, g, 0.0))
    gb = np.where(a == b, g / 2, np.where(b > a, g, 0.0))
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


_minimum_example = _maxmin_example(torch.minimum)


@rule("MinimumBackward0",
      formula=r"y = \min(a, b):\quad \bar{a} = \bar{y} \odot (\mathbb{1}[a < b] + \tfrac12 "
              r"\mathbb{1}[a = b]),\ "
              r"\bar{b} = \bar{y} \odot (\mathbb{1}[b < a] + \tfrac12 \mathbb{1}[a = b])",
      example=_minimum_example)
def _minimum(ctx: RuleContext):
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    ga = np.where(a == b, g / 2, np.where(a < b, g, 0.0))
    gb = np.where(a == b, g / 2, np.where(b < a, g, 0.0))
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


_fmax_example = _maxmin_example(torch.fmax)


@rule("FmaxBackward0",
      formula=r"y = \operatorname{fmax}(a, b):\quad \bar{a} = \bar{y} \odot \mathbb{1}[a \ge b],\ "
              r"\bar{b} = \bar{y} \odot \mathbb{1}[a < b]",
      example=_fmax_example)
def _fmax(ctx: RuleContext):
    # Unlike maximum, fmax sends the whole gradient of a tie to the first argument.
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    first = (a >= b) | np.isnan(b)
    return shaped(ctx, 0, np.where(first, g, 0.0)), shaped(ctx, 1, np.where(first, 0.0, g))


_fmin_example = _maxmin_example(torch.fmin)


@rule("FminBackward0",
      formula=r"y = \operatorname{fmin}(a, b):\quad \bar{a} = \bar{y} \odot \mathbb{1}[a \le b],\ "
              r"\bar{b} = \bar{y} \odot \mathbb{1}[a > b]",
      example=_fmin_example)
def _fmin(ctx: RuleContext):
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    first = (a <= b) | np.isnan(b)
    return shaped(ctx, 0, np.where(first, g, 0.0)), shaped(ctx, 1, np.where(first, 0.0, g))


def _where_example(draw) -> Case:
    sc, sa, sb = broadcast_shapes(draw, 3)
    cond = torch.from_numpy(np.asarray(seeded_rng(draw).random(sc) > 0.5))
    if draw(st.booleans()):
        a = tensor(draw, sa)
        return Case(inputs=(a,), fn=lambda a: torch.where(cond, a, 0.0))
    a = tensor(draw, sa, requires_grad=draw(st.booleans()))
    b = tensor(draw, sb)
    return Case(inputs=(a, b), fn=lambda a, b: torch.where(cond, a, b))


@rule("WhereBackward0",
      formula=r"y = c\,?\,a : b:\quad \bar{a} = \bar{y} \odot \mathbb{1}[c],\ \bar{b} = \bar{y} "
              r"\odot \mathbb{1}[\lnot c]",
      example=_where_example)
def _where(ctx: RuleContext):
    g, c = ctx.grad, ctx["condition"].astype(bool)
    return shaped(ctx, 0, np.where(c, g, 0.0)), shaped(ctx, 1, np.where(c, 0.0, g))


def _masked_fill_example(draw) -> Case:
    sx, sm = broadcast_shapes(draw)
    sx = np.broadcast_shapes(sx, sm)
    mask = torch.from_numpy(np.asarray(seeded_rng(draw).random(sm) > 0.5))
    x = tensor(draw, sx)
    return Case(inputs=(x,), fn=lambda x: x.masked_fill(mask, -1.5))


@rule("MaskedFillBackward0", formula=r"y = m\,?\,v : x:\quad \bar{x} = \bar{y} \odot "
                                     r"\mathbb{1}[\lnot m]",
      example=_masked_fill_example)
def _masked_fill(ctx: RuleContext):
    return (shaped(ctx, 0, np.where(ctx["mask"].astype(bool), 0.0, ctx.grad)),)


def _masked_fill_tensor_example(draw) -> Case:
    sx, sm = broadcast_shapes(draw)
    sx = np.broadcast_shapes(sx, sm)
    mask = torch.from_numpy(np.asarray(seeded_rng(draw).random(sm) > 0.5))
    x = tensor(draw, sx, requires_grad=draw(st.booleans()))
    v = tensor(draw, ())
    return Case(inputs=(x, v), fn=lambda x, v: x.masked_fill(mask, v))


@rule("MaskedFillBackward1",
      formula=r"y = m\,?\,v : x:\quad \bar{x} = \bar{y} \odot \mathbb{1}[\lnot m],\ \bar{v} = "
              r"\textstyle\sum \bar{y} \odot \mathbb{1}[m]",
      example=_masked_fill_tensor_example)
def _masked_fill_tensor(ctx: RuleContext):
    g, m = ctx.grad, ctx["mask"].astype(bool)
    gv = np.where(m, g, 0.0).sum() if ctx.input_shapes[1] is not None else None
    return shaped(ctx, 0, np.where(m, 0.0, g)), shaped(ctx, 1, gv)

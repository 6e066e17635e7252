"""Elementwise math and activations: each output entry depends on the same entry of each input."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._examples import shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------------------------------
# Shared helpers (NumPy side)
# ---------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _arr(value) -> np.ndarray:
    """A saved value (array or Python number) as a float64 array."""
    return np.asarray(value, dtype=np.float64)


def _shaped(ctx: RuleContext, i: int, grad) -> np.ndarray | None:
    """`grad` reduced to the shape of edge i (None when that input needs no gradient)."""
    target = ctx.input_shapes[i] if i < len(ctx.input_shapes) else None
    if target is None or grad is None:
        return None
    return sum_to(np.broadcast_to(grad, np.broadcast_shapes(np.shape(grad), target)), target)


def _zeros(ctx: RuleContext) -> tuple[np.ndarray | None, ...]:
    return tuple(None if s is None else np.zeros(s) for s in ctx.input_shapes)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---------------------------------------------------------------------------------------
# Shared helpers (example side)
# ---------------------------------------------------------------------------------------


def _broadcast_shapes(draw, n: int = 2) -> list[tuple[int, ...]]:
    """n shapes that broadcast together: suffixes of one shape with some sides set to 1."""
    full = shape(draw, min_dims=0)
    out = []
    for _ in range(n):
        k = draw(st.integers(0, len(full)))
        suffix = full[len(full) - k:]
        out.append(tuple(1 if draw(st.booleans()) else side for side in suffix))
    return out


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="mask seed"))


def _unary_example(op, low: float = -3.0, high: float = 3.0, away_from: float | None = None,
                   margin: float = 1e-3, inplace: bool = False):
    """Example builder for `op(x)` on one drawn tensor; inplace ops act on a non-leaf copy."""

    def example(draw) -> Case:
        x = tensor(draw, shape(draw, min_dims=0), low=low, high=high, away_from=away_from,
                   margin=margin)
        if inplace:
            return Case(inputs=(x,), fn=lambda x: op(x * 1.0))
        return Case(inputs=(x,), fn=op)

    return example


def _binary_example(op, low_a=-3.0, high_a=3.0, low_b=-3.0, high_b=3.0, away_b=None):
    """Example builder for `op(a, b)` on two broadcasting tensors, either or both needing grad."""

    def example(draw) -> Case:
        sa, sb = _broadcast_shapes(draw)
        which = draw(st.sampled_from(["both", "a", "b"]))
        a = tensor(draw, sa, low=low_a, high=high_a, requires_grad=which != "b")
        b = tensor(draw, sb, low=low_b, high=high_b, away_from=away_b, requires_grad=which != "a")
        return Case(inputs=(a, b), fn=op)

    return example


# ---------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------


def _add_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    if draw(st.booleans()):
        return _binary_example(lambda a, b: torch.add(a, b, alpha=alpha))(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.add(x, 1.5, alpha=alpha))


@rule("AddBackward0", formula=r"\bar{a} = \bar{y},\quad \bar{b} = \alpha\,\bar{y}",
      example=_add_example)
def _add(ctx: RuleContext):
    g = ctx.grad
    return _shaped(ctx, 0, g), _shaped(ctx, 1, g * ctx["alpha"])


def _add_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.add.Scalar(x, 2.5, alpha=3))


@rule("AddBackward1", formula=r"\bar{x} = \bar{y}", example=_add_scalar_example)
def _add_scalar(ctx: RuleContext):
    return (ctx.grad,)


def _sub_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    if draw(st.booleans()):
        return _binary_example(lambda a, b: torch.sub(a, b, alpha=alpha))(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: x - 1.5)


@rule("SubBackward0", formula=r"\bar{a} = \bar{y},\quad \bar{b} = -\alpha\,\bar{y}",
      example=_sub_example)
def _sub(ctx: RuleContext):
    g = ctx.grad
    return _shaped(ctx, 0, g), _shaped(ctx, 1, -g * ctx["alpha"])


def _sub_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.sub.Scalar(x, 2.5))


@rule("SubBackward1", formula=r"\bar{x} = \bar{y}", example=_sub_scalar_example)
def _sub_scalar(ctx: RuleContext):
    return (ctx.grad,)


def _rsub_example(draw) -> Case:
    alpha = draw(st.sampled_from([1, 2, -0.5]))
    return _binary_example(lambda a, b: torch.rsub(a, b, alpha=alpha))(draw)


@rule("RsubBackward0", formula=r"y = b - \alpha a:\quad \bar{a} = -\alpha\,\bar{y},\quad \bar{b} = \bar{y}",
      example=_rsub_example)
def _rsub(ctx: RuleContext):
    g = ctx.grad
    return _shaped(ctx, 0, -g * ctx["alpha"]), _shaped(ctx, 1, g)


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
        return _binary_example(torch.mul)(draw)
    if kind == "scalar":
        x = tensor(draw, shape(draw, min_dims=0))
        return Case(inputs=(x,), fn=lambda x: x * 2.5)
    # In training, dropout on CPU multiplies by a (mask / (1 - p)) tensor: a MulBackward0.
    x = tensor(draw, (draw(st.integers(1, 3)), draw(st.integers(1, 4)), 3, 2))
    torch.manual_seed(draw(st.integers(0, 1000)))
    return Case(inputs=(x,), fn=lambda x: F.dropout2d(x, 0.4, training=True))


@rule("MulBackward0", formula=r"\bar{a} = \bar{y} \odot b,\quad \bar{b} = \bar{y} \odot a",
      example=_mul_example)
def _mul(ctx: RuleContext):
    g = ctx.grad
    ga = None if ctx.input_shapes[0] is None else g * _arr(ctx["other"])
    gb = None if ctx.input_shapes[1] is None else g * _arr(ctx["self"])
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


def _mul_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    s = draw(st.sampled_from([2.5, -1.0, 3]))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.mul.Scalar(x, s))


@rule("MulBackward1", formula=r"\bar{x} = s\,\bar{y}", example=_mul_scalar_example)
def _mul_scalar(ctx: RuleContext):
    return (ctx.grad * ctx["other"],)


def _div_example(draw) -> Case:
    if draw(st.booleans()):
        return _binary_example(torch.div, low_b=0.5, high_b=3.0)(draw)
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: x / -2.5)


@rule("DivBackward0",
      formula=r"\bar{a} = \bar{y} \oslash b,\quad \bar{b} = -\bar{y} \odot a \oslash b^{2}",
      example=_div_example)
def _div(ctx: RuleContext):
    g = ctx.grad
    b = _arr(ctx["other"])
    ga = None if ctx.input_shapes[0] is None else g / b
    gb = None if ctx.input_shapes[1] is None else -g * (_arr(ctx["self"]) / b) / b
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


def _div_scalar_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.div.Scalar(x, -2.5))


@rule("DivBackward1", formula=r"\bar{x} = \bar{y} / s", example=_div_scalar_example)
def _div_scalar(ctx: RuleContext):
    return (ctx.grad / ctx["other"],)


def _div_mode_example(draw) -> Case:
    mode = draw(st.sampled_from(["floor", "trunc"]))
    return _binary_example(lambda a, b: torch.div(a, b, rounding_mode=mode),
                           low_b=0.5, high_b=3.0)(draw)


@rule("DivBackward2",
      formula=r"y = \lfloor a / b \rceil \text{ (floor or trunc)}:\quad \bar{a} = 0,\ \bar{b} = 0",
      example=_div_mode_example)
def _div_mode(ctx: RuleContext):
    # A rounded quotient is piecewise constant: zero gradient almost everywhere.
    return _zeros(ctx)


def _div_scalar_mode_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    mode = draw(st.sampled_from(["floor", "trunc"]))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.div.Scalar_mode(x, 0.7, rounding_mode=mode))


@rule("DivBackward3", formula=r"y = \lfloor x / s \rceil:\quad \bar{x} = 0",
      example=_div_scalar_mode_example)
def _div_scalar_mode(ctx: RuleContext):
    return _zeros(ctx)


_neg_example = _unary_example(torch.neg)


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
    sa, sb = _broadcast_shapes(draw)
    which = draw(st.sampled_from(["both", "base", "exponent"]))
    if which == "exponent" and draw(st.booleans()):
        e = tensor(draw, sb, low=-2.0, high=2.0)
        base = torch.tensor(draw(st.sampled_from([0.5, 2.0, 3.0])), dtype=torch.float64)
        return Case(inputs=(e,), fn=lambda e: torch.pow(base, e))
    a = tensor(draw, sa, low=0.2, high=3.0, requires_grad=which != "exponent")
    b = tensor(draw, sb, low=-2.0, high=2.0, requires_grad=which != "base")
    return Case(inputs=(a, b), fn=torch.pow)


@rule("PowBackward1",
      formula=r"y = a^{b}:\quad \bar{a} = \bar{y} \odot b\,a^{b-1},\quad \bar{b} = \bar{y} \odot y \ln a",
      example=_pow_tensor_example)
def _pow_tensor(ctx: RuleContext):
    g = ctx.grad
    a, b = _arr(ctx["self"]), _arr(ctx["exponent"])
    ga = gb = None
    if ctx.input_shapes[0] is not None:
        ga = np.where(b == 0, 0.0, g * (b * np.power(a, b - 1.0)))
    if ctx.input_shapes[1] is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            # 0^b with b >= 0: ln 0 = -inf, but the slope in b is taken as 0 there, not NaN.
            gb = g * np.where((b >= 0) & (a == 0), 0.0, _arr(ctx["result"]) * np.log(a))
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


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
    return _shaped(ctx, 0, g * (1 - w)), _shaped(ctx, 1, g * w)


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
    return _shaped(ctx, 0, g * (1 - w)), _shaped(ctx, 1, g * w), _shaped(ctx, 2, gw)


def _addc_example(op, positive_t2: bool):
    def example(draw) -> Case:
        sa, s1, s2 = _broadcast_shapes(draw, 3)
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
    return _shaped(ctx, 0, g), _shaped(ctx, 1, g1), _shaped(ctx, 2, g2)


_addcdiv_example = _addc_example(torch.addcdiv, True)


@rule("AddcdivBackward0",
      formula=r"y = a + v\,t_1 \oslash t_2:\quad \bar{a} = \bar{y},\ "
              r"\bar{t}_1 = v\,\bar{y} \oslash t_2,\ \bar{t}_2 = -v\,\bar{y} \odot t_1 \oslash t_2^{2}",
      example=_addcdiv_example)
def _addcdiv(ctx: RuleContext):
    g, v = ctx.grad, ctx["value"]
    t2 = ctx["tensor2"]
    g1 = None if ctx.input_shapes[1] is None else g * v / t2
    g2 = None if ctx.input_shapes[2] is None else -g * v * ctx["tensor1"] / (t2 * t2)
    return _shaped(ctx, 0, g), _shaped(ctx, 1, g1), _shaped(ctx, 2, g2)


# ---------------------------------------------------------------------------------------
# Exponentials, logarithms, powers
# ---------------------------------------------------------------------------------------


_exp_example = _unary_example(torch.exp, -2.0, 2.0)


@rule("ExpBackward0", formula=r"y = e^{x}:\quad \bar{x} = \bar{y} \odot y",
      example=_exp_example)
def _exp(ctx: RuleContext):
    return (ctx.grad * ctx["result"],)


_exp2_example = _unary_example(torch.exp2, -2.0, 2.0)


@rule("Exp2Backward0", formula=r"y = 2^{x}:\quad \bar{x} = \bar{y} \odot y \ln 2",
      example=_exp2_example)
def _exp2(ctx: RuleContext):
    return (ctx.grad * ctx["result"] * math.log(2.0),)


_expm1_example = _unary_example(torch.expm1, -2.0, 2.0)


@rule("Expm1Backward0", formula=r"y = e^{x} - 1:\quad \bar{x} = \bar{y} \odot (y + 1)",
      example=_expm1_example)
def _expm1(ctx: RuleContext):
    return (ctx.grad * (ctx["result"] + 1.0),)


_log_example = _unary_example(torch.log, 0.1, 4.0)


@rule("LogBackward0", formula=r"y = \ln x:\quad \bar{x} = \bar{y} \oslash x",
      example=_log_example)
def _log(ctx: RuleContext):
    return (ctx.grad / ctx["self"],)


_log1p_example = _unary_example(torch.log1p, -0.9, 3.0)


@rule("Log1PBackward0", formula=r"y = \ln(1 + x):\quad \bar{x} = \bar{y} \oslash (1 + x)",
      example=_log1p_example)
def _log1p(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] + 1.0),)


_log2_example = _unary_example(torch.log2, 0.1, 4.0)


@rule("Log2Backward0", formula=r"y = \log_2 x:\quad \bar{x} = \bar{y} \oslash (x \ln 2)",
      example=_log2_example)
def _log2(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] * math.log(2.0)),)


_log10_example = _unary_example(torch.log10, 0.1, 4.0)


@rule("Log10Backward0", formula=r"y = \log_{10} x:\quad \bar{x} = \bar{y} \oslash (x \ln 10)",
      example=_log10_example)
def _log10(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] * math.log(10.0)),)


_sqrt_example = _unary_example(torch.sqrt, 0.1, 4.0)


@rule("SqrtBackward0", formula=r"y = \sqrt{x}:\quad \bar{x} = \bar{y} \oslash (2y)",
      example=_sqrt_example)
def _sqrt(ctx: RuleContext):
    return (ctx.grad / (2.0 * ctx["result"]),)


_rsqrt_example = _unary_example(torch.rsqrt, 0.1, 4.0)


@rule("RsqrtBackward0", formula=r"y = x^{-1/2}:\quad \bar{x} = -\tfrac12\,\bar{y} \odot y^{3}",
      example=_rsqrt_example)
def _rsqrt(ctx: RuleContext):
    y = ctx["result"]
    return (-0.5 * ctx.grad * y ** 3,)


_reciprocal_example = _unary_example(torch.reciprocal, away_from=0.0, margin=0.1)


@rule("ReciprocalBackward0", formula=r"y = 1/x:\quad \bar{x} = -\bar{y} \odot y^{2}",
      example=_reciprocal_example)
def _reciprocal(ctx: RuleContext):
    y = ctx["result"]
    return (-ctx.grad * (y * y),)


# ---------------------------------------------------------------------------------------
# Sign, absolute value, rounding
# ---------------------------------------------------------------------------------------


_abs_example = _unary_example(torch.abs, away_from=0.0)


@rule("AbsBackward0", formula=r"y = |x|:\quad \bar{x} = \bar{y} \odot \operatorname{sign}(x)",
      example=_abs_example)
def _abs(ctx: RuleContext):
    return (ctx.grad * np.sign(ctx["self"]),)


_sign_example = _unary_example(torch.sign, away_from=0.0)


@rule("SignBackward0", formula=r"y = \operatorname{sign}(x):\quad \bar{x} = 0",
      example=_sign_example)
def _sign(ctx: RuleContext):
    return _zeros(ctx)


_sgn_example = _unary_example(torch.sgn, away_from=0.0)


@rule("SgnBackward0", formula=r"y = \operatorname{sgn}(x) \text{ (real } x):\quad \bar{x} = 0",
      example=_sgn_example, note="Real inputs only; complex sgn has a non-zero gradient.")
def _sgn(ctx: RuleContext):
    if np.iscomplexobj(ctx["self"]):
        raise ValueError("complex sgn has no NumPy rule here")
    return _zeros(ctx)


def _rounding_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: (torch.floor(x), torch.ceil(x), torch.round(x),
                                           torch.trunc(x)))


@rule("FloorBackward0", "CeilBackward0", "RoundBackward0", "TruncBackward0",
      formula=r"y = \lfloor x \rceil:\quad \bar{x} = 0", example=_rounding_example)
def _rounding(ctx: RuleContext):
    # Piecewise constant: zero gradient wherever it is defined.
    return _zeros(ctx)


_frac_example = _unary_example(torch.frac)


@rule("FracBackward0", formula=r"y = x - \operatorname{trunc}(x):\quad \bar{x} = \bar{y}",
      example=_frac_example)
def _frac(ctx: RuleContext):
    return (ctx.grad,)


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
      formula=r"y = \min(\max(x, lo), hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[lo \le x \le hi]",
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
    sx, slo, shi = _broadcast_shapes(draw, 3)
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
      formula=r"y = \min(\max(x, lo), hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[lo \le x \le hi],\ "
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
        return _shaped(ctx, 0, gx), _shaped(ctx, 1, glo), _shaped(ctx, 2, ghi)
    if lo is not None:
        return (_shaped(ctx, 0, np.where(x >= lo, g, 0.0)),
                _shaped(ctx, 1, np.where(x < lo, g, 0.0)), None)
    return (_shaped(ctx, 0, np.where(x <= hi, g, 0.0)), None,
            _shaped(ctx, 2, np.where(x > hi, g, 0.0)))


def _clamp_min_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), away_from=0.5)
    return Case(inputs=(x,), fn=lambda x: torch.clamp_min(x, 0.5))


@rule("ClampMinBackward0", formula=r"y = \max(x, lo):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \ge lo]",
      example=_clamp_min_example)
def _clamp_min(ctx: RuleContext):
    return (np.where(ctx["self"] >= ctx["min"], ctx.grad, 0.0),)


def _clamp_max_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), away_from=-0.5)
    return Case(inputs=(x,), fn=lambda x: torch.clamp_max(x, -0.5))


@rule("ClampMaxBackward0", formula=r"y = \min(x, hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \le hi]",
      example=_clamp_max_example)
def _clamp_max(ctx: RuleContext):
    return (np.where(ctx["self"] <= ctx["max"], ctx.grad, 0.0),)


def _no_ties(a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        full = torch.broadcast_shapes(a.shape, b.shape)
        if bool(((a.expand(full) - b.expand(full)).abs() < 1e-3).any()):
            a.add_(0.0101)


def _clamp_min_tensor_example(draw) -> Case:
    sx, sm = _broadcast_shapes(draw)
    x, m = tensor(draw, sx), tensor(draw, sm, requires_grad=draw(st.booleans()))
    _no_ties(x, m)
    return Case(inputs=(x, m), fn=torch.clamp_min)


@rule("ClampMinBackward1",
      formula=r"y = \max(x, lo):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \ge lo],\ "
              r"\bar{lo} = \bar{y} \odot \mathbb{1}[x < lo]",
      example=_clamp_min_tensor_example)
def _clamp_min_tensor(ctx: RuleContext):
    g, x, lo = ctx.grad, ctx["self"], ctx["min"]
    return _shaped(ctx, 0, np.where(x >= lo, g, 0.0)), _shaped(ctx, 1, np.where(x < lo, g, 0.0))


def _clamp_max_tensor_example(draw) -> Case:
    sx, sm = _broadcast_shapes(draw)
    x, m = tensor(draw, sx), tensor(draw, sm, requires_grad=draw(st.booleans()))
    _no_ties(x, m)
    return Case(inputs=(x, m), fn=torch.clamp_max)


@rule("ClampMaxBackward1",
      formula=r"y = \min(x, hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[x \le hi],\ "
              r"\bar{hi} = \bar{y} \odot \mathbb{1}[x > hi]",
      example=_clamp_max_tensor_example)
def _clamp_max_tensor(ctx: RuleContext):
    g, x, hi = ctx.grad, ctx["self"], ctx["max"]
    return _shaped(ctx, 0, np.where(x <= hi, g, 0.0)), _shaped(ctx, 1, np.where(x > hi, g, 0.0))


def _maxmin_example(op):
    def example(draw) -> Case:
        sa, sb = _broadcast_shapes(draw)
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
      formula=r"y = \max(a, b):\quad \bar{a} = \bar{y} \odot (\mathbb{1}[a > b] + \tfrac12 \mathbb{1}[a = b]),\ "
              r"\bar{b} = \bar{y} \odot (\mathbb{1}[b > a] + \tfrac12 \mathbb{1}[a = b])",
      example=_maximum_example)
def _maximum(ctx: RuleContext):
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    ga = np.where(a == b, g / 2, np.where(a > b, g, 0.0))
    gb = np.where(a == b, g / 2, np.where(b > a, g, 0.0))
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


_minimum_example = _maxmin_example(torch.minimum)


@rule("MinimumBackward0",
      formula=r"y = \min(a, b):\quad \bar{a} = \bar{y} \odot (\mathbb{1}[a < b] + \tfrac12 \mathbb{1}[a = b]),\ "
              r"\bar{b} = \bar{y} \odot (\mathbb{1}[b < a] + \tfrac12 \mathbb{1}[a = b])",
      example=_minimum_example)
def _minimum(ctx: RuleContext):
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    ga = np.where(a == b, g / 2, np.where(a < b, g, 0.0))
    gb = np.where(a == b, g / 2, np.where(b < a, g, 0.0))
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


_fmax_example = _maxmin_example(torch.fmax)


@rule("FmaxBackward0",
      formula=r"y = \operatorname{fmax}(a, b):\quad \bar{a} = \bar{y} \odot \mathbb{1}[a \ge b],\ "
              r"\bar{b} = \bar{y} \odot \mathbb{1}[a < b]",
      example=_fmax_example)
def _fmax(ctx: RuleContext):
    # Unlike maximum, fmax sends the whole gradient of a tie to the first argument.
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    first = (a >= b) | np.isnan(b)
    return _shaped(ctx, 0, np.where(first, g, 0.0)), _shaped(ctx, 1, np.where(first, 0.0, g))


_fmin_example = _maxmin_example(torch.fmin)


@rule("FminBackward0",
      formula=r"y = \operatorname{fmin}(a, b):\quad \bar{a} = \bar{y} \odot \mathbb{1}[a \le b],\ "
              r"\bar{b} = \bar{y} \odot \mathbb{1}[a > b]",
      example=_fmin_example)
def _fmin(ctx: RuleContext):
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    first = (a <= b) | np.isnan(b)
    return _shaped(ctx, 0, np.where(first, g, 0.0)), _shaped(ctx, 1, np.where(first, 0.0, g))


def _where_example(draw) -> Case:
    sc, sa, sb = _broadcast_shapes(draw, 3)
    cond = torch.from_numpy(np.asarray(_rng(draw).random(sc) > 0.5))
    if draw(st.booleans()):
        a = tensor(draw, sa)
        return Case(inputs=(a,), fn=lambda a: torch.where(cond, a, 0.0))
    a = tensor(draw, sa, requires_grad=draw(st.booleans()))
    b = tensor(draw, sb)
    return Case(inputs=(a, b), fn=lambda a, b: torch.where(cond, a, b))


@rule("WhereBackward0",
      formula=r"y = c\,?\,a : b:\quad \bar{a} = \bar{y} \odot \mathbb{1}[c],\ \bar{b} = \bar{y} \odot \mathbb{1}[\lnot c]",
      example=_where_example)
def _where(ctx: RuleContext):
    g, c = ctx.grad, ctx["condition"].astype(bool)
    return _shaped(ctx, 0, np.where(c, g, 0.0)), _shaped(ctx, 1, np.where(c, 0.0, g))


def _masked_fill_example(draw) -> Case:
    sx, sm = _broadcast_shapes(draw)
    sx = np.broadcast_shapes(sx, sm)
    mask = torch.from_numpy(np.asarray(_rng(draw).random(sm) > 0.5))
    x = tensor(draw, sx)
    return Case(inputs=(x,), fn=lambda x: x.masked_fill(mask, -1.5))


@rule("MaskedFillBackward0", formula=r"y = m\,?\,v : x:\quad \bar{x} = \bar{y} \odot \mathbb{1}[\lnot m]",
      example=_masked_fill_example)
def _masked_fill(ctx: RuleContext):
    return (_shaped(ctx, 0, np.where(ctx["mask"].astype(bool), 0.0, ctx.grad)),)


def _masked_fill_tensor_example(draw) -> Case:
    sx, sm = _broadcast_shapes(draw)
    sx = np.broadcast_shapes(sx, sm)
    mask = torch.from_numpy(np.asarray(_rng(draw).random(sm) > 0.5))
    x = tensor(draw, sx, requires_grad=draw(st.booleans()))
    v = tensor(draw, ())
    return Case(inputs=(x, v), fn=lambda x, v: x.masked_fill(mask, v))


@rule("MaskedFillBackward1",
      formula=r"y = m\,?\,v : x:\quad \bar{x} = \bar{y} \odot \mathbb{1}[\lnot m],\ \bar{v} = \textstyle\sum \bar{y} \odot \mathbb{1}[m]",
      example=_masked_fill_tensor_example)
def _masked_fill_tensor(ctx: RuleContext):
    g, m = ctx.grad, ctx["mask"].astype(bool)
    gv = np.where(m, g, 0.0).sum() if ctx.input_shapes[1] is not None else None
    return _shaped(ctx, 0, np.where(m, 0.0, g)), _shaped(ctx, 1, gv)


# ---------------------------------------------------------------------------------------
# Trigonometric and hyperbolic
# ---------------------------------------------------------------------------------------


_sin_example = _unary_example(torch.sin)


@rule("SinBackward0", formula=r"\bar{x} = \bar{y} \odot \cos x", example=_sin_example)
def _sin(ctx: RuleContext):
    return (ctx.grad * np.cos(ctx["self"]),)


_cos_example = _unary_example(torch.cos)


@rule("CosBackward0", formula=r"\bar{x} = -\bar{y} \odot \sin x", example=_cos_example)
def _cos(ctx: RuleContext):
    return (-ctx.grad * np.sin(ctx["self"]),)


_tan_example = _unary_example(torch.tan, -1.3, 1.3)


@rule("TanBackward0", formula=r"y = \tan x:\quad \bar{x} = \bar{y} \odot (1 + y^{2})",
      example=_tan_example)
def _tan(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * (1.0 + y * y),)


_asin_example = _unary_example(torch.asin, -0.95, 0.95)


@rule("AsinBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{1 - x^{2}}",
      example=_asin_example)
def _asin(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(1.0 - x * x),)


_acos_example = _unary_example(torch.acos, -0.95, 0.95)


@rule("AcosBackward0", formula=r"\bar{x} = -\bar{y} \oslash \sqrt{1 - x^{2}}",
      example=_acos_example)
def _acos(ctx: RuleContext):
    x = ctx["self"]
    return (-ctx.grad / np.sqrt(1.0 - x * x),)


_atan_example = _unary_example(torch.atan)


@rule("AtanBackward0", formula=r"\bar{x} = \bar{y} \oslash (1 + x^{2})",
      example=_atan_example)
def _atan(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / (1.0 + x * x),)


_sinh_example = _unary_example(torch.sinh)


@rule("SinhBackward0", formula=r"\bar{x} = \bar{y} \odot \cosh x", example=_sinh_example)
def _sinh(ctx: RuleContext):
    return (ctx.grad * np.cosh(ctx["self"]),)


_cosh_example = _unary_example(torch.cosh)


@rule("CoshBackward0", formula=r"\bar{x} = \bar{y} \odot \sinh x", example=_cosh_example)
def _cosh(ctx: RuleContext):
    return (ctx.grad * np.sinh(ctx["self"]),)


_asinh_example = _unary_example(torch.asinh)


@rule("AsinhBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{x^{2} + 1}",
      example=_asinh_example)
def _asinh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(x * x + 1.0),)


_acosh_example = _unary_example(torch.acosh, 1.05, 4.0)


@rule("AcoshBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{x^{2} - 1}",
      example=_acosh_example)
def _acosh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(x * x - 1.0),)


_atanh_example = _unary_example(torch.atanh, -0.95, 0.95)


@rule("AtanhBackward0", formula=r"\bar{x} = \bar{y} \oslash (1 - x^{2})",
      example=_atanh_example)
def _atanh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / (1.0 - x * x),)


_atan2_example = _binary_example(torch.atan2, away_b=0.0)


@rule("Atan2Backward0",
      formula=r"y = \operatorname{atan2}(a, b):\quad \bar{a} = \bar{y} \odot \frac{b}{a^{2} + b^{2}},\ "
              r"\bar{b} = -\bar{y} \odot \frac{a}{a^{2} + b^{2}}",
      example=_atan2_example)
def _atan2(ctx: RuleContext):
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    r2 = a * a + b * b
    return _shaped(ctx, 0, g * b / r2), _shaped(ctx, 1, -g * a / r2)


_hypot_example = _binary_example(torch.hypot, away_b=0.0)


@rule("HypotBackward0",
      formula=r"y = \sqrt{a^{2} + b^{2}}:\quad \bar{a} = \bar{y} \odot a \oslash y,\ \bar{b} = \bar{y} \odot b \oslash y",
      example=_hypot_example)
def _hypot(ctx: RuleContext):
    g, y = ctx.grad, ctx["result"]
    ga = None if ctx.input_shapes[0] is None else g * ctx["self"] / y
    gb = None if ctx.input_shapes[1] is None else g * ctx["other"] / y
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


_tanh_example = _unary_example(torch.tanh)


@rule("TanhBackward0", formula=r"y = \tanh x:\quad \bar{x} = \bar{y} \odot (1 - y^{2})",
      example=_tanh_example)
def _tanh(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * (1.0 - y * y),)


# ---------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------


_erf_rule_example = _unary_example(torch.erf)


@rule("ErfBackward0", formula=r"\bar{x} = \bar{y} \odot \tfrac{2}{\sqrt{\pi}} e^{-x^{2}}",
      example=_erf_rule_example)
def _erf_rule(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x),)


_erfc_example = _unary_example(torch.erfc)


@rule("ErfcBackward0", formula=r"\bar{x} = -\bar{y} \odot \tfrac{2}{\sqrt{\pi}} e^{-x^{2}}",
      example=_erfc_example)
def _erfc(ctx: RuleContext):
    x = ctx["self"]
    return (-ctx.grad * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x),)


def _erfinv(x: np.ndarray) -> np.ndarray:
    """Inverse error function by Newton's method on erf (NumPy has no erfinv)."""
    y = np.arctanh(np.clip(x, -0.999999, 0.999999)) * 0.9  # rough start, right sign
    for _ in range(60):
        step = (_erf(y) - x) / (2.0 / math.sqrt(math.pi) * np.exp(-y * y))
        y = y - step
        if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(y))):
            break
    return y


_erfinv_example = _unary_example(torch.erfinv, -0.95, 0.95)


@rule("ErfinvBackward0", formula=r"y = \operatorname{erf}^{-1}(x):\quad \bar{x} = \bar{y} \odot \tfrac{\sqrt{\pi}}{2} e^{y^{2}}",
      example=_erfinv_example)
def _erfinv_rule(ctx: RuleContext):
    y = _erfinv(ctx["self"])
    return (ctx.grad * (math.sqrt(math.pi) / 2.0) * np.exp(y * y),)


def _logit_example(draw) -> Case:
    eps = draw(st.sampled_from([None, 0.05]))
    x = tensor(draw, shape(draw, min_dims=0), low=0.01, high=0.99,
               away_from=None if eps is None else 0.05)
    if eps is not None:
        with torch.no_grad():
            near = (x - 0.95).abs() < 1e-3
            x[near] = 0.96
    return Case(inputs=(x,), fn=lambda x: torch.logit(x, eps))


@rule("LogitBackward0",
      formula=r"y = \ln\frac{x}{1 - x}:\quad \bar{x} = \frac{\bar{y}}{x(1 - x)} \text{ (0 outside } [\epsilon, 1-\epsilon])",
      example=_logit_example)
def _logit(ctx: RuleContext):
    g, x, eps = ctx.grad, ctx["self"], ctx["eps"]
    if eps is None:
        inside = (x >= 0) & (x <= 1)
        return (np.where(inside, g / (x * (1.0 - x)), np.nan),)
    inside = (x >= eps) & (x <= 1.0 - eps)
    return (np.where(inside, g / (x * (1.0 - x)), 0.0),)


def _xlogy_example(draw) -> Case:
    sa, sb = _broadcast_shapes(draw)
    a = tensor(draw, sa)
    b = tensor(draw, sb, low=0.1, high=3.0)
    if draw(st.booleans()):
        with torch.no_grad():  # x log y is defined as 0 where x = 0, even at y = 0
            a.view(-1)[:1] = 0.0
    return Case(inputs=(a, b), fn=lambda a, b: (torch.xlogy(a, b), torch.xlogy(1.5, b),
                                                torch.xlogy(a, 2.5)))


def _xlogy_self_grad(g, a, b):
    # xlogy(g, b): 0 where g = 0; autograd also zeroes the corner a = 0, b <= 0, where
    # x log y is pinned to 0 and has no slope in x.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(g == 0, 0.0, g * np.log(b))
    return np.where((a == 0) & (b <= 0), 0.0, out)


@rule("XlogyBackward0",
      formula=r"y = a \ln b:\quad \bar{a} = \bar{y} \odot \ln b,\ \bar{b} = \bar{y} \odot a \oslash b",
      example=_xlogy_example)
def _xlogy(ctx: RuleContext):
    g, a, b = ctx.grad, _arr(ctx["self"]), _arr(ctx["other"])
    ga = None if ctx.input_shapes[0] is None else _xlogy_self_grad(g, a, b)
    gb = None if ctx.input_shapes[1] is None else g * a / b
    return _shaped(ctx, 0, ga), _shaped(ctx, 1, gb)


@rule("XlogyBackward1", formula=r"y = s \ln x:\quad \bar{x} = \bar{y}\,s \oslash x",
      example=_xlogy_example)
def _xlogy_scalar_self(ctx: RuleContext):
    return (ctx.grad * float(ctx["self"]) / ctx["other"],)


@rule("XlogyBackward2", formula=r"y = x \ln s:\quad \bar{x} = \bar{y} \ln s",
      example=_xlogy_example)
def _xlogy_scalar_other(ctx: RuleContext):
    return (_xlogy_self_grad(ctx.grad, ctx["self"], float(ctx["other"])),)


def _logaddexp_parts(a, b, base_log):
    # d/da log(e^a + e^b) = 1 / (1 + e^{b - a}): the softmax weight of a, computed stably.
    return _sigmoid((a - b) * base_log), _sigmoid((b - a) * base_log)


_logaddexp_example = _binary_example(torch.logaddexp)


@rule("LogaddexpBackward0",
      formula=r"y = \ln(e^{a} + e^{b}):\quad \bar{a} = \bar{y} \odot \sigma(a - b),\ \bar{b} = \bar{y} \odot \sigma(b - a)",
      example=_logaddexp_example)
def _logaddexp(ctx: RuleContext):
    wa, wb = _logaddexp_parts(_arr(ctx["self"]), _arr(ctx["other"]), 1.0)
    return _shaped(ctx, 0, ctx.grad * wa), _shaped(ctx, 1, ctx.grad * wb)


_logaddexp2_example = _binary_example(torch.logaddexp2)


@rule("Logaddexp2Backward0",
      formula=r"y = \log_2(2^{a} + 2^{b}):\quad \bar{a} = \bar{y} \odot \frac{2^{a}}{2^{a} + 2^{b}},\ "
              r"\bar{b} = \bar{y} \odot \frac{2^{b}}{2^{a} + 2^{b}}",
      example=_logaddexp2_example)
def _logaddexp2(ctx: RuleContext):
    wa, wb = _logaddexp_parts(_arr(ctx["self"]), _arr(ctx["other"]), math.log(2.0))
    return _shaped(ctx, 0, ctx.grad * wa), _shaped(ctx, 1, ctx.grad * wb)


# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------


_sigmoid_rule_example = _unary_example(torch.sigmoid)


@rule("SigmoidBackward0", formula=r"y = \sigma(x):\quad \bar{x} = \bar{y} \odot y (1 - y)",
      example=_sigmoid_rule_example)
def _sigmoid_rule(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * y * (1.0 - y),)


def _relu_example(draw) -> Case:
    return _unary_example(lambda x: F.relu(x, inplace=True), away_from=0.0, inplace=True)(draw) \
        if draw(st.booleans()) else _unary_example(torch.relu, away_from=0.0)(draw)


@rule("ReluBackward0", formula=r"y = \max(x, 0):\quad \bar{x} = \bar{y} \odot \mathbb{1}[y > 0]",
      example=_relu_example)
def _relu(ctx: RuleContext):
    return (np.where(ctx["result"] > 0, ctx.grad, 0.0),)


def _leaky_relu_example(draw) -> Case:
    slope = draw(st.sampled_from([0.01, 0.2, 1.5]))
    return _unary_example(lambda x: F.leaky_relu(x, slope), away_from=0.0)(draw)


@rule("LeakyReluBackward0",
      formula=r"\bar{x} = \bar{y} \odot (\mathbb{1}[x > 0] + s\,\mathbb{1}[x \le 0])",
      example=_leaky_relu_example)
def _leaky_relu(ctx: RuleContext):
    g = ctx.grad
    return (np.where(ctx["self"] > 0, g, g * ctx["negative_slope"]),)


def _leaky_relu_inplace_example(draw) -> Case:
    slope = draw(st.sampled_from([0.01, 0.2]))
    return _unary_example(lambda x: F.leaky_relu(x, slope, inplace=True), away_from=0.0,
                          inplace=True)(draw)


@rule("LeakyReluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (\mathbb{1}[y > 0] + s\,\mathbb{1}[y \le 0])",
      example=_leaky_relu_inplace_example)
def _leaky_relu_inplace(ctx: RuleContext):
    g = ctx.grad
    return (np.where(ctx["result"] > 0, g, g * ctx["negative_slope"]),)


def _rrelu_example(draw) -> Case:
    lower, upper = draw(st.sampled_from([(0.125, 1 / 3), (0.1, 0.5), (0.2, 0.2)]))
    training = draw(st.booleans())
    torch.manual_seed(draw(st.integers(0, 1000)))
    return _unary_example(lambda x: F.rrelu(x, lower, upper, training=training),
                          away_from=0.0)(draw)


@rule("RreluWithNoiseBackward0",
      formula=r"\bar{x} = \bar{y} \odot \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases},\ "
              r"a \sim U(l, u) \text{ drawn in training (saved as noise), } a = \tfrac{l + u}{2} \text{ in eval}",
      example=_rrelu_example)
def _rrelu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    lower, upper = ctx["lower"], ctx["upper"]
    if ctx["training"] and upper - lower > 1e-6:
        return (g * ctx["noise"],)
    return (np.where(x > 0, g, g * (lower + upper) / 2.0),)


def _elu_example(draw) -> Case:
    kind = draw(st.sampled_from(["elu", "selu"]))
    if kind == "selu":
        return _unary_example(F.selu, away_from=0.0)(draw)
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return _unary_example(lambda x: F.elu(x, alpha), away_from=0.0)(draw)


@rule("EluBackward0",
      formula=r"y = \lambda\,(x \text{ if } x > 0 \text{ else } \alpha(e^{\beta x} - 1)):\quad "
              r"\bar{x} = \bar{y} \odot (\lambda \text{ if } x > 0 \text{ else } \lambda\alpha\beta e^{\beta x})",
      example=_elu_example)
def _elu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    scale, alpha, beta = ctx["scale"], ctx["alpha"], ctx["input_scale"]
    return (np.where(x <= 0, g * beta * alpha * scale * np.exp(x * beta), g * scale),)


def _elu_inplace_example(draw) -> Case:
    if draw(st.booleans()):
        return _unary_example(lambda x: F.selu(x, inplace=True), away_from=0.0, inplace=True)(draw)
    return _unary_example(lambda x: F.elu(x, 0.7, inplace=True), away_from=0.0, inplace=True)(draw)


@rule("EluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (\lambda \text{ if } y > 0 \text{ else } \beta (y + \lambda\alpha))",
      example=_elu_inplace_example)
def _elu_inplace(ctx: RuleContext):
    g, y = ctx.grad, ctx["result"]
    scale, alpha, beta = ctx["scale"], ctx["alpha"], ctx["input_scale"]
    # lambda*alpha*beta*e^{beta x} = beta*(y + lambda*alpha) on the negative side.
    return (np.where(y <= 0, g * beta * (y + scale * alpha), g * scale),)


def _celu_example(draw) -> Case:
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return _unary_example(lambda x: F.celu(x, alpha), away_from=0.0)(draw)


@rule("CeluBackward0",
      formula=r"y = \max(0, x) + \min(0, \alpha(e^{x/\alpha} - 1)):\quad \bar{x} = \bar{y} \odot (1 \text{ if } x > 0 \text{ else } e^{x/\alpha})",
      example=_celu_example)
def _celu(ctx: RuleContext):
    g, x, alpha = ctx.grad, ctx["self"], ctx["alpha"]
    return (np.where(x <= 0, g * np.exp(x / alpha), g),)


def _celu_inplace_example(draw) -> Case:
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return _unary_example(lambda x: F.celu(x, alpha, inplace=True), away_from=0.0, inplace=True)(draw)


@rule("CeluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (1 \text{ if } y > 0 \text{ else } y/\alpha + 1)",
      example=_celu_inplace_example)
def _celu_inplace(ctx: RuleContext):
    g, y, alpha = ctx.grad, ctx["result"], ctx["alpha"]
    return (np.where(y <= 0, g * (y / alpha + 1.0), g),)


def _gelu_example(draw) -> Case:
    approximate = draw(st.sampled_from(["none", "tanh"]))
    return _unary_example(lambda x: F.gelu(x, approximate=approximate), -4.0, 4.0)(draw)


@rule("GeluBackward0",
      formula=r"\text{none: } \bar{x} = \bar{y} \odot (\Phi(x) + x\,\varphi(x));\quad "
              r"\text{tanh: } u = \sqrt{2/\pi}(x + 0.044715x^{3}),\ "
              r"\bar{x} = \bar{y} \odot \big(\tfrac12(1 + \tanh u) + \tfrac12 x (1 - \tanh^{2} u)\sqrt{2/\pi}(1 + 3 \cdot 0.044715 x^{2})\big)",
      example=_gelu_example)
def _gelu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    if ctx["approximate"] == "tanh":
        k_beta = math.sqrt(2.0 / math.pi)
        k_kappa = 0.044715
        t = np.tanh(k_beta * (x + k_kappa * x ** 3))
        left = 0.5 * (1.0 + t)
        right = 0.5 * x * (1.0 - t * t) * k_beta * (1.0 + 3.0 * k_kappa * x * x)
        return (g * (left + right),)
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (g * (cdf + x * pdf),)


@rule("SiluBackward0", formula=r"y = x\,\sigma(x):\quad \bar{x} = \bar{y} \odot \sigma(x)(1 + x(1 - \sigma(x)))",
      example=_unary_example(F.silu))
def _silu(ctx: RuleContext):
    x = ctx["self"]
    s = _sigmoid(x)
    return (ctx.grad * s * (1.0 + x * (1.0 - s)),)


@rule("MishBackward0",
      formula=r"y = x \tanh(\operatorname{softplus} x):\quad t = \tanh(\operatorname{softplus} x),\ \bar{x} = \bar{y} \odot (t + x\,\sigma(x)(1 - t^{2}))",
      example=_unary_example(F.mish))
def _mish(ctx: RuleContext):
    x = ctx["self"]
    t = np.tanh(np.logaddexp(0.0, x))
    return (ctx.grad * (t + x * _sigmoid(x) * (1.0 - t * t)),)


def _softplus_example(draw) -> Case:
    beta = draw(st.sampled_from([1.0, 2.0, 0.5]))
    threshold = draw(st.sampled_from([20.0, 2.0]))
    # Keep beta*x off the threshold, where softplus switches to the identity.
    return _unary_example(lambda x: F.softplus(x, beta, threshold), -4.0, 4.0,
                          away_from=threshold / beta, margin=1e-2)(draw)


@rule("SoftplusBackward0",
      formula=r"y = \tfrac1\beta \ln(1 + e^{\beta x}):\quad \bar{x} = \bar{y} \odot \sigma(\beta x) \ (\bar{y} \text{ where } \beta x > t)",
      example=_softplus_example)
def _softplus(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    bx = x * ctx["beta"]
    return (np.where(bx > ctx["threshold"], g, g * _sigmoid(bx)),)


def _hardtanh_example(draw) -> Case:
    lo, hi = draw(st.sampled_from([(-1.0, 1.0), (-0.5, 2.0), (0.0, 6.0)]))
    inplace = draw(st.booleans())
    x = tensor(draw, shape(draw, min_dims=0), low=-4.0, high=7.0)
    with torch.no_grad():
        for b in (lo, hi):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    if inplace:
        return Case(inputs=(x,), fn=lambda x: F.hardtanh(x * 1.0, lo, hi, inplace=True))
    return Case(inputs=(x,), fn=lambda x: F.hardtanh(x, lo, hi))


@rule("HardtanhBackward0",
      formula=r"y = \min(\max(x, lo), hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[lo < x < hi]",
      example=_hardtanh_example)
def _hardtanh(ctx: RuleContext):
    x = ctx["self"]
    inside = (x > ctx["min_val"]) & (x < ctx["max_val"])
    return (np.where(inside, ctx.grad, 0.0),)


def _hardswish_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), low=-5.0, high=5.0)
    with torch.no_grad():
        for b in (-3.0, 3.0):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    return Case(inputs=(x,), fn=F.hardswish)


@rule("HardswishBackward0",
      formula=r"y = x \,\operatorname{relu6}(x + 3)/6:\quad \bar{x} = \bar{y} \odot "
              r"\begin{cases} 0 & x < -3 \\ x/3 + 1/2 & -3 \le x \le 3 \\ 1 & x > 3 \end{cases}",
      example=_hardswish_example)
def _hardswish(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    return (np.where(x < -3.0, 0.0, np.where(x <= 3.0, g * (x / 3.0 + 0.5), g)),)


def _hardsigmoid_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), low=-5.0, high=5.0)
    with torch.no_grad():
        for b in (-3.0, 3.0):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    return Case(inputs=(x,), fn=F.hardsigmoid)


@rule("HardsigmoidBackward0",
      formula=r"y = \operatorname{relu6}(x + 3)/6:\quad \bar{x} = \tfrac16\,\bar{y} \odot \mathbb{1}[-3 < x < 3]",
      example=_hardsigmoid_example)
def _hardsigmoid(ctx: RuleContext):
    x = ctx["self"]
    return (np.where((x > -3.0) & (x < 3.0), ctx.grad / 6.0, 0.0),)


def _threshold_example(draw) -> Case:
    th = draw(st.sampled_from([0.0, 0.5, -1.0]))
    return _unary_example(lambda x: F.threshold(x, th, 2.0), away_from=th)(draw)


@rule("ThresholdBackward0",
      formula=r"y = x \text{ if } x > t \text{ else } v:\quad \bar{x} = \bar{y} \odot \mathbb{1}[x > t]",
      example=_threshold_example)
def _threshold(ctx: RuleContext):
    return (np.where(ctx["self"] <= ctx["threshold"], 0.0, ctx.grad),)


def _threshold_inplace_example(draw) -> Case:
    th = draw(st.sampled_from([0.0, 0.5, -1.0]))
    return _unary_example(lambda x: F.threshold(x, th, 2.0, inplace=True), away_from=th,
                          inplace=True)(draw)


@rule("ThresholdBackward1",
      formula=r"\text{(in place)}\quad \bar{x} = \bar{y} \odot \mathbb{1}[x > t]",
      example=_threshold_inplace_example)
def _threshold_inplace(ctx: RuleContext):
    # The in-place op saves a copy of its input, so the test reads x, not the output.
    return (np.where(ctx["self"] <= ctx["threshold"], 0.0, ctx.grad),)


def _shrink_example(op):
    def example(draw) -> Case:
        lambd = draw(st.sampled_from([0.5, 1.0]))
        x = tensor(draw, shape(draw, min_dims=0))
        with torch.no_grad():
            for b in (-lambd, lambd):
                near = (x - b).abs() < 1e-3
                x[near] = b + 2e-3
        return Case(inputs=(x,), fn=lambda x: op(x, lambd))

    return example


@rule("SoftshrinkBackward0", formula=r"\bar{x} = \bar{y} \odot \mathbb{1}[|x| > \lambda]",
      example=_shrink_example(F.softshrink))
def _softshrink(ctx: RuleContext):
    x, lam = ctx["self"], ctx["lambd"]
    return (np.where((x >= -lam) & (x <= lam), 0.0, ctx.grad),)


@rule("HardshrinkBackward0", formula=r"\bar{x} = \bar{y} \odot \mathbb{1}[|x| > \lambda]",
      example=_shrink_example(F.hardshrink))
def _hardshrink(ctx: RuleContext):
    x, lam = ctx["self"], ctx["lambd"]
    return (np.where((x >= -lam) & (x <= lam), 0.0, ctx.grad),)


@rule("LogSigmoidBackward0", formula=r"y = \ln \sigma(x):\quad \bar{x} = \bar{y} \odot \sigma(-x)",
      example=_unary_example(F.logsigmoid, -5.0, 5.0))
def _log_sigmoid(ctx: RuleContext):
    return (ctx.grad * _sigmoid(-ctx["self"]),)


def _glu_example(draw) -> Case:
    s = list(shape(draw, min_dims=1))
    dim = draw(st.integers(-len(s), len(s) - 1))
    s[dim] *= 2
    x = tensor(draw, tuple(s))
    return Case(inputs=(x,), fn=lambda x: F.glu(x, dim))


@rule("GluBackward0",
      formula=r"x = [a; b],\ y = a \odot \sigma(b):\quad \bar{a} = \bar{y} \odot \sigma(b),\ \bar{b} = \bar{y} \odot a\,\sigma(b)(1 - \sigma(b))",
      example=_glu_example)
def _glu(ctx: RuleContext):
    x = ctx["self"]
    dim = ctx["dim"]
    if dim >= 2 ** 63:  # saved as an unsigned 64-bit int: -1 reads as 2**64 - 1
        dim -= 2 ** 64
    a, b = np.split(x, 2, axis=dim)
    s = _sigmoid(b)
    g = ctx.grad
    return (np.concatenate([g * s, g * a * s * (1.0 - s)], axis=dim),)


def _prelu_example(draw) -> Case:
    n = draw(st.integers(0, 3))
    s = shape(draw, min_dims=n, max_dims=n) if n else ()
    channels = draw(st.sampled_from([1, s[1] if len(s) > 1 else 1]))
    x = tensor(draw, s, away_from=0.0)
    w = tensor(draw, (channels,), low=-0.5, high=0.5, requires_grad=draw(st.booleans()))
    return Case(inputs=(x, w), fn=F.prelu)


@rule("PreluKernelBackward0",
      formula=r"y = x \text{ if } x > 0 \text{ else } w x:\quad \bar{x} = \bar{y} \odot (1 \text{ if } x > 0 \text{ else } w),\ "
              r"\bar{w} = \textstyle\sum \bar{y} \odot x\,\mathbb{1}[x \le 0]",
      example=_prelu_example)
def _prelu(ctx: RuleContext):
    g, x, w = ctx.grad, ctx["self"], ctx["weight"]
    positive = x > 0
    gx = np.where(positive, g, w * g)
    gw = np.where(positive, 0.0, x * g) if ctx.input_shapes[1] is not None else None
    return _shaped(ctx, 0, gx), _shaped(ctx, 1, gw)

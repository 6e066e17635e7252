"""Elementwise functions of one input (and their two-input cousins): exponentials and
logarithms, roots and reciprocals, sign and rounding, trigonometric and hyperbolic functions,
atan2/hypot, erf/erfc/erfinv, logit, xlogy and logaddexp."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import arr, erf, shaped, sigmoid, zero_grads
from gradviz.backward.rules._examples import (
    binary_example,
    broadcast_shapes,
    shape,
    tensor,
    unary_example,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Exponentials, logarithms, powers
# ---------------------------------------------------------------------------------------


_exp_example = unary_example(torch.exp, -2.0, 2.0)


@rule("ExpBackward0", formula=r"y = e^{x}:\quad \bar{x} = \bar{y} \odot y",
      example=_exp_example)
def _exp(ctx: RuleContext):
    return (ctx.grad * ctx["result"],)


_exp2_example = unary_example(torch.exp2, -2.0, 2.0)


@rule("Exp2Backward0", formula=r"y = 2^{x}:\quad \bar{x} = \bar{y} \odot y \ln 2",
      example=_exp2_example)
def _exp2(ctx: RuleContext):
    return (ctx.grad * ctx["result"] * math.log(2.0),)


_expm1_example = unary_example(torch.expm1, -2.0, 2.0)


@rule("Expm1Backward0", formula=r"y = e^{x} - 1:\quad \bar{x} = \bar{y} \odot (y + 1)",
      example=_expm1_example)
def _expm1(ctx: RuleContext):
    return (ctx.grad * (ctx["result"] + 1.0),)


_log_example = unary_example(torch.log, 0.1, 4.0)


@rule("LogBackward0", formula=r"y = \ln x:\quad \bar{x} = \bar{y} \oslash x",
      example=_log_example)
def _log(ctx: RuleContext):
    return (ctx.grad / ctx["self"],)


_log1p_example = unary_example(torch.log1p, -0.9, 3.0)


@rule("Log1PBackward0", formula=r"y = \ln(1 + x):\quad \bar{x} = \bar{y} \oslash (1 + x)",
      example=_log1p_example)
def _log1p(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] + 1.0),)


_log2_example = unary_example(torch.log2, 0.1, 4.0)


@rule("Log2Backward0", formula=r"y = \log_2 x:\quad \bar{x} = \bar{y} \oslash (x \ln 2)",
      example=_log2_example)
def _log2(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] * math.log(2.0)),)


_log10_example = unary_example(torch.log10, 0.1, 4.0)


@rule("Log10Backward0", formula=r"y = \log_{10} x:\quad \bar{x} = \bar{y} \oslash (x \ln 10)",
      example=_log10_example)
def _log10(ctx: RuleContext):
    return (ctx.grad / (ctx["self"] * math.log(10.0)),)


_sqrt_example = unary_example(torch.sqrt, 0.1, 4.0)


@rule("SqrtBackward0", formula=r"y = \sqrt{x}:\quad \bar{x} = \bar{y} \oslash (2y)",
      example=_sqrt_example)
def _sqrt(ctx: RuleContext):
    return (ctx.grad / (2.0 * ctx["result"]),)


_rsqrt_example = unary_example(torch.rsqrt, 0.1, 4.0)


@rule("RsqrtBackward0", formula=r"y = x^{-1/2}:\quad \bar{x} = -\tfrac12\,\bar{y} \odot y^{3}",
      example=_rsqrt_example)
def _rsqrt(ctx: RuleContext):
    y = ctx["result"]
    return (-0.5 * ctx.grad * y ** 3,)


_reciprocal_example = unary_example(torch.reciprocal, away_from=0.0, margin=0.1)


@rule("ReciprocalBackward0", formula=r"y = 1/x:\quad \bar{x} = -\bar{y} \odot y^{2}",
      example=_reciprocal_example)
def _reciprocal(ctx: RuleContext):
    y = ctx["result"]
    return (-ctx.grad * (y * y),)


# ---------------------------------------------------------------------------------------
# Sign, absolute value, rounding
# ---------------------------------------------------------------------------------------


def _abs_example(draw) -> Case:
    if draw(st.booleans(), label="complex"):
        # |z| of a complex z: the values (pairs of reals) avoid z = 0, where |z| has a kink.
        x = tensor(draw, (*shape(draw, min_dims=0), 2), away_from=0.0, margin=0.1)
        return Case(inputs=(x,), fn=lambda x: torch.view_as_complex(x).abs())
    return unary_example(torch.abs, away_from=0.0)(draw)


@rule("AbsBackward0",
      formula=r"y = |x|:\quad \bar{x} = \bar{y} \odot \operatorname{sgn}(x)\ "
              r"(x / |x| \text{ for complex } x,\ 0 \text{ at } 0)",
      example=_abs_example, complex=True)
def _abs(ctx: RuleContext):
    # np.sign of a complex number is z / |z| (0 at 0): the complex gradient's direction.
    return (ctx.grad * np.sign(ctx["self"]),)


_sign_example = unary_example(torch.sign, away_from=0.0)


@rule("SignBackward0", formula=r"y = \operatorname{sign}(x):\quad \bar{x} = 0",
      example=_sign_example)
def _sign(ctx: RuleContext):
    return zero_grads(ctx)


_sgn_example = unary_example(torch.sgn, away_from=0.0)


@rule("SgnBackward0", formula=r"y = \operatorname{sgn}(x) \text{ (real } x):\quad \bar{x} = 0",
      example=_sgn_example, note="Real inputs only; complex sgn has a non-zero gradient.")
def _sgn(ctx: RuleContext):
    if np.iscomplexobj(ctx["self"]):
        raise ValueError("complex sgn has no NumPy rule here")
    return zero_grads(ctx)


def _rounding_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: (torch.floor(x), torch.ceil(x), torch.round(x),
                                           torch.trunc(x)))


@rule("FloorBackward0", "CeilBackward0", "RoundBackward0", "TruncBackward0",
      formula=r"y = \lfloor x \rceil:\quad \bar{x} = 0", example=_rounding_example)
def _rounding(ctx: RuleContext):
    # Piecewise constant: zero gradient wherever it is defined.
    return zero_grads(ctx)


_frac_example = unary_example(torch.frac)


@rule("FracBackward0", formula=r"y = x - \operatorname{trunc}(x):\quad \bar{x} = \bar{y}",
      example=_frac_example)
def _frac(ctx: RuleContext):
    return (ctx.grad,)


# ---------------------------------------------------------------------------------------
# Trigonometric and hyperbolic
# ---------------------------------------------------------------------------------------


_sin_example = unary_example(torch.sin)


@rule("SinBackward0", formula=r"\bar{x} = \bar{y} \odot \cos x", example=_sin_example)
def _sin(ctx: RuleContext):
    return (ctx.grad * np.cos(ctx["self"]),)


_cos_example = unary_example(torch.cos)


@rule("CosBackward0", formula=r"\bar{x} = -\bar{y} \odot \sin x", example=_cos_example)
def _cos(ctx: RuleContext):
    return (-ctx.grad * np.sin(ctx["self"]),)


_tan_example = unary_example(torch.tan, -1.3, 1.3)


@rule("TanBackward0", formula=r"y = \tan x:\quad \bar{x} = \bar{y} \odot (1 + y^{2})",
      example=_tan_example)
def _tan(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * (1.0 + y * y),)


_asin_example = unary_example(torch.asin, -0.95, 0.95)


@rule("AsinBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{1 - x^{2}}",
      example=_asin_example)
def _asin(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(1.0 - x * x),)


_acos_example = unary_example(torch.acos, -0.95, 0.95)


@rule("AcosBackward0", formula=r"\bar{x} = -\bar{y} \oslash \sqrt{1 - x^{2}}",
      example=_acos_example)
def _acos(ctx: RuleContext):
    x = ctx["self"]
    return (-ctx.grad / np.sqrt(1.0 - x * x),)


_atan_example = unary_example(torch.atan)


@rule("AtanBackward0", formula=r"\bar{x} = \bar{y} \oslash (1 + x^{2})",
      example=_atan_example)
def _atan(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / (1.0 + x * x),)


_sinh_example = unary_example(torch.sinh)


@rule("SinhBackward0", formula=r"\bar{x} = \bar{y} \odot \cosh x", example=_sinh_example)
def _sinh(ctx: RuleContext):
    return (ctx.grad * np.cosh(ctx["self"]),)


_cosh_example = unary_example(torch.cosh)


@rule("CoshBackward0", formula=r"\bar{x} = \bar{y} \odot \sinh x", example=_cosh_example)
def _cosh(ctx: RuleContext):
    return (ctx.grad * np.sinh(ctx["self"]),)


_asinh_example = unary_example(torch.asinh)


@rule("AsinhBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{x^{2} + 1}",
      example=_asinh_example)
def _asinh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(x * x + 1.0),)


_acosh_example = unary_example(torch.acosh, 1.05, 4.0)


@rule("AcoshBackward0", formula=r"\bar{x} = \bar{y} \oslash \sqrt{x^{2} - 1}",
      example=_acosh_example)
def _acosh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / np.sqrt(x * x - 1.0),)


_atanh_example = unary_example(torch.atanh, -0.95, 0.95)


@rule("AtanhBackward0", formula=r"\bar{x} = \bar{y} \oslash (1 - x^{2})",
      example=_atanh_example)
def _atanh(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad / (1.0 - x * x),)


_atan2_example = binary_example(torch.atan2, away_b=0.0)


@rule("Atan2Backward0",
      formula=r"y = \operatorname{atan2}(a, b):\quad \bar{a} = \bar{y} \odot \frac{b}{a^{2} + "
              r"b^{2}},\ "
              r"\bar{b} = -\bar{y} \odot \frac{a}{a^{2} + b^{2}}",
      example=_atan2_example)
def _atan2(ctx: RuleContext):
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    r2 = a * a + b * b
    return shaped(ctx, 0, g * b / r2), shaped(ctx, 1, -g * a / r2)


_hypot_example = binary_example(torch.hypot, away_b=0.0)


@rule("HypotBackward0",
      formula=r"y = \sqrt{a^{2} + b^{2}}:\quad \bar{a} = \bar{y} \odot a \oslash y,\ \bar{b} = "
              r"\bar{y} \odot b \oslash y",
      example=_hypot_example)
def _hypot(ctx: RuleContext):
    g, y = ctx.grad, ctx["result"]
    ga = None if ctx.input_shapes[0] is None else g * ctx["self"] / y
    gb = None if ctx.input_shapes[1] is None else g * ctx["other"] / y
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


_tanh_example = unary_example(torch.tanh)


@rule("TanhBackward0", formula=r"y = \tanh x:\quad \bar{x} = \bar{y} \odot (1 - y^{2})",
      example=_tanh_example)
def _tanh(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * (1.0 - y * y),)


# ---------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------


_erf_rule_example = unary_example(torch.erf)


@rule("ErfBackward0", formula=r"\bar{x} = \bar{y} \odot \tfrac{2}{\sqrt{\pi}} e^{-x^{2}}",
      example=_erf_rule_example)
def _erf_rule(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x),)


_erfc_example = unary_example(torch.erfc)


@rule("ErfcBackward0", formula=r"\bar{x} = -\bar{y} \odot \tfrac{2}{\sqrt{\pi}} e^{-x^{2}}",
      example=_erfc_example)
def _erfc(ctx: RuleContext):
    x = ctx["self"]
    return (-ctx.grad * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x),)


def _erfinv(x: np.ndarray) -> np.ndarray:
    """Inverse error function by Newton's method on erf (NumPy has no erfinv)."""
    y = np.arctanh(np.clip(x, -0.999999, 0.999999)) * 0.9  # rough start, right sign
    for _ in range(60):
        step = (erf(y) - x) / (2.0 / math.sqrt(math.pi) * np.exp(-y * y))
        y = y - step
        if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(y))):
            break
    return y


_erfinv_example = unary_example(torch.erfinv, -0.95, 0.95)


@rule("ErfinvBackward0", formula=r"y = \operatorname{erf}^{-1}(x):\quad \bar{x} = \bar{y} \odot "
                                 r"\tfrac{\sqrt{\pi}}{2} e^{y^{2}}",
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
      formula=r"y = \ln\frac{x}{1 - x}:\quad \bar{x} = \frac{\bar{y}}{x(1 - x)} \text{ (0 outside "
              r"} [\epsilon, 1-\epsilon])",
      example=_logit_example)
def _logit(ctx: RuleContext):
    g, x, eps = ctx.grad, ctx["self"], ctx["eps"]
    if eps is None:
        inside = (x >= 0) & (x <= 1)
        return (np.where(inside, g / (x * (1.0 - x)), np.nan),)
    inside = (x >= eps) & (x <= 1.0 - eps)
    return (np.where(inside, g / (x * (1.0 - x)), 0.0),)


def _xlogy_example(draw) -> Case:
    sa, sb = broadcast_shapes(draw)
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
      formula=r"y = a \ln b:\quad \bar{a} = \bar{y} \odot \ln b,\ \bar{b} = \bar{y} \odot a "
              r"\oslash b",
      example=_xlogy_example)
def _xlogy(ctx: RuleContext):
    g, a, b = ctx.grad, arr(ctx["self"]), arr(ctx["other"])
    ga = None if ctx.input_shapes[0] is None else _xlogy_self_grad(g, a, b)
    gb = None if ctx.input_shapes[1] is None else g * a / b
    return shaped(ctx, 0, ga), shaped(ctx, 1, gb)


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
    return sigmoid((a - b) * base_log), sigmoid((b - a) * base_log)


_logaddexp_example = binary_example(torch.logaddexp)


@rule("LogaddexpBackward0",
      formula=r"y = \ln(e^{a} + e^{b}):\quad \bar{a} = \bar{y} \odot \sigma(a - b),\ \bar{b} = "
              r"\bar{y} \odot \sigma(b - a)",
      example=_logaddexp_example)
def _logaddexp(ctx: RuleContext):
    wa, wb = _logaddexp_parts(arr(ctx["self"]), arr(ctx["other"]), 1.0)
    return shaped(ctx, 0, ctx.grad * wa), shaped(ctx, 1, ctx.grad * wb)


_logaddexp2_example = binary_example(torch.logaddexp2)


@rule("Logaddexp2Backward0",
      formula=r"y = \log_2(2^{a} + 2^{b}):\quad \bar{a} = \bar{y} \odot \frac{2^{a}}{2^{a} + "
              r"2^{b}},\ "
              r"\bar{b} = \bar{y} \odot \frac{2^{b}}{2^{a} + 2^{b}}",
      example=_logaddexp2_example)
def _logaddexp2(ctx: RuleContext):
    wa, wb = _logaddexp_parts(arr(ctx["self"]), arr(ctx["other"]), math.log(2.0))
    return shaped(ctx, 0, ctx.grad * wa), shaped(ctx, 1, ctx.grad * wb)

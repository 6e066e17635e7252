"""Special functions and the remaining elementwise odds: the gamma family (lgamma,
digamma, polygamma, mvlgamma, igamma/igammac, zeta), Bessel functions, sinc, the normal
distribution's helpers, entr, xlog1py, round(decimals), copysign, deg2rad/rad2deg, angle,
fmod and remainder.

Forward values come from the nodes' saved attributes: the input ``self`` (and ``result``
where torch keeps it: ndtri, log_ndtr, copysign), and both operands of
fmod/remainder/xlog1py/zeta/igamma (a Python number for a scalar operand). Special
functions come from ``scipy.special``.

Not covered: the gradient of zeta and igamma/igammac in their first argument (torch has
none and its backward raises), hence no rule for SpecialZetaBackward2 (zeta with a number
as second argument, whose only edge is that one).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import arr, edge_shape, needs, sp
from gradviz.backward.rules._examples import (
    Draw,
    away_from_integers,
    leaf,
    shape,
    suffix_shape,
    tensor,
    unary_example,
    uniform,
    with_zeros,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule


def _ratio(num: np.ndarray, x: np.ndarray) -> np.ndarray:
    """num / x where x != 0 (callers replace x == 0 by the limit)."""
    return num / np.where(x == 0, 1.0, x)

# ---------------------------------------------------------------- gamma family

_lgamma_example = unary_example(torch.lgamma, -4.0, 5.0, poles=True, inplace=torch.Tensor.lgamma_)
_digamma_example = unary_example(torch.digamma, -4.0, 5.0, poles=True,
                                 inplace=torch.Tensor.digamma_)


@rule("LgammaBackward0", formula=r"\bar{x} = \bar{y}\,\psi(x)", example=_lgamma_example)
def _lgamma(ctx: RuleContext):
    return (ctx.grad * sp.digamma(ctx["self"]),)


@rule("DigammaBackward0", formula=r"\bar{x} = \bar{y}\,\psi^{(1)}(x)", example=_digamma_example)
def _digamma(ctx: RuleContext):
    return (ctx.grad * sp.polygamma(1, ctx["self"]),)


def _polygamma_example(inplace: bool):
    def example(draw: Draw) -> Case:
        n = draw(st.integers(0, 4), label="n")
        # Positive x only: SciPy computes psi^(n), n >= 1, through the Hurwitz zeta
        # function, which it leaves undefined (nan) for a negative argument.
        x = tensor(draw, shape(draw, min_dims=0), low=0.1, high=5.0)
        if inplace:
            return Case(inputs=(x,), fn=lambda x: (x * 1.0).polygamma_(n))
        return Case(inputs=(x,), fn=lambda x: torch.polygamma(n, x))

    return example


def _polygamma(ctx: RuleContext):
    return (ctx.grad * sp.polygamma(int(ctx["n"]) + 1, ctx["self"]),)


_POLYGAMMA = r"y = \psi^{(n)}(x):\quad \bar{x} = \bar{y}\,\psi^{(n+1)}(x)"
rule("PolygammaBackward0", formula=_POLYGAMMA, example=_polygamma_example(False))(_polygamma)
# polygamma_ (in place) has a node of its own.
rule("PolygammaBackward1", formula=_POLYGAMMA, example=_polygamma_example(True))(_polygamma)


def _mvlgamma_example(draw: Draw) -> Case:
    p = draw(st.integers(1, 4), label="p")
    # The multivariate log-gamma is defined for x > (p - 1) / 2 only.
    x = tensor(draw, shape(draw, min_dims=0), low=(p - 1) / 2 + 0.1, high=(p - 1) / 2 + 5.0)
    if draw(st.booleans(), label="in place"):
        return Case(inputs=(x,), fn=lambda x: (x * 1.0).mvlgamma_(p))
    return Case(inputs=(x,), fn=lambda x: torch.mvlgamma(x, p))


@rule(
    "MvlgammaBackward0",
    formula=r"y = \log\Gamma_p(x):\quad \bar{x} = \bar{y}\sum_{i=0}^{p-1} \psi\!\left(x - "
            r"\tfrac{i}{2}\right)",
    example=_mvlgamma_example,
)
def _mvlgamma(ctx: RuleContext):
    x, p = ctx["self"], int(ctx["p"])
    return (ctx.grad * sum(sp.digamma(x - i / 2) for i in range(p)),)


def _incomplete_gamma_example(op):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        # No gradient for a exists, so a never needs one.
        a = tensor(draw, suffix_shape(draw, s), low=0.5, high=4.0, requires_grad=False)
        x = tensor(draw, s, low=0.1, high=5.0)
        return Case(inputs=(a, x), fn=op)

    return example


def _gamma_density(ctx: RuleContext) -> np.ndarray:
    a, x = ctx["self"], ctx["other"]
    return np.exp((a - 1) * np.log(x) - x - sp.gammaln(a))


_IGAMMA = (r"{op}(a, x):\quad \bar{{x}} = {sign}\bar{{y}}\,\frac{{x^{{a-1}} "
           r"e^{{-x}}}}{{\Gamma(a)}}\ \text{{(}}\bar{{a}}\text{{ not defined)}}")
_igamma_example = _incomplete_gamma_example(torch.igamma)
_igammac_example = _incomplete_gamma_example(torch.igammac)


@rule("IgammaBackward0", formula=_IGAMMA.format(op="y = P", sign=""), example=_igamma_example)
def _igamma(ctx: RuleContext):
    return None, ctx.grad * _gamma_density(ctx)


@rule("IgammacBackward0", formula=_IGAMMA.format(op="y = Q", sign="-"), example=_igammac_example)
def _igammac(ctx: RuleContext):
    return None, -ctx.grad * _gamma_density(ctx)


def _zeta_example(scalar_x: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        q = tensor(draw, s, low=0.2, high=3.0)
        if scalar_x:
            x0 = draw(st.sampled_from([1.5, 2.0, 3.25]), label="x")
            return Case(inputs=(q,), fn=lambda q: torch.special.zeta(x0, q))
        # zeta(x, q) converges for x > 1; x has no gradient, so it needs none.
        x = tensor(draw, suffix_shape(draw, s), low=1.1, high=4.0, requires_grad=False)
        return Case(inputs=(x, q), fn=torch.special.zeta)

    return example


def _zeta(ctx: RuleContext):
    x, q = arr(ctx["self"]), ctx["other"]
    grad_q = -ctx.grad * x * sp.zeta(x + 1, q)
    # A number x leaves q the only edge; a tensor x keeps its (gradient-less) edge first.
    return (grad_q,) if ctx.name == "SpecialZetaBackward1" else (None, grad_q)


_ZETA = (r"y = \zeta(x, q):\quad \bar{q} = -\bar{y}\,x\,\zeta(x + 1, q)\ \text{(}\bar{x}\text{ not "
         r"defined)}")
rule("SpecialZetaBackward0", formula=_ZETA, example=_zeta_example(False))(_zeta)
rule("SpecialZetaBackward1", formula=_ZETA, example=_zeta_example(True))(_zeta)


# ---------------------------------------------------------------- Bessel functions

_i0_example = unary_example(torch.i0, inplace=torch.Tensor.i0_)
# |x| has a kink at 0 (where torch's sgn(0) = 0 takes the mean of the one-sided slopes).
_i0e_example = unary_example(torch.special.i0e, away_from=0.0, margin=1e-2)
_i1_example = unary_example(torch.special.i1, zeros=True)
_i1e_example = unary_example(torch.special.i1e, zeros=True)


@rule("I0Backward0", formula=r"\bar{x} = \bar{y}\,I_1(x)", example=_i0_example)
def _i0(ctx: RuleContext):
    return (ctx.grad * sp.i1(ctx["self"]),)


@rule(
    "SpecialI0EBackward0",
    formula=r"y = e^{-|x|} I_0(x):\quad \bar{x} = \bar{y}\,\big(e^{-|x|} I_1(x) - "
            r"\operatorname{sgn}(x)\, y\big)",
    example=_i0e_example,
)
def _i0e(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * (sp.i1e(x) - np.sign(x) * sp.i0e(x)),)


@rule(
    "SpecialI1Backward0",
    formula=r"\bar{x} = \bar{y}\,\big(I_0(x) - I_1(x) / x\big)\ \ (\tfrac12\bar{y} \text{ at } x = "
            r"0)",
    example=_i1_example,
)
def _i1(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * np.where(x == 0, 0.5, sp.i0(x) - _ratio(sp.i1(x), x)),)


@rule(
    "SpecialI1EBackward0",
    formula=r"y = e^{-|x|} I_1(x):\quad \bar{x} = \bar{y}\,\big(e^{-|x|} I_0(x) - "
            r"y\,(\operatorname{sgn}(x) + 1/x)\big)\ \ (\tfrac12\bar{y} \text{ at } x = 0)",
    example=_i1e_example,
)
def _i1e(ctx: RuleContext):
    x = ctx["self"]
    i1e = sp.i1e(x)
    return (ctx.grad * np.where(x == 0, 0.5, sp.i0e(x) - np.sign(x) * i1e - _ratio(i1e, x)),)


# ---------------------------------------------------------------- sinc


def _sinc_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x = uniform(draw, s, -3.0, 3.0)
    # Exact zeros (the removable 0/0), but no tiny non-zero x: torch's quotient formula
    # cancels there (its error grows like eps / |x|).
    x = with_zeros(draw, np.where(np.abs(x) < 1e-2, 0.1, x))
    if draw(st.booleans(), label="in place"):
        return Case(inputs=(leaf(x),), fn=lambda x: (x * 1.0).sinc_())
    return Case(inputs=(leaf(x),), fn=torch.sinc)


@rule(
    "SincBackward0",
    formula=r"y = \frac{\sin \pi x}{\pi x}:\quad \bar{x} = \bar{y}\,\frac{\cos \pi x - y}{x}\ \ (0 "
            r"\text{ at } x = 0)",
    example=_sinc_example,
)
def _sinc(ctx: RuleContext):
    x = ctx["self"]
    z = np.pi * x
    # Near 0 the quotient cancels; the Taylor series -pi^2 x/3 + pi^4 x^3/30 - pi^6 x^5/840
    # is good to ~1e-14 relative for |x| < 0.01.
    series = z * (-np.pi / 3 + z * z * (np.pi / 30 - z * z * np.pi / 840))
    return (ctx.grad * np.where(np.abs(x) < 1e-2, series, _ratio(np.cos(z) - np.sinc(x), x)),)


# ---------------------------------------------------------------- normal distribution, entropy

_ndtri_example = unary_example(torch.special.ndtri, 0.01, 0.99)
_log_ndtr_example = unary_example(torch.special.log_ndtr, -8.0, 6.0)
_erfcx_example = unary_example(torch.special.erfcx, -3.0, 6.0)
_entr_example = unary_example(torch.special.entr, 0.01, 3.0)


@rule(
    "SpecialNdtriBackward0",
    formula=r"y = \Phi^{-1}(x):\quad \bar{x} = \bar{y}\,\sqrt{2\pi}\,e^{y^2/2}",
    example=_ndtri_example,
)
def _ndtri(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * math.sqrt(2 * math.pi) * np.exp(y * y / 2),)


@rule(
    "SpecialLogNdtrBackward0",
    formula=r"y = \log \Phi(x):\quad \bar{x} = \bar{y}\,\frac{\varphi(x)}{\Phi(x)} = "
            r"\bar{y}\,\frac{e^{-x^2/2 - y}}{\sqrt{2\pi}}",
    example=_log_ndtr_example,
)
def _log_ndtr(ctx: RuleContext):
    x, y = ctx["self"], ctx["result"]
    return (ctx.grad * np.exp(-x * x / 2 - y) / math.sqrt(2 * math.pi),)


@rule(
    "SpecialErfcxBackward0",
    formula=r"y = e^{x^2}\operatorname{erfc}(x):\quad \bar{x} = \bar{y}\,\big(2 x y - "
            r"2/\sqrt{\pi}\big)",
    example=_erfcx_example,
)
def _erfcx(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * (2 * x * sp.erfcx(x) - 2 / math.sqrt(math.pi)),)


@rule(
    "SpecialEntrBackward0",
    formula=r"y = -x \log x:\quad \bar{x} = -\bar{y}\,(1 + \log x)",
    example=_entr_example,
)
def _entr(ctx: RuleContext):
    return (-ctx.grad * (1 + np.log(ctx["self"])),)


def _xlog1py_example(variant: int):
    """Variant 0: two tensors; 1: a number x (only y's edge); 2: a number y (only x's)."""

    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        if variant == 1:
            y = tensor(draw, s, low=-0.9, high=3.0)
            return Case(inputs=(y,), fn=lambda y: torch.special.xlog1py(2.5, y))
        x = with_zeros(draw, uniform(draw, s, -3.0, 3.0), 0.2)  # xlog1py(0, y) = 0 for any y
        if variant == 2:
            y0 = draw(st.sampled_from([-0.5, 0.0, 2.0]), label="y")
            return Case(inputs=(leaf(x),), fn=lambda x: torch.special.xlog1py(x, y0))
        which = draw(st.sampled_from(["both", "x", "y"]), label="needs grad")
        y = tensor(draw, suffix_shape(draw, s), low=-0.9, high=3.0, requires_grad=which != "x")
        return Case(inputs=(leaf(x, which != "y"), y), fn=torch.special.xlog1py)

    return example


def _xlog1py(ctx: RuleContext):
    x, y, g = arr(ctx["self"]), arr(ctx["other"]), ctx.grad
    # xlog1py(g, y) is 0 where g is; the x gradient is 0 where x == 0 and y <= -1.
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_x = np.where((g == 0) | ((x == 0) & (y <= -1)), 0.0, g * np.log1p(y))
        grad_y = g * x / (y + 1)
    return {"SpecialXlog1PyBackward1": (grad_y,),
            "SpecialXlog1PyBackward2": (grad_x,)}.get(ctx.name, (grad_x, grad_y))


_XLOG1PY = (r"z = x \log(1 + y):\quad \bar{x} = \bar{z}\log(1 + y),\quad \bar{y} = "
            r"\bar{z}\,\frac{x}{1 + y}")
for _v in (0, 1, 2):
    rule(f"SpecialXlog1PyBackward{_v}", formula=_XLOG1PY, example=_xlog1py_example(_v))(_xlog1py)


# ---------------------------------------------------------------- rounding, signs, angles


def _round_decimals_example(draw: Draw) -> Case:
    d = draw(st.integers(-1, 3), label="decimals")
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.round(x, decimals=d))


@rule(
    "RoundBackward1",
    formula=r"y = \operatorname{round}(x, d):\quad \bar{x} = 0",
    example=_round_decimals_example,
)
def _round_decimals(ctx: RuleContext):
    return (np.zeros_like(ctx.grad),)


def _copysign_example(scalar: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        x = tensor(draw, s, away_from=0.0, margin=1e-2)  # |x| has a kink at 0
        if scalar:
            y0 = draw(st.sampled_from([-2.0, 0.0, -0.0, 1.5]), label="sign")
            return Case(inputs=(x,), fn=lambda x: torch.copysign(x, y0))
        y = tensor(draw, suffix_shape(draw, s), requires_grad=draw(st.booleans(), label="y grad"))
        return Case(inputs=(x, y), fn=torch.copysign)

    return example


def _copysign(ctx: RuleContext):
    x, z = ctx["self"], ctx["result"]
    grad_x = ctx.grad * np.where(x == 0, 0.0, _ratio(z, x))
    if ctx.name == "CopysignBackward1":  # a number gave the sign: no second edge
        return (grad_x,)
    return grad_x, (np.zeros(edge_shape(ctx, 1)) if needs(ctx, 1) else None)


_COPYSIGN = (r"z = |x| \operatorname{sgn}(y):\quad \bar{x} = \bar{z}\,z / x\ \ (0 \text{ at } x = "
             r"0),\quad \bar{y} = 0")
rule("CopysignBackward0", formula=_COPYSIGN, example=_copysign_example(False))(_copysign)
rule("CopysignBackward1", formula=_COPYSIGN, example=_copysign_example(True))(_copysign)

_deg2rad_example = unary_example(torch.deg2rad, -400.0, 400.0)
_rad2deg_example = unary_example(torch.rad2deg)
_angle_example = unary_example(torch.angle, away_from=0.0, margin=1e-2)


@rule("Deg2RadBackward0", formula=r"\bar{x} = \bar{y}\,\pi / 180", example=_deg2rad_example)
def _deg2rad(ctx: RuleContext):
    return (ctx.grad * (math.pi / 180),)


@rule("Rad2DegBackward0", formula=r"\bar{x} = 180\,\bar{y} / \pi", example=_rad2deg_example)
def _rad2deg(ctx: RuleContext):
    return (ctx.grad * (180 / math.pi),)


@rule(
    "AngleBackward0",
    formula=r"y = \arg x \in \{0, \pi\}:\quad \bar{x} = 0\ \text{(real } x)",
    example=_angle_example,
    note="Real inputs only; the angle of a complex number has a non-zero gradient.",
)
def _angle(ctx: RuleContext):
    return (np.zeros(np.shape(ctx["self"])),)


# ---------------------------------------------------------------- fmod and remainder


def _division_example(method: str, scalar: bool):
    """`a.<method>(b)` with a number b (`scalar`) or a tensor b broadcasting into a.

    a / b stays 0.02 from the integers, where the remainder jumps.
    """

    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        a = uniform(draw, s, -5.0, 5.0)
        inplace = draw(st.booleans(), label="in place")

        def op(a, b):
            return getattr(a * 1.0, method + "_")(b) if inplace else getattr(torch, method)(a, b)

        if scalar:
            b0 = draw(st.sampled_from([0.3, -0.7, 1.5, 2.0]), label="divisor")
            x = leaf(away_from_integers(a / b0, 0.02) * b0)
            return Case(inputs=(x,), fn=lambda a: op(a, b0))
        b = uniform(draw, suffix_shape(draw, s), 0.5, 2.0)
        b = b * np.where(uniform(draw, b.shape, 0.0, 1.0) < 0.5, -1.0, 1.0)
        a = away_from_integers(a / b, 0.02) * b
        which = draw(st.sampled_from(["both", "a", "b"]), label="needs grad")
        return Case(inputs=(leaf(a, which != "b"), leaf(b, which != "a")), fn=op)

    return example


def _mod_scalar(ctx: RuleContext):
    return (ctx.grad,)


_MOD_SCALAR = r"y = x \bmod c\ \text{(}c\text{ a number)}:\quad \bar{x} = \bar{y}"
rule("FmodBackward0", formula=_MOD_SCALAR, example=_division_example("fmod", True))(_mod_scalar)
rule("RemainderBackward0", formula=_MOD_SCALAR,
     example=_division_example("remainder", True))(_mod_scalar)


def _mod_tensor(ctx: RuleContext, quotient) -> tuple[np.ndarray | None, ...]:
    g = ctx.grad
    # a and b are saved only when b needs its gradient.
    grad_b = -g * quotient(ctx["self"], ctx["other"]) if needs(ctx, 1) else None
    return g, grad_b


@rule(
    "FmodBackward1",
    formula=r"y = a - \operatorname{trunc}(a / b)\, b:\quad \bar{a} = \bar{y},\quad \bar{b} = "
            r"-\bar{y}\operatorname{trunc}(a / b)",
    example=_division_example("fmod", False),
)
def _fmod(ctx: RuleContext):
    return _mod_tensor(ctx, lambda a, b: np.trunc(a / b))


@rule(
    "RemainderBackward1",
    formula=r"y = a - \lfloor a / b \rfloor b:\quad \bar{a} = \bar{y},\quad \bar{b} = "
            r"-\bar{y}\lfloor a / b \rfloor",
    example=_division_example("remainder", False),
)
def _remainder(ctx: RuleContext):
    # floor_divide is Python's floor division (through fmod), like the op's floor rounding.
    return _mod_tensor(ctx, np.floor_divide)

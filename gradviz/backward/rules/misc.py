"""Special functions and assorted ops without a family of their own: the gamma family,
Bessel functions, the normal distribution's helpers, sinc, copysign and other elementwise
odds, fmod/remainder, rot90, mode, masked_scatter, soft margin loss, the bilinear layer's
_trilinear, the diagonal copy of torch.diag, grid sampling, affine grids and CTC loss.

Forward values come from the nodes' saved attributes: the input ``self`` of the elementwise
functions (and ``result`` where torch keeps it: ndtri, log_ndtr, copysign), both operands
of fmod/remainder/xlog1py/zeta/igamma (a Python number for a scalar operand), ``dims``/``k``
of rot90, the winning ``indices`` of mode, ``mask`` and the source's sizes of
masked_scatter, the three factors with their ``expand*``/``sumdim`` of _trilinear, what
diagonal saves for its copy, ``input``/``grid`` and the integer ``interpolation_mode``
(0 bilinear, 1 nearest, 2 bicubic) and ``padding_mode`` (0 zeros, 1 border, 2 reflection)
of grid_sample, ``size`` of affine_grid, and for CTC the ``log_probs``, targets and lengths:
the rule runs its own forward-backward recursion rather than reading the alphas torch
saved. Special functions come from ``scipy.special``.

Not covered: the gradient of zeta and igamma/igammac in their first argument (torch has
none and its backward raises), hence no rule for SpecialZetaBackward2 (zeta with a number
as second argument, whose only edge is that one). Bicubic grid sampling exists in 2-D only
(the rule raises ValueError for anything else). CTC follows torch's convention only on
normalized log-probabilities (see its note).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to
from gradviz.backward.rules.elementwise import _sigmoid
from gradviz.backward.rules.nn import _loss_scale
from gradviz.backward.rules.shape import add_along_axis, axis, signed


class _LazySpecial:
    """scipy.special, imported on first use: it adds ~130 ms to `import gradviz` (and to
    every CLI call) for rules that most programs never reach."""

    def __getattr__(self, name: str) -> Any:
        import scipy.special

        return getattr(scipy.special, name)


sp = _LazySpecial()

# ---------------------------------------------------------------- shared helpers
# Decorator arguments are part of a rule's source, which must not mention torch: examples
# are built into module-level names first.


def _arr(value: Any) -> np.ndarray:
    """A saved value (array or Python number) as a float64 array."""
    return np.asarray(value, dtype=np.float64)


def _wanted(ctx: RuleContext, i: int) -> bool:
    """Whether edge i exists (its input needs a gradient)."""
    return i < len(ctx.input_shapes) and ctx.input_shapes[i] is not None


def _ratio(num: np.ndarray, x: np.ndarray) -> np.ndarray:
    """num / x where x != 0 (callers replace x == 0 by the limit)."""
    return num / np.where(x == 0, 1.0, x)


def _uniform(draw: Draw, s: tuple[int, ...], low: float, high: float) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="values seed"))
    return np.asarray(rng.uniform(low, high, size=s), dtype=np.float64)


def _leaf(values: np.ndarray, requires_grad: bool = True) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def _away_from_integers(values: np.ndarray, margin: float) -> np.ndarray:
    """Values within `margin` of an integer moved to `2 * margin` from it (poles, jumps)."""
    near = np.round(values)
    return np.where(np.abs(values - near) < margin,
                    near + np.where(values >= near, 2.0, -2.0) * margin, values)


def _with_zeros(draw: Draw, values: np.ndarray, share: float = 0.25) -> np.ndarray:
    """`values` with about `share` of the entries set to exactly 0."""
    return np.where(_uniform(draw, values.shape, 0.0, 1.0) < share, 0.0, values)


def _suffix_shape(draw: Draw, full: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to `full`: a suffix of it with some sides set to 1."""
    k = draw(st.integers(0, len(full)), label="broadcast dims")
    return tuple(1 if draw(st.booleans(), label="size 1") else n for n in full[len(full) - k:])


def _unary_example(op, low: float = -3.0, high: float = 3.0, *, poles: bool = False,
                   zeros: bool = False, away_from: float | None = None, inplace=None):
    """`op(x)` on one drawn tensor, or `inplace(x)` on a non-leaf copy half the time.

    poles keeps x 0.05 from the integers (the poles of the gamma family at x <= 0); zeros
    sets a quarter of x to exactly 0 (a removable 0/0 in the formula).
    """

    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        if poles or zeros:
            x = _uniform(draw, s, low, high)
            x = _with_zeros(draw, x) if zeros else _away_from_integers(x, 0.05)
            x = _leaf(x)
        else:
            x = tensor(draw, s, low=low, high=high, away_from=away_from, margin=1e-2)
        if inplace is not None and draw(st.booleans(), label="in place"):
            return Case(inputs=(x,), fn=lambda x: inplace(x * 1.0))
        return Case(inputs=(x,), fn=op)

    return example


# ---------------------------------------------------------------- gamma family

_lgamma_example = _unary_example(torch.lgamma, -4.0, 5.0, poles=True, inplace=torch.Tensor.lgamma_)
_digamma_example = _unary_example(torch.digamma, -4.0, 5.0, poles=True, inplace=torch.Tensor.digamma_)


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
    formula=r"y = \log\Gamma_p(x):\quad \bar{x} = \bar{y}\sum_{i=0}^{p-1} \psi\!\left(x - \tfrac{i}{2}\right)",
    example=_mvlgamma_example,
)
def _mvlgamma(ctx: RuleContext):
    x, p = ctx["self"], int(ctx["p"])
    return (ctx.grad * sum(sp.digamma(x - i / 2) for i in range(p)),)


def _incomplete_gamma_example(op):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        # No gradient for a exists, so a never needs one.
        a = tensor(draw, _suffix_shape(draw, s), low=0.5, high=4.0, requires_grad=False)
        x = tensor(draw, s, low=0.1, high=5.0)
        return Case(inputs=(a, x), fn=op)

    return example


def _gamma_density(ctx: RuleContext) -> np.ndarray:
    a, x = ctx["self"], ctx["other"]
    return np.exp((a - 1) * np.log(x) - x - sp.gammaln(a))


_IGAMMA = r"{op}(a, x):\quad \bar{{x}} = {sign}\bar{{y}}\,\frac{{x^{{a-1}} e^{{-x}}}}{{\Gamma(a)}}\ \text{{(}}\bar{{a}}\text{{ not defined)}}"
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
        x = tensor(draw, _suffix_shape(draw, s), low=1.1, high=4.0, requires_grad=False)
        return Case(inputs=(x, q), fn=torch.special.zeta)

    return example


def _zeta(ctx: RuleContext):
    x, q = _arr(ctx["self"]), ctx["other"]
    grad_q = -ctx.grad * x * sp.zeta(x + 1, q)
    # A number x leaves q the only edge; a tensor x keeps its (gradient-less) edge first.
    return (grad_q,) if ctx.name == "SpecialZetaBackward1" else (None, grad_q)


_ZETA = r"y = \zeta(x, q):\quad \bar{q} = -\bar{y}\,x\,\zeta(x + 1, q)\ \text{(}\bar{x}\text{ not defined)}"
rule("SpecialZetaBackward0", formula=_ZETA, example=_zeta_example(False))(_zeta)
rule("SpecialZetaBackward1", formula=_ZETA, example=_zeta_example(True))(_zeta)


# ---------------------------------------------------------------- Bessel functions

_i0_example = _unary_example(torch.i0, inplace=torch.Tensor.i0_)
# |x| has a kink at 0 (where torch's sgn(0) = 0 takes the mean of the one-sided slopes).
_i0e_example = _unary_example(torch.special.i0e, away_from=0.0)
_i1_example = _unary_example(torch.special.i1, zeros=True)
_i1e_example = _unary_example(torch.special.i1e, zeros=True)


@rule("I0Backward0", formula=r"\bar{x} = \bar{y}\,I_1(x)", example=_i0_example)
def _i0(ctx: RuleContext):
    return (ctx.grad * sp.i1(ctx["self"]),)


@rule(
    "SpecialI0EBackward0",
    formula=r"y = e^{-|x|} I_0(x):\quad \bar{x} = \bar{y}\,\big(e^{-|x|} I_1(x) - \operatorname{sgn}(x)\, y\big)",
    example=_i0e_example,
)
def _i0e(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * (sp.i1e(x) - np.sign(x) * sp.i0e(x)),)


@rule(
    "SpecialI1Backward0",
    formula=r"\bar{x} = \bar{y}\,\big(I_0(x) - I_1(x) / x\big)\ \ (\tfrac12\bar{y} \text{ at } x = 0)",
    example=_i1_example,
)
def _i1(ctx: RuleContext):
    x = ctx["self"]
    return (ctx.grad * np.where(x == 0, 0.5, sp.i0(x) - _ratio(sp.i1(x), x)),)


@rule(
    "SpecialI1EBackward0",
    formula=r"y = e^{-|x|} I_1(x):\quad \bar{x} = \bar{y}\,\big(e^{-|x|} I_0(x) - y\,(\operatorname{sgn}(x) + 1/x)\big)\ \ (\tfrac12\bar{y} \text{ at } x = 0)",
    example=_i1e_example,
)
def _i1e(ctx: RuleContext):
    x = ctx["self"]
    i1e = sp.i1e(x)
    return (ctx.grad * np.where(x == 0, 0.5, sp.i0e(x) - np.sign(x) * i1e - _ratio(i1e, x)),)


# ---------------------------------------------------------------- sinc


def _sinc_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x = _uniform(draw, s, -3.0, 3.0)
    # Exact zeros (the removable 0/0), but no tiny non-zero x: torch's quotient formula
    # cancels there (its error grows like eps / |x|).
    x = _with_zeros(draw, np.where(np.abs(x) < 1e-2, 0.1, x))
    if draw(st.booleans(), label="in place"):
        return Case(inputs=(_leaf(x),), fn=lambda x: (x * 1.0).sinc_())
    return Case(inputs=(_leaf(x),), fn=torch.sinc)


@rule(
    "SincBackward0",
    formula=r"y = \frac{\sin \pi x}{\pi x}:\quad \bar{x} = \bar{y}\,\frac{\cos \pi x - y}{x}\ \ (0 \text{ at } x = 0)",
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

_ndtri_example = _unary_example(torch.special.ndtri, 0.01, 0.99)
_log_ndtr_example = _unary_example(torch.special.log_ndtr, -8.0, 6.0)
_erfcx_example = _unary_example(torch.special.erfcx, -3.0, 6.0)
_entr_example = _unary_example(torch.special.entr, 0.01, 3.0)


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
    formula=r"y = \log \Phi(x):\quad \bar{x} = \bar{y}\,\frac{\varphi(x)}{\Phi(x)} = \bar{y}\,\frac{e^{-x^2/2 - y}}{\sqrt{2\pi}}",
    example=_log_ndtr_example,
)
def _log_ndtr(ctx: RuleContext):
    x, y = ctx["self"], ctx["result"]
    return (ctx.grad * np.exp(-x * x / 2 - y) / math.sqrt(2 * math.pi),)


@rule(
    "SpecialErfcxBackward0",
    formula=r"y = e^{x^2}\operatorname{erfc}(x):\quad \bar{x} = \bar{y}\,\big(2 x y - 2/\sqrt{\pi}\big)",
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
        x = _with_zeros(draw, _uniform(draw, s, -3.0, 3.0), 0.2)  # xlog1py(0, y) = 0 for any y
        if variant == 2:
            y0 = draw(st.sampled_from([-0.5, 0.0, 2.0]), label="y")
            return Case(inputs=(_leaf(x),), fn=lambda x: torch.special.xlog1py(x, y0))
        which = draw(st.sampled_from(["both", "x", "y"]), label="needs grad")
        y = tensor(draw, _suffix_shape(draw, s), low=-0.9, high=3.0, requires_grad=which != "x")
        return Case(inputs=(_leaf(x, which != "y"), y), fn=torch.special.xlog1py)

    return example


def _xlog1py(ctx: RuleContext):
    x, y, g = _arr(ctx["self"]), _arr(ctx["other"]), ctx.grad
    # xlog1py(g, y) is 0 where g is; the x gradient is 0 where x == 0 and y <= -1.
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_x = np.where((g == 0) | ((x == 0) & (y <= -1)), 0.0, g * np.log1p(y))
        grad_y = g * x / (y + 1)
    return {"SpecialXlog1PyBackward1": (grad_y,),
            "SpecialXlog1PyBackward2": (grad_x,)}.get(ctx.name, (grad_x, grad_y))


_XLOG1PY = r"z = x \log(1 + y):\quad \bar{x} = \bar{z}\log(1 + y),\quad \bar{y} = \bar{z}\,\frac{x}{1 + y}"
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
        y = tensor(draw, _suffix_shape(draw, s), requires_grad=draw(st.booleans(), label="y grad"))
        return Case(inputs=(x, y), fn=torch.copysign)

    return example


def _copysign(ctx: RuleContext):
    x, z = ctx["self"], ctx["result"]
    grad_x = ctx.grad * np.where(x == 0, 0.0, _ratio(z, x))
    if ctx.name == "CopysignBackward1":  # a number gave the sign: no second edge
        return (grad_x,)
    return grad_x, (np.zeros(ctx.input_shapes[1]) if _wanted(ctx, 1) else None)


_COPYSIGN = r"z = |x| \operatorname{sgn}(y):\quad \bar{x} = \bar{z}\,z / x\ \ (0 \text{ at } x = 0),\quad \bar{y} = 0"
rule("CopysignBackward0", formula=_COPYSIGN, example=_copysign_example(False))(_copysign)
rule("CopysignBackward1", formula=_COPYSIGN, example=_copysign_example(True))(_copysign)

_deg2rad_example = _unary_example(torch.deg2rad, -400.0, 400.0)
_rad2deg_example = _unary_example(torch.rad2deg)
_angle_example = _unary_example(torch.angle, away_from=0.0)


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
        a = _uniform(draw, s, -5.0, 5.0)
        inplace = draw(st.booleans(), label="in place")

        def op(a, b):
            return getattr(a * 1.0, method + "_")(b) if inplace else getattr(torch, method)(a, b)

        if scalar:
            b0 = draw(st.sampled_from([0.3, -0.7, 1.5, 2.0]), label="divisor")
            a = _leaf(_away_from_integers(a / b0, 0.02) * b0)
            return Case(inputs=(a,), fn=lambda a: op(a, b0))
        b = _uniform(draw, _suffix_shape(draw, s), 0.5, 2.0)
        b = b * np.where(_uniform(draw, b.shape, 0.0, 1.0) < 0.5, -1.0, 1.0)
        a = _away_from_integers(a / b, 0.02) * b
        which = draw(st.sampled_from(["both", "a", "b"]), label="needs grad")
        return Case(inputs=(_leaf(a, which != "b"), _leaf(b, which != "a")), fn=op)

    return example


def _mod_scalar(ctx: RuleContext):
    return (ctx.grad,)


_MOD_SCALAR = r"y = x \bmod c\ \text{(}c\text{ a number)}:\quad \bar{x} = \bar{y}"
rule("FmodBackward0", formula=_MOD_SCALAR, example=_division_example("fmod", True))(_mod_scalar)
rule("RemainderBackward0", formula=_MOD_SCALAR, example=_division_example("remainder", True))(_mod_scalar)


def _mod_tensor(ctx: RuleContext, quotient) -> tuple[np.ndarray | None, ...]:
    g = ctx.grad
    # a and b are saved only when b needs its gradient.
    grad_b = -g * quotient(ctx["self"], ctx["other"]) if _wanted(ctx, 1) else None
    return g, grad_b


@rule(
    "FmodBackward1",
    formula=r"y = a - \operatorname{trunc}(a / b)\, b:\quad \bar{a} = \bar{y},\quad \bar{b} = -\bar{y}\operatorname{trunc}(a / b)",
    example=_division_example("fmod", False),
)
def _fmod(ctx: RuleContext):
    return _mod_tensor(ctx, lambda a, b: np.trunc(a / b))


@rule(
    "RemainderBackward1",
    formula=r"y = a - \lfloor a / b \rfloor b:\quad \bar{a} = \bar{y},\quad \bar{b} = -\bar{y}\lfloor a / b \rfloor",
    example=_division_example("remainder", False),
)
def _remainder(ctx: RuleContext):
    # floor_divide is Python's floor division (through fmod), like the op's floor rounding.
    return _mod_tensor(ctx, np.floor_divide)


# ---------------------------------------------------------------- rearranging and selecting


def _rot90_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=4)
    n = len(s)
    d1, d2 = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True), label="dims")
    dims = [d - n if draw(st.booleans(), label="negative") else d for d in (d1, d2)]
    k = draw(st.integers(-5, 5), label="k")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: torch.rot90(x, k, dims))


@rule(
    "Rot90Backward0",
    formula=r"Y = \operatorname{rot90}_k(X):\quad \bar{X} = \operatorname{rot90}_{-k}(\bar{Y})",
    example=_rot90_example,
)
def _rot90(ctx: RuleContext):
    # np.rot90 turns from the first towards the second axis, the same way as the op.
    dims = tuple(signed(d) for d in ctx["dims"])
    return (np.rot90(ctx.grad, -signed(ctx["k"]), axes=dims),)


def _mode_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    # Values on a coarse grid, so that they repeat (and modes tie: the saved index decides).
    x = _leaf(np.round(_uniform(draw, s, -2.0, 2.0)))
    n = max(len(s), 1)
    d = draw(st.integers(-n, n - 1), label="dim")
    keep = draw(st.booleans(), label="keepdim")
    return Case(inputs=(x,), fn=lambda x: torch.mode(x, d, keep)[0])


@rule(
    "ModeBackward0",
    formula=r"(y, i) = \operatorname{mode}_d\,x:\quad \bar{x} = 0,\ \ \bar{x}[\ldots, i, \ldots] = \bar{y}\ \text{(the saved index picks the entry)}",
    example=_mode_example,
)
def _mode(ctx: RuleContext):
    sizes = tuple(ctx["self_sym_sizes"])
    g, idx = ctx.grad, ctx["indices"]
    if not sizes:
        return (np.reshape(g, ()),)
    d = axis(ctx["dim"], len(sizes))
    if not ctx["keepdim"]:
        g, idx = np.expand_dims(g, d), np.expand_dims(idx, d)
    return (add_along_axis(np.zeros(sizes), d, idx, g),)


def _masked_scatter_example(draw: Draw) -> Case:
    full = shape(draw, min_dims=0)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="mask seed"))
    mask = rng.random(_suffix_shape(draw, full)) < 0.5
    inplace = draw(st.booleans(), label="in place")
    # In place, self keeps its shape, so it must be the broadcast shape itself.
    self_shape = full if inplace else _suffix_shape(draw, full)
    count = int(np.broadcast_to(mask, np.broadcast_shapes(mask.shape, self_shape)).sum())
    extra = draw(st.integers(0, 3), label="unused source entries")
    source_shape = draw(st.sampled_from([(count + extra,), (1, count + extra)]), label="source shape")
    which = draw(st.sampled_from(["both", "self", "source"]), label="needs grad")
    x = tensor(draw, self_shape, requires_grad=which != "source")
    src = tensor(draw, source_shape, requires_grad=which != "self")
    m = torch.tensor(mask)
    if inplace:
        return Case(inputs=(x, src), fn=lambda x, src: (x * 1.0).masked_scatter_(m, src))
    return Case(inputs=(x, src), fn=lambda x, src: x.masked_scatter(m, src))


@rule(
    "MaskedScatterBackward0",
    formula=r"\bar{X} = \bar{Y}\,[\lnot M],\quad \bar{s}_{0..k-1} = \bar{Y}[M]\ \text{(row-major)},\ \bar{s}_{k..} = 0",
    example=_masked_scatter_example,
)
def _masked_scatter(ctx: RuleContext):
    g = ctx.grad
    mask = np.broadcast_to(np.asarray(ctx["mask"], dtype=bool), g.shape)
    sizes = tuple(ctx["source_sym_sizes"])
    picked = g[mask]  # row-major, the order in which forward consumed the source
    grad_source = np.zeros(math.prod(sizes))
    grad_source[: picked.size] = picked
    return np.where(mask, 0.0, g), grad_source.reshape(sizes)


# ---------------------------------------------------------------- losses and bilinear


def _soft_margin_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x = tensor(draw, s)
    t_shape = _suffix_shape(draw, s)  # the target may broadcast into the input, not past it
    if draw(st.booleans(), label="signs"):
        t = torch.tensor(np.where(_uniform(draw, t_shape, 0.0, 1.0) < 0.5, -1.0, 1.0))
    else:
        t = tensor(draw, t_shape, requires_grad=False)
    reduction = draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    return Case(inputs=(x,), fn=lambda x: F.soft_margin_loss(x, t, reduction=reduction))


@rule(
    "SoftMarginLossBackward0",
    formula=r"\ell_i = \log(1 + e^{-t_i x_i}):\quad \bar{x}_i = -\bar{\ell}\,\frac{t_i}{1 + e^{t_i x_i}}\ \ (\times 1/n \text{ for the mean})",
    example=_soft_margin_example,
)
def _soft_margin(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    # t / (1 + e^{tx}) = t * sigmoid(-tx)
    return (-t * _sigmoid(-t * x) * _loss_scale(ctx, np.size(x)),)


def _bilinear_example(draw: Draw) -> Case:
    lead = shape(draw, min_dims=0, max_dims=2, max_side=3)
    n1, n2, out = shape(draw, min_dims=3, max_dims=3, max_side=4)
    bias = draw(st.booleans(), label="bias")
    flags = draw(st.lists(st.booleans(), min_size=3, max_size=3).filter(any), label="needs grad")
    x1 = tensor(draw, (*lead, n1), requires_grad=flags[0])
    x2 = tensor(draw, (*lead, n2), requires_grad=flags[1])
    w = tensor(draw, (out, n1, n2), requires_grad=flags[2])
    b = tensor(draw, (out,)) if bias else None
    return Case(inputs=(x1, x2, w), fn=lambda x1, x2, w: F.bilinear(x1, x2, w, b))


@rule(
    "TrilinearBackward0",
    formula=r"Y = \textstyle\sum_{\text{sumdim}} \hat{A}\hat{B}\hat{C}\ (\hat{\cdot}\text{: unsqueezed at expand}):\quad \bar{A} = \operatorname{sum\_to}_{\hat{A}}\big(\bar{Y}\hat{B}\hat{C}\big)\text{, likewise } \bar{B}, \bar{C}",
    example=_bilinear_example,
)
def _trilinear(ctx: RuleContext):
    # Each factor is unsqueezed at its expand dims, the three broadcast and multiply, and the
    # product is summed over sumdim. A factor is saved only when another's gradient needs it.
    factors = [None if ctx[f"i{k}"] is None else np.expand_dims(ctx[f"i{k}"], tuple(ctx[f"expand{k}"]))
               for k in (1, 2, 3)]
    g = np.expand_dims(ctx.grad, tuple(ctx["sumdim"]))
    grads: list[np.ndarray | None] = []
    for k in range(3):
        if not _wanted(ctx, k):
            grads.append(None)
            continue
        others = [f for j, f in enumerate(factors) if j != k]
        part = g * others[0] * others[1]
        target = list(ctx.input_shapes[k])
        for dim in sorted(ctx[f"expand{k + 1}"]):
            target.insert(dim, 1)
        part = np.broadcast_to(part, np.broadcast_shapes(part.shape, target))
        grads.append(sum_to(part, tuple(target)).reshape(ctx.input_shapes[k]))
    return tuple(grads)


# ---------------------------------------------------------------- grid sampling
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
    mode, padding, align = int(ctx["interpolation_mode"]), int(ctx["padding_mode"]), bool(ctx["align_corners"])
    if mode not in (0, 1, 2):
        raise ValueError(f"grid_sample interpolation mode {mode} is not bilinear, nearest or bicubic")
    sizes = x.shape[2:]
    d = len(sizes)
    # Channels last, so that indexing with (batch, *pixel) arrays picks a vector of channels.
    xm, gm = np.moveaxis(x, 1, -1), np.moveaxis(g, 1, -1)
    grad_xm = np.zeros_like(xm)
    out_shape = grid.shape[:-1]
    batch = np.broadcast_to(np.arange(x.shape[0]).reshape((-1,) + (1,) * (len(out_shape) - 1)), out_shape)

    def visit(index: list[np.ndarray], weight: np.ndarray) -> np.ndarray:
        """Add grad * weight onto the input pixel at `index` (when inside the input);
        return sum over channels of grad * pixel value there (0 outside)."""
        inside = np.all([(i >= 0) & (i < n) for i, n in zip(index, sizes, strict=True)], axis=0)
        at = (batch, *(np.clip(i, 0, n - 1).astype(np.int64) for i, n in zip(index, sizes, strict=True)))
        np.add.at(grad_xm, at, gm * (weight * inside)[..., None])
        return np.sum(gm * xm[at], axis=-1) * inside

    pixel, scale = zip(*(_unnormalize(grid[..., d - 1 - j], sizes[j], align) for j in range(d)), strict=True)
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
            frac = rng.uniform(-0.4, 0.4, size=(n, *out)) if mode == "nearest" else rng.uniform(0.05, 0.95, size=(n, *out))
            p = whole + frac
            if align:  # a size-1 side maps every grid value to pixel 0
                coords.append(p / (side - 1) * 2 - 1 if side > 1 else rng.uniform(-1.5, 1.5, size=p.shape))
            else:
                coords.append((2 * p + 1) / side - 1)
        which = draw(st.sampled_from(["both", "input", "grid"]), label="needs grad")
        x = tensor(draw, (n, c, *sizes), requires_grad=which != "grid")
        grid = _leaf(np.stack(coords, axis=-1), which != "input")
        return Case(inputs=(x, grid), fn=lambda x, grid: F.grid_sample(
            x, grid, mode=mode, padding_mode=padding, align_corners=align))

    return example


_GRID_SAMPLE = (
    r"Y_{n,c,o} = \sum_{p} w_p(u_o)\, X_{n,c,p},\ u_o = \operatorname{pad}(\operatorname{unnorm}(G_{n,o})):\quad "
    r"\bar{X}_{n,c,p} = \sum_o w_p(u_o)\,\bar{Y}_{n,c,o},\quad "
    r"\bar{G}_{n,o} = \sum_{c,p} \bar{Y}_{n,c,o} X_{n,c,p}\, \frac{\partial w_p}{\partial u}\frac{\partial u}{\partial G}"
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
    formula=r"G_{n,o} = \Theta_n\,(b_o, 1):\quad \bar{\Theta}_n = \sum_o \bar{G}_{n,o}\,(b_o, 1)^\top",
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


# ---------------------------------------------------------------- CTC loss


def _log_alpha(emit: np.ndarray, ext: np.ndarray, blank: int) -> np.ndarray:
    """log alpha[t, s]: the log-probability of the path prefixes that emit l'_s at frame t
    (emit[t, s] = log-probability of l'_s at frame t)."""
    t_len, s_len = emit.shape
    # Paths step to the same or the next symbol of l', or skip one blank between two
    # different labels.
    skip = np.zeros(s_len, dtype=bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full((t_len, s_len), -np.inf)
    alpha[0, :2] = emit[0, :2]  # a path starts with the first blank or the first label
    for t in range(1, t_len):
        prev = alpha[t - 1]
        one, two = np.full(s_len, -np.inf), np.full(s_len, -np.inf)  # from s - 1 and s - 2
        one[1:], two[2:] = prev[:-1], prev[:-2]
        alpha[t] = emit[t] + np.logaddexp(np.logaddexp(prev, one), np.where(skip, two, -np.inf))
    return alpha


def _ctc_one(lp: np.ndarray, labels: np.ndarray, blank: int) -> tuple[float, np.ndarray]:
    """Negative log-likelihood and d nll / d lp of one sequence's lp (T, C) and labels.

    Forward-backward (Graves et al., 2006) over l' = (blank, l1, blank, ..., lL, blank);
    alpha and beta both include frame t's own probability.
    """
    ext = np.full(2 * len(labels) + 1, blank)
    ext[1::2] = labels
    emit = lp[:, ext]
    alpha = _log_alpha(emit, ext, blank)
    # beta is alpha of the problem reversed in time and in l' (which keeps l''s form).
    beta = _log_alpha(emit[::-1, ::-1], ext[::-1], blank)[::-1, ::-1]
    nll = -np.logaddexp.reduce(alpha[-1, -2:])  # paths end on the last label or blank
    # d nll / d lp[t, c] = -sum over s with l'_s = c of alpha beta / (p(l) y_t(c)).
    grad = np.zeros_like(lp)
    with np.errstate(over="ignore", invalid="ignore"):
        for c in np.unique(ext):
            both = np.logaddexp.reduce((alpha + beta)[:, ext == c], axis=1)
            grad[:, c] = -np.exp(both + nll - lp[:, c])
    return float(nll), grad


def _ctc_labels(ctx: RuleContext) -> list[np.ndarray]:
    """Each sequence's labels: targets padded to (N, S), or all concatenated in 1-D."""
    targets, lengths = np.asarray(ctx["targets"]), [int(n) for n in ctx["target_lengths"]]
    if targets.ndim == 2:
        return [targets[b, :n] for b, n in enumerate(lengths)]
    starts = np.cumsum([0, *lengths])
    return [targets[starts[b]: starts[b] + n] for b, n in enumerate(lengths)]


def _ctc(ctx: RuleContext):
    lp, g = ctx["log_probs"], ctx.grad  # lp: (T, N, C); g: the loss gradient, one per sequence
    blank, zero_infinity = int(ctx["blank"]), bool(ctx["zero_infinity"])
    grad = np.zeros_like(lp)
    for b, (labels, t_len) in enumerate(zip(_ctc_labels(ctx), ctx["input_lengths"], strict=True)):
        seq = lp[: int(t_len), b]
        nll, d = _ctc_one(seq, labels, blank)
        if np.isinf(nll) and zero_infinity:
            continue  # an impossible alignment: the loss is replaced by 0, so is its gradient
        # On normalized log-probabilities the op adds exp(lp) (see the note).
        normalized = np.all(np.abs(np.exp(seq).sum(axis=-1) - 1) <= 1e-5)
        grad[: int(t_len), b] = g[b] * (d + np.exp(seq) if normalized else d)
    return (grad,)


def _ctc_example(draw: Draw) -> Case:
    n, c = draw(st.integers(1, 3), label="batch"), draw(st.integers(2, 5), label="classes")
    t_max = draw(st.integers(1, 6), label="frames")
    blank = draw(st.integers(0, c - 1), label="blank")
    zero_infinity = draw(st.booleans(), label="zero_infinity")
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="targets seed"))
    labels = [b for b in range(c) if b != blank]
    seqs, frames = [], []
    for _ in range(n):
        t_len = int(rng.integers(1, t_max + 1))
        s = list(rng.choice(labels, size=int(rng.integers(0, t_len + 1))))
        # A label sequence needs a frame per label and per repeat; longer ones have no
        # alignment (an infinite loss), which only zero_infinity makes differentiable.
        while not zero_infinity and len(s) + sum(a == b for a, b in itertools.pairwise(s)) > t_len:
            s.pop()
        seqs.append(s)
        frames.append(t_len)
    frames[0] = t_max  # the longest sequence fills the input
    width = max(max(len(s) for s in seqs), 1)
    padded = torch.tensor([s + [blank] * (width - len(s)) for s in seqs], dtype=torch.long)
    flat = torch.tensor([v for s in seqs for v in s], dtype=torch.long)
    targets = padded if draw(st.booleans(), label="padded targets") else flat
    input_lengths, target_lengths = torch.tensor(frames), torch.tensor([len(s) for s in seqs])
    reduction = draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    # The leaf holds log-probabilities (normalized per frame), as ctc_loss expects.
    logits = _uniform(draw, (t_max, n, c), -2.0, 2.0)
    lp = _leaf(logits - sp.logsumexp(logits, axis=-1, keepdims=True))
    return Case(inputs=(lp,), fn=lambda lp: F.ctc_loss(
        lp, targets, input_lengths, target_lengths, blank, reduction, zero_infinity))


_CTC = (
    r"\ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_t e^{y_{t,\pi_t}}:\quad "
    r"\bar{y}_{t,c} = \bar{\ell}\Big(\big[\textstyle\sum_{c'} e^{y_{t,c'}} = 1\big]\, e^{y_{t,c}}"
    r" - e^{\ell - y_{t,c}} \sum_{s:\, l'_s = c} \alpha_t(s)\,\beta_t(s)\Big)\ \ (t < T_n)"
)
rule(
    "CtcLossBackward0",
    formula=_CTC,
    example=_ctc_example,
    note=("Torch's gradient is the derivative plus exp(log_probs) times the loss gradient, a "
          "term that vanishes through log_softmax or any other normalization upstream. The "
          "rule adds it where each frame's probabilities sum to 1 (within 1e-5) and returns "
          "the plain derivative elsewhere, where torch's extra term is a real error."),
)(_ctc)

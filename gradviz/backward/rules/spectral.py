"""The FFT family and the complex-valued ops around it: rfft/fft/fft2/fftn (FftR2CBackward0),
complex-to-complex transforms (FftC2CBackward0), irfft/hfft (FftC2RBackward0),
view_as_real / view_as_complex, conj and polar.

Complex gradients follow torch's convention, the conjugate Wirtinger derivative: for the
real loss L and a complex z = a + ib, the gradient is dL/da + i dL/db. For an op linear
in its input, y = A z, that makes the backward the adjoint: z-bar = A^H y-bar, and for a
real input of a complex op, x-bar = Re(A^H y-bar).

Nodes save ``dim``, the integer ``normalization`` (0 none, 1 by sqrt(n), 2 by n, where n
is the product of the signal sizes along ``dim``), ``onesided`` (R2C) and ``forward``
(C2C, the sign of the exponent). The transforms are computed with ``numpy.fft``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import axis, edge_shape
from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------- helpers


def _dims(ctx: RuleContext, ndim: int) -> tuple[int, ...]:
    return tuple(axis(d, ndim) for d in ctx["dim"])


def _scale(normalization: int, n: int) -> float:
    """The factor a transform of n points was multiplied by (0 none, 1 1/sqrt(n), 2 1/n)."""
    return {0: 1.0, 1: 1.0 / math.sqrt(n), 2: 1.0 / n}[int(normalization)] if n else 1.0


def _complex_grad(ctx: RuleContext) -> np.ndarray:
    return np.asarray(ctx.grad, dtype=np.complex128)


def _signal(draw: Draw, min_dims: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A shape and the dims a transform runs over (one to all of them, in order)."""
    s = shape(draw, min_dims=min_dims, max_dims=3, max_side=5)
    k = draw(st.integers(1, len(s)), label="transformed dims")
    first = draw(st.integers(0, len(s) - k), label="first dim")
    return s, tuple(range(first, first + k))


def _norm(draw: Draw) -> str:
    return draw(st.sampled_from(["backward", "ortho", "forward"]), label="norm")


def _complex_leaf(draw: Draw, s: tuple[int, ...]) -> torch.Tensor:
    """A float64 leaf of shape (*s, 2), read as complex by view_as_complex."""
    return tensor(draw, (*s, 2))


# ---------------------------------------------------------------- real to complex


def _r2c_example(draw: Draw) -> Case:
    s, dims = _signal(draw)
    norm = _norm(draw)
    x = tensor(draw, s)
    if draw(st.booleans(), label="onesided"):
        return Case(inputs=(x,), fn=lambda x: torch.view_as_real(
            torch.fft.rfftn(x, dim=dims, norm=norm)))
    # A two-sided fft of a real tensor is an R2C over one dim (fftn casts to complex first).
    return Case(inputs=(x,), fn=lambda x: torch.view_as_real(
        torch.fft.fft(x, dim=dims[-1], norm=norm)))


@rule(
    "FftR2CBackward0",
    formula=r"Y = c\,F_D X\ (\text{the first } \lfloor n/2 \rfloor + 1 \text{ entries of the last "
    r"dim if onesided}):\quad \bar{X} = c\,\operatorname{Re}\big(F_D^H\,\bar{Y}_{\text{0-padded}}"
    r"\big)",
    example=_r2c_example,
    complex=True,
)
def _fft_r2c(ctx: RuleContext):
    x_shape = edge_shape(ctx, 0)
    dims = _dims(ctx, len(x_shape))
    g = _complex_grad(ctx)
    if ctx["onesided"]:
        # Entries the onesided output dropped received no gradient: zeros.
        pad = [(0, 0)] * g.ndim
        pad[dims[-1]] = (0, x_shape[dims[-1]] - g.shape[dims[-1]])
        g = np.pad(g, pad)
    n = math.prod(x_shape[d] for d in dims)
    # The adjoint of the unnormalized DFT is the unnormalized inverse sum over e^{+i...}.
    adjoint = np.fft.ifftn(g, axes=dims, norm="forward")
    return (np.real(adjoint) * _scale(ctx["normalization"], n),)


# ---------------------------------------------------------------- complex to complex


def _c2c_example(draw: Draw) -> Case:
    s, dims = _signal(draw)
    norm = _norm(draw)
    op = draw(st.sampled_from(["fftn", "ifftn"]), label="transform")
    transform = getattr(torch.fft, op)
    x = _complex_leaf(draw, s)
    return Case(inputs=(x,), fn=lambda x: torch.view_as_real(
        transform(torch.view_as_complex(x), dim=dims, norm=norm)))


@rule(
    "FftC2CBackward0",
    formula=r"Y = c\,F^{\pm}_D Z:\quad \bar{Z} = c\,(F^{\pm}_D)^H \bar{Y} = c\,F^{\mp}_D \bar{Y}",
    example=_c2c_example,
    complex=True,
)
def _fft_c2c(ctx: RuleContext):
    g = _complex_grad(ctx)
    dims = _dims(ctx, g.ndim)
    n = math.prod(g.shape[d] for d in dims)
    if ctx["forward"]:
        adjoint = np.fft.ifftn(g, axes=dims, norm="forward")  # unnormalized, e^{+i...}
    else:
        adjoint = np.fft.fftn(g, axes=dims)  # unnormalized, e^{-i...}
    return (adjoint * _scale(ctx["normalization"], n),)


# ---------------------------------------------------------------- complex to real


def _c2r_example(draw: Draw) -> Case:
    s, dims = _signal(draw)
    norm = _norm(draw)
    x = _complex_leaf(draw, s)
    last = s[dims[-1]]
    # Output lengths 2(m - 1) (the default) and 2(m - 1) + 1 keep the half spectrum as is;
    # others make torch pad or trim it first.
    n = draw(st.sampled_from([None, 2 * (last - 1) + 1, last]), label="n")
    if n is None and last == 1:
        n = 1  # the default 2(m - 1) would be no points at all
    sizes = None if n is None else [s[d] for d in dims[:-1]] + [n]
    if draw(st.booleans(), label="hfft") and len(dims) == 1:
        return Case(inputs=(x,), fn=lambda x: torch.fft.hfft(
            torch.view_as_complex(x), n=n, dim=dims[0], norm=norm))
    return Case(inputs=(x,), fn=lambda x: torch.fft.irfftn(
        torch.view_as_complex(x), s=sizes, dim=dims, norm=norm))


@rule(
    "FftC2RBackward0",
    formula=r"Y = c\,F^{+}_D \operatorname{herm}(Z) \text{ (real)}:\quad \bar{Z} = c\,"
    r"\operatorname{rfft}_D(\bar{Y}),\ \text{doubled at the entries } 1 \ldots n - m "
    r"\text{ of the last dim (they stand for two conjugate entries)}",
    example=_c2r_example,
    complex=True,
)
def _fft_c2r(ctx: RuleContext):
    g = np.asarray(ctx.grad, dtype=np.float64)
    dims = _dims(ctx, g.ndim)
    n = math.prod(g.shape[d] for d in dims)
    gz = np.fft.rfftn(g, axes=dims)
    last = dims[-1]
    double = g.shape[last] - gz.shape[last]
    if double > 0:
        index = [slice(None)] * gz.ndim
        index[last] = slice(1, 1 + double)
        gz[tuple(index)] *= 2
    return (gz * _scale(ctx["normalization"], n),)


# ---------------------------------------------------------------- views between real and complex


def _view_as_real_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    x = tensor(draw, s)
    # fft of a real tensor is complex; view_as_real shows it as (..., 2) reals.
    return Case(inputs=(x,), fn=lambda x: torch.view_as_real(torch.fft.fft(x)) * 1.0)


@rule(
    "ViewAsRealBackward0",
    formula=r"Y_{\ldots,0} = \operatorname{Re} Z,\ Y_{\ldots,1} = \operatorname{Im} Z:\quad "
    r"\bar{Z} = \bar{Y}_{\ldots,0} + i\,\bar{Y}_{\ldots,1}",
    example=_view_as_real_example,
    complex=True,
)
def _view_as_real(ctx: RuleContext):
    g = np.asarray(ctx.grad, dtype=np.float64)
    return (g[..., 0] + 1j * g[..., 1],)


def _view_as_complex_example(draw: Draw) -> Case:
    x = _complex_leaf(draw, shape(draw, min_dims=0, max_dims=2))
    part = draw(st.sampled_from(["abs", "real", "imag"]), label="read")
    if part == "abs":
        return Case(inputs=(x,), fn=lambda x: torch.view_as_complex(x).abs())
    return Case(inputs=(x,), fn=lambda x: getattr(torch.view_as_complex(x), part) * 1.0)


@rule(
    "ViewAsComplexBackward0",
    formula=r"Z = X_{\ldots,0} + i\,X_{\ldots,1}:\quad \bar{X}_{\ldots,0} = \operatorname{Re} "
    r"\bar{Z},\ \bar{X}_{\ldots,1} = \operatorname{Im} \bar{Z}",
    example=_view_as_complex_example,
    complex=True,
)
def _view_as_complex(ctx: RuleContext):
    g = _complex_grad(ctx)
    return (np.stack([g.real, g.imag], axis=-1),)


# ---------------------------------------------------------------- conj and polar


def _conj_example(draw: Draw) -> Case:
    # hfft conjugates its input (lazily) before the complex-to-real transform.
    x = _complex_leaf(draw, shape(draw, min_dims=1, max_dims=2, min_side=2))
    return Case(inputs=(x,), fn=lambda x: torch.fft.hfft(torch.view_as_complex(x)))


@rule("ConjBackward0", formula=r"Y = Z^{*}:\quad \bar{Z} = (\bar{Y})^{*}",
      example=_conj_example, complex=True)
def _conj(ctx: RuleContext):
    return (np.conj(_complex_grad(ctx)),)


def _polar_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=2)
    r = tensor(draw, s, low=0.1, high=2.0)
    theta = tensor(draw, s)
    return Case(inputs=(r, theta), fn=lambda r, t: torch.view_as_real(torch.polar(r, t)) * 1.0)


@rule(
    "PolarBackward0",
    formula=r"z = r e^{i\theta}:\quad \bar{r} = \operatorname{Re}(\overline{\bar{z}}\,z/|z|),\ "
    r"\bar{\theta} = \operatorname{Re}(\overline{\bar{z}}\,i z)",
    example=_polar_example,
    complex=True,
)
def _polar(ctx: RuleContext):
    z, g = np.asarray(ctx["result"], dtype=np.complex128), _complex_grad(ctx)
    mag = np.abs(z)
    unit = np.where(mag == 0, 0.0, z / np.where(mag == 0, 1.0, mag))
    return np.real(np.conj(g) * unit), np.real(np.conj(g) * 1j * z)

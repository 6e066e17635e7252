"""Inverse, determinants, linear solves and LU.

Node types: LinalgInvExBackward0, LinalgDetBackward0, LinalgSlogdetBackward0,
LinalgSolveExBackward0, LinalgSolveTriangularBackward0, TriangularSolveBackward0
(deprecated ``torch.triangular_solve``), LinalgLuFactorExBackward0 (also ``torch.lu``),
LinalgLuBackward0, LuUnpackBackward0 and LinalgLuSolveBackward0 (also ``torch.lu_solve``).

Forward values come from the nodes' saved attributes: ``inverse`` (inv); ``A`` (det,
slogdet, solve; the LU factors they also save are not used), ``sign`` (slogdet),
``result`` and ``left`` (solve); ``self``, ``result``, ``upper``, ``left``,
``unitriangular`` (solve_triangular); ``A``, ``solution``, ``upper``, ``transpose``,
``unitriangular`` (triangular_solve; the right-hand side ``self`` is not used); the packed
``LU`` with LAPACK's 1-based ``pivots`` (lu_factor, lu_solve, with ``result``, ``left``,
``adjoint``); ``P``, ``L``, ``U`` (lu); nothing but the output shapes (lu_unpack).

Where the derivative does not exist these rules raise ValueError (the stepper then shows
no reference) rather than guess: slogdet of a singular matrix; LU factors whose U is
singular (lu, lu_factor, lu_solve); a triangular_solve with a zero on the diagonal;
lu_unpack(unpack_data=False), whose empty L and U torch cannot differentiate either.

Known disagreement with torch 2.13, by design: det of an exactly singular matrix, where
torch returns zeros but the gradient is the (nonzero, for rank n-1) cofactor matrix.
LU without pivoting (``pivot=False``, CUDA only) is handled as P = I but untested here.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import checked_inv, diag_embed, grad_or_zeros, mT, needs
from gradviz.backward.rules._examples import (
    Draw,
    batch_shape,
    draw_side,
    grad_flags,
    invertible,
    spd,
    square_shape,
    tensor,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------- inverse and determinants


def _inv_example(draw: Draw) -> Case:
    x = invertible(draw, square_shape(draw))
    how = draw(st.sampled_from([torch.linalg.inv, torch.linalg.inv_ex, torch.inverse]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgInvExBackward0",
    formula=r"X = A^{-1}:\quad \bar{A} = -X^\top \bar{X} X^\top",
    example=_inv_example,
)
def _inverse(ctx: RuleContext):
    x = ctx["inverse"]
    return (-mT(x) @ ctx.grad @ mT(x),)


def _det_example(draw: Draw) -> Case:
    x = invertible(draw, square_shape(draw))
    how = draw(st.sampled_from([torch.linalg.det, torch.det]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgDetBackward0",
    formula=r"y = \det A,\ A = U \Sigma V^\top:\quad \bar{A} = \bar{y}\,\operatorname{cof}(A) = "
            r"\bar{y}\,\det(U)\det(V)\; U \operatorname{diag}\Bigl(\textstyle\prod_{j \ne i} "
            r"\sigma_j\Bigr) V^\top",
    example=_det_example,
    note="Exact for singular matrices too (the cofactor matrix), "
    "where autograd 2.13 returns zeros.",
)
def _det(ctx: RuleContext):
    # The cofactor matrix det(A) A^{-T}, written through the SVD so that it stays exact
    # (and nonzero for rank n-1) when A is singular.
    u, s, vh = np.linalg.svd(ctx["A"])
    ones = np.ones((*s.shape[:-1], 1))
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], -1), -1)
    after = np.flip(np.cumprod(np.flip(np.concatenate([s[..., 1:], ones], -1), -1), -1), -1)
    sign = np.linalg.det(u) * np.linalg.det(vh)
    cof = (u * (before * after)[..., None, :]) @ vh
    return ((ctx.grad * sign)[..., None, None] * cof,)


def _slogdet_example(draw: Draw) -> Case:
    how = draw(st.sampled_from(["linalg.slogdet", "slogdet", "logdet of SPD"]), label="how")
    if how == "logdet of SPD":
        # logdet is nan for a negative determinant; on an SPD matrix it is log|det|.
        return Case(inputs=(spd(draw, square_shape(draw)),), fn=torch.logdet)
    x = invertible(draw, square_shape(draw))
    return Case(inputs=(x,), fn=torch.linalg.slogdet if how == "linalg.slogdet" else torch.slogdet)


@rule(
    "LinalgSlogdetBackward0",
    formula=r"(s, \ell) = (\operatorname{sign}\det A,\ \log|\det A|):\quad \bar{A} = \bar{\ell}\, "
            r"A^{-\top}\ \ (s \text{ is piecewise constant})",
    example=_slogdet_example,
)
def _slogdet(ctx: RuleContext):
    if np.any(ctx["sign"] == 0):
        raise ValueError("slogdet of a singular matrix: log|det| is -inf, no gradient")
    g = grad_or_zeros(ctx, 1)
    return (g[..., None, None] * mT(checked_inv(ctx["A"], "slogdet")),)


# ---------------------------------------------------------------- solves


def _solve_example(draw: Draw) -> Case:
    n, k = draw_side(draw), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    how = draw(st.sampled_from(["matrix", "vector", "right", "broadcast"]), label="rhs")
    batch = batch_shape(draw)
    a = invertible(draw, (*batch, n, n), requires_grad=rg[0])
    if how == "vector":
        # A batch of vectors (*, n), or one vector (n,) broadcast over A's batch.
        vshape = draw(st.sampled_from([(*batch, n), (n,)]), label="vector shape")
        b = tensor(draw, vshape, requires_grad=rg[1])
    elif how == "right":
        b = tensor(draw, (*batch, k, n), requires_grad=rg[1])
        return Case(inputs=(a, b), fn=lambda a, b: torch.linalg.solve(a, b, left=False))
    elif how == "broadcast":
        b = tensor(draw, (2, *(1 for _ in batch), n, k), requires_grad=rg[1])
    else:
        b = tensor(draw, (*batch, n, k), requires_grad=rg[1])
    if draw(st.booleans(), label="solve_ex"):
        return Case(inputs=(a, b), fn=torch.linalg.solve_ex)
    return Case(inputs=(a, b), fn=torch.linalg.solve)


@rule(
    "LinalgSolveExBackward0",
    formula=r"A X = B:\quad \bar{B} = A^{-\top} \bar{X},\ \ \bar{A} = -\bar{B} X^\top\qquad (X A = "
            r"B:\ \bar{B} = \bar{X} A^{-\top},\ \ \bar{A} = -X^\top \bar{B})",
    example=_solve_example,
)
def _solve(ctx: RuleContext):
    a, x, g = ctx["A"], ctx["result"], ctx.grad
    # A vector right-hand side gives X one dim fewer than A (a matrix one never does).
    vector = x.ndim == a.ndim - 1
    if vector:
        x, g = x[..., None], g[..., None]
    if ctx["left"]:
        b_grad = np.linalg.solve(mT(a), g)
        a_grad = -b_grad @ mT(x)
    else:
        b_grad = mT(np.linalg.solve(a, mT(g)))
        a_grad = -mT(x) @ b_grad
    if vector:
        b_grad = b_grad[..., 0]
    return (a_grad if needs(ctx, 0) else None, b_grad if needs(ctx, 1) else None)


def _solve_triangular_example(draw: Draw) -> Case:
    n, k = draw_side(draw), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    upper, left, unit = (draw(st.booleans(), label=lbl) for lbl in ("upper", "left", "unit"))
    batch = batch_shape(draw)
    # The full matrix is the input; the solve reads only its upper or lower triangle.
    a = invertible(draw, (*batch, n, n), requires_grad=rg[0])
    b_batch = draw(st.sampled_from([batch, (2, *(1 for _ in batch))]), label="b batch")
    b = tensor(draw, (*b_batch, n, k) if left else (*b_batch, k, n), requires_grad=rg[1])
    return Case(
        inputs=(a, b),
        fn=lambda a, b: torch.linalg.solve_triangular(
            a, b, upper=upper, left=left, unitriangular=unit
        ),
    )


@rule(
    "LinalgSolveTriangularBackward0",
    formula=r"T X = B,\ T = \operatorname{triu/tril}(A):\quad \bar{B} = T^{-\top} \bar{X},\ \ "
            r"\bar{A} = \operatorname{triu/tril}(-\bar{B} X^\top)\ \ (\text{strict if "
            r"unitriangular; } X T = B \text{ likewise})",
    example=_solve_triangular_example,
)
def _solve_triangular(ctx: RuleContext):
    a, x, g = ctx["self"], ctx["result"], ctx.grad
    upper, unit = ctx["upper"], ctx["unitriangular"]
    t = _triangle(a, upper, unit)
    if ctx["left"]:
        b_grad = np.linalg.solve(mT(t), g)
        a_grad = -b_grad @ mT(x)
    else:
        b_grad = mT(np.linalg.solve(t, mT(g)))
        a_grad = -mT(x) @ b_grad
    a_part = _triangle_part(a_grad, upper, unit) if needs(ctx, 0) else None
    return (a_part, b_grad if needs(ctx, 1) else None)


def _triangle(a: np.ndarray, upper: bool, unit: bool) -> np.ndarray:
    """The triangular matrix a triangular solve reads from A."""
    t = np.triu(a) if upper else np.tril(a)
    if unit:
        # The diagonal is taken as ones and never read, so it gets no gradient either.
        t = t - diag_embed(np.diagonal(t, 0, -2, -1)) + np.eye(t.shape[-1])
    return t


def _triangle_part(g: np.ndarray, upper: bool, unit: bool) -> np.ndarray:
    """The part of a gradient on A that reaches the entries `_triangle` reads."""
    k = int(unit)
    return np.triu(g, k) if upper else np.tril(g, -k)


def _triangular_solve_example(draw: Draw) -> Case:
    n, k = draw_side(draw), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    upper, transpose, unit = (
        draw(st.booleans(), label=lbl) for lbl in ("upper", "transpose", "unit")
    )
    batch = batch_shape(draw)
    a = invertible(draw, (*batch, n, n), requires_grad=rg[0])
    b_batch = draw(st.sampled_from([batch, (2, *(1 for _ in batch))]), label="b batch")
    b = tensor(draw, (*b_batch, n, k), requires_grad=rg[1])
    out = draw(st.sampled_from(["both", "solution", "coefficient"]), label="outputs")
    pick = {"both": slice(0, 2), "solution": slice(0, 1), "coefficient": slice(1, 2)}[out]

    def fn(b, a):
        # torch.triangular_solve is deprecated (and warns) but still builds its own node.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = torch.triangular_solve(b, a, upper=upper, transpose=transpose, unitriangular=unit)
        return tuple(res)[pick]

    return Case(inputs=(b, a), fn=fn)


@rule(
    "TriangularSolveBackward0",
    formula=r"\operatorname{op}(T) X = B,\ T = \operatorname{triu/tril}(A),\ C = A:\quad \bar{B} = "
            r"\operatorname{op}(T)^{-\top} \bar{X},\ \ \bar{A} = "
            r"\operatorname{triu/tril}\bigl(\operatorname{op}(-\bar{B} X^\top)\bigr) + \bar{C}\ \ "
            r"(\operatorname{op} = \text{transpose or not; strict if unitriangular})",
    example=_triangular_solve_example,
)
def _triangular_solve(ctx: RuleContext):
    a, x, g = ctx["A"], ctx["solution"], grad_or_zeros(ctx, 0)
    upper, transpose, unit = ctx["upper"], ctx["transpose"], ctx["unitriangular"]
    op = mT(_triangle(a, upper, unit)) if transpose else _triangle(a, upper, unit)
    try:
        b_grad = np.linalg.solve(mT(op), g)
    except np.linalg.LinAlgError as e:
        raise ValueError("triangular_solve: a zero on the diagonal, no solution") from e
    op_grad = -b_grad @ mT(x)
    a_grad = _triangle_part(mT(op_grad) if transpose else op_grad, upper, unit)
    # The second output is a plain copy of A: its gradient reaches all of A.
    if ctx.grad_outputs[1] is not None:
        a_grad = a_grad + ctx.grad_outputs[1]
    return (b_grad if needs(ctx, 0) else None, a_grad if needs(ctx, 1) else None)


# ---------------------------------------------------------------- LU


def _lu_permutation(pivots: np.ndarray, m: int) -> np.ndarray:
    """P^T as a matrix (P^T A = L U) from LAPACK's 1-based row swaps (..., k)."""
    piv = pivots.astype(np.int64) - 1
    perm = np.broadcast_to(np.arange(m), (*piv.shape[:-1], m)).copy()
    for idx in np.ndindex(piv.shape[:-1]):
        row = perm[idx]
        for i, j in enumerate(piv[idx]):
            row[i], row[j] = row[j], row[i]
    return (perm[..., :, None] == np.arange(m)).astype(np.float64)


def _unpack(lu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit lower L (m, k) and upper U (k, n) packed in one (m, n) matrix."""
    k = min(lu.shape[-2:])
    return np.tril(lu[..., :, :k], -1) + np.eye(lu.shape[-2], k), np.triu(lu[..., :k, :])


def _pack(gl: np.ndarray, gu: np.ndarray) -> np.ndarray:
    """The gradients of L and U put back in the packed matrix's places."""
    m, k, n = gl.shape[-2], gl.shape[-1], gu.shape[-1]
    shape = np.broadcast_shapes(gl.shape[:-2], gu.shape[:-2])
    out = np.zeros((*shape, m, n))
    out[..., :, :k] += np.tril(gl, -1)
    out[..., :k, :] += np.triu(gu)
    return out


def _lu_grad(low: np.ndarray, up: np.ndarray, gl: np.ndarray, gu: np.ndarray) -> np.ndarray:
    """The gradient reaching C = L U (so A = P C) from those of L (m, k) and U (k, n).

    With L = [L1; L2], U = [U1 U2] (L1, U1 square, k = min(m, n)) and the free entries
    of L (strictly lower) and U (upper) only:
    M = tril_{-1}(L1^T gL1 - gU2 U2^T) + triu(gU1 U1^T - L2^T gL2),
    gC = [[L1^{-T} M U1^{-T}, L1^{-T} gU2], [gL2 U1^{-T}, 0]].
    """
    k = low.shape[-1]
    gl, gu = np.tril(gl, -1), np.triu(gu)
    l1, l2, gl1, gl2 = low[..., :k, :], low[..., k:, :], gl[..., :k, :], gl[..., k:, :]
    u1, u2, gu1, gu2 = up[..., :, :k], up[..., :, k:], gu[..., :, :k], gu[..., :, k:]
    mm = np.tril(mT(l1) @ gl1 - gu2 @ mT(u2), -1) + np.triu(gu1 @ mT(u1) - mT(l2) @ gl2)
    try:
        top = np.linalg.solve(mT(l1), np.concatenate([mm, gu2], -1))
        left = mT(np.linalg.solve(u1, mT(np.concatenate([top[..., :, :k], gl2], -2))))
    except np.linalg.LinAlgError as e:
        raise ValueError("LU of a singular matrix: U is singular, the factors are not "
                         "differentiable") from e
    out = np.zeros((*left.shape[:-2], low.shape[-2], up.shape[-1]))
    out[..., :, :k] = left
    out[..., :k, k:] = top[..., :, k:]
    return out


def _lu_example(draw: Draw) -> torch.Tensor:
    """A (..., m, n) with a well-conditioned leading square block, kept or permuted."""
    batch, m, n = batch_shape(draw), draw_side(draw, "m"), draw_side(draw, "n")
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)
    if draw(st.booleans(), label="shuffle rows"):  # so that the pivoting swaps rows
        a = a[..., torch.randperm(m, generator=torch.Generator().manual_seed(m)), :]
    return a.requires_grad_()


def _lu_factor_example(draw: Draw) -> Case:
    a = _lu_example(draw)
    how = draw(st.sampled_from(["lu_factor", "lu_factor_ex", "torch.lu"]), label="how")
    if how == "lu_factor":
        return Case(inputs=(a,), fn=lambda a: torch.linalg.lu_factor(a)[0])
    if how == "lu_factor_ex":
        return Case(inputs=(a,), fn=lambda a: torch.linalg.lu_factor_ex(a)[0])

    def old_lu(a):
        with warnings.catch_warnings():  # torch.lu is deprecated
            warnings.simplefilter("ignore")
            return torch.lu(a)[0]

    return Case(inputs=(a,), fn=old_lu)


@rule(
    "LinalgLuFactorExBackward0",
    formula=r"PA = LU \text{ packed in } F = \operatorname{tril}_{-1}L + U:\quad \bar{A} = P "
            r"\bar{C}\bigl(\bar{L} = \operatorname{tril}_{-1}\bar{F},\ \bar{U} = "
            r"\operatorname{triu}\bar{F}\bigr),\ \ \bar{C} = "
            r"L^{-\top}\bigl(\operatorname{tril}_{-1}(L^\top\bar{L}) + "
            r"\operatorname{triu}(\bar{U}U^\top)\bigr)U^{-\top}\ (\text{square; see } "
            r"\texttt{\_lu\_grad})",
    example=_lu_factor_example,
)
def _lu_factor(ctx: RuleContext):
    lu, g = ctx["LU"], ctx.grad
    m, n = lu.shape[-2:]
    k = min(m, n)
    low, up = _unpack(lu)
    pt = _lu_permutation(ctx["pivots"], m) if ctx["pivot"] else np.eye(m)
    return (mT(pt) @ _lu_grad(low, up, g[..., :, :k], g[..., :k, :]),)


def _linalg_lu_example(draw: Draw) -> Case:
    a = _lu_example(draw)
    out = draw(st.sampled_from(["L, U", "L", "U"]), label="outputs")
    pick = {"L, U": slice(1, 3), "L": slice(1, 2), "U": slice(2, 3)}[out]
    return Case(inputs=(a,), fn=lambda a: tuple(torch.linalg.lu(a))[pick])


@rule(
    "LinalgLuBackward0",
    formula=r"A = PLU:\quad \bar{A} = P \bar{C},\ \ \bar{C} = "
            r"L^{-\top}\bigl(\operatorname{tril}_{-1}(L^\top\bar{L}) + "
            r"\operatorname{triu}(\bar{U}U^\top)\bigr)U^{-\top}\ (\text{square; wide and tall see "
            r"} \texttt{\_lu\_grad})",
    example=_linalg_lu_example,
)
def _linalg_lu(ctx: RuleContext):
    low, up = ctx["L"], ctx["U"]
    perm = ctx["P"] if ctx["pivot"] else np.eye(low.shape[-2])
    return (perm @ _lu_grad(low, up, grad_or_zeros(ctx, 0), grad_or_zeros(ctx, 1)),)


def _lu_unpack_example(draw: Draw) -> Case:
    # lu_unpack only repacks: differentiate it straight from the packed factor.
    lu = _lu_example(draw)
    pivots = torch.linalg.lu_factor(lu.detach())[1]
    out = draw(st.sampled_from(["L, U", "L", "U"]), label="outputs")
    pick = {"L, U": slice(1, 3), "L": slice(1, 2), "U": slice(2, 3)}[out]
    return Case(inputs=(lu,), fn=lambda lu: tuple(torch.lu_unpack(lu, pivots))[pick])


@rule(
    "LuUnpackBackward0",
    formula=r"L = \operatorname{tril}_{-1}F + I,\ U = \operatorname{triu}F:\quad \bar{F} = "
            r"\operatorname{tril}_{-1}\bar{L} + \operatorname{triu}\bar{U}",
    example=_lu_unpack_example,
)
def _lu_unpack(ctx: RuleContext):
    if any(len(s) < 2 for s in ctx.output_shapes):
        raise ValueError("lu_unpack(unpack_data=False) returns empty L and U: there is nothing to "
                         "differentiate")
    return (_pack(grad_or_zeros(ctx, 0), grad_or_zeros(ctx, 1)),)


def _lu_solve_example(draw: Draw) -> Case:
    n, k = draw_side(draw), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    batch = batch_shape(draw)
    a = invertible(draw, (*batch, n, n), requires_grad=False)
    if draw(st.booleans(), label="shuffle rows"):
        a = a[..., torch.randperm(n, generator=torch.Generator().manual_seed(n)), :]
    lu, pivots = torch.linalg.lu_factor(a)
    lu.requires_grad_(rg[0])
    left, adjoint = draw(st.booleans(), label="left"), draw(st.booleans(), label="adjoint")
    b_batch = draw(st.sampled_from([batch, (2, *(1 for _ in batch))]), label="b batch")
    b = tensor(draw, (*b_batch, n, k) if left else (*b_batch, k, n), requires_grad=rg[1])
    if left and not adjoint and draw(st.booleans(), label="torch.lu_solve"):
        def old(lu, b):
            with warnings.catch_warnings():  # torch.lu_solve is deprecated
                warnings.simplefilter("ignore")
                return torch.lu_solve(b, lu, pivots)
        return Case(inputs=(lu, b), fn=old)
    return Case(
        inputs=(lu, b),
        fn=lambda lu, b: torch.linalg.lu_solve(lu, pivots, b, left=left, adjoint=adjoint),
    )


@rule(
    "LinalgLuSolveBackward0",
    formula=r"A = PLU,\ \operatorname{op}(A) X = B:\quad \bar{B} = "
            r"\operatorname{op}(A)^{-\top}\bar{X},\ \ \bar{A} = "
            r"\operatorname{op}(-\bar{B}X^\top),\ \ \bar{F} = \operatorname{tril}_{-1}(P^\top "
            r"\bar{A} U^\top) + \operatorname{triu}(L^\top P^\top \bar{A})\ \ (X "
            r"\operatorname{op}(A) = B \text{ likewise})",
    example=_lu_solve_example,
)
def _lu_solve(ctx: RuleContext):
    lu, x, g = ctx["LU"], ctx["result"], ctx.grad
    low, up = _unpack(lu)
    pt = _lu_permutation(ctx["pivots"], lu.shape[-2])
    a = mT(pt) @ low @ up
    op = mT(a) if ctx["adjoint"] else a
    try:
        if ctx["left"]:
            b_grad = np.linalg.solve(mT(op), g)
            op_grad = -b_grad @ mT(x)
        else:
            b_grad = mT(np.linalg.solve(op, mT(g)))
            op_grad = -mT(x) @ b_grad
    except np.linalg.LinAlgError as e:
        raise ValueError("lu_solve with a singular U: no solution") from e
    c_grad = pt @ (mT(op_grad) if ctx["adjoint"] else op_grad)  # the gradient of C = L U
    lu_grad = _pack(c_grad @ mT(up), mT(low) @ c_grad)
    return (lu_grad if needs(ctx, 0) else None, b_grad if needs(ctx, 1) else None)

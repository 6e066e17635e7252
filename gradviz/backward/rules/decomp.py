"""Matrix functions and decompositions: inverse, determinants, solves, Cholesky, eigh, SVD, QR,
pseudo-inverse, least squares, LU, Householder products, matrix exponential, pairwise
distances (cdist) and the cross product.

Node types: LinalgInvExBackward0, LinalgDetBackward0, LinalgSlogdetBackward0,
LinalgSolveExBackward0, LinalgSolveTriangularBackward0, TriangularSolveBackward0
(deprecated ``torch.triangular_solve``), LinalgCholeskyExBackward0, CholeskyBackward0
(deprecated ``torch.cholesky``), LinalgEighBackward0, LinalgSvdBackward0,
LinalgQrBackward0, LinalgPinvBackward0, LinalgLstsqBackward0, LinalgLuFactorExBackward0
(also ``torch.lu``), LinalgLuBackward0, LuUnpackBackward0, LinalgLuSolveBackward0 (also
``torch.lu_solve``), LinalgHouseholderProductBackward0 (also ``torch.orgqr``),
OrmqrBackward0, LinalgMatrixExpBackward0, CdistBackward0, EuclideanDistBackward0 (cdist
with p = 2 past 25 rows, or ``compute_mode="use_mm_for_euclid_dist"``) and
LinalgCrossBackward0 (also ``torch.cross``). Matrix norms, cond, matrix_power, multi_dot,
vecdot, kron, tensorinv/tensorsolve and vander build their graphs from other nodes.

Forward values come from the nodes' saved attributes: ``inverse`` (inv); ``A`` (det,
slogdet, solve; the LU factors they also save are not used), ``sign`` (slogdet),
``result`` and ``left`` (solve); ``self``, ``result``, ``upper``, ``left``,
``unitriangular`` (solve_triangular); ``A``, ``solution``, ``upper``, ``transpose``,
``unitriangular`` (triangular_solve; the right-hand side ``self`` is not used); the factor
``L`` (which is U when ``upper``; ``result`` for torch.cholesky);
``eigenvalues``/``eigenvectors`` (eigh, also saved for eigvalsh); ``U``, ``S``, ``Vh``,
``full_matrices`` (svd, also saved for svdvals); ``Q``, ``R``, ``mode`` (qr); ``self`` and
``result`` (pinv); ``self``, ``b``, ``solution`` (lstsq); the packed ``LU`` with LAPACK's
1-based ``pivots`` (lu_factor, lu_solve, with ``result``, ``left``, ``adjoint``); ``P``,
``L``, ``U`` (lu); nothing but the output shapes (lu_unpack); ``input``, ``tau`` (Householder
product; ``self``, ``input2``, ``input3``, ``left``, ``transpose`` for ormqr); ``self``
(matrix_exp); ``x1``, ``x2``, ``p``, ``result`` (cdist; ``x1``, ``x2``, ``result`` for the
Euclidean path, whose batch dims cdist has already broadcast and flattened); ``self``,
``other``, ``dim`` (cross; a negative dim comes saved as its unsigned 64-bit wrap).

Where the derivative does not exist these rules raise ValueError (the stepper then shows
no reference) rather than guess: slogdet of a singular matrix; eigh/svd vector gradients
with repeated eigen/singular values (and a zero singular value for a non-square svd);
gradients reaching the extra columns of ``svd(full_matrices=True)`` (not determined by
A; torch silently drops them); qr with ``mode="r"`` or ``mode="complete"`` of a tall
matrix (torch refuses too); pinv and lstsq of a rank-deficient or cutoff-truncated matrix
(not differentiable there; an ``rcond`` that cuts singular values off counts too); LU factors whose U is singular (lu, lu_factor, lu_solve); a
triangular_solve with a zero on the diagonal; lu_unpack(unpack_data=False), whose empty L
and U torch cannot differentiate either. Conventions at kinks follow autograd's
norms: cdist (both paths) sends nothing through a zero distance (nor, for p < 1, through a
zero coordinate difference), and for p = inf tied coordinates share the gradient evenly,
as ``vector_norm`` does. The Euclidean path computes d = sqrt(max(|x|^2 + |y|^2 - 2 x.y,
0)); the rule divides by that saved d but takes x - y exactly, so for equal rows whose
rounded d is a tiny positive number (rather than 0) it sends 0, where torch's expanded
form leaves round-off of order eps |x| / d (measured below 1e-7 of the gradient).

Not covered (no rule): LinalgEigBackward0 (eig/eigvals always produce complex tensors,
which the rules do not handle); CholeskySolveBackward0 and CholeskyInverseBackward0
(the forward reads only one triangle of the factor, but torch 2.13 also sends gradient to
the other, so a rule exact to the forward cannot agree with torch); GeqrfBackward0 and
ldl_factor (torch has no backward for them).

Known disagreements with torch 2.13, by design: det of an exactly singular matrix, where
torch returns zeros but the gradient is the (nonzero, for rank n-1) cofactor matrix; and
cdist with p = inf at ties, where torch gives every tied coordinate the full gradient.
``pinv(hermitian=True)`` is assumed to get a symmetric input (the flag is not saved).
LU without pivoting (``pivot=False``, CUDA only) is handled as P = I but untested here.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule
from gradviz.backward.rules.linalg import _grad_flags, _needs, _side

# ---------------------------------------------------------------- helpers


def _T(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _diag(v: np.ndarray) -> np.ndarray:
    """Batched diag_embed: (..., n) -> (..., n, n)."""
    return v[..., :, None] * np.eye(v.shape[-1])


def _grad_or_zeros(ctx: RuleContext, i: int) -> np.ndarray:
    g = ctx.grad_outputs[i] if i < len(ctx.grad_outputs) else None
    return np.zeros(ctx.output_shapes[i]) if g is None else g


def _inv(a: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"{what}: the matrix is singular, the gradient does not exist") from e


def _batch(draw: Draw) -> tuple[int, ...]:
    return shape(draw, min_dims=0, max_dims=2, max_side=2)


def _square(draw: Draw) -> tuple[int, ...]:
    n = _side(draw)
    return (*_batch(draw), n, n)


def _invertible(draw: Draw, s: tuple[int, ...], requires_grad: bool = True) -> torch.Tensor:
    """(..., n, n) entries in [-1, 1] plus ±(n+1) on the diagonal: strictly diagonally
    dominant (so well conditioned), with determinants of both signs."""
    n = s[-1]
    a = tensor(draw, s, low=-1.0, high=1.0, requires_grad=False)
    signs = torch.where(tensor(draw, s[:-1], requires_grad=False) >= 0, 1.0, -1.0)
    return (a + (n + 1) * torch.diag_embed(signs)).requires_grad_(requires_grad)


def _spd(draw: Draw, s: tuple[int, ...]) -> torch.Tensor:
    a = tensor(draw, s, low=-1.0, high=1.0, requires_grad=False)
    return (a @ a.mT + torch.eye(s[-1], dtype=torch.float64)).requires_grad_()


def _orthogonal(draw: Draw, batch: tuple[int, ...], n: int) -> torch.Tensor:
    return torch.linalg.qr(tensor(draw, (*batch, n, n), requires_grad=False)).Q


def _separated(draw: Draw, batch: tuple[int, ...], n: int, low: float) -> torch.Tensor:
    """n values, increasing from `low` in steps of at least 0.5 (distinct eigen/singular values)."""
    steps = tensor(draw, (*batch, n), low=0.5, high=1.5, requires_grad=False)
    return low + steps.cumsum(-1)


# ---------------------------------------------------------------- inverse and determinants


def _inv_example(draw: Draw) -> Case:
    x = _invertible(draw, _square(draw))
    how = draw(st.sampled_from([torch.linalg.inv, torch.linalg.inv_ex, torch.inverse]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgInvExBackward0",
    formula=r"X = A^{-1}:\quad \bar{A} = -X^\top \bar{X} X^\top",
    example=_inv_example,
)
def _inverse(ctx: RuleContext):
    x = ctx["inverse"]
    return (-_T(x) @ ctx.grad @ _T(x),)


def _det_example(draw: Draw) -> Case:
    x = _invertible(draw, _square(draw))
    how = draw(st.sampled_from([torch.linalg.det, torch.det]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgDetBackward0",
    formula=r"y = \det A,\ A = U \Sigma V^\top:\quad \bar{A} = \bar{y}\,\operatorname{cof}(A) = \bar{y}\,\det(U)\det(V)\; U \operatorname{diag}\Bigl(\textstyle\prod_{j \ne i} \sigma_j\Bigr) V^\top",
    example=_det_example,
    note="Exact for singular matrices too (the cofactor matrix), where autograd 2.13 returns zeros.",
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
        return Case(inputs=(_spd(draw, _square(draw)),), fn=torch.logdet)
    x = _invertible(draw, _square(draw))
    return Case(inputs=(x,), fn=torch.linalg.slogdet if how == "linalg.slogdet" else torch.slogdet)


@rule(
    "LinalgSlogdetBackward0",
    formula=r"(s, \ell) = (\operatorname{sign}\det A,\ \log|\det A|):\quad \bar{A} = \bar{\ell}\, A^{-\top}\ \ (s \text{ is piecewise constant})",
    example=_slogdet_example,
)
def _slogdet(ctx: RuleContext):
    if np.any(ctx["sign"] == 0):
        raise ValueError("slogdet of a singular matrix: log|det| is -inf, no gradient")
    g = _grad_or_zeros(ctx, 1)
    return (g[..., None, None] * _T(_inv(ctx["A"], "slogdet")),)


# ---------------------------------------------------------------- solves


def _solve_example(draw: Draw) -> Case:
    n, k = _side(draw), _side(draw, "k")
    rg = _grad_flags(draw, 2)
    how = draw(st.sampled_from(["matrix", "vector", "right", "broadcast"]), label="rhs")
    batch = _batch(draw)
    a = _invertible(draw, (*batch, n, n), requires_grad=rg[0])
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
    formula=r"A X = B:\quad \bar{B} = A^{-\top} \bar{X},\ \ \bar{A} = -\bar{B} X^\top\qquad (X A = B:\ \bar{B} = \bar{X} A^{-\top},\ \ \bar{A} = -X^\top \bar{B})",
    example=_solve_example,
)
def _solve(ctx: RuleContext):
    a, x, g = ctx["A"], ctx["result"], ctx.grad
    # A vector right-hand side gives X one dim fewer than A (a matrix one never does).
    vector = x.ndim == a.ndim - 1
    if vector:
        x, g = x[..., None], g[..., None]
    if ctx["left"]:
        b_grad = np.linalg.solve(_T(a), g)
        a_grad = -b_grad @ _T(x)
    else:
        b_grad = _T(np.linalg.solve(a, _T(g)))
        a_grad = -_T(x) @ b_grad
    if vector:
        b_grad = b_grad[..., 0]
    return (a_grad if _needs(ctx, 0) else None, b_grad if _needs(ctx, 1) else None)


def _solve_triangular_example(draw: Draw) -> Case:
    n, k = _side(draw), _side(draw, "k")
    rg = _grad_flags(draw, 2)
    upper, left, unit = (draw(st.booleans(), label=lbl) for lbl in ("upper", "left", "unit"))
    batch = _batch(draw)
    # The full matrix is the input; the solve reads only its upper or lower triangle.
    a = _invertible(draw, (*batch, n, n), requires_grad=rg[0])
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
    formula=r"T X = B,\ T = \operatorname{triu/tril}(A):\quad \bar{B} = T^{-\top} \bar{X},\ \ \bar{A} = \operatorname{triu/tril}(-\bar{B} X^\top)\ \ (\text{strict if unitriangular; } X T = B \text{ likewise})",
    example=_solve_triangular_example,
)
def _solve_triangular(ctx: RuleContext):
    a, x, g = ctx["self"], ctx["result"], ctx.grad
    upper, unit = ctx["upper"], ctx["unitriangular"]
    t = _triangle(a, upper, unit)
    if ctx["left"]:
        b_grad = np.linalg.solve(_T(t), g)
        a_grad = -b_grad @ _T(x)
    else:
        b_grad = _T(np.linalg.solve(t, _T(g)))
        a_grad = -_T(x) @ b_grad
    return (_triangle_part(a_grad, upper, unit) if _needs(ctx, 0) else None, b_grad if _needs(ctx, 1) else None)


def _triangle(a: np.ndarray, upper: bool, unit: bool) -> np.ndarray:
    """The triangular matrix a triangular solve reads from A."""
    t = np.triu(a) if upper else np.tril(a)
    if unit:
        # The diagonal is taken as ones and never read, so it gets no gradient either.
        t = t - _diag(np.diagonal(t, 0, -2, -1)) + np.eye(t.shape[-1])
    return t


def _triangle_part(g: np.ndarray, upper: bool, unit: bool) -> np.ndarray:
    """The part of a gradient on A that reaches the entries `_triangle` reads."""
    k = int(unit)
    return np.triu(g, k) if upper else np.tril(g, -k)


def _triangular_solve_example(draw: Draw) -> Case:
    n, k = _side(draw), _side(draw, "k")
    rg = _grad_flags(draw, 2)
    upper, transpose, unit = (draw(st.booleans(), label=lbl) for lbl in ("upper", "transpose", "unit"))
    batch = _batch(draw)
    a = _invertible(draw, (*batch, n, n), requires_grad=rg[0])
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
    formula=r"\operatorname{op}(T) X = B,\ T = \operatorname{triu/tril}(A),\ C = A:\quad \bar{B} = \operatorname{op}(T)^{-\top} \bar{X},\ \ \bar{A} = \operatorname{triu/tril}\bigl(\operatorname{op}(-\bar{B} X^\top)\bigr) + \bar{C}\ \ (\operatorname{op} = \text{transpose or not; strict if unitriangular})",
    example=_triangular_solve_example,
)
def _triangular_solve(ctx: RuleContext):
    a, x, g = ctx["A"], ctx["solution"], _grad_or_zeros(ctx, 0)
    upper, transpose, unit = ctx["upper"], ctx["transpose"], ctx["unitriangular"]
    op = _T(_triangle(a, upper, unit)) if transpose else _triangle(a, upper, unit)
    try:
        b_grad = np.linalg.solve(_T(op), g)
    except np.linalg.LinAlgError as e:
        raise ValueError("triangular_solve: a zero on the diagonal, no solution") from e
    op_grad = -b_grad @ _T(x)
    a_grad = _triangle_part(_T(op_grad) if transpose else op_grad, upper, unit)
    # The second output is a plain copy of A: its gradient reaches all of A.
    if ctx.grad_outputs[1] is not None:
        a_grad = a_grad + ctx.grad_outputs[1]
    return (b_grad if _needs(ctx, 0) else None, a_grad if _needs(ctx, 1) else None)


# ---------------------------------------------------------------- Cholesky


def _cholesky_example(draw: Draw) -> Case:
    x = _spd(draw, _square(draw))
    upper = draw(st.booleans(), label="upper")
    if draw(st.booleans(), label="cholesky_ex"):
        return Case(inputs=(x,), fn=lambda x: torch.linalg.cholesky_ex(x, upper=upper))
    return Case(inputs=(x,), fn=lambda x: torch.linalg.cholesky(x, upper=upper))


@rule(
    "LinalgCholeskyExBackward0",
    formula=r"A = L L^\top:\quad S = L^{-\top} \Phi(L^\top \bar{L}) L^{-1},\ \ \bar{A} = \tfrac12 (S + S^\top),\ \ \Phi = \text{lower triangle, halved diagonal}",
    example=_cholesky_example,
    note="The symmetric gradient: A is taken as symmetric, so only symmetric changes of A count.",
)
def _cholesky(ctx: RuleContext):
    return (_cholesky_grad(ctx["L"], ctx.grad, ctx["upper"]),)


def _cholesky_grad(factor: np.ndarray, g: np.ndarray, upper: bool) -> np.ndarray:
    # upper=True returns (and saves) U = L^T, so its gradient is the transposed one.
    low, g = (_T(factor), _T(g)) if upper else (factor, g)
    p = np.tril(_T(low) @ g)
    p = p - 0.5 * _diag(np.diagonal(p, 0, -2, -1))
    inv = _inv(low, "cholesky")
    s = _T(inv) @ p @ inv
    return 0.5 * (s + _T(s))


def _old_cholesky_example(draw: Draw) -> Case:
    x = _spd(draw, _square(draw))
    upper = draw(st.booleans(), label="upper")

    def fn(x):
        # torch.cholesky is deprecated (and warns) but still builds its own node.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.cholesky(x, upper=upper)

    return Case(inputs=(x,), fn=fn)


@rule(
    "CholeskyBackward0",
    formula=r"A = L L^\top\ (\text{or } U^\top U):\quad S = L^{-\top} \Phi(L^\top \bar{L}) L^{-1},\ \ \bar{A} = \tfrac12 (S + S^\top),\ \ \Phi = \text{lower triangle, halved diagonal}",
    example=_old_cholesky_example,
    note="The symmetric gradient, as for linalg.cholesky.",
)
def _old_cholesky(ctx: RuleContext):
    return (_cholesky_grad(ctx["result"], ctx.grad, ctx["upper"]),)


# ---------------------------------------------------------------- symmetric eigendecomposition


def _eigh_example(draw: Draw) -> Case:
    batch, n = _batch(draw), _side(draw)
    q = _orthogonal(draw, batch, n)
    w = _separated(draw, batch, n, low=-3.0)
    a = (q * w[..., None, :]) @ q.mT
    a = ((a + a.mT) / 2).requires_grad_()
    uplo = draw(st.sampled_from(["L", "U"]), label="UPLO")
    out = draw(st.sampled_from(["eigvalsh", "both", "values", "vectors"]), label="outputs")
    if out == "eigvalsh":
        return Case(inputs=(a,), fn=lambda a: torch.linalg.eigvalsh(a, UPLO=uplo))
    if out == "vectors":
        # A function of the eigenvectors that does not depend on their signs.
        return Case(inputs=(a,), fn=lambda a: torch.linalg.eigh(a, UPLO=uplo)[1].abs())
    if out == "values":
        return Case(inputs=(a,), fn=lambda a: torch.linalg.eigh(a, UPLO=uplo)[0])
    return Case(inputs=(a,), fn=lambda a: torch.linalg.eigh(a, UPLO=uplo))


def _gaps(values: np.ndarray, what: str) -> np.ndarray:
    """F_ij = 1 / (values_j - values_i) off the diagonal, 0 on it; refuses repeated values."""
    diff = values[..., None, :] - values[..., :, None]
    off = ~np.eye(values.shape[-1], dtype=bool)
    if np.any((diff == 0) & off):
        raise ValueError(f"{what}: repeated values, the vectors' gradient does not exist")
    return np.where(off, 1.0 / np.where(off, diff, 1.0), 0.0)


@rule(
    "LinalgEighBackward0",
    formula=r"A = V \operatorname{diag}(\lambda) V^\top:\quad \bar{A} = V \Bigl(\operatorname{diag}(\bar{\lambda}) + F \circ \tfrac12 (V^\top \bar{V} - \bar{V}^\top V)\Bigr) V^\top,\ \ F_{ij} = \frac{1}{\lambda_j - \lambda_i}\ (i \ne j)",
    example=_eigh_example,
)
def _eigh(ctx: RuleContext):
    w, v = ctx["eigenvalues"], ctx["eigenvectors"]
    gw, gv = ctx.grad_outputs[0], ctx.grad_outputs[1]
    inner = np.zeros(v.shape) if gw is None else _diag(gw)
    if gv is not None:
        k = _T(v) @ gv
        # Only the skew part of V^T gV moves V (columns stay orthonormal); F is
        # antisymmetric too, so the gradient comes out symmetric, like dA.
        inner = inner + _gaps(w, "eigh") * 0.5 * (k - _T(k))
    return (v @ inner @ _T(v),)


# ---------------------------------------------------------------- SVD


def _svd_example(draw: Draw) -> Case:
    batch, m, n = _batch(draw), _side(draw, "m"), _side(draw, "n")
    k = min(m, n)
    u, v = _orthogonal(draw, batch, m)[..., :k], _orthogonal(draw, batch, n)[..., :k]
    s = _separated(draw, batch, k, low=0.5).flip(-1)
    a = ((u * s[..., None, :]) @ v.mT).requires_grad_()
    c = tensor(draw, (k,), requires_grad=False)
    # Losses that do not depend on the signs of the singular vectors.
    out = draw(st.sampled_from(["svdvals", "S", "U c Vh", "|U|, |Vh|", "full"]), label="outputs")
    if out == "svdvals":
        return Case(inputs=(a,), fn=torch.linalg.svdvals)
    if out == "S":
        return Case(inputs=(a,), fn=lambda a: torch.linalg.svd(a, full_matrices=False)[1])
    if out == "U c Vh":
        def fn(a):
            u, s, vh = torch.linalg.svd(a, full_matrices=False)
            return (u * (s * c)[..., None, :]) @ vh
        return Case(inputs=(a,), fn=fn)
    if out == "|U|, |Vh|":
        def abs_vectors(a):
            u, _, vh = torch.linalg.svd(a, full_matrices=False)
            return u.abs(), vh.abs()
        return Case(inputs=(a,), fn=abs_vectors)

    def full(a):
        # Only the first k columns of a full U (rows of Vh) are determined by A.
        u, s, vh = torch.linalg.svd(a, full_matrices=True)
        return u[..., :k].abs(), s, vh[..., :k, :].abs()
    return Case(inputs=(a,), fn=full)


@rule(
    "LinalgSvdBackward0",
    formula=r"A = U \Sigma V^\top:\quad \bar{A} = U\Bigl(\operatorname{diag}(\bar{\sigma}) + \bigl(F \circ (U^\top\bar{U} - \bar{U}^\top U)\bigr)\Sigma + \Sigma \bigl(F \circ (V^\top\bar{V} - \bar{V}^\top V)\bigr)\Bigr)V^\top + (I - UU^\top)\bar{U}\Sigma^{-1}V^\top + U\Sigma^{-1}\bar{V}^\top(I - VV^\top),\ \ F_{ij} = \frac{1}{\sigma_j^2 - \sigma_i^2}",
    example=_svd_example,
)
def _svd(ctx: RuleContext):
    u, s, vh = ctx["U"], ctx["S"], ctx["Vh"]
    gu, gs, gvh = ctx.grad_outputs[:3]
    k = s.shape[-1]
    if ctx["full_matrices"]:
        if (gu is not None and np.any(gu[..., :, k:])) or (gvh is not None and np.any(gvh[..., k:, :])):
            raise ValueError(
                "svd(full_matrices=True): the extra columns of U / rows of Vh are not "
                "determined by A, so gradients reaching them have no meaning"
            )
        u, vh = u[..., :, :k], vh[..., :k, :]
        gu = None if gu is None else gu[..., :, :k]
        gvh = None if gvh is None else gvh[..., :k, :]
    m, n = u.shape[-2], vh.shape[-1]
    inner = np.zeros((*s.shape, k)) if gs is None else _diag(gs)
    if gu is None and gvh is None:
        return (u @ inner @ vh,)
    f = _gaps(s**2, "svd")
    extra = 0.0
    if (m > k or n > k) and np.any(s == 0):
        raise ValueError("svd of a non-square matrix with a zero singular value: no gradient")
    if gu is not None:
        j = _T(u) @ gu
        inner = inner + (f * (j - _T(j))) * s[..., None, :]
        if m > k:  # the part of gU outside span(U)
            extra = extra + ((gu - u @ j) / s[..., None, :]) @ vh
    if gvh is not None:
        kv = vh @ _T(gvh)  # V^T gV with V = Vh^T
        inner = inner + s[..., :, None] * (f * (kv - _T(kv)))
        if n > k:  # the part of gVh outside the row space of Vh
            extra = extra + u @ ((gvh - gvh @ _T(vh) @ vh) / s[..., :, None])
    return (u @ inner @ vh + extra,)


# ---------------------------------------------------------------- QR


def _qr_example(draw: Draw) -> Case:
    batch, m, n = _batch(draw), _side(draw, "m"), _side(draw, "n")
    # A bump on the leading diagonal keeps the leading min(m, n) columns well conditioned.
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = (a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)).requires_grad_()
    mode = "complete" if m <= n and draw(st.booleans(), label="complete") else "reduced"
    out = draw(st.sampled_from(["both", "Q", "R"]), label="outputs")
    pick = {"both": slice(0, 2), "Q": slice(0, 1), "R": slice(1, 2)}[out]
    return Case(inputs=(a,), fn=lambda a: tuple(torch.linalg.qr(a, mode=mode))[pick])


@rule(
    "LinalgQrBackward0",
    formula=r"A = QR\ (m \ge n):\quad M = \bar{R} R^\top - Q^\top \bar{Q},\ \ \bar{A} = \bigl(\bar{Q} + Q\,(\operatorname{triu}M + \operatorname{triu}_1 M^\top)\bigr) R^{-\top};\quad m < n:\ A = [X\,|\,Y],\ \bar{Y} = Q \bar{R}_Y,\ \bar{X} \text{ as above with } \bar{Q} + Y \bar{R}_Y^\top",
    example=_qr_example,
)
def _qr(ctx: RuleContext):
    mode, q, r = ctx["mode"], ctx["Q"], ctx["R"]
    if mode == "r":
        raise ValueError("qr(mode='r') does not keep Q, which the gradient needs")
    m, n = q.shape[-2], r.shape[-1]
    if mode == "complete" and m > n:
        raise ValueError("qr(mode='complete') of a tall matrix: the extra columns of Q are not determined by A")
    gq, gr = _grad_or_zeros(ctx, 0), _grad_or_zeros(ctx, 1)
    y_grad = None
    if m < n:
        # A = [X | Y] with X = Q R_X square and Y = Q R_Y: R_Y = Q^T Y feeds back into Q.
        r, r_y, gr, gr_y = r[..., :, :m], r[..., :, m:], gr[..., :, :m], gr[..., :, m:]
        gq = gq + (q @ r_y) @ _T(gr_y)
        y_grad = q @ gr_y
    mm = gr @ _T(r) - _T(q) @ gq
    sym = np.triu(mm) + _T(np.triu(mm, 1))
    try:  # (gQ + Q sym) R^{-T}, as a solve with R
        x_grad = _T(np.linalg.solve(r, _T(gq + q @ sym)))
    except np.linalg.LinAlgError as e:
        raise ValueError("qr of a rank-deficient matrix: R is singular, no gradient") from e
    return (x_grad if y_grad is None else np.concatenate([x_grad, y_grad], -1),)


# ---------------------------------------------------------------- Householder products


def _householder_grads(a: np.ndarray, tau: np.ndarray, gq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the reflectors' storage `a` (..., m, n) and `tau` (..., k) from that of
    the full product Q = H_1 ... H_k (..., m, m), H_i = I - tau_i v_i v_i^T, where v_i is
    column i of `a` below the diagonal with a 1 on it (nothing else of `a` is read)."""
    m, k = a.shape[-2], tau.shape[-1]
    eye = np.eye(m)
    vs = np.tril(a[..., :, :k], -1) + np.eye(m, k)
    hs = [eye - tau[..., i, None, None] * vs[..., :, i, None] * vs[..., None, :, i] for i in range(k)]
    before = [np.broadcast_to(eye, gq.shape)]  # H_1 ... H_{i-1}
    for h in hs[:-1]:
        before.append(before[-1] @ h)
    a_grad, tau_grad = np.zeros((*gq.shape[:-2], *a.shape[-2:])), np.zeros((*gq.shape[:-2], k))
    after = np.broadcast_to(eye, gq.shape)  # H_{i+1} ... H_k
    for i in reversed(range(k)):
        gh = _T(before[i]) @ gq @ _T(after)  # the gradient reaching H_i
        v = vs[..., :, i]
        tau_grad[..., i] = -np.einsum("...i,...ij,...j->...", v, gh, v)
        gv = -tau[..., i, None] * ((gh + _T(gh)) @ v[..., :, None])[..., 0]
        a_grad[..., i + 1 :, i] = gv[..., i + 1 :]
        after = hs[i] @ after
    return a_grad, tau_grad


def _reflectors(draw: Draw, m: int, n: int, k: int, rg: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _batch(draw)
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=rg[0])
    tau = tensor(draw, (*batch, k), low=0.0, high=2.0, requires_grad=rg[1])
    return a, tau


def _householder_example(draw: Draw) -> Case:
    m = _side(draw, "m")
    n = draw(st.integers(1, m), label="n")
    k = draw(st.integers(1, n), label="k")
    a, tau = _reflectors(draw, m, n, k, _grad_flags(draw, 2))
    how = draw(st.sampled_from([torch.linalg.householder_product, torch.orgqr]), label="how")
    return Case(inputs=(a, tau), fn=how)


@rule(
    "LinalgHouseholderProductBackward0",
    formula=r"Q = (H_1 \cdots H_k)_{:, :n},\ H_i = I - \tau_i v_i v_i^\top:\quad \bar{H}_i = (H_1 \cdots H_{i-1})^\top [\bar{Q}\ 0]\, (H_{i+1} \cdots H_k)^\top,\ \ \bar{\tau}_i = -v_i^\top \bar{H}_i v_i,\ \ \bar{v}_i = -\tau_i (\bar{H}_i + \bar{H}_i^\top) v_i",
    example=_householder_example,
)
def _householder(ctx: RuleContext):
    a, tau, g = ctx["input"], ctx["tau"], ctx.grad
    m, n = a.shape[-2:]
    gq = np.zeros((*g.shape[:-2], m, m))
    gq[..., :, :n] = g  # Q is the first n columns of the m x m product
    a_grad, tau_grad = _householder_grads(a, tau, gq)
    return (a_grad if _needs(ctx, 0) else None, tau_grad if _needs(ctx, 1) else None)


def _ormqr_example(draw: Draw) -> Case:
    left, transpose = draw(st.booleans(), label="left"), draw(st.booleans(), label="transpose")
    q_side, other = _side(draw, "m"), _side(draw, "other side")
    # ormqr takes exactly min(m, n) reflectors; columns past the m-th are not read.
    n = draw(st.integers(1, q_side + 1), label="n")
    rg = _grad_flags(draw, 3)
    a, tau = _reflectors(draw, q_side, n, min(q_side, n), rg)
    c_batch = tuple(a.shape[:-2])
    c = tensor(draw, (*c_batch, q_side, other) if left else (*c_batch, other, q_side), requires_grad=rg[2])
    return Case(
        inputs=(a, tau, c),
        fn=lambda a, tau, c: torch.ormqr(a, tau, c, left=left, transpose=transpose),
    )


@rule(
    "OrmqrBackward0",
    formula=r"Y = \operatorname{op}(Q) C\ (\text{or } C \operatorname{op}(Q)),\ Q = H_1 \cdots H_k:\quad \bar{C} = \operatorname{op}(Q)^\top \bar{Y},\ \ \bar{Q} = \operatorname{op}(\bar{Y} C^\top),\ \text{then } \bar{Q} \to (\bar{A}, \bar{\tau}) \text{ as for householder\_product}",
    example=_ormqr_example,
)
def _ormqr(ctx: RuleContext):
    a, tau, c, g = ctx["self"], ctx["input2"], ctx["input3"], ctx.grad
    left, transpose = ctx["left"], ctx["transpose"]
    m, k = a.shape[-2], tau.shape[-1]
    vs = np.tril(a[..., :, :k], -1) + np.eye(m, k)
    q = np.broadcast_to(np.eye(m), (*vs.shape[:-2], m, m))
    for i in range(k):
        q = q @ (np.eye(m) - tau[..., i, None, None] * vs[..., :, i, None] * vs[..., None, :, i])
    op = _T(q) if transpose else q
    if left:
        c_grad, op_grad = _T(op) @ g, g @ _T(c)
    else:
        c_grad, op_grad = g @ _T(op), _T(c) @ g
    a_grad, tau_grad = _householder_grads(a, tau, _T(op_grad) if transpose else op_grad)
    return (
        a_grad if _needs(ctx, 0) else None,
        tau_grad if _needs(ctx, 1) else None,
        c_grad if _needs(ctx, 2) else None,
    )


# ---------------------------------------------------------------- pseudo-inverse


def _pinv_example(draw: Draw) -> Case:
    batch = _batch(draw)
    if draw(st.booleans(), label="hermitian"):
        n = _side(draw)
        a = tensor(draw, (*batch, n, n), low=-1.0, high=1.0, requires_grad=False)
        a = (a + a.mT + 2 * (n + 1) * torch.eye(n, dtype=torch.float64)).requires_grad_()
        return Case(inputs=(a,), fn=lambda a: torch.linalg.pinv(a, hermitian=True))
    m, n = _side(draw, "m"), _side(draw, "n")
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = (a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)).requires_grad_()
    how = draw(st.sampled_from([torch.linalg.pinv, torch.pinverse]), label="how")
    return Case(inputs=(a,), fn=how)


@rule(
    "LinalgPinvBackward0",
    formula=r"P = A^{+}:\quad \bar{A} = -P^\top \bar{P} P^\top + (I - AP)\,\bar{P}^\top P P^\top + P^\top P\,\bar{P}^\top (I - PA)",
    example=_pinv_example,
    note="Full-rank inputs only: pinv jumps where the rank changes.",
)
def _pinv(ctx: RuleContext):
    a, p = ctx["self"], ctx["result"]
    if np.any(np.linalg.matrix_rank(p) < min(a.shape[-2:])):
        raise ValueError("pinv of a rank-deficient (or cutoff-truncated) matrix: not differentiable")
    return (_pinv_grad(a, p, ctx.grad),)


def _pinv_grad(a: np.ndarray, p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient reaching A from that of P = A^+ (A of full rank)."""
    m, n = a.shape[-2], a.shape[-1]
    return (
        -_T(p) @ g @ _T(p)
        + (np.eye(m) - a @ p) @ _T(g) @ p @ _T(p)
        + _T(p) @ p @ _T(g) @ (np.eye(n) - p @ a)
    )


def _lstsq_example(draw: Draw) -> Case:
    batch, m, n, k = _batch(draw), _side(draw, "m"), _side(draw, "n"), _side(draw, "k")
    rg = _grad_flags(draw, 2)
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = (a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)).requires_grad_(rg[0])
    how = draw(st.sampled_from(["matrix", "vector", "broadcast"]), label="rhs")
    if how == "vector":
        b = tensor(draw, (*batch, m), requires_grad=rg[1])
    elif how == "broadcast":
        b = tensor(draw, (*(1 for _ in batch), m, k), requires_grad=rg[1])
    else:
        b = tensor(draw, (*batch, m, k), requires_grad=rg[1])
    # gelsy (the CPU default) returns no residuals; the others do for a tall A.
    driver = draw(st.sampled_from(["gelsy", "gelsd", "gelss", "gels"]), label="driver")
    residuals = draw(st.booleans(), label="residuals too")

    def fn(a, b):
        res = torch.linalg.lstsq(a, b, driver=driver)
        return (res.solution, res.residuals) if residuals else res.solution

    return Case(inputs=(a, b), fn=fn)


@rule(
    "LinalgLstsqBackward0",
    formula=r"X = A^{+} B,\ r = \|A X - B\|^2_{\text{columns}}:\quad \bar{B} = A^{+\top} \bar{X} - 2 (AX - B) \operatorname{diag}(\bar{r}),\ \ \bar{A} = \overline{A}_{\operatorname{pinv}}(\bar{P} = \bar{X} B^\top) + 2 (AX - B) \operatorname{diag}(\bar{r}) X^\top",
    example=_lstsq_example,
    note="Full-rank A only: the least-squares solution jumps where the rank changes.",
)
def _lstsq(ctx: RuleContext):
    a, b, x = ctx["self"], ctx["b"], ctx["solution"]
    gx, gr = _grad_or_zeros(ctx, 0), ctx.grad_outputs[1]
    if np.any(np.linalg.matrix_rank(a) < min(a.shape[-2:])):
        raise ValueError("lstsq of a rank-deficient matrix: the solution is not differentiable")
    # A vector right-hand side: (m,), or A's batch shape followed by m.
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])
    if vector:  # (the residuals keep their column dim of size 1 there)
        b, x, gx = b[..., None], x[..., None], gx[..., None]
    p = np.linalg.pinv(a)
    if np.max(np.abs(p @ b - x), initial=0.0) > 1e-3 * max(1.0, float(np.max(np.abs(x), initial=0.0))):
        raise ValueError("lstsq: the solution is not A^+ B (an rcond cutoff dropped singular values)")
    a_grad = _pinv_grad(a, p, gx @ _T(b))
    b_grad = _T(p) @ gx
    if gr is not None and gr.size:
        # Residuals (tall A, drivers other than gelsy): X minimizes them, so only their
        # explicit dependence on A and B counts.
        weighted = (a @ x - b) * gr[..., None, :]
        a_grad = a_grad + 2 * weighted @ _T(x)
        b_grad = b_grad - 2 * weighted
    if vector:
        b_grad = b_grad[..., 0]
    return (a_grad if _needs(ctx, 0) else None, b_grad if _needs(ctx, 1) else None)


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
    mm = np.tril(_T(l1) @ gl1 - gu2 @ _T(u2), -1) + np.triu(gu1 @ _T(u1) - _T(l2) @ gl2)
    try:
        top = np.linalg.solve(_T(l1), np.concatenate([mm, gu2], -1))
        left = _T(np.linalg.solve(u1, _T(np.concatenate([top[..., :, :k], gl2], -2))))
    except np.linalg.LinAlgError as e:
        raise ValueError("LU of a singular matrix: U is singular, the factors are not differentiable") from e
    out = np.zeros((*left.shape[:-2], low.shape[-2], up.shape[-1]))
    out[..., :, :k] = left
    out[..., :k, k:] = top[..., :, k:]
    return out


def _lu_example(draw: Draw) -> Case:
    """A (..., m, n) with a well-conditioned leading square block, kept or permuted."""
    batch, m, n = _batch(draw), _side(draw, "m"), _side(draw, "n")
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
    formula=r"PA = LU \text{ packed in } F = \operatorname{tril}_{-1}L + U:\quad \bar{A} = P \bar{C}\bigl(\bar{L} = \operatorname{tril}_{-1}\bar{F},\ \bar{U} = \operatorname{triu}\bar{F}\bigr),\ \ \bar{C} = L^{-\top}\bigl(\operatorname{tril}_{-1}(L^\top\bar{L}) + \operatorname{triu}(\bar{U}U^\top)\bigr)U^{-\top}\ (\text{square; see } \texttt{\_lu\_grad})",
    example=_lu_factor_example,
)
def _lu_factor(ctx: RuleContext):
    lu, g = ctx["LU"], ctx.grad
    m, n = lu.shape[-2:]
    k = min(m, n)
    low, up = _unpack(lu)
    pt = _lu_permutation(ctx["pivots"], m) if ctx["pivot"] else np.eye(m)
    return (_T(pt) @ _lu_grad(low, up, g[..., :, :k], g[..., :k, :]),)


def _linalg_lu_example(draw: Draw) -> Case:
    a = _lu_example(draw)
    out = draw(st.sampled_from(["L, U", "L", "U"]), label="outputs")
    pick = {"L, U": slice(1, 3), "L": slice(1, 2), "U": slice(2, 3)}[out]
    return Case(inputs=(a,), fn=lambda a: tuple(torch.linalg.lu(a))[pick])


@rule(
    "LinalgLuBackward0",
    formula=r"A = PLU:\quad \bar{A} = P \bar{C},\ \ \bar{C} = L^{-\top}\bigl(\operatorname{tril}_{-1}(L^\top\bar{L}) + \operatorname{triu}(\bar{U}U^\top)\bigr)U^{-\top}\ (\text{square; wide and tall see } \texttt{\_lu\_grad})",
    example=_linalg_lu_example,
)
def _linalg_lu(ctx: RuleContext):
    low, up = ctx["L"], ctx["U"]
    perm = ctx["P"] if ctx["pivot"] else np.eye(low.shape[-2])
    return (perm @ _lu_grad(low, up, _grad_or_zeros(ctx, 0), _grad_or_zeros(ctx, 1)),)


def _lu_unpack_example(draw: Draw) -> Case:
    # lu_unpack only repacks: differentiate it straight from the packed factor.
    lu = _lu_example(draw)
    pivots = torch.linalg.lu_factor(lu.detach())[1]
    out = draw(st.sampled_from(["L, U", "L", "U"]), label="outputs")
    pick = {"L, U": slice(1, 3), "L": slice(1, 2), "U": slice(2, 3)}[out]
    return Case(inputs=(lu,), fn=lambda lu: tuple(torch.lu_unpack(lu, pivots))[pick])


@rule(
    "LuUnpackBackward0",
    formula=r"L = \operatorname{tril}_{-1}F + I,\ U = \operatorname{triu}F:\quad \bar{F} = \operatorname{tril}_{-1}\bar{L} + \operatorname{triu}\bar{U}",
    example=_lu_unpack_example,
)
def _lu_unpack(ctx: RuleContext):
    if any(len(s) < 2 for s in ctx.output_shapes):
        raise ValueError("lu_unpack(unpack_data=False) returns empty L and U: there is nothing to differentiate")
    return (_pack(_grad_or_zeros(ctx, 0), _grad_or_zeros(ctx, 1)),)


def _lu_solve_example(draw: Draw) -> Case:
    n, k = _side(draw), _side(draw, "k")
    rg = _grad_flags(draw, 2)
    batch = _batch(draw)
    a = _invertible(draw, (*batch, n, n), requires_grad=False)
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
    formula=r"A = PLU,\ \operatorname{op}(A) X = B:\quad \bar{B} = \operatorname{op}(A)^{-\top}\bar{X},\ \ \bar{A} = \operatorname{op}(-\bar{B}X^\top),\ \ \bar{F} = \operatorname{tril}_{-1}(P^\top \bar{A} U^\top) + \operatorname{triu}(L^\top P^\top \bar{A})\ \ (X \operatorname{op}(A) = B \text{ likewise})",
    example=_lu_solve_example,
)
def _lu_solve(ctx: RuleContext):
    lu, x, g = ctx["LU"], ctx["result"], ctx.grad
    low, up = _unpack(lu)
    pt = _lu_permutation(ctx["pivots"], lu.shape[-2])
    a = _T(pt) @ low @ up
    op = _T(a) if ctx["adjoint"] else a
    try:
        if ctx["left"]:
            b_grad = np.linalg.solve(_T(op), g)
            op_grad = -b_grad @ _T(x)
        else:
            b_grad = _T(np.linalg.solve(op, _T(g)))
            op_grad = -_T(x) @ b_grad
    except np.linalg.LinAlgError as e:
        raise ValueError("lu_solve with a singular U: no solution") from e
    c_grad = pt @ (_T(op_grad) if ctx["adjoint"] else op_grad)  # the gradient of C = L U
    lu_grad = _pack(c_grad @ _T(up), _T(low) @ c_grad)
    return (lu_grad if _needs(ctx, 0) else None, b_grad if _needs(ctx, 1) else None)


# ---------------------------------------------------------------- matrix exponential


def _expm(a: np.ndarray) -> np.ndarray:
    """exp of (a batch of) matrices: scale to 1-norm <= 1/2, Taylor to degree 18, square back.

    The truncation error is below 0.5^19 / 19! ~ 1e-23 relative, far under float64's.
    """
    norm = float(np.abs(a).sum(-2).max()) if a.size else 0.0
    squarings = max(0, int(np.ceil(np.log2(norm))) + 1) if norm > 0 else 0
    x = a / 2.0**squarings
    eye = np.eye(a.shape[-1])
    out = eye + x / 18.0
    for k in range(17, 0, -1):  # Horner: I + x/1 (I + x/2 (I + ...))
        out = eye + (x @ out) / k
    for _ in range(squarings):
        out = out @ out
    return out


def _matrix_exp_example(draw: Draw) -> Case:
    x = tensor(draw, _square(draw), low=-1.5, high=1.5)
    how = draw(st.sampled_from([torch.linalg.matrix_exp, torch.matrix_exp]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgMatrixExpBackward0",
    formula=r"Y = e^{A}:\quad \bar{A} = \int_0^1 e^{sA^\top} \bar{Y} e^{(1-s)A^\top} ds = \Bigl[\exp\begin{pmatrix} A^\top & \bar{Y} \\ 0 & A^\top \end{pmatrix}\Bigr]_{12}",
    example=_matrix_exp_example,
)
def _matrix_exp(ctx: RuleContext):
    at, g = _T(ctx["self"]), ctx.grad
    n = at.shape[-1]
    block = np.zeros((*at.shape[:-2], 2 * n, 2 * n))
    block[..., :n, :n] = block[..., n:, n:] = at
    block[..., :n, n:] = g
    return (_expm(block)[..., :n, n:],)


# ---------------------------------------------------------------- pairwise distances


def _cdist_example(draw: Draw) -> Case:
    rows1, rows2, m = _side(draw, "P"), _side(draw, "R"), _side(draw, "M")
    rg = _grad_flags(draw, 2)
    b1 = _batch(draw)
    b2 = draw(st.sampled_from([b1, b1[1:], tuple(1 for _ in b1)]), label="x2 batch")
    p = draw(st.sampled_from([2.0, 1.0, 0.5, 1.5, 3.0, float("inf"), 0.0]), label="p")
    x1 = tensor(draw, (*b1, rows1, m), requires_grad=False)
    x2 = tensor(draw, (*b2, rows2, m), requires_grad=False)
    if draw(st.booleans(), label="a zero distance"):
        x2[..., 0, :] = x1[(0,) * len(b1)][0]  # x2's first row equals x1's first
    x1.requires_grad_(rg[0])
    x2.requires_grad_(rg[1])
    # Small inputs never take the matrix-product path (a separate EuclideanDistBackward0).
    return Case(inputs=(x1, x2), fn=lambda a, b: torch.cdist(a, b, p=p))


@rule(
    "CdistBackward0",
    formula=r"d_{ij} = \|x_i - y_j\|_p:\quad \bar{x}_i = \sum_j \bar{d}_{ij}\, \frac{\operatorname{sign}(x_i - y_j)\,|x_i - y_j|^{p-1}}{d_{ij}^{\,p-1}},\ \ \bar{y}_j = -\sum_i (\ldots)\ \ (0 \text{ where } d_{ij} = 0;\ p = \infty: \text{ties share})",
    example=_cdist_example,
)
def _cdist(ctx: RuleContext):
    x1, x2, d, p = ctx["x1"], ctx["x2"], ctx["result"], float(ctx["p"])
    diff = x1[..., :, None, :] - x2[..., None, :, :]  # (..., P, R, M)
    r = d[..., None]
    if p == 0.0:
        deriv = np.zeros(diff.shape)  # a count of nonzero differences: piecewise constant
    elif p == 1.0:
        deriv = np.sign(diff)
    elif np.isinf(p):
        tied = np.abs(diff) == r
        deriv = np.sign(diff) * tied / tied.sum(-1, keepdims=True)
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scaled = np.sign(diff) * np.abs(diff) ** (p - 1)
            if p < 1.0:  # |diff|^(p-1) is infinite at a zero difference: send nothing there
                scaled = np.where(diff == 0, 0.0, scaled)
            deriv = np.where(r == 0, 0.0, scaled / r ** (p - 1))
    contrib = ctx.grad[..., None] * deriv
    return (
        contrib.sum(-2) if _needs(ctx, 0) else None,
        -contrib.sum(-3) if _needs(ctx, 1) else None,
    )


def _euclidean_dist_example(draw: Draw) -> Case:
    rg = _grad_flags(draw, 2)
    # Past 25 rows on either side cdist(p=2) switches to the matrix-product form; with
    # compute_mode="use_mm_for_euclid_dist" it always takes it.
    many = draw(st.booleans(), label="more than 25 rows")
    rows1, rows2 = _side(draw, "P"), _side(draw, "R")
    if many:
        if draw(st.booleans(), label="x1 tall"):
            rows1 = draw(st.integers(26, 30), label="P")
        else:
            rows2 = draw(st.integers(26, 30), label="R")
    m = _side(draw, "M")
    b1 = _batch(draw)
    b2 = draw(st.sampled_from([b1, b1[1:], tuple(1 for _ in b1)]), label="x2 batch")
    x1 = tensor(draw, (*b1, rows1, m), requires_grad=False)
    x2 = tensor(draw, (*b2, rows2, m), requires_grad=False)
    if draw(st.booleans(), label="a zero distance"):
        # x2's first row equals x1's first. Multiples of 1/8 make the expanded
        # |x|^2 + |y|^2 - 2 x.y exact, so the forward gives exactly 0 there.
        x1 = torch.round(x1 * 8) / 8
        x2[..., 0, :] = x1[(0,) * len(b1)][0]
    x1.requires_grad_(rg[0])
    x2.requires_grad_(rg[1])
    mode = None if many else "use_mm_for_euclid_dist"
    if mode is None:
        return Case(inputs=(x1, x2), fn=lambda a, b: torch.cdist(a, b))
    return Case(inputs=(x1, x2), fn=lambda a, b: torch.cdist(a, b, compute_mode=mode))


@rule(
    "EuclideanDistBackward0",
    formula=r"d_{ij} = \|x_i - y_j\|_2:\quad \bar{x}_i = \sum_j \bar{d}_{ij} \frac{x_i - y_j}{d_{ij}},\ \ \bar{y}_j = -\sum_i \bar{d}_{ij} \frac{x_i - y_j}{d_{ij}}\ \ (0 \text{ where } d_{ij} = 0)",
    example=_euclidean_dist_example,
    note="d is the forward's own value (computed as sqrt(|x|^2 + |y|^2 - 2 x.y), clamped at 0).",
)
def _euclidean_dist(ctx: RuleContext):
    # cdist has already broadcast (and flattened) the batch dims: x1 (B, P, M), x2 (B, R, M).
    x1, x2, d = ctx["x1"], ctx["x2"], ctx["result"]
    diff = x1[..., :, None, :] - x2[..., None, :, :]  # (..., P, R, M)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d == 0, 0.0, ctx.grad / d)
    contrib = ratio[..., None] * diff
    return (
        contrib.sum(-2) if _needs(ctx, 0) else None,
        -contrib.sum(-3) if _needs(ctx, 1) else None,
    )


# ---------------------------------------------------------------- cross product


def _cross_example(draw: Draw) -> Case:
    full = (*shape(draw, min_dims=0, max_dims=2, max_side=3), 3)
    dim = draw(st.integers(0, len(full) - 1), label="dim")
    full = full[:dim] + (3,) + full[dim:-1]  # the size-3 dim moved to `dim`
    rg = _grad_flags(draw, 2)
    # Both inputs have the same number of dims (linalg.cross requires it) but may broadcast.
    s1, s2 = (tuple(1 if i != dim and draw(st.booleans(), label="size 1") else n for i, n in enumerate(full)) for _ in range(2))
    a, b = tensor(draw, s1, requires_grad=rg[0]), tensor(draw, s2, requires_grad=rg[1])
    how = draw(st.sampled_from(["linalg.cross", "negative dim", "torch.cross"]), label="how")
    if how == "negative dim":
        return Case(inputs=(a, b), fn=lambda a, b: torch.linalg.cross(a, b, dim=dim - len(full)))
    if how == "torch.cross":
        return Case(inputs=(a, b), fn=lambda a, b: torch.cross(a, b, dim=dim))
    return Case(inputs=(a, b), fn=lambda a, b: torch.linalg.cross(a, b, dim=dim))


@rule(
    "LinalgCrossBackward0",
    formula=r"c = a \times b:\quad \bar{a} = b \times \bar{c},\ \ \bar{b} = \bar{c} \times a",
    example=_cross_example,
)
def _cross(ctx: RuleContext):
    dim = ctx["dim"]
    if dim >= 2**63:  # a negative dim comes saved as an unsigned 64-bit integer
        dim -= 2**64
    a, b = np.broadcast_arrays(ctx["self"], ctx["other"])
    g = ctx.grad
    return (
        np.cross(b, g, axis=dim) if _needs(ctx, 0) else None,
        np.cross(g, a, axis=dim) if _needs(ctx, 1) else None,
    )

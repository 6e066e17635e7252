"""Matrix decompositions and matrix functions: Cholesky, eigh, SVD, QR, Householder
products (orgqr, ormqr), pseudo-inverse, least squares and the matrix exponential.

Node types: LinalgCholeskyExBackward0, CholeskyBackward0 (deprecated ``torch.cholesky``),
LinalgEighBackward0, LinalgSvdBackward0, LinalgQrBackward0,
LinalgHouseholderProductBackward0 (also ``torch.orgqr``), OrmqrBackward0,
LinalgPinvBackward0, LinalgLstsqBackward0 and LinalgMatrixExpBackward0. Matrix norms, cond,
matrix_power, multi_dot, vecdot, kron, tensorinv/tensorsolve and vander build their graphs
from other nodes.

Forward values come from the nodes' saved attributes: the factor ``L`` (which is U when
``upper``; ``result`` for torch.cholesky); ``eigenvalues``/``eigenvectors`` (eigh, also
saved for eigvalsh); ``U``, ``S``, ``Vh``, ``full_matrices`` (svd, also saved for
svdvals); ``Q``, ``R``, ``mode`` (qr); ``input``, ``tau`` (Householder product; ``self``,
``input2``, ``input3``, ``left``, ``transpose`` for ormqr); ``self`` and ``result``
(pinv); ``self``, ``b``, ``solution`` (lstsq); ``self`` (matrix_exp).

Where the derivative does not exist these rules raise ValueError (the stepper then shows
no reference) rather than guess: eigh/svd vector gradients with repeated eigen/singular
values (and a zero singular value for a non-square svd); gradients reaching the extra
columns of ``svd(full_matrices=True)`` (not determined by A; torch silently drops them);
qr with ``mode="r"`` or ``mode="complete"`` of a tall matrix (torch refuses too); pinv and
lstsq of a rank-deficient or cutoff-truncated matrix (not differentiable there; an
``rcond`` that cuts singular values off counts too). ``pinv(hermitian=True)`` is assumed
to get a symmetric input (the flag is not saved).

Not covered (no rule): LinalgEigBackward0 (eig/eigvals always produce complex tensors);
CholeskySolveBackward0 and CholeskyInverseBackward0 (the forward reads only one triangle
of the factor, but torch 2.13 also sends gradient to the other, so a rule exact to the
forward cannot agree with torch); GeqrfBackward0 and ldl_factor (torch has no backward
for them).
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
    orthogonal,
    separated,
    spd,
    square_shape,
    tensor,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------- Cholesky


def _cholesky_example(draw: Draw) -> Case:
    x = spd(draw, square_shape(draw))
    upper = draw(st.booleans(), label="upper")
    if draw(st.booleans(), label="cholesky_ex"):
        return Case(inputs=(x,), fn=lambda x: torch.linalg.cholesky_ex(x, upper=upper))
    return Case(inputs=(x,), fn=lambda x: torch.linalg.cholesky(x, upper=upper))


@rule(
    "LinalgCholeskyExBackward0",
    formula=r"A = L L^\top:\quad S = L^{-\top} \Phi(L^\top \bar{L}) L^{-1},\ \ \bar{A} = \tfrac12 "
            r"(S + S^\top),\ \ \Phi = \text{lower triangle, halved diagonal}",
    example=_cholesky_example,
    note="The symmetric gradient: A is taken as symmetric, so only symmetric changes of A count.",
)
def _cholesky(ctx: RuleContext):
    return (_cholesky_grad(ctx["L"], ctx.grad, ctx["upper"]),)


def _cholesky_grad(factor: np.ndarray, g: np.ndarray, upper: bool) -> np.ndarray:
    # upper=True returns (and saves) U = L^T, so its gradient is the transposed one.
    low, g = (mT(factor), mT(g)) if upper else (factor, g)
    p = np.tril(mT(low) @ g)
    p = p - 0.5 * diag_embed(np.diagonal(p, 0, -2, -1))
    inv = checked_inv(low, "cholesky")
    s = mT(inv) @ p @ inv
    return 0.5 * (s + mT(s))


def _old_cholesky_example(draw: Draw) -> Case:
    x = spd(draw, square_shape(draw))
    upper = draw(st.booleans(), label="upper")

    def fn(x):
        # torch.cholesky is deprecated (and warns) but still builds its own node.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.cholesky(x, upper=upper)

    return Case(inputs=(x,), fn=fn)


@rule(
    "CholeskyBackward0",
    formula=r"A = L L^\top\ (\text{or } U^\top U):\quad S = L^{-\top} \Phi(L^\top \bar{L}) "
            r"L^{-1},\ \ \bar{A} = \tfrac12 (S + S^\top),\ \ \Phi = \text{lower triangle, halved "
            r"diagonal}",
    example=_old_cholesky_example,
    note="The symmetric gradient, as for linalg.cholesky.",
)
def _old_cholesky(ctx: RuleContext):
    return (_cholesky_grad(ctx["result"], ctx.grad, ctx["upper"]),)


# ---------------------------------------------------------------- symmetric eigendecomposition


def _eigh_example(draw: Draw) -> Case:
    batch, n = batch_shape(draw), draw_side(draw)
    q = orthogonal(draw, batch, n)
    w = separated(draw, batch, n, low=-3.0)
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
    formula=r"A = V \operatorname{diag}(\lambda) V^\top:\quad \bar{A} = V "
            r"\Bigl(\operatorname{diag}(\bar{\lambda}) + F \circ \tfrac12 (V^\top \bar{V} - "
            r"\bar{V}^\top V)\Bigr) V^\top,\ \ F_{ij} = \frac{1}{\lambda_j - \lambda_i}\ (i \ne j)",
    example=_eigh_example,
)
def _eigh(ctx: RuleContext):
    w, v = ctx["eigenvalues"], ctx["eigenvectors"]
    gw, gv = ctx.grad_outputs[0], ctx.grad_outputs[1]
    inner = np.zeros(v.shape) if gw is None else diag_embed(gw)
    if gv is not None:
        k = mT(v) @ gv
        # Only the skew part of V^T gV moves V (columns stay orthonormal); F is
        # antisymmetric too, so the gradient comes out symmetric, like dA.
        inner = inner + _gaps(w, "eigh") * 0.5 * (k - mT(k))
    return (v @ inner @ mT(v),)


# ---------------------------------------------------------------- SVD


def _svd_example(draw: Draw) -> Case:
    batch, m, n = batch_shape(draw), draw_side(draw, "m"), draw_side(draw, "n")
    k = min(m, n)
    u, v = orthogonal(draw, batch, m)[..., :k], orthogonal(draw, batch, n)[..., :k]
    s = separated(draw, batch, k, low=0.5).flip(-1)
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
    formula=r"A = U \Sigma V^\top:\quad \bar{A} = U\Bigl(\operatorname{diag}(\bar{\sigma}) + "
            r"\bigl(F \circ (U^\top\bar{U} - \bar{U}^\top U)\bigr)\Sigma + \Sigma \bigl(F \circ "
            r"(V^\top\bar{V} - \bar{V}^\top V)\bigr)\Bigr)V^\top + (I - "
            r"UU^\top)\bar{U}\Sigma^{-1}V^\top + U\Sigma^{-1}\bar{V}^\top(I - VV^\top),\ \ F_{ij} "
            r"= \frac{1}{\sigma_j^2 - \sigma_i^2}",
    example=_svd_example,
)
def _svd(ctx: RuleContext):
    u, s, vh = ctx["U"], ctx["S"], ctx["Vh"]
    gu, gs, gvh = ctx.grad_outputs[:3]
    k = s.shape[-1]
    if ctx["full_matrices"]:
        extra_u = gu is not None and np.any(gu[..., :, k:])
        if extra_u or (gvh is not None and np.any(gvh[..., k:, :])):
            raise ValueError(
                "svd(full_matrices=True): the extra columns of U / rows of Vh are not "
                "determined by A, so gradients reaching them have no meaning"
            )
        u, vh = u[..., :, :k], vh[..., :k, :]
        gu = None if gu is None else gu[..., :, :k]
        gvh = None if gvh is None else gvh[..., :k, :]
    m, n = u.shape[-2], vh.shape[-1]
    inner = np.zeros((*s.shape, k)) if gs is None else diag_embed(gs)
    if gu is None and gvh is None:
        return (u @ inner @ vh,)
    f = _gaps(s**2, "svd")
    extra = 0.0
    if (m > k or n > k) and np.any(s == 0):
        raise ValueError("svd of a non-square matrix with a zero singular value: no gradient")
    if gu is not None:
        j = mT(u) @ gu
        inner = inner + (f * (j - mT(j))) * s[..., None, :]
        if m > k:  # the part of gU outside span(U)
            extra = extra + ((gu - u @ j) / s[..., None, :]) @ vh
    if gvh is not None:
        kv = vh @ mT(gvh)  # V^T gV with V = Vh^T
        inner = inner + s[..., :, None] * (f * (kv - mT(kv)))
        if n > k:  # the part of gVh outside the row space of Vh
            extra = extra + u @ ((gvh - gvh @ mT(vh) @ vh) / s[..., :, None])
    return (u @ inner @ vh + extra,)


# ---------------------------------------------------------------- QR


def _qr_example(draw: Draw) -> Case:
    batch, m, n = batch_shape(draw), draw_side(draw, "m"), draw_side(draw, "n")
    # A bump on the leading diagonal keeps the leading min(m, n) columns well conditioned.
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = (a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)).requires_grad_()
    mode = "complete" if m <= n and draw(st.booleans(), label="complete") else "reduced"
    out = draw(st.sampled_from(["both", "Q", "R"]), label="outputs")
    pick = {"both": slice(0, 2), "Q": slice(0, 1), "R": slice(1, 2)}[out]
    return Case(inputs=(a,), fn=lambda a: tuple(torch.linalg.qr(a, mode=mode))[pick])


@rule(
    "LinalgQrBackward0",
    formula=r"A = QR\ (m \ge n):\quad M = \bar{R} R^\top - Q^\top \bar{Q},\ \ \bar{A} = "
            r"\bigl(\bar{Q} + Q\,(\operatorname{triu}M + \operatorname{triu}_1 M^\top)\bigr) "
            r"R^{-\top};\quad m < n:\ A = [X\,|\,Y],\ \bar{Y} = Q \bar{R}_Y,\ \bar{X} \text{ as "
            r"above with } \bar{Q} + Y \bar{R}_Y^\top",
    example=_qr_example,
)
def _qr(ctx: RuleContext):
    mode, q, r = ctx["mode"], ctx["Q"], ctx["R"]
    if mode == "r":
        raise ValueError("qr(mode='r') does not keep Q, which the gradient needs")
    m, n = q.shape[-2], r.shape[-1]
    if mode == "complete" and m > n:
        raise ValueError("qr(mode='complete') of a tall matrix: the extra columns of Q are not "
                         "determined by A")
    gq, gr = grad_or_zeros(ctx, 0), grad_or_zeros(ctx, 1)
    y_grad = None
    if m < n:
        # A = [X | Y] with X = Q R_X square and Y = Q R_Y: R_Y = Q^T Y feeds back into Q.
        r, r_y, gr, gr_y = r[..., :, :m], r[..., :, m:], gr[..., :, :m], gr[..., :, m:]
        gq = gq + (q @ r_y) @ mT(gr_y)
        y_grad = q @ gr_y
    mm = gr @ mT(r) - mT(q) @ gq
    sym = np.triu(mm) + mT(np.triu(mm, 1))
    try:  # (gQ + Q sym) R^{-T}, as a solve with R
        x_grad = mT(np.linalg.solve(r, mT(gq + q @ sym)))
    except np.linalg.LinAlgError as e:
        raise ValueError("qr of a rank-deficient matrix: R is singular, no gradient") from e
    return (x_grad if y_grad is None else np.concatenate([x_grad, y_grad], -1),)


# ---------------------------------------------------------------- Householder products


def _householder_grads(
    a: np.ndarray, tau: np.ndarray, gq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the reflectors' storage `a` (..., m, n) and `tau` (..., k) from that of
    the full product Q = H_1 ... H_k (..., m, m), H_i = I - tau_i v_i v_i^T, where v_i is
    column i of `a` below the diagonal with a 1 on it (nothing else of `a` is read)."""
    m, k = a.shape[-2], tau.shape[-1]
    eye = np.eye(m)
    vs = np.tril(a[..., :, :k], -1) + np.eye(m, k)
    hs = [eye - tau[..., i, None, None] * vs[..., :, i, None] * vs[..., None, :, i]
          for i in range(k)]
    before = [np.broadcast_to(eye, gq.shape)]  # H_1 ... H_{i-1}
    for h in hs[:-1]:
        before.append(before[-1] @ h)
    a_grad, tau_grad = np.zeros((*gq.shape[:-2], *a.shape[-2:])), np.zeros((*gq.shape[:-2], k))
    after = np.broadcast_to(eye, gq.shape)  # H_{i+1} ... H_k
    for i in reversed(range(k)):
        gh = mT(before[i]) @ gq @ mT(after)  # the gradient reaching H_i
        v = vs[..., :, i]
        tau_grad[..., i] = -np.einsum("...i,...ij,...j->...", v, gh, v)
        gv = -tau[..., i, None] * ((gh + mT(gh)) @ v[..., :, None])[..., 0]
        a_grad[..., i + 1 :, i] = gv[..., i + 1 :]
        after = hs[i] @ after
    return a_grad, tau_grad


def _reflectors(
    draw: Draw, m: int, n: int, k: int, rg: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = batch_shape(draw)
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=rg[0])
    tau = tensor(draw, (*batch, k), low=0.0, high=2.0, requires_grad=rg[1])
    return a, tau


def _householder_example(draw: Draw) -> Case:
    m = draw_side(draw, "m")
    n = draw(st.integers(1, m), label="n")
    k = draw(st.integers(1, n), label="k")
    a, tau = _reflectors(draw, m, n, k, grad_flags(draw, 2))
    how = draw(st.sampled_from([torch.linalg.householder_product, torch.orgqr]), label="how")
    return Case(inputs=(a, tau), fn=how)


@rule(
    "LinalgHouseholderProductBackward0",
    formula=r"Q = (H_1 \cdots H_k)_{:, :n},\ H_i = I - \tau_i v_i v_i^\top:\quad \bar{H}_i = (H_1 "
            r"\cdots H_{i-1})^\top [\bar{Q}\ 0]\, (H_{i+1} \cdots H_k)^\top,\ \ \bar{\tau}_i = "
            r"-v_i^\top \bar{H}_i v_i,\ \ \bar{v}_i = -\tau_i (\bar{H}_i + \bar{H}_i^\top) v_i",
    example=_householder_example,
)
def _householder(ctx: RuleContext):
    a, tau, g = ctx["input"], ctx["tau"], ctx.grad
    m, n = a.shape[-2:]
    gq = np.zeros((*g.shape[:-2], m, m))
    gq[..., :, :n] = g  # Q is the first n columns of the m x m product
    a_grad, tau_grad = _householder_grads(a, tau, gq)
    return (a_grad if needs(ctx, 0) else None, tau_grad if needs(ctx, 1) else None)


def _ormqr_example(draw: Draw) -> Case:
    left, transpose = draw(st.booleans(), label="left"), draw(st.booleans(), label="transpose")
    q_side, other = draw_side(draw, "m"), draw_side(draw, "other side")
    # ormqr takes exactly min(m, n) reflectors; columns past the m-th are not read.
    n = draw(st.integers(1, q_side + 1), label="n")
    rg = grad_flags(draw, 3)
    a, tau = _reflectors(draw, q_side, n, min(q_side, n), rg)
    c_batch = tuple(a.shape[:-2])
    c_shape = (*c_batch, q_side, other) if left else (*c_batch, other, q_side)
    c = tensor(draw, c_shape, requires_grad=rg[2])
    return Case(
        inputs=(a, tau, c),
        fn=lambda a, tau, c: torch.ormqr(a, tau, c, left=left, transpose=transpose),
    )


@rule(
    "OrmqrBackward0",
    formula=r"Y = \operatorname{op}(Q) C\ (\text{or } C \operatorname{op}(Q)),\ Q = H_1 \cdots "
            r"H_k:\quad \bar{C} = \operatorname{op}(Q)^\top \bar{Y},\ \ \bar{Q} = "
            r"\operatorname{op}(\bar{Y} C^\top),\ \text{then } \bar{Q} \to (\bar{A}, \bar{\tau}) "
            r"\text{ as for householder\_product}",
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
    op = mT(q) if transpose else q
    if left:
        c_grad, op_grad = mT(op) @ g, g @ mT(c)
    else:
        c_grad, op_grad = g @ mT(op), mT(c) @ g
    a_grad, tau_grad = _householder_grads(a, tau, mT(op_grad) if transpose else op_grad)
    return (
        a_grad if needs(ctx, 0) else None,
        tau_grad if needs(ctx, 1) else None,
        c_grad if needs(ctx, 2) else None,
    )


# ---------------------------------------------------------------- pseudo-inverse


def _pinv_example(draw: Draw) -> Case:
    batch = batch_shape(draw)
    if draw(st.booleans(), label="hermitian"):
        n = draw_side(draw)
        a = tensor(draw, (*batch, n, n), low=-1.0, high=1.0, requires_grad=False)
        a = (a + a.mT + 2 * (n + 1) * torch.eye(n, dtype=torch.float64)).requires_grad_()
        return Case(inputs=(a,), fn=lambda a: torch.linalg.pinv(a, hermitian=True))
    m, n = draw_side(draw, "m"), draw_side(draw, "n")
    a = tensor(draw, (*batch, m, n), low=-1.0, high=1.0, requires_grad=False)
    a = (a + (min(m, n) + 1) * torch.eye(m, n, dtype=torch.float64)).requires_grad_()
    how = draw(st.sampled_from([torch.linalg.pinv, torch.pinverse]), label="how")
    return Case(inputs=(a,), fn=how)


@rule(
    "LinalgPinvBackward0",
    formula=r"P = A^{+}:\quad \bar{A} = -P^\top \bar{P} P^\top + (I - AP)\,\bar{P}^\top P P^\top + "
            r"P^\top P\,\bar{P}^\top (I - PA)",
    example=_pinv_example,
    note="Full-rank inputs only: pinv jumps where the rank changes.",
)
def _pinv(ctx: RuleContext):
    a, p = ctx["self"], ctx["result"]
    if np.any(np.linalg.matrix_rank(p) < min(a.shape[-2:])):
        raise ValueError(
            "pinv of a rank-deficient (or cutoff-truncated) matrix: not differentiable"
        )
    return (_pinv_grad(a, p, ctx.grad),)


def _pinv_grad(a: np.ndarray, p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient reaching A from that of P = A^+ (A of full rank)."""
    m, n = a.shape[-2], a.shape[-1]
    return (
        -mT(p) @ g @ mT(p)
        + (np.eye(m) - a @ p) @ mT(g) @ p @ mT(p)
        + mT(p) @ p @ mT(g) @ (np.eye(n) - p @ a)
    )


def _lstsq_example(draw: Draw) -> Case:
    batch = batch_shape(draw)
    m, n, k = draw_side(draw, "m"), draw_side(draw, "n"), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
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
    formula=r"X = A^{+} B,\ r = \|A X - B\|^2_{\text{columns}}:\quad \bar{B} = A^{+\top} \bar{X} - "
            r"2 (AX - B) \operatorname{diag}(\bar{r}),\ \ \bar{A} = "
            r"\overline{A}_{\operatorname{pinv}}(\bar{P} = \bar{X} B^\top) + 2 (AX - B) "
            r"\operatorname{diag}(\bar{r}) X^\top",
    example=_lstsq_example,
    note="Full-rank A only: the least-squares solution jumps where the rank changes.",
)
def _lstsq(ctx: RuleContext):
    a, b, x = ctx["self"], ctx["b"], ctx["solution"]
    gx, gr = grad_or_zeros(ctx, 0), ctx.grad_outputs[1]
    if np.any(np.linalg.matrix_rank(a) < min(a.shape[-2:])):
        raise ValueError("lstsq of a rank-deficient matrix: the solution is not differentiable")
    # A vector right-hand side: (m,), or A's batch shape followed by m.
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])
    if vector:  # (the residuals keep their column dim of size 1 there)
        b, x, gx = b[..., None], x[..., None], gx[..., None]
    p = np.linalg.pinv(a)
    size = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    if np.max(np.abs(p @ b - x), initial=0.0) > 1e-3 * size:
        raise ValueError("lstsq: the solution is not A^+ B (an rcond cutoff dropped singular "
                         "values)")
    a_grad = _pinv_grad(a, p, gx @ mT(b))
    b_grad = mT(p) @ gx
    if gr is not None and gr.size:
        # Residuals (tall A, drivers other than gelsy): X minimizes them, so only their
        # explicit dependence on A and B counts.
        weighted = (a @ x - b) * gr[..., None, :]
        a_grad = a_grad + 2 * weighted @ mT(x)
        b_grad = b_grad - 2 * weighted
    if vector:
        b_grad = b_grad[..., 0]
    return (a_grad if needs(ctx, 0) else None, b_grad if needs(ctx, 1) else None)


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
    x = tensor(draw, square_shape(draw), low=-1.5, high=1.5)
    how = draw(st.sampled_from([torch.linalg.matrix_exp, torch.matrix_exp]), label="how")
    return Case(inputs=(x,), fn=how)


@rule(
    "LinalgMatrixExpBackward0",
    formula=r"Y = e^{A}:\quad \bar{A} = \int_0^1 e^{sA^\top} \bar{Y} e^{(1-s)A^\top} ds = "
            r"\Bigl[\exp\begin{pmatrix} A^\top & \bar{Y} \\ 0 & A^\top \end{pmatrix}\Bigr]_{12}",
    example=_matrix_exp_example,
)
def _matrix_exp(ctx: RuleContext):
    at, g = mT(ctx["self"]), ctx.grad
    n = at.shape[-1]
    block = np.zeros((*at.shape[:-2], 2 * n, 2 * n))
    block[..., :n, :n] = block[..., n:, n:] = at
    block[..., :n, n:] = g
    return (_expm(block)[..., :n, n:],)

"""Linear algebra products: matrix and vector products (mm, bmm, addmm, mv, dot...),
pairwise distances (cdist), the cross product and the bilinear layer's _trilinear. Each
gradient is a product with the other factor(s).

cdist saves ``x1``, ``x2``, ``p``, ``result`` (``x1``, ``x2``, ``result`` for the
Euclidean path, EuclideanDistBackward0: p = 2 past 25 rows, or
``compute_mode="use_mm_for_euclid_dist"``, whose batch dims cdist has already broadcast and
flattened); cross saves ``self``, ``other``, ``dim`` (a negative dim comes saved as its
unsigned 64-bit wrap); _trilinear saves its three factors with their ``expand*`` and
``sumdim``. Conventions at kinks follow autograd's norms: cdist (both paths) sends nothing
through a zero distance (nor, for p < 1, through a zero coordinate difference), and for
p = inf tied coordinates share the gradient evenly, as ``vector_norm`` does; there torch
gives every tied coordinate the full gradient (a known disagreement). The Euclidean path
computes d = sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0)); the rule divides by that saved d but
takes x - y exactly, so for equal rows whose rounded d is a tiny positive number (rather
than 0) it sends 0, where torch's expanded form leaves round-off of order eps |x| / d
(measured below 1e-7 of the gradient).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import edge_shape, needs, times
from gradviz.backward.rules._examples import Draw, batch_shape, draw_side, grad_flags, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to


def _flag(draw: Draw, label: str) -> bool:
    return draw(st.booleans(), label=label)


def _scalar(draw: Draw, label: str) -> float:
    return draw(st.sampled_from([1.0, 0.5, -2.0, 3.0]), label=label)


# ---------------------------------------------------------------- matrix products


def _addmm_example(draw: Draw) -> Case:
    n, k, m = draw_side(draw, "n"), draw_side(draw, "k"), draw_side(draw, "m")
    rg = grad_flags(draw, 3)
    bias_shape = draw(st.sampled_from([(n, m), (m,), (1, m), (n, 1), ()]), label="bias shape")
    bias, a, b = (
        tensor(draw, bias_shape, requires_grad=rg[0]),
        tensor(draw, (n, k), requires_grad=rg[1]),
        tensor(draw, (k, m), requires_grad=rg[2]),
    )
    if draw(st.booleans(), label="via linear") and bias_shape == (m,):
        # F.linear(x, W, b) is addmm(b, x, W^T): the same node, fed by a TBackward0, and
        # its mat2 column-major as in nn.Linear (W itself row-major).
        return Case(
            inputs=(bias, a, b),
            fn=lambda bias, a, b: torch.nn.functional.linear(a, b.T.contiguous(), bias),
        )
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, a, b), fn=lambda bias, a, b: torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    )


@rule(
    "AddmmBackward0",
    formula=r"Y = \beta M + \alpha A B:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{A} = "
            r"\alpha\,\bar{Y} B^\top,\ \ \bar{B} = \alpha\,A^\top \bar{Y}",
    example=_addmm_example,
)
def _addmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(times(beta, g), edge_shape(ctx, 0)) if needs(ctx, 0) else None
    a_grad = times(alpha, g @ ctx["mat2"].T) if needs(ctx, 1) else None
    b_grad = times(alpha, _mat2_grad(ctx, ctx["mat1"], g)) if needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


def _mat2_grad(ctx: RuleContext, mat1: np.ndarray, g: np.ndarray) -> np.ndarray:
    """mat1ᵀ·ḡ, laid out as torch lays it out: column-major when mat2 was (a Linear's
    weight arrives transposed), so the stepper compares two arrays of one layout; a C-order
    reference against torch's F-order gradient took the tiled comparison, 1.25 ms per
    256×1024 weight, 45 ms of a 12-layer transformer's checks."""
    strides, sizes = ctx.saved.get("mat2_sym_strides"), ctx.saved.get("mat2_sym_sizes")
    if strides is not None and sizes is not None and len(strides) == 2 and (
            strides[0] == 1 and strides[1] == sizes[0]):
        return (g.T @ mat1).T
    return mat1.T @ g


def _mm_example(draw: Draw) -> Case:
    n, k, m = draw_side(draw, "n"), draw_side(draw, "k"), draw_side(draw, "m")
    rg = grad_flags(draw, 2)
    how = draw(st.sampled_from(["mm", "@", "batched @ matrix", "vector @ matrix"]), label="how")
    if how == "batched @ matrix":
        # matmul folds the batch of a >2-D left operand into the rows of one mm.
        lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="batch"))
        a, b = (
            tensor(draw, (*lead, n, k), requires_grad=rg[0]),
            tensor(draw, (k, m), requires_grad=rg[1]),
        )
        return Case(inputs=(a, b), fn=lambda a, b: a @ b)
    if how == "vector @ matrix":
        a, b = tensor(draw, (k,), requires_grad=rg[0]), tensor(draw, (k, m), requires_grad=rg[1])
        return Case(inputs=(a, b), fn=lambda a, b: a @ b)
    a, b = tensor(draw, (n, k), requires_grad=rg[0]), tensor(draw, (k, m), requires_grad=rg[1])
    if how == "mm":
        return Case(inputs=(a, b), fn=lambda a, b: torch.mm(a, b))
    return Case(inputs=(a, b), fn=lambda a, b: a @ b)


@rule(
    "MmBackward0",
    formula=r"Y = A B:\quad \bar{A} = \bar{Y} B^\top,\ \ \bar{B} = A^\top \bar{Y}",
    example=_mm_example,
)
def _mm(ctx: RuleContext):
    g = ctx.grad
    a_grad = g @ ctx["mat2"].T if needs(ctx, 0) else None
    b_grad = _mat2_grad(ctx, ctx["self"], g) if needs(ctx, 1) else None
    return (a_grad, b_grad)


def _bmm_example(draw: Draw) -> Case:
    n, k, m = draw_side(draw, "n"), draw_side(draw, "k"), draw_side(draw, "m")
    rg = grad_flags(draw, 2)
    if draw(st.booleans(), label="broadcast matmul"):
        # matmul of two >2-D operands broadcasts their batch dims, then runs one bmm on the
        # expanded, flattened batch (a 2-D operand is folded into an mm instead).
        ba = tuple(
            draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=2), label="batch")
        )
        cut = draw(st.integers(0, len(ba) - 1), label="b batch dims")
        bb = tuple(draw(st.sampled_from([1, s]), label="b batch side") for s in ba[cut:])
        if _flag(draw, "swap"):
            ba, bb = bb, ba
        if np.prod(ba) == 1 or np.prod(bb) == 1:
            # A batch of one matrix on either side makes matmul fold into an mm instead.
            ba = bb = (2, *ba[1:])
        a = tensor(draw, (*ba, n, k), requires_grad=rg[0])
        b = tensor(draw, (*bb, k, m), requires_grad=rg[1])
        return Case(inputs=(a, b), fn=lambda a, b: a @ b)
    batch = draw_side(draw, "batch")
    a = tensor(draw, (batch, n, k), requires_grad=rg[0])
    b = tensor(draw, (batch, k, m), requires_grad=rg[1])
    return Case(inputs=(a, b), fn=lambda a, b: torch.bmm(a, b))


@rule(
    "BmmBackward0",
    formula=r"Y_i = A_i B_i:\quad "
    r"\bar{A}_i = \bar{Y}_i B_i^\top,\ \ \bar{B}_i = A_i^\top \bar{Y}_i",
    example=_bmm_example,
)
def _bmm(ctx: RuleContext):
    g = ctx.grad
    a_grad = g @ np.swapaxes(ctx["mat2"], -1, -2) if needs(ctx, 0) else None
    b_grad = np.swapaxes(ctx["self"], -1, -2) @ g if needs(ctx, 1) else None
    return (a_grad, b_grad)


def _baddbmm_example(draw: Draw) -> Case:
    batch, n = draw_side(draw, "batch"), draw_side(draw, "n")
    k, m = draw_side(draw, "k"), draw_side(draw, "m")
    rg = grad_flags(draw, 3)
    bias_shape = draw(
        st.sampled_from([(batch, n, m), (n, m), (1, n, m), (m,), (batch, 1, 1)]), label="bias shape"
    )
    bias = tensor(draw, bias_shape, requires_grad=rg[0])
    a = tensor(draw, (batch, n, k), requires_grad=rg[1])
    b = tensor(draw, (batch, k, m), requires_grad=rg[2])
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, a, b), fn=lambda bias, a, b: torch.baddbmm(bias, a, b, beta=beta, alpha=alpha)
    )


@rule(
    "BaddbmmBackward0",
    formula=r"Y_i = \beta M_i + \alpha A_i B_i:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{A}_i = "
            r"\alpha\,\bar{Y}_i B_i^\top,\ \ \bar{B}_i = \alpha\,A_i^\top \bar{Y}_i",
    example=_baddbmm_example,
)
def _baddbmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(times(beta, g), edge_shape(ctx, 0)) if needs(ctx, 0) else None
    a_grad = times(alpha, g @ np.swapaxes(ctx["batch2"], -1, -2)) if needs(ctx, 1) else None
    b_grad = times(alpha, np.swapaxes(ctx["batch1"], -1, -2) @ g) if needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


def _addbmm_example(draw: Draw) -> Case:
    batch, n = draw_side(draw, "batch"), draw_side(draw, "n")
    k, m = draw_side(draw, "k"), draw_side(draw, "m")
    rg = grad_flags(draw, 3)
    bias_shape = draw(st.sampled_from([(n, m), (m,), (n, 1), ()]), label="bias shape")
    bias = tensor(draw, bias_shape, requires_grad=rg[0])
    a = tensor(draw, (batch, n, k), requires_grad=rg[1])
    b = tensor(draw, (batch, k, m), requires_grad=rg[2])
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, a, b), fn=lambda bias, a, b: torch.addbmm(bias, a, b, beta=beta, alpha=alpha)
    )


@rule(
    "AddbmmBackward0",
    formula=r"Y = \beta M + \alpha \textstyle\sum_i A_i B_i:\quad \bar{M} = \beta\,\bar{Y},\ \ "
            r"\bar{A}_i = \alpha\,\bar{Y} B_i^\top,\ \ \bar{B}_i = \alpha\,A_i^\top \bar{Y}",
    example=_addbmm_example,
)
def _addbmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(times(beta, g), edge_shape(ctx, 0)) if needs(ctx, 0) else None
    a_grad = times(alpha, g @ np.swapaxes(ctx["batch2"], -1, -2)) if needs(ctx, 1) else None
    b_grad = times(alpha, np.swapaxes(ctx["batch1"], -1, -2) @ g) if needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


# ---------------------------------------------------------------- matrix-vector and vector products


def _mv_example(draw: Draw) -> Case:
    n, k = draw_side(draw, "n"), draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    how = draw(st.sampled_from(["mv", "@", "batched @ vector"]), label="how")
    if how == "batched @ vector":
        lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="batch"))
        a = tensor(draw, (*lead, n, k), requires_grad=rg[0])
    else:
        a = tensor(draw, (n, k), requires_grad=rg[0])
    v = tensor(draw, (k,), requires_grad=rg[1])
    if how == "mv":
        return Case(inputs=(a, v), fn=lambda a, v: torch.mv(a, v))
    return Case(inputs=(a, v), fn=lambda a, v: a @ v)


@rule(
    "MvBackward0",
    formula=r"y = A v:\quad \bar{A} = \bar{y}\, v^\top,\ \ \bar{v} = A^\top \bar{y}",
    example=_mv_example,
)
def _mv(ctx: RuleContext):
    g = ctx.grad
    a_grad = np.outer(g, ctx["vec"]) if needs(ctx, 0) else None
    v_grad = ctx["self"].T @ g if needs(ctx, 1) else None
    return (a_grad, v_grad)


def _addmv_example(draw: Draw) -> Case:
    n, k = draw_side(draw, "n"), draw_side(draw, "k")
    rg = grad_flags(draw, 3)
    bias = tensor(
        draw, draw(st.sampled_from([(n,), (1,), ()]), label="bias shape"), requires_grad=rg[0]
    )
    a, v = tensor(draw, (n, k), requires_grad=rg[1]), tensor(draw, (k,), requires_grad=rg[2])
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, a, v), fn=lambda bias, a, v: torch.addmv(bias, a, v, beta=beta, alpha=alpha)
    )


@rule(
    "AddmvBackward0",
    formula=r"y = \beta m + \alpha A v:\quad \bar{m} = \beta\,\bar{y},\ \ \bar{A} = "
            r"\alpha\,\bar{y}\,v^\top,\ \ \bar{v} = \alpha\,A^\top \bar{y}",
    example=_addmv_example,
)
def _addmv(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(times(beta, g), edge_shape(ctx, 0)) if needs(ctx, 0) else None
    a_grad = times(alpha, np.outer(g, ctx["vec"])) if needs(ctx, 1) else None
    v_grad = times(alpha, ctx["mat"].T @ g) if needs(ctx, 2) else None
    return (m_grad, a_grad, v_grad)


def _addr_example(draw: Draw) -> Case:
    n, m = draw_side(draw, "n"), draw_side(draw, "m")
    rg = grad_flags(draw, 3)
    bias = tensor(
        draw,
        draw(st.sampled_from([(n, m), (m,), (n, 1), ()]), label="bias shape"),
        requires_grad=rg[0],
    )
    u, v = tensor(draw, (n,), requires_grad=rg[1]), tensor(draw, (m,), requires_grad=rg[2])
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, u, v), fn=lambda bias, u, v: torch.addr(bias, u, v, beta=beta, alpha=alpha)
    )


@rule(
    "AddrBackward0",
    formula=r"Y = \beta M + \alpha\,u v^\top:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{u} = "
            r"\alpha\,\bar{Y} v,\ \ \bar{v} = \alpha\,\bar{Y}^\top u",
    example=_addr_example,
)
def _addr(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(times(beta, g), edge_shape(ctx, 0)) if needs(ctx, 0) else None
    u_grad = times(alpha, g @ ctx["vec2"]) if needs(ctx, 1) else None
    v_grad = times(alpha, g.T @ ctx["vec1"]) if needs(ctx, 2) else None
    return (m_grad, u_grad, v_grad)


def _dot_example(draw: Draw) -> Case:
    k = draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    u, v = tensor(draw, (k,), requires_grad=rg[0]), tensor(draw, (k,), requires_grad=rg[1])
    if draw(st.booleans(), label="@"):
        return Case(inputs=(u, v), fn=lambda u, v: u @ v)
    return Case(inputs=(u, v), fn=lambda u, v: torch.dot(u, v))


@rule(
    "DotBackward0",
    formula=r"y = u \cdot v:\quad \bar{u} = \bar{y}\, v,\ \ \bar{v} = \bar{y}\, u",
    example=_dot_example,
)
def _dot(ctx: RuleContext):
    g = ctx.grad
    u_grad = g * ctx["tensor"] if needs(ctx, 0) else None
    v_grad = g * ctx["self"] if needs(ctx, 1) else None
    return (u_grad, v_grad)


def _vdot_example(draw: Draw) -> Case:
    k = draw_side(draw, "k")
    rg = grad_flags(draw, 2)
    u, v = tensor(draw, (k,), requires_grad=rg[0]), tensor(draw, (k,), requires_grad=rg[1])
    return Case(inputs=(u, v), fn=lambda u, v: torch.vdot(u, v))


@rule(
    "VdotBackward0",
    formula=r"y = \bar{u}^{*} \cdot v \text{ (real: } u \cdot v):\quad \bar{u} = \bar{y}\, v,\ \ "
            r"\bar{v} = \bar{y}\, u",
    example=_vdot_example,
    note="Real inputs only; complex vdot conjugates its first argument.",
)
def _vdot(ctx: RuleContext):
    g = ctx.grad
    u_grad = g * ctx["other"] if needs(ctx, 0) else None
    v_grad = g * ctx["self"] if needs(ctx, 1) else None
    return (u_grad, v_grad)


def _trace_example(draw: Draw) -> Case:
    x = tensor(draw, (draw_side(draw, "rows"), draw_side(draw, "cols")))
    return Case(inputs=(x,), fn=lambda x: torch.trace(x))


@rule(
    "TraceBackward0",
    formula=r"y = \textstyle\sum_i X_{ii}:\quad \bar{X} = \bar{y}\, I",
    example=_trace_example,
)
def _trace(ctx: RuleContext):
    rows, cols = ctx["self_sym_sizes"]
    return (ctx.grad * np.eye(rows, cols),)


# ---------------------------------------------------------------- pairwise distances


def _cdist_example(draw: Draw) -> Case:
    rows1, rows2, m = draw_side(draw, "P"), draw_side(draw, "R"), draw_side(draw, "M")
    rg = grad_flags(draw, 2)
    b1 = batch_shape(draw)
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
    formula=r"d_{ij} = \|x_i - y_j\|_p:\quad \bar{x}_i = \sum_j \bar{d}_{ij}\, "
            r"\frac{\operatorname{sign}(x_i - y_j)\,|x_i - y_j|^{p-1}}{d_{ij}^{\,p-1}},\ \ "
            r"\bar{y}_j = -\sum_i (\ldots)\ \ (0 \text{ where } d_{ij} = 0;\ p = \infty: "
            r"\text{ties share})",
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
        contrib.sum(-2) if needs(ctx, 0) else None,
        -contrib.sum(-3) if needs(ctx, 1) else None,
    )


def _euclidean_dist_example(draw: Draw) -> Case:
    rg = grad_flags(draw, 2)
    # Past 25 rows on either side cdist(p=2) switches to the matrix-product form; with
    # compute_mode="use_mm_for_euclid_dist" it always takes it.
    many = draw(st.booleans(), label="more than 25 rows")
    rows1, rows2 = draw_side(draw, "P"), draw_side(draw, "R")
    if many:
        if draw(st.booleans(), label="x1 tall"):
            rows1 = draw(st.integers(26, 30), label="P")
        else:
            rows2 = draw(st.integers(26, 30), label="R")
    m = draw_side(draw, "M")
    b1 = batch_shape(draw)
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
    formula=r"d_{ij} = \|x_i - y_j\|_2:\quad \bar{x}_i = \sum_j \bar{d}_{ij} \frac{x_i - "
            r"y_j}{d_{ij}},\ \ \bar{y}_j = -\sum_i \bar{d}_{ij} \frac{x_i - y_j}{d_{ij}}\ \ (0 "
            r"\text{ where } d_{ij} = 0)",
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
        contrib.sum(-2) if needs(ctx, 0) else None,
        -contrib.sum(-3) if needs(ctx, 1) else None,
    )


# ---------------------------------------------------------------- cross product


def _cross_example(draw: Draw) -> Case:
    full = (*shape(draw, min_dims=0, max_dims=2, max_side=3), 3)
    dim = draw(st.integers(0, len(full) - 1), label="dim")
    full = full[:dim] + (3,) + full[dim:-1]  # the size-3 dim moved to `dim`
    rg = grad_flags(draw, 2)
    # Both inputs have the same number of dims (linalg.cross requires it) but may broadcast.
    s1, s2 = (
        tuple(1 if i != dim and draw(st.booleans(), label="size 1") else n
              for i, n in enumerate(full))
        for _ in range(2)
    )
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
        np.cross(b, g, axis=dim) if needs(ctx, 0) else None,
        np.cross(g, a, axis=dim) if needs(ctx, 1) else None,
    )


# ---------------------------------------------------------------- bilinear layer


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
    formula=r"Y = \textstyle\sum_{\text{sumdim}} \hat{A}\hat{B}\hat{C}\ (\hat{\cdot}\text{: "
            r"unsqueezed at expand}):\quad \bar{A} = "
            r"\operatorname{sum\_to}_{\hat{A}}\big(\bar{Y}\hat{B}\hat{C}\big)\text{, likewise } "
            r"\bar{B}, \bar{C}",
    example=_bilinear_example,
)
def _trilinear(ctx: RuleContext):
    # Each factor is unsqueezed at its expand dims, the three broadcast and multiply, and the
    # product is summed over sumdim. A factor is saved only when another's gradient needs it.
    factors = [None if ctx[f"i{k}"] is None
               else np.expand_dims(ctx[f"i{k}"], tuple(ctx[f"expand{k}"]))
               for k in (1, 2, 3)]
    g = np.expand_dims(ctx.grad, tuple(ctx["sumdim"]))
    grads: list[np.ndarray | None] = []
    for k in range(3):
        if not needs(ctx, k):
            grads.append(None)
            continue
        others = [f for j, f in enumerate(factors) if j != k]
        part = g * others[0] * others[1]
        target = list(edge_shape(ctx, k))
        for dim in sorted(ctx[f"expand{k + 1}"]):
            target.insert(dim, 1)
        part = np.broadcast_to(part, np.broadcast_shapes(part.shape, target))
        grads.append(sum_to(part, tuple(target)).reshape(edge_shape(ctx, k)))
    return tuple(grads)

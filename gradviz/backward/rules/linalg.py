"""Linear algebra: matrix and vector products; each gradient is a product with the other factor."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to


def _side(draw: Draw, label: str = "n") -> int:
    return draw(st.integers(1, 4), label=label)


def _needs(ctx: RuleContext, i: int) -> bool:
    # Autograd saves a factor only when the other factor needs its gradient.
    return ctx.input_shapes[i] is not None


def _flag(draw: Draw, label: str) -> bool:
    return draw(st.booleans(), label=label)


def _grad_flags(draw: Draw, n: int) -> list[bool]:
    """Which of n inputs require grad: at least one, sometimes not all."""
    flags = [draw(st.integers(0, 4), label="requires grad") > 0 for _ in range(n)]
    return flags if any(flags) else [True] * n


def _scalar(draw: Draw, label: str) -> float:
    return draw(st.sampled_from([1.0, 0.5, -2.0, 3.0]), label=label)


# ---------------------------------------------------------------- matrix products


def _addmm_example(draw: Draw) -> Case:
    n, k, m = _side(draw, "n"), _side(draw, "k"), _side(draw, "m")
    rg = _grad_flags(draw, 3)
    bias_shape = draw(st.sampled_from([(n, m), (m,), (1, m), (n, 1), ()]), label="bias shape")
    bias, a, b = (
        tensor(draw, bias_shape, requires_grad=rg[0]),
        tensor(draw, (n, k), requires_grad=rg[1]),
        tensor(draw, (k, m), requires_grad=rg[2]),
    )
    if draw(st.booleans(), label="via linear") and bias_shape == (m,):
        # F.linear(x, W, b) is addmm(b, x, W^T): the same node, fed by a TBackward0.
        return Case(
            inputs=(bias, a, b), fn=lambda bias, a, b: torch.nn.functional.linear(a, b.T, bias)
        )
    beta, alpha = _scalar(draw, "beta"), _scalar(draw, "alpha")
    return Case(
        inputs=(bias, a, b), fn=lambda bias, a, b: torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    )


@rule(
    "AddmmBackward0",
    formula=r"Y = \beta M + \alpha A B:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{A} = \alpha\,\bar{Y} B^\top,\ \ \bar{B} = \alpha\,A^\top \bar{Y}",
    example=_addmm_example,
)
def _addmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(beta * g, ctx.input_shapes[0]) if _needs(ctx, 0) else None
    a_grad = alpha * (g @ ctx["mat2"].T) if _needs(ctx, 1) else None
    b_grad = alpha * (ctx["mat1"].T @ g) if _needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


def _mm_example(draw: Draw) -> Case:
    n, k, m = _side(draw, "n"), _side(draw, "k"), _side(draw, "m")
    rg = _grad_flags(draw, 2)
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
    a_grad = g @ ctx["mat2"].T if _needs(ctx, 0) else None
    b_grad = ctx["self"].T @ g if _needs(ctx, 1) else None
    return (a_grad, b_grad)


def _bmm_example(draw: Draw) -> Case:
    n, k, m = _side(draw, "n"), _side(draw, "k"), _side(draw, "m")
    rg = _grad_flags(draw, 2)
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
    batch = _side(draw, "batch")
    a = tensor(draw, (batch, n, k), requires_grad=rg[0])
    b = tensor(draw, (batch, k, m), requires_grad=rg[1])
    return Case(inputs=(a, b), fn=lambda a, b: torch.bmm(a, b))


@rule(
    "BmmBackward0",
    formula=r"Y_i = A_i B_i:\quad \bar{A}_i = \bar{Y}_i B_i^\top,\ \ \bar{B}_i = A_i^\top \bar{Y}_i",
    example=_bmm_example,
)
def _bmm(ctx: RuleContext):
    g = ctx.grad
    a_grad = g @ np.swapaxes(ctx["mat2"], -1, -2) if _needs(ctx, 0) else None
    b_grad = np.swapaxes(ctx["self"], -1, -2) @ g if _needs(ctx, 1) else None
    return (a_grad, b_grad)


def _baddbmm_example(draw: Draw) -> Case:
    batch, n, k, m = _side(draw, "batch"), _side(draw, "n"), _side(draw, "k"), _side(draw, "m")
    rg = _grad_flags(draw, 3)
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
    formula=r"Y_i = \beta M_i + \alpha A_i B_i:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{A}_i = \alpha\,\bar{Y}_i B_i^\top,\ \ \bar{B}_i = \alpha\,A_i^\top \bar{Y}_i",
    example=_baddbmm_example,
)
def _baddbmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(beta * g, ctx.input_shapes[0]) if _needs(ctx, 0) else None
    a_grad = alpha * (g @ np.swapaxes(ctx["batch2"], -1, -2)) if _needs(ctx, 1) else None
    b_grad = alpha * (np.swapaxes(ctx["batch1"], -1, -2) @ g) if _needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


def _addbmm_example(draw: Draw) -> Case:
    batch, n, k, m = _side(draw, "batch"), _side(draw, "n"), _side(draw, "k"), _side(draw, "m")
    rg = _grad_flags(draw, 3)
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
    formula=r"Y = \beta M + \alpha \textstyle\sum_i A_i B_i:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{A}_i = \alpha\,\bar{Y} B_i^\top,\ \ \bar{B}_i = \alpha\,A_i^\top \bar{Y}",
    example=_addbmm_example,
)
def _addbmm(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(beta * g, ctx.input_shapes[0]) if _needs(ctx, 0) else None
    a_grad = alpha * (g @ np.swapaxes(ctx["batch2"], -1, -2)) if _needs(ctx, 1) else None
    b_grad = alpha * (np.swapaxes(ctx["batch1"], -1, -2) @ g) if _needs(ctx, 2) else None
    return (m_grad, a_grad, b_grad)


# ---------------------------------------------------------------- matrix-vector and vector products


def _mv_example(draw: Draw) -> Case:
    n, k = _side(draw, "n"), _side(draw, "k")
    rg = _grad_flags(draw, 2)
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
    a_grad = np.outer(g, ctx["vec"]) if _needs(ctx, 0) else None
    v_grad = ctx["self"].T @ g if _needs(ctx, 1) else None
    return (a_grad, v_grad)


def _addmv_example(draw: Draw) -> Case:
    n, k = _side(draw, "n"), _side(draw, "k")
    rg = _grad_flags(draw, 3)
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
    formula=r"y = \beta m + \alpha A v:\quad \bar{m} = \beta\,\bar{y},\ \ \bar{A} = \alpha\,\bar{y}\,v^\top,\ \ \bar{v} = \alpha\,A^\top \bar{y}",
    example=_addmv_example,
)
def _addmv(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(beta * g, ctx.input_shapes[0]) if _needs(ctx, 0) else None
    a_grad = alpha * np.outer(g, ctx["vec"]) if _needs(ctx, 1) else None
    v_grad = alpha * (ctx["mat"].T @ g) if _needs(ctx, 2) else None
    return (m_grad, a_grad, v_grad)


def _addr_example(draw: Draw) -> Case:
    n, m = _side(draw, "n"), _side(draw, "m")
    rg = _grad_flags(draw, 3)
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
    formula=r"Y = \beta M + \alpha\,u v^\top:\quad \bar{M} = \beta\,\bar{Y},\ \ \bar{u} = \alpha\,\bar{Y} v,\ \ \bar{v} = \alpha\,\bar{Y}^\top u",
    example=_addr_example,
)
def _addr(ctx: RuleContext):
    g, alpha, beta = ctx.grad, ctx["alpha"], ctx["beta"]
    m_grad = sum_to(beta * g, ctx.input_shapes[0]) if _needs(ctx, 0) else None
    u_grad = alpha * (g @ ctx["vec2"]) if _needs(ctx, 1) else None
    v_grad = alpha * (g.T @ ctx["vec1"]) if _needs(ctx, 2) else None
    return (m_grad, u_grad, v_grad)


def _dot_example(draw: Draw) -> Case:
    k = _side(draw, "k")
    rg = _grad_flags(draw, 2)
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
    u_grad = g * ctx["tensor"] if _needs(ctx, 0) else None
    v_grad = g * ctx["self"] if _needs(ctx, 1) else None
    return (u_grad, v_grad)


def _vdot_example(draw: Draw) -> Case:
    k = _side(draw, "k")
    rg = _grad_flags(draw, 2)
    u, v = tensor(draw, (k,), requires_grad=rg[0]), tensor(draw, (k,), requires_grad=rg[1])
    return Case(inputs=(u, v), fn=lambda u, v: torch.vdot(u, v))


@rule(
    "VdotBackward0",
    formula=r"y = \bar{u}^{*} \cdot v \text{ (real: } u \cdot v):\quad \bar{u} = \bar{y}\, v,\ \ \bar{v} = \bar{y}\, u",
    example=_vdot_example,
    note="Real inputs only; complex vdot conjugates its first argument.",
)
def _vdot(ctx: RuleContext):
    g = ctx.grad
    u_grad = g * ctx["other"] if _needs(ctx, 0) else None
    v_grad = g * ctx["self"] if _needs(ctx, 1) else None
    return (u_grad, v_grad)


def _trace_example(draw: Draw) -> Case:
    x = tensor(draw, (_side(draw, "rows"), _side(draw, "cols")))
    return Case(inputs=(x,), fn=lambda x: torch.trace(x))


@rule(
    "TraceBackward0",
    formula=r"y = \textstyle\sum_i X_{ii}:\quad \bar{X} = \bar{y}\, I",
    example=_trace_example,
)
def _trace(ctx: RuleContext):
    rows, cols = ctx["self_sym_sizes"]
    return (ctx.grad * np.eye(rows, cols),)

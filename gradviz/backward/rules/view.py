"""Views, reshapes and copies: transpose/permute, view/reshape/expand, squeeze/unsqueeze,
clone/alias/casts and rot90. Each moves values without changing them, so backward moves the
gradient back (summing over the axes an expand broadcast)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import axis, signed
from gradviz.backward.rules._examples import Draw, draw_dim, shape, tensor, with_ones
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------- transposes and permutes


def _t_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0, max_dims=2))
    return Case(inputs=(x,), fn=lambda x: x.t())


@rule("TBackward0", formula=r"\bar{X} = \bar{Y}^\top", example=_t_example)
def _t(ctx: RuleContext):
    return (ctx.grad.T,)


def _t_inplace_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=2, max_dims=2))
    return Case(inputs=(x,), fn=lambda x: x.clone().t_())


@rule(
    "TBackward1",
    formula=r"\bar{X} = \bar{Y}^\top \quad (\texttt{t\_})",
    example=_t_inplace_example,
)
def _t_inplace(ctx: RuleContext):
    return (ctx.grad.T,)


def _transpose_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=4)
    x = tensor(draw, s)
    d0, d1 = draw_dim(draw, len(s)), draw_dim(draw, len(s))
    return Case(inputs=(x,), fn=lambda x: x.transpose(d0, d1))


@rule(
    "TransposeBackward0",
    formula=r"\bar{X} = \bar{Y}^{\top(d_0,d_1)}\ \text{(swap the same two axes back)}",
    example=_transpose_example,
)
def _transpose(ctx: RuleContext):
    g = ctx.grad
    return (np.swapaxes(g, axis(ctx["dim0"], g.ndim), axis(ctx["dim1"], g.ndim)),)


def _transpose_inplace_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=4)
    x = tensor(draw, s)
    d0, d1 = draw_dim(draw, len(s)), draw_dim(draw, len(s))
    return Case(inputs=(x,), fn=lambda x: x.clone().transpose_(d0, d1))


@rule(
    "TransposeBackward1",
    formula=r"\bar{X} = \bar{Y}^{\top(d_0,d_1)} \quad (\texttt{transpose\_})",
    example=_transpose_inplace_example,
)
def _transpose_inplace(ctx: RuleContext):
    g = ctx.grad
    return (np.swapaxes(g, axis(ctx["dim0"], g.ndim), axis(ctx["dim1"], g.ndim)),)


def _permute_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=4)
    x = tensor(draw, s)
    perm = draw(st.permutations(range(len(s))), label="perm")
    flips = draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s)), label="negative")
    dims = [p - len(s) if f else p for p, f in zip(perm, flips, strict=True)]
    return Case(inputs=(x,), fn=lambda x: x.permute(*dims))


@rule(
    "PermuteBackward0",
    formula=r"\bar{X} = \operatorname{permute}(\bar{Y}, \pi^{-1})",
    example=_permute_example,
)
def _permute(ctx: RuleContext):
    g = ctx.grad
    dims = [axis(d, g.ndim) for d in ctx["dims"]]
    return (np.transpose(g, np.argsort(dims)),)


# ---------------------------------------------------------------- views and reshapes


def _view_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = tensor(draw, s)
    n = int(np.prod(s))
    target = draw(st.sampled_from([(-1,), (1, n), (n, 1, 1), (*s, 1), (1, *s)]), label="target")
    how = draw(st.sampled_from(["view", "reshape", "flatten"]), label="how")
    if how == "flatten" and len(s) != 1:  # flatten() of a 1-D tensor is the tensor itself
        return Case(inputs=(x,), fn=lambda x: x.flatten())
    if how == "reshape":
        return Case(inputs=(x,), fn=lambda x: x.reshape(target))
    return Case(inputs=(x,), fn=lambda x: x.view(target))


@rule(
    "ViewBackward0",
    formula=r"\bar{X} = \operatorname{reshape}(\bar{Y}, \operatorname{shape}(X))",
    example=_view_example,
)
def _view(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


def _reshape_alias_example(draw: Draw) -> Case:
    # A transposed tensor that can still be viewed with the new shape: reshape() aliases it.
    s = shape(draw, min_dims=2, max_dims=4, min_side=2)
    x = tensor(draw, s)
    y_shape = (*s[:-2], s[-1], s[-2])
    target = draw(
        st.sampled_from([y_shape, (-1, *y_shape[-2:]), (*y_shape[:-2], s[-1], 1, s[-2])]),
        label="target",
    )
    return Case(inputs=(x,), fn=lambda x: x.mT.reshape(target))


@rule(
    "ReshapeAliasBackward0",
    formula=r"\bar{X} = \operatorname{reshape}(\bar{Y}, \operatorname{shape}(X))",
    example=_reshape_alias_example,
)
def _reshape_alias(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


def _unsafe_view_example(draw: Draw) -> Case:
    how = draw(st.sampled_from(["matmul", "reshape"]), label="how")
    if how == "matmul":
        # matmul folds the batch dims of a >2-D left operand into one mm, then unfolds.
        s = shape(draw, min_dims=3, max_dims=4)
        a, b = tensor(draw, s), tensor(draw, (s[-1], draw(st.integers(1, 4), label="n")))
        return Case(inputs=(a, b), fn=lambda a, b: a @ b)
    # reshape of a transposed tensor that cannot be viewed: clone, then _unsafe_view.
    s = shape(draw, min_dims=2, max_dims=3, min_side=2)
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.mT.reshape(-1))


@rule(
    "UnsafeViewBackward0",
    formula=r"\bar{X} = \operatorname{reshape}(\bar{Y}, \operatorname{shape}(X))",
    example=_unsafe_view_example,
)
def _unsafe_view(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


def _expand_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=3)
    s = tuple(draw(st.sampled_from([1, n]), label="make 1") for n in s)
    x = tensor(draw, s)
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2), label="new dims"))
    target = lead + tuple(
        draw(st.sampled_from([-1, 3]), label="grow") if n == 1 else draw(st.sampled_from([-1, n]))
        for n in s
    )
    if draw(st.booleans(), label="expand_as"):
        other = torch.zeros(x.detach().expand(target).shape)
        return Case(inputs=(x,), fn=lambda x: x.expand_as(other))
    return Case(inputs=(x,), fn=lambda x: x.expand(target))


@rule(
    "ExpandBackward0",
    formula=r"\bar{X} = \textstyle\sum_{\text{broadcast axes}} \bar{Y}\ \text{(sum back to } "
            r"\operatorname{shape}(X))",
    example=_expand_example,
)
def _expand(ctx: RuleContext):
    return (sum_to(ctx.grad, ctx["self_sym_sizes"]),)


def _squeeze_example(inplace: bool, variant: int):
    def example(draw: Draw) -> Case:
        s = with_ones(draw)
        if variant == 2 and not s:
            s = (1,)
        x = tensor(draw, s)
        if variant == 0:
            args: tuple[Any, ...] = ()
        elif variant == 1:
            args = (draw_dim(draw, len(s)),)
        else:
            dims = draw(st.lists(st.integers(0, len(s) - 1), min_size=1, unique=True), label="dims")
            args = (tuple(d - len(s) if draw(st.booleans(), label="neg") else d for d in dims),)
        if inplace:
            return Case(inputs=(x,), fn=lambda x: x.clone().squeeze_(*args))
        return Case(inputs=(x,), fn=lambda x: x.squeeze(*args))

    return example


_SQUEEZE_FORMULA = (r"\bar{X} = \operatorname{reshape}(\bar{Y}, \operatorname{shape}(X))\ "
                    r"\text{(put the size-1 axes back)}")


@rule("SqueezeBackward0", formula=_SQUEEZE_FORMULA, example=_squeeze_example(False, 0))
def _squeeze0(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


@rule("SqueezeBackward1", formula=_SQUEEZE_FORMULA, example=_squeeze_example(False, 1))
def _squeeze1(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


@rule("SqueezeBackward2", formula=_SQUEEZE_FORMULA, example=_squeeze_example(False, 2))
def _squeeze2(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


# SqueezeBackward3/4/5 are the in-place squeeze_() forms; matmul of a 1-D left operand
# also ends with a SqueezeBackward4.
@rule("SqueezeBackward3", formula=_SQUEEZE_FORMULA, example=_squeeze_example(True, 0))
def _squeeze3(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


@rule("SqueezeBackward4", formula=_SQUEEZE_FORMULA, example=_squeeze_example(True, 1))
def _squeeze4(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


@rule("SqueezeBackward5", formula=_SQUEEZE_FORMULA, example=_squeeze_example(True, 2))
def _squeeze5(ctx: RuleContext):
    return (ctx.grad.reshape(ctx["self_sym_sizes"]),)


def _unsqueeze_example(inplace: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0, max_dims=3)
        x = tensor(draw, s)
        d = draw_dim(draw, len(s), extra=1)
        if inplace:
            return Case(inputs=(x,), fn=lambda x: x.clone().unsqueeze_(d))
        return Case(inputs=(x,), fn=lambda x: x.unsqueeze(d))

    return example


@rule(
    "UnsqueezeBackward0",
    formula=r"\bar{X} = \operatorname{squeeze}_d(\bar{Y})",
    example=_unsqueeze_example(False),
)
def _unsqueeze(ctx: RuleContext):
    g = ctx.grad
    return (np.squeeze(g, axis=axis(ctx["dim"], g.ndim)),)


@rule(
    "UnsqueezeBackward1",
    formula=r"\bar{X} = \operatorname{squeeze}_d(\bar{Y}) \quad (\texttt{unsqueeze\_})",
    example=_unsqueeze_example(True),
)
def _unsqueeze_inplace(ctx: RuleContext):
    g = ctx.grad
    return (np.squeeze(g, axis=axis(ctx["dim"], g.ndim)),)


# ---------------------------------------------------------------- copies and casts


def _clone_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    if x.dim() >= 2 and draw(st.booleans(), label="transposed"):
        return Case(inputs=(x,), fn=lambda x: x.mT.clone())
    return Case(inputs=(x,), fn=lambda x: x.clone())


@rule("CloneBackward0", formula=r"\bar{X} = \bar{Y}", example=_clone_example)
def _clone(ctx: RuleContext):
    return (ctx.grad,)


def _alias_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: torch.ops.aten.alias(x))


@rule("AliasBackward0", formula=r"\bar{X} = \bar{Y}", example=_alias_example)
def _alias(ctx: RuleContext):
    return (ctx.grad,)


def _to_copy_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    how = draw(st.sampled_from(["float32", "copy", "float"]), label="cast")
    if how == "float32":
        return Case(inputs=(x,), fn=lambda x: x.to(torch.float32))
    if how == "float":
        return Case(inputs=(x,), fn=lambda x: x.float())
    return Case(inputs=(x,), fn=lambda x: x.to(torch.float64, copy=True))


@rule(
    "ToCopyBackward0",
    formula=r"\bar{X} = \operatorname{cast}_{\operatorname{dtype}(X)}(\bar{Y})",
    example=_to_copy_example,
    note="Autograd casts the gradient back to the input's dtype; this rule keeps float64, so "
    "for an input narrower than the output it differs by that cast's rounding.",
    complex=True,  # a real input cast to complex gets the real part (see reference_for)
)
def _to_copy(ctx: RuleContext):
    return (ctx.grad,)


# ---------------------------------------------------------------- rotations


def _rot90_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=4)
    n = len(s)
    two = st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)
    d1, d2 = draw(two, label="dims")
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
    first, second = (signed(d) for d in ctx["dims"])
    return (np.rot90(ctx.grad, -signed(ctx["k"]), axes=(first, second)),)

"""Shape, view and indexing ops: they move, copy or pick values, so their backward routes
the gradient back to where each value came from (summing where one value was used twice)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to
from gradviz.errors import GradvizError

# The helpers below are shared with linalg.py and reduce.py.


def signed(value: int) -> int:
    """An int64 that the autograd bindings handed back as its unsigned bit pattern.

    Negative dims, shifts and slice bounds come out of ``_saved_*`` as ``2**64 - k``.
    """
    value = int(value)
    return value - 2**64 if value >= 2**63 else value


def axis(dim: int, ndim: int) -> int:
    """A dim as a non-negative axis of an `ndim`-dim array (a 0-dim array has axis 0)."""
    dim = signed(dim)
    return dim + max(ndim, 1) if dim < 0 else dim


def axes(dims: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """The reduced axes; None or () means every axis, as reductions read it."""
    if ndim == 0:
        return ()
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    if len(dims) == 0:
        return tuple(range(ndim))
    return tuple(sorted(axis(d, ndim) for d in dims))


def unreduce(grad: np.ndarray, shape: Sequence[int], dims: Any, keepdim: bool) -> np.ndarray:
    """Put back the axes a reduction removed, then broadcast to the input's shape."""
    ax = axes(dims, len(shape))
    grad = np.asarray(grad, dtype=np.float64)
    if not keepdim and ax:
        grad = np.expand_dims(grad, ax)
    return np.broadcast_to(grad, tuple(shape)).copy()


def add_along_axis(out: np.ndarray, dim: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``out[..., index[i], ...] += values[i]`` along `dim`, accumulating repeated indices."""
    index = np.asarray(index, dtype=np.int64)
    if out.ndim == 0:
        out += np.sum(values)
        return out
    grid: list[Any] = list(np.indices(index.shape, sparse=True))
    grid[dim] = index
    np.add.at(out, tuple(grid), np.broadcast_to(values, index.shape))
    return out


def take_along(grad: np.ndarray, dim: int, index: np.ndarray) -> np.ndarray:
    """``grad[..., index[i], ...]`` along `dim`, for an index smaller than `grad` elsewhere."""
    index = np.asarray(index, dtype=np.int64)
    if grad.ndim == 0:
        return grad.copy()
    grid: list[Any] = list(np.indices(index.shape, sparse=True))
    grid[dim] = index
    return grad[tuple(grid)]


def _at(ndim: int, dim: int, key: Any) -> tuple[Any, ...]:
    """An index that applies `key` on axis `dim` and takes everything elsewhere."""
    return (slice(None),) * dim + (key,) + (slice(None),) * (ndim - dim - 1)


def _grads_or_zeros(ctx: RuleContext) -> list[np.ndarray]:
    # Outputs nobody used send no gradient; they contribute zeros.
    return [
        np.zeros(s) if g is None else g
        for g, s in zip(ctx.grad_outputs, ctx.output_shapes, strict=False)
    ]


def _dim(draw: Draw, ndim: int, extra: int = 0) -> int:
    """A dim in [-(ndim+extra), ndim+extra), negative half the time."""
    n = max(ndim + extra, 1)
    return draw(st.integers(-n, n - 1), label="dim")


def _seed_rng(draw: Draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="index seed"))


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
    d0, d1 = _dim(draw, len(s)), _dim(draw, len(s))
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
    d0, d1 = _dim(draw, len(s)), _dim(draw, len(s))
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
    formula=r"\bar{X} = \textstyle\sum_{\text{broadcast axes}} \bar{Y}\ \text{(sum back to } \operatorname{shape}(X))",
    example=_expand_example,
)
def _expand(ctx: RuleContext):
    return (sum_to(ctx.grad, ctx["self_sym_sizes"]),)


def _with_ones(draw: Draw) -> tuple[int, ...]:
    s = shape(draw, min_dims=0, max_dims=4, max_side=3)
    return tuple(draw(st.sampled_from([1, n]), label="make 1") for n in s)


def _squeeze_example(inplace: bool, variant: int):
    def example(draw: Draw) -> Case:
        s = _with_ones(draw)
        if variant == 2 and not s:
            s = (1,)
        x = tensor(draw, s)
        if variant == 0:
            args: tuple[Any, ...] = ()
        elif variant == 1:
            args = (_dim(draw, len(s)),)
        else:
            dims = draw(st.lists(st.integers(0, len(s) - 1), min_size=1, unique=True), label="dims")
            args = (tuple(d - len(s) if draw(st.booleans(), label="neg") else d for d in dims),)
        if inplace:
            return Case(inputs=(x,), fn=lambda x: x.clone().squeeze_(*args))
        return Case(inputs=(x,), fn=lambda x: x.squeeze(*args))

    return example


_SQUEEZE_FORMULA = r"\bar{X} = \operatorname{reshape}(\bar{Y}, \operatorname{shape}(X))\ \text{(put the size-1 axes back)}"


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
        d = _dim(draw, len(s), extra=1)
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
)
def _to_copy(ctx: RuleContext):
    return (ctx.grad,)


# ---------------------------------------------------------------- joining and splitting


def _cat_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = _dim(draw, len(s))
    k = draw(st.integers(1, 4), label="pieces")
    sizes = [draw(st.integers(1, 3), label="size") for _ in range(k)]
    # At most one piece is a constant, so every other piece's place in the output is known.
    constant = draw(st.integers(-1, k - 1), label="constant piece")
    parts = []
    for i, n in enumerate(sizes):
        ps = list(s)
        ps[d] = n
        parts.append(tensor(draw, tuple(ps), requires_grad=(i != constant or k == 1)))
    return Case(inputs=tuple(parts), fn=lambda *p: torch.cat(p, dim=d))


@rule(
    "CatBackward0",
    formula=r"\bar{X}_i = \bar{Y}[\ldots, o_i : o_i + n_i, \ldots]\ \text{(the slice of } Y \text{ that } X_i \text{ filled)}",
    example=_cat_example,
)
def _cat(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    shapes = list(ctx.input_shapes)
    # cat skips 1-D empty inputs whatever the dim; they take no room in the output.
    sizes: list[int | None] = [
        None if s is None else (0 if (s == (0,) and g.ndim != 1) else s[d]) for s in shapes
    ]
    missing = [i for i, n in enumerate(sizes) if n is None]
    if len(missing) == 1:
        sizes[missing[0]] = g.shape[d] - sum(n for n in sizes if n is not None)
    offsets: list[int | None] = [None] * len(sizes)
    at = 0
    for i, n in enumerate(sizes):
        if n is None:
            break
        offsets[i] = at
        at += n
    at = g.shape[d]
    for i in range(len(sizes) - 1, -1, -1):
        if sizes[i] is None:
            break
        at -= sizes[i]
        offsets[i] = at
    out: list[np.ndarray | None] = []
    for s, n, o in zip(shapes, sizes, offsets, strict=True):
        if s is None:
            out.append(None)
        elif o is None or n is None:
            raise GradvizError(
                "CatBackward0: two or more constant inputs hide where this input sits in the "
                "output; the node saves only the dim"
            )
        elif n == 0 and s == (0,):
            out.append(np.zeros(s))
        else:
            out.append(g[_at(g.ndim, d, slice(o, o + n))])
    return tuple(out)


def _stack_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    d = _dim(draw, len(s), extra=1)
    k = draw(st.integers(1, 4), label="pieces")
    parts = tuple(tensor(draw, s) for _ in range(k))
    return Case(inputs=parts, fn=lambda *p: torch.stack(p, dim=d))


@rule(
    "StackBackward0",
    formula=r"\bar{X}_i = \bar{Y}[\ldots, i, \ldots]\ \text{(index } i \text{ on the new axis)}",
    example=_stack_example,
)
def _stack(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    return tuple(
        None if s is None else np.take(g, i, axis=d) for i, s in enumerate(ctx.input_shapes)
    )


def _split_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = _dim(draw, len(s))
        n = s[d]
        if method == "split_with_sizes":
            cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3), label="cuts"))
            arg: Any = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
            op = "split"
        else:
            arg = draw(st.integers(1, n + 1), label="split size (or chunk count)")
            op = method
        x = tensor(draw, s)
        sel = draw(st.randoms(use_true_random=False), label="keep")

        def fn(x):
            pieces = getattr(x, op)(arg, d)
            # Pieces left out send no gradient back: the rule must fill zeros for them.
            kept = [p for p in pieces if sel.random() < 0.7]
            return tuple(kept or pieces[-1:])

        return Case(inputs=(x,), fn=fn)

    return example


def _split_grads(ctx: RuleContext):
    grads = _grads_or_zeros(ctx)
    d = axis(ctx["dim"], len(ctx["self_sym_sizes"]))
    return (np.concatenate(grads, axis=d).reshape(ctx["self_sym_sizes"]),)


_SPLIT_FORMULA = r"\bar{X} = \operatorname{cat}_d(\bar{Y}_1, \ldots, \bar{Y}_k)\ \text{(zeros for unused pieces)}"


def _split_any_example(draw: Draw) -> Case:
    return _split_example(draw(st.sampled_from(["split", "chunk"]), label="method"))(draw)


@rule("SplitBackward0", formula=_SPLIT_FORMULA, example=_split_any_example)
def _split(ctx: RuleContext):
    return _split_grads(ctx)


@rule("SplitWithSizesBackward0", formula=_SPLIT_FORMULA, example=_split_example("split_with_sizes"))
def _split_with_sizes(ctx: RuleContext):
    return _split_grads(ctx)


@rule("UnsafeSplitBackward0", formula=_SPLIT_FORMULA, example=_split_example("unsafe_split"))
def _unsafe_split(ctx: RuleContext):
    return _split_grads(ctx)


def _unbind_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = _dim(draw, len(s))
    x = tensor(draw, s)
    sel = draw(st.randoms(use_true_random=False), label="keep")

    def fn(x):
        pieces = x.unbind(d)
        return tuple([p for p in pieces if sel.random() < 0.7] or pieces[:1])

    return Case(inputs=(x,), fn=fn)


@rule(
    "UnbindBackward0",
    formula=r"\bar{X} = \operatorname{stack}_d(\bar{Y}_1, \ldots, \bar{Y}_n)\ \text{(zeros for unused pieces)}",
    example=_unbind_example,
)
def _unbind(ctx: RuleContext):
    grads = _grads_or_zeros(ctx)
    d = axis(ctx["dim"], grads[0].ndim + 1)
    return (np.stack(grads, axis=d),)


# ---------------------------------------------------------------- slicing and picking


def _bound(value: int | None) -> int | None:
    return None if value is None else signed(value)


def _slice_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3, max_side=5)
    d = draw(st.integers(0, len(s) - 1), label="dim")
    n = s[d]
    start = draw(st.one_of(st.none(), st.integers(-n - 1, n)), label="start")
    stop = draw(st.one_of(st.none(), st.integers(-n - 1, n + 2)), label="stop")
    step = draw(st.integers(1, 3), label="step")
    x = tensor(draw, s)
    if draw(st.booleans(), label="narrow") and n > 1:
        a = draw(st.integers(-n, n - 1), label="narrow start")
        length = draw(st.integers(0, n - (a % n)), label="length")
        return Case(inputs=(x,), fn=lambda x: x.narrow(d, a, length))
    if range(n)[start:stop:step] == range(n):
        # Indexing that keeps the whole dim returns x itself, with no node; call the op.
        return Case(inputs=(x,), fn=lambda x: torch.ops.aten.slice(x, d, start, stop, step))
    key = _at(len(s), d, slice(start, stop, step))
    return Case(inputs=(x,), fn=lambda x: x[key])


@rule(
    "SliceBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, a{:}b{:}s, \ldots] = \bar{Y}",
    example=_slice_example,
)
def _slice(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    d = axis(ctx["dim"], len(sizes))
    out = np.zeros(sizes)
    key = slice(_bound(ctx["start"]), _bound(ctx["end"]), signed(ctx["step"]))
    out[_at(len(sizes), d, key)] = ctx.grad
    return (out,)


def _narrow_copy_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = _dim(draw, len(s))
    n = s[d]
    start = draw(st.integers(0, n - 1), label="start")
    length = draw(st.integers(0, n - start), label="length")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.narrow_copy(d, start, length))


@rule(
    "NarrowCopyBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, a{:}a{+}\ell, \ldots] = \bar{Y}",
    example=_narrow_copy_example,
)
def _narrow_copy(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    d = axis(ctx["dim"], len(sizes))
    start = signed(ctx["start"]) % max(sizes[d], 1)
    out = np.zeros(sizes)
    out[_at(len(sizes), d, slice(start, start + int(ctx["length"])))] = ctx.grad
    return (out,)


def _select_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = _dim(draw, len(s))
    i = draw(st.integers(-s[d], s[d] - 1), label="index")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.select(d, i))


@rule(
    "SelectBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, i, \ldots] = \bar{Y}",
    example=_select_example,
)
def _select(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    d = axis(ctx["dim"], len(sizes))
    out = np.zeros(sizes)
    out[_at(len(sizes), d, signed(ctx["index"]))] = ctx.grad
    return (out,)


def _index_key(indices: Sequence[Any]) -> tuple[Any, ...]:
    """Saved advanced indices as a NumPy key: None means a full slice, masks become ints."""
    key: list[Any] = []
    for idx in indices:
        if idx is None:
            key.append(slice(None))
        elif np.asarray(idx).dtype == np.bool_:
            key.extend(np.nonzero(idx))
        else:
            key.append(np.asarray(idx, dtype=np.int64))
    return tuple(key)


def _index_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3, max_side=4)
    x = tensor(draw, s)
    rng = _seed_rng(draw)
    k = draw(st.integers(1, 5), label="picks")

    def ints(n: int) -> torch.Tensor:  # repeats and negative indices on purpose
        return torch.tensor(rng.integers(-n, n, size=k), dtype=torch.long)

    modes = ["first", "mask", "tuple"] + (["middle", "apart", "mask dim1"] if len(s) >= 2 else [])
    mode = draw(st.sampled_from(modes), label="mode")
    if mode == "first":
        i0 = ints(s[0])
        return Case(inputs=(x,), fn=lambda x: x[i0])
    if mode == "mask":
        mask = torch.tensor(rng.random(s) < 0.5)
        return Case(inputs=(x,), fn=lambda x: x[mask])
    if mode == "tuple":
        idx = tuple(ints(n) for n in s)
        return Case(inputs=(x,), fn=lambda x: x[idx])
    if mode == "middle":
        i1 = ints(s[1])
        return Case(inputs=(x,), fn=lambda x: x[:, i1])
    if mode == "mask dim1":
        m1 = torch.tensor(rng.random(s[1]) < 0.5)
        return Case(inputs=(x,), fn=lambda x: x[:, m1])
    # Advanced indices apart from each other: their axes move to the front.
    i0, il = ints(s[0]), ints(s[-1])
    return Case(inputs=(x,), fn=lambda x: x[i0, ..., il] if x.dim() > 2 else x[i0, il])


@rule(
    "IndexBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[I] \mathrel{+}= \bar{Y}\ \text{(repeated indices accumulate)}",
    example=_index_example,
)
def _index(ctx: RuleContext):
    out = np.zeros(ctx["self_sym_sizes"])
    np.add.at(out, _index_key(ctx["indices"]), ctx.grad)
    return (out,)


def _index_select_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    d = _dim(draw, len(s))
    n = s[d] if s else 1
    x = tensor(draw, s)
    idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5), label="index")
    index = torch.tensor(idx[0] if not s else idx, dtype=torch.long)
    return Case(inputs=(x,), fn=lambda x: x.index_select(d, index))


@rule(
    "IndexSelectBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, \mathrm{idx}_j, \ldots] \mathrel{+}= \bar{Y}[\ldots, j, \ldots]",
    example=_index_select_example,
)
def _index_select(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    out = np.zeros(sizes)
    if not sizes:
        return (out + np.sum(ctx.grad),)
    d = axis(ctx["dim"], len(sizes))
    np.add.at(
        out,
        _at(len(sizes), d, np.atleast_1d(ctx["index"])),
        ctx.grad.reshape(
            tuple(np.size(ctx["index"]) if a == d else n for a, n in enumerate(sizes))
        ),
    )
    return (out,)


def _gather_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = _dim(draw, len(s))
    x = tensor(draw, s)
    rng = _seed_rng(draw)
    ishape = tuple(
        draw(st.integers(1, 4), label="index side")
        if a == d % len(s)
        else draw(st.integers(1, n), label="index side")
        for a, n in enumerate(s)
    )
    index = torch.tensor(rng.integers(0, s[d], size=ishape), dtype=torch.long)
    return Case(inputs=(x,), fn=lambda x: x.gather(d, index))


@rule(
    "GatherBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, \mathrm{idx}[\mathbf{j}], \ldots] \mathrel{+}= \bar{Y}[\mathbf{j}]",
    example=_gather_example,
)
def _gather(ctx: RuleContext):
    x_shape = ctx.input_shapes[0] or np.shape(ctx["self"])
    out = np.zeros(x_shape)
    return (add_along_axis(out, axis(ctx["dim"], len(x_shape)), ctx["index"], ctx.grad),)


def _take_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    n = int(np.prod(s))
    x = tensor(draw, s)
    idx = draw(st.lists(st.integers(-n, n - 1), min_size=0, max_size=6), label="index")
    index = torch.tensor(idx, dtype=torch.long)
    return Case(inputs=(x,), fn=lambda x: x.take(index))


@rule(
    "TakeBackward0",
    formula=r"\bar{x}_{\text{flat}} = 0,\ \ \bar{x}_{\text{flat}}[\mathrm{idx}_j] \mathrel{+}= \bar{Y}_j",
    example=_take_example,
)
def _take(ctx: RuleContext):
    x_shape = ctx.input_shapes[0] or np.shape(ctx["self"])
    flat = np.zeros(int(np.prod(x_shape)))
    np.add.at(flat, np.asarray(ctx["index"], dtype=np.int64).ravel(), ctx.grad.ravel())
    return (flat.reshape(x_shape),)


def _masked_select_example(draw: Draw) -> Case:
    s = _with_ones(draw)
    x = tensor(draw, s)
    rng = _seed_rng(draw)
    mshape = tuple(draw(st.sampled_from([1, 3]), label="mask side") if n == 1 else n for n in s)
    mask = torch.tensor(rng.random(mshape) < 0.5)
    return Case(inputs=(x,), fn=lambda x: x.masked_select(mask))


@rule(
    "MaskedSelectBackward0",
    formula=r"\bar{X} = \operatorname{sum\_to}_{X}\big(0 \text{ with } \bar{Y} \text{ placed where } M\big)",
    example=_masked_select_example,
)
def _masked_select(ctx: RuleContext):
    x, mask = ctx["self"], np.asarray(ctx["mask"], dtype=bool)
    full = np.zeros(np.broadcast_shapes(np.shape(x), mask.shape))
    full[np.broadcast_to(mask, full.shape)] = ctx.grad
    return (sum_to(full, np.shape(x)),)


def _diagonal_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=4)
    d1 = _dim(draw, len(s))
    d2 = draw(
        st.sampled_from([a for a in range(-len(s), len(s)) if a % len(s) != d1 % len(s)]),
        label="dim2",
    )
    offset = draw(st.integers(-3, 3), label="offset")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.diagonal(offset, d1, d2))


def _diag_copy_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=2 if draw(st.booleans(), label="torch.diag") else 4)
    k = draw(st.integers(-3, 3), label="offset")
    x = tensor(draw, s)
    if len(s) == 2:
        return Case(inputs=(x,), fn=lambda x: torch.diag(x, k))
    d1, d2 = draw(st.lists(st.integers(0, len(s) - 1), min_size=2, max_size=2, unique=True), label="dims")
    return Case(inputs=(x,), fn=lambda x: torch.diagonal_copy(x, k, d1, d2))


# torch.diag of a matrix (and diagonal_copy) saves what diagonal saves: the same rule.
@rule(
    "DiagonalBackward0_copy",
    formula=r"\bar{X} = 0,\ \ \bar{X}_{\ldots, i, i+k, \ldots} = \bar{Y}_{\ldots, i}",
    example=_diag_copy_example,
)
@rule(
    "DiagonalBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}_{\ldots, i, i+k, \ldots} = \bar{Y}_{\ldots, i}",
    example=_diagonal_example,
)
def _diagonal(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    nd = len(sizes)
    d1, d2, k = axis(ctx["dim1"], nd), axis(ctx["dim2"], nd), signed(ctx["offset"])
    out = np.zeros(sizes)
    g = ctx.grad
    n = g.shape[-1]
    rows = np.arange(n) + max(-k, 0)
    cols = np.arange(n) + max(k, 0)
    # moveaxis gives a view, so writing through it fills `out`.
    np.moveaxis(out, (d1, d2), (-2, -1))[..., rows, cols] = g
    return (out,)


def _diag_embed_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    offset = draw(st.integers(-2, 2), label="offset")
    x = tensor(draw, s)
    if len(s) == 1 and draw(st.booleans(), label="diag"):
        return Case(inputs=(x,), fn=lambda x: torch.diag(x, offset))
    nd = len(s) + 1
    d1 = _dim(draw, nd)
    d2 = draw(st.sampled_from([a for a in range(-nd, nd) if a % nd != d1 % nd]), label="dim2")
    return Case(inputs=(x,), fn=lambda x: torch.diag_embed(x, offset, d1, d2))


@rule(
    "DiagEmbedBackward0",
    formula=r"\bar{X}_{\ldots, i} = \bar{Y}_{\ldots, i, i+k, \ldots}\ \text{(the diagonal of } \bar{Y})",
    example=_diag_embed_example,
)
def _diag_embed(ctx: RuleContext):
    g = ctx.grad
    d1, d2 = axis(ctx["dim1"], g.ndim), axis(ctx["dim2"], g.ndim)
    return (np.diagonal(g, signed(ctx["offset"]), d1, d2).copy(),)


def _unfold_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=5)
    d = _dim(draw, len(s))
    n = s[d] if s else 1
    size = draw(st.integers(0 if n else 1, n), label="size")
    step = draw(st.integers(1, 3), label="step")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.unfold(d, size, step))


@rule(
    "UnfoldBackward0",
    formula=r"\bar{X}[\ldots, w s + j, \ldots] \mathrel{+}= \bar{Y}[\ldots, w, \ldots, j]\ \text{(overlapping windows add up)}",
    example=_unfold_example,
)
def _unfold(ctx: RuleContext):
    sizes = ctx["self_sym_sizes"]
    size, step = int(ctx["size"]), int(ctx["step"])
    g = ctx.grad
    if not sizes:
        return (np.sum(g).reshape(()),)
    d = axis(ctx["dimension"], len(sizes))
    out = np.zeros(sizes)
    for w in range(g.shape[d]):
        window = np.moveaxis(np.take(g, w, axis=d), -1, d)
        out[_at(len(sizes), d, slice(w * step, w * step + size))] += window
    return (out,)


# ---------------------------------------------------------------- reorderings


def _flip_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    dims = draw(
        st.lists(st.integers(0, len(s) - 1), min_size=0, max_size=len(s), unique=True), label="dims"
    )
    dims = [d - len(s) if draw(st.booleans(), label="neg") else d for d in dims]
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.flip(dims))


@rule("FlipBackward0", formula=r"\bar{X} = \operatorname{flip}_{D}(\bar{Y})", example=_flip_example)
def _flip(ctx: RuleContext):
    g = ctx.grad
    dims = tuple(axis(d, g.ndim) for d in ctx["dims"])
    return (np.flip(g, axis=dims).copy() if dims else g,)


def _roll_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    x = tensor(draw, s)
    if draw(st.booleans(), label="flat"):
        shift = draw(st.integers(-7, 7), label="shift")
        return Case(inputs=(x,), fn=lambda x: x.roll(shift))
    dims = draw(
        st.lists(st.integers(0, len(s) - 1), min_size=1, max_size=len(s), unique=True), label="dims"
    )
    dims = [d - len(s) if draw(st.booleans(), label="neg") else d for d in dims]
    shifts = [draw(st.integers(-5, 5), label="shift") for _ in dims]
    return Case(inputs=(x,), fn=lambda x: x.roll(shifts, dims))


@rule(
    "RollBackward0",
    formula=r"\bar{X} = \operatorname{roll}(\bar{Y}, -\text{shifts})",
    example=_roll_example,
)
def _roll(ctx: RuleContext):
    g = ctx.grad
    shifts = [-signed(s) for s in ctx["shifts"]]
    dims = [axis(d, g.ndim) for d in ctx["dims"]]
    if not dims:
        return (np.roll(g.ravel(), shifts[0]).reshape(g.shape),)
    return (np.roll(g, shifts, axis=dims),)


def _repeat_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=3)
    reps = tuple(
        draw(st.lists(st.integers(1, 3), min_size=len(s), max_size=len(s) + 2), label="repeats")
    )
    x = tensor(draw, s)
    if draw(st.booleans(), label="tile"):
        return Case(inputs=(x,), fn=lambda x: x.tile(reps))
    return Case(inputs=(x,), fn=lambda x: x.repeat(*reps) if reps else x.repeat(()))


@rule(
    "RepeatBackward0",
    formula=r"\bar{X} = \textstyle\sum_{\text{copies}} \bar{Y}_{\text{copy}}\ \text{(add up every tile)}",
    example=_repeat_example,
)
def _repeat(ctx: RuleContext):
    sizes = tuple(ctx["self_sym_sizes"])
    reps = tuple(int(r) for r in ctx["repeats"])
    padded = (1,) * (len(reps) - len(sizes)) + sizes
    # Split every output axis into (copy, original) and add up the copies.
    split = [n for pair in zip(reps, padded, strict=True) for n in pair]
    g = ctx.grad.reshape(split)
    return (g.sum(axis=tuple(range(0, len(split), 2))).reshape(sizes),)


# ---------------------------------------------------------------- strided views


def _as_strided_example(draw: Draw) -> Case:
    nd = draw(st.integers(1, 3), label="ndim")
    size = tuple(draw(st.integers(1, 3), label="size") for _ in range(nd))
    stride = tuple(draw(st.integers(0, 4), label="stride") for _ in range(nd))
    reach = sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    offset = draw(st.one_of(st.none(), st.integers(0, 4)), label="offset")
    numel = reach + (offset or 0) + 1 + draw(st.integers(0, 3), label="slack")
    x_shape = draw(st.sampled_from([(numel,), (1, numel), (numel, 1)]), label="x shape")
    x = tensor(draw, x_shape)
    return Case(inputs=(x,), fn=lambda x: x.as_strided(size, stride, offset))


@rule(
    "AsStridedBackward0",
    formula=r"\bar{x}_{\text{flat}}[o + \textstyle\sum_k i_k s_k] \mathrel{+}= \bar{Y}_{i_1 \ldots i_n}",
    example=_as_strided_example,
    note="Exact when the input is contiguous and starts its own storage (a leaf or a fresh "
    "result); the node does not save the input's own strides or offset.",
)
def _as_strided(ctx: RuleContext):
    x_shape = ctx.input_shapes[0]
    g = ctx.grad
    size, stride = tuple(ctx["size"]), tuple(ctx["stride"])
    offset = ctx["storage_offset"] or 0
    pos = np.full(size, offset, dtype=np.int64)
    for k, (n, s) in enumerate(zip(size, stride, strict=True)):
        pos += (np.arange(n) * s).reshape((n,) + (1,) * (len(size) - k - 1))
    flat = np.zeros(int(np.prod(x_shape)))
    np.add.at(flat, pos.ravel(), g.ravel())
    return (flat.reshape(x_shape),)


# ---------------------------------------------------------------- writes into a copy


def _scatter_example(kind: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = _dim(draw, len(s))
        x = tensor(draw, s)
        rng = _seed_rng(draw)
        ishape = tuple(draw(st.integers(1, n), label="index side") for n in s)
        if kind == "add":
            index = rng.integers(0, s[d], size=ishape)
        else:
            # Distinct targets along dim: duplicates make scatter's forward nondeterministic.
            ishape = tuple(min(n, s[d]) if a == d % len(s) else n for a, n in enumerate(ishape))
            index = np.argsort(
                rng.random(tuple(s[d] if a == d % len(s) else n for a, n in enumerate(ishape))),
                axis=d % len(s),
            )
            index = np.take(index, np.arange(ishape[d % len(s)]), axis=d % len(s))
        index_t = torch.tensor(index, dtype=torch.long)
        src = tensor(draw, ishape)
        if kind == "value":
            return Case(inputs=(x,), fn=lambda x: x.scatter(d, index_t, 2.5))
        if kind == "add":
            return Case(inputs=(x, src), fn=lambda x, src: x.scatter_add(d, index_t, src))
        return Case(inputs=(x, src), fn=lambda x, src: x.scatter(d, index_t, src))

    return example


def _zero_at(grad: np.ndarray, dim: int, index: np.ndarray) -> np.ndarray:
    out = grad.copy()
    if out.ndim == 0:
        return np.zeros_like(out)
    grid: list[Any] = list(np.indices(np.shape(index), sparse=True))
    grid[dim] = np.asarray(index, dtype=np.int64)
    out[tuple(grid)] = 0.0
    return out


@rule(
    "ScatterBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at the written places},\ \ \bar{S} = \operatorname{gather}_d(\bar{Y}, \mathrm{idx})",
    example=_scatter_example("src"),
)
def _scatter_src(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    return (_zero_at(g, d, ctx["index"]), take_along(g, d, ctx["index"]))


@rule(
    "ScatterBackward1",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at the written places}",
    example=_scatter_example("value"),
)
def _scatter_value(ctx: RuleContext):
    g = ctx.grad
    return (_zero_at(g, axis(ctx["dim"], g.ndim), ctx["index"]),)


@rule(
    "ScatterAddBackward0",
    formula=r"\bar{X} = \bar{Y},\ \ \bar{S} = \operatorname{gather}_d(\bar{Y}, \mathrm{idx})",
    example=_scatter_example("add"),
)
def _scatter_add(ctx: RuleContext):
    g = ctx.grad
    return (g, take_along(g, axis(ctx["dim"], g.ndim), ctx["index"]))


def _index_add_example(kind: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = _dim(draw, len(s))
        x = tensor(draw, s)
        k = draw(st.integers(1, 4), label="picks")
        if kind == "copy":
            k = min(k, s[d])
            idx = draw(st.permutations(range(s[d])), label="index")[:k]
        else:
            idx = draw(st.lists(st.integers(0, s[d] - 1), min_size=k, max_size=k), label="index")
        index = torch.tensor(idx, dtype=torch.long)
        src_shape = tuple(k if a == d % len(s) else n for a, n in enumerate(s))
        src = tensor(draw, src_shape)
        if kind == "copy":
            return Case(inputs=(x, src), fn=lambda x, src: x.index_copy(d, index, src))
        alpha = draw(st.sampled_from([1.0, -2.0, 0.5]), label="alpha")
        return Case(inputs=(x, src), fn=lambda x, src: x.index_add(d, index, src, alpha=alpha))

    return example


def _select_rows(g: np.ndarray, dim: int, index: np.ndarray) -> np.ndarray:
    return np.take(g, np.atleast_1d(np.asarray(index, dtype=np.int64)), axis=dim)


@rule(
    "IndexAddBackward0",
    formula=r"\bar{X} = \bar{Y},\ \ \bar{S} = \alpha\,\bar{Y}[\ldots, \mathrm{idx}, \ldots]",
    example=_index_add_example("add"),
)
def _index_add(ctx: RuleContext):
    g = ctx.grad
    src = None
    if ctx.input_shapes[1] is not None:
        rows = _select_rows(g, axis(ctx["dim"], g.ndim), ctx["index"]) if g.ndim else g
        src = ctx["alpha"] * rows.reshape(ctx.input_shapes[1])
    return (g, src)


@rule(
    "IndexCopyBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at rows idx},\ \ \bar{S} = \bar{Y}[\ldots, \mathrm{idx}, \ldots]",
    example=_index_add_example("copy"),
)
def _index_copy(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    index = np.atleast_1d(np.asarray(ctx["index"], dtype=np.int64))
    x_grad = g.copy()
    x_grad[_at(g.ndim, d, index)] = 0.0
    src = (
        None
        if ctx.input_shapes[1] is None
        else _select_rows(g, d, index).reshape(ctx.input_shapes[1])
    )
    return (x_grad, src)


def _index_fill_example(tensor_value: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = _dim(draw, len(s))
        x = tensor(draw, s)
        # Repeats allowed, negatives not: the backward's index_select rejects them.
        idx = draw(st.lists(st.integers(0, s[d] - 1), min_size=1, max_size=4), label="index")
        index = torch.tensor(idx, dtype=torch.long)
        if tensor_value:
            v = tensor(draw, ())
            return Case(inputs=(x, v), fn=lambda x, v: x.index_fill(d, index, v))
        return Case(inputs=(x,), fn=lambda x: x.index_fill(d, index, -1.0))

    return example


@rule(
    "IndexFillBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at rows idx}",
    example=_index_fill_example(False),
)
def _index_fill_scalar(ctx: RuleContext):
    return _index_fill(ctx)


@rule(
    "IndexFillBackward1",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at rows idx},\ \ \bar{v} = \textstyle\sum_{\text{filled}} \bar{Y}",
    example=_index_fill_example(True),
)
def _index_fill_tensor(ctx: RuleContext):
    return _index_fill(ctx)


def _index_fill(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    index = np.atleast_1d(np.asarray(ctx["index"], dtype=np.int64))
    x_grad = g.copy()
    if g.ndim:
        x_grad[_at(g.ndim, d, index)] = 0.0
        filled = g[_at(g.ndim, d, np.unique(index % g.shape[d]))]
    else:
        x_grad[...] = 0.0
        filled = g
    if len(ctx.input_shapes) < 2 or ctx.input_shapes[1] is None:
        return (x_grad,)
    return (x_grad, np.sum(filled).reshape(ctx.input_shapes[1]))


def _index_put_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    x = tensor(draw, s)
    rng = _seed_rng(draw)
    accumulate = draw(st.booleans(), label="accumulate")
    k = draw(st.integers(1, 4), label="picks")
    if accumulate:
        i0 = rng.integers(-s[0], s[0], size=k)
    else:
        # Distinct rows: with repeats and accumulate=False the forward is nondeterministic.
        k = min(k, s[0])
        i0 = rng.permutation(s[0])[:k]
    index = torch.tensor(i0, dtype=torch.long)
    v_shape = draw(st.sampled_from([(k, *s[1:]), tuple(s[1:]), ()]), label="values shape")
    v = tensor(draw, v_shape)
    return Case(inputs=(x, v), fn=lambda x, v: x.index_put((index,), v, accumulate=accumulate))


@rule(
    "IndexPutBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ (accumulate) or } \bar{Y} \text{ with } 0 \text{ at } I,\ \ \bar{V} = \operatorname{sum\_to}_V(\bar{Y}[I])",
    example=_index_put_example,
)
def _index_put(ctx: RuleContext):
    g = ctx.grad
    key = _index_key(ctx["indices"])
    x_grad = g.copy()
    if not ctx["accumulate"]:
        x_grad[key] = 0.0
    v_shape = ctx.input_shapes[1]
    return (x_grad, None if v_shape is None else sum_to(g[key], v_shape))


def _scatter_view_example(kind: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = _dim(draw, len(s))
        x = tensor(draw, s)
        n = s[d]
        if kind == "select":
            i = draw(st.integers(-n, n - 1), label="index")
            src = tensor(draw, tuple(m for a, m in enumerate(s) if a != d % len(s)))
            return Case(inputs=(x, src), fn=lambda x, src: torch.select_scatter(x, src, d, i))
        start = draw(st.integers(0, n - 1), label="start")
        step = draw(st.integers(1, 2), label="step")
        end = draw(st.integers(start + 1, n), label="end")
        count = len(range(start, end, step))
        src = tensor(draw, tuple(count if a == d % len(s) else m for a, m in enumerate(s)))
        return Case(
            inputs=(x, src), fn=lambda x, src: torch.slice_scatter(x, src, d, start, end, step)
        )

    return example


@rule(
    "SelectScatterBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at } [\ldots, i, \ldots],\ \ \bar{S} = \bar{Y}[\ldots, i, \ldots]",
    example=_scatter_view_example("select"),
)
def _select_scatter(ctx: RuleContext):
    g = ctx.grad
    key = _at(g.ndim, axis(ctx["dim"], g.ndim), signed(ctx["index"]))
    x_grad = g.copy()
    x_grad[key] = 0.0
    return (x_grad, g[key].copy())


@rule(
    "SliceScatterBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at } [\ldots, a{:}b{:}s, \ldots],\ \ \bar{S} = \bar{Y}[\ldots, a{:}b{:}s, \ldots]",
    example=_scatter_view_example("slice"),
)
def _slice_scatter(ctx: RuleContext):
    g = ctx.grad
    start = ctx["start"]
    end = ctx["end"]
    key = _at(
        g.ndim, axis(ctx["dim"], g.ndim), slice(_bound(start), _bound(end), signed(ctx["step"]))
    )
    x_grad = g.copy()
    x_grad[key] = 0.0
    return (x_grad, g[key].copy())

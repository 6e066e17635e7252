"""Writes into a copy: scatter, scatter_add, index_add/index_copy/index_fill, index_put,
select_scatter, slice_scatter and masked_scatter. The overwritten entries of the destination
get no gradient; the source gets the gradient of the entries it was written to."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import at_axis, axis, bound, index_key, signed, take_along
from gradviz.backward.rules._examples import Draw, draw_dim, seeded_rng, shape, suffix_shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------- writes into a copy


def _scatter_example(kind: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = draw_dim(draw, len(s))
        x = tensor(draw, s)
        rng = seeded_rng(draw)
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
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at the written places},\ \ \bar{S} = "
            r"\operatorname{gather}_d(\bar{Y}, \mathrm{idx})",
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
        d = draw_dim(draw, len(s))
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
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at rows idx},\ \ \bar{S} = \bar{Y}[\ldots, "
            r"\mathrm{idx}, \ldots]",
    example=_index_add_example("copy"),
)
def _index_copy(ctx: RuleContext):
    g = ctx.grad
    d = axis(ctx["dim"], g.ndim)
    index = np.atleast_1d(np.asarray(ctx["index"], dtype=np.int64))
    x_grad = g.copy()
    x_grad[at_axis(g.ndim, d, index)] = 0.0
    src = (
        None
        if ctx.input_shapes[1] is None
        else _select_rows(g, d, index).reshape(ctx.input_shapes[1])
    )
    return (x_grad, src)


def _index_fill_example(tensor_value: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = draw_dim(draw, len(s))
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
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at rows idx},\ \ \bar{v} = "
            r"\textstyle\sum_{\text{filled}} \bar{Y}",
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
        x_grad[at_axis(g.ndim, d, index)] = 0.0
        filled = g[at_axis(g.ndim, d, np.unique(index % g.shape[d]))]
    else:
        x_grad[...] = 0.0
        filled = g
    if len(ctx.input_shapes) < 2 or ctx.input_shapes[1] is None:
        return (x_grad,)
    return (x_grad, np.sum(filled).reshape(ctx.input_shapes[1]))


def _index_put_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    x = tensor(draw, s)
    rng = seeded_rng(draw)
    accumulate = draw(st.booleans(), label="accumulate")
    k = draw(st.integers(1, 4), label="picks")
    i0: np.ndarray
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
    formula=r"\bar{X} = \bar{Y} \text{ (accumulate) or } \bar{Y} \text{ with } 0 \text{ at } I,\ \ "
            r"\bar{V} = \operatorname{sum\_to}_V(\bar{Y}[I])",
    example=_index_put_example,
)
def _index_put(ctx: RuleContext):
    g = ctx.grad
    key = index_key(ctx["indices"])
    x_grad = g.copy()
    if not ctx["accumulate"]:
        x_grad[key] = 0.0
    v_shape = ctx.input_shapes[1]
    return (x_grad, None if v_shape is None else sum_to(g[key], v_shape))


def _scatter_view_example(kind: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        d = draw_dim(draw, len(s))
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
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at } [\ldots, i, \ldots],\ \ \bar{S} = "
            r"\bar{Y}[\ldots, i, \ldots]",
    example=_scatter_view_example("select"),
)
def _select_scatter(ctx: RuleContext):
    g = ctx.grad
    key = at_axis(g.ndim, axis(ctx["dim"], g.ndim), signed(ctx["index"]))
    x_grad = g.copy()
    x_grad[key] = 0.0
    return (x_grad, g[key].copy())


@rule(
    "SliceScatterBackward0",
    formula=r"\bar{X} = \bar{Y} \text{ with } 0 \text{ at } [\ldots, a{:}b{:}s, \ldots],\ \ "
            r"\bar{S} = \bar{Y}[\ldots, a{:}b{:}s, \ldots]",
    example=_scatter_view_example("slice"),
)
def _slice_scatter(ctx: RuleContext):
    g = ctx.grad
    start = ctx["start"]
    end = ctx["end"]
    key = at_axis(
        g.ndim, axis(ctx["dim"], g.ndim), slice(bound(start), bound(end), signed(ctx["step"]))
    )
    x_grad = g.copy()
    x_grad[key] = 0.0
    return (x_grad, g[key].copy())


# ---------------------------------------------------------------- masked scatter


def _masked_scatter_example(draw: Draw) -> Case:
    full = shape(draw, min_dims=0)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="mask seed"))
    mask = rng.random(suffix_shape(draw, full)) < 0.5
    inplace = draw(st.booleans(), label="in place")
    # In place, self keeps its shape, so it must be the broadcast shape itself.
    self_shape = full if inplace else suffix_shape(draw, full)
    count = int(np.broadcast_to(mask, np.broadcast_shapes(mask.shape, self_shape)).sum())
    extra = draw(st.integers(0, 3), label="unused source entries")
    source_shape = draw(st.sampled_from([(count + extra,), (1, count + extra)]), label="source "
            "shape")
    which = draw(st.sampled_from(["both", "self", "source"]), label="needs grad")
    x = tensor(draw, self_shape, requires_grad=which != "source")
    src = tensor(draw, source_shape, requires_grad=which != "self")
    m = torch.tensor(mask)
    if inplace:
        return Case(inputs=(x, src), fn=lambda x, src: (x * 1.0).masked_scatter_(m, src))
    return Case(inputs=(x, src), fn=lambda x, src: x.masked_scatter(m, src))


@rule(
    "MaskedScatterBackward0",
    formula=r"\bar{X} = \bar{Y}\,[\lnot M],\quad \bar{s}_{0..k-1} = \bar{Y}[M]\ "
            r"\text{(row-major)},\ \bar{s}_{k..} = 0",
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

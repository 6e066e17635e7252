"""Slicing and picking: slice, narrow, select, advanced indexing, index_select, gather,
take, masked_select, diagonal/diag_embed, unfold, flip, roll, repeat and as_strided. Backward
routes the gradient back to where each value came from (summing where one value was used
twice)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import (
    add_along_axis,
    at_axis,
    axis,
    bound,
    edge_shape,
    index_key,
    signed,
)
from gradviz.backward.rules._examples import Draw, draw_dim, seeded_rng, shape, tensor, with_ones
from gradviz.backward.rules._registry import Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------- slicing and picking


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
    key = at_axis(len(s), d, slice(start, stop, step))
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
    key = slice(bound(ctx["start"]), bound(ctx["end"]), signed(ctx["step"]))
    out[at_axis(len(sizes), d, key)] = ctx.grad
    return (out,)


def _narrow_copy_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = draw_dim(draw, len(s))
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
    out[at_axis(len(sizes), d, slice(start, start + int(ctx["length"])))] = ctx.grad
    return (out,)


def _select_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = draw_dim(draw, len(s))
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
    out[at_axis(len(sizes), d, signed(ctx["index"]))] = ctx.grad
    return (out,)


def _index_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3, max_side=4)
    x = tensor(draw, s)
    rng = seeded_rng(draw)
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
    formula=r"\bar{X} = 0,\ \ \bar{X}[I] \mathrel{+}= \bar{Y}\ "
    r"\text{(repeated indices accumulate)}",
    example=_index_example,
)
def _index(ctx: RuleContext):
    out = np.zeros(ctx["self_sym_sizes"])
    np.add.at(out, index_key(ctx["indices"]), ctx.grad)
    return (out,)


def _index_select_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    d = draw_dim(draw, len(s))
    n = s[d] if s else 1
    x = tensor(draw, s)
    idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5), label="index")
    index = torch.tensor(idx[0] if not s else idx, dtype=torch.long)
    return Case(inputs=(x,), fn=lambda x: x.index_select(d, index))


@rule(
    "IndexSelectBackward0",
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, \mathrm{idx}_j, \ldots] \mathrel{+}= \bar{Y}[\ldots, "
            r"j, \ldots]",
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
        at_axis(len(sizes), d, np.atleast_1d(ctx["index"])),
        ctx.grad.reshape(
            tuple(np.size(ctx["index"]) if a == d else n for a, n in enumerate(sizes))
        ),
    )
    return (out,)


def _gather_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = draw_dim(draw, len(s))
    x = tensor(draw, s)
    rng = seeded_rng(draw)
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
    formula=r"\bar{X} = 0,\ \ \bar{X}[\ldots, \mathrm{idx}[\mathbf{j}], \ldots] \mathrel{+}= "
            r"\bar{Y}[\mathbf{j}]",
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
    formula=r"\bar{x}_{\text{flat}} = 0,\ \ \bar{x}_{\text{flat}}[\mathrm{idx}_j] \mathrel{+}= "
            r"\bar{Y}_j",
    example=_take_example,
)
def _take(ctx: RuleContext):
    x_shape = ctx.input_shapes[0] or np.shape(ctx["self"])
    flat = np.zeros(int(np.prod(x_shape)))
    np.add.at(flat, np.asarray(ctx["index"], dtype=np.int64).ravel(), ctx.grad.ravel())
    return (flat.reshape(x_shape),)


def _masked_select_example(draw: Draw) -> Case:
    s = with_ones(draw)
    x = tensor(draw, s)
    rng = seeded_rng(draw)
    mshape = tuple(draw(st.sampled_from([1, 3]), label="mask side") if n == 1 else n for n in s)
    mask = torch.tensor(rng.random(mshape) < 0.5)
    return Case(inputs=(x,), fn=lambda x: x.masked_select(mask))


@rule(
    "MaskedSelectBackward0",
    formula=r"\bar{X} = \operatorname{sum\_to}_{X}\big(0 \text{ with } \bar{Y} \text{ placed where "
            r"} M\big)",
    example=_masked_select_example,
)
def _masked_select(ctx: RuleContext):
    x, mask = ctx["self"], np.asarray(ctx["mask"], dtype=bool)
    full = np.zeros(np.broadcast_shapes(np.shape(x), mask.shape))
    full[np.broadcast_to(mask, full.shape)] = ctx.grad
    return (sum_to(full, np.shape(x)),)


def _diagonal_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=4)
    d1 = draw_dim(draw, len(s))
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
    two = st.lists(st.integers(0, len(s) - 1), min_size=2, max_size=2, unique=True)
    d1, d2 = draw(two, label="dims")
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
    d1 = draw_dim(draw, nd)
    d2 = draw(st.sampled_from([a for a in range(-nd, nd) if a % nd != d1 % nd]), label="dim2")
    return Case(inputs=(x,), fn=lambda x: torch.diag_embed(x, offset, d1, d2))


@rule(
    "DiagEmbedBackward0",
    formula=r"\bar{X}_{\ldots, i} = \bar{Y}_{\ldots, i, i+k, \ldots}\ \text{(the diagonal of } "
            r"\bar{Y})",
    example=_diag_embed_example,
)
def _diag_embed(ctx: RuleContext):
    g = ctx.grad
    d1, d2 = axis(ctx["dim1"], g.ndim), axis(ctx["dim2"], g.ndim)
    return (np.diagonal(g, signed(ctx["offset"]), d1, d2).copy(),)


def _unfold_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=5)
    d = draw_dim(draw, len(s))
    n = s[d] if s else 1
    size = draw(st.integers(0 if n else 1, n), label="size")
    step = draw(st.integers(1, 3), label="step")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: x.unfold(d, size, step))


@rule(
    "UnfoldBackward0",
    formula=r"\bar{X}[\ldots, w s + j, \ldots] \mathrel{+}= \bar{Y}[\ldots, w, \ldots, j]\ "
            r"\text{(overlapping windows add up)}",
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
        out[at_axis(len(sizes), d, slice(w * step, w * step + size))] += window
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
    formula=r"\bar{X} = \textstyle\sum_{\text{copies}} \bar{Y}_{\text{copy}}\ \text{(add up every "
            r"tile)}",
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


def _as_strided_example(inplace: bool):
    def example(draw: Draw) -> Case:
        nd = draw(st.integers(1, 3), label="ndim")
        size = tuple(draw(st.integers(1, 3), label="size") for _ in range(nd))
        stride = tuple(draw(st.integers(0, 4), label="stride") for _ in range(nd))
        reach = sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        offset = draw(st.one_of(st.none(), st.integers(0, 4)), label="offset")
        numel = reach + (offset or 0) + 1 + draw(st.integers(0, 3), label="slack")
        x_shape = draw(st.sampled_from([(numel,), (1, numel), (numel, 1)]), label="x shape")
        x = tensor(draw, x_shape)
        if inplace:
            # as_strided_ restrides a fresh result in place, as adaptive_avg_pool2d(x, 1)
            # does to give its mean a channels-last input's strides (swin_t, convnext).
            return Case(inputs=(x,), fn=lambda x: (x * 1.0).as_strided_(size, stride, offset))
        return Case(inputs=(x,), fn=lambda x: x.as_strided(size, stride, offset))

    return example


_AS_STRIDED = (r"\bar{x}_{\text{flat}}[o + \textstyle\sum_k i_k s_k] \mathrel{+}= "
               r"\bar{Y}_{i_1 \ldots i_n}")
_AS_STRIDED_NOTE = ("Exact when the input is contiguous and starts its own storage (a leaf or a "
                    "fresh result); the node does not save the input's own strides or offset.")


# AsStridedBackward1 is the in-place as_strided_; both save the view's size, stride, offset.
@rule("AsStridedBackward1", formula=_AS_STRIDED, example=_as_strided_example(True),
      note=_AS_STRIDED_NOTE)
@rule("AsStridedBackward0", formula=_AS_STRIDED, example=_as_strided_example(False),
      note=_AS_STRIDED_NOTE)
def _as_strided(ctx: RuleContext):
    x_shape = edge_shape(ctx, 0)
    g = ctx.grad
    size, stride = tuple(ctx["size"]), tuple(ctx["stride"])
    offset = ctx["storage_offset"] or 0
    pos = np.full(size, offset, dtype=np.int64)
    for k, (n, s) in enumerate(zip(size, stride, strict=True)):
        pos += (np.arange(n) * s).reshape((n,) + (1,) * (len(size) - k - 1))
    flat = np.zeros(int(np.prod(x_shape)))
    np.add.at(flat, pos.ravel(), g.ravel())
    return (flat.reshape(x_shape),)

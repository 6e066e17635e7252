"""Joining and splitting: cat, stack, split, split_with_sizes and unbind. Backward cuts
the gradient at the seams (or joins the pieces' gradients, zeros for unused pieces)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import at_axis, axis, grads_or_zeros
from gradviz.backward.rules._examples import Draw, draw_dim, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule
from gradviz.errors import GradvizError

# ---------------------------------------------------------------- joining and splitting


def _cat_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    d = draw_dim(draw, len(s))
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
    formula=r"\bar{X}_i = \bar{Y}[\ldots, o_i : o_i + n_i, \ldots]\ \text{(the slice of } Y \text{ "
            r"that } X_i \text{ filled)}",
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
            out.append(g[at_axis(g.ndim, d, slice(o, o + n))])
    return tuple(out)


def _stack_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    d = draw_dim(draw, len(s), extra=1)
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
        d = draw_dim(draw, len(s))
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
    grads = grads_or_zeros(ctx)
    d = axis(ctx["dim"], len(ctx["self_sym_sizes"]))
    return (np.concatenate(grads, axis=d).reshape(ctx["self_sym_sizes"]),)


_SPLIT_FORMULA = (r"\bar{X} = \operatorname{cat}_d(\bar{Y}_1, \ldots, \bar{Y}_k)\ \text{(zeros for "
                  r"unused pieces)}")


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
    d = draw_dim(draw, len(s))
    x = tensor(draw, s)
    sel = draw(st.randoms(use_true_random=False), label="keep")

    def fn(x):
        pieces = x.unbind(d)
        return tuple([p for p in pieces if sel.random() < 0.7] or pieces[:1])

    return Case(inputs=(x,), fn=fn)


@rule(
    "UnbindBackward0",
    formula=r"\bar{X} = \operatorname{stack}_d(\bar{Y}_1, \ldots, \bar{Y}_n)\ \text{(zeros for "
            r"unused pieces)}",
    example=_unbind_example,
)
def _unbind(ctx: RuleContext):
    grads = grads_or_zeros(ctx)
    d = axis(ctx["dim"], grads[0].ndim + 1)
    return (np.stack(grads, axis=d),)

"""In-place writes: CopySlices (an in-place op on a view of a tensor) and CopyBackwards
(``copy_``, and slice assignment ``y[:, 0] = z`` once wrapped in a CopySlices).

CopySlices sits on the base tensor. Its backward takes the base's gradient, cuts out the
view's region (by the view's sizes, strides and storage offset, relative to the base's
own), runs the wrapped node's backward on that slice, and writes the result back into
the region; the wrapped node's other gradients go to its other inputs. The geometry and
the wrapped node come from ``_copyslices`` (compiled autograd); the slice's backward is
the wrapped node's own NumPy rule, so CopySlices is covered exactly where that node is.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import RULES, Case, RuleContext, rule, sum_to

# ---------------------------------------------------------------- CopySlices


def _positions(sizes, strides, offset) -> np.ndarray:
    """The storage position of every element of a strided tensor, in its shape."""
    pos = np.full(tuple(sizes), int(offset), dtype=np.int64)
    for k, (n, s) in enumerate(zip(sizes, strides, strict=True)):
        pos += (np.arange(n) * s).reshape((n,) + (1,) * (len(sizes) - k - 1))
    return pos


def _region(base, view) -> np.ndarray:
    """For each element of the view, the flat index of the base element it aliases."""
    at = _positions(*base).ravel()
    owner = np.full(int(at.max(initial=0)) + 1, -1, dtype=np.int64)
    owner[at] = np.arange(at.size)
    index = owner[_positions(*view)]
    if (index < 0).any():
        raise ValueError("CopySlices: the view reaches storage the base does not cover")
    return index


def _inner_grads(ctx: RuleContext, g_view: np.ndarray, view_shape) -> list[np.ndarray | None]:
    """The wrapped node's NumPy rule applied to the view's slice of the gradient."""
    inner = RULES.get(ctx["fn"])
    if inner is None:
        raise ValueError(f"CopySlices wraps {ctx['fn']}, which has no NumPy rule")
    shapes = (tuple(view_shape), *ctx.input_shapes[1:])
    raw = tuple(inner.fn(RuleContext(name=ctx["fn"], saved=ctx["fn_saved"], grad_outputs=(g_view,),
                                     input_shapes=shapes, output_shapes=(tuple(view_shape),))))
    out: list[np.ndarray | None] = []
    for i, s in enumerate(shapes):
        g = raw[i] if i < len(raw) else None
        out.append(None if s is None or g is None else sum_to(np.asarray(g, np.float64), s))
    return out


def _copy_slices_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=2, max_dims=3, min_side=2)
    x = tensor(draw, s)
    z = tensor(draw, (max(s),))
    start = draw(st.integers(0, s[0] - 1), label="start")
    view = draw(st.sampled_from(["rows", "column", "transpose", "diagonal"]), label="view")
    op = draw(st.sampled_from(["mul_", "mul_z", "add_", "relu_", "assign", "index_put_"]),
              label="op")
    pick = torch.tensor([0, s[0] - 1])

    def f(x, z):
        y = x * 1.0
        v = {"rows": y[start:], "column": y[:, 0], "transpose": y.transpose(0, 1),
             "diagonal": y.diagonal(dim1=0, dim2=1)}[view]
        n = v.shape[0]
        if op == "mul_":
            v.mul_(2.5)
        elif op == "mul_z":
            v.mul_(z[:n].reshape((n,) + (1,) * (v.dim() - 1)))
        elif op == "add_":
            v.add_(z[:1], alpha=-2.0)
        elif op == "relu_":
            v.relu_()
        elif op == "assign":
            v[0] = z[0]
        else:
            v.index_put_((pick.clamp(max=n - 1),), z[:2].reshape((2,) + (1,) * (v.dim() - 1)),
                         accumulate=True)
        return y

    return Case(inputs=(x, z), fn=f)


@rule(
    "CopySlices",
    formula=r"y = \operatorname{base} \text{ with } V \leftarrow f(V):\quad \bar{B} = \bar{Y} "
    r"\text{ with } V \leftarrow \bar{V}_f(\bar{Y}[V]),\ \bar{z}_k = \bar{z}_{f,k}(\bar{Y}[V])",
    example=_copy_slices_example,
    note="V is the view's region of the base (its sizes, strides and storage offset) and f "
    "the wrapped in-place op, checked by that op's own rule.",
)
def _copy_slices(ctx: RuleContext):
    base, view = ctx["base"], ctx["view"]
    g = np.asarray(ctx.grad, dtype=np.float64)
    index = _region(base, view)
    flat = g.ravel().copy()
    grads = _inner_grads(ctx, flat[index].reshape(index.shape), view[0])
    if grads[0] is None:
        return (None, *grads[1:])
    flat[index.ravel()] = grads[0].ravel()
    return (flat.reshape(g.shape), *grads[1:])


# ---------------------------------------------------------------- copy_


def _copy_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x, src = tensor(draw, s), tensor(draw, s[len(s) - draw(st.integers(0, len(s))):])
    return Case(inputs=(x, src), fn=lambda x, src: (x * 1.0).copy_(src))


@rule("CopyBackwards", formula=r"Y = \operatorname{copy}(X \leftarrow S):\quad \bar{X} = 0,\ "
      r"\bar{S} = \textstyle\sum_{\text{broadcast}} \bar{Y}", example=_copy_example)
def _copy(ctx: RuleContext):
    g = np.asarray(ctx.grad, dtype=np.float64)
    first = None if ctx.input_shapes[0] is None else np.zeros(ctx.input_shapes[0])
    return first, g


# ---------------------------------------------------------------- fill


def _fill_example(tensor_value: bool, inplace: bool):
    def example(draw: Draw) -> Case:
        x = tensor(draw, shape(draw, min_dims=0))
        if not tensor_value:
            if inplace:
                return Case(inputs=(x,), fn=lambda x: (x * 1.0).fill_(1.5))
            return Case(inputs=(x,), fn=lambda x: torch.fill(x, 1.5))
        v = tensor(draw, ())
        if inplace:
            return Case(inputs=(x, v), fn=lambda x, v: (x * 1.0).fill_(v))
        return Case(inputs=(x, v), fn=lambda x, v: torch.fill(x, v))

    return example


_FILL = r"Y = v \text{ everywhere}:\quad \bar{X} = 0,\ \bar{v} = \textstyle\sum \bar{Y}"


# FillBackward0/1 are fill(x, number / 0-dim tensor), 2/3 the in-place fill_ (also
# `y[i] = t` of a 0-dim t, wrapped in a CopySlices).
@rule("FillBackward0", formula=_FILL, example=_fill_example(False, False))
@rule("FillBackward1", formula=_FILL, example=_fill_example(True, False))
@rule("FillBackward2", formula=_FILL, example=_fill_example(False, True))
@rule("FillBackward3", formula=_FILL, example=_fill_example(True, True))
def _fill(ctx: RuleContext):
    g = np.asarray(ctx.grad, dtype=np.float64)
    first = None if ctx.input_shapes[0] is None else np.zeros(ctx.input_shapes[0])
    return first, np.sum(g)

"""NumPy-side helpers that several rule families share: saved-value decoding, axes, edges.

Nothing here calls torch; the families import from here rather than from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradviz.backward.rules._registry import RuleContext, sum_to


class _LazySpecial:
    """scipy.special, imported on first use: it adds ~130 ms to `import gradviz` (and to
    every CLI call) for rules that most programs never reach."""

    def __getattr__(self, name: str) -> Any:
        import scipy.special

        return getattr(scipy.special, name)


sp = _LazySpecial()

# ---------------------------------------------------------------- saved values and axes


def signed(value: int) -> int:
    """An int64 that the autograd bindings handed back as its unsigned bit pattern.

    Negative dims, shifts, slice bounds and ignore_index=-100 come out of ``_saved_*`` as
    ``2**64 - k``.
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


def at_axis(ndim: int, dim: int, key: Any) -> tuple[Any, ...]:
    """An index that applies `key` on axis `dim` and takes everything elsewhere."""
    return (slice(None),) * dim + (key,) + (slice(None),) * (ndim - dim - 1)


def bound(value: int | None) -> int | None:
    """A saved slice bound: None stays None, an unsigned wrap becomes negative again."""
    return None if value is None else signed(value)


def index_key(indices: Sequence[Any]) -> tuple[Any, ...]:
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


def arr(value: Any) -> np.ndarray:
    """A saved value (array or Python number) as a float64 array."""
    return np.asarray(value, dtype=np.float64)


# ---------------------------------------------------------------- gradients in and out


def needs(ctx: RuleContext, i: int) -> bool:
    """Whether edge i exists (its input needs a gradient). Autograd saves a factor only
    when the other factor needs its gradient, so rules test this before reading one."""
    return i < len(ctx.input_shapes) and ctx.input_shapes[i] is not None


def edge_shape(ctx: RuleContext, i: int) -> tuple[int, ...]:
    """The shape of edge i, for rules that read it only where the edge exists (`needs`)."""
    shape = ctx.input_shapes[i] if i < len(ctx.input_shapes) else None
    if shape is None:
        raise ValueError(f"{ctx.name}: edge {i} is absent (its input needs no gradient)")
    return shape


def shaped(ctx: RuleContext, i: int, grad: Any) -> np.ndarray | None:
    """`grad` broadcast or reduced to the shape of edge i (None: the edge is absent)."""
    target = ctx.input_shapes[i] if i < len(ctx.input_shapes) else None
    if target is None or grad is None:
        return None
    return sum_to(np.broadcast_to(grad, np.broadcast_shapes(np.shape(grad), target)), target)


def times(c: Any, a: np.ndarray) -> np.ndarray:
    """c·a, with no pass over `a` when c is 1 (alpha and beta of addmm & co. almost always
    are; x·1 == x exactly, so the result is the same)."""
    return a if isinstance(c, (int, float)) and c == 1 else c * a


def zero_grads(ctx: RuleContext) -> tuple[np.ndarray | None, ...]:
    """Zeros for every present edge: the backward of a piecewise-constant op."""
    return tuple(None if s is None else np.zeros(s) for s in ctx.input_shapes)


def grad_or_zeros(ctx: RuleContext, i: int) -> np.ndarray:
    """The gradient of output i; zeros where nobody used that output."""
    g = ctx.grad_outputs[i] if i < len(ctx.grad_outputs) else None
    return np.zeros(ctx.output_shapes[i]) if g is None else g


def grads_or_zeros(ctx: RuleContext) -> list[np.ndarray]:
    """The gradient of every output, zeros for the unused ones."""
    return [grad_or_zeros(ctx, i) for i in range(len(ctx.output_shapes))]


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


# ---------------------------------------------------------------- functions and matrices


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise in float64 (scipy's ufunc: np.vectorize(math.erf)
    looped in Python, 5x slower, a tenth of swin_t's references)."""
    return sp.erf(np.asarray(x, dtype=np.float64))


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def mT(a: np.ndarray) -> np.ndarray:
    """The batched matrix transpose, like torch's ``.mT``."""
    return np.swapaxes(a, -1, -2)


def diag_embed(v: np.ndarray) -> np.ndarray:
    """Batched diag_embed: (..., n) -> (..., n, n)."""
    return v[..., :, None] * np.eye(v.shape[-1])


def checked_inv(a: np.ndarray, what: str) -> np.ndarray:
    """np.linalg.inv, raising ValueError naming `what` for a singular matrix."""
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"{what}: the matrix is singular, the gradient does not exist") from e

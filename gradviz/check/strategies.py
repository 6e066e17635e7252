"""Hypothesis strategies for the inputs of custom autograd Functions.

Backward bugs hide at zeros and ties (``relu`` at 0, ``max(a, b)`` with ``a == b``), so the
tensors drawn here hit both on purpose: each element is a fresh float, an exact zero, or a
value shared with other elements (of the same or another input). When an example fails,
Hypothesis shrinks the elements towards fresh floats and then towards simple values, so a
counterexample stays as plain as the bug allows.

Every argument is keyword-only and checked before anything is drawn, in the manner of
``hypothesis.extra.numpy``: a bad value raises :class:`~gradviz.errors.ArgumentError`
naming the argument, the value and what to write instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.strategies import SearchStrategy

from gradviz.errors import ArgumentError

__all__ = ["broadcastable_shapes", "function_inputs", "shapes", "tensors"]

Shape = tuple[int, ...]
Width = Literal[16, 32, 64]  # the float widths st.floats accepts

# Bit width Hypothesis draws floats at, per torch dtype (bfloat16 values are rounded after).
_WIDTH: dict[torch.dtype, Width] = {torch.float64: 64, torch.float32: 32, torch.float16: 16,
                                    torch.bfloat16: 32}
_NUMPY: dict[Width, type[np.floating[Any]]] = {64: np.float64, 32: np.float32, 16: np.float16}
_MAX_DIMS = 8


def shapes(
    *, min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4
) -> SearchStrategy[Shape]:
    """Tensor shapes with ``min_dims..max_dims`` dimensions of ``min_side..max_side`` each."""
    _check_int("min_dims", min_dims, low=0, high=_MAX_DIMS)
    _check_int("max_dims", max_dims, low=min_dims, high=_MAX_DIMS)
    _check_int("min_side", min_side, low=0)
    _check_int("max_side", max_side, low=min_side)
    return st.lists(
        st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims
    ).map(tuple)


def broadcastable_shapes(
    shape: Shape,
    *,
    min_dims: int = 0,
    max_dims: int | None = None,
    min_side: int = 1,
    max_side: int | None = None,
) -> SearchStrategy[Shape]:
    """Shapes that broadcast against ``shape`` (e.g. a bias shape for a matmul output)."""
    shape = check_shape("shape", shape)
    _check_int("min_dims", min_dims, low=0, high=_MAX_DIMS)
    if max_dims is None:
        max_dims = max(len(shape), min_dims)
    _check_int("max_dims", max_dims, low=min_dims, high=_MAX_DIMS)
    _check_int("min_side", min_side, low=0)
    if max_side is not None:
        _check_int("max_side", max_side, low=min_side)
    return hnp.broadcastable_shapes(
        shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(tuple)


def tensors(
    *,
    shape: Shape | SearchStrategy[Shape],
    dtype: torch.dtype = torch.float64,
    min_value: float = -3.0,
    max_value: float = 3.0,
    zeros: bool | None = None,
    ties: bool = True,
    requires_grad: bool = False,
) -> SearchStrategy[torch.Tensor]:
    """One float tensor of ``shape`` with values in ``[min_value, max_value]``.

    ``zeros`` (default: whenever 0 lies in the range) makes some elements exactly 0;
    ``ties`` makes some elements repeat a value drawn for the tensor.
    """
    strategy = function_inputs(
        shapes=[shape], dtype=dtype, min_value=min_value, max_value=max_value,
        zeros=zeros, ties=ties,
    )
    if not isinstance(requires_grad, bool):
        raise ArgumentError("requires_grad", requires_grad, "pass True or False")
    return strategy.map(lambda inputs: inputs[0].requires_grad_(requires_grad))


def function_inputs(
    *,
    shapes: Sequence[Shape | SearchStrategy[Shape]],
    dtype: torch.dtype = torch.float64,
    min_value: float = -3.0,
    max_value: float = 3.0,
    zeros: bool | None = None,
    ties: bool = True,
) -> SearchStrategy[tuple[torch.Tensor, ...]]:
    """A tuple of float tensors, one per shape, for ``Fn.apply(*inputs)``.

    Ties are shared across the tensors, so ``max(a, b)`` sees ``a[i] == b[i]`` often.
    Each shape may itself be a strategy (e.g. from :func:`shapes`).
    """
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence):
        raise ArgumentError("shapes", shapes, "pass a list of shapes, e.g. shapes=[(4, 3), (3,)]")
    fixed = [s if isinstance(s, SearchStrategy) else check_shape(f"shapes[{i}]", s)
             for i, s in enumerate(shapes)]
    width = _width(dtype)
    low, high = _check_range(min_value, max_value, width)
    zeros = _check_zeros(zeros, low, high)
    if not isinstance(ties, bool):
        raise ArgumentError("ties", ties, "pass True or False")
    fresh = st.floats(low, high, allow_nan=False, allow_infinity=False,
                      allow_subnormal=False, width=width)
    # Per element, kind 0..5 is a fresh float, then zeros, then ties. Most examples mix the
    # kinds; the rest (and every example the shrinker can make so) draw fresh floats only.
    # Shrinking lowers kinds, so a counterexample keeps a zero or a tie only when the bug
    # needs it, and a plain example has half the choices left to shrink.
    kinds = 6 + (2 if zeros else 0) + (2 if ties else 0)
    kind_of = st.integers(0, kinds - 1)
    mixed_of = st.integers(0, 9)
    pool_of = st.lists(fresh, min_size=1, max_size=3)

    @st.composite
    def draw_inputs(draw: Any) -> tuple[torch.Tensor, ...]:
        concrete = [check_shape("shape", draw(s)) if isinstance(s, SearchStrategy) else s
                    for s in fixed]
        total = sum(math.prod(s) for s in concrete)
        mixed = kinds > 6 and draw(mixed_of, label="zeros and ties") >= 3
        pool = draw(pool_of, label="tie values") if mixed and ties else []
        tie = st.sampled_from(pool) if pool else None
        values = []
        for _ in range(total):
            kind = draw(kind_of) if mixed else 0
            if kind < 6:
                values.append(draw(fresh))
            elif zeros and kind < 8:
                values.append(0.0)
            else:
                values.append(draw(tie))
        flat = np.asarray(values, dtype=np.float64)
        out, start = [], 0
        for s in concrete:
            size = math.prod(s)
            array = flat[start:start + size].reshape(s)
            out.append(torch.tensor(array, dtype=torch.float64).to(dtype))
            start += size
        return tuple(out)

    return draw_inputs()


def check_shape(argument: str, shape: Any) -> Shape:
    """``shape`` as a tuple of non-negative ints, or ArgumentError naming ``argument``."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(side, (int, np.integer)) and not isinstance(side, bool) for side in shape
    ):
        raise ArgumentError(argument, shape, "a shape is a tuple of ints, e.g. (4, 3) or () for a "
                            "scalar")
    if any(side < 0 for side in shape):
        raise ArgumentError(argument, shape, "sides must be >= 0")
    if len(shape) > _MAX_DIMS:
        raise ArgumentError(argument, shape, f"use at most {_MAX_DIMS} dimensions")
    return tuple(int(side) for side in shape)


def _check_int(argument: str, value: Any, *, low: int, high: int | None = None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ArgumentError(argument, value, "pass an int")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ArgumentError(argument, value, f"must be {bound}")


def _width(dtype: Any) -> Width:
    if dtype not in _WIDTH:
        raise ArgumentError(
            "dtype", dtype, "pass a float dtype: torch.float64, torch.float32, torch.float16 or "
            "torch.bfloat16"
        )
    return _WIDTH[dtype]


def _check_range(min_value: Any, max_value: Any, width: Width) -> tuple[float, float]:
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ArgumentError(name, value, "pass a finite number")
        if not math.isfinite(float(value)):
            raise ArgumentError(name, value, "pass a finite number; infinite inputs make every "
                                "derivative undefined")
    low, high = float(min_value), float(max_value)
    if not low < high:
        raise ArgumentError("max_value", max_value, f"must be greater than min_value={min_value!r}")
    # Hypothesis needs bounds exactly representable at the drawing width: round inwards.
    kind = _NUMPY[width]
    low_w, high_w = kind(low), kind(high)
    if float(low_w) < low:
        low_w = np.nextafter(low_w, kind(np.inf))
    if float(high_w) > high:
        high_w = np.nextafter(high_w, kind(-np.inf))
    if not float(low_w) < float(high_w):
        raise ArgumentError("max_value", max_value, "the range holds no two distinct values at "
                            "this dtype")
    return float(low_w), float(high_w)


def _check_zeros(zeros: Any, low: float, high: float) -> bool:
    if zeros is None:
        return low <= 0.0 <= high
    if not isinstance(zeros, bool):
        raise ArgumentError("zeros", zeros, "pass True, False or None (zeros whenever 0 is in "
                            "range)")
    if zeros and not low <= 0.0 <= high:
        raise ArgumentError(
            "zeros", zeros, f"0 is outside [{low}, {high}]; pass zeros=False or a range that "
            "contains 0"
        )
    return zeros

"""Hypothesis helpers the rule examples share: float64 tensors of drawn shapes and values,
and builders for the common kinds of example (one input, two broadcasting inputs, matrices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._registry import Case

# Hypothesis' own protocol for `draw`: a plain Callable[[Any], Any] has no `label=` keyword.
Draw = st.DrawFn

# ---------------------------------------------------------------- shapes and dims


def shape(
    draw: Draw, min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4
) -> tuple[int, ...]:
    """A random tensor shape."""
    n = draw(st.integers(min_dims, max_dims), label="ndim")
    return tuple(draw(st.integers(min_side, max_side), label="side") for _ in range(n))


def suffix_shape(draw: Draw, full: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to `full`: a suffix of it with some sides set to 1."""
    k = draw(st.integers(0, len(full)), label="broadcast dims")
    return tuple(1 if draw(st.booleans(), label="size 1") else n for n in full[len(full) - k:])


def broadcast_shapes(draw: Draw, n: int = 2) -> list[tuple[int, ...]]:
    """n shapes that broadcast together: suffixes of one shape with some sides set to 1."""
    full = shape(draw, min_dims=0)
    return [suffix_shape(draw, full) for _ in range(n)]


def with_ones(draw: Draw) -> tuple[int, ...]:
    """A shape of up to 4 dims with some sides 1 (what squeeze and expand act on)."""
    s = shape(draw, min_dims=0, max_dims=4, max_side=3)
    return tuple(draw(st.sampled_from([1, n]), label="make 1") for n in s)


def draw_dim(draw: Draw, ndim: int, extra: int = 0) -> int:
    """A dim in [-(ndim+extra), ndim+extra), negative half the time."""
    n = max(ndim + extra, 1)
    return draw(st.integers(-n, n - 1), label="dim")


def draw_side(draw: Draw, label: str = "n") -> int:
    return draw(st.integers(1, 4), label=label)


def grad_flags(draw: Draw, n: int) -> list[bool]:
    """Which of n inputs require grad: at least one, sometimes not all."""
    flags = [draw(st.integers(0, 4), label="requires grad") > 0 for _ in range(n)]
    return flags if any(flags) else [True] * n


# ---------------------------------------------------------------- values


def seeded_rng(draw: Draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="rng seed"))


def tensor(
    draw: Draw,
    shape: tuple[int, ...],
    *,
    low: float = -3.0,
    high: float = 3.0,
    requires_grad: bool = True,
    away_from: float | None = None,
    margin: float = 1e-3,
) -> torch.Tensor:
    """A float64 tensor with values drawn in [low, high].

    away_from keeps values at least `margin` from a kink (0 for relu/abs), so that the
    property compares a rule where the derivative is defined.
    """
    seed = draw(st.integers(0, 2**31 - 1), label="values seed")
    rng = np.random.default_rng(seed)
    values = rng.uniform(low, high, size=shape)
    if away_from is not None:
        close = np.abs(values - away_from) < margin
        values[close] = away_from + margin * np.where(values[close] >= away_from, 2.0, -2.0)
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def distinct_values(x: torch.Tensor, draw: Draw) -> None:
    """Fill `x` in place with distinct values (a shuffled grid), so every max is unique."""
    rng = seeded_rng(draw)
    with torch.no_grad():
        vals = rng.permutation(x.numel()).astype(np.float64) / max(x.numel(), 1) * 6.0 - 3.0
        x.copy_(torch.from_numpy(vals.reshape(tuple(x.shape))))


def uniform(draw: Draw, s: tuple[int, ...], low: float, high: float) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="values seed"))
    return np.asarray(rng.uniform(low, high, size=s), dtype=np.float64)


def leaf(values: np.ndarray, requires_grad: bool = True) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def away_from_integers(values: np.ndarray, margin: float) -> np.ndarray:
    """Values within `margin` of an integer moved to `2 * margin` from it (poles, jumps)."""
    near = np.round(values)
    return np.where(np.abs(values - near) < margin,
                    near + np.where(values >= near, 2.0, -2.0) * margin, values)


def with_zeros(draw: Draw, values: np.ndarray, share: float = 0.25) -> np.ndarray:
    """`values` with about `share` of the entries set to exactly 0."""
    return np.where(uniform(draw, values.shape, 0.0, 1.0) < share, 0.0, values)


# ---------------------------------------------------------------- example builders


def unary_example(
    op: Callable[..., Any],
    low: float = -3.0,
    high: float = 3.0,
    *,
    away_from: float | None = None,
    margin: float = 1e-3,
    poles: bool = False,
    zeros: bool = False,
    inplace: bool | Callable[..., Any] = False,
) -> Callable[[Draw], Case]:
    """Example builder for `op(x)` on one drawn tensor.

    away_from keeps x `margin` from a kink; poles keeps x 0.05 from the integers (the poles
    of the gamma family at x <= 0); zeros sets a quarter of x to exactly 0 (a removable 0/0
    in a formula). inplace=True runs `op` (itself in place) on a non-leaf copy; a function
    runs instead of `op`, on a non-leaf copy, half the time.
    """

    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0)
        if poles or zeros:
            values = uniform(draw, s, low, high)
            x = leaf(with_zeros(draw, values) if zeros else away_from_integers(values, 0.05))
        else:
            x = tensor(draw, s, low=low, high=high, away_from=away_from, margin=margin)
        if inplace is True:
            return Case(inputs=(x,), fn=lambda x: op(x * 1.0))
        if callable(inplace) and draw(st.booleans(), label="in place"):
            return Case(inputs=(x,), fn=lambda x: inplace(x * 1.0))
        return Case(inputs=(x,), fn=op)

    return example


def binary_example(
    op: Callable[..., Any],
    low_a: float = -3.0,
    high_a: float = 3.0,
    low_b: float = -3.0,
    high_b: float = 3.0,
    away_b: float | None = None,
) -> Callable[[Draw], Case]:
    """Example builder for `op(a, b)` on two broadcasting tensors, either or both needing grad."""

    def example(draw: Draw) -> Case:
        sa, sb = broadcast_shapes(draw)
        which = draw(st.sampled_from(["both", "a", "b"]))
        a = tensor(draw, sa, low=low_a, high=high_a, requires_grad=which != "b")
        b = tensor(draw, sb, low=low_b, high=high_b, away_from=away_b, requires_grad=which != "a")
        return Case(inputs=(a, b), fn=op)

    return example


# ---------------------------------------------------------------- matrices


def batch_shape(draw: Draw) -> tuple[int, ...]:
    return shape(draw, min_dims=0, max_dims=2, max_side=2)


def square_shape(draw: Draw) -> tuple[int, ...]:
    n = draw_side(draw)
    return (*batch_shape(draw), n, n)


def invertible(draw: Draw, s: tuple[int, ...], requires_grad: bool = True) -> torch.Tensor:
    """(..., n, n) entries in [-1, 1] plus ±(n+1) on the diagonal: strictly diagonally
    dominant (so well conditioned), with determinants of both signs."""
    n = s[-1]
    a = tensor(draw, s, low=-1.0, high=1.0, requires_grad=False)
    signs = torch.where(tensor(draw, s[:-1], requires_grad=False) >= 0, 1.0, -1.0)
    return (a + (n + 1) * torch.diag_embed(signs)).requires_grad_(requires_grad)


def spd(draw: Draw, s: tuple[int, ...]) -> torch.Tensor:
    """A symmetric positive definite (..., n, n) matrix, eigenvalues at least 1."""
    a = tensor(draw, s, low=-1.0, high=1.0, requires_grad=False)
    return (a @ a.mT + torch.eye(s[-1], dtype=torch.float64)).requires_grad_()


def orthogonal(draw: Draw, batch: tuple[int, ...], n: int) -> torch.Tensor:
    return torch.linalg.qr(tensor(draw, (*batch, n, n), requires_grad=False)).Q


def separated(draw: Draw, batch: tuple[int, ...], n: int, low: float) -> torch.Tensor:
    """n values increasing from `low` in steps of at least 0.5 (distinct eigen/singular
    values)."""
    steps = tensor(draw, (*batch, n), low=0.5, high=1.5, requires_grad=False)
    return low + steps.cumsum(-1)

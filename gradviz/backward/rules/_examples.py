"""Hypothesis helpers the rule examples share: float64 tensors of drawn shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

Draw = Callable[[Any], Any]


def shape(draw: Draw, min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> tuple[int, ...]:
    """A random tensor shape."""
    n = draw(st.integers(min_dims, max_dims), label="ndim")
    return tuple(draw(st.integers(min_side, max_side), label="side") for _ in range(n))


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

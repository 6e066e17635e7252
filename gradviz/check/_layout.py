"""How the checker flattens a Function's differentiable inputs and outputs into vectors.

``x`` holds every differentiable input's entries one after the other (n of them), the
outputs likewise (m); `Layout` maps positions in those vectors back to readable labels
such as ``w[1,0]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Layout", "as_outputs"]


@dataclass(frozen=True)
class Layout:
    """How the differentiable inputs and outputs map onto flat vectors, and their labels."""

    in_pos: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    in_names: tuple[str, ...]
    out_pos: tuple[int, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    out_names: tuple[str, ...]
    in_offsets: tuple[int, ...] = field(init=False)
    out_offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_offsets", _offsets(self.in_shapes))
        object.__setattr__(self, "out_offsets", _offsets(self.out_shapes))

    @property
    def n(self) -> int:
        return self.in_offsets[-1]

    @property
    def m(self) -> int:
        return self.out_offsets[-1]

    def column(self, j: int) -> str:
        return _label(self.in_names, self.in_shapes, self.in_offsets, j)

    def row(self, i: int) -> str:
        return _label(self.out_names, self.out_shapes, self.out_offsets, i)

    def in_spans(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """(start, stop, shape) of each differentiable input within the flat vector."""
        offsets = self.in_offsets
        return list(zip(offsets[:-1], offsets[1:], self.in_shapes, strict=True))

    def columns(self) -> tuple[str, ...]:
        return tuple(self.column(j) for j in range(self.n))

    def rows(self) -> tuple[str, ...]:
        return tuple(self.row(i) for i in range(self.m))

    def flat_inputs(self, inputs: Sequence[Any]) -> np.ndarray:
        parts = [_numpy64(inputs[p]).ravel() for p in self.in_pos]
        return np.concatenate(parts) if parts else np.zeros(0)

    def flat_outputs(self, outputs: Sequence[Any], rows: int | None = None) -> np.ndarray | None:
        """Outputs as (m,) — or (rows, m) for a batch — or None when they do not fit."""
        parts = []
        for pos, shape in zip(self.out_pos, self.out_shapes, strict=True):
            if pos >= len(outputs) or not isinstance(outputs[pos], torch.Tensor):
                return None
            out = outputs[pos]
            want = shape if rows is None else (rows, *shape)
            if tuple(out.shape) != want or not out.is_floating_point():
                return None
            parts.append(_numpy64(out).reshape(-1 if rows is None else (rows, -1)))
        if not parts:
            return np.zeros(0 if rows is None else (rows, 0))
        return np.concatenate(parts, axis=-1)


def _offsets(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    out = [0]
    for shape in shapes:
        out.append(out[-1] + math.prod(shape))
    return tuple(out)


def _label(names: Sequence[str], shapes: Sequence[tuple[int, ...]], offsets: Sequence[int],
           k: int) -> str:
    part = int(np.searchsorted(offsets, k, side="right")) - 1
    shape = shapes[part]
    if not shape:
        return names[part]
    index = np.unravel_index(k - offsets[part], shape)
    return f"{names[part]}[{','.join(str(int(i)) for i in index)}]"


def _numpy64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64).cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def as_outputs(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)

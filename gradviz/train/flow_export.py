"""A `GradientFlow`'s record as long-form rows, a DataFrame and plain JSON data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from gradviz.train.flow import ACT_STATS, GRAD_STATS

if TYPE_CHECKING:
    from gradviz.train.flow import GradientFlow

__all__ = ["iter_rows", "frame", "to_json"]


def iter_rows(self: GradientFlow) -> Iterator[dict[str, Any]]:
    """Long-form rows: step, layer, depth, kind (grad/update/act), stat, value, loss."""
    names = self.params
    for kind, stats, labels in (
        ("grad", GRAD_STATS, names),
        ("update", ("ratio",), names),
        ("act", ACT_STATS, self._module_names),
    ):
        for stat in stats:
            steps, values = self.series(stat, kind=kind)
            losses = [r.loss for r in self.records]
            for i, step in enumerate(steps):
                for d, layer in enumerate(labels):
                    yield {
                        "step": step, "layer": layer, "depth": d, "kind": kind,
                        "stat": stat, "value": float(values[i, d]), "loss": losses[i],
                    }

def frame(self: GradientFlow, kind: str | None = None, stat: str | None = None) -> Any:
    """The record as a long-form pandas DataFrame (Altair-ready), optionally filtered."""
    import pandas as pd

    columns = ["step", "layer", "depth", "kind", "stat", "value", "loss"]
    df = pd.DataFrame(list(iter_rows(self)), columns=columns)
    if kind is not None:
        df = df[df["kind"] == kind]
    if stat is not None:
        df = df[df["stat"] == stat]
    return df.reset_index(drop=True)

def to_json(self: GradientFlow) -> dict[str, Any]:
    """Plain data: names, stride and every record (NaN written as None)."""

    def clean(a: np.ndarray) -> list[Any]:
        return [None if not math.isfinite(v) else float(v) for v in a.tolist()]

    order = self._depth_order()
    return {
        "params": list(self.params),
        "modules": list(self._module_names),
        "grad_stats": list(GRAD_STATS),
        "act_stats": list(ACT_STATS),
        "every": self.every,
        "stride": self.stride,
        "capacity": self.capacity,
        "mode": self.mode,
        "steps_seen": self._steps,
        "records": [
            {
                "step": r.step,
                "loss": r.loss,
                "grad": {self._param_names[i]: clean(r.grad[i]) for i in order},
                "update_ratio": dict(
                    zip(self.params, clean(r.update_ratio[order]), strict=True)
                ),
                "act": {m: clean(r.act[j]) for j, m in enumerate(self._module_names)},
            }
            for r in self.records
        ],
    }

"""Numbers behind a drawing: statistics of tensors (saved for backward, leaf values,
gradients) that let a reader spot a dead, exploding or NaN value at a glance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradviz.graph.model import Graph, gc_paused
from gradviz.graph.tracing import is_accumulate, saved_layout, trace_with_ids

__all__ = ["STATS_MAX_NODES", "TensorStats", "saved_stats", "tensor_stats", "trace_with_stats"]


@dataclass(frozen=True)
class TensorStats:
    """Summary numbers of a tensor: enough to spot a dead, exploding or NaN value."""

    shape: tuple[int, ...]
    dtype: str
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    norm: float | None
    zeros: float  # share of entries that are exactly 0
    nonfinite: int  # NaN/inf entries

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("shape", "dtype", "mean", "std", "min", "max", "norm", "zeros", "nonfinite")
        }

    def describe(self) -> str:
        dims = "×".join(map(str, self.shape)) or "scalar"
        if self.mean is None:
            return f"{dims} {self.dtype}: " + (
                f"all {self.nonfinite} entries NaN/inf" if self.nonfinite else "empty"
            )
        text = (
            f"{dims} {self.dtype}: mean {self.mean:.3g}, std {self.std:.3g}, "
            f"min {self.min:.3g}, max {self.max:.3g}, ‖·‖ {self.norm:.3g}"
        )
        if self.zeros:
            text += f", {self.zeros:.0%} zeros"
        if self.nonfinite:
            text += f", {self.nonfinite} NaN/inf"
        return text


def tensor_stats(value: Any) -> TensorStats:
    """Statistics of a NumPy array or a torch tensor (read without touching autograd)."""
    dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
    if hasattr(value, "detach") and value.numel() <= _SMALL and not value.is_complex():
        # Tiny tensors (a 20k-layer chain saves tens of thousands): plain Python is 5× faster.
        return _small_stats(tuple(value.shape), dtype, value.detach().reshape(-1).tolist())
    if hasattr(value, "detach"):  # a torch tensor; NumPy has no bfloat16, so go via float32
        t = value.detach().cpu()
        if t.is_complex():
            t = t.abs()
        arr = (t.float() if t.dtype.itemsize < 4 or not t.dtype.is_floating_point else t).numpy()
    else:
        arr = np.asarray(value)
        dtype = dtype or str(arr.dtype)
    arr = arr.astype(np.float64, copy=False)
    shape = tuple(int(s) for s in arr.shape)
    if arr.size == 0:
        return TensorStats(shape, dtype, None, None, None, None, None, 0.0, 0)
    finite = np.isfinite(arr)
    bad = int(arr.size - np.count_nonzero(finite))
    vals = arr if bad == 0 else arr[finite]
    zeros = float(np.count_nonzero(arr == 0)) / arr.size
    if vals.size == 0:
        return TensorStats(shape, dtype, None, None, None, None, None, zeros, bad)
    return TensorStats(
        shape,
        dtype,
        float(vals.mean()),
        float(vals.std()),
        float(vals.min()),
        float(vals.max()),
        float(math.sqrt(float(np.dot(vals.ravel(), vals.ravel())))),
        zeros,
        bad,
    )


_SMALL = 64


def _small_stats(shape: tuple[int, ...], dtype: str, values: list[float]) -> TensorStats:
    shape = tuple(int(s) for s in shape)
    if not values:
        return TensorStats(shape, dtype, None, None, None, None, None, 0.0, 0)
    zeros = sum(1 for v in values if v == 0) / len(values)
    finite = [float(v) for v in values if math.isfinite(v)]
    bad = len(values) - len(finite)
    if not finite:
        return TensorStats(shape, dtype, None, None, None, None, None, zeros, bad)
    mean = math.fsum(finite) / len(finite)
    std = math.sqrt(max(0.0, math.fsum((v - mean) ** 2 for v in finite) / len(finite)))
    norm = math.sqrt(math.fsum(v * v for v in finite))
    return TensorStats(shape, dtype, mean, std, min(finite), max(finite), norm, zeros, bad)


def saved_stats(ids: Mapping[Any, str]) -> dict[str, dict[str, TensorStats]]:
    """Statistics of what each live autograd node saved, and of each leaf's value, keyed
    by node id then by the `SavedTensor` name (leaves: "value"). `ids` is the map from
    `tracing.trace_with_ids`; call this while the autograd graph is alive."""
    out: dict[str, dict[str, TensorStats]] = {}
    memo: dict[int, TensorStats] = {}  # the same tensor saved by several nodes

    def stats(t: torch.Tensor) -> TensorStats:
        key = id(t)
        if key not in memo:
            memo[key] = tensor_stats(t)
        return memo[key]

    keep: list[Any] = []  # saved-tensor reads make new wrappers; keep them so id() stays unique
    for fn, node_id in ids.items():
        if is_accumulate(fn):
            out[node_id] = {"value": stats(fn.variable)}
            continue
        names, custom = saved_layout(type(fn), fn)
        found: dict[str, TensorStats] = {}
        for attr, short in names:
            try:
                value = getattr(fn, attr)
            except RuntimeError:  # freed by an earlier backward
                continue
            keep.append(value)
            if isinstance(value, torch.Tensor):
                found[short] = stats(value)
            elif (
                isinstance(value, (list, tuple))
                and value
                and all(isinstance(v, torch.Tensor) for v in value)
            ):
                for i, v in enumerate(value):
                    found[f"{short}[{i}]"] = stats(v)
        if custom:
            try:
                tensors = fn.saved_tensors
            except RuntimeError:
                tensors = ()
            keep.append(tensors)
            for i, t in enumerate(tensors):
                if isinstance(t, torch.Tensor):
                    found[f"saved_tensors[{i}]"] = stats(t)
        if found:
            out[node_id] = found
    return out


# Above this many nodes statistics are skipped: on a 25k-node chain they cost a third of
# the page's first view, and nobody inspects 25k saved tensors.
STATS_MAX_NODES = 10_000


def trace_with_stats(
    *outputs: Any, model: Any = None, params: Any = None, max_nodes: int | None = STATS_MAX_NODES
) -> tuple[Graph, dict[str, dict[str, TensorStats]]]:
    """`trace`, plus statistics of every saved tensor and leaf value (see `saved_stats`);
    none when the graph has more than `max_nodes` nodes."""
    graph, ids = trace_with_ids(*outputs, model=model, params=params, saved=True)
    if max_nodes is not None and len(graph) > max_nodes:
        return graph, {}
    with gc_paused():
        stats = saved_stats(ids)
    return graph, stats

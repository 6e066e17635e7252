"""Torch-side glue: read a live autograd node into a `RuleContext` and run its rule.

This is the only part of `gradviz.backward.rules` that touches torch; the rules themselves
see NumPy arrays and Python values only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gradviz.backward.rules._copyslices import copy_slices_saved
from gradviz.backward.rules._registry import RULES, RuleContext, sum_to
from gradviz.graph.tracing import is_accumulate

__all__ = ["LazySaved", "compare", "compare_many", "compare_with_scale", "context_from_node",
           "largest", "reference_for", "saved_values", "to_numpy"]

_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def _own(original: torch.Tensor, converted: torch.Tensor) -> np.ndarray:
    # A conversion that made new memory is the rule's own already; copying it again was a
    # second full pass over every gradient and saved tensor (2.4M-entry conv weights).
    same = converted.data_ptr() == original.data_ptr() and converted.dtype == original.dtype
    return converted.numpy().copy() if same else converted.numpy()


# Floating dtypes NumPy reads in place (bfloat16 is not one), widened to float64 by NumPy.
_NUMPY_WIDENS = (torch.float32, torch.float16)


def to_numpy(value: Any) -> Any:
    """Convert what autograd saved into what a NumPy rule reads."""
    if isinstance(value, torch.Tensor):
        t = value.detach() if value.requires_grad else value
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype in _NUMPY_WIDENS and not (t._is_zerotensor() or t.is_neg()):
            # NumPy widens a view of the tensor in one pass; torch's .to() costs ~3x more
            # per call, which a 25k-node recording pays 25k times.
            return t.numpy().astype(np.float64)
        if t._is_zerotensor():
            # torch's lazy all-zero gradient has no storage to read
            if t.is_floating_point():
                return np.zeros(tuple(t.shape))
            return np.zeros(tuple(t.shape), torch.empty(0, dtype=t.dtype).numpy().dtype)
        if t.is_floating_point():
            return _own(t, t.to(torch.float64))
        if t.is_complex():
            return _own(t, t.resolve_conj().resolve_neg().to(torch.complex128))
        return t.numpy().copy()
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(to_numpy(v) for v in value)
    return value


def saved_values(node: Any) -> dict[str, Any]:
    """The node's ``_saved_*`` attributes as NumPy/Python values ({} once freed)."""
    out: dict[str, Any] = {}
    for attr in _saved_names(node):
        try:
            value = getattr(node, attr)
        except RuntimeError:  # freed by a backward without retain_graph
            continue
        out[attr[len("_saved_"):]] = to_numpy(value)
    return out


class LazySaved(Mapping[str, Any]):
    """A node's ``_saved_*`` values, each converted to NumPy when a rule first reads it.

    Converting every saved tensor up front cost more than some rules themselves: a
    BatchNorm saves six tensors and reads four, and a float32 activation copied to float64
    is a full pass over it. Only valid while the node is alive (during `reference_for`).
    """

    def __init__(self, node: Any) -> None:
        self._node = node
        self._names = _saved_names(node)
        self._values: dict[str, Any] = {}

    def raw(self, key: str) -> Any:
        """The value as autograd hands it back (KeyError: no such value, or freed)."""
        attr = "_saved_" + key
        if attr not in self._names:
            raise KeyError(key)
        try:
            return getattr(self._node, attr)
        except RuntimeError as e:  # freed by a backward without retain_graph
            raise KeyError(key) from e

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            pass
        value = self._values[key] = to_numpy(self.raw(key))
        return value

    def __iter__(self) -> Iterator[str]:
        for attr in self._names:
            key = attr[len("_saved_"):]
            try:
                self.raw(key)
            except KeyError:
                continue
            yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def small(self, size: int) -> dict[str, Any]:
        """Values that fit on a line (arrays of ≤ `size` entries, Python numbers), converted
        without converting the large ones."""
        out: dict[str, Any] = {}
        for attr in self._names:
            key = attr[len("_saved_"):]
            try:
                value = self.raw(key)
            except KeyError:
                continue
            if isinstance(value, torch.Tensor):
                if value.numel() <= size:
                    out[key] = self[key]
            elif isinstance(value, (bool, int, float)):
                out[key] = value
        return out


def _saved_names(node: Any) -> tuple[str, ...]:
    names = _SAVED_NAMES.get(type(node))
    if names is None:
        names = tuple(a for a in dir(node) if a.startswith("_saved_"))
        _SAVED_NAMES[type(node)] = names
    return names


def _edge_meta(fn: Any, index: int) -> tuple[tuple[int, ...] | None, torch.dtype | None]:
    """Shape and dtype of the tensor travelling along one next edge (None: absent edge)."""
    if fn is None:
        return None, None
    if is_accumulate(fn):
        return tuple(fn.variable.shape), fn.variable.dtype
    meta = fn._input_metadata
    return (tuple(meta[index].shape), meta[index].dtype) if index < len(meta) else (None, None)


def context_from_node(node: Any, grad_outputs: Sequence[Any]) -> RuleContext:
    """Build the `RuleContext` of a live autograd node (its saved values must still exist).

    Raises ValueError for a node with a complex input or output whose rule is written for
    real tensors only: read as real, it would report a wrong gradient as torch's bug.
    """
    name = type(node).__name__
    edges = [_edge_meta(fn, i) for fn, i in node.next_functions]
    outputs = node._input_metadata
    complex_inputs = tuple(dtype is not None and dtype.is_complex for _, dtype in edges)
    rule = RULES.get(name)
    if (any(complex_inputs) or any(m.dtype.is_complex for m in outputs)) and not (
        rule is not None and rule.complex
    ):
        raise ValueError(f"{name} has complex tensors; its NumPy rule covers real dtypes only")
    saved: Mapping[str, Any]
    if name == "CopySlices":  # its saved values are hidden; compiled autograd reads them
        grad = grad_outputs[0]
        hidden = {k: to_numpy(v) for k, v in copy_slices_saved(node, grad).items()}
        hidden["fn_saved"] = {k: to_numpy(v) for k, v in hidden["fn_saved"].items()}
        saved = hidden
    else:
        saved = LazySaved(node)
    return RuleContext(
        name=name,
        saved=saved,
        grad_outputs=tuple(None if g is None else to_numpy(g) for g in grad_outputs),
        input_shapes=tuple(shape for shape, _ in edges),
        output_shapes=tuple(tuple(m.shape) for m in outputs),
        complex_inputs=complex_inputs if any(complex_inputs) else (),
    )


def reference_for(ctx: RuleContext) -> tuple[np.ndarray | None, ...] | None:
    """Run the registered NumPy rule for `ctx.name`; None when there is no rule.

    Each result is reduced to its edge's shape the way the engine reduces a broadcast
    gradient, and is None where the edge is absent. A real edge keeps the real part of a
    complex result (the gradient of a real input of a complex op).
    """
    rule = RULES.get(ctx.name)
    if rule is None:
        return None
    raw = tuple(rule.fn(ctx))
    out: list[np.ndarray | None] = []
    for i, shape in enumerate(ctx.input_shapes):
        g = raw[i] if i < len(raw) else None
        if shape is None or g is None:
            out.append(None)
        elif i < len(ctx.complex_inputs) and ctx.complex_inputs[i]:
            out.append(sum_to(np.asarray(g, dtype=np.complex128), shape))
        else:
            # asarray, not astype: a float64 result is used as it is, not copied once more.
            out.append(sum_to(np.asarray(np.real(g), dtype=np.float64), shape))
    return tuple(out)


def _readable(t: torch.Tensor) -> np.ndarray:
    """torch's gradient as an array, sharing its memory where NumPy can read it as is."""
    t = t.detach()
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not (
        t._is_zerotensor() or t.is_neg()
    ):
        return t.numpy()
    return to_numpy(t)


def compare(
    reference: Sequence[np.ndarray | None], actual: Sequence[Any]
) -> tuple[float, float]:
    """Largest absolute and relative difference between a NumPy reference and torch.

    Relative error is measured against the largest magnitude of torch's gradient for
    that edge, so a tiny entry next to large ones does not blow the figure up. An edge
    torch filled but the reference left empty counts as an error of its full size.
    """
    max_abs, max_rel, _ = compare_with_scale(reference, actual)
    return max_abs, max_rel


def largest(value: Any) -> float:
    """The largest magnitude in torch's gradient `value` (0.0 when empty), read in place."""
    a = _readable(value) if isinstance(value, torch.Tensor) else np.asarray(value)
    if a.size == 0:
        return 0.0
    if a.dtype.kind == "c":
        return float(np.abs(a).max())
    # Two reductions over the array, not |a| materialised first and then reduced.
    return float(max(_MAX(a, axis=None), -_MIN(a, axis=None)))


# The ufuncs' reduce, without ndarray.max's Python-level wrapper (~1 µs a call, several
# calls per edge of every node).
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce


def compare_with_scale(
    reference: Sequence[np.ndarray | None], actual: Sequence[Any]
) -> tuple[float, float, float]:
    """`compare`, plus the largest magnitude of torch's gradients it read (the stepper's
    scale), so that figure does not cost another pass over every gradient."""
    edges: list[tuple[str, Any]] = []
    for ref, act in zip(reference, actual, strict=False):
        if act is None:
            continue
        figures = _edge_figures(ref, act)
        if figures is not None:
            edges.append(figures)
            if figures[0] == "bad":  # the rest cannot change an infinite error
                break
    return _fold(edges, [], [])


def _edge_figures(ref: Any, act: Any) -> tuple[str, Any] | None:
    """One edge compared on its own: ("d!", (max |r − a|, max |a|)), ("bad", max |a|) for
    a shape mismatch, None for an empty edge."""
    a = _readable(act) if isinstance(act, torch.Tensor) else np.asarray(act)
    r = np.zeros(a.shape) if ref is None else np.asarray(ref)
    if r.shape != a.shape:
        return "bad", largest(a)
    return ("d!", _max_diff(r, a)) if a.size else None


def _fold(
    edges: Sequence[tuple[str, Any]], diffs: Sequence[float], tops: Sequence[float]
) -> tuple[float, float, float]:
    """Max absolute and relative error and max |a| over a node's edges, in edge order
    (Python's max keeps the first of a NaN pair, as the stepper always has); an edge
    ("d", i) reads its figures from `diffs[i]`, `tops[i]`."""
    max_abs = max_rel = top = 0.0
    for kind, value in edges:
        if kind == "bad":
            return float("inf"), float("inf"), max(top, value)
        diff, scale = (diffs[value], tops[value]) if kind == "d" else value
        top = max(top, scale)
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, _relative(diff, scale))
    return max_abs, max_rel, top


def _relative(diff: float, scale: float) -> float:
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


# Edges up to this many entries are compared together by `compare_many`.
_SMALL_EDGE = 4096
_BATCHABLE = (torch.float32, torch.float64)


def compare_many(
    items: Sequence[tuple[Sequence[np.ndarray | None], Sequence[Any], Sequence[Any]]],
) -> list[tuple[float, float, float]]:
    """For each (reference, actual, outputs): `compare_with_scale(reference, actual)` with
    its scale raised to the largest magnitude of the `outputs` tensors — what the stepper
    stores per node — for many nodes at once.

    Small edges (most of a 25k-node chain's: 2×2 weights) cost five NumPy calls each one
    by one, ~8 µs of call overhead for a few entries; here they are laid end to end and
    reduced in one pass (`np.maximum.reduceat` per segment). Large or unusual edges (other
    dtypes, complex, lazy zeros) take `compare_with_scale`'s own path. Results equal that
    path's, NaN and shape mismatches included: the per-edge figures are folded in the
    same order by the same rules.
    """
    refs: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    # Per item, per edge: ("d", segment) or ("d!", (diff, scale)) for an edge compared
    # here; ("bad", largest) for a shape mismatch; per output: ("o", segment) or
    # ("o!", value).
    plans: list[tuple[list[tuple[str, Any]], list[tuple[str, Any]]]] = []
    for reference, actual, outputs in items:
        edges: list[tuple[str, Any]] = []
        for ref, act in zip(reference, actual, strict=False):
            if act is None:
                continue
            a = _small_view(act)
            if a is not None and (ref is None or (
                    isinstance(ref, np.ndarray) and ref.dtype.kind == "f")):
                r = np.zeros(a.shape) if ref is None else ref
                if r.shape != a.shape:
                    edges.append(("bad", largest(a)))
                    break
                if a.size:
                    edges.append(("d", len(acts)))
                    refs.append(r.ravel())
                    acts.append(a.ravel())
                continue
            figures = _edge_figures(ref, act)
            if figures is not None:
                edges.append(figures)
                if figures[0] == "bad":
                    break
        outs: list[tuple[str, Any]] = []
        for g in outputs:
            if not isinstance(g, torch.Tensor):
                continue
            a = _small_view(g)
            if a is None:
                outs.append(("o!", largest(g)))
            elif a.size:
                outs.append(("o", len(acts)))
                refs.append(a.ravel())  # only its max |a| is read: refs keeps in step
                acts.append(a.ravel())
            else:
                outs.append(("o!", 0.0))
        plans.append((edges, outs))
    diffs, tops = _segment_maxima(refs, acts)
    results = []
    for edges, outs in plans:
        max_abs, max_rel, top = _fold(edges, diffs, tops)
        biggest = max((tops[v] if k == "o" else v for k, v in outs), default=0.0)
        results.append((max_abs, max_rel, max(top, biggest)))
    return results


def _small_view(t: Any) -> np.ndarray | None:
    """torch's gradient `t` as a NumPy view when `compare_many` may batch it, else None."""
    if not isinstance(t, torch.Tensor) or t.numel() > _SMALL_EDGE:
        return None
    if t.requires_grad:
        t = t.detach()
    if not t.is_cpu or t.dtype not in _BATCHABLE or t._is_zerotensor() or t.is_neg():
        return None
    return t.numpy()


def _segment_maxima(
    refs: list[np.ndarray], acts: list[np.ndarray]
) -> tuple[list[float], list[float]]:
    """max |r − a| and max |a| of each pair of segments, in float64, NaN where one has a NaN."""
    if not acts:
        return [], []
    lengths = np.fromiter((a.size for a in acts), dtype=np.intp, count=len(acts))
    starts = np.zeros(len(acts), dtype=np.intp)
    np.cumsum(lengths[:-1], out=starts[1:])
    a = np.concatenate(acts, dtype=np.float64)
    d = np.concatenate(refs, dtype=np.float64)
    d -= a
    np.abs(d, out=d)
    np.abs(a, out=a)
    return (np.maximum.reduceat(d, starts).tolist(), np.maximum.reduceat(a, starts).tolist())


# Entries per block of `_max_diff`: 512 KiB of float64, which stays in cache between the
# subtraction and its two reductions.
_BLOCK = 1 << 16


def _max_diff(r: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """max |r - a| in float64 and max |a|, NaN when either has a NaN.

    A large gradient (a ViT's 2.4M-entry weights) is read block by block: the float64
    difference of the whole array was a fresh allocation and three passes over memory,
    which cost more than torch's backward of that layer.
    """
    if r.dtype.kind == "c" or a.dtype.kind == "c":
        d = np.asarray(np.subtract(r, a, dtype=np.complex128))
        return float(np.abs(d).max()), largest(a)
    if r.size <= _BLOCK or r.ndim == 0:
        d = np.subtract(r, a, dtype=np.float64)
        return (float(max(_MAX(d, axis=None), -_MIN(d, axis=None))),
                float(max(_MAX(a, axis=None), -_MIN(a, axis=None))))
    if (r.flags.c_contiguous and a.flags.c_contiguous) or (
            r.flags.f_contiguous and a.flags.f_contiguous):
        rf, af = r.ravel(order="K"), a.ravel(order="K")  # views: both laid out alike
        step = _BLOCK
    elif r.ndim == 2:  # one is the other's transpose in memory (a weight's gradient)
        return _max_diff_tiles(r, a)
    else:  # laid out differently: blocks of leading rows
        rf, af = r, a
        step = max(1, _BLOCK * r.shape[0] // r.size)
    buf = np.empty(step * (rf.size // rf.shape[0]))
    tops = []
    for start in range(0, rf.shape[0], step):
        rb, ab = rf[start:start + step], af[start:start + step]
        d = np.subtract(rb, ab, out=buf[:rb.size].reshape(rb.shape), dtype=np.float64)
        tops.append((_MAX(d, axis=None), -_MIN(d, axis=None),
                     _MAX(ab, axis=None), -_MIN(ab, axis=None)))
    # np.max, not Python's max, so a NaN in any block stays NaN.
    t = np.asarray(tops, dtype=np.float64)
    return float(np.max(t[:, :2])), float(np.max(t[:, 2:]))


_TILE = 256


def _max_diff_tiles(r: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """`_max_diff` of two matrices laid out differently (C and Fortran order), by square
    tiles: row blocks would read one of them across its rows, one cache line per entry
    (161 of swin_t's 363 ms of comparing)."""
    buf = np.empty((_TILE, _TILE))
    tops = []
    for i in range(0, r.shape[0], _TILE):
        for j in range(0, r.shape[1], _TILE):
            rb, ab = r[i:i + _TILE, j:j + _TILE], a[i:i + _TILE, j:j + _TILE]
            d = np.subtract(rb, ab, out=buf[:rb.shape[0], :rb.shape[1]], dtype=np.float64)
            tops.append((_MAX(d, axis=None), -_MIN(d, axis=None),
                         _MAX(ab, axis=None), -_MIN(ab, axis=None)))
    t = np.asarray(tops, dtype=np.float64)
    return float(np.max(t[:, :2])), float(np.max(t[:, 2:]))

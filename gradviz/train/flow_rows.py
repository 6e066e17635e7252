"""Where a `GradientFlow`'s recorded steps wait, and how they become statistics in batches.

On a small net a recorded step costs the training thread three copies: its gradients, the
weights before the update and after, each one ``_foreach_copy_`` into a row of a flat
buffer. The statistics are computed later, for many rows at once (when the rows run out or
the record is read, often by the page's thread): per step, one torch call per statistic and
parameter is what made recording cost +50-190% of a small net's step. A large net's
gradients are reduced where they are (see `_Rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import torch

__all__: list[str] = []

ROW_BYTES = 2 << 20  # one block of rows stays in cache while it is reduced: 64 rows of a
# small net, one row of a 400k-parameter one (more rows measured slower per row there)
MOST_ROWS = 64
BATCH_LEAST = 8  # fewer rows than this fit: reduce each step's gradients where they are
KEEP_OUTPUT = 4096  # entries: a smaller module output is copied, and reduced in a batch
NUMPY_MOST = 1 << 17  # entries: a smaller batch of rows is reduced in NumPy, in float64, a
# few calls for every parameter at once (20 rows of a 3-weight net: 330 µs in torch's
# per-parameter reductions, ~15 µs per call on strided slices); larger, torch is faster


@dataclass
class _Call:
    """One run of a leaf module in a recorded forward: its output's statistics so far."""

    module: int
    numel: int
    stats: Any  # mean, norm, non-zero entries (a tensor, NumPy once settled)
    peak: Any  # largest |x| of each unit (feature, dim 1), 1-D
    grad_norms: list[Any] = field(default_factory=list)
    output: torch.Tensor | None = None  # a small output's copy, until reduced


def _reduce_outputs(calls: list[_Call]) -> None:
    """Stats and peaks of the calls that kept their output, one batch per module and shape,
    in NumPy: the outputs are small (NumPy's calls a few µs each, torch's ~10 µs here)."""
    groups: dict[tuple[Any, ...], list[_Call]] = {}
    for c in calls:
        if c.output is not None:
            groups.setdefault((c.module, c.output.shape, c.output.dtype), []).append(c)
    for group in groups.values():
        x = np.stack([c.output.numpy() for c in group if c.output is not None]).astype(np.float64)
        a = np.abs(x)
        flat, abs_flat = x.reshape(len(x), -1), a.reshape(len(x), -1)
        peaks = a.max(axis=(1, *range(3, x.ndim))) if x.ndim >= 3 else abs_flat
        stats = np.stack([flat.mean(1), np.sqrt(np.square(abs_flat).sum(1)),
                          np.count_nonzero(abs_flat, axis=1).astype(np.float64)], 1)
        for i, c in enumerate(group):
            c.stats, c.peak, c.output = stats[i], peaks[i], None


def _output_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of outputs stacked on dim 0: (mean, norm, non-zero entries) per output, and each
    unit's largest |x| — a unit is a feature (the output's dim 1), dead when 0 for every
    sample and position."""
    a = x.abs()
    flat, abs_flat = x.reshape(len(x), -1), a.reshape(len(x), -1)
    peaks = a.amax(dim=[1, *range(3, x.ndim)]) if x.ndim >= 3 else abs_flat
    stats = torch.stack([flat.mean(1), torch.linalg.vector_norm(abs_flat, dim=1),
                         nonzero(abs_flat, 1)], 1)
    return stats, peaks


def _settle(calls: list[_Call]) -> None:
    """Every call's stats, peaks and gradient norms as NumPy values."""
    _reduce_outputs(calls)
    live = [c for c in calls if isinstance(c.stats, torch.Tensor)]  # large, reduced in place
    norms = [g.reshape(1) for c in calls for g in c.grad_norms]
    parts = [*(c.stats for c in live), *norms]
    values = torch.cat(parts).double().numpy() if parts else np.zeros(0)  # one sync
    for i, c in enumerate(live):
        c.stats, c.peak = values[3 * i : 3 * i + 3], c.peak.double().numpy()
    pos = 3 * len(live)
    for c in calls:
        k = len(c.grad_norms)
        c.grad_norms = list(values[pos : pos + k])
        pos += k


def act_call(module: int, t: torch.Tensor) -> _Call:
    """What is kept of output ``t`` until the step is reduced: a copy of a small output
    (one torch call now, statistics later with other steps': the seven calls here cost a
    tiny net's record more than its hooks), or a large one's statistics (a few scalars)."""
    if t.numel() <= KEEP_OUTPUT:  # NumPy has no bfloat16
        copy = t.float() if t.dtype == torch.bfloat16 else t.clone()
        return _Call(module, t.numel(), None, None, output=copy)
    stats, peaks = _output_stats(t.unsqueeze(0))
    return _Call(module, t.numel(), stats[0], peaks[0])


def _strided(t: torch.Tensor) -> torch.Tensor:
    """A sparse gradient (nn.Embedding(sparse=True)) as a dense one; others as they are."""
    return t.to_dense() if t.layout != torch.strided else t


def nonzero(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Count of non-zero entries of ``a`` (≥ 0: an abs) along ``dim``, as a float (exact
    below 2**24 entries). torch's count_nonzero is 5-18x slower here (1.5 ms on 400k
    floats, 1 thread)."""
    return a.sign().sum(dim)


@dataclass
class _Entry:
    """A kept step: its row and activation calls until reduced, then its record."""

    step: int
    loss: float | None
    row: int | None
    has_grad: list[bool] | None  # None: every parameter had a gradient
    calls: list[_Call]
    grad: np.ndarray | None = None  # statistics already reduced (a large net)
    ratio: np.ndarray | None = None
    record: Any = None  # the FlowRecord, once reduced


GRAD, BEFORE, AFTER = 0, 1, 2  # what a row holds


class _Rows:
    """Flat rows of gradients and weights (before, after) for steps not yet reduced.

    ``batched`` when many rows fit in cache: then a step's statistics wait in its row and
    are computed with other steps'. Otherwise (a large net) copying gradients costs more
    than it saves, so they are reduced where they are, and only the weights before the
    update are kept (one row) until the update is seen.
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.sizes = [p.numel() for p in params]
        self.shapes = [tuple(p.shape) for p in params]
        width = sum(self.sizes)
        # float32 at least: NumPy has no bfloat16, and sums of float16 lose the small values
        self.dtype = reduce(torch.promote_types, (p.dtype for p in params), torch.float32)
        item = torch.empty(0, dtype=self.dtype).element_size()
        self.count = max(1, min(MOST_ROWS, ROW_BYTES // max(1, width * item)))
        self.batched = self.count >= BATCH_LEAST
        if not self.batched:
            self.count = 1
        kinds = (GRAD, BEFORE, AFTER) if self.batched else (BEFORE,)
        self.buf = {k: torch.zeros(self.count, width, dtype=self.dtype) for k in kinds}
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.spans = [(s, s + n) for s, n in zip(starts, self.sizes, strict=True)]
        self.views = {
            k: [[b[r, lo:hi].view(shape) for (lo, hi), shape in zip(self.spans, self.shapes,
                                                                   strict=True)]
                for r in range(self.count)]
            for k, b in self.buf.items()
        }
        self.free = list(range(self.count))[::-1]  # popped from the end: rows in order

    def give(self, rows: list[int]) -> None:
        """Rows reduced: free again, lowest popped first so the next batch is a slice."""
        self.free = sorted([*self.free, *rows], reverse=True)

    def fits(self, params: list[torch.nn.Parameter]) -> bool:
        return all(tuple(p.shape) == s for p, s in zip(params, self.shapes, strict=True))

    def write(self, kind: int, row: int, tensors: list[torch.Tensor],
              which: list[int] | None = None) -> None:
        """Copy ``tensors`` into row ``row`` of buffer ``kind`` (GRAD, BEFORE, AFTER);
        ``which``: the parameter index of each tensor when not all are given."""
        views = self.views[kind][row]
        targets = views if which is None else [views[i] for i in which]
        try:
            torch._foreach_copy_(targets, tensors)
        except RuntimeError:  # e.g. a sparse gradient (nn.Embedding(sparse=True))
            for t, v in zip(tensors, targets, strict=True):
                v.copy_(_strided(t))

    def take(self, entry: _Entry, params: list[torch.nn.Parameter]) -> None:
        """A recorded step's gradients (their statistics, for a large net) and the weights
        before its update, into the entry's row."""
        assert entry.row is not None
        grads = [p.grad for p in params]
        which = None
        if any(g is None for g in grads):
            entry.has_grad = [g is not None for g in grads]
            which = [i for i, g in enumerate(grads) if g is not None]
        present: list[torch.Tensor] = [g for g in grads if g is not None]
        with torch.no_grad():
            if self.batched:
                if present:
                    self.write(GRAD, entry.row, present, which)
            else:
                entry.grad = live_grad_table(present, which, len(params))
            self.write(BEFORE, entry.row, [p.detach() for p in params])

    def blocks(self, kind: int, rows: list[int]) -> list[torch.Tensor]:
        """Each parameter's (rows × entries) block of buffer ``kind``."""
        lo = min(rows)
        if rows == list(range(lo, lo + len(rows))):  # the usual case: no copy
            b = self.buf[kind][lo : lo + len(rows)]
        else:
            b = self.buf[kind].index_select(0, torch.tensor(rows))
        return [b[:, s:e] for s, e in self.spans]

    def reduce(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(rows × parameters × GRAD_STATS, rows × parameters update/weight ratio)."""
        if len(rows) * self.buf[GRAD].shape[1] <= NUMPY_MOST:
            return self._reduce_numpy(rows)
        before = self.blocks(BEFORE, rows)
        return (grad_table(self.blocks(GRAD, rows)),
                update_table(before, self.blocks(AFTER, rows)))

    def _reduce_numpy(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """`reduce` of a small batch: each statistic is one ``reduceat`` over every
        parameter's segment of the rows."""
        grad, before, after = (self.buf[k].numpy()[rows].astype(np.float64)
                               for k in (GRAD, BEFORE, AFTER))
        sizes = np.array(self.sizes, dtype=np.float64)
        full = sizes > 0  # reduceat cannot give an empty segment: those stay NaN
        starts = np.array([lo for lo, _ in self.spans])[full]
        a = np.abs(grad)
        out = np.full((len(rows), len(sizes), 4), np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            out[:, full, 0] = np.sqrt(np.add.reduceat(a * a, starts, axis=1))
            out[:, full, 1] = np.add.reduceat(a, starts, axis=1) / sizes[full]
            out[:, full, 2] = np.maximum.reduceat(a, starts, axis=1)
            # NaN counts as non-zero: a broken gradient is not a dead one
            out[:, full, 3] = 1.0 - np.add.reduceat(a != 0, starts, axis=1,
                                                    dtype=np.float64) / sizes[full]
            moved = np.sqrt(np.add.reduceat(np.square(after - before), starts, axis=1))
            norm = np.sqrt(np.add.reduceat(before * before, starts, axis=1))
        ratio = np.full((len(rows), len(sizes)), np.nan)
        ratio[:, full] = np.divide(moved, norm, out=np.full(norm.shape, np.nan), where=norm > 0)
        return out, ratio

    def settle(self, entries: list[_Entry]) -> None:
        """Reduce the entries still in a row (their grad and ratio set) and free the rows."""
        waiting = [e for e in entries if e.row is not None]
        if not waiting:
            return
        rows: list[int] = [e.row for e in waiting]  # type: ignore[misc]
        grad, ratio = self.reduce(rows)
        for e, g, r in zip(waiting, grad, ratio, strict=True):
            e.grad, e.ratio, e.row = g, r, None
        self.give(rows)

    def before(self, row: int) -> list[torch.Tensor]:
        return [v.reshape(1, -1) for v in self.views[BEFORE][row]]


def grad_table(blocks: list[torch.Tensor]) -> np.ndarray:
    """(rows × parameters × GRAD_STATS) from each parameter's (rows × entries) gradients."""
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for g in blocks:
            a = g.abs()
            # torch's reductions rather than np.add.reduceat: they sum pairwise (exact
            # enough in float32); on a 400k-entry row as fast as float32 reduceat, which
            # sums in sequence, and twice as fast as float64 reduceat
            parts += [torch.linalg.vector_norm(a, dim=1), a.sum(1),
                      a.amax(1) if a.shape[1] else a.sum(1), nonzero(a, 1)]
        rows = blocks[0].shape[0]
        table = torch.stack(parts).double().numpy().reshape(len(blocks), 4, rows)
    size = np.broadcast_to(np.array([g.shape[1] for g in blocks], dtype=np.float64)[:, None],
                           table[:, 0].shape)
    # np.divide(where=) rather than np.errstate: entering errstate cost more than the whole
    # division (0.5 ms on a busy machine); an empty parameter's shares stay NaN
    mean, zero = (np.divide(table[:, k], size, out=np.full(size.shape, np.nan), where=size > 0)
                  for k in (1, 3))
    stats = np.stack([table[:, 0], mean, table[:, 2], 1.0 - zero], axis=-1)  # params×rows×4
    return stats.transpose(1, 0, 2)


def live_grad_table(grads: list[torch.Tensor], which: list[int] | None, params: int
                    ) -> np.ndarray:
    """(parameters × GRAD_STATS) of a step's gradients where they are; ``which``: the
    parameter of each gradient when some had none (their rows stay NaN)."""
    out = np.full((params, 4), np.nan)
    if grads:
        out[which if which is not None else slice(None)] = grad_table(
            [_strided(g).reshape(1, -1) for g in grads])[0]
    return out


def update_table(before: list[torch.Tensor], after: list[torch.Tensor]) -> np.ndarray:
    """(rows × parameters) ‖after − before‖ / ‖before‖ (NaN where the weights are 0)."""
    with torch.no_grad():
        parts = [*(torch.linalg.vector_norm(a - b, dim=1) for a, b in zip(after, before,
                                                                          strict=True)),
                 *(torch.linalg.vector_norm(b, dim=1) for b in before)]
        table = torch.stack(parts).double().numpy().reshape(2, len(before), -1)
    ratio = np.divide(table[0], table[1], out=np.full(table[0].shape, np.nan),
                      where=table[1] > 0)
    return ratio.T


def act_table(entries: list[_Entry], modules: int, width: int) -> list[np.ndarray]:
    """Each entry's (modules × ACT_STATS) table from its calls, NaN for a module not run."""
    calls = [c for e in entries for c in e.calls]
    tables = [np.full((modules, width), np.nan) for _ in entries]
    if not calls:
        return tables
    _settle(calls)
    for e, table in zip(entries, tables, strict=True):
        # per module: n, Σx, Σx², non-zero, units, alive units, Σ‖grad‖², got a grad
        acc: dict[int, list[float]] = {}
        for c in e.calls:
            a = acc.setdefault(c.module, [0.0] * 8)
            mean, norm, nz = c.stats
            a[0] += c.numel
            a[1] += mean * c.numel
            a[2] += norm * norm
            a[3] += nz
            a[4] += len(c.peak)
            a[5] += np.count_nonzero(c.peak)
            for g in c.grad_norms:
                a[6] += g * g
                a[7] = 1.0
        for j, (n, sx, sxx, nz, units, live, gsq, has_g) in acc.items():
            mean = sx / n
            table[j] = (mean, math.sqrt(max(sxx / n - mean * mean, 0.0)), 1.0 - nz / n,
                        1.0 - live / units, math.sqrt(gsq) if has_g else math.nan)
    return tables

"""Finite differences for the checker, and the kink-aware comparison of gradients.

Inputs are flattened into one vector ``x`` (n entries) and outputs into one vector (m
entries). The backward's Jacobian ``A`` (m × n) is compared with central differences;
where they disagree the point may be a kink or a tie, so the comparison falls back to
one-sided differences: along a direction ``v`` the backward's ``A v`` must lie between the
slopes just left and just right of ``x`` (or, for non-convex ties such as the middle of a
sort, between the slopes found at nearby points). Only a value outside that interval is a
bug. Directions are the axes plus joint directions over the entries involved, since a tie
rule that hands the full gradient to both tied inputs is within bounds along every axis but
not along their sum.

Finite differences are evaluated on one stacked batch when the function is batch-safe
(checked against single evaluations), otherwise one point at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

# Layout and as_outputs are re-exported: the checker's modules import them from here.
from gradviz.check._layout import Layout, as_outputs

__all__ = [
    "BatchState", "EvalError", "Evaluator", "JacobianResult", "Layout", "Tolerance",
    "Violation", "compare_directions", "compare_jacobian", "tolerance_for",
]

_MAX_JOINT = 8  # entries combined pairwise into joint directions
_NEARBY = (16, 48)  # nearby points sampled (in two stages) before a suspect is a bug
_GROUP = 4  # suspect directions checked together after the first
_CHUNK = 1 << 18  # numbers per batched call, to bound memory


@dataclass(frozen=True)
class Tolerance:
    """Finite-difference step and tolerances for one (analytical, numerical) dtype pair."""

    eps: float  # step, relative to max(1, |x|)
    atol: float
    rtol: float
    radius: float  # how far nearby points lie, in steps
    value_rtol: float  # forward values compared with each other
    value_atol: float
    linear_rtol: float  # backward(u) against the Jacobian's transpose times u


_TOLERANCES = {
    # Analytical float64, numerics float64 (the default): gradcheck's tolerances.
    (torch.float64, torch.float64): Tolerance(1e-6, 1e-5, 1e-3, 100.0, 1e-7, 1e-9, 1e-6),
    # Lower-precision backward judged against float64 numerics: only the backward's
    # rounding needs room, so these stay tight enough to see real bugs.
    (torch.float32, torch.float64): Tolerance(1e-6, 1e-4, 2e-3, 100.0, 1e-4, 1e-6, 1e-4),
    (torch.float16, torch.float64): Tolerance(1e-6, 1e-2, 2e-2, 100.0, 1e-2, 1e-3, 1e-2),
    (torch.bfloat16, torch.float64): Tolerance(1e-6, 2e-2, 4e-2, 100.0, 2e-2, 1e-2, 2e-2),
    # The function only computes in its own dtype: bigger steps against rounding noise.
    (torch.float32, torch.float32): Tolerance(1e-3, 1e-2, 1e-2, 10.0, 1e-4, 1e-6, 1e-4),
    (torch.float16, torch.float16): Tolerance(3e-2, 1e-1, 1e-1, 5.0, 1e-2, 1e-3, 1e-2),
    (torch.bfloat16, torch.bfloat16): Tolerance(6e-2, 2e-1, 2e-1, 5.0, 2e-2, 1e-2, 2e-2),
}


def tolerance_for(dtype: torch.dtype, numeric_dtype: torch.dtype) -> Tolerance:
    return _TOLERANCES[(dtype, numeric_dtype)]


class EvalError(Exception):
    """The function raised when re-evaluated at the very point under test."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


# ----------------------------------------------------------------------------- evaluation


@dataclass
class BatchState:
    """Whether stacking points into one call gives the same numbers as single calls.

    ``None`` until the first batched call was checked row by row; shared across examples.
    """

    allowed: bool | None = None


class Evaluator:
    """Evaluates ``call`` at many points, each a row of flat differentiable-input values."""

    def __init__(
        self,
        call: Callable[..., Any],
        inputs: Sequence[Any],
        layout: Layout,
        numeric_dtype: torch.dtype,
        tolerance: Tolerance,
        batch: BatchState | None,
        *,
        grad: bool = False,
    ) -> None:
        self.call = call
        self.base = list(inputs)
        self.layout = layout
        self.dtype = numeric_dtype
        self.tolerance = tolerance
        self.grad = grad
        others_are_plain = all(
            not isinstance(v, torch.Tensor) for i, v in enumerate(inputs) if i not in layout.in_pos
        )
        self.batch = batch if (batch is not None and others_are_plain) else None
        self.trusted = False  # one spot-check per example (per Evaluator) is enough
        self.calls = 0

    def round(self, points: np.ndarray) -> np.ndarray:
        """The points as the function sees them (rounded to the numeric dtype)."""
        if self.dtype == torch.float64:
            return points
        return torch.from_numpy(points).to(self.dtype).to(torch.float64).numpy()

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.ascontiguousarray(points, dtype=np.float64)
        if self.batch is not None and self.batch.allowed is not False and len(points) > 1:
            values = self._batched(points, self.batch)
            if values is not None:
                return values
        if not len(points):
            return np.zeros((0, self.layout.m))
        return np.stack([self._single(row) for row in points])

    def single(self, row: np.ndarray) -> np.ndarray:
        """One point; raises EvalError when the function raises there."""
        return self._single(row, strict=True)

    def _args(self, columns: list[torch.Tensor]) -> list[Any]:
        args = list(self.base)
        for pos, value in zip(self.layout.in_pos, columns, strict=True):
            args[pos] = value
        return args

    def _single(self, row: np.ndarray, strict: bool = False) -> np.ndarray:
        columns = [
            torch.tensor(row[a:b].reshape(shape), dtype=self.dtype)
            for a, b, shape in self.layout.in_spans()
        ]
        self.calls += 1
        try:
            with torch.set_grad_enabled(self.grad):
                outputs = as_outputs(self.call(*self._args(columns)))
        except Exception as error:  # the user's code: a point where it raises is unknown
            if strict:
                raise EvalError(error) from None
            return np.full(self.layout.m, np.nan)
        flat = self.layout.flat_outputs(outputs)
        if flat is None:
            if strict:
                raise EvalError(ValueError("the outputs changed shape or type at this point"))
            return np.full(self.layout.m, np.nan)
        return flat

    def _batched(self, points: np.ndarray, batch: BatchState) -> np.ndarray | None:
        per_row = self.layout.n + self.layout.m
        step = max(1, _CHUNK // max(1, per_row))
        chunks = []
        for start in range(0, len(points), step):
            values = self._batched_chunk(points[start:start + step], batch)
            if values is None:
                return None
            chunks.append(values)
        return np.concatenate(chunks)

    def _batched_chunk(self, points: np.ndarray, batch: BatchState) -> np.ndarray | None:
        rows = len(points)
        columns = [
            torch.tensor(points[:, a:b].reshape(rows, *shape), dtype=self.dtype)
            for a, b, shape in self.layout.in_spans()
        ]
        self.calls += 1
        try:
            # Any warning means the function did something different with a batch dim.
            with warnings.catch_warnings(), torch.set_grad_enabled(self.grad):
                warnings.simplefilter("error")
                outputs = as_outputs(self.call(*self._args(columns)))
            values = self.layout.flat_outputs(outputs, rows=rows)
        except Exception:
            values = None
        if values is None or not (self.trusted or self._agrees(points, values, batch)):
            batch.allowed = False
            return None
        self.trusted = True
        return values

    def _agrees(self, points: np.ndarray, values: np.ndarray, batch: BatchState) -> bool:
        """Spot-check the batch against single calls (eight spread rows the first time, then two).

        The first batched call of every example is checked, so a function that is batch-safe
        for some values only (Python control flow on tensor values) falls back to single calls.
        """
        rows = len(points)
        if batch.allowed is None:
            spread = np.linspace(0, rows - 1, min(rows, 8)).astype(int).tolist()
            picks = sorted({0, rows - 1, *spread})
        else:
            picks = sorted({0, rows - 1})
        tol = self.tolerance
        for r in picks:
            single = self._single(points[r])
            finite = np.abs(single, where=np.isfinite(single), out=np.zeros_like(single))
            scale = 1 + finite.max(initial=0.0)
            with np.errstate(all="ignore"):
                if not np.allclose(values[r], single, rtol=tol.value_rtol,
                                   atol=tol.value_atol * scale, equal_nan=True):
                    return False
        batch.allowed = True
        return True


# ----------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Violation:
    """A gradient value outside what the function's slopes allow."""

    where: str
    actual: float
    central: float
    low: float
    high: float
    tolerance: float
    excess: float  # how many tolerances outside
    row: int
    column: int | None  # the input entry, for axis directions
    kink: bool  # whether the one-sided slopes differ here
    tie: bool = False  # a joint direction over entries with equal values


@dataclass
class JacobianResult:
    central: np.ndarray  # (m, n) central differences at x
    violations: list[Violation]
    nonfinite: list[tuple[int, int]]  # backward non-finite where the slopes are finite
    kink: tuple[int, int, float, float, float] | None  # row, column, left, right, analytical
    nearby: int = 0
    suspects: int = 0  # axis entries outside their one-sided interval (before nearby points)


def compare_jacobian(
    evaluate: Evaluator, x: np.ndarray, analytical: np.ndarray, tol: Tolerance,
    rng: np.random.Generator,
) -> JacobianResult:
    """Compares the backward's Jacobian ``analytical`` (m × n) with the function's slopes at x.

    Directions: every axis, plus the sum of all entries and a random mix (cheap, in the same
    batch; they see ties that no single axis shows). Pairs of entries join in only where a
    suspect needs them.
    """
    layout = evaluate.layout
    m, n = analytical.shape
    mix = rng.normal(size=n)
    extra = (np.stack([np.ones(n), mix / max(np.abs(mix).max(initial=0.0), 1e-300)])
             if n > 1 else np.zeros((0, n)))
    first = np.concatenate([np.eye(n), extra])
    with np.errstate(all="ignore"):
        central_all, right_all, left_all = _directional(evaluate, x, first, tol)
        central, right, left = central_all[:n], right_all[:n], left_all[:n]
        values = analytical.T  # (n directions, m outputs)
        result = JacobianResult(central=central.T.copy(), violations=[], nonfinite=[], kink=None)
        finite = np.isfinite(central) & np.isfinite(right) & np.isfinite(left)
        bad = ~np.isfinite(values) & finite
        result.nonfinite = [(int(i), int(j)) for j, i in zip(*np.nonzero(bad), strict=True)]
        norms = np.ones(n)
        mismatch, low, high = _judge(values, central, right, left, norms, tol)
        gap = _gap(right, left, norms, tol)
        result.kink = _kink(gap, right, left, values)
        e_values = extra @ analytical.T
        e_norms = np.abs(extra).sum(axis=1)
        e_mismatch, e_low, e_high = _judge(e_values, central_all[n:], right_all[n:], left_all[n:],
                                           e_norms, tol)
        if not mismatch.any() and not e_mismatch.any():
            return result
        # Where x shows a kink (in the suspect's column or row), nearby slopes that all agree
        # prove nothing: a tie's other pieces may simply not have been sampled yet.
        result.suspects = int((mismatch & _outside(values, low, high, norms, tol)[0]).sum())
        kinky = gap > 1
        kink_cols, kink_rows = kinky.any(axis=1), kinky.any(axis=0)
        evidence = kink_cols[:, None] | kink_rows[None, :]
        found, used = _violations(evaluate, x, np.eye(n), values, central, right, left, mismatch,
                                  low, high, evidence, tol, rng)
        directions = np.eye(n)
        axis_found = bool(found)
        if not found:
            rows = mismatch.any(axis=0) | e_mismatch.any(axis=0)
            pairs = _pair_directions(mismatch | e_mismatch.any(axis=0)[None, :], gap, rows,
                                     analytical, right, left)
            directions = np.concatenate([extra, pairs])
            j_values = directions @ analytical.T
            j_norms = np.abs(directions).sum(axis=1)
            if len(pairs):
                p_central, p_right, p_left = _directional(evaluate, x, pairs, tol)
                j_central = np.concatenate([central_all[n:], p_central])
                j_right = np.concatenate([right_all[n:], p_right])
                j_left = np.concatenate([left_all[n:], p_left])
            else:
                j_central, j_right, j_left = central_all[n:], right_all[n:], left_all[n:]
            j_mismatch, j_low, j_high = _judge(j_values, j_central, j_right, j_left, j_norms, tol)
            j_mismatch &= rows[None, :]
            involved = (directions != 0).astype(float) @ kink_cols.astype(float) > 0
            j_evidence = (involved[:, None] | kink_rows[None, :]
                          | (_gap(j_right, j_left, j_norms, tol) > 1))
            found, more = _violations(evaluate, x, directions, j_values, j_central, j_right, j_left,
                                      j_mismatch, j_low, j_high, j_evidence, tol, rng)
            used += more
    result.nearby = used
    for d, i, value, c, lo, hi, t, ex, kinked in found:
        column = d if axis_found else None
        label = _direction_label(directions[d], layout)
        where = (f"d {layout.row(i)} / d {label}" if axis_found
                 else f"d {layout.row(i)} along {label}")
        entries = x[directions[d] != 0]
        tie = not axis_found and len(entries) > 1 and bool(np.all(entries == entries[0]))
        result.violations.append(Violation(where, value, c, lo, hi, t, ex, i, column, kinked, tie))
    result.violations.sort(key=lambda v: -v.excess)
    return result


def compare_directions(
    evaluate: Evaluator, x: np.ndarray, directions: np.ndarray, values: np.ndarray,
    labels: Sequence[str], tol: Tolerance, rng: np.random.Generator,
) -> list[Violation]:
    """Like compare_jacobian for given directional derivatives ``values`` (d × m), e.g. a jvp."""
    layout = evaluate.layout
    with np.errstate(all="ignore"):
        central, right, left = _directional(evaluate, x, directions, tol)
        norms = np.abs(directions).sum(axis=1)
        mismatch, low, high = _judge(values, central, right, left, norms, tol)
        if not mismatch.any():
            return []
        evidence = np.ones_like(mismatch)
        found, _ = _violations(evaluate, x, directions, values, central, right, left, mismatch,
                               low, high, evidence, tol, rng)
    out = [Violation(f"d {layout.row(i)} along {labels[d]}", v, c, lo, hi, t, ex, i, None, k)
           for d, i, v, c, lo, hi, t, ex, k in found]
    return sorted(out, key=lambda v: -v.excess)


def _steps(x: np.ndarray, directions: np.ndarray, tol: Tolerance) -> np.ndarray:
    scale = np.where(directions != 0, np.abs(x)[None, :], 0.0).max(axis=1, initial=0.0)
    return tol.eps * np.maximum(1.0, scale)


def _directional(
    evaluate: Evaluator, x: np.ndarray, directions: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central, right and left slopes along each direction: three (d, m) arrays."""
    steps = _steps(x, directions, tol)
    plus = evaluate.round(x[None, :] + steps[:, None] * directions)
    minus = evaluate.round(x[None, :] - steps[:, None] * directions)
    sq = (directions * directions).sum(axis=1)
    # The step actually taken after rounding (exact for axes).
    t_plus = ((plus - x[None, :]) * directions).sum(axis=1) / sq
    t_minus = ((x[None, :] - minus) * directions).sum(axis=1) / sq
    values = evaluate(np.concatenate([x[None, :], plus, minus]))
    d = len(directions)
    base, f_plus, f_minus = values[0], values[1:d + 1], values[d + 1:]
    right = (f_plus - base[None, :]) / t_plus[:, None]
    left = (base[None, :] - f_minus) / t_minus[:, None]
    central = (f_plus - f_minus) / (t_plus + t_minus)[:, None]
    return central, right, left


def _central_many(evaluate: Evaluator, points: np.ndarray, directions: np.ndarray,
                  tol: Tolerance) -> np.ndarray:
    """Central slopes along each direction at each point: (K, d, m)."""
    k, d = len(points), len(directions)
    nonzero = directions != 0
    scale = np.where(nonzero[None], np.abs(points)[:, None, :], 0.0).max(axis=2, initial=0.0)
    steps = tol.eps * np.maximum(1.0, scale)  # (K, d): _steps for each point at once
    plus = evaluate.round(points[:, None, :] + steps[:, :, None] * directions[None])
    minus = evaluate.round(points[:, None, :] - steps[:, :, None] * directions[None])
    sq = (directions * directions).sum(axis=1)
    width = (((plus - minus) * directions[None]).sum(axis=2)) / sq[None]  # (K, d)
    n = points.shape[1]
    values = evaluate(np.concatenate([plus.reshape(k * d, n), minus.reshape(k * d, n)]))
    f_plus, f_minus = values[:k * d].reshape(k, d, -1), values[k * d:].reshape(k, d, -1)
    return (f_plus - f_minus) / width[:, :, None]


def _judge(values, central, right, left, norms, tol):
    """Which entries disagree with central differences, and the one-sided interval."""
    known = np.isfinite(values) & np.isfinite(central)
    allowed = tol.atol * norms[:, None] + tol.rtol * np.maximum(np.abs(values), np.abs(central))
    mismatch = known & (np.abs(values - central) > allowed)
    low, high = np.fmin(right, left), np.fmax(right, left)
    return mismatch, low, high


def _gap(right, left, norms, tol):
    """How far the one-sided slopes differ, in (generous) tolerances: > 1 is a kink."""
    allowed = 10 * (tol.atol * norms[:, None] + tol.rtol * np.maximum(np.abs(right), np.abs(left)))
    gap = np.abs(right - left) / allowed
    return np.where(np.isfinite(gap), gap, 0.0)


def _kink(gap, right, left, values, column=True):
    if gap.size == 0 or gap.max() <= 1:
        return None
    d, i = np.unravel_index(int(np.argmax(gap)), gap.shape)
    return (int(i), int(d) if column else -1, float(left[d, i]), float(right[d, i]),
            float(values[d, i]))


def _outside(values, low, high, norms, tol):
    allowed = tol.atol * norms[:, None] + tol.rtol * np.maximum(np.abs(low), np.abs(high))
    below, above = low - allowed - values, values - high - allowed
    excess = np.fmax(below, above) / allowed
    return np.nan_to_num(excess, nan=-1.0) > 0, excess, allowed


def _violations(evaluate, x, V, values, central, right, left, mismatch, low, high, evidence, tol,
                rng):
    """Entries outside the one-sided interval even after widening it with nearby points.

    A suspect is confirmed as a bug when the slopes at nearby points (the limits that make
    up the generalized gradient at x) do not reach the backward's value either. If the
    first nearby slopes all agree with the slope at x and x shows no kink near the suspect
    (``evidence``), the function is smooth there and the suspect is confirmed at once;
    otherwise more points are sampled, since a non-convex tie (the middle of a sort) needs
    a nearby point in the right piece. Suspects are checked a few directions at a time,
    worst first, until one is confirmed.
    """
    norms = np.abs(V).sum(axis=1)
    outside, excess, allowed = _outside(values, low, high, norms, tol)
    bad = mismatch & outside
    if not bad.any():
        return [], 0
    ranked = np.argsort(-np.where(bad, excess, -np.inf).max(axis=1), kind="stable")
    order = [int(d) for d in ranked if bad[d].any()]
    scale = tol.eps * tol.radius * np.maximum(1.0, np.abs(x))
    confirmed = np.zeros_like(bad)
    used = 0
    # The worst suspect alone first (usually all a bug needs), then a few at a time.
    starts = [0, *range(1, len(order), _GROUP)]
    for start, stop in zip(starts, [*starts[1:], len(order)], strict=True):
        dirs = np.asarray(order[start:stop])
        cand_low, cand_high = low[dirs].copy(), high[dirs].copy()
        still = bad[dirs].copy()
        settled = np.zeros_like(still)
        for stage, count in enumerate(_NEARBY):
            radii = (np.ones((count, 1)) if stage == 0
                     else np.where(np.arange(count) % 2 == 0, 1.0, 0.1)[:, None])
            jitter = rng.uniform(-1.0, 1.0, size=(count, len(x)))
            points = x[None, :] + radii * scale[None, :] * jitter
            slopes = _central_many(evaluate, evaluate.round(points), V[dirs], tol)  # (K, d', m)
            used += count
            lo_k, hi_k = np.fmin.reduce(slopes, axis=0), np.fmax.reduce(slopes, axis=0)
            cand_low, cand_high = np.fmin(cand_low, lo_k), np.fmax(cand_high, hi_k)
            out, over, room = _outside(values[dirs], cand_low, cand_high, norms[dirs], tol)
            still &= out
            if stage == 0:
                # Tight compared with how far backward is off: more points would not help.
                spread = np.fmax(hi_k - lo_k, np.abs(hi_k - central[dirs]))
                settled = still & (spread <= np.fmax(room, 0.1 * over * room)) & ~evidence[dirs]
            if not (still & ~settled).any():
                break
        low[dirs], high[dirs] = cand_low, cand_high
        confirmed[dirs] = still
        if confirmed.any():
            break
    outside, excess, allowed = _outside(values, low, high, norms, tol)
    kinked = _gap(right, left, norms, tol) > 1
    found = [
        (int(d), int(i), float(values[d, i]), float(central[d, i]), float(low[d, i]),
         float(high[d, i]), float(allowed[d, i]), float(excess[d, i]), bool(kinked[d, i]))
        for d, i in zip(*np.nonzero(confirmed), strict=True)
    ]
    return found, used


def _pair_directions(mismatch, gap, rows, analytical, right, left):
    """Sums and differences of pairs of the entries involved in a mismatch or kink.

    Skipped when every suspect output depends on at most one involved entry (elementwise
    functions): pairs then add nothing beyond the axes.
    """
    n = mismatch.shape[0]
    score = np.where(mismatch[:, rows].any(axis=1), 2.0, 0.0) + (gap[:, rows] > 1).any(axis=1)
    ranked = np.argsort(-score, kind="stable")[:_MAX_JOINT]
    involved = sorted(int(j) for j in ranked if score[j] > 0)
    if len(involved) < 2:
        return np.zeros((0, n))
    touched = (np.abs(analytical[rows][:, involved]) + np.abs(right[involved][:, rows]).T
               + np.abs(left[involved][:, rows]).T) > 0
    if touched.sum(axis=1).max(initial=0) <= 1:
        return np.zeros((0, n))
    pairs = list(combinations(involved, 2))
    vectors = np.zeros((2 * len(pairs), n))
    for k, (a, b) in enumerate(pairs):
        vectors[2 * k, [a, b]] = (1.0, 1.0)
        vectors[2 * k + 1, [a, b]] = (1.0, -1.0)
    return vectors


def _direction_label(v: np.ndarray, layout: Layout) -> str:
    entries = np.nonzero(v)[0]
    names = [layout.column(int(j)) for j in entries]
    if len(entries) == 1:
        return names[0]
    if np.all(np.abs(v[entries]) == 1):
        signed = zip(entries[1:], names[1:], strict=True)
        return names[0] + "".join(("+" if v[j] > 0 else "-") + name for j, name in signed)
    return "a random mix of " + ", ".join(names)

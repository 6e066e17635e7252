"""The core properties checked on one example, run by Hypothesis for every drawn input.

``Runner`` keeps what the run saw (kinks, warnings, the numerics settings); ``_Example``
runs the properties for one input tuple, sharing the forward, the random grad_output and
the Jacobian between them. The optional properties live in ``_extra_checks``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from gradviz.check._extra_checks import ExtraChecks
from gradviz.check._numerics import (
    BatchState,
    EvalError,
    Evaluator,
    Layout,
    Tolerance,
    as_outputs,
    compare_jacobian,
    tolerance_for,
)
from gradviz.check._report import Entry, Failure, Kink
from gradviz.check._util import (
    FAILED,
    VERSION_ONLY,
    Callee,
    CheckFailed,
    OnClones,
    attempt,
    describe,
    entry_of,
    example_line,
    is_leaf_in_place,
    jacobian_message,
    same,
    to_numpy,
    where_changed,
)

__all__ = ["CheckFailed", "Runner"]

_HEATMAP_LIMIT = 4096  # Jacobians with more entries are not kept in the report
_MAX_KINKS = 5


class Runner:
    """Runs the selected properties on one example at a time; keeps what it saw."""

    def __init__(
        self,
        fn: Callee,
        *,
        dtype: torch.dtype,
        checks: Sequence[str],
        reference: Callable[..., Any] | None,
        input_names: Sequence[str],
    ) -> None:
        self.fn: Callee = fn
        self.dtype = dtype
        self.checks = frozenset(checks)
        self.reference = reference
        self.input_names = tuple(input_names)
        self.numeric_dtype: torch.dtype | None = None  # inputs' dtype for finite differences
        self.tol: Tolerance | None = None  # set with numeric_dtype, on the first example
        self.batch = BatchState()
        # Whether backward, too, treats a leading batch dim row by row (double_backward's
        # finite differences of backward): its own state, as the forward's says nothing of it.
        self.vjp_batch = BatchState()
        self.examples = 0
        self.kinks_seen = 0
        self.kinks: list[Kink] = []
        self.warnings: dict[str, Failure] = {}
        self.ran: set[str] = {"runs"}
        self.notes: dict[str, str] = {}
        self.strict_warning: str | None = None  # set while shrinking a warning

    # ------------------------------------------------------------------ one example

    def run(self, example: Any) -> None:
        self.examples += 1
        inputs = self._prepare(example)
        ex = _Example(self, inputs)
        if self.strict_warning is not None:
            ex.warning_only()
        else:
            ex.run_all()

    def _prepare(self, example: Any) -> tuple[Any, ...]:
        items = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        prepared = []
        for value in items:
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value.copy())
            if isinstance(value, torch.Tensor):
                value = value.detach().clone()
                if value.is_floating_point():
                    value = value.to(self.dtype)
            prepared.append(value)
        return tuple(prepared)

    def name(self, position: int) -> str:
        return self.input_names[position] if position < len(self.input_names) else f"in{position}"

    def tolerance(self) -> Tolerance:
        return self.tol or tolerance_for(self.dtype, self.dtype)


class _Example(ExtraChecks):
    """The properties for one input tuple, sharing the forward, u and the Jacobian."""

    def __init__(self, runner: Runner, inputs: tuple[Any, ...]) -> None:
        self.r = runner
        self.fn: Callee = runner.fn
        self.inputs = inputs
        self.diff: tuple[int, ...] = tuple(i for i, v in enumerate(inputs)
                          if isinstance(v, torch.Tensor) and v.is_floating_point())
        arrays = [to_numpy(v) for v in inputs]
        digest = zlib.crc32(b"".join(a.tobytes() + repr(a.shape).encode() for a in arrays))
        self.rng = np.random.default_rng(digest)
        self.arrays = tuple(arrays)

    # -------------------------------------------------------------- failure plumbing

    def fail(self, check: str, message: str, *, inputs: Sequence[Any] | None = None,
             entries: Sequence[Entry] = (),
             jacobians: tuple[np.ndarray, np.ndarray, Layout] | None = None,
             severity: str = "failure", kind: type[CheckFailed] | None = None) -> CheckFailed:
        arrays = self.arrays if inputs is None else tuple(to_numpy(v) for v in inputs)
        flags = [isinstance(v, torch.Tensor) for v in (self.inputs if inputs is None else inputs)]
        analytical = numerical = None
        rows: tuple[str, ...] = ()
        columns: tuple[str, ...] = ()
        if jacobians is not None and jacobians[0].size <= _HEATMAP_LIMIT:
            analytical, numerical, layout = jacobians
            rows, columns = layout.rows(), layout.columns()
        failure = Failure(
            check=check, message=message, inputs=arrays, entries=tuple(entries),
            analytical=analytical, numerical=numerical, rows=rows, columns=columns,
            example=example_line(arrays, self.r.dtype, flags), severity=severity,
        )
        return (kind or FAILED[check])(failure)

    def selected(self, check: str) -> bool:
        if check in self.r.checks:
            self.r.ran.add(check)
            return True
        return False

    # -------------------------------------------------------------- the forward

    def forward(self) -> None:
        outs, error = self._forward_on_fresh_leaves()
        if is_leaf_in_place(error) and not isinstance(self.fn, OnClones):  # found with inputs=
            # autograd refused only after forward ran, so the leaves are changed: new ones.
            self.fn = self.r.fn = OnClones(self.fn)
            self.r.notes["in_place"] = OnClones.IN_PLACE_NOTE
            outs, error = self._forward_on_fresh_leaves()
        if error is not None:
            raise self.fail("runs", f"forward raised {describe(error)}")
        self.outs: tuple[Any, ...] = outs
        self.out_pos: tuple[int, ...] = tuple(
            k for k, o in enumerate(outs)
            if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point())

    def _forward_on_fresh_leaves(self) -> tuple[Any, BaseException | None]:
        self.leaves: tuple[Any, ...] = tuple(
            v.detach().clone().requires_grad_(True) if i in self.diff else v
            for i, v in enumerate(self.inputs))
        self.versions = [v._version if isinstance(v, torch.Tensor) else None for v in self.leaves]
        return attempt(lambda: as_outputs(self.fn.apply(*self.leaves)))

    def check_inputs_unchanged(self, stage: str) -> None:
        if not self.selected("inputs_unchanged"):
            return
        rows = zip(self.inputs, self.leaves, self.versions, strict=True)
        for i, (before, after, version) in enumerate(rows):
            if not isinstance(before, torch.Tensor):
                continue
            changed = not same(before, after.detach())
            if changed or after._version != version:
                where = where_changed(self.r.name(i), before, after.detach())
                fix = ("clone it first (x = x.clone()) or use out-of-place ops; autograd needs "
                       "the original values, and the caller's tensor must not change")
                raise self.fail("inputs_unchanged",
                                f"{stage} modified its input in place: {where}. Fix: {fix}",
                                kind=None if changed else VERSION_ONLY)

    def layout(self) -> Layout:
        names = [self.r.name(p) for p in self.diff]
        many = len(self.out_pos) > 1 or len(self.outs) > 1
        out_names = [f"out{k}" if many else "out" for k in self.out_pos]
        return Layout(
            in_pos=self.diff, in_shapes=tuple(tuple(self.inputs[p].shape) for p in self.diff),
            in_names=tuple(names), out_pos=self.out_pos,
            out_shapes=tuple(tuple(self.outs[k].shape) for k in self.out_pos),
            out_names=tuple(out_names),
        )

    def grad_outputs(self) -> list[torch.Tensor]:
        """A dense random grad_output per differentiable output (entries ±[0.5, 1.5])."""
        out = []
        for k in self.out_pos:
            shape = tuple(self.outs[k].shape)
            signs = self.rng.choice([-1.0, 1.0], size=shape)
            values = self.rng.uniform(0.5, 1.5, size=shape) * signs
            out.append(torch.tensor(values, dtype=torch.float64).to(self.outs[k].dtype))
        return out

    def backward(self, us: Sequence[torch.Tensor], what: str) -> tuple[torch.Tensor, ...]:
        diff_outs = [self.outs[k] for k in self.out_pos]
        wrt = [self.leaves[p] for p in self.diff]
        grads, error = attempt(lambda: torch.autograd.grad(
            diff_outs, wrt, list(us), retain_graph=True, allow_unused=True, materialize_grads=True))
        if error is not None:
            raise self.fail("runs", f"backward raised {describe(error)} ({what})")
        return tuple(g.detach().clone() for g in grads)

    # -------------------------------------------------------------- all properties

    def run_all(self) -> None:
        r = self.r
        self.forward()
        self.check_inputs_unchanged("forward")
        if not self.out_pos:
            raise self.fail("runs", "forward returned no floating-point tensor that requires grad "
                                    "(did it detach, or return integers only?)")
        layout = self.layout()
        self.check_finite_outputs()
        if r.reference is not None and self.selected("reference"):
            self.check_reference(r.reference)
        us = self.grad_outputs()
        snapshot = [u.clone() for u in us]
        dense = self.backward(us, "with a random grad_output")
        if self.selected("grad_output_unchanged"):
            for k, (u, before) in enumerate(zip(us, snapshot, strict=True)):
                if not same(before, u):
                    where = where_changed(f"grad_output{k if len(us) > 1 else ''}", before, u)
                    raise self.fail("grad_output_unchanged", (
                        f"backward modified grad_output in place: {where}. autograd may pass the "
                        "same gradient tensor to other nodes, so this corrupts their gradients. "
                        "Fix: grad_input = grad_output.clone() before changing it"))
        self.check_inputs_unchanged("backward")
        if {"jacobian", "linearity", "finite"} & r.checks:
            analytical = self.analytical(layout)
            if self.selected("jacobian") or "finite" in r.checks:
                self.check_jacobian(layout, analytical)
            if self.selected("linearity"):
                self.check_linearity(layout, analytical, snapshot, dense)
        if self.selected("deterministic"):
            again = self.backward([u.clone() for u in snapshot], "run a second time")
            for p, a, b in zip(self.diff, dense, again, strict=True):
                if not same(a, b):
                    where = where_changed(f"grad of {r.name(p)}", a, b)
                    raise self.fail("deterministic", (
                        f"backward gave a different result the second time: {where}. Backward "
                        "must not depend on state it changes (ctx attributes, globals) or on "
                        "randomness"))
        if "aliasing" in r.checks:
            self.check_aliasing(snapshot)
        if "jvp" in r.checks:
            self.check_jvp(layout)
        if "vmap" in r.checks:
            self.check_vmap(layout)
        if "double_backward" in r.checks:
            self.check_double_backward(layout, snapshot)
        if self.selected("raw_backward"):
            self.check_raw_backward(snapshot)

    def warning_only(self) -> None:
        """While shrinking a warning: the forward, then only the warned-about property."""
        try:
            self.forward()
        except CheckFailed:
            return
        if not self.out_pos:
            return
        self.check_raw_backward(self.grad_outputs())

    # -------------------------------------------------------------- single properties

    def check_finite_outputs(self) -> None:
        if not self.selected("finite"):
            return
        if not all(torch.isfinite(v).all() for v in self.inputs
                   if isinstance(v, torch.Tensor) and v.is_floating_point()):
            return
        for k, out in enumerate(self.outs):
            if (isinstance(out, torch.Tensor) and out.is_floating_point()
                    and not torch.isfinite(out).all()):
                idx = tuple(int(i) for i in torch.nonzero(~torch.isfinite(out))[0])
                raise self.fail("finite", (
                    f"output {k} is {out.detach()[idx].item()} at index {list(idx)} although every "
                    "input is finite. If the function is undefined there, restrict the inputs "
                    "(inputs=strategies.function_inputs(..., min_value=...)) or drop 'finite' "
                    "from checks"))

    def check_reference(self, reference: Callable[..., Any]) -> None:
        tol = self.r.tolerance()
        args = [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in self.inputs]
        expected, error = attempt(lambda: as_outputs(reference(*args)))
        if error is not None:
            raise self.fail("reference", f"the reference raised {describe(error)}")
        entries = []
        for k, want in enumerate(expected):
            if k >= len(self.outs):
                break
            got = to_numpy(self.outs[k]).astype(np.float64)
            want = np.asarray(to_numpy(want), dtype=np.float64)
            if got.shape != want.shape:
                raise self.fail("reference",
                                f"output {k} has shape {got.shape}, the reference {want.shape}")
            allowed = (tol.value_atol * (1 + np.abs(want).max(initial=0))
                       + tol.value_rtol * np.abs(want))
            with np.errstate(invalid="ignore"):
                bad = ~((np.abs(got - want) <= allowed) | (np.isnan(got) & np.isnan(want))
                        | (got == want))
            name = f"out{k}" if len(self.outs) > 1 else "out"
            for idx in zip(*np.nonzero(bad), strict=True):
                where = f"{name}[{','.join(map(str, idx))}]" if idx else name
                entry = Entry(where, float(got[idx]), float(want[idx]), float(allowed[idx]))
                entries.append((float(np.abs(got[idx] - want[idx]) / allowed[idx]), entry))
        if entries:
            entries.sort(key=lambda e: -e[0] if math.isfinite(e[0]) else -math.inf)
            worst = entries[0][1]
            raise self.fail("reference", (
                f"forward gives {worst.where} = {worst.actual:.6g} but the reference gives "
                f"{worst.expected:.6g} "
                f"({len(entries)} entr{'y differs' if len(entries) == 1 else 'ies differ'})"),
                entries=[e for _, e in entries])

    def analytical(self, layout: Layout) -> np.ndarray:
        """The Jacobian from backward, one one-hot grad_output per output entry (m × n).

        The Function's node is called directly and the engine's post-processing (None as
        zero, reduction to the input's shape, cast to its dtype) applied here: the same
        numbers as autograd.grad at a fraction of the cost. Anything unusual falls back to
        the engine, which the dense backward has already run once.
        """
        rows = self._analytical_direct(layout)
        if rows is not None:
            return rows
        wrt = [self.leaves[p] for p in self.diff]
        out_rows = []
        for q, k in enumerate(self.out_pos):
            out = self.outs[k]
            for e in range(out.numel()):
                onehot = torch.zeros(out.numel(), dtype=out.dtype)
                onehot[e] = 1
                onehot = onehot.reshape(out.shape)
                grads, error = attempt(partial(
                    torch.autograd.grad, out, wrt, onehot,
                    retain_graph=True, allow_unused=True, materialize_grads=True))
                if error is not None:
                    where = layout.row(layout.out_offsets[q] + e)
                    raise self.fail("runs", f"backward raised {describe(error)} "
                                            f"(grad_output one-hot at {where})")
                flat = [g.detach().to(torch.float64).reshape(-1).numpy() for g in grads]
                out_rows.append(np.concatenate(flat) if flat else np.zeros(0))
        return np.stack(out_rows) if out_rows else np.zeros((0, layout.n))

    def _analytical_direct(self, layout: Layout) -> np.ndarray | None:
        node = self.outs[self.out_pos[0]].grad_fn
        function = getattr(self.fn, "function", self.fn)
        if (node is None or not hasattr(node, "apply")
                or getattr(node, "_forward_cls", None) is not function
                or any(self.outs[k].grad_fn is not node for k in self.out_pos)):
            return None
        templates = [torch.zeros(o.shape, dtype=o.dtype) if isinstance(o, torch.Tensor) else None
                     for o in self.outs]
        rows = np.zeros((layout.m, layout.n))
        row = 0
        for k in self.out_pos:
            out = self.outs[k]
            for e in range(out.numel()):
                grads = [t if t is None else t.clone() for t in templates]
                onehot = torch.zeros(out.numel(), dtype=out.dtype)
                onehot[e] = 1
                grads[k] = onehot.view(out.shape)
                with torch.no_grad():
                    raw, error = attempt(partial(node.apply, *grads))
                if error is not None:
                    return None
                raw = as_outputs(raw)
                if len(raw) != len(self.inputs):
                    return None
                for p, (a, b, _) in zip(self.diff, layout.in_spans(), strict=True):
                    g = raw[p]
                    if g is None:
                        continue
                    if not isinstance(g, torch.Tensor):
                        return None
                    shape = self.inputs[p].shape
                    if g.shape != shape:
                        try:
                            g = g.sum_to_size(shape)
                        except RuntimeError:
                            return None
                    exact = g.detach().to(self.inputs[p].dtype)  # the engine casts to the input's
                    rows[row, a:b] = exact.to(torch.float64).reshape(-1).numpy()
                row += 1
        return rows

    def evaluator(self, layout: Layout) -> Evaluator:
        r = self.r
        numeric = self.configure_numerics() if r.numeric_dtype is None else r.numeric_dtype
        return Evaluator(self.fn.apply, self.inputs, layout, numeric, r.tolerance(), r.batch)

    def configure_numerics(self) -> torch.dtype:
        """Float64 finite differences whenever the function computes in float64 when asked;
        tolerances from the precision the outputs really have (once, on the first example).
        Returns the dtype chosen for finite differences (also kept as ``numeric_dtype``)."""
        r = self.r
        outputs = [self.outs[k].dtype for k in self.out_pos]
        analytical = min([r.dtype, *outputs], key=lambda d: -torch.finfo(d).eps)
        numeric, precision = r.dtype, analytical
        if analytical == torch.float64:
            numeric = precision = torch.float64
        elif r.dtype != torch.float64:
            args = [v.detach().to(torch.float64) if i in self.diff else v
                    for i, v in enumerate(self.inputs)]
            with torch.no_grad():
                outs, error = attempt(lambda: as_outputs(self.fn.apply(*args)))
            if error is None and all(k < len(outs) and isinstance(outs[k], torch.Tensor)
                                     and outs[k].dtype == torch.float64 for k in self.out_pos):
                numeric = precision = torch.float64
        if precision != torch.float64:
            name = str(precision).split(".")[-1]
            why = (f"the outputs are {name}" if analytical != r.dtype
                   else "the function does not compute in float64")
            r.notes["numerics"] = (f"finite differences at {name} precision ({why}), "
                                   "with looser tolerances")
        r.numeric_dtype = numeric
        r.tol = tolerance_for(analytical, precision)
        return numeric

    def check_jacobian(self, layout: Layout, analytical: np.ndarray) -> None:
        r = self.r
        if layout.n == 0 or layout.m == 0:
            return
        evaluate = self.evaluator(layout)
        tol = r.tolerance()
        x = layout.flat_inputs(self.inputs)
        error = None
        try:
            evaluate.single(evaluate.round(x))
        except EvalError as caught:
            error = caught
        if error is not None:
            raise self.fail("runs", f"forward raised {error} when evaluated again without grad")
        result = compare_jacobian(evaluate, x, analytical, tol, self.rng)
        jacobians = (analytical, result.central, layout)
        if result.nonfinite and "finite" in r.checks:
            i, j = result.nonfinite[0]
            raise self.fail("finite", (
                f"backward gives {analytical[i, j]} for d {layout.row(i)} / d {layout.column(j)} "
                f"(at {layout.column(j)} = {x[j]:.6g}) where the function's slope is finite "
                f"({result.central[i, j]:.6g}); {len(result.nonfinite)} such entries"),
                jacobians=jacobians)
        if not self.selected("jacobian"):
            return
        if result.violations:
            raise self.fail("jacobian", jacobian_message(result, layout, x),
                            entries=[entry_of(v) for v in result.violations], jacobians=jacobians)
        if result.kink is not None:
            r.kinks_seen += 1
            i, j, left, right, value = result.kink
            if len(r.kinks) < _MAX_KINKS and j >= 0:
                where = f"d {layout.row(i)} / d {layout.column(j)}"
                kink = Kink(where, float(x[j]), left, right, value)
                if kink not in r.kinks:
                    r.kinks.append(kink)

    def check_linearity(self, layout: Layout, analytical: np.ndarray, us: Sequence[torch.Tensor],
                        dense: Sequence[torch.Tensor]) -> None:
        tol = self.r.tolerance()
        u = np.concatenate([to_numpy(t).astype(np.float64).ravel() for t in us])
        got = _flat(dense)
        usable = np.isfinite(analytical).all(axis=0)
        with np.errstate(all="ignore"):
            expected = np.where(usable, np.nan_to_num(analytical).T @ u, 0.0)
            scale = np.abs(np.nan_to_num(analytical)).T @ np.abs(u) + np.abs(got)
            allowed = tol.linear_rtol * (scale + 1e-3 * scale.max(initial=0.0)) + 1e-30
            bad = usable & ~(np.abs(got - expected) <= allowed)
        if bad.any():
            excess = np.where(bad, np.abs(got - expected) / allowed, 0)
            order = np.argsort(-excess)[: int(bad.sum())]
            entries = [Entry(f"grad {layout.column(j)}", float(got[j]), float(expected[j]),
                             float(allowed[j]))
                       for j in order]
            raise self.fail("linearity", (
                f"backward is not linear in grad_output: for a random grad_output u it gives "
                f"{entries[0].where} = {entries[0].actual:.6g}, but combining its one-hot results "
                f"gives {entries[0].expected:.6g}. Backward must only multiply grad_output by "
                "local derivatives (no abs, clamp, sign or squares of grad_output)"),
                entries=entries)
        zeros = [torch.zeros_like(t) for t in us]
        got0 = _flat(self.backward(zeros, "with a zero grad_output"))
        bad0 = usable & (got0 != 0)  # NaN counts as not zero too
        if bad0.any():
            j = int(np.nonzero(bad0)[0][0])
            raise self.fail("linearity", (
                f"backward with a zero grad_output gives {layout.column(j)} gradient "
                f"{got0[j]:.6g}, not 0: it adds something that does not scale with grad_output"),
                entries=[Entry(f"grad {layout.column(j)}", float(got0[j]), 0.0, 0.0)])


def _flat(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """The tensors' values in float64, one after the other."""
    if not tensors:
        return np.zeros(0)
    return np.concatenate([to_numpy(t).astype(np.float64).ravel() for t in tensors])

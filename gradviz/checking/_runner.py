"""The properties checked on one example, run by Hypothesis for every drawn input.

Each property that fails raises its own exception type, so Hypothesis tells the failing
properties apart and shrinks a separate counterexample for each. User code is only ever
called through ``_attempt``, which returns the error instead of raising it: our exception
is then raised outside any ``except`` block, so its origin is the property alone.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ._numerics import (
    BatchState,
    EvalError,
    Evaluator,
    Layout,
    Tolerance,
    Violation,
    as_outputs,
    compare_directions,
    compare_jacobian,
    tolerance_for,
)
from ._report import CHECKS, Entry, Failure, Kink

__all__ = ["CheckFailed", "Runner"]

_HEATMAP_LIMIT = 4096  # Jacobians with more entries are not kept in the report
_MAX_KINKS = 5


class CheckFailed(Exception):
    """A property does not hold on the current example."""

    secondary = False  # a weaker form of the same finding, reported only when alone

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.check}: {failure.message}")
        self.failure = failure


# One exception type per property: Hypothesis shrinks each one separately.
_FAILED: dict[str, type[CheckFailed]] = {
    name: type(f"{name.title().replace('_', '')}Failed", (CheckFailed,), {}) for name in CHECKS
}
# An in-place op that left the values as they were (e.g. clamp_ on inputs already in range)
# shrinks on its own, so the changed-values counterexample is not lost to it.
_VERSION_ONLY = type("InputsVersionFailed", (CheckFailed,), {"secondary": True})


def _attempt(thunk: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return thunk(), None
    except Exception as error:  # the user's code raised: reported as a property, never re-raised
        return None, error


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5))
                    and torch.equal(a.isnan(), b.isnan()))
    return bool(torch.equal(a, b))


def _where_changed(name: str, before: torch.Tensor, after: torch.Tensor) -> str:
    if before.shape != after.shape:
        return f"{name} changed shape from {tuple(before.shape)} to {tuple(after.shape)}"
    diff = (before != after) & ~(before.isnan() & after.isnan()) if before.is_floating_point() else before != after
    idx = torch.nonzero(diff)
    if len(idx) == 0:
        return f"{name} kept its values but its version counter moved (an in-place op ran on it)"
    first = tuple(int(i) for i in idx[0])
    label = f"{name}[{','.join(map(str, first))}]" if first else name
    return (f"{label} changed from {before[first].item():.6g} to {after[first].item():.6g}"
            f" ({len(idx)} entr{'y' if len(idx) == 1 else 'ies'} changed)")


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:
            value = value.to(torch.float32)
        return value.cpu().numpy().copy()
    return np.asarray(value)


def example_line(inputs: Sequence[np.ndarray], dtype: torch.dtype, tensor_flags: Sequence[bool]) -> str:
    """An ``@example(...)`` line that replays these inputs exactly (floats print round-trip)."""
    parts = []
    for array, is_tensor in zip(inputs, tensor_flags, strict=True):
        array = np.asarray(array)
        if array.size > 64:
            return "(inputs too large for an @example line; rerun with the seed)"
        if not is_tensor:
            parts.append(repr(array.item()) if array.ndim == 0 else repr(array.tolist()))
        elif array.dtype.kind == "f":
            parts.append(f"torch.tensor({array.astype(np.float64).tolist()!r}, dtype=torch.{str(dtype).split('.')[-1]})")
        else:
            parts.append(f"torch.tensor({array.tolist()!r}, dtype=torch.{array.dtype})")
    return f"@example(inputs=({', '.join(parts)},))"


class Runner:
    """Runs the selected properties on one example at a time; keeps what it saw."""

    def __init__(
        self,
        fn: type[torch.autograd.Function],
        *,
        dtype: torch.dtype,
        checks: Sequence[str],
        reference: Callable[..., Any] | None,
        input_names: Sequence[str],
    ) -> None:
        self.fn = fn
        self.dtype = dtype
        self.checks = frozenset(checks)
        self.reference = reference
        self.input_names = tuple(input_names)
        self.numeric_dtype: torch.dtype | None = None  # inputs' dtype for finite differences
        self.tol: Tolerance | None = None  # set with numeric_dtype, on the first example
        self.batch = BatchState()
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


class _Example:
    """The properties for one input tuple, sharing the forward, u and the Jacobian."""

    def __init__(self, runner: Runner, inputs: tuple[Any, ...]) -> None:
        self.r = runner
        self.fn = runner.fn
        self.inputs = inputs
        self.diff = tuple(i for i, v in enumerate(inputs)
                          if isinstance(v, torch.Tensor) and v.is_floating_point())
        arrays = [_numpy(v) for v in inputs]
        digest = zlib.crc32(b"".join(a.tobytes() + repr(a.shape).encode() for a in arrays))
        self.rng = np.random.default_rng(digest)
        self.arrays = tuple(arrays)

    # -------------------------------------------------------------- failure plumbing

    def fail(self, check: str, message: str, *, inputs: Sequence[Any] | None = None,
             entries: Sequence[Entry] = (), jacobians: tuple[np.ndarray, np.ndarray, Layout] | None = None,
             severity: str = "failure", kind: type[CheckFailed] | None = None) -> CheckFailed:
        arrays = self.arrays if inputs is None else tuple(_numpy(v) for v in inputs)
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
        return (kind or _FAILED[check])(failure)

    def selected(self, check: str) -> bool:
        if check in self.r.checks:
            self.r.ran.add(check)
            return True
        return False

    # -------------------------------------------------------------- the forward

    def forward(self) -> None:
        leaves = []
        for i, v in enumerate(self.inputs):
            leaves.append(v.detach().clone().requires_grad_(True) if i in self.diff else v)
        self.leaves = tuple(leaves)
        self.versions = [v._version if isinstance(v, torch.Tensor) else None for v in leaves]
        outs, error = _attempt(lambda: as_outputs(self.fn.apply(*self.leaves)))
        if error is not None:
            raise self.fail("runs", f"forward raised {_describe(error)}")
        self.outs = outs
        self.out_pos = tuple(k for k, o in enumerate(outs)
                             if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point())

    def check_inputs_unchanged(self, stage: str) -> None:
        if not self.selected("inputs_unchanged"):
            return
        for i, (before, after, version) in enumerate(zip(self.inputs, self.leaves, self.versions, strict=True)):
            if not isinstance(before, torch.Tensor):
                continue
            changed = not _same(before, after.detach())
            if changed or after._version != version:
                where = _where_changed(self.r.name(i), before, after.detach())
                fix = ("clone it first (x = x.clone()) or use out-of-place ops; autograd needs "
                       "the original values, and the caller's tensor must not change")
                raise self.fail("inputs_unchanged", f"{stage} modified its input in place: {where}. Fix: {fix}",
                                kind=None if changed else _VERSION_ONLY)

    def layout(self) -> Layout:
        names = [self.r.name(p) for p in self.diff]
        many = len(self.out_pos) > 1 or len(self.outs) > 1
        out_names = [f"out{k}" if many else "out" for k in self.out_pos]
        return Layout(
            in_pos=self.diff, in_shapes=tuple(tuple(self.inputs[p].shape) for p in self.diff),
            in_names=tuple(names), out_pos=self.out_pos,
            out_shapes=tuple(tuple(self.outs[k].shape) for k in self.out_pos), out_names=tuple(out_names),
        )

    def grad_outputs(self) -> list[torch.Tensor]:
        """A dense random grad_output per differentiable output (entries ±[0.5, 1.5])."""
        out = []
        for k in self.out_pos:
            shape = tuple(self.outs[k].shape)
            values = self.rng.uniform(0.5, 1.5, size=shape) * self.rng.choice([-1.0, 1.0], size=shape)
            out.append(torch.tensor(values, dtype=torch.float64).to(self.outs[k].dtype))
        return out

    def backward(self, us: Sequence[torch.Tensor], what: str) -> tuple[torch.Tensor, ...]:
        diff_outs = [self.outs[k] for k in self.out_pos]
        wrt = [self.leaves[p] for p in self.diff]
        grads, error = _attempt(lambda: torch.autograd.grad(
            diff_outs, wrt, list(us), retain_graph=True, allow_unused=True, materialize_grads=True))
        if error is not None:
            raise self.fail("runs", f"backward raised {_describe(error)} ({what})")
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
            self.check_reference()
        us = self.grad_outputs()
        snapshot = [u.clone() for u in us]
        dense = self.backward(us, "with a random grad_output")
        if self.selected("grad_output_unchanged"):
            for k, (u, before) in enumerate(zip(us, snapshot, strict=True)):
                if not _same(before, u):
                    where = _where_changed(f"grad_output{k if len(us) > 1 else ''}", before, u)
                    raise self.fail("grad_output_unchanged", (
                        f"backward modified grad_output in place: {where}. autograd may pass the "
                        "same gradient tensor to other nodes, so this corrupts their gradients. "
                        "Fix: grad_input = grad_output.clone() before changing it"))
        self.check_inputs_unchanged("backward")
        need_jacobian = bool({"jacobian", "linearity", "finite"} & r.checks)
        analytical = self.analytical(layout) if need_jacobian else None
        if self.selected("jacobian") or "finite" in r.checks:
            self.check_jacobian(layout, analytical)
        if self.selected("linearity"):
            self.check_linearity(layout, analytical, snapshot, dense)
        if self.selected("deterministic"):
            again = self.backward([u.clone() for u in snapshot], "run a second time")
            for p, a, b in zip(self.diff, dense, again, strict=True):
                if not _same(a, b):
                    where = _where_changed(f"grad of {r.name(p)}", a, b)
                    raise self.fail("deterministic", (
                        f"backward gave a different result the second time: {where}. Backward must not "
                        "depend on state it changes (ctx attributes, globals) or on randomness"))
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
            if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
                idx = tuple(int(i) for i in torch.nonzero(~torch.isfinite(out))[0])
                raise self.fail("finite", (
                    f"output {k} is {out.detach()[idx].item()} at index {list(idx)} although every input is "
                    "finite. If the function is undefined there, restrict the inputs "
                    "(inputs=strategies.function_inputs(..., min_value=...)) or drop 'finite' from checks"))

    def check_reference(self) -> None:
        tol = self.r.tolerance()
        args = [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in self.inputs]
        expected, error = _attempt(lambda: as_outputs(self.r.reference(*args)))
        if error is not None:
            raise self.fail("reference", f"the reference raised {_describe(error)}")
        entries = []
        for k, want in enumerate(expected):
            if k >= len(self.outs):
                break
            got = _numpy(self.outs[k]).astype(np.float64)
            want = np.asarray(_numpy(want), dtype=np.float64)
            if got.shape != want.shape:
                raise self.fail("reference", f"output {k} has shape {got.shape}, the reference {want.shape}")
            allowed = tol.value_atol * (1 + np.abs(want).max(initial=0)) + tol.value_rtol * np.abs(want)
            with np.errstate(invalid="ignore"):
                bad = ~((np.abs(got - want) <= allowed) | (np.isnan(got) & np.isnan(want)) | (got == want))
            for idx in zip(*np.nonzero(bad), strict=True):
                where = f"out{k}[{','.join(map(str, idx))}]" if idx else f"out{k}"
                entries.append((float(np.abs(got[idx] - want[idx]) / allowed[idx]),
                                Entry(where, float(got[idx]), float(want[idx]), float(allowed[idx]))))
        if entries:
            entries.sort(key=lambda e: -e[0] if math.isfinite(e[0]) else -math.inf)
            worst = entries[0][1]
            raise self.fail("reference", (
                f"forward gives {worst.where} = {worst.actual:.6g} but the reference gives {worst.expected:.6g} "
                f"({len(entries)} entries differ)"), entries=[e for _, e in entries])

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
                grads, error = _attempt(lambda out=out, onehot=onehot: torch.autograd.grad(
                    out, wrt, onehot, retain_graph=True, allow_unused=True, materialize_grads=True))
                if error is not None:
                    raise self.fail("runs", f"backward raised {_describe(error)} (grad_output one-hot at "
                                            f"{layout.row(layout.out_offsets[q] + e)})")
                out_rows.append(np.concatenate([g.detach().to(torch.float64).reshape(-1).numpy() for g in grads])
                                if grads else np.zeros(0))
        return np.stack(out_rows) if out_rows else np.zeros((0, layout.n))

    def _analytical_direct(self, layout: Layout) -> np.ndarray | None:
        node = self.outs[self.out_pos[0]].grad_fn
        if (node is None or not hasattr(node, "apply") or getattr(node, "_forward_cls", None) is not self.fn
                or any(self.outs[k].grad_fn is not node for k in self.out_pos)):
            return None
        templates = [torch.zeros(o.shape, dtype=o.dtype) if isinstance(o, torch.Tensor) else None for o in self.outs]
        rows = np.zeros((layout.m, layout.n))
        row = 0
        for k in self.out_pos:
            out = self.outs[k]
            for e in range(out.numel()):
                grads = [t if t is None else t.clone() for t in templates]
                grads[k].view(-1)[e] = 1
                with torch.no_grad():
                    raw, error = _attempt(lambda grads=grads: node.apply(*grads))
                if error is not None:
                    return None
                raw = as_outputs(raw)
                if len(raw) != len(self.inputs):
                    return None
                for p, a, b in zip(self.diff, layout.in_offsets[:-1], layout.in_offsets[1:], strict=True):
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
                    rows[row, a:b] = g.detach().to(self.inputs[p].dtype).to(torch.float64).reshape(-1).numpy()
                row += 1
        return rows

    def evaluator(self, layout: Layout) -> Evaluator:
        r = self.r
        if r.numeric_dtype is None:
            self.configure_numerics()
        return Evaluator(self.fn.apply, self.inputs, layout, r.numeric_dtype, r.tolerance(), r.batch)

    def configure_numerics(self) -> None:
        """Float64 finite differences whenever the function computes in float64 when asked;
        tolerances from the precision the outputs really have (once, on the first example)."""
        r = self.r
        outputs = [self.outs[k].dtype for k in self.out_pos]
        analytical = min([r.dtype, *outputs], key=lambda d: -torch.finfo(d).eps)
        numeric, precision = r.dtype, analytical
        if analytical == torch.float64:
            numeric = precision = torch.float64
        elif r.dtype != torch.float64:
            args = [v.detach().to(torch.float64) if i in self.diff else v for i, v in enumerate(self.inputs)]
            with torch.no_grad():
                outs, error = _attempt(lambda: as_outputs(self.fn.apply(*args)))
            if error is None and all(k < len(outs) and isinstance(outs[k], torch.Tensor)
                                     and outs[k].dtype == torch.float64 for k in self.out_pos):
                numeric = precision = torch.float64
        if precision != torch.float64:
            name = str(precision).split(".")[-1]
            why = (f"the outputs are {name}" if analytical != r.dtype
                   else "the function does not compute in float64")
            r.notes["numerics"] = f"finite differences at {name} precision ({why}), with looser tolerances"
        r.numeric_dtype = numeric
        r.tol = tolerance_for(analytical, precision)

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
            raise self.fail("jacobian", _jacobian_message(result.violations, result.nearby, layout, x),
                            entries=[_entry(v) for v in result.violations], jacobians=jacobians)
        if result.kink is not None:
            r.kinks_seen += 1
            i, j, left, right, value = result.kink
            if len(r.kinks) < _MAX_KINKS and j >= 0:
                kink = Kink(f"d {layout.row(i)} / d {layout.column(j)}", float(x[j]), left, right, value)
                if kink not in r.kinks:
                    r.kinks.append(kink)

    def check_linearity(self, layout: Layout, analytical: np.ndarray, us: Sequence[torch.Tensor],
                        dense: Sequence[torch.Tensor]) -> None:
        tol = self.r.tolerance()
        u = np.concatenate([_numpy(t).astype(np.float64).ravel() for t in us])
        got = np.concatenate([_numpy(g).astype(np.float64).ravel() for g in dense]) if dense else np.zeros(0)
        usable = np.isfinite(analytical).all(axis=0)
        with np.errstate(all="ignore"):
            expected = np.where(usable, np.nan_to_num(analytical).T @ u, 0.0)
            scale = np.abs(np.nan_to_num(analytical)).T @ np.abs(u) + np.abs(got)
            allowed = tol.linear_rtol * (scale + 1e-3 * scale.max(initial=0.0)) + 1e-30
            bad = usable & ~(np.abs(got - expected) <= allowed)
        if bad.any():
            excess = np.where(bad, np.abs(got - expected) / allowed, 0)
            order = np.argsort(-excess)[: int(bad.sum())]
            entries = [Entry(f"grad {layout.column(j)}", float(got[j]), float(expected[j]), float(allowed[j]))
                       for j in order]
            raise self.fail("linearity", (
                f"backward is not linear in grad_output: for a random grad_output u it gives "
                f"{entries[0].where} = {entries[0].actual:.6g}, but combining its one-hot results gives "
                f"{entries[0].expected:.6g}. Backward must only multiply grad_output by local "
                "derivatives (no abs, clamp, sign or squares of grad_output)"), entries=entries)
        zeros = [torch.zeros_like(t) for t in us]
        out = self.backward(zeros, "with a zero grad_output")
        got0 = np.concatenate([_numpy(g).astype(np.float64).ravel() for g in out]) if out else np.zeros(0)
        bad0 = usable & (got0 != 0)  # NaN counts as not zero too
        if bad0.any():
            j = int(np.nonzero(bad0)[0][0])
            raise self.fail("linearity", (
                f"backward with a zero grad_output gives {layout.column(j)} gradient {got0[j]:.6g}, not 0: "
                "it adds something that does not scale with grad_output"),
                entries=[Entry(f"grad {layout.column(j)}", float(got0[j]), 0.0, 0.0)])

    def check_aliasing(self, us: Sequence[torch.Tensor]) -> None:
        r = self.r
        pairs = [(a, b) for a in self.diff for b in self.diff if a < b
                 and self.inputs[a].shape == self.inputs[b].shape and self.inputs[a].dtype == self.inputs[b].dtype]
        if not pairs:
            if len(self.diff) > 1:
                r.notes.setdefault("aliasing", "aliasing not checked: no two inputs share shape and dtype")
            return
        self.selected("aliasing")
        tol = r.tolerance()
        for a, b in pairs[:2]:
            shared = self.inputs[a].detach().clone().requires_grad_(True)
            args = [v.detach().clone().requires_grad_(True) if i in self.diff else v for i, v in enumerate(self.inputs)]
            args[a] = args[b] = shared
            separate = list(args)
            separate[a] = self.inputs[a].detach().clone().requires_grad_(True)
            separate[b] = self.inputs[a].detach().clone().requires_grad_(True)
            aliased_inputs = list(self.inputs)
            aliased_inputs[b] = self.inputs[a]
            label = f"the same tensor as {r.name(a)} and {r.name(b)}"
            results = []
            for call_args in (args, separate):
                outs, error = _attempt(lambda call_args=call_args: as_outputs(self.fn.apply(*call_args)))
                if error is not None:
                    raise self.fail("aliasing", f"forward raised {_describe(error)} when given {label}",
                                    inputs=aliased_inputs)
                diff_outs = [outs[k] for k in self.out_pos if k < len(outs)]
                if len(diff_outs) != len(self.out_pos) or not all(isinstance(o, torch.Tensor) and o.requires_grad for o in diff_outs):
                    raise self.fail("aliasing", f"outputs changed when given {label}", inputs=aliased_inputs)
                wrt = [shared] if call_args is args else [separate[a], separate[b]]
                others = [call_args[p] for p in self.diff if p not in (a, b)]
                grads, error = _attempt(lambda diff_outs=diff_outs, wrt=wrt, others=others: torch.autograd.grad(
                    diff_outs, wrt + others, [u.clone() for u in us], allow_unused=True, materialize_grads=True))
                if error is not None:
                    raise self.fail("aliasing", f"backward raised {_describe(error)} when given {label}",
                                    inputs=aliased_inputs)
                results.append((diff_outs, grads))
            (outs_a, grads_a), (outs_s, grads_s) = results
            for k, (oa, os_) in enumerate(zip(outs_a, outs_s, strict=True)):
                if not torch.allclose(oa.detach(), os_.detach(), rtol=tol.value_rtol, atol=tol.value_atol, equal_nan=True):
                    raise self.fail("aliasing", (
                        f"forward gives different outputs for {label} than for two equal copies "
                        f"(output {k}); forward must not modify one input while reading the other"),
                        inputs=aliased_inputs)
            summed = grads_s[0] + grads_s[1]
            pairs_to_check = [(f"grad of {r.name(a)}", grads_a[0], summed)] + [
                (f"grad of {r.name(p)}", ga, gs)
                for p, ga, gs in zip([p for p in self.diff if p not in (a, b)], grads_a[1:], grads_s[2:], strict=True)
            ]
            for what, got, want in pairs_to_check:
                allowed = tol.value_atol + tol.linear_rtol * 10 * want.abs()
                if not bool(((got - want).abs() <= allowed).all() or torch.equal(got, want)):
                    g, w = _numpy(got).astype(np.float64), _numpy(want).astype(np.float64)
                    idx = np.unravel_index(int(np.nanargmax(np.abs(g - w))), g.shape) if g.size else ()
                    raise self.fail("aliasing", (
                        f"with {label}, backward gives {what} = {g[idx]:.6g} but two equal copies give "
                        f"{w[idx]:.6g} in total; backward must not depend on whether inputs are the same "
                        "object (no `is` checks, no in-place changes to saved tensors)"),
                        inputs=aliased_inputs)

    def check_jvp(self, layout: Layout) -> None:
        self.selected("jvp")
        import torch.autograd.forward_ad as fwad

        _warm_up_forward_ad(fwad)

        direction = self.rng.normal(size=layout.n)
        direction /= max(np.abs(direction).max(initial=0.0), 1e-300)
        tangents = []
        for p, a, b in zip(self.diff, layout.in_offsets[:-1], layout.in_offsets[1:], strict=True):
            tangents.append(torch.tensor(direction[a:b].reshape(self.inputs[p].shape), dtype=torch.float64)
                            .to(self.inputs[p].dtype))

        def run() -> list[np.ndarray]:
            with fwad.dual_level():
                args = list(self.inputs)
                for p, t in zip(self.diff, tangents, strict=True):
                    args[p] = fwad.make_dual(self.inputs[p].detach().clone(), t)
                outs = as_outputs(self.fn.apply(*args))
                flat = []
                for k in self.out_pos:
                    tangent = fwad.unpack_dual(outs[k]).tangent
                    flat.append(np.zeros(outs[k].numel()) if tangent is None
                                else _numpy(tangent).astype(np.float64).ravel())
                return flat

        flat, error = _attempt(run)
        if error is not None:
            raise self.fail("jvp", f"forward-mode AD raised {_describe(error)}")
        values = np.concatenate(flat)[None, :]
        evaluate = self.evaluator(layout)
        x = layout.flat_inputs(self.inputs)
        found = compare_directions(evaluate, x, direction[None, :], values, ["a random tangent"],
                                   self.r.tolerance(), self.rng)
        if found:
            v = found[0]
            raise self.fail("jvp", (
                f"for a random tangent, jvp gives {v.where.removeprefix('d ').split(' along ')[0]} a tangent "
                f"of {v.actual:.6g}, but finite differences along that tangent give {v.central:.6g} "
                f"(one-sided {v.low:.6g} .. {v.high:.6g})"), entries=[_entry(f) for f in found])

    def check_vmap(self, layout: Layout) -> None:
        self.selected("vmap")
        tol = self.r.tolerance()
        rows = [list(self.inputs)]
        for scale in (-1.0, 0.5):
            rows.append([v * scale if i in self.diff else v for i, v in enumerate(self.inputs)])
        batched = [torch.stack([row[i] for row in rows]) if i in self.diff else v for i, v in enumerate(self.inputs)]
        in_dims = tuple(0 if i in self.diff else None for i in range(len(self.inputs)))
        got, error = _attempt(lambda: as_outputs(torch.func.vmap(self.fn.apply, in_dims=in_dims)(*batched)))
        if error is not None:
            raise self.fail("vmap", f"vmap over the Function raised {_describe(error)}")
        for b, row in enumerate(rows):
            with torch.no_grad():
                want, error = _attempt(lambda row=row: as_outputs(self.fn.apply(*row)))
            if error is not None:
                raise self.fail("runs", f"forward raised {_describe(error)}", inputs=row)
            for k, w in enumerate(want):
                if not isinstance(w, torch.Tensor):
                    continue
                g = got[k][b] if k < len(got) and isinstance(got[k], torch.Tensor) else None
                close = g is not None and g.shape == w.shape and (
                    torch.allclose(g.detach().to(torch.float64), w.to(torch.float64), rtol=tol.value_rtol,
                                   atol=tol.value_atol, equal_nan=True)
                    if w.is_floating_point() else torch.equal(g, w))
                if not close:
                    raise self.fail("vmap", (
                        f"vmap gives a different output {k} for batch entry {b} than calling the Function "
                        "on that entry alone; check the vmap staticmethod (or generate_vmap_rule)"), inputs=row)

    def check_double_backward(self, layout: Layout, us: Sequence[torch.Tensor]) -> None:
        self.selected("double_backward")
        r = self.r
        k = len(self.inputs)
        count = len(self.diff)
        u_pos = tuple(range(k, k + len(us)))

        def vjp(*args: Any, graph: bool = False) -> tuple[torch.Tensor, ...]:
            with torch.enable_grad():
                xs = list(args[:k])
                for p in self.diff:
                    if not xs[p].requires_grad:
                        xs[p] = xs[p].detach().requires_grad_(True)
                outs = as_outputs(self.fn.apply(*xs))
                grads = torch.autograd.grad([outs[q] for q in self.out_pos], [xs[p] for p in self.diff],
                                            list(args[k:]), create_graph=graph, allow_unused=True,
                                            materialize_grads=True)
            return tuple(grads)

        leaves = [v.detach().clone().requires_grad_(True) if i in self.diff else v for i, v in enumerate(self.inputs)]
        u_leaves = [u.detach().clone().requires_grad_(True) for u in us]
        grads, error = _attempt(lambda: vjp(*leaves, *u_leaves, graph=True))
        if error is not None:
            raise self.fail("double_backward", f"backward with create_graph=True raised {_describe(error)}")
        h_layout = Layout(
            in_pos=self.diff + u_pos,
            in_shapes=layout.in_shapes + tuple(tuple(u.shape) for u in us),
            in_names=layout.in_names + tuple(f"grad_{n}" for n in layout.out_names),
            out_pos=tuple(range(count)), out_shapes=layout.in_shapes,
            out_names=tuple(f"grad_{n}" for n in layout.in_names),
        )
        wrt = [leaves[p] for p in self.diff] + u_leaves
        if not any(g.requires_grad for g in grads):
            raise self.fail("double_backward", (
                "backward's result carries no autograd graph, so its own gradient cannot be taken "
                "(did backward use .detach(), NumPy or @once_differentiable?)"))
        rows = []
        for g in grads:
            for e in range(g.numel()):
                if not g.requires_grad:
                    rows.append(np.zeros(h_layout.n))
                    continue
                onehot = torch.zeros(g.numel(), dtype=g.dtype)
                onehot[e] = 1
                second, error = _attempt(lambda g=g, onehot=onehot: torch.autograd.grad(
                    g, wrt, onehot.reshape(g.shape), retain_graph=True, allow_unused=True, materialize_grads=True))
                if error is not None:
                    raise self.fail("double_backward", f"double backward raised {_describe(error)}")
                rows.append(np.concatenate([_numpy(s).astype(np.float64).ravel() for s in second]))
        analytical = np.stack(rows) if rows else np.zeros((0, h_layout.n))
        base = list(self.inputs) + [u.detach().clone() for u in us]
        if r.numeric_dtype is None:
            self.configure_numerics()
        evaluate = Evaluator(vjp, base, h_layout, r.numeric_dtype, r.tolerance(), None, grad=True)
        x = h_layout.flat_inputs(base)
        result = compare_jacobian(evaluate, x, analytical, r.tolerance(), self.rng)
        if result.violations:
            raise self.fail("double_backward", _jacobian_message(result.violations, result.nearby, h_layout, x),
                            entries=[_entry(v) for v in result.violations],
                            jacobians=(analytical, result.central, h_layout))

    def check_raw_backward(self, us: Sequence[torch.Tensor]) -> None:
        r = self.r
        node = self.outs[self.out_pos[0]].grad_fn
        if node is None or not hasattr(node, "apply"):
            return
        grads = []
        by_pos = dict(zip(self.out_pos, us, strict=True))
        for k, out in enumerate(self.outs):
            if k in by_pos:
                grads.append(by_pos[k].clone())
            elif isinstance(out, torch.Tensor):
                grads.append(torch.zeros_like(out))
            else:
                grads.append(None)
        raw, error = _attempt(lambda: node.apply(*grads))
        if error is not None:
            return  # the engine call already ran this backward; a direct call may differ in details
        raw = as_outputs(raw)
        problems = []
        for p in self.diff:
            if p >= len(raw) or not isinstance(raw[p], torch.Tensor):
                continue
            g, x = raw[p], self.inputs[p]
            name = r.name(p)
            if tuple(g.shape) != tuple(x.shape):
                dims = _reduced_dims(tuple(g.shape), tuple(x.shape))
                problems.append(
                    f"backward returns shape {tuple(g.shape)} for {name}, whose shape is {tuple(x.shape)}; "
                    f"autograd sums it{dims} for you, so the missing reduction goes unnoticed until "
                    f"someone calls backward directly. Fix: return grad.sum_to_size({name}.shape)")
            if g.dtype != x.dtype:
                problems.append(
                    f"backward returns {str(g.dtype).split('.')[-1]} for {name}, which is "
                    f"{str(x.dtype).split('.')[-1]}; autograd casts it back silently and the precision "
                    f"is lost. Fix: compute the gradient in {name}'s dtype (drop the .float()/.to() cast)")
        if not problems:
            return
        message = "; ".join(problems)
        if r.strict_warning == "raw_backward":
            raise self.fail("raw_backward", message, severity="warning")
        if "raw_backward" not in r.warnings:
            r.warnings["raw_backward"] = self.fail("raw_backward", message, severity="warning").failure


_FORWARD_AD_READY = False


def _warm_up_forward_ad(fwad: Any) -> None:
    """The first make_dual imports torch's jvp decompositions, which warn about torch.jit.script
    (torch's own deprecation, not the user's): import them once with that warning silenced."""
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with fwad.dual_level():
            fwad.make_dual(torch.zeros(1), torch.zeros(1))
    _FORWARD_AD_READY = True


def _reduced_dims(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    extra = len(got) - len(want)
    if extra < 0:
        return ""
    dims = list(range(extra)) + [extra + i for i, (a, b) in enumerate(zip(got[extra:], want, strict=True))
                                 if b == 1 and a != 1]
    return f" over dims {tuple(dims)}" if dims else ""


def _entry(v: Violation) -> Entry:
    return Entry(v.where, v.actual, v.central, v.tolerance, v.low, v.high)


def _jacobian_message(violations: Sequence[Violation], nearby: int, layout: Layout, x: np.ndarray) -> str:
    v = violations[0]
    count = f"{len(violations)} entr{'y' if len(violations) == 1 else 'ies'} outside tolerance"
    if v.column is not None:
        at = f"at {layout.column(v.column)} = {x[v.column]:.6g}"
        if v.kink:
            seen = f" (or the slopes at {nearby} nearby points)" if nearby else ""
            return (f"backward gives {v.where} = {v.actual:.6g} {at}, a kink or tie, but a gradient there "
                    f"must lie between the one-sided slopes {v.low:.6g} .. {v.high:.6g}{seen}; {count}")
        seen = f" (the same at {nearby} nearby points)" if nearby else ""
        return (f"backward gives {v.where} = {v.actual:.6g} {at}, but the function's slope there is "
                f"{v.central:.6g}{seen}; {count}")
    seen = f" (also at {nearby} nearby points)" if nearby else ""
    tie = (": the inputs tie here, and a tie rule must not hand the full gradient to every tied input"
           if v.tie else "")
    return (f"backward gives {v.where} = {v.actual:.6g} (its gradient entries summed along that direction), "
            f"but the function changes at a rate of {v.low:.6g} .. {v.high:.6g} that way{seen}{tie}; {count}")

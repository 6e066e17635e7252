"""Step through backward node by node, each step checked against an independent NumPy rule.

`BackwardStepper` registers a pre-hook and a hook on every node reachable from the loss,
runs backward once, and records what each node received (grad_outputs) and sent to each
next node (grad_inputs) in the order the engine ran them. Hooks close over a plain record
list and an index, never over a Node (a Node in its own hook closure keeps AccumulateGrad
nodes alive and their hooks pile up across backwards), and every handle is removed in
``finally``. Backward runs with retain_graph=True so the NumPy references can read the
saved tensors afterwards; parameters' ``.grad`` are restored to what they were.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch
from torch import nn

from gradviz.backward._recording import FD_FORMULA, finite_difference, numpy_view, small_pages
from gradviz.backward.rules import RULES, context_from_node, reference_for, to_numpy
from gradviz.backward.rules._context import LazySaved, compare_many
from gradviz.errors import ArgumentError, TraceError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.tracing import is_accumulate, trace_with_ids

__all__ = ["BackwardStepper", "ErrorCheck", "Step", "TOLERANCE", "PROGRESS_COLORS"]

# Relative error under which a NumPy reference "agrees" (float64 runs reach ~1e-15).
TOLERANCE = {"float64": 1e-7, "float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2}
PROGRESS_COLORS = {
    "agrees": "#b2f2bb",
    "disagrees": "#ffa8a8",
    "finite differences": "#ffd8a8",
    "no reference": "#a5d8ff",
    "current": "#ffec99",
    "upcoming": "#e9ecef",
}
_ACCUMULATE_FORMULA = r"\bar{\theta} \mathrel{+}= \sum_k \bar{y}_k"
# What `_reference` finds for a node: the NumPy gradients (None: no reference), their kind
# ("numpy", "finite differences"), the formula and the small saved values.
_Reference = tuple[tuple[np.ndarray | None, ...] | None, str | None, str | None, dict[str, Any]]
# One step as `_read_steps` records it for `_steps`: node id, next ids (None for an
# AccumulateGrad), gradients received and sent, reference, kind, formula, (abs, rel) errors,
# scale, saved values. Plain tuples: building Step objects waits until first access.
_Record = tuple[
    str, tuple[str | None, ...] | None, tuple[torch.Tensor | None, ...],
    tuple[torch.Tensor | None, ...], tuple[np.ndarray | None, ...] | None, str | None,
    str | None, tuple[float | None, float | None], float, dict[str, Any],
]

# Central differences in float64 with eps 1e-6 are good to about 1e-8 absolute, not 1e-15.
_FD_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ErrorCheck:
    """How a step's NumPy reference was judged: `measure` ("relative", "relative to the
    node's largest gradient" or "absolute"), its `value` and the `bound` it must not pass."""

    measure: str
    value: float
    bound: float

    @property
    def passed(self) -> bool:
        return self.value <= self.bound

    def __str__(self) -> str:
        label = _CHECK_LABELS.get(self.measure, self.measure)
        return f"{label} {self.value:.1e} {'≤' if self.passed else '>'} {self.bound:.0e}"


_CHECK_LABELS = {"relative": "relative error", "absolute": "absolute error",
                 "relative to the node's largest gradient": "error ÷ node's largest |grad|"}


@dataclass(frozen=True)
class Step:
    """One node's turn in backward.

    grad_outputs: what the node received, one per forward output. grad_inputs: what it
    sent along each next edge, aligned with `next_ids`. reference: the NumPy computation
    of grad_inputs (None where no rule exists); `reference_kind` says "numpy", "finite
    differences" (a custom Function without a rule) or None. frontier: nodes ready to run
    after this one. contributions: how many gradients were summed into grad_outputs
    (more than one where the forward value fanned out).
    """

    index: int
    node: Node
    # What the hooks recorded, as torch tensors: converting thousands of gradients to
    # NumPy up front doubled the cost of a recording, so it happens on first access.
    raw_outputs: tuple[torch.Tensor | None, ...] = field(repr=False, compare=False)
    raw_inputs: tuple[torch.Tensor | None, ...] = field(repr=False, compare=False)
    reference: tuple[np.ndarray | None, ...] | None
    max_abs_error: float | None
    max_rel_error: float | None
    formula: str | None
    next_ids: tuple[str | None, ...] = ()
    frontier: tuple[str, ...] = ()
    contributions: int = 1
    reference_kind: str | None = None
    # Largest gradient magnitude at this node (received or sent): the scale round-off is
    # measured against where an edge's own gradient cancels to almost nothing.
    scale: float = 0.0
    # The node's saved values that are small enough to print (arrays of <= SMALL_SAVED
    # elements, Python scalars), by name without "_saved_": the numbers its formula uses.
    saved: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # torch's gradients as read-only NumPy views in their own dtype (float64 where NumPy
    # has no such dtype): a float64 copy of every gradient cost a 12-layer transformer's
    # recording as much as its whole backward, and doubled the recording's memory.
    @functools.cached_property
    def grad_outputs(self) -> tuple[np.ndarray | None, ...]:
        return tuple([None if g is None else numpy_view(g) for g in self.raw_outputs])

    @functools.cached_property
    def grad_inputs(self) -> tuple[np.ndarray | None, ...]:
        return tuple([None if g is None else numpy_view(g) for g in self.raw_inputs])

    @property
    def check(self) -> ErrorCheck | None:
        """The measure that decided `agrees`, with its value and bound (None: no reference).

        An edge whose true gradient is zero by cancellation (a conv bias before BatchNorm,
        the input of a LayerNorm whose output is summed) carries only round-off, which no
        relative error of that edge alone can accept: such a step agrees when its absolute
        error is within 1e-2·tol of the node's largest gradient (or 1e-3·tol outright), and
        that measure, not the large relative error, is the one shown beside "agrees".
        """
        if self.max_rel_error is None:
            return None
        tol = TOLERANCE.get(self.node.dtype or "float32", 1e-4)
        if self.reference_kind == "finite differences":
            tol = max(tol, _FD_TOLERANCE)
        rel = ErrorCheck("relative", self.max_rel_error, tol)
        if rel.passed:
            return rel
        max_abs = self.max_abs_error or 0.0
        if self.scale > 0:
            scaled = ErrorCheck("relative to the node's largest gradient",
                                max_abs / self.scale, tol * 1e-2)
            if scaled.passed:
                return scaled
        absolute = ErrorCheck("absolute", max_abs, tol * 1e-3)
        return absolute if absolute.passed else rel

    @property
    def agrees(self) -> bool | None:
        """Whether the reference matches torch within the dtype's tolerance (None: no
        reference); `check` says by which measure."""
        check = self.check
        return None if check is None else check.passed

    @property
    def summed(self) -> str | None:
        """A sentence on gradient summation at this node, or None."""
        if self.node.kind in ("param", "leaf") and self.contributions > 1:
            return (f"{self.contributions} gradients are accumulated into {self.node.label}.grad "
                    f"(the parameter is used {self.contributions} times)")
        if self.contributions > 1:
            return (f"the forward value fans out to {self.contributions} uses, so "
                    f"{self.contributions} incoming gradients are summed before this node runs")
        return None


class _Recorder:
    """What the hooks write into; it holds no autograd nodes."""

    def __init__(self, count: int) -> None:
        self.order: list[int] = []
        self.grad_outputs: list[tuple[torch.Tensor | None, ...] | None] = [None] * count
        self.grad_inputs: list[tuple[torch.Tensor | None, ...] | None] = [None] * count


# Keeping a reference (no clone) is enough: the engine accumulates into a gradient buffer
# in place only when nothing else holds that tensor (use_count == 1). The engine hands the
# hooks tuples, kept as they are: a 25k-node chain runs 25k of these in its backward.
def _make_prehook(rec: _Recorder, i: int):
    order, outputs = rec.order, rec.grad_outputs

    def prehook(grad_outputs):
        order.append(i)
        outputs[i] = tuple(grad_outputs)

    return prehook


def _make_hook(rec: _Recorder, i: int):
    # An op's post-hook sees what it received and what it sent; on the CPU engine nodes
    # run one at a time, so post-hook order is the engine's order.
    order, outputs, inputs = rec.order, rec.grad_outputs, rec.grad_inputs

    def hook(grad_inputs, grad_outputs):
        order.append(i)
        outputs[i] = tuple(grad_outputs)
        inputs[i] = tuple(grad_inputs)

    return hook


class BackwardStepper(Sequence[Step]):
    """Run backward once on `loss` and keep one `Step` per node, in engine order."""

    def __init__(
        self,
        loss: torch.Tensor,
        *,
        model: nn.Module | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
        graph: Graph | None = None,
        grad: torch.Tensor | None = None,
        references: bool = True,
    ) -> None:
        if not isinstance(loss, torch.Tensor):
            raise ArgumentError("loss", type(loss).__name__,
                                "pass the tensor to run backward from, e.g. BackwardStepper(loss)")
        if loss.grad_fn is None:
            raise TraceError(
                f"loss (shape {tuple(loss.shape)}) has no grad_fn, so there is no backward to "
                "step through: compute it from parameters or inputs with requires_grad=True, "
                "outside torch.no_grad()"
            )
        if grad is None and loss.numel() != 1:
            raise ArgumentError(
                "grad", None,
                f"loss has shape {tuple(loss.shape)}: a non-scalar output needs grad= of that "
                "shape, as Tensor.backward does (e.g. grad=torch.ones_like(loss)), or reduce it "
                "with .sum()",
            )
        if grad is not None and (not isinstance(grad, torch.Tensor) or grad.shape != loss.shape):
            raise ArgumentError("grad", getattr(grad, "shape", grad),
                                f"pass a tensor of the loss's shape {tuple(loss.shape)}")
        # Saved-tensor descriptions are for drawings; a caller who wants them passes graph=.
        traced, ids = trace_with_ids(loss, model=model, params=params, saved=False)
        self._param_grads: dict[str, np.ndarray] | None = None
        if graph is not None and ([(n.id, n.label) for n in graph.nodes]
                                  != [(n.id, n.label) for n in traced.nodes]):
            raise ArgumentError("graph", f"{len(graph)} nodes",
                                "pass the Graph traced from this same loss, or leave graph=None")
        self.graph = graph or traced
        fns = list(ids)  # autograd nodes in id order; only this stepper holds them
        rec = _Recorder(len(fns))
        accumulates = [is_accumulate(fn) for fn in fns]  # asked once: 25k nodes ask 4x
        leaves = [fn.variable for fn, acc in zip(fns, accumulates, strict=True) if acc]
        saved_grads = [leaf.grad for leaf in leaves]
        handles = []
        # The GC is paused for the walk: registering ~1k hooks allocates objects that set off
        # full collections over the whole model, which made each registration 10x slower
        # (measured: 30 µs vs 2.4 µs per hook, 25 of the 40 ms a 12-layer transformer's
        # recording added to its backward).
        with gc_paused():
            try:
                for i, (fn, acc) in enumerate(zip(fns, accumulates, strict=True)):
                    if acc:  # AccumulateGrad has no post-hook gradients
                        handles.append(fn.register_prehook(_make_prehook(rec, i)))
                    else:
                        handles.append(fn.register_hook(_make_hook(rec, i)))
                for leaf in leaves:
                    leaf.grad = None
                torch.autograd.backward(loss, grad, retain_graph=True)
                # Off before the references are read: a CopySlices reference traces one more
                # backward through its node, which must not land in this recording.
                for handle in handles:
                    handle.remove()
                handles.clear()  # removed: the finally below has nothing left to do
                self._raw_param_grads = {
                    self.graph.node(ids[fn]).label: leaf.grad
                    for fn, leaf in zip((f for f, a in zip(fns, accumulates, strict=True) if a),
                                        leaves, strict=True)
                    if leaf.grad is not None
                }
                with small_pages(references):
                    self._records = self._read_steps(fns, ids, rec, references)
            finally:
                for handle in handles:
                    handle.remove()
                for leaf, old in zip(leaves, saved_grads, strict=True):
                    leaf.grad = old
        # Saved tensors were kept for the references only; free them now.
        del fns

    # -- building the steps ------------------------------------------------------------
    def _read_steps(
        self, fns: Sequence[Any], ids: Mapping[Any, str], rec: _Recorder, references: bool
    ) -> list[_Record]:
        """What each step needs from the live autograd nodes, in engine order: the node's id,
        its next ids (None for an AccumulateGrad), what it received and sent, and its NumPy
        reference. Everything else is derived from these on first access (`_steps`)."""
        records: list[_Record] = []
        checks: list[tuple[int, tuple[Any, Any, Any]]] = []
        for i in rec.order:
            fn = fns[i]
            raw_outputs = rec.grad_outputs[i] or ()
            if is_accumulate(fn):
                records.append((ids[fn], None, raw_outputs, (), None, None, _ACCUMULATE_FORMULA,
                                (None, None), 0.0, {}))
                continue
            # next_functions builds a new tuple per access: read it once.
            edges = fn.next_functions
            next_ids = tuple(None if nxt is None else ids.get(nxt) for nxt, _ in edges)
            raw_inputs = rec.grad_inputs[i] or ()
            reference, kind, formula, saved = (
                _reference(fn, raw_outputs, raw_inputs) if references else (None, None, None, {})
            )
            if reference is not None:
                # The engine drops what a node sends along an absent edge; do not compare those.
                present = [None if nxt is None else g
                           for (nxt, _), g in zip(edges, raw_inputs, strict=False)]
                checks.append((len(records), (reference, present, raw_outputs)))
            records.append((ids[fn], next_ids, raw_outputs, raw_inputs, reference, kind, formula,
                            (None, None), 0.0, saved))
        # Compared all at once: most edges of a long chain are a few entries each.
        for (at, _), (max_abs, max_rel, scale) in zip(
                checks, compare_many([c for _, c in checks]), strict=True):
            r = records[at]
            records[at] = (*r[:7], (max_abs, max_rel), scale, r[9])
        return records

    @functools.cached_property
    def _steps(self) -> tuple[Step, ...]:
        # Built on first access, from plain records: a recording that is never looked at
        # (or only summarised) skips ~5 ms per thousand nodes of Step objects and frontiers.
        # The GC is paused as for the hooks: 25k Steps set off full collections that took
        # half of the first read of the 25k-node chain (measured 556 vs 269 ms).
        with gc_paused():
            return self._build_steps()

    def _build_steps(self) -> tuple[Step, ...]:
        records = self._records
        node_of = self.graph._index
        executed = {r[0] for r in records}
        # Backward dependencies: a node may run once every executed user has run, and it
        # receives one gradient per edge from an executed user (summed when several).
        contributions: dict[str, int] = {}
        users: dict[str, set[str]] = {}
        for node_id, next_ids, *_ in records:
            for nid in next_ids or ():
                if nid is not None and nid in executed:
                    contributions[nid] = contributions.get(nid, 0) + 1
                    users.setdefault(nid, set()).add(node_id)
        pending = {k: len(v) for k, v in users.items()}
        ready: dict[str, None] = {}
        steps = []
        for step_no, record in enumerate(records):
            (node_id, next_ids, raw_outputs, raw_inputs, reference, kind, formula, errs, scale,
             saved) = record
            ready.pop(node_id, None)
            for nid in next_ids or ():
                if nid is not None and nid in pending:
                    pending[nid] -= 1
                    if pending[nid] == 0:
                        ready[nid] = None
            steps.append(
                _new_step(
                    index=step_no,
                    node=node_of[node_id],
                    raw_outputs=raw_outputs,
                    raw_inputs=raw_inputs,
                    reference=reference,
                    max_abs_error=errs[0],
                    max_rel_error=errs[1],
                    formula=formula,
                    next_ids=next_ids or (),
                    frontier=tuple(ready),
                    contributions=contributions.get(node_id, 1),
                    reference_kind=kind,
                    scale=scale,
                    saved=saved,
                )
            )
        # _records stays: another thread (a shared Streamlit cache) may be building too.
        return tuple(steps)

    # -- Sequence protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._steps)

    @overload
    def __getitem__(self, i: int) -> Step: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Step, ...]: ...

    def __getitem__(self, i: int | slice) -> Step | tuple[Step, ...]:
        return self._steps[i]

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps)

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    @property
    def param_grads(self) -> dict[str, np.ndarray]:
        """Each parameter's (or leaf's) gradient from this backward, by name."""
        if self._param_grads is None:
            self._param_grads = {k: to_numpy(v) for k, v in self._raw_param_grads.items()}
        return dict(self._param_grads)

    def op_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self._steps if s.node.kind == "op")

    @property
    def coverage(self) -> float:
        """Share of op steps with a NumPy reference (custom Functions count as uncovered
        unless they have one)."""
        ops = self.op_steps()
        if not ops:
            return 1.0
        return sum(1 for s in ops if s.reference_kind == "numpy") / len(ops)

    def summary(self) -> dict[str, Any]:
        ops = self.op_steps()
        with_ref = [s for s in ops if s.reference is not None]
        return {
            "steps": len(self._steps),
            "op_steps": len(ops),
            "numpy": sum(1 for s in ops if s.reference_kind == "numpy"),
            "finite_differences": sum(1 for s in ops if s.reference_kind == "finite differences"),
            "agreeing": sum(1 for s in with_ref if s.agrees),
            "worst_rel_error": max(
                (s.max_rel_error for s in with_ref if s.max_rel_error is not None), default=None
            ),
            # The deciding measure of the step nearest its bound: what "agree" rests on.
            "worst_check": _worst_check(with_ref),
            "missing": sorted({s.node.grad_fn or s.node.label for s in ops if s.reference is None}),
            "coverage": self.coverage,
        }

    def colors_at(self, position: int) -> dict[str, str]:
        """Fill colours for drawing the walk at `position`: finished nodes by their NumPy
        check (green agrees, red disagrees, orange finite differences, blue no reference),
        the current node yellow, nodes still to run grey."""
        # Everything not yet run is grey, whatever its kind, so progress reads at a glance.
        colors: dict[str, str] = {
            n.id: PROGRESS_COLORS["upcoming"] for n in self.graph.nodes if n.kind != "output"
        }
        for s in self._steps[: position + 1]:
            if s.agrees is None:
                colors[s.node.id] = PROGRESS_COLORS["no reference"]
            elif not s.agrees:
                colors[s.node.id] = PROGRESS_COLORS["disagrees"]
            elif s.reference_kind == "finite differences":
                colors[s.node.id] = PROGRESS_COLORS["finite differences"]
            else:
                colors[s.node.id] = PROGRESS_COLORS["agrees"]
        if 0 <= position < len(self._steps):
            colors[self._steps[position].node.id] = PROGRESS_COLORS["current"]
        return colors

    def animate(self, path: str | os.PathLike[str], **options: Any) -> pathlib.Path:
        """Write this backward as an animation, one frame per step: a self-contained HTML
        player (``.html``: play, pause, scrub, speed) or an animated GIF (``.gif``). Options:
        see `gradviz.backward.animate.animate`."""
        from gradviz.backward.animate import animate

        return animate(self, path, **options)

    def position_of(self, node_id: str) -> int | None:
        """Index of the step that ran node `node_id` (None: not run, e.g. an output)."""
        for s in self._steps:
            if s.node.id == node_id:
                return s.index
        return None

    def find(
        self, *, label: str | None = None, module: str | None = None, start: int = 0
    ) -> int | None:
        """Index of the first step at or after `start` whose op label or module matches."""
        for s in self._steps[start:]:
            if label is not None and label.lower() not in s.node.label.lower():
                continue
            if module is not None and not (s.node.module or "").startswith(module):
                continue
            return s.index
        return None


def _new_step(**fields: Any) -> Step:
    # A frozen dataclass's __init__ sets each of its 14 fields through object.__setattr__;
    # filling __dict__ at once builds a 25k-node chain's Steps faster. Every field is given.
    step = object.__new__(Step)
    step.__dict__.update(fields)
    return step


def _reference(fn: Any, grad_outputs: Sequence[Any], grad_inputs: Sequence[Any]) -> _Reference:
    name = type(fn).__name__
    rule = RULES.get(name)
    if rule is not None:
        try:
            ctx = context_from_node(fn, grad_outputs)
            return reference_for(ctx), "numpy", rule.formula, _small(ctx.saved)
        except Exception:  # a rule that cannot read this node's variant: report as missing
            return None, None, rule.formula, {}
    if hasattr(type(fn), "_forward_cls"):
        try:
            ref = finite_difference(fn, grad_outputs)
        except Exception:  # a Function whose forward needs more than its saved tensors
            ref = None
        if ref is not None:
            return ref, "finite differences", FD_FORMULA, {}
    return None, None, None, {}


SMALL_SAVED = 16  # elements: a saved array up to this size is kept for showing its numbers


def _small(saved: Mapping[str, Any]) -> dict[str, Any]:
    # Only what fits on a line is kept: holding every saved activation would double a
    # recording's memory for numbers nobody can read at that size anyway.
    if isinstance(saved, LazySaved):  # sized before converting: the rest stays unconverted
        return saved.small(SMALL_SAVED)
    return {
        k: v for k, v in saved.items()
        if (isinstance(v, np.ndarray) and v.size <= SMALL_SAVED)
        or isinstance(v, (bool, int, float))
    }


def _worst_check(steps: list[Step]) -> dict[str, Any] | None:
    checks = [(s, s.check) for s in steps if s.check is not None]
    if not checks:
        return None
    step, check = max(checks, key=lambda sc: sc[1].value / sc[1].bound)
    assert check is not None
    return {"node": step.node.label, "step": step.index, "measure": check.measure,
            "value": check.value, "bound": check.bound, "passed": check.passed}

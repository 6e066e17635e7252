"""Record how gradients flow through a network over training: per step, per parameter.

`GradientFlow` hooks a module (a context manager, or a `train` callback) and keeps, for
every recorded step: each parameter's gradient norm, mean |grad|, max |grad|, share of
exact-zero gradient entries, update/weight ratio, and each leaf module's activation
mean, std, share of zeros, share of dead units and the norm of the gradient reaching its
output (the backward signal whose fall across depth is a vanishing gradient).

Memory is bounded: by default the record is decimated (every other step dropped, the
stride doubled) when it reaches ``capacity``, so a long run keeps an even overview from
its first step; ``mode="ring"`` keeps the latest steps.

How a step is seen: with an optimizer, each of its steps is one training step, and a
forward pre-hook goes on only for a step the stride keeps; without one, each forward of the
model with grad enabled is a step. For a kept step, the optimizer's step pre-hook copies
every gradient (as it applies them) and weight into a flat row (`flow_rows`), and its step
hook copies the weights again; without an optimizer, a hook on the gradient accumulators
queues one callback at the end of the backward, and the step is closed by ``after_step()``,
the train callback, or the next forward. Statistics are computed for many rows at once, when
the rows run out or the record is read. A step the stride skips costs one optimizer-hook
call (one pre-hook call without an optimizer).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from gradviz.errors import ArgumentError
from gradviz.train.flow_keep import _Chained, _check_positive, _Keeper, _leaf_modules, _Pacer
from gradviz.train.flow_rows import (
    AFTER,
    MOST_ROWS,
    _Call,
    _Entry,
    _Rows,
    act_call,
    act_table,
    update_table,
)

__all__ = ["GradientFlow", "FlowRecord", "GRAD_STATS", "ACT_STATS", "MODES"]

GRAD_STATS = ("norm", "mean_abs", "max_abs", "zero_share")
ACT_STATS = ("mean", "std", "zero_share", "dead_share", "grad_norm")
MODES = ("decimate", "ring")


@dataclass(frozen=True, eq=False)
class FlowRecord:
    """One recorded step.

    ``grad``: (parameters × GRAD_STATS), NaN for a parameter without a gradient that step;
    ``update_ratio``: ‖w_after − w_before‖ / ‖w_before‖ per parameter (NaN when unknown);
    ``act``: (modules × ACT_STATS), NaN for a module that did not run.
    """

    step: int
    loss: float | None
    grad: np.ndarray
    update_ratio: np.ndarray
    act: np.ndarray


class GradientFlow:
    """Record gradient, update and activation statistics of ``model`` while it trains.

    Use it around your own loop::

        with GradientFlow(model, optimizer=opt) as flow:
            for xb, yb in batches:
                opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()
        flow.diagnose()        # typed warnings naming the layer and the fix

    or give it to gradviz's loop: ``train("quadrant-sgd", callback=flow)`` (it attaches to
    the network the run builds and detaches when the run ends); ``flow.chain(cb)`` runs
    your own progress callback too. ``every``: record every k-th step; ``capacity``: the
    most records kept; ``mode``: ``"decimate"`` (even overview of the whole run) or
    ``"ring"`` (the latest ``capacity`` recorded steps). ``activations=False`` skips the
    module forward hooks. ``budget``: the share of training time recording may add (e.g.
    0.1); whenever it has taken more, the stride doubles (fewer records, not slower steps).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        every: int = 1,
        capacity: int = 1000,
        mode: str = "decimate",
        optimizer: torch.optim.Optimizer | None = None,
        activations: bool = True,
        budget: float | None = None,
    ) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise ArgumentError(
                "model", model, "give the nn.Module you train, or None to attach later"
            )
        if mode not in MODES:
            raise ArgumentError("mode", mode, f"use one of {', '.join(MODES)}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise ArgumentError("optimizer", optimizer, "give a torch.optim optimizer or None")
        self._pace = _Pacer(budget)
        self.every = _check_positive("every", every, "10")
        self.capacity = _check_positive("capacity", capacity, "1000")
        self.mode = mode
        self.activations = bool(activations)
        self._model = model
        self._optimizer = optimizer
        self._keeper = _Keeper(self.capacity, self.every, mode)
        # Guards the kept records: the training thread appends, a page thread may read.
        self._lock = threading.RLock()  # RLock: reading flushes, under the same lock
        self._handles: list[Any] = []
        self._attached = False
        # training steps seen: optimizer steps, or without an optimizer, forwards with grad
        self._steps = 0
        self._armed: Any = None  # with an optimizer: the pre-hook waiting for a kept step
        self._due = 0  # with an optimizer: the next step to keep (0: to be worked out)
        self._param_names: tuple[str, ...] = ()
        self._params: list[nn.Parameter] = []
        self._sizes: list[int] = []
        self._shapes: list[tuple[int, ...]] = []
        self._module_names: tuple[str, ...] = ()
        self._module_types: tuple[str, ...] = ()
        self._fire_order: list[int] | None = None  # parameter indices in backward order
        self._firing: list[int] = []
        self._in_backward = False
        self._rec_step: int | None = None  # the step being recorded, until its backward ends
        self._calls: list[_Call] = []  # leaf-module runs of the recorded forward
        self._step_handles: list[Any] = []
        self._grad_hooks: list[Callable[..., None]] = []
        self._accs: list[Any] = []  # the recorded step's gradient accumulators
        self._leaves: list[tuple[nn.Module, Callable[..., None]]] = []
        self._act_order: list[int] = []  # module indices in the order this forward ran them
        self._module_order: list[int] | None = None  # the same, from the first recorded step
        self._rows: _Rows | None = None
        self._pending: _Entry | None = None  # backward done, update not yet seen
        self._ready: list[_Entry] = []  # closed, waiting to be reduced to statistics

    def __enter__(self) -> GradientFlow:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def attach(
        self, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> GradientFlow:
        """Hook ``model`` (the one given before, if None); ``train`` calls this for you."""
        if model is not None and self._model is not None and model is not self._model:
            raise ArgumentError(
                "model", type(model).__name__,
                "this GradientFlow records another network; make a new GradientFlow() per run",
            )
        self._model = model if model is not None else self._model
        if self._model is None:
            raise ArgumentError("model", None, "give GradientFlow(model) the network to record")
        if self._attached:
            return self
        self._optimizer = optimizer if optimizer is not None else self._optimizer
        named = [(n, p) for n, p in self._model.named_parameters() if p.requires_grad]
        if self._param_names and tuple(n for n, _ in named) != self._param_names:
            raise ArgumentError("model", "parameters changed", "make a new GradientFlow()")
        self._param_names = tuple(n for n, _ in named)
        self._params = [p for _, p in named]
        self._sizes = [p.numel() for p in self._params]
        self._shapes = [tuple(p.shape) for p in self._params]
        try:
            self._install()
        except BaseException:
            self.detach()
            raise
        self._attached = True
        return self

    def _install(self) -> None:
        model = self._model
        assert model is not None  # attach() checked it
        # The gradient and activation hooks go on for a step that will be kept and come off
        # at the end of its backward (hooks left on cost +12% of a tiny net's step). With an
        # optimizer its step hook counts steps and arms a forward pre-hook for a kept step
        # only: a forward hook on the root alone costs +5% of a tiny net's step, every step
        # (Module.__call__ leaves its fast path). Without one, the root's pre-hook counts.
        if self._optimizer is None:
            self._handles.append(model.register_forward_pre_hook(self._on_forward))
        self._grad_hooks = [self._grad_hook(i) for i in range(len(self._params))]
        self._leaves = []
        if self.activations:
            leaves = _leaf_modules(model)
            self._module_names = tuple(n for n, _ in leaves)
            self._module_types = tuple(type(m).__name__ for _, m in leaves)
            self._leaves = [(m, self._act_hook(j)) for j, (_, m) in enumerate(leaves)]
        if self._rows is None or not self._rows.fits(self._params):
            self._flush()
            self._rows = _Rows(self._params) if self._params else None
        if self._optimizer is not None:
            self._handles.append(self._optimizer.register_step_post_hook(self._on_step))
            self._arm_if_due()

    def _drop_step_hooks(self) -> None:
        for h in self._step_handles:
            h.remove()
        self._step_handles.clear()
        self._accs = []

    def detach(self) -> None:
        """Close the last step and remove every hook (also called on leaving ``with``)."""
        try:
            self._close()
        finally:
            self._drop_step_hooks()
            self._rec_step, self._pending = None, None
            self._disarm()
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._attached = False

    def __call__(self, step: int, total: int, loss: float) -> None:
        """The `train` callback: closes the step just made (``step`` of ``total``)."""
        self.after_step(loss=loss, step=step)

    def after_step(self, loss: float | None = None, step: int | None = None) -> None:
        """Say the weights were updated: the step's update/weight ratio is measured now.

        Steps are numbered by this recorder from 1 (one per training forward), whatever
        ``step`` says, so a resumed run's record starts at 1 too.
        """
        value = None if loss is None else float(loss)
        if self._pending is not None:
            self._close(value)
            return
        with self._lock:
            records = self._keeper.records
            if value is not None and records and records[-1].step == self._steps:
                # the optimizer's step hook closed this step already: add its loss
                last = records[-1]
                last.loss = value
                if last.record is not None:
                    last.record = replace(last.record, loss=value)

    def chain(self, callback: Callable[[int, int, float], Any]) -> _Chained:
        """A train callback running this recorder, then ``callback`` (e.g. a progress bar)."""
        if not callable(callback):
            raise ArgumentError("callback", callback, "give a function (step, total, loss)")
        return _Chained(self, callback)

    def _arm_if_due(self) -> None:
        """Work out the next step to keep; arm the pre-hook if it is the coming one."""
        self._due = self._keeper.next_wanted(self._steps)
        if self._due == self._steps + 1 and self._armed is None and self._model is not None:
            self._armed = self._model.register_forward_pre_hook(self._on_armed_forward)

    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.remove()
            self._armed = None

    def _on_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer stepped: the step is over, and the next one may be armed."""
        # Kept short: it runs on every training step (a skipped one costs only this call).
        if self._pending is not None or self._step_handles:
            self._close()
            self._drop_step_hooks()  # a recorded forward that never saw its backward
            self._due = 0  # the stride may have changed
        self._rec_step = None
        self._steps += 1
        if self._steps >= self._due - 1:
            self._arm_if_due()
        if self._pace.budget is not None:
            self._pace.step(self._armed is not None)

    def _on_armed_forward(self, module: nn.Module, args: Any) -> None:
        if not torch.is_grad_enabled():
            return  # an evaluation: the training step it waits for comes later
        self._disarm()
        self._begin(self._steps + 1)

    def _on_forward(self, module: nn.Module, args: Any) -> None:
        if self._pending is not None:
            self._close()  # a new forward: the previous step's update has surely happened
        if self._step_handles:
            self._drop_step_hooks()  # a recorded forward that never saw its backward
        self._rec_step = None
        if not torch.is_grad_enabled():
            return  # an evaluation, not a training step
        self._steps += 1
        kept = self._keeper.wants(self._steps)
        if self._pace.budget is not None:
            self._pace.step(kept)
        if kept:
            self._begin(self._steps)

    def _begin(self, step: int) -> None:
        """Hook the step about to run: its gradients, and its leaf modules' outputs."""
        start = self._pace.start()
        self._rec_step = step
        self._calls, self._act_order, self._in_backward = [], [], False
        add = self._step_handles.append
        if self._optimizer is None or self._fire_order is None:
            # Hooks go on the parameters' gradient accumulators, not on the parameters: a
            # parameter keeps its hook dict once one was registered, and autograd then calls
            # into Python at every accumulation for good (+0.3 µs per parameter and step,
            # after detach too). An accumulator lives as long as the graph using it, so it
            # is held here until its backward ends, for this step's forward to use it.
            self._accs = [get_gradient_edge(p).node for p in self._params]
            for node, hook in zip(self._accs, self._grad_hooks, strict=True):
                add(node.register_hook(hook))
        for m, hook in self._leaves:
            add(m.register_forward_hook(hook))
        if self._optimizer is not None:
            # the gradients as the optimizer applies them (after any accumulation)
            add(self._optimizer.register_step_pre_hook(self._on_pre_step))
        self._pace.add(start)

    def _grad_hook(self, index: int) -> Callable[..., None]:
        def hook(grad_inputs: Any, grad_outputs: Any) -> None:
            if not self._in_backward:
                self._in_backward = True
                self._firing = []
                if self._optimizer is None:
                    torch.autograd.Variable._execution_engine.queue_callback(
                        self._on_backward_end)
            if self._fire_order is None:
                self._firing.append(index)

        return hook

    def _act_hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            if not output.is_floating_point() or output.numel() == 0:
                return
            start = time.perf_counter()
            with torch.no_grad():
                call = act_call(index, output.detach())
            if index not in self._act_order:
                self._act_order.append(index)
            self._calls.append(call)
            if output.requires_grad:
                # the norm now, not the gradient: steps wait, activation gradients are big
                output.register_hook(
                    lambda g: call.grad_norms.append(torch.linalg.vector_norm(g.detach()))
                )
            self._pace.add(start)

        return hook

    def _on_backward_end(self) -> None:
        """Without an optimizer: the recorded step's gradients are complete now."""
        self._drop_step_hooks()
        self._take_grads()

    def _on_pre_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer is about to step: its gradients, and the weights before it.

        Its hooks stay on until the step hook (a hook dict must not change while torch
        runs it)."""
        if self._pending is None:
            self._take_grads()

    def _take_grads(self) -> None:
        """Copy the recorded step's gradients and weights into its row; the step waits
        (``_pending``) for its update."""
        self._in_backward = False
        if self._fire_order is None and self._firing:
            self._fire_order = list(self._firing)
        step, self._rec_step = self._rec_step, None
        if step is None:
            return
        start = time.perf_counter()
        if self._module_order is None and self._act_order:
            self._module_order = list(self._act_order)
        entry = _Entry(step, None, self._take_row(), None, self._calls)
        self._calls = []
        if entry.row is not None and self._rows is not None:
            self._rows.take(entry, self._params)
        self._pending = entry
        self._pace.add(start)

    def _take_row(self) -> int | None:
        rows = self._rows
        if rows is None:
            return None
        if not rows.fits(self._params):  # a parameter was replaced by one of another shape
            self._flush()
            rows = self._rows = _Rows(self._params)
        if not rows.free:
            self._flush()
        with self._lock:
            return rows.free.pop()

    def _close(self, loss: float | None = None) -> None:
        entry, self._pending = self._pending, None
        if entry is None:
            return
        start = time.perf_counter()
        entry.loss = loss
        rows = self._rows
        if entry.row is not None and rows is not None:
            now = [p.detach() for p in self._params]
            with torch.no_grad():
                if rows.batched:
                    rows.write(AFTER, entry.row, now)
                else:
                    after = [w.reshape(1, -1) for w in now]
                    entry.ratio = update_table(rows.before(entry.row), after)[0]
                    with self._lock:
                        rows.give([entry.row])
                    entry.row = None
        with self._lock:
            self._ready.append(entry)
            self._keeper.push(entry.step, entry)
            if len(self._ready) >= MOST_ROWS or self._pace.wants_read(len(self._ready)):
                self._flush()  # bounded even where rows never run out; timed for the pacer
            # future steps only: the kept records stay on the grid
            self._keeper.stride *= self._pace.widen(self._keeper.stride)
        self._pace.add(start)

    def _flush(self) -> None:
        """Reduce every closed step still in its row to its record, and free the rows."""
        with self._lock:
            ready, self._ready = self._ready, []
            if not ready:
                return
            start = time.perf_counter()
            n = len(self._params)
            if self._rows is not None:
                self._rows.settle(ready)
            acts = act_table(ready, len(self._module_names), len(ACT_STATS))
            for e, act in zip(ready, acts, strict=True):
                grad = e.grad if e.grad is not None else np.full((n, len(GRAD_STATS)), np.nan)
                if e.has_grad is not None:
                    grad[~np.array(e.has_grad)] = np.nan
                ratio = e.ratio if e.ratio is not None else np.full(n, np.nan)
                e.record = FlowRecord(e.step, e.loss, grad, ratio, act)
                e.calls, e.grad, e.ratio = [], None, None
            self._pace.add(start, read=True)

    def snapshot(self) -> GradientFlow:
        """A detached copy of the record so far, for reading while the network trains.

        Every view (`series`, `frame`, `diagnose`, the charts) reads several fields in
        turn; on the live recorder a step closing in between (or a decimation) would mix
        two states. The copy is taken under the recorder's lock and never changes; it holds
        no hooks, parameters or model, so it cannot be attached.
        """
        twin = copy.copy(self)
        with self._lock:
            self._flush()
            kept = [_Entry(e.step, e.loss, None, None, [], record=e.record)
                    for e in self._keeper.records]
            twin._keeper = self._keeper.copy()
            ring = self.mode == "ring"
            twin._keeper.records = deque(kept, maxlen=self.capacity) if ring else kept
            twin._steps = self._steps
        twin._lock = threading.RLock()
        twin._fire_order = None if self._fire_order is None else list(self._fire_order)
        twin._module_order = None if self._module_order is None else list(self._module_order)
        twin._model = twin._optimizer = twin._pending = twin._rows = None
        twin._params, twin._handles, twin._calls, twin._ready = [], [], [], []
        twin._step_handles, twin._grad_hooks, twin._leaves, twin._accs = [], [], [], []
        twin._attached, twin._rec_step, twin._armed = False, None, None
        return twin

    @property
    def records(self) -> tuple[FlowRecord, ...]:
        """The kept steps, oldest first (the step just made appears once it is closed)."""
        with self._lock:
            self._flush()
            return tuple(e.record for e in self._keeper.records)

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.records]

    @property
    def stride(self) -> int:
        """Steps between kept records now (``every``, doubled at each decimation, widened
        to stay within ``budget``)."""
        return self._keeper.stride

    @property
    def budget(self) -> float | None:
        """The share of training time recording may take (None: no limit)."""
        return self._pace.budget

    @property
    def steps_seen(self) -> int:
        return self._steps

    @property
    def params(self) -> tuple[str, ...]:
        """Parameter names, from the input side to the output side where backward showed it.

        Backward reaches the last layer first, so the reverse of the order the gradients
        arrived in is the forward depth; parameters that never got a gradient come last.
        """
        order = self._depth_order()
        return tuple(self._param_names[i] for i in order)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of entries of each parameter, in the order of `params`."""
        return tuple(self._sizes[i] for i in self._depth_order())

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shape of each parameter, in the order of `params`."""
        return tuple(self._shapes[i] for i in self._depth_order())

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of the leaf modules whose activations are recorded (registration order)."""
        return self._module_names

    @property
    def module_types(self) -> tuple[str, ...]:
        """Class names of `modules` (``"ReLU"``, ``"Linear"``...)."""
        return self._module_types

    @property
    def module_depth(self) -> tuple[int, ...]:
        """Indices into `modules` in the order the first recorded forward ran them."""
        order = self._module_order or []
        return tuple(order + [j for j in range(len(self._module_names)) if j not in order])

    def _depth_order(self) -> list[int]:
        fired = list(reversed(self._fire_order or []))
        seen = set(fired)
        return fired + [i for i in range(len(self._param_names)) if i not in seen]

    def series(self, stat: str = "norm", *, kind: str = "grad") -> tuple[list[int], np.ndarray]:
        """``(steps, values)``: values is (steps × layers) in the order of `params`/`modules`.

        ``kind``: ``"grad"`` (a GRAD_STATS name), ``"update"`` (``stat`` ignored: the
        update/weight ratio) or ``"act"`` (an ACT_STATS name).
        """
        records = self.records
        steps = [r.step for r in records]
        if kind == "grad":
            if stat not in GRAD_STATS:
                raise ArgumentError("stat", stat, f"use one of {', '.join(GRAD_STATS)}")
            col = GRAD_STATS.index(stat)
            order = self._depth_order()
            rows = [r.grad[order, col] for r in records]
            width = len(order)
        elif kind == "update":
            order = self._depth_order()
            rows = [r.update_ratio[order] for r in records]
            width = len(order)
        elif kind == "act":
            if stat not in ACT_STATS:
                raise ArgumentError("stat", stat, f"use one of {', '.join(ACT_STATS)}")
            col = ACT_STATS.index(stat)
            rows = [r.act[:, col] for r in records]
            width = len(self._module_names)
        else:
            raise ArgumentError("kind", kind, 'use "grad", "update" or "act"')
        values = np.array(rows, dtype=np.float64) if rows else np.zeros((0, width))
        return steps, values.reshape(len(steps), width)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Long-form rows: step, layer, depth, kind (grad/update/act), stat, value, loss."""
        from gradviz.train.flow_export import iter_rows
        return iter_rows(self)

    def frame(self, kind: str | None = None, stat: str | None = None) -> Any:
        """The record as a long-form pandas DataFrame (Altair-ready), optionally filtered."""
        from gradviz.train.flow_export import frame
        return frame(self, kind, stat)

    def to_json(self) -> dict[str, Any]:
        """Plain data: names, stride and every record (NaN written as None)."""
        from gradviz.train.flow_export import to_json
        return to_json(self)

    def diagnose(self, **thresholds: float) -> list[Any]:
        """Warnings naming the layer and the fix: see `gradviz.train.flow_diagnose`."""
        from gradviz.train.flow_diagnose import diagnose

        return diagnose(self, **thresholds)

"""The training loop: batches, one update per step, test losses per epoch, stopping.

`run_steps` takes a `Plan` (what `gradviz.train.training.train` settled from its
arguments) and trains the model in place; it knows nothing of argument checking.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import DataError
from gradviz.train.data import TrainData
from gradviz.train.recipe import Preset, seeded_global_rng
from gradviz.train.results import StopTraining

__all__ = ["Plan", "Outcome", "run_steps"]

_EVAL_CHUNK = 1000  # samples per forward when measuring accuracy (keeps memory flat)


_THREADS_LOCK = threading.Lock()
_threads_state: dict[str, Any] = {"active": 0, "before": None, "blas": None}


@contextlib.contextmanager
def _limit_threads(threads: int | None) -> Iterator[None]:
    """Run torch (and NumPy's BLAS) on ``threads`` threads, then restore the old setting.

    The presets are small: a 2-3-3-4 step is a few microseconds of arithmetic, and on a
    busy 2-core machine two OpenMP threads spin-waiting on each other made 10 000
    quadrant steps take 108 s instead of 3.8 s on one thread. The setting is
    process-wide, so overlapping runs (two Streamlit sessions) share one limit: the
    first run saves the old setting and the last one to finish restores it.
    """
    if threads is None:
        yield
        return
    with _THREADS_LOCK:
        if _threads_state["active"] == 0:
            _threads_state["before"] = torch.get_num_threads()
            try:
                from threadpoolctl import threadpool_limits  # ships with scikit-learn

                _threads_state["blas"] = threadpool_limits(limits=threads, user_api="blas")
            except ImportError:  # pragma: no cover - scikit-learn is a dependency
                _threads_state["blas"] = None
        _threads_state["active"] += 1
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_state["active"] -= 1
            if _threads_state["active"] == 0:
                torch.set_num_threads(_threads_state["before"])
                if _threads_state["blas"] is not None:
                    _threads_state["blas"].restore_original_limits()
                _threads_state["blas"] = None


def _uses_global_rng(model: nn.Module, own_module: bool) -> bool:
    """Whether a forward draws from torch's global RNG (dropout), so a run must seed it.

    A user's own module may call F.dropout without a Dropout module: assume it does.
    """
    if own_module:
        return True
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def _poll(stop: Any) -> bool:
    if stop is None:
        return False
    if hasattr(stop, "is_set"):
        return bool(stop.is_set())
    return bool(stop())



def _step_autograd(
    style: str,
    preset: Preset,
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    lr: float,
    opt: torch.optim.Optimizer | None,
) -> float:
    loss = preset.forward_loss(model, (xb, yb))
    if style == "optimizer" and opt is not None:
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is None:
                continue
            if style == "manual-data":
                # seed 002's own words: W.data = W.data - alpha * W.grad; W.grad.zero_()
                p.data = p.data - lr * p.grad
            else:
                p.sub_(lr * p.grad)  # in place, as `p -= lr * p.grad`
            p.grad.zero_()
    return loss.item()


def _epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    # one generator per (seed, epoch): a resumed run finds the same order mid-epoch
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 1)
    return torch.randperm(n, generator=g)


@torch.no_grad()
def _evaluate(
    preset: Preset,
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    labels: torch.Tensor | None,
    chunk: int,
    batch_size: int,
) -> tuple[float, float | None]:
    """The curve's loss measured over a whole set, and the accuracy if labelled.

    A mean-reduced loss is averaged over all samples; a sum-reduced one (seed 003's
    Σ(y_pred − y)², seed 004's ½Σ(t − o)²) is given per training batch of
    ``batch_size`` samples, so the number sits on the same scale as the loss curve.
    """
    total, correct, n = 0.0, 0, len(X)
    for start in range(0, n, chunk):
        xb, yb = X[start : start + chunk], y[start : start + chunk]
        out = preset.forward(model, xb)
        yb = yb.to(out.dtype) if yb.is_floating_point() else yb
        value = float(preset.loss(out, yb))
        total += value if preset.loss_reduction == "sum" else value * len(xb)
        if labels is not None:
            correct += int((out.argmax(dim=1) == labels[start : start + chunk]).sum())
    loss = total * batch_size / max(n, 1) if preset.loss_reduction == "sum" else total / max(n, 1)
    return loss, (correct / n if labels is not None and n else None)


def _metrics(
    preset: Preset,
    model: nn.Module,
    data: TrainData,
    losses: list[float],
    chunk: int,
    batch_size: int,
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if losses:
        metrics["loss"] = losses[-1]
    was_training = model.training
    model.eval()
    try:
        train_loss, acc = _evaluate(preset, model, data.X, data.y, data.labels, chunk, batch_size)
        metrics["train_loss"] = train_loss
        if acc is not None:
            metrics["accuracy"] = acc
        if data.X_test is not None and data.y_test is not None:
            test_loss, test_acc = _evaluate(
                preset, model, data.X_test, data.y_test, data.labels_test, chunk, batch_size
            )
            metrics["test_loss"] = test_loss
            if test_acc is not None:
                metrics["test_accuracy"] = test_acc
    finally:
        model.train(was_training)
    return metrics


@dataclass(eq=False)
class Plan:
    """Everything one run needs, settled (and checked) before its first step."""

    preset: Preset
    model: nn.Module
    data: TrainData
    style: str  # "optimizer", "manual", "manual-data", "manual-backward" or "numpy"
    lr: float
    opt: torch.optim.Optimizer | None
    batch_size: int
    per_epoch: int
    start: int
    total: int
    seed: int
    losses: list[float]
    test_losses: list[tuple[int, float]]
    own_module: bool
    resume_rng: torch.Tensor | None = None
    program: Any = None  # a NumPy program (style "numpy") with .step(X, y, lr)
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # X, y as float64 for the program
    chunk: int = _EVAL_CHUNK


@dataclass(frozen=True)
class Outcome:
    """How the loop ended: the step it reached, and why it stopped."""

    step: int
    stopped: bool
    diverged: bool
    rng_state: torch.Tensor | None
    seconds: float


class _Batches:
    """The sample indices of each step: shuffled once per epoch, from (seed, epoch) alone."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._epoch = -1
        self._order = torch.arange(0)

    def at(self, epoch: int, pos: int) -> torch.Tensor | None:
        p = self._plan
        if p.per_epoch == 1:
            return None  # full batch: the tutorials pass X itself, unshuffled
        if self._epoch != epoch:
            self._order = _epoch_order(p.seed, epoch, p.data.n, p.preset.shuffle)
            self._epoch = epoch
        return self._order[pos * p.batch_size : (pos + 1) * p.batch_size]


def _one_step(plan: Plan, step: int, idx: torch.Tensor | None) -> float:
    """One weight update on the batch ``idx`` (None: all samples); returns its loss."""
    X, y = plan.data.X, plan.data.y
    try:
        if plan.program is not None and plan.arrays is not None:
            ii: Any = slice(None) if idx is None else idx.numpy()
            return float(plan.program.step(plan.arrays[0][ii], plan.arrays[1][ii], plan.lr))
        xb = X if idx is None else X[idx]
        yb = y if idx is None else y[idx]
        step_fn = plan.preset.manual_step_fn  # the table sets it with "manual-backward"
        if plan.style == "manual-backward" and step_fn is not None:
            return float(step_fn(plan.model, xb, yb, plan.lr))
        return _step_autograd(plan.style, plan.preset, plan.model, xb, yb, plan.lr, plan.opt)
    except (RuntimeError, ValueError, IndexError) as exc:
        if step != plan.start:
            raise  # a step that ran once fails later only for a real bug
        # the first step is where data and network meet; say which parts clash
        raise DataError(
            f"data: the first step failed for inputs {tuple(X.shape)} and targets "
            f"{tuple(y.shape)} {y.dtype} with the loss {plan.preset.loss_name} "
            f"({str(exc).strip().splitlines()[0][:200]}); give data the network "
            "and loss take"
        ) from exc


def _record_test_loss(plan: Plan, step: int) -> None:
    """At an epoch's end (minibatch runs only): the whole test split's loss, for the curve."""
    d = plan.data
    if d.X_test is None or d.y_test is None or plan.per_epoch == 1:
        return
    plan.model.eval()
    test_loss, _ = _evaluate(
        plan.preset, plan.model, d.X_test, d.y_test, None, plan.chunk, plan.batch_size
    )
    plan.test_losses.append((step, test_loss))
    plan.model.train()


def _callback_stops(
    callback: Callable[[int, int, float], Any], step: int, total: int, value: float
) -> bool:
    try:
        return callback(step, total, value) is True
    except StopTraining:
        return True


def _steps(
    plan: Plan,
    stop: Any,
    callback: Callable[[int, int, float], Any] | None,
    every: int,
    evaluate: bool,
) -> tuple[int, bool, bool]:
    """Run steps until the total, a stop, or a non-finite loss: (step, stopped, diverged)."""
    batches = _Batches(plan)
    step = plan.start
    while step < plan.total:
        if _poll(stop):
            return step, True, False
        epoch, pos = divmod(step, plan.per_epoch)
        value = _one_step(plan, step, batches.at(epoch, pos))
        plan.losses.append(value)
        step += 1
        if not math.isfinite(value):
            return step, False, True
        if evaluate and pos == plan.per_epoch - 1:
            _record_test_loss(plan, step)
        due = step % every == 0 or step == plan.total
        if callback is not None and due and _callback_stops(callback, step, plan.total, value):
            return step, True, False
    return step, False, False


def run_steps(
    plan: Plan,
    *,
    stop: Any = None,
    callback: Callable[[int, int, float], Any] | None = None,
    callback_every: int = 1,
    evaluate: bool = True,
) -> Outcome:
    """Train ``plan.model`` in place from ``plan.start`` to ``plan.total`` steps.

    A run whose forward draws random numbers (dropout) seeds torch's global RNG from the
    run's seed (or the resumed state) for its duration and hands the final state back,
    so a resumed run continues the same masks. The model's train/eval mode is restored.
    """
    was_training = plan.model.training
    seeded = _uses_global_rng(plan.model, plan.own_module)
    rng = seeded_global_rng(plan.seed, plan.resume_rng) if seeded else contextlib.nullcontext()
    # A callback object with attach(model, optimizer) (a GradientFlow) hooks the network
    # this run trains; its detach() runs when the run ends, also on error.
    attach, detach = getattr(callback, "attach", None), getattr(callback, "detach", None)
    if callable(attach):
        attach(plan.model, plan.opt)
    t0 = time.perf_counter()
    rng_state = None
    try:
        with rng:
            plan.model.train()
            step, stopped, diverged = _steps(plan, stop, callback, callback_every, evaluate)
            if seeded:
                rng_state = torch.get_rng_state()
    finally:
        plan.model.train(was_training)
        if callable(detach):
            detach()
    return Outcome(step, stopped, diverged, rng_state, time.perf_counter() - t0)

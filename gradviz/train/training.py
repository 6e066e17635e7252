"""Train a preset or any module the way its tutorial does: curves, stopping, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import math
import os
import pickle
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.errors import ArgumentError, DataError, GradvizError
from gradviz.train.builder import build_network
from gradviz.train.data import TrainData, as_train_data
from gradviz.zoo.presets import Preset, get_preset, seeded_global_rng

__all__ = [
    "train",
    "TrainResult",
    "StopTraining",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "OPTIMIZERS",
    "LOSSES",
]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]] = {
    "mse": (F.mse_loss, "mean"),
    "mse_sum": (lambda p, t: F.mse_loss(p, t, reduction="sum"), "sum"),
    "cross_entropy": (F.cross_entropy, "mean"),
    "nll": (F.nll_loss, "mean"),
    "bce": (F.binary_cross_entropy, "mean"),
}

_CHECKPOINT_FORMAT = "gradviz-checkpoint"
_EVAL_CHUNK = 1000  # samples per forward when measuring accuracy (keeps memory flat)


class StopTraining(GradvizError):
    """Raise from a training callback to stop the run cleanly (the result is kept)."""


@dataclass(eq=False)
class TrainResult:
    """What a run produced: the loss curve, the metrics, the trained model and optimizer.

    ``losses`` holds one value per weight update (the batch loss before that update),
    including the steps of a checkpoint the run resumed from; ``losses[start_step:]``
    is this call's part. ``test_losses`` holds ``(step, loss)`` pairs measured on the
    test split after every epoch.
    """

    losses: list[float]
    metrics: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    steps_done: int
    start_step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 1
    stopped: bool = False
    diverged: bool = False
    test_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0
    preset: Preset | None = None
    data: TrainData | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    rng_state: torch.Tensor | None = field(default=None, repr=False)

    @property
    def epochs_done(self) -> float:
        return self.steps_done / self.steps_per_epoch

    @property
    def message(self) -> str:
        """One line for the UI: how the run ended."""
        head = f"{self.steps_done}/{self.total_steps} steps"
        if self.diverged:
            return (
                f"{head}: the loss became {self.losses[-1]} — the run diverged; try a "
                f"smaller lr than {self.settings.get('lr')}"
            )
        if self.stopped:
            return f"{head}: stopped early"
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return f"{head} in {self.seconds:.1f}s: {shown}"


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A saved run: model and optimizer state dicts (seed 001), plus where the run stood."""

    model_state: Mapping[str, Any]
    optimizer_state: Mapping[str, Any] | None = None
    step: int = 0
    losses: tuple[float, ...] = ()
    test_losses: tuple[tuple[int, float], ...] = ()
    seed: int = 0
    preset: str | None = None
    spec: Any = None
    input_shape: tuple[int, ...] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None

    def build_model(self) -> nn.Module:
        """A new network (the preset's, or built from the stored spec) with these weights."""
        if self.preset is not None:
            model = get_preset(self.preset).build(self.seed)
        elif self.spec is not None:
            model = build_network(self.spec, self.input_shape, seed=0)
        else:
            raise ArgumentError(
                "checkpoint",
                "model",
                "this checkpoint holds only weights; build the network yourself "
                "and pass it: load_checkpoint(src, model=net)",
            )
        _load_model_state(model, self.model_state)
        return model


# ----------------------------------------------------------------------------- checks


def _check_int(name: str, value: Any, low: int = 1, example: str = "100") -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ArgumentError(name, value, f"use a whole number ≥ {low}, e.g. {name}={example}")
    return int(value)


def _check_lr(value: Any, default: float | None) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        hint = f" (this preset uses {default:g})" if default else ""
        raise ArgumentError("lr", value, f"use a positive finite number such as 0.01{hint}")
    return float(value)


def _resolve_optimizer(name: Any) -> str:
    if not isinstance(name, str):
        raise ArgumentError("optimizer", name, f"give an optimizer name: {', '.join(OPTIMIZERS)}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in OPTIMIZERS:
        close = difflib.get_close_matches(key, list(OPTIMIZERS), n=2, cutoff=0.4)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ArgumentError("optimizer", name, f"{hint}known: {', '.join(OPTIMIZERS)}")
    return key


def _resolve_loss(loss: Any, task: str, reduction: str | None = None) -> tuple[Callable[..., torch.Tensor], str, str]:
    if loss is None:
        name = "cross_entropy" if task == "classification" else "mse"
        return LOSSES[name][0], name, LOSSES[name][1]
    if isinstance(loss, str):
        if loss not in LOSSES:
            close = difflib.get_close_matches(loss, list(LOSSES), n=2, cutoff=0.4)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ArgumentError("loss", loss, f"{hint}known: {', '.join(LOSSES)}, or a callable")
        return LOSSES[loss][0], loss, LOSSES[loss][1]
    if callable(loss):
        return loss, getattr(loss, "__name__", type(loss).__name__), reduction or "mean"
    raise ArgumentError(
        "loss",
        loss,
        f"give a loss name ({', '.join(LOSSES)}) or a callable loss(output, target) -> tensor",
    )


def _adhoc_preset(model: nn.Module, data: TrainData, loss: Any, loss_reduction: str | None) -> Preset:
    """A preset-shaped description of a user's own module, so one loop trains everything."""
    fn, name, reduction = _resolve_loss(loss, data.task, loss_reduction)
    spec = getattr(model, "spec", None)
    input_shape = getattr(model, "input_shape", None)
    return Preset(
        name="(your model)",
        description="a module passed to train()",
        seed_program="-",
        task=data.task,
        loss=fn,
        loss_name=name,
        update="optimizer",
        optimizer="sgd",
        hyper={"lr": 0.01},
        make_model=lambda g, s, **o: model,
        make_data=lambda s: data,
        steps=100,
        loss_reduction=reduction,
        spec=spec if isinstance(spec, list) else None,
        input_shape=tuple(input_shape) if input_shape is not None else None,
    )


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


# ------------------------------------------------------------------------------ steps


def _make_optimizer(
    name: str,
    params: list[nn.Parameter],
    lr: float,
    hyper: Mapping[str, float],
    momentum: float | None,
) -> torch.optim.Optimizer:
    kwargs = {k: v for k, v in hyper.items() if k != "lr"}
    if momentum is not None:
        if name not in ("sgd", "rmsprop"):
            raise ArgumentError(
                "momentum",
                momentum,
                f"{name} has no momentum; use optimizer='sgd' or 'rmsprop', or leave momentum out",
            )
        kwargs["momentum"] = momentum
    if not params:
        raise ArgumentError(
            "model", "no parameters", "the network has nothing to train; add a layer with weights"
        )
    return OPTIMIZERS[name](params, lr=lr, **kwargs)


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
                p -= lr * p.grad
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


# ------------------------------------------------------------------------------ train


def train(
    preset_or_name_or_model: str | Preset | nn.Module,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    callback: Callable[[int, int, float], Any] | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    batch_size: int | None = None,
    data: Any = None,
    stop: Any = None,
    loss: Any = None,
    momentum: float | None = None,
    resume: Any = None,
    callback_every: int = 1,
    evaluate: bool = True,
    threads: int | None = 1,
    loss_reduction: str | None = None,
) -> TrainResult:
    """Train a preset (by name or object) or your own module; deterministic for a seed.

    * ``steps``: weight updates to make; ``epochs``: passes over the training set (a
      full-batch preset makes one update per epoch). Default: the preset's own.
    * ``lr``, ``optimizer`` (``"sgd"``, ``"adam"``, …), ``momentum``, ``batch_size``
      override the preset's; choosing an optimizer turns a hand-written update into
      that optimizer (not for the NumPy programs).
    * ``data``: a `TrainData` or ``(X, y[, X_test, y_test])`` instead of the preset's
      (needed for a plain module, with ``loss`` a name from `LOSSES` or a callable).
    * ``loss_reduction``: ``"mean"`` (default) or ``"sum"``: how a callable ``loss``
      reduces over a batch, so whole-set losses are reported on the loss's own scale.
    * ``callback(step, total, loss)`` runs after every ``callback_every`` steps; it
      stops the run by returning True or raising `StopTraining`. A callback object with
      ``attach(model, optimizer)``/``detach()`` (a `GradientFlow`) is attached to the
      network before the first step and detached when the run ends. ``stop`` is polled
      before every step: a callable or a ``threading.Event`` (a Stop button).
    * ``resume``: a `Checkpoint`, its bytes/path, or a `TrainResult` to continue;
      ``steps``/``epochs`` then count the additional training, and with the same seed
      the continued curve equals one uninterrupted run.

    * ``threads``: torch/BLAS threads while training (default 1, the fastest for these
      small nets, restored afterwards; the setting is process-wide while it lasts);
      None keeps torch's current setting.

    A loss that becomes inf/nan ends the run with ``diverged=True``.
    """
    if threads is not None:
        threads = _check_int("threads", threads, example="1")
    with _limit_threads(threads):
        return _train(
            preset_or_name_or_model,
            steps=steps,
            epochs=epochs,
            seed=seed,
            callback=callback,
            lr=lr,
            optimizer=optimizer,
            batch_size=batch_size,
            data=data,
            stop=stop,
            loss=loss,
            momentum=momentum,
            resume=resume,
            callback_every=callback_every,
            evaluate=evaluate,
            loss_reduction=loss_reduction,
        )


def _train(
    preset_or_name_or_model: Any,
    *,
    steps: Any,
    epochs: Any,
    seed: Any,
    callback: Any,
    lr: Any,
    optimizer: Any,
    batch_size: Any,
    data: Any,
    stop: Any,
    loss: Any,
    momentum: Any,
    resume: Any,
    callback_every: Any,
    evaluate: bool,
    loss_reduction: Any,
) -> TrainResult:
    # -- arguments first, before any work
    if loss_reduction is not None and loss_reduction not in ("mean", "sum"):
        raise ArgumentError("loss_reduction", loss_reduction, 'use "mean" or "sum" (how your loss reduces over a batch)')
    if loss_reduction is not None and not callable(loss):
        raise ArgumentError(
            "loss_reduction", loss_reduction, "only a callable loss needs it: a named loss or a preset's own knows its reduction"
        )
    seed = _check_int("seed", seed, 0, "0")
    if seed >= 2**31:
        raise ArgumentError("seed", seed, "use a whole number below 2**31")
    if steps is not None:
        steps = _check_int("steps", steps)
    if epochs is not None:
        epochs = _check_int("epochs", epochs, example="3")
    if steps is not None and epochs is not None:
        raise ArgumentError("epochs", epochs, "give steps or epochs, not both")
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, example="64")
    callback_every = _check_int("callback_every", callback_every, example="10")
    if callback is not None and not callable(callback):
        raise ArgumentError("callback", callback, "give a function (step, total, loss) -> None")
    if stop is not None and not (callable(stop) or hasattr(stop, "is_set")):
        raise ArgumentError(
            "stop", stop, "give a function returning True to stop, or a threading.Event"
        )
    if momentum is not None:
        ok = isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
        if not ok or not math.isfinite(momentum) or not 0 <= momentum < 1:
            raise ArgumentError("momentum", momentum, "use a number in [0, 1), e.g. 0.9")
    opt_name = _resolve_optimizer(optimizer) if optimizer is not None else None

    target = preset_or_name_or_model
    given_model: nn.Module | None = None
    if isinstance(target, nn.Module):
        if data is None:
            raise ArgumentError(
                "data", None, "a plain module needs data=(X, y) (and loss=...) to train on"
            )
        given_model = target
        train_data = as_train_data(data)
        preset = _adhoc_preset(target, train_data, loss, loss_reduction)
    elif isinstance(target, (str, Preset)):
        preset = get_preset(target)
        train_data = as_train_data(data) if data is not None else preset.data(seed)
        if loss is not None:
            fn, name, reduction = _resolve_loss(loss, preset.task, loss_reduction)
            preset = _replace_preset(preset, loss=fn, loss_name=name, loss_reduction=reduction)
    else:
        raise ArgumentError(
            "preset_or_name_or_model",
            target,
            "give a preset name (see gradviz.zoo.presets()), a Preset or an nn.Module",
        )

    lr = _check_lr(lr, preset.hyper.get("lr")) if lr is not None else preset.lr
    style = preset.update
    if opt_name is not None and style != "optimizer":
        if style == "numpy":
            raise ArgumentError(
                "optimizer",
                optimizer,
                f"{preset.name} updates its weights in NumPy by hand; leave "
                "optimizer out, or train an autograd version (two-layer-autograd)",
            )
        style = "optimizer"
    if momentum is not None and style != "optimizer":
        raise ArgumentError(
            "momentum",
            momentum,
            f"{preset.name} updates by hand ({style}); pass optimizer='sgd' too",
        )
    opt_name = opt_name or preset.optimizer
    hyper = preset.hyper if opt_name == preset.optimizer else {}
    if momentum is None and "momentum" in hyper and opt_name not in ("sgd", "rmsprop"):
        hyper = {k: v for k, v in hyper.items() if k != "momentum"}

    ckpt = _as_checkpoint(resume) if resume is not None else None
    if (
        ckpt is not None
        and ckpt.preset is not None
        and given_model is None
        and (ckpt.preset != preset.name)
    ):
        raise ArgumentError(
            "resume",
            ckpt.preset,
            f"this checkpoint is from preset {ckpt.preset}, not {preset.name}; "
            f"train({ckpt.preset!r}, resume=...)",
        )

    # -- model, optimizer, schedule
    model = given_model if given_model is not None else preset.build(seed)
    if ckpt is not None:
        _load_model_state(model, ckpt.model_state)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(opt_name, params, lr, hyper, momentum) if style == "optimizer" else None
    # Another optimizer starts from fresh state: SGD's state loaded into Adam replaces its
    # param groups (no betas) and the first step fails.
    same_optimizer = ckpt is not None and ckpt.settings.get("optimizer") in (None, opt_name)
    if ckpt is not None and ckpt.optimizer_state is not None and opt is not None and same_optimizer:
        try:
            opt.load_state_dict(copy.deepcopy(dict(ckpt.optimizer_state)))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise DataError(
                f"checkpoint: its optimizer state does not fit a {opt_name} "
                f"optimizer of this network ({exc})"
            ) from None
        for group in opt.param_groups:  # the lr asked for now wins over the saved one
            group["lr"] = lr

    n = train_data.n
    if batch_size is None and ckpt is not None:
        batch_size = ckpt.settings.get("batch_size")
    bs = min(batch_size or preset.batch_size or n, n)
    per_epoch = math.ceil(n / bs)
    if steps is not None:
        n_new = steps
    elif epochs is not None:
        n_new = epochs * per_epoch
    elif preset.steps is not None:
        n_new = preset.steps
    else:
        n_new = (preset.epochs or 1) * per_epoch
    start = ckpt.step if ckpt is not None else 0
    total = start + n_new
    losses: list[float] = list(ckpt.losses) if ckpt is not None else []
    test_losses: list[tuple[int, float]] = list(ckpt.test_losses) if ckpt is not None else []
    settings = {
        "lr": lr,
        "optimizer": opt_name if style == "optimizer" else None,
        "update": style,
        "batch_size": bs,
        "momentum": momentum,
    }

    X, y = train_data.X, train_data.y
    expected_shape = getattr(model, "input_shape", None) or preset.input_shape
    if expected_shape is not None and tuple(X.shape[1:]) != tuple(expected_shape):
        raise DataError(
            f"data: inputs of shape {tuple(X.shape)} do not fit {preset.name}, which takes "
            f"(N, {', '.join(map(str, expected_shape))}); give inputs of that shape"
        )
    program = preset.numpy_program(model) if style == "numpy" else None
    if program is not None:
        Xn = X.detach().numpy().astype(np.float64)
        yn = y.detach().numpy().astype(np.float64)
    chunk = preset.test_batch_size or _EVAL_CHUNK

    stopped = diverged = False
    was_training = model.training
    # a callback object with attach(model, optimizer) (a GradientFlow) hooks the network
    # this run trains; its detach() runs when the run ends, also on error
    if callable(getattr(callback, "attach", None)):
        callback.attach(model, opt)
    t0 = time.perf_counter()
    order: torch.Tensor | None = None
    order_epoch = -1
    step = start
    try:
        rng = (
            seeded_global_rng(seed, ckpt.rng_state if ckpt is not None else None)
            if _uses_global_rng(model, given_model is not None)
            else contextlib.nullcontext()
        )
        rng_state = None
        with rng:
            model.train()
            while step < total:
                if _poll(stop):
                    stopped = True
                    break
                epoch, pos = divmod(step, per_epoch)
                if per_epoch == 1:
                    idx = None  # full batch: the tutorials pass X itself, unshuffled
                else:
                    if order_epoch != epoch:
                        order, order_epoch = _epoch_order(seed, epoch, n, preset.shuffle), epoch
                    idx = order[pos * bs : (pos + 1) * bs]
                try:
                    if program is not None:
                        ii = slice(None) if idx is None else idx.numpy()
                        value = float(program.step(Xn[ii], yn[ii], lr))
                    else:
                        xb = X if idx is None else X[idx]
                        yb = y if idx is None else y[idx]
                        if style == "manual-backward":
                            value = float(preset.manual_step_fn(model, xb, yb, lr))
                        else:
                            value = _step_autograd(style, preset, model, xb, yb, lr, opt)
                except (RuntimeError, ValueError, IndexError) as exc:
                    if step != start:
                        raise  # a step that ran once fails later only for a real bug
                    # the first step is where data and network meet; say which parts clash
                    raise DataError(
                        f"data: the first step failed for inputs {tuple(X.shape)} and targets "
                        f"{tuple(y.shape)} {y.dtype} with the loss {preset.loss_name} "
                        f"({str(exc).strip().splitlines()[0][:200]}); give data the network "
                        "and loss take"
                    ) from exc
                losses.append(value)
                step += 1
                if not math.isfinite(value):
                    diverged = True
                    break
                if (
                    pos == per_epoch - 1
                    and evaluate
                    and train_data.X_test is not None
                    and (train_data.y_test is not None and per_epoch > 1)
                ):
                    model.eval()
                    test_loss, _ = _evaluate(
                        preset, model, train_data.X_test, train_data.y_test, None, chunk, bs
                    )
                    test_losses.append((step, test_loss))
                    model.train()
                if callback is not None and (step % callback_every == 0 or step == total):
                    try:
                        if callback(step, total, value) is True:
                            stopped = True
                            break
                    except StopTraining:
                        stopped = True
                        break
            if not isinstance(rng, contextlib.nullcontext):
                rng_state = torch.get_rng_state()
    finally:
        model.train(was_training)
        if callable(getattr(callback, "detach", None)):
            callback.detach()
    seconds = time.perf_counter() - t0

    metrics = (
        _metrics(preset, model, train_data, losses, chunk, bs)
        if evaluate and not diverged
        else ({"loss": losses[-1]} if losses else {})
    )
    return TrainResult(
        losses=losses,
        metrics=metrics,
        model=model,
        optimizer=opt,
        steps_done=step,
        start_step=start,
        total_steps=total,
        steps_per_epoch=per_epoch,
        stopped=stopped,
        diverged=diverged,
        test_losses=test_losses,
        seconds=seconds,
        seed=seed,
        preset=preset if given_model is None else None,
        data=train_data,
        settings=settings,
        rng_state=rng_state,
    )


def _replace_preset(preset: Preset, **changes: Any) -> Preset:
    return replace(preset, **changes)


# ------------------------------------------------------------------------- checkpoints


def _load_model_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    try:
        model.load_state_dict(dict(state))
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise DataError(
            "checkpoint: its weights do not fit this network "
            f"({'; '.join(line.strip() for line in first[:3])}); load it into the network "
            "it was saved from"
        ) from None


def _checkpoint_dict(result_or_model: Any, optimizer: Any) -> dict[str, Any]:
    if isinstance(result_or_model, TrainResult):
        r = result_or_model
        model, opt = r.model, optimizer if optimizer is not None else r.optimizer
        preset = r.preset.name if r.preset is not None else None
        step, losses, test_losses = r.steps_done, list(r.losses), list(r.test_losses)
        seed, settings, rng = r.seed, dict(r.settings), r.rng_state
    elif isinstance(result_or_model, nn.Module):
        model, opt, preset = result_or_model, optimizer, None
        step, losses, test_losses, seed, settings, rng = 0, [], [], 0, {}, None
    else:
        raise ArgumentError(
            "result_or_model", result_or_model, "give a TrainResult or an nn.Module"
        )
    if opt is not None and not isinstance(opt, torch.optim.Optimizer):
        raise ArgumentError("optimizer", opt, "give a torch.optim optimizer or None")
    spec = getattr(model, "spec", None)
    shape = getattr(model, "input_shape", None)
    return {
        "format": _CHECKPOINT_FORMAT,
        "version": 1,
        "model_state": model.state_dict(),
        "optimizer_state": opt.state_dict() if opt is not None else None,
        "step": step,
        "losses": losses,
        "test_losses": [list(t) for t in test_losses],
        "seed": seed,
        "preset": preset,
        "spec": spec if isinstance(spec, list) else None,
        "input_shape": list(shape) if shape is not None else None,
        "settings": {k: v for k, v in settings.items() if isinstance(v, (int, float, str))},
        "rng_state": rng,
    }


def _is_destination(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) or hasattr(value, "write")


def save_checkpoint(
    result_or_model: TrainResult | nn.Module, optimizer: Any = None, path_or_buffer: Any = None
) -> bytes | None:
    """Save model and optimizer state dicts (as seed 001 does) and where the run stood.

    ``save_checkpoint(result, path)`` also works (a result carries its optimizer). With
    no destination the checkpoint is returned as bytes (for a download button).
    """
    if path_or_buffer is None and _is_destination(optimizer):
        optimizer, path_or_buffer = None, optimizer
    payload = _checkpoint_dict(result_or_model, optimizer)
    if path_or_buffer is None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()
    if isinstance(path_or_buffer, (str, os.PathLike)):
        try:
            torch.save(payload, Path(path_or_buffer))
        except OSError as exc:
            raise ArgumentError(
                "path_or_buffer",
                str(path_or_buffer),
                f"cannot write there ({exc.strerror}); pick a writable path",
            ) from None
        return None
    if hasattr(path_or_buffer, "write"):
        torch.save(payload, path_or_buffer)
        return None
    raise ArgumentError(
        "path_or_buffer",
        path_or_buffer,
        "give a file path, a writable binary buffer, or nothing to get bytes",
    )


def _read_checkpoint_source(source: Any) -> tuple[Any, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "<checkpoint bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such checkpoint file; check the path")
        return path, str(path)
    if hasattr(source, "read"):
        return source, str(getattr(source, "name", "<checkpoint file>"))
    raise ArgumentError(
        "path_or_buffer", source, "give a checkpoint path, its bytes or a binary file object"
    )


def load_checkpoint(
    path_or_buffer: Any,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Checkpoint:
    """Read a checkpoint safely (``torch.load(..., weights_only=True)``).

    Given ``model``/``optimizer`` (e.g. a new network and optimizer, as seed 001 makes),
    their states are loaded. A bare ``state_dict`` file (seed 001's ``model.pth``) is
    accepted as a checkpoint of weights only.
    """
    src, label = _read_checkpoint_source(path_or_buffer)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        AttributeError,
        ImportError,
        TypeError,
    ) as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{label}: not a readable PyTorch checkpoint ({msg}); save one with "
            "gradviz.save_checkpoint or torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(obj, Mapping) and obj.get("format") == _CHECKPOINT_FORMAT:
        try:
            ckpt = Checkpoint(
                model_state=obj["model_state"],
                optimizer_state=obj.get("optimizer_state"),
                step=int(obj.get("step", 0)),
                losses=tuple(float(v) for v in obj.get("losses", [])),
                test_losses=tuple((int(s), float(v)) for s, v in obj.get("test_losses", [])),
                seed=int(obj.get("seed", 0)),
                preset=obj.get("preset"),
                spec=obj.get("spec"),
                input_shape=tuple(obj["input_shape"]) if obj.get("input_shape") else None,
                settings=dict(obj.get("settings") or {}),
                rng_state=obj.get("rng_state"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{label}: a damaged gradviz checkpoint ({exc}); save it again"
            ) from None
    elif (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        ckpt = Checkpoint(model_state=dict(obj))
    else:
        raise DataError(
            f"{label}: holds a {type(obj).__name__}, not model weights; give a "
            "gradviz checkpoint or a saved state_dict"
        )
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ArgumentError("model", model, "give the nn.Module to load the weights into")
        _load_model_state(model, ckpt.model_state)
    if optimizer is not None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ArgumentError("optimizer", optimizer, "give a torch.optim optimizer")
        if ckpt.optimizer_state is None:
            raise DataError(f"{label}: holds no optimizer state; train with the fresh optimizer")
        try:
            optimizer.load_state_dict(copy.deepcopy(dict(ckpt.optimizer_state)))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise DataError(
                f"{label}: its optimizer state does not fit this optimizer ({exc})"
            ) from None
    return ckpt


def _as_checkpoint(resume: Any) -> Checkpoint:
    if isinstance(resume, Checkpoint):
        return resume
    if not (
        isinstance(resume, (TrainResult, bytes, bytearray, memoryview, str, os.PathLike))
        or hasattr(resume, "read")
    ):
        raise ArgumentError(
            "resume",
            resume,
            "give a Checkpoint, a TrainResult, or a checkpoint's path, bytes or file object",
        )
    if isinstance(resume, TrainResult):
        # in memory: deep copies, so continuing never changes the finished result
        payload = _checkpoint_dict(resume, None)
        return Checkpoint(
            model_state=copy.deepcopy(payload["model_state"]),
            optimizer_state=copy.deepcopy(payload["optimizer_state"]),
            step=payload["step"],
            losses=tuple(payload["losses"]),
            test_losses=tuple((s, v) for s, v in payload["test_losses"]),
            seed=payload["seed"],
            preset=payload["preset"],
            spec=payload["spec"],
            settings=payload["settings"],
            input_shape=tuple(payload["input_shape"]) if payload["input_shape"] else None,
            rng_state=None if resume.rng_state is None else resume.rng_state.clone(),
        )
    return load_checkpoint(resume)

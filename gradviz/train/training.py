"""Train a preset or any module the way its tutorial does: curves, stopping, checkpoints.

`train` checks its arguments and settles a `gradviz.train.loop.Plan` (model, optimizer,
schedule, resumed state); `gradviz.train.loop.run_steps` runs it. Optimizers and losses
live in `gradviz.train.optimizers`, checkpoints in `gradviz.train.checkpoints`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import ArgumentError, DataError
from gradviz.train.builder import Network
from gradviz.train.checkpoints import Checkpoint, _as_checkpoint, _load_model_state
from gradviz.train.data import TrainData, as_train_data
from gradviz.train.loop import _EVAL_CHUNK, Outcome, Plan, _limit_threads, _metrics, run_steps
from gradviz.train.optimizers import (
    _check_int,
    _check_lr,
    _make_optimizer,
    _resolve_loss,
    _resolve_optimizer,
)
from gradviz.train.recipe import Preset, get_preset
from gradviz.train.results import TrainResult
from gradviz.train.spec import spec_to_text

__all__ = ["train"]


def _adhoc_preset(
    model: nn.Module, data: TrainData, loss: Any, loss_reduction: str | None
) -> Preset:
    """A preset-shaped description of a user's own module, so one loop trains everything."""
    fn, name, reduction = _resolve_loss(loss, data.task, loss_reduction)
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
        spec=spec_to_text(model.spec) if isinstance(model, Network) else None,
        input_shape=tuple(input_shape) if input_shape is not None else None,
    )



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


def _check_amounts(
    seed: Any, steps: Any, epochs: Any, batch_size: Any
) -> tuple[int, int | None, int | None, int | None]:
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
    return seed, steps, epochs, batch_size


def _check_hooks(callback: Any, callback_every: Any, stop: Any) -> int:
    callback_every = _check_int("callback_every", callback_every, example="10")
    if callback is not None and not callable(callback):
        raise ArgumentError("callback", callback, "give a function (step, total, loss) -> None")
    if stop is not None and not (callable(stop) or hasattr(stop, "is_set")):
        raise ArgumentError(
            "stop", stop, "give a function returning True to stop, or a threading.Event"
        )
    return callback_every


def _check_loss_reduction(loss: Any, loss_reduction: Any) -> None:
    if loss_reduction is not None and loss_reduction not in ("mean", "sum"):
        raise ArgumentError(
            "loss_reduction",
            loss_reduction,
            'use "mean" or "sum" (how your loss reduces over a batch)',
        )
    if loss_reduction is not None and not callable(loss):
        raise ArgumentError(
            "loss_reduction",
            loss_reduction,
            "only a callable loss needs it: a named loss or a preset's own knows its reduction",
        )


def _check_momentum(momentum: Any) -> None:
    if momentum is not None:
        ok = isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
        if not ok or not math.isfinite(momentum) or not 0 <= momentum < 1:
            raise ArgumentError("momentum", momentum, "use a number in [0, 1), e.g. 0.9")


def _resolve_target(
    target: Any, data: Any, seed: int, loss: Any, loss_reduction: str | None
) -> tuple[Preset, TrainData, nn.Module | None]:
    """The preset to follow, the data, and the user's own module (None for a preset)."""
    if isinstance(target, nn.Module):
        if data is None:
            raise ArgumentError(
                "data", None, "a plain module needs data=(X, y) (and loss=...) to train on"
            )
        train_data = as_train_data(data)
        return _adhoc_preset(target, train_data, loss, loss_reduction), train_data, target
    if isinstance(target, (str, Preset)):
        preset = get_preset(target)
        train_data = as_train_data(data) if data is not None else preset.data(seed)
        if loss is not None:
            fn, name, reduction = _resolve_loss(loss, preset.task, loss_reduction)
            preset = replace(preset, loss=fn, loss_name=name, loss_reduction=reduction)
        return preset, train_data, None
    raise ArgumentError(
        "preset_or_name_or_model",
        target,
        "give a preset name (see gradviz.zoo.presets()), a Preset or an nn.Module",
    )


def _update_rule(
    preset: Preset, opt_name: str | None, optimizer: Any, momentum: float | None
) -> tuple[str, str | None, Mapping[str, float]]:
    """How weights change (the preset's own update or an optimizer), and its settings."""
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
    return style, opt_name, hyper


def _checked_resume(
    resume: Any, preset: Preset, given_model: nn.Module | None
) -> Checkpoint | None:
    ckpt = _as_checkpoint(resume) if resume is not None else None
    other = ckpt is not None and ckpt.preset is not None and ckpt.preset != preset.name
    if ckpt is not None and other and given_model is None:
        raise ArgumentError(
            "resume",
            ckpt.preset,
            f"this checkpoint is from preset {ckpt.preset}, not {preset.name}; "
            f"train({ckpt.preset!r}, resume=...)",
        )
    return ckpt


def _optimizer_for(
    model: nn.Module,
    style: str,
    opt_name: str | None,
    lr: float,
    hyper: Mapping[str, float],
    momentum: float | None,
    ckpt: Checkpoint | None,
) -> torch.optim.Optimizer | None:
    """The run's optimizer (None for a hand-written update), resumed when it is the same one."""
    if style != "optimizer" or opt_name is None:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(opt_name, params, lr, hyper, momentum)
    # Another optimizer starts from fresh state: SGD's state loaded into Adam replaces its
    # param groups (no betas) and the first step fails.
    same_optimizer = ckpt is not None and ckpt.settings.get("optimizer") in (None, opt_name)
    if ckpt is None or ckpt.optimizer_state is None or not same_optimizer:
        return opt
    try:
        opt.load_state_dict(copy.deepcopy(dict(ckpt.optimizer_state)))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DataError(
            f"checkpoint: its optimizer state does not fit a {opt_name} "
            f"optimizer of this network ({exc})"
        ) from None
    for group in opt.param_groups:  # the lr asked for now wins over the saved one
        group["lr"] = lr
    return opt


def _schedule(
    preset: Preset, n: int, steps: int | None, epochs: int | None, batch_size: int | None
) -> tuple[int, int, int]:
    """(batch size, steps per epoch, new steps) from the arguments or the preset's own."""
    bs = min(batch_size or preset.batch_size or n, n)
    per_epoch = math.ceil(n / bs)
    if steps is not None:
        return bs, per_epoch, steps
    if epochs is not None:
        return bs, per_epoch, epochs * per_epoch
    if preset.steps is not None:
        return bs, per_epoch, preset.steps
    return bs, per_epoch, (preset.epochs or 1) * per_epoch


def _check_input_fits(preset: Preset, model: nn.Module, data: TrainData) -> None:
    expected = getattr(model, "input_shape", None) or preset.input_shape
    if expected is not None and tuple(data.X.shape[1:]) != tuple(expected):
        raise DataError(
            f"data: inputs of shape {tuple(data.X.shape)} do not fit {preset.name}, which takes "
            f"(N, {', '.join(map(str, expected))}); give inputs of that shape"
        )


def _numpy_arrays(program: Any, data: TrainData) -> tuple[np.ndarray, np.ndarray] | None:
    if program is None:
        return None
    X, y = data.X.detach().numpy(), data.y.detach().numpy()
    return X.astype(np.float64), y.astype(np.float64)


def _result(plan: Plan, outcome: Outcome, evaluate: bool, settings: dict[str, Any]) -> TrainResult:
    losses = plan.losses
    metrics = (
        _metrics(plan.preset, plan.model, plan.data, losses, plan.chunk, plan.batch_size)
        if evaluate and not outcome.diverged
        else ({"loss": losses[-1]} if losses else {})
    )
    return TrainResult(
        losses=losses,
        metrics=metrics,
        model=plan.model,
        optimizer=plan.opt,
        steps_done=outcome.step,
        start_step=plan.start,
        total_steps=plan.total,
        steps_per_epoch=plan.per_epoch,
        stopped=outcome.stopped,
        diverged=outcome.diverged,
        test_losses=plan.test_losses,
        seconds=outcome.seconds,
        seed=plan.seed,
        preset=None if plan.own_module else plan.preset,
        data=plan.data,
        settings=settings,
        rng_state=outcome.rng_state,
    )


def _train(
    target: Any,
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
    # arguments first, before any work, in the order a reader would check them
    _check_loss_reduction(loss, loss_reduction)
    seed, steps, epochs, batch_size = _check_amounts(seed, steps, epochs, batch_size)
    callback_every = _check_hooks(callback, callback_every, stop)
    _check_momentum(momentum)
    opt_name = _resolve_optimizer(optimizer) if optimizer is not None else None
    preset, train_data, given_model = _resolve_target(target, data, seed, loss, loss_reduction)
    lr = _check_lr(lr, preset.hyper.get("lr")) if lr is not None else preset.lr
    style, opt_name, hyper = _update_rule(preset, opt_name, optimizer, momentum)
    ckpt = _checked_resume(resume, preset, given_model)

    model = given_model if given_model is not None else preset.build(seed)
    if ckpt is not None:
        _load_model_state(model, ckpt.model_state)
    opt = _optimizer_for(model, style, opt_name, lr, hyper, momentum, ckpt)
    if batch_size is None and ckpt is not None:
        batch_size = ckpt.settings.get("batch_size")
    bs, per_epoch, n_new = _schedule(preset, train_data.n, steps, epochs, batch_size)
    start = ckpt.step if ckpt is not None else 0
    settings = {
        "lr": lr,
        "optimizer": opt_name if style == "optimizer" else None,
        "update": style,
        "batch_size": bs,
        "momentum": momentum,
    }
    _check_input_fits(preset, model, train_data)
    program = preset.numpy_program(model) if style == "numpy" else None
    plan = Plan(
        preset=preset, model=model, data=train_data, style=style, lr=lr, opt=opt,
        batch_size=bs, per_epoch=per_epoch, start=start, total=start + n_new, seed=seed,
        losses=list(ckpt.losses) if ckpt is not None else [],
        test_losses=list(ckpt.test_losses) if ckpt is not None else [],
        own_module=given_model is not None,
        resume_rng=ckpt.rng_state if ckpt is not None else None,
        program=program, arrays=_numpy_arrays(program, train_data),
        chunk=preset.test_batch_size or _EVAL_CHUNK,
    )  # fmt: skip
    outcome = run_steps(
        plan, stop=stop, callback=callback, callback_every=callback_every, evaluate=evaluate
    )
    return _result(plan, outcome, evaluate, settings)

"""One name for every program the app and the CLI can trace or step: examples and presets.

A source key is ``"example:NAME"``, ``"preset:NAME"`` or ``"model:NAME"`` for a model of
`gradviz.zoo.models` (``"model:resnet18"``, ``"model:hf:bert@1x16"``: an input shape after
@). `build_source` builds the model and runs its forward under `capture`, optionally in
float64 (where NumPy references agree to 1e-7); `trace_source` and `step_source` return
frozen results only, built in a thread with a large stack so freeing deep graphs is safe
from any thread.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping

import torch
from torch import nn

from gradviz.backward.netprop import autograd_grads, numpy_backprop
from gradviz.backward.stepper import BackwardStepper
from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph
from gradviz.graph.tracing import capture, run_with_big_stack, trace
from gradviz.zoo.examples import examples
from gradviz.zoo.models import build_model, input_shape, model_loss, model_names, parse_shape
from gradviz.zoo.presets import DynamicNet, presets, seeded_global_rng

__all__ = [
    "model_key",
    "source_key",
    "source_labels",
    "build_source",
    "trace_source",
    "step_source",
    "step_model",
    "whole_network_check",
]


def source_labels(include_big: bool = True) -> dict[str, str]:
    """Label for a picker → source key; presets first (the tutorial programs), then examples."""
    out = {f"{p.name} — {p.description}": f"preset:{p.name}" for p in presets().values()}
    for e in examples().values():
        if include_big or not e.big:
            out[f"{e.name} — {e.description}"] = f"example:{e.name}"
    return out


def source_key(program: str) -> str | None:
    """The source key a command-line name means ("mnist-cnn" → "example:mnist-cnn",
    "model:resnet18@2x3x64x64" as is), or None (then it names a user's file)."""
    if program.startswith("model:"):
        _split(program)
        return program
    keys = set(source_labels().values())
    if program in keys:
        return program
    return next((k for k in (f"example:{program}", f"preset:{program}") if k in keys), None)


def _split(key: str) -> tuple[str, str]:
    kind, _, name = str(key).partition(":")
    if kind == "model":
        model_key(name)
        return kind, name
    tables: dict[str, Mapping[str, object]] = {"example": examples(), "preset": presets()}
    table = tables.get(kind)
    if table is None:
        raise ArgumentError("source", key, "use 'preset:NAME', 'example:NAME' or 'model:NAME'")
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f"did you mean {kind}:{close[0]}? " if close else ""
        raise ArgumentError("source", key, f"{hint}known {kind}s: {', '.join(table)}")
    return kind, name


def build_source(
    key: str, seed: int = 0, *, float64: bool = False
) -> tuple[nn.Module, torch.Tensor]:
    """Build source `key` and run its forward under `capture`; returns (model, loss)."""
    kind, name = _split(key)
    if kind == "model":
        return _build_model_source(name, torch.float64 if float64 else torch.float32, seed)
    if kind == "example":
        model, loss_fn = examples()[name].make(seed)
        if float64:
            model = model.double()
        with capture(model):
            return model, loss_fn(model)
    preset = presets()[name]
    model = preset.build(seed)
    if float64:
        model = model.double()
    data = preset.data(seed)
    with seeded_global_rng(seed), capture(model):
        loss = preset.forward_loss(model, (data.X[:8], data.y[:8]))
    return model, loss


def model_key(text: str) -> tuple[str, tuple[int, ...] | None]:
    """Model name and input shape of a model source's name part ("hf:bert@1x16")."""
    name, _, shape_text = str(text).partition("@")
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean model:{close[0]}? " if close else ""
        known = ", ".join(names) or "none: pip install -e '.[models]'"
        raise ArgumentError("source", f"model:{text}", f"{hint}models here: {known}")
    return name, parse_shape(shape_text) if shape_text else None


def _build_model_source(text: str, dtype: torch.dtype, seed: int) -> tuple[nn.Module, torch.Tensor]:
    name, shape = model_key(text)
    model, inputs = build_model(name, dtype=dtype, seed=seed, shape=shape)
    try:
        with capture(model):
            return model, model_loss(model, inputs)
    except (RuntimeError, ValueError, IndexError) as e:  # the model refused this input
        raise ArgumentError("shape", shape, f"{name} cannot run on it ({str(e)[:200]}); try "
                            f"its default {input_shape(name)}") from e


def trace_source(key: str, seed: int = 0) -> Graph:
    """The autograd graph of source `key`."""
    _split(key)

    def run() -> Graph:
        model, loss = build_source(key, seed)
        return trace(loss, model=model)

    return run_with_big_stack(run)


def step_source(key: str, seed: int = 0, *, float64: bool = True) -> BackwardStepper:
    """A recorded backward of source `key` with NumPy references (float64 by default)."""
    _split(key)

    def run() -> BackwardStepper:
        model, loss = build_source(key, seed, float64=float64)
        return BackwardStepper(loss, model=model)

    return run_with_big_stack(run)


def whole_network_check(key: str, seed: int = 0) -> list[dict] | None:
    """Per-parameter rows: torch's gradients beside a whole-network NumPy backprop written
    layer by layer (float64, eval mode so dropout is off). None for examples, whose data
    the app does not hold."""
    kind, name = _split(key)
    if kind != "preset":
        return None
    preset = presets()[name]
    model = preset.build(seed).double().eval()
    if isinstance(model, DynamicNet):
        model.fixed_depth = 2  # DynamicNet: NumPy must run the same depth as torch
    data = preset.data(seed)
    x, y = data.X[:8], data.y[:8]
    result = numpy_backprop(model, x, y, preset.loss)
    _, torch_grads = autograd_grads(model, x, y, preset.loss)
    return result.compare(torch_grads)


def step_model(model: nn.Module, preset: str, seed: int = 0) -> BackwardStepper:
    """A recorded backward of a model the user built or trained (a float64 copy of it),
    on the first samples of `preset`'s data."""
    _split(f"preset:{preset}")
    if not isinstance(model, nn.Module):
        raise ArgumentError(
            "model", type(model).__name__, "pass the nn.Module built on the Build & Train page"
        )

    def run() -> BackwardStepper:
        net = copy.deepcopy(model).double()
        p = presets()[preset]
        data = p.data(seed)
        with seeded_global_rng(seed), capture(net):
            loss = p.forward_loss(net, (data.X[:8], data.y[:8]))
        return BackwardStepper(loss, model=net)

    return run_with_big_stack(run)

"""The `Preset` record: one seed program's build, data, loss and training, and the registry.

It lives in `train` because training runs presets by name; the programs themselves are
declared in `gradviz.zoo.presets.table` (one `Preset(...)` each) and entered here with
`register` when `gradviz` is imported; `presets` and `get_preset` read them back.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train import data as gdata

UPDATE_STYLES = {
    "optimizer": "a torch.optim optimizer: zero_grad(), backward(), step()",
    "manual-no_grad": "backward(), then p -= lr·p.grad under torch.no_grad() and zero the grads",
    "manual-data": "backward(), then p.data = p.data − lr·p.grad and p.grad.zero_()",
    "manual-backward": "no autograd: the gradients are derived by hand with tensor ops",
    "numpy": "a NumPy program updates the weights in place (shared memory with the module)",
}

# Global-RNG users (dropout) cannot be given a private generator; runs that need it take
# turns, so two Streamlit sessions cannot interleave draws and break each other's replay.
_GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed: int, state: torch.Tensor | None = None) -> Iterator[None]:
    """Seed (or restore) torch's global CPU RNG for a block, then put the old state back."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        if state is not None:
            torch.set_rng_state(state)
        else:
            torch.manual_seed(seed)
        yield


def _gen(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise ArgumentError("seed", seed, "use a whole number from 0 to 2**31 − 1")
    return torch.Generator().manual_seed(seed)


# How a module's parameters map to the common layout [(W, b), ...] with W (in × out) as in
# X·W + b: ("in_out", W, b) direct, ("out_in", W, b) transposed (nn.Linear), ("folded", W)
# with the bias as W's last row (seed 002's column of ones).
Slot = tuple[str, torch.Tensor, torch.Tensor | None]


def _weight_tensor(value: Any, what: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        t = (
            value.detach()
            if isinstance(value, torch.Tensor)
            else torch.as_tensor(np.asarray(value))
        )
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(t.dtype)
        return t.to(dtype)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(what, value, "give a tensor or array of numbers") from None


@dataclass(frozen=True, eq=False)
class Preset:
    """One seed program: how to build it, its data, its loss and how it trains.

    ``update`` says how the tutorial changes the weights (see `UPDATE_STYLES`);
    ``optimizer``/``hyper`` name the torch optimizer and its settings (``hyper["lr"]``
    is also the step size of the manual and NumPy updates). ``steps`` counts weight
    updates for full-batch programs; ``epochs``/``batch_size`` describe minibatch ones.
    ``tutorial`` holds numbers the tutorial reports, e.g. ``{"accuracy": 0.955}``.
    """

    name: str
    description: str
    seed_program: str
    task: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    loss_name: str
    update: str
    optimizer: str | None
    hyper: Mapping[str, float]
    make_model: Callable[..., nn.Module] = field(repr=False)
    make_data: Callable[[int], gdata.TrainData] = field(repr=False)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    test_batch_size: int | None = None
    shuffle: bool = True
    loss_reduction: str = "mean"
    tutorial: Mapping[str, Any] = field(default_factory=dict)
    spec: str | None = None
    input_shape: tuple[int, ...] | None = None
    digit_layout: str | None = None
    # takes the model `make_model` built (each preset its own class), like `manual_step_fn`
    weight_slots: Callable[..., list[Slot]] | None = field(default=None, repr=False)
    manual_step_fn: Callable[..., float] | None = field(default=None, repr=False)
    numpy_fn: Callable[[nn.Module], Any] | None = field(default=None, repr=False)

    # -- building and data

    def build(self, seed: int = 0, **options: Any) -> nn.Module:
        """A fresh network with this program's initial weights for ``seed``.

        Options: ``topology`` for quadrant-sequential and quadrant-linear-sigmoid
        (default [2, 3, 3, 4], the other quadrant presets' net; the tutorial runs [2, 10, 4]).
        """
        return self.make_model(_gen(seed), seed, **options)

    def data(self, seed: int = 0) -> gdata.TrainData:
        """This program's training (and test) data; generated sets depend on ``seed``."""
        _gen(seed)
        return self.make_data(seed)

    def prepare(
        self, images: Any, labels: Any, test_images: Any = None, test_labels: Any = None
    ) -> gdata.TrainData:
        """Real MNIST arrays (e.g. from `load_mnist_idx`) laid out for this digit preset."""
        if self.digit_layout is None:
            raise ArgumentError(
                "preset",
                self.name,
                "only mnist-cnn, scratch-784-250-10 and keras-dense-512 take digit images",
            )
        return gdata.digits_for(
            self.digit_layout, images, labels, test_images, test_labels, name="MNIST"
        )

    # -- losses

    def forward(self, model: nn.Module, X: torch.Tensor) -> torch.Tensor:
        """The network's output for inputs ``X`` (cast to the network's float type)."""
        p = next(iter(model.parameters()), None)
        if p is not None and X.is_floating_point() and X.dtype != p.dtype:
            X = X.to(p.dtype)
        return model(X)

    def forward_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """This program's loss for ``batch`` = ``(X, y)`` or a `TrainData`, with its graph."""
        if isinstance(batch, gdata.TrainData):
            X, y = batch.X, batch.y
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            X, y = batch
        else:
            raise ArgumentError("batch", batch, "give (X, y) tensors or a TrainData")
        out = self.forward(model, X)
        if y.is_floating_point() and y.dtype != out.dtype:
            y = y.to(out.dtype)
        return self.loss(out, y)

    def example_loss(self, seed: int = 0, batch_size: int = 8) -> tuple[nn.Module, torch.Tensor]:
        """``(model, loss)`` on the first ``batch_size`` samples: a graph in one call.

        Random forward steps (dropout, DynamicNet's depth) are seeded, so the same seed
        gives the same loss.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ArgumentError("batch_size", batch_size, "use a whole number ≥ 1, e.g. 8")
        model = self.build(seed)
        d = self.data(seed)
        batch = (d.X[:batch_size], d.y[:batch_size])
        if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            with seeded_global_rng(seed):
                return model, self.forward_loss(model, batch)
        # no global randomness in this forward: no need to wait for a dropout run's lock
        return model, self.forward_loss(model, batch)

    # -- one weight layout for comparisons

    def _slots(self, model: nn.Module) -> list[Slot]:
        if self.weight_slots is None:
            raise ArgumentError(
                "preset",
                self.name,
                "this preset has no common (W, b) weight layout; use one of "
                + ", ".join(n for n, p in presets().items() if p.weight_slots),
            )
        return self.weight_slots(model)

    def get_weights(
        self, model: nn.Module, *, grad: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Weights (or their ``.grad``) as ``[(W, b), ...]`` with W of shape (in, out).

        The same net written different ways (loose tensors, folded bias, nn.Linear) gives
        the same list, so gradients can be compared across presets.
        """
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for kind, w, b in self._slots(model):
            wt = w.grad if grad else w.detach()
            bt = None if b is None else (b.grad if grad else b.detach())
            if wt is None or (b is not None and bt is None):
                raise ArgumentError("grad", grad, "run backward() on a loss of this model first")
            if kind == "folded":
                out.append((wt[:-1].clone(), wt[-1].clone()))
            elif kind == "out_in":
                out.append((wt.t().clone(), None if bt is None else bt.reshape(-1).clone()))
            else:
                out.append((wt.clone(), None if bt is None else bt.reshape(-1).clone()))
        return out

    def set_weights(self, model: nn.Module, layers: Sequence[tuple[Any, Any]]) -> nn.Module:
        """Load ``[(W, b), ...]`` (W: in × out, b: out or None) into ``model`` in place."""
        slots = self._slots(model)
        if not isinstance(layers, (list, tuple)) or len(layers) != len(slots):
            raise ArgumentError(
                "layers", layers, f"give {len(slots)} (W, b) pairs, one per layer of {self.name}"
            )
        with torch.no_grad():
            for i, ((kind, w, b), pair) in enumerate(zip(slots, layers, strict=True)):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ArgumentError(f"layers[{i}]", pair, "give a (W, b) pair")
                W = _weight_tensor(pair[0], f"layers[{i}][0]", w.dtype)
                bias = pair[1]
                bt = (
                    None
                    if bias is None
                    else _weight_tensor(bias, f"layers[{i}][1]", w.dtype).reshape(-1)
                )
                expected: tuple[int, ...]
                if kind == "folded":
                    if bt is None:
                        bt = torch.zeros(W.shape[-1], dtype=w.dtype)
                    new_w = torch.cat([W, bt.reshape(1, -1)]) if W.ndim == 2 else W
                    expected = (w.shape[0] - 1, w.shape[1])
                elif kind == "out_in":
                    new_w, expected = W.t() if W.ndim == 2 else W, (w.shape[1], w.shape[0])
                else:
                    new_w, expected = W, tuple(w.shape)
                if tuple(W.shape) != expected:
                    raise ArgumentError(
                        f"layers[{i}]",
                        tuple(W.shape),
                        f"W of layer {i} must have shape {expected} (in, out)",
                    )
                want_b = b is not None or kind == "folded"
                if bt is not None and want_b and bt.numel() != expected[1]:
                    raise ArgumentError(
                        f"layers[{i}]",
                        tuple(bt.shape),
                        f"b of layer {i} must have {expected[1]} entries",
                    )
                if bt is not None and not want_b and bool((bt != 0).any()):
                    raise ArgumentError(
                        f"layers[{i}]", "bias", f"layer {i} of {self.name} has no bias; pass None"
                    )
                w.copy_(new_w)
                if b is not None:
                    b.copy_((bt if bt is not None else torch.zeros(expected[1])).reshape(b.shape))
        return model

    # -- training hooks

    def numpy_program(self, model: nn.Module) -> Any:
        """The NumPy program working on ``model``'s weights in place (update='numpy')."""
        if self.numpy_fn is None:
            raise ArgumentError(
                "preset", self.name, "only two-layer-numpy and scratch-784-250-10 train in NumPy"
            )
        return self.numpy_fn(model)

    @property
    def lr(self) -> float:
        return float(self.hyper["lr"])


# ------------------------------------------------------------------------ the registry

# name → preset, in table order; filled once at import by `register` (table.py's last line)
_REGISTRY: dict[str, Preset] = {}


def register(*declared: Preset) -> None:
    """Enter presets into the registry; a name may be entered once."""
    for p in declared:
        if not isinstance(p, Preset):
            raise ArgumentError("preset", p, "give Preset(...) declarations")
        if p.name in _REGISTRY:
            raise ArgumentError("preset", p.name, "a preset of this name exists; pick another")
        _REGISTRY[p.name] = p


def presets() -> dict[str, Preset]:
    """Every seed program by name (a new dict each call; the presets themselves are frozen)."""
    return dict(_REGISTRY)


def get_preset(name: str | Preset) -> Preset:
    """The preset called ``name``; an unknown name raises with the closest names."""
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str):
        raise ArgumentError("preset", name, "give a preset name such as 'quadrant-sgd'")
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, tuple(_REGISTRY), n=3, cutoff=0.4)
    hint = (
        ("did you mean " + " or ".join(repr(c) for c in close) + "?")
        if close
        else ("known presets: " + ", ".join(tuple(_REGISTRY)))
    )
    raise ArgumentError("preset", name, f"no such preset; {hint}")


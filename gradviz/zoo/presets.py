"""The 21 seed programs as presets: each builds its network, makes its data and trains its own way.

Every preset's `build` returns an ``nn.Module`` so it can be traced, also for programs
the tutorials write as loose tensors or NumPy arrays: those are wrapped in a module that
holds the very same parameters (the NumPy programs update them in place through shared
memory). Weights are drawn from private ``torch.Generator``s, never the global RNG, and
where a tutorial seeds its program the preset draws in the tutorial's order, so seed 0
gives the tutorial's numbers (the quadrant net reaches its 0.955).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train import data as gdata
from gradviz.train.builder import build_network, init_parameters, on_meta, spec_to_text
from gradviz.zoo.examples import Net
from gradviz.zoo.seednets import NeuralNetWork, TwoLayerNumpy

__all__ = [
    "Preset",
    "presets",
    "get_preset",
    "PRESET_NAMES",
    "UPDATE_STYLES",
    "MyReLU",
    "numpy_vs_autograd",
    "seeded_global_rng",
    "trace_preset",
    "quadrant_loss",
    "sum_squared_error",
    "half_sum_squared_error",
    "categorical_crossentropy",
    "mean_squared_error",
]

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


# ------------------------------------------------------------------------------- losses


def quadrant_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 002: Σ over samples and classes of −t·log p − (1−t)·log(1−p), over the sample count."""
    E = pred.shape[0]
    return (-target * torch.log(pred) - (1 - target) * torch.log(1 - pred)).sum() / E


def sum_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 003 (tensors/autograd): (y_pred − y).pow(2).sum()."""
    return (pred - target).pow(2).sum()


def half_sum_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 004 from scratch: ½·Σ(targets − outputs)², summed over the batch too."""
    return 0.5 * (target - pred).pow(2).sum()


def categorical_crossentropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras' categorical cross-entropy on softmax outputs: −Σ t·log p, batch mean.

    Keras clips the probabilities to [1e-7, 1 − 1e-7] before the log; so does this.
    """
    return -(target * torch.log(pred.clamp(1e-7, 1 - 1e-7))).sum(dim=1).mean()


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 004 TF regression: reduce_mean(square(y − prediction))."""
    return (target - pred).square().mean()


_mse_sum = nn.MSELoss(reduction="sum")  # seed 003 nn/optim/module/dynamic: loss_fn


def _mse_mean(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


# ----------------------------------------------------------------------- seed 000 models


class SingleNeuron(nn.Module):
    """Seed 000: one unit, y = σ(Σ wᵢxᵢ + b) = σ(x·w + b)."""

    def __init__(self, n_in: int = 2, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(n_in, 1, generator=generator))
        self.bias = nn.Parameter(torch.randn(1, 1, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.mm(x, self.weights) + self.bias)


class TwoLayerSigmoid(nn.Module):
    """Seed 000: two stacked layers, y = f₂(f₁(x·W₁)·W₂) with sigmoids and no biases."""

    def __init__(
        self,
        n_in: int = 3,
        n_hidden: int = 2,
        n_out: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(n_in, n_hidden, generator=generator))
        self.W2 = nn.Parameter(torch.randn(n_hidden, n_out, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.mm(torch.sigmoid(torch.mm(x, self.W1)), self.W2))


# ----------------------------------------------------------------------- seed 001 model


# Net (seed 001's CNN, its class name kept) lives in examples.py; one definition serves both.


# ----------------------------------------------------------------------- seed 002 models


def _ones_column(X: torch.Tensor) -> torch.Tensor:
    # the tutorial's torch.ones(X.shape[0], 1), in X's dtype so float64 checks stay float64
    return torch.ones(X.shape[0], 1, dtype=X.dtype)


class QuadrantParams(nn.Module):
    """Seed 002 (1) and (2): six loose Parameters W1, b1, W2, b2, W3, b3 and forward()."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        g = generator
        # drawn in the tutorial's order after torch.manual_seed(0): W1, b1, W2, b2, W3, b3
        self.W1 = nn.Parameter(torch.randn(2, 3, generator=g) * 0.01)
        self.b1 = nn.Parameter(torch.randn(1, 3, generator=g) * 0.01)
        self.W2 = nn.Parameter(torch.randn(3, 3, generator=g) * 0.01)
        self.b2 = nn.Parameter(torch.randn(1, 3, generator=g) * 0.01)
        self.W3 = nn.Parameter(torch.randn(3, 4, generator=g) * 0.01)
        self.b3 = nn.Parameter(torch.randn(1, 4, generator=g) * 0.01)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        A0 = X
        Z1 = torch.matmul(A0, self.W1) + self.b1
        A1 = torch.sigmoid(Z1)
        Z2 = torch.matmul(A1, self.W2) + self.b2
        A2 = torch.sigmoid(Z2)
        Z3 = torch.matmul(A2, self.W3) + self.b3
        A3 = torch.sigmoid(Z3)
        return A3


class FoldedBiasNet(nn.Module):
    """Seed 002 (3): the bias folded into W by appending a column of ones to the input."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        g = generator
        self.W1 = nn.Parameter(torch.randn(2 + 1, 3, generator=g) * 0.01)
        self.W2 = nn.Parameter(torch.randn(3 + 1, 3, generator=g) * 0.01)
        self.W3 = nn.Parameter(torch.randn(3 + 1, 4, generator=g) * 0.01)

    def act(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(X)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        A0 = torch.hstack([X, _ones_column(X)])
        A1 = self.act(torch.matmul(A0, self.W1))
        A1 = torch.hstack([A1, _ones_column(A1)])
        A2 = self.act(torch.matmul(A1, self.W2))
        A2 = torch.hstack([A2, _ones_column(A2)])
        return self.act(torch.matmul(A2, self.W3))


class weightedsum(nn.Module):  # the tutorial's lower-case name, shown in graphs
    """Seed 002 (4): a reusable weighted-sum layer, [X 1]·W."""

    def __init__(self, N_in: int, N_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(N_in + 1, N_out, generator=generator) * 0.01)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X_extend = torch.hstack([X, _ones_column(X)])
        return torch.matmul(X_extend, self.W)


class WeightedSumNet(nn.Module):
    """Seed 002 (4): three weightedsum layers MAC1..MAC3, each followed by a sigmoid."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.MAC1 = weightedsum(2, 3, generator)
        self.MAC2 = weightedsum(3, 3, generator)
        self.MAC3 = weightedsum(3, 4, generator)

    def act(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(X)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        A1 = self.act(self.MAC1(X))
        A2 = self.act(self.MAC2(A1))
        return self.act(self.MAC3(A2))


class MyLayer(nn.Module):
    """Seed 002 (5): weighted sum and sigmoid in one layer."""

    def __init__(self, N_in: int, N_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(N_in + 1, N_out, generator=generator) * 0.01)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X_extend = torch.hstack([X, _ones_column(X)])
        Z = torch.matmul(X_extend, self.W)
        return torch.sigmoid(Z)


class SoftmaxNet(nn.Module):
    """Seed 002 (5): three MyLayers, the output passed through softmax(dim=1)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.layer1 = MyLayer(2, 3, generator)
        self.layer2 = MyLayer(3, 3, generator)
        self.layer3 = MyLayer(3, 4, generator)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        A1 = self.layer1(X)
        A2 = self.layer2(A1)
        A3 = self.layer3(A2)
        return torch.nn.functional.softmax(A3, dim=1)


class TopologyNet(nn.Module):
    """Seed 002: an nn.Sequential of MyLayers built from a topology list with add_module."""

    def __init__(self, topology: Sequence[int], generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.model = torch.nn.Sequential()
        for i in range(len(topology) - 1):
            self.model.add_module(f"{i}-th layer", MyLayer(topology[i], topology[i + 1], generator))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.model(X)


def _linear_sigmoid_net(generator: torch.Generator, topology: Sequence[int]) -> nn.Sequential:
    """Seed 002's last form: Linear + Sigmoid pairs added to an nn.Sequential in a loop."""

    def make() -> nn.Sequential:
        net = torch.nn.Sequential()
        for i in range(len(topology) - 1):
            net.add_module(f"{i}-th MAC", torch.nn.Linear(topology[i], topology[i + 1]))
            net.add_module(f"{i}-th ACT", torch.nn.Sigmoid())
        return net

    net = on_meta(make)
    with torch.no_grad():  # nn.Linear's own init, from the private generator
        for module in net:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return net


def _check_topology(topology: Any) -> list[int]:
    ok = (
        isinstance(topology, (list, tuple))
        and len(topology) >= 2
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in topology)
    )
    if not ok or topology[0] != 2 or topology[-1] != 4:
        raise ArgumentError(
            "topology",
            topology,
            "give layer sizes from 2 inputs to 4 classes, e.g. [2, 10, 4] or [2, 3, 3, 4]",
        )
    return list(topology)


# ----------------------------------------------------------------------- seed 003 models


class MyReLU(torch.autograd.Function):
    """Seed 003's custom autograd Function: ReLU with a hand-written backward."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input)
        return input.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (input,) = ctx.saved_tensors
        grad_input = grad_output.clone()
        grad_input[input < 0] = 0
        return grad_input


class LooseTwoLayer(nn.Module):
    """Seed 003's w1, w2 (no biases) held as Parameters: y_pred = x.mm(w1).clamp(min=0).mm(w2).

    The NumPy, tensor and autograd programs all compute this function; they differ in who
    computes the gradient (NumPy by hand, tensors by hand, autograd).
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        self.w1 = nn.Parameter(w1)
        self.w2 = nn.Parameter(w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mm(self.w1).clamp(min=0).mm(self.w2)


class MyReLUTwoLayer(LooseTwoLayer):
    """Seed 003: the same net with ReLU as the custom Function: relu(x.mm(w1)).mm(w2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = MyReLU.apply
        return relu(x.mm(self.w1)).mm(self.w2)


class TwoLayerNet(nn.Module):
    """Seed 003's custom Module: linear1, clamp(min=0), linear2."""

    def __init__(self, D_in: int, H: int, D_out: int) -> None:
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.linear1(x).clamp(min=0)
        return self.linear2(h_relu)


class DynamicNet(nn.Module):
    """Seed 003: middle_linear is reused a random 0–3 times per forward (weight sharing).

    The draw comes from the module's own ``random.Random`` (the tutorial uses the global
    ``random``), seeded at build, so a run replays and a checkpoint carries its state.
    Set ``fixed_depth`` to pin the number of reuses; ``last_depth`` tells the last one.
    """

    def __init__(self, D_in: int, H: int, D_out: int, seed: int = 0) -> None:
        super().__init__()
        self.input_linear = torch.nn.Linear(D_in, H)
        self.middle_linear = torch.nn.Linear(H, H)
        self.output_linear = torch.nn.Linear(H, D_out)
        self.rng = random.Random(seed)
        self.fixed_depth: int | None = None
        self.last_depth: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.input_linear(x).clamp(min=0)
        depth = self.rng.randint(0, 3) if self.fixed_depth is None else self.fixed_depth
        self.last_depth = depth
        for _ in range(depth):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        return self.output_linear(h_relu)

    def get_extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and "rng" in state:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------- seed 004 models


class ScratchNet(nn.Module):
    """Seed 004's NeuralNetWork as a module: wih (hidden×input), who (output×hidden), no biases.

    float64, like the NumPy program; ``forward`` takes rows of inputs (the NumPy code takes
    columns): outputs = σ(σ(x·wihᵀ)·whoᵀ).
    """

    def __init__(
        self,
        input_nodes: int = 784,
        hidden_nodes: int = 250,
        output_nodes: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        g = generator
        # np.random.normal(0, pow(n, -0.5)) draws with standard deviation n^−½
        self.wih = nn.Parameter(
            torch.randn(hidden_nodes, input_nodes, generator=g, dtype=torch.float64)
            * hidden_nodes**-0.5
        )
        self.who = nn.Parameter(
            torch.randn(output_nodes, hidden_nodes, generator=g, dtype=torch.float64)
            * output_nodes**-0.5
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden_outputs = torch.sigmoid(x.mm(self.wih.t()))
        return torch.sigmoid(hidden_outputs.mm(self.who.t()))


# ------------------------------------------------------------------------ weight layouts

# How a module's parameters map to the common layout [(W, b), ...] with W (in × out) as in
# X·W + b: ("in_out", W, b) direct, ("out_in", W, b) transposed (nn.Linear), ("folded", W)
# with the bias as W's last row (seed 002's column of ones).
_Slot = tuple[str, nn.Parameter, nn.Parameter | None]


def _slots_quadrant_params(m: QuadrantParams) -> list[_Slot]:
    return [("in_out", m.W1, m.b1), ("in_out", m.W2, m.b2), ("in_out", m.W3, m.b3)]


def _slots_folded(m: FoldedBiasNet) -> list[_Slot]:
    return [("folded", m.W1, None), ("folded", m.W2, None), ("folded", m.W3, None)]


def _slots_weighted(m: WeightedSumNet) -> list[_Slot]:
    return [("folded", m.MAC1.W, None), ("folded", m.MAC2.W, None), ("folded", m.MAC3.W, None)]


def _slots_softmax(m: SoftmaxNet) -> list[_Slot]:
    return [
        ("folded", m.layer1.W, None),
        ("folded", m.layer2.W, None),
        ("folded", m.layer3.W, None),
    ]


def _slots_topology(m: TopologyNet) -> list[_Slot]:
    return [("folded", layer.W, None) for layer in m.model]


def _slots_linears(m: nn.Module) -> list[_Slot]:
    return [("out_in", mod.weight, mod.bias) for mod in m.modules() if isinstance(mod, nn.Linear)]


def _slots_loose(m: LooseTwoLayer) -> list[_Slot]:
    return [("in_out", m.w1, None), ("in_out", m.w2, None)]


def _slots_scratch(m: ScratchNet) -> list[_Slot]:
    return [("out_in", m.wih, None), ("out_in", m.who, None)]


def _slots_single(m: SingleNeuron) -> list[_Slot]:
    return [("in_out", m.weights, m.bias)]


def _slots_two_sigmoid(m: TwoLayerSigmoid) -> list[_Slot]:
    return [("in_out", m.W1, None), ("in_out", m.W2, None)]


# ------------------------------------------------------------------------- manual steps


def _tensors_manual_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Seed 003 'PyTorch: Tensors': forward and backward by hand, no autograd."""
    with torch.no_grad():
        w1, w2 = model.w1, model.w2
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum().item()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    return loss


def _numpy_view(p: torch.Tensor) -> np.ndarray:
    # shares memory with the parameter (seed 000: from_numpy/.numpy() share storage), so
    # the NumPy program's in-place updates are the module's updates
    return p.detach().numpy()


def _two_layer_numpy_program(model: nn.Module) -> TwoLayerNumpy:
    return TwoLayerNumpy(_numpy_view(model.w1), _numpy_view(model.w2))


def _scratch_numpy_program(model: nn.Module) -> NeuralNetWork:
    wih, who = _numpy_view(model.wih), _numpy_view(model.who)
    return NeuralNetWork(wih.shape[1], wih.shape[0], who.shape[0], 0.1, wih=wih, who=who)


# ------------------------------------------------------------------------------ Preset


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
    weight_slots: Callable[[nn.Module], list[_Slot]] | None = field(default=None, repr=False)
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
        """This program's loss for ``batch`` = ``(X, y)`` or a `TrainData`, as a tensor with a graph."""
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

    def _slots(self, model: nn.Module) -> list[_Slot]:
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


def _seed003_generator(seed: int) -> torch.Generator:
    """The tutorial draws x, y first and the weights after, from one stream; so do we."""
    g = torch.Generator().manual_seed(seed)
    torch.randn(64, 1000, generator=g)
    torch.randn(64, 10, generator=g)
    return g


def _seed003_linear_init(model: nn.Module, g: torch.Generator) -> nn.Module:
    # nn.Linear's reset_parameters, in construction order, from the tutorial's stream
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return model


def _loose(seed: int, cls: type[LooseTwoLayer], dtype: torch.dtype) -> LooseTwoLayer:
    g = _seed003_generator(seed)
    w1 = torch.randn(1000, 100, generator=g)
    w2 = torch.randn(100, 10, generator=g)
    return cls(w1.to(dtype), w2.to(dtype))


def _keras_model(g: torch.Generator, seed: int) -> nn.Module:
    net = build_network(_KERAS_SPEC, seed=seed)
    with torch.no_grad():  # Keras' defaults: glorot_uniform kernels, zero biases
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=g)
                m.bias.zero_()
    return net


def _regression_model(g: torch.Generator, seed: int) -> nn.Module:
    net = build_network("1-10-1 tanh", seed=seed)
    with torch.no_grad():  # tf.random_normal weights, tf.zeros biases
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0, generator=g)
                m.bias.zero_()
    return net


def _cnn_model(g: torch.Generator, seed: int) -> nn.Module:
    return init_parameters(on_meta(Net), seed)


_KERAS_SPEC = [
    {"type": "Linear", "in_features": 784, "out_features": 512},
    {"type": "ReLU"},
    {"type": "Linear", "out_features": 10},
    {"type": "Softmax", "dim": 1},
]
_CNN_SPEC = [
    {"type": "Conv2d", "out_channels": 10, "kernel_size": 5},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "ReLU"},
    {"type": "Conv2d", "out_channels": 20, "kernel_size": 5},
    {"type": "Dropout2d"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "ReLU"},
    {"type": "Flatten"},
    {"type": "Linear", "out_features": 50},
    {"type": "ReLU"},
    {"type": "Dropout"},
    {"type": "Linear", "out_features": 10},
    {"type": "LogSoftmax", "dim": 1},
]
_NN_SPEC = "Linear(in_features=1000, out_features=100) -> ReLU -> Linear(out_features=10)"


def _nn_sequential() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1000, 100), nn.ReLU(), nn.Linear(100, 10))


def _topology_option(options: dict[str, Any]) -> list[int]:
    topology = _check_topology(options.pop("topology", [2, 3, 3, 4]))
    if options:
        raise ArgumentError(next(iter(options)), options, "the only build option is topology")
    return topology


def _no_options(options: dict[str, Any]) -> None:
    if options:
        raise ArgumentError(
            next(iter(options)), options[next(iter(options))], "this preset's build takes only seed"
        )


def _mk(fn: Callable[[torch.Generator, int], nn.Module]) -> Callable[..., nn.Module]:
    def make(g: torch.Generator, seed: int, **options: Any) -> nn.Module:
        _no_options(options)
        return fn(g, seed)

    return make


def _mk_topology(fn: Callable[[torch.Generator, list[int]], nn.Module]) -> Callable[..., nn.Module]:
    def make(g: torch.Generator, seed: int, **options: Any) -> nn.Module:
        return fn(g, _topology_option(dict(options)))

    return make


def _random64(seed: int) -> gdata.TrainData:
    return gdata.random_regression(seed).to(torch.float64)


def _make_presets() -> dict[str, Preset]:
    sgd = "sgd"
    quadrant_common: dict[str, Any] = dict(
        seed_program="002",
        task="classification",
        loss=quadrant_loss,
        loss_name="Σ −t·log p − (1−t)·log(1−p) / N",
        make_data=gdata.quadrants,
        steps=10_000,
        tutorial=MappingProxyType({"accuracy": 0.955}),
        input_shape=(2,),
        spec="2-3-3-4 sigmoid",
    )
    seed003: dict[str, Any] = dict(
        seed_program="003",
        task="random-regression",
        make_data=gdata.random_regression,
        steps=500,
        input_shape=(1000,),
        loss_reduction="sum",
    )
    mse_sum_name = "MSELoss(reduction='sum')"
    hyper = MappingProxyType
    items = [
        Preset(
            name="single-neuron",
            description="Seed 000: a single sigmoid unit y = σ(Σ wᵢxᵢ + b), the smallest graph",
            seed_program="000",
            task="regression",
            loss=_mse_mean,
            loss_name="MSE (mean)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 1.0}),
            make_model=_mk(lambda g, s: SingleNeuron(2, g)),
            make_data=lambda s: gdata.neuron_data(s, n_in=2),
            steps=500,
            input_shape=(2,),
            weight_slots=_slots_single,
        ),
        Preset(
            name="two-layer-sigmoid",
            description="Seed 000: two stacked sigmoid layers y = f₂(f₁(x·W₁)·W₂), no biases",
            seed_program="000",
            task="regression",
            loss=_mse_mean,
            loss_name="MSE (mean)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 1.0}),
            make_model=_mk(lambda g, s: TwoLayerSigmoid(3, 2, 1, g)),
            make_data=lambda s: gdata.neuron_data(s, n_in=3),
            steps=1000,
            input_shape=(3,),
            spec="3-2-1 sigmoid nobias",
            weight_slots=_slots_two_sigmoid,
        ),
        Preset(
            name="mnist-cnn",
            description="Seed 001: MNIST CNN (conv1, conv2 + Dropout2d, fc1, fc2, log_softmax) "
            "with nll_loss, SGD lr 0.01 momentum 0.5, test loop and checkpoints",
            seed_program="001",
            task="classification",
            loss=F.nll_loss,
            loss_name="nll_loss",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.01, "momentum": 0.5}),
            make_model=_mk(_cnn_model),
            make_data=lambda s: gdata.shipped_digits("cnn"),
            epochs=3,
            batch_size=64,
            test_batch_size=1000,
            input_shape=(1, 28, 28),
            spec=spec_to_text(_CNN_SPEC),
            digit_layout="cnn",
            tutorial=MappingProxyType({"seed": 1, "mean": 0.1307, "std": 0.3081}),
        ),
        Preset(
            name="quadrant-params",
            description="Seed 002 (1): 2-3-3-4 sigmoid net as six loose Parameters, updated "
            "by hand through .data and grad.zero_()",
            update="manual-data",
            optimizer=None,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk(lambda g, s: QuadrantParams(g)),
            weight_slots=_slots_quadrant_params,
            **quadrant_common,
        ),
        Preset(
            name="quadrant-sgd",
            description="Seed 002 (2): the same loose Parameters trained with torch.optim.SGD "
            "lr 0.5, 10 000 full-batch steps (tutorial accuracy 0.955)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk(lambda g, s: QuadrantParams(g)),
            weight_slots=_slots_quadrant_params,
            **quadrant_common,
        ),
        Preset(
            name="quadrant-folded-bias",
            description="Seed 002 (3): an nn.Module with each bias folded into W as an extra "
            "row, fed by a column of ones",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk(lambda g, s: FoldedBiasNet(g)),
            weight_slots=_slots_folded,
            **quadrant_common,
        ),
        Preset(
            name="quadrant-weighted-sum",
            description="Seed 002 (4): a reusable 'weightedsum' layer module (MAC1..MAC3) "
            "with a sigmoid after each",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk(lambda g, s: WeightedSumNet(g)),
            weight_slots=_slots_weighted,
            **quadrant_common,
        ),
        Preset(
            name="quadrant-softmax",
            description="Seed 002 (5): MyLayer with the sigmoid built in, output passed "
            "through softmax(dim=1) (a different function: see get_weights)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk(lambda g, s: SoftmaxNet(g)),
            weight_slots=_slots_softmax,
            **{
                **quadrant_common,
                "tutorial": MappingProxyType({}),
                "spec": spec_to_text(
                    [
                        {"type": "Linear", "in_features": 2, "out_features": 3},
                        {"type": "Sigmoid"},
                        {"type": "Linear", "out_features": 3},
                        {"type": "Sigmoid"},
                        {"type": "Linear", "out_features": 4},
                        {"type": "Sigmoid"},
                        {"type": "Softmax", "dim": 1},
                    ]
                ),
            },
        ),
        Preset(
            name="quadrant-sequential",
            description="Seed 002: nn.Sequential of MyLayers built from a topology list with "
            "add_module (build(topology=[2, 10, 4]) for the tutorial's run)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk_topology(lambda g, t: TopologyNet(t, g)),
            weight_slots=_slots_topology,
            **quadrant_common,
        ),
        Preset(
            name="quadrant-linear-sigmoid",
            description="Seed 002: nn.Sequential of nn.Linear + nn.Sigmoid pairs added in a "
            "loop (nn.Linear's default init)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.5}),
            make_model=_mk_topology(_linear_sigmoid_net),
            weight_slots=_slots_linears,
            **quadrant_common,
        ),
        Preset(
            name="two-layer-numpy",
            description="Seed 003: two-layer ReLU net in plain NumPy, forward and backward "
            "derived by hand (1000-100-10, no biases, lr 1e-6)",
            loss=sum_squared_error,
            loss_name="Σ(y_pred − y)²",
            update="numpy",
            optimizer=None,
            hyper=hyper({"lr": 1e-6}),
            make_model=_mk(lambda g, s: _loose(s, LooseTwoLayer, torch.float64)),
            weight_slots=_slots_loose,
            numpy_fn=_two_layer_numpy_program,
            **{**seed003, "make_data": _random64},
        ),
        Preset(
            name="two-layer-tensors",
            description="Seed 003: the same net with torch tensors and a hand-written backward "
            "(no autograd)",
            loss=sum_squared_error,
            loss_name="Σ(y_pred − y)²",
            update="manual-backward",
            optimizer=None,
            hyper=hyper({"lr": 1e-6}),
            make_model=_mk(lambda g, s: _loose(s, LooseTwoLayer, torch.float32)),
            weight_slots=_slots_loose,
            manual_step_fn=_tensors_manual_step,
            **seed003,
        ),
        Preset(
            name="two-layer-autograd",
            description="Seed 003: the same net with autograd: x.mm(w1).clamp(min=0).mm(w2), "
            "weights updated under torch.no_grad()",
            loss=sum_squared_error,
            loss_name="Σ(y_pred − y)²",
            update="manual-no_grad",
            optimizer=None,
            hyper=hyper({"lr": 1e-6}),
            make_model=_mk(lambda g, s: _loose(s, LooseTwoLayer, torch.float32)),
            weight_slots=_slots_loose,
            **seed003,
        ),
        Preset(
            name="two-layer-myrelu",
            description="Seed 003: two-layer net with a custom autograd Function MyReLU",
            loss=sum_squared_error,
            loss_name="Σ(y_pred − y)²",
            update="manual-no_grad",
            optimizer=None,
            hyper=hyper({"lr": 1e-6}),
            make_model=_mk(lambda g, s: _loose(s, MyReLUTwoLayer, torch.float32)),
            weight_slots=_slots_loose,
            **seed003,
        ),
        Preset(
            name="two-layer-nn",
            description="Seed 003: nn.Sequential(Linear, ReLU, Linear) with "
            "MSELoss(reduction='sum'), parameters updated by hand under no_grad",
            loss=_mse_sum,
            loss_name=mse_sum_name,
            update="manual-no_grad",
            optimizer=None,
            hyper=hyper({"lr": 1e-4}),
            make_model=_mk(
                lambda g, s: _seed003_linear_init(on_meta(_nn_sequential), _seed003_generator(s))
            ),
            weight_slots=_slots_linears,
            spec=_NN_SPEC,
            **seed003,
        ),
        Preset(
            name="two-layer-adam",
            description="Seed 003: the nn.Sequential net trained with torch.optim.Adam lr 1e-4",
            loss=_mse_sum,
            loss_name=mse_sum_name,
            update="optimizer",
            optimizer="adam",
            hyper=hyper({"lr": 1e-4}),
            make_model=_mk(
                lambda g, s: _seed003_linear_init(on_meta(_nn_sequential), _seed003_generator(s))
            ),
            weight_slots=_slots_linears,
            spec=_NN_SPEC,
            **seed003,
        ),
        Preset(
            name="two-layer-module",
            description="Seed 003: custom nn.Module TwoLayerNet (linear1, clamp, linear2), SGD "
            "lr 1e-4",
            loss=_mse_sum,
            loss_name=mse_sum_name,
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 1e-4}),
            make_model=_mk(
                lambda g, s: _seed003_linear_init(
                    on_meta(lambda: TwoLayerNet(1000, 100, 10)), _seed003_generator(s)
                )
            ),
            weight_slots=_slots_linears,
            spec=_NN_SPEC,
            **seed003,
        ),
        Preset(
            name="dynamic-net",
            description="Seed 003: DynamicNet reuses middle_linear a random 0–3 times per "
            "forward (control flow + weight sharing), SGD lr 1e-4 momentum 0.9",
            loss=_mse_sum,
            loss_name=mse_sum_name,
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 1e-4, "momentum": 0.9}),
            make_model=_mk(
                lambda g, s: _seed003_linear_init(
                    on_meta(lambda: DynamicNet(1000, 100, 10, s)), _seed003_generator(s)
                )
            ),
            **seed003,
        ),
        Preset(
            name="scratch-784-250-10",
            description="Seed 004: NeuralNetWork written from scratch in NumPy, 784-250-10 "
            "sigmoid, no biases, one sample at a time, lr 0.1, 5 epochs",
            seed_program="004",
            task="classification",
            loss=half_sum_squared_error,
            loss_name="½·Σ(targets − outputs)²",
            update="numpy",
            optimizer=None,
            hyper=hyper({"lr": 0.1}),
            make_model=_mk(lambda g, s: ScratchNet(784, 250, 10, g)),
            make_data=lambda s: gdata.shipped_digits("scratch"),
            epochs=5,
            batch_size=1,
            shuffle=False,
            loss_reduction="sum",
            input_shape=(784,),
            spec="784-250-10 sigmoid nobias",
            digit_layout="scratch",
            weight_slots=_slots_scratch,
            numpy_fn=_scratch_numpy_program,
            tutorial=MappingProxyType({"performance on 10 test images": 0.7}),
        ),
        Preset(
            name="keras-dense-512",
            description="Seed 004 (Keras): Dense(512, relu) → Dense(10, softmax), RMSprop, "
            "categorical cross-entropy, 5 epochs, batch 128",
            seed_program="004",
            task="classification",
            loss=categorical_crossentropy,
            loss_name="categorical cross-entropy",
            update="optimizer",
            optimizer="rmsprop",
            # Keras RMSprop defaults: learning_rate 0.001, rho 0.9, epsilon 1e-7
            hyper=hyper({"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
            make_model=_mk(_keras_model),
            make_data=lambda s: gdata.shipped_digits("keras"),
            epochs=5,
            batch_size=128,
            test_batch_size=1000,
            input_shape=(784,),
            spec=spec_to_text(_KERAS_SPEC),
            digit_layout="keras",
            weight_slots=_slots_linears,
            tutorial=MappingProxyType({"test_accuracy": 0.979}),
        ),
        Preset(
            name="regression-1-10-1",
            description="Seed 004 (TensorFlow): 1-10-1 tanh net fitting y = x² + noise, MSE, "
            "gradient descent lr 0.1, 2000 steps",
            seed_program="004",
            task="regression",
            loss=mean_squared_error,
            loss_name="mean((y − prediction)²)",
            update="optimizer",
            optimizer=sgd,
            hyper=hyper({"lr": 0.1}),
            make_model=_mk(_regression_model),
            make_data=gdata.regression_points,
            steps=2000,
            input_shape=(1,),
            spec="1-10-1 tanh",
            weight_slots=_slots_linears,
        ),
    ]
    return {p.name: p for p in items}


_PRESETS = _make_presets()
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def presets() -> dict[str, Preset]:
    """Every seed program by name (a new dict each call; the presets themselves are frozen)."""
    return dict(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises with the closest names."""
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str):
        raise ArgumentError("preset", name, "give a preset name such as 'quadrant-sgd'")
    if name in _PRESETS:
        return _PRESETS[name]
    close = difflib.get_close_matches(name, PRESET_NAMES, n=3, cutoff=0.4)
    hint = (
        ("did you mean " + " or ".join(repr(c) for c in close) + "?")
        if close
        else ("known presets: " + ", ".join(PRESET_NAMES))
    )
    raise ArgumentError("preset", name, f"no such preset; {hint}")


def trace_preset(name: str, seed: int = 0) -> Any:
    """The autograd graph (a frozen `Graph`) of preset ``name``'s loss on a small batch."""
    from gradviz.zoo.sources import trace_source

    get_preset(name)
    return trace_source(f"preset:{name}", seed)


# ------------------------------------------------------------- NumPy next to autograd


def numpy_vs_autograd(
    name: str, seed: int = 0, sample: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The NumPy program's numbers beside autograd's, per weight: ``{key: (numpy, autograd)}``.

    * ``two-layer-numpy``: ``w1``, ``w2``: the hand-derived gradients of Σ(y_pred − y)²
      and autograd's. They agree.
    * ``scratch-784-250-10``: the weight change of one ``NeuralNetWork.train`` call on
      sample ``sample`` beside −lr × autograd's gradient of ½·Σ(targets − outputs)².
      ``who`` agrees. ``wih`` does not: the tutorial sends the raw output errors back
      through who and skips the output sigmoid's derivative o·(1−o) (see
      `NeuralNetWork`). ``wih_tutorial_rule`` shows what the update is instead: −lr ×
      autograd's gradient with the output sigmoid's backward replaced by the identity
      (straight-through); that pair agrees.

    Both sides run in float64 from the preset's initial weights for ``seed``.
    """
    preset = get_preset(name)
    model = preset.build(seed)
    d = preset.data(seed)
    if preset.name == "two-layer-numpy":
        x, y = d.X.numpy(), d.y.numpy()
        prog = TwoLayerNumpy(model.w1.detach().numpy().copy(), model.w2.detach().numpy().copy())
        _, g1, g2 = prog.gradients(x, y)
        loss = preset.forward_loss(model, (d.X, d.y))
        loss.backward()
        return {"w1": (g1, model.w1.grad.numpy().copy()), "w2": (g2, model.w2.grad.numpy().copy())}
    if preset.name == "scratch-784-250-10":
        if not isinstance(sample, int) or isinstance(sample, bool) or not 0 <= sample < d.n:
            raise ArgumentError("sample", sample, f"use a sample index from 0 to {d.n - 1}")
        lr = preset.lr
        x, t = d.X[sample : sample + 1], d.y[sample : sample + 1]
        wih0, who0 = model.wih.detach().numpy().copy(), model.who.detach().numpy().copy()
        net = NeuralNetWork(784, 250, 10, lr, wih=wih0.copy(), who=who0.copy())
        net.train(x[0].numpy(), t[0].numpy())
        preset.forward_loss(model, (x, t)).backward()
        # the tutorial's rule for wih: the output sigmoid passes gradients straight through
        wih = model.wih.detach().clone().requires_grad_()
        z = torch.sigmoid(x.mm(wih.t())).mm(model.who.detach().t())
        o = z + (torch.sigmoid(z) - z).detach()
        half_sum_squared_error(o, t).backward()
        return {
            "who": (net.who - who0, -lr * model.who.grad.numpy()),
            "wih": (net.wih - wih0, -lr * model.wih.grad.numpy()),
            "wih_tutorial_rule": (net.wih - wih0, -lr * wih.grad.numpy()),
        }
    raise ArgumentError("name", name, "use 'two-layer-numpy' or 'scratch-784-250-10'")

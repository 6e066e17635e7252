"""The seed programs' network classes, each with its NumPy reading registered beside it.

Every class is its tutorial's ``forward`` as written (names kept, since graphs show them);
`register_architecture` lists the same steps as NumPy layers, so `numpy_backprop` can
check the class. A new network class gets its entry here, right under the class.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gradviz.backward.netprop import (
    Clamp,
    FoldedLinear,
    Layer,
    Linear,
    MatMul,
    Sigmoid,
    Softmax,
    register_architecture,
)
from gradviz.errors import ArgumentError

# ----------------------------------------------------------------------- seed 000 models


class SingleNeuron(nn.Module):
    """Seed 000: one unit, y = σ(Σ wᵢxᵢ + b) = σ(x·w + b)."""

    def __init__(self, n_in: int = 2, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(n_in, 1, generator=generator))
        self.bias = nn.Parameter(torch.randn(1, 1, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.mm(x, self.weights) + self.bias)


register_architecture(SingleNeuron, lambda m: [MatMul(m.weights, m.bias), Sigmoid()])


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


register_architecture(
    TwoLayerSigmoid, lambda m: [MatMul(m.W1), Sigmoid(), MatMul(m.W2), Sigmoid()]
)


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


register_architecture(
    QuadrantParams,
    lambda m: [
        MatMul(m.W1, m.b1),
        Sigmoid(),
        MatMul(m.W2, m.b2),
        Sigmoid(),
        MatMul(m.W3, m.b3),
        Sigmoid(),
    ],
)


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


register_architecture(
    FoldedBiasNet,
    lambda m: [
        FoldedLinear(m.W1),
        Sigmoid(),
        FoldedLinear(m.W2),
        Sigmoid(),
        FoldedLinear(m.W3),
        Sigmoid(),
    ],
)


class weightedsum(nn.Module):  # the tutorial's lower-case name, shown in graphs
    """Seed 002 (4): a reusable weighted-sum layer, [X 1]·W."""

    def __init__(self, N_in: int, N_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(N_in + 1, N_out, generator=generator) * 0.01)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X_extend = torch.hstack([X, _ones_column(X)])
        return torch.matmul(X_extend, self.W)


register_architecture(weightedsum, lambda m: [FoldedLinear(m.W)])


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


register_architecture(
    WeightedSumNet, lambda m: [m.MAC1, Sigmoid(), m.MAC2, Sigmoid(), m.MAC3, Sigmoid()]
)


class MyLayer(nn.Module):
    """Seed 002 (5): weighted sum and sigmoid in one layer."""

    def __init__(self, N_in: int, N_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(N_in + 1, N_out, generator=generator) * 0.01)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X_extend = torch.hstack([X, _ones_column(X)])
        Z = torch.matmul(X_extend, self.W)
        return torch.sigmoid(Z)


register_architecture(MyLayer, lambda m: [FoldedLinear(m.W), Sigmoid()])


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


register_architecture(SoftmaxNet, lambda m: [m.layer1, m.layer2, m.layer3, Softmax(dim=1)])


class TopologyNet(nn.Module):
    """Seed 002: an nn.Sequential of MyLayers built from a topology list with add_module."""

    def __init__(self, topology: Sequence[int], generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.model = torch.nn.Sequential()
        for i in range(len(topology) - 1):
            self.model.add_module(f"{i}-th layer", MyLayer(topology[i], topology[i + 1], generator))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.model(X)


register_architecture(TopologyNet, lambda m: [m.model])


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


register_architecture(LooseTwoLayer, lambda m: [MatMul(m.w1), Clamp(min=0), MatMul(m.w2)])


class MyReLUTwoLayer(LooseTwoLayer):
    """Seed 003: the same net with ReLU as the custom Function: relu(x.mm(w1)).mm(w2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = MyReLU.apply
        return relu(x.mm(self.w1)).mm(self.w2)


# MyReLU is clamp(min=0), forward and backward
register_architecture(MyReLUTwoLayer, lambda m: [MatMul(m.w1), Clamp(min=0), MatMul(m.w2)])


class TwoLayerNet(nn.Module):
    """Seed 003's custom Module: linear1, clamp(min=0), linear2."""

    def __init__(self, D_in: int, H: int, D_out: int) -> None:
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.linear1(x).clamp(min=0)
        return self.linear2(h_relu)


register_architecture(TwoLayerNet, lambda m: [m.linear1, Clamp(min=0), m.linear2])


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


def _dynamic_layers(m: DynamicNet) -> list[Layer | nn.Module]:
    if m.fixed_depth is None:
        raise ArgumentError(
            "model",
            "DynamicNet with fixed_depth=None",
            "DynamicNet draws how often it reuses middle_linear on every forward; set "
            "model.fixed_depth = 0…3 so NumPy and torch run the same graph",
        )
    layers: list[Layer | nn.Module] = [m.input_linear, Clamp(min=0)]
    for _ in range(m.fixed_depth):
        layers += [m.middle_linear, Clamp(min=0)]  # one weight, used again each time
    return [*layers, m.output_linear]


register_architecture(DynamicNet, _dynamic_layers)


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


register_architecture(
    ScratchNet, lambda m: [Linear(m.wih), Sigmoid(), Linear(m.who), Sigmoid()]
)

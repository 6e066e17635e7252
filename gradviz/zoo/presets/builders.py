"""How the presets build their networks and hook into training: the parts `table` names.

Private generators only (never the global RNG), drawn in each tutorial's order so seed 0
gives the tutorial's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train import data as gdata
from gradviz.train.builder import build_network, init_parameters, on_meta
from gradviz.train.recipe import Slot
from gradviz.zoo.examples import Net
from gradviz.zoo.presets.models import (
    FoldedBiasNet,
    LooseTwoLayer,
    MyLayer,
    QuadrantParams,
    ScratchNet,
    SingleNeuron,
    SoftmaxNet,
    TopologyNet,
    TwoLayerSigmoid,
    WeightedSumNet,
)
from gradviz.zoo.seednets import NeuralNetWork, TwoLayerNumpy

# ------------------------------------------------------------------------ weight layouts

# each function lists a network's parameters as `Slot`s of the common (W, b) layout


def slots_quadrant_params(m: QuadrantParams) -> list[Slot]:
    return [("in_out", m.W1, m.b1), ("in_out", m.W2, m.b2), ("in_out", m.W3, m.b3)]


def slots_folded(m: FoldedBiasNet) -> list[Slot]:
    return [("folded", m.W1, None), ("folded", m.W2, None), ("folded", m.W3, None)]


def slots_weighted(m: WeightedSumNet) -> list[Slot]:
    return [("folded", m.MAC1.W, None), ("folded", m.MAC2.W, None), ("folded", m.MAC3.W, None)]


def slots_softmax(m: SoftmaxNet) -> list[Slot]:
    return [
        ("folded", m.layer1.W, None),
        ("folded", m.layer2.W, None),
        ("folded", m.layer3.W, None),
    ]


def slots_topology(m: TopologyNet) -> list[Slot]:
    return [("folded", layer.W, None) for layer in m.model if isinstance(layer, MyLayer)]


def slots_linears(m: nn.Module) -> list[Slot]:
    return [("out_in", mod.weight, mod.bias) for mod in m.modules() if isinstance(mod, nn.Linear)]


def slots_loose(m: LooseTwoLayer) -> list[Slot]:
    return [("in_out", m.w1, None), ("in_out", m.w2, None)]


def slots_scratch(m: ScratchNet) -> list[Slot]:
    return [("out_in", m.wih, None), ("out_in", m.who, None)]


def slots_single(m: SingleNeuron) -> list[Slot]:
    return [("in_out", m.weights, m.bias)]


def slots_two_sigmoid(m: TwoLayerSigmoid) -> list[Slot]:
    return [("in_out", m.W1, None), ("in_out", m.W2, None)]


# ------------------------------------------------------------------------- manual steps


def tensors_manual_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Seed 003 'PyTorch: Tensors': forward and backward by hand, no autograd."""
    with torch.no_grad():
        w1: torch.Tensor = model.get_parameter("w1")
        w2: torch.Tensor = model.get_parameter("w2")
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


def two_layer_numpy_program(model: nn.Module) -> TwoLayerNumpy:
    return TwoLayerNumpy(_numpy_view(model.get_parameter("w1")),
                         _numpy_view(model.get_parameter("w2")))


def scratch_numpy_program(model: nn.Module) -> NeuralNetWork:
    wih, who = _numpy_view(model.get_parameter("wih")), _numpy_view(model.get_parameter("who"))
    return NeuralNetWork(wih.shape[1], wih.shape[0], who.shape[0], 0.1, wih=wih, who=who)


# ------------------------------------------------------------------------ the builders


def linear_sigmoid_net(generator: torch.Generator, topology: Sequence[int]) -> nn.Sequential:
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


def seed003_generator(seed: int) -> torch.Generator:
    """The tutorial draws x, y first and the weights after, from one stream; so do we."""
    g = torch.Generator().manual_seed(seed)
    torch.randn(64, 1000, generator=g)
    torch.randn(64, 10, generator=g)
    return g


def seed003_linear_init(model: nn.Module, g: torch.Generator) -> nn.Module:
    # nn.Linear's reset_parameters, in construction order, from the tutorial's stream
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return model


def loose(seed: int, cls: type[LooseTwoLayer], dtype: torch.dtype) -> LooseTwoLayer:
    g = seed003_generator(seed)
    w1 = torch.randn(1000, 100, generator=g)
    w2 = torch.randn(100, 10, generator=g)
    return cls(w1.to(dtype), w2.to(dtype))


def keras_model(g: torch.Generator, seed: int) -> nn.Module:
    net = build_network(KERAS_SPEC, seed=seed)
    with torch.no_grad():  # Keras' defaults: glorot_uniform kernels, zero biases
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=g)
                m.bias.zero_()
    return net


def regression_model(g: torch.Generator, seed: int) -> nn.Module:
    net = build_network("1-10-1 tanh", seed=seed)
    with torch.no_grad():  # tf.random_normal weights, tf.zeros biases
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0, generator=g)
                m.bias.zero_()
    return net


def cnn_model(g: torch.Generator, seed: int) -> nn.Module:
    return init_parameters(on_meta(Net), seed)


KERAS_SPEC: list[dict[str, Any]] = [
    {"type": "Linear", "in_features": 784, "out_features": 512},
    {"type": "ReLU"},
    {"type": "Linear", "out_features": 10},
    {"type": "Softmax", "dim": 1},
]
CNN_SPEC: list[dict[str, Any]] = [
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
NN_SPEC = "Linear(in_features=1000, out_features=100) -> ReLU -> Linear(out_features=10)"


def nn_sequential() -> nn.Sequential:
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


def build_with(fn: Callable[[torch.Generator, int], nn.Module]) -> Callable[..., nn.Module]:
    """A preset's ``make_model`` from ``fn(generator, seed)``; it takes no build options."""

    def make(g: torch.Generator, seed: int, **options: Any) -> nn.Module:
        _no_options(options)
        return fn(g, seed)

    return make


def build_with_topology(
    fn: Callable[[torch.Generator, list[int]], nn.Module],
) -> Callable[..., nn.Module]:
    """A preset's ``make_model`` from ``fn(generator, topology)``; ``topology=`` is its option."""

    def make(g: torch.Generator, seed: int, **options: Any) -> nn.Module:
        return fn(g, _topology_option(dict(options)))

    return make


def random64(seed: int) -> gdata.TrainData:
    return gdata.random_regression(seed).to(torch.float64)


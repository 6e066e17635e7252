"""Example programs to trace: the tutorial networks and the big models of the benchmarks.

Each example builds a model and a loss from a seed; `trace_example` runs it under
`capture` and returns the frozen `Graph`. Big programs are built, traced and freed in a
thread with a large stack, so freeing a deep autograd graph cannot overflow the stack of
the caller (a Streamlit script thread has a fixed 8 MiB stack).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradviz.backward.netprop import (
    Layer,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Reshape,
    dropout_layer,
    register_architecture,
)
from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph
from gradviz.graph.tracing import capture, run_with_big_stack, trace

__all__ = ["Example", "examples", "example_names", "trace_example", "build_example"]


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    # seed → (model, function computing the loss/output from the model)
    make: Callable[[int], tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]]
    big: bool = False


class TwoLayerNet(nn.Module):
    """Seed 003's nn version: Linear(1000,100) → ReLU → Linear(100,10)."""

    def __init__(self, d_in: int = 1000, hidden: int = 100, d_out: int = 10) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(x)))


register_architecture(TwoLayerNet, lambda m: [m.linear1, m.relu, m.linear2])


class Net(nn.Module):
    """Seed 001's MNIST CNN (the tutorial's class name)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def _mnist_layers(m: Net) -> list[Layer | nn.Module]:
    # Net.forward, line by line, for numpy_backprop
    return [
        m.conv1, MaxPool2d(2), ReLU(),  # relu(max_pool2d(conv1(x), 2))
        m.conv2, m.conv2_drop, MaxPool2d(2), ReLU(),  # relu(max_pool2d(conv2_drop(conv2(x)), 2))
        Reshape((-1, 320)),  # x.view(-1, 320)
        m.fc1, ReLU(),  # relu(fc1(x))
        dropout_layer(0.5, m.training, "F.dropout in Net.forward"),  # F.dropout(x, training=…)
        m.fc2, LogSoftmax(dim=1),  # log_softmax(fc2(x), dim=1)
    ]  # fmt: skip


register_architecture(Net, _mnist_layers)
MnistNet = Net


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Like(nn.Module):
    """ResNet-50's layout (3-4-6-3 bottlenecks), written here: torchvision has no CPU wheel."""

    def __init__(self, num_classes: int = 10, base: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers = []
        in_ch = base
        widths = (base, base * 2, base * 4, base * 8)
        for i, (blocks, width) in enumerate(zip((3, 4, 6, 3), widths, strict=True)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(in_ch, width, 2 if (b == 0 and i > 0) else 1))
                in_ch = width * Bottleneck.expansion
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _like(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x in the model's floating dtype, so an example runs in float64 after model.double()."""
    p = next(model.parameters(), None)
    return x.to(p.dtype) if p is not None and x.is_floating_point() else x


def _two_layer(seed: int):
    torch.manual_seed(seed)
    model = TwoLayerNet()
    x, y = torch.randn(64, 1000), torch.randn(64, 10)
    return model, lambda m: F.mse_loss(m(_like(m, x)), _like(m, y), reduction="sum")


def _mnist(seed: int):
    torch.manual_seed(seed)
    model = MnistNet()
    x, target = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    return model, lambda m: F.nll_loss(m(_like(m, x)), target)


def _transformer(layers: int, d_model: int = 256, heads: int = 8):
    def make(seed: int):
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, batch_first=True
        )
        model = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        x = torch.randn(2, 16, d_model)
        return model, lambda m: m(_like(m, x)).pow(2).mean()

    return make


def _resnet(seed: int):
    torch.manual_seed(seed)
    model = ResNet50Like()
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    return model, lambda m: F.cross_entropy(m(_like(m, x)), target)


def _chain(nodes: int):
    # Each Linear layer adds four nodes: AddmmBackward0, TBackward0, weight and bias.
    def make(seed: int):
        torch.manual_seed(seed)
        model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(max(1, nodes // 4))])
        x = torch.randn(1, 2)
        return model, lambda m: m(_like(m, x)).sum()

    return make


_EXAMPLES = (
    Example(
        "two-layer-relu",
        "Seed 003: Linear(1000,100) → ReLU → Linear(100,10), summed squared error",
        _two_layer,
    ),
    Example(
        "mnist-cnn",
        "Seed 001: the MNIST CNN (two conv layers, dropout, log-softmax, NLL loss)",
        _mnist,
    ),
    Example(
        "transformer-2", "A 2-layer TransformerEncoder (d_model 256, 8 heads)", _transformer(2)
    ),
    Example(
        "transformer-12",
        "A 12-layer TransformerEncoder (d_model 256, 8 heads)",
        _transformer(12),
        big=True,
    ),
    Example(
        "transformer-24",
        "A 24-layer TransformerEncoder (d_model 256, 8 heads)",
        _transformer(24),
        big=True,
    ),
    Example(
        "resnet50",
        "A ResNet-50-like net (3-4-6-3 bottlenecks) on 64×64 images",
        _resnet,
        big=True,
    ),
    Example(
        "chain-25k",
        "A 25 000-node chain: 6 250 Linear(2,2) layers in a row",
        _chain(25_000),
        big=True,
    ),
)


def examples() -> dict[str, Example]:
    """The example programs by name."""
    return {e.name: e for e in _EXAMPLES}


def example_names(include_big: bool = True) -> list[str]:
    return [e.name for e in _EXAMPLES if include_big or not e.big]


def _lookup(name: str) -> Example:
    table = examples()
    if name not in table:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ArgumentError("name", name, f"{hint}choose one of {', '.join(table)}")
    return table[name]


def build_example(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Build example `name` and run its forward under `capture`; returns (model, loss)."""
    model, loss_fn = _lookup(name).make(seed)
    with capture(model):
        loss = loss_fn(model)
    return model, loss


def trace_example(name: str, seed: int = 0, *, saved: bool = True) -> Graph:
    """Build, run and trace example `name`; only the frozen Graph is kept."""
    _lookup(name)

    def run() -> Graph:
        model, loss = build_example(name, seed)
        return trace(loss, model=model, saved=saved)

    return run_with_big_stack(run)

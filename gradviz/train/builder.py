"""Build an nn.Sequential from a layer list, with shape inference and errors that name the layer.

The spec format is described in `gradviz.train.spec`; shapes are worked out by
`gradviz.train.shapes`. Layer ``i`` of the spec is child ``i`` of the built
``nn.Sequential``, row ``i`` of `layer_table` and "layer i" in every error message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.shapes import _infer_layer, layer_table
from gradviz.train.spec import parse_spec, spec_to_text

__all__ = ["Network", "build_network", "init_parameters", "on_meta"]

# ---------------------------------------------------------------------------- building


class Network(nn.Sequential):
    """An nn.Sequential that remembers the spec and shapes it was built from."""

    def __init__(
        self,
        modules: list[nn.Module],
        spec: list[dict[str, Any]],
        input_shape: tuple[int, ...],
        table: list[dict[str, Any]],
    ) -> None:
        super().__init__(*modules)
        self.spec = spec
        self.input_shape = input_shape
        self.table = table

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [row["output_shape"] for row in self.table]

    @property
    def spec_text(self) -> str:
        return spec_to_text(self.spec)


M = TypeVar("M", bound=nn.Module)


def on_meta(make: Callable[[], M]) -> M:
    """Construct a module without running its random init (allocate, values unset).

    Layers draw their default init from the global RNG as they are made; made on the
    meta device they draw nothing, so building never disturbs a run that is replaying
    dropout masks in another session of the same server. Fill every parameter after.
    """
    with torch.device("meta"):
        module = make()
    return module.to_empty(device="cpu")


def init_parameters(model: M, seed: int) -> M:
    """Run torch's default init of every layer again, drawing from a private generator.

    Linear and Conv2d get the distributions of their ``reset_parameters``; layers with a
    fixed init (BatchNorm, LayerNorm) are reset. The global RNG is left alone: a
    Streamlit server runs many sessions in one process, and one session's build must
    neither change nor depend on another's random state.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound, generator=g)
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm)):
                module.reset_parameters()
    return model


def build_network(
    spec: str | Sequence[Mapping[str, Any]],
    input_shape: Sequence[int] | int | None = None,
    *,
    seed: int | None = None,
) -> Network:
    """Build the spec as a `Network` (an nn.Sequential with ``.spec`` and ``.input_shape``).

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)``; it may be left out when
    the first layer is a Linear with ``in_features`` (compact text always has it).
    ``seed`` makes the initial weights reproducible without touching the global RNG.
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ArgumentError("seed", seed, "use a whole number ≥ 0, or None for torch's own RNG")
    layers = parse_spec(spec)
    table = layer_table(layers, input_shape)

    def make() -> Network:
        modules = []
        for layer, row in zip(layers, table, strict=True):
            ctor = _infer_layer(row["index"], layer, row["input_shape"]).ctor
            modules.append(getattr(nn, layer["type"])(**ctor))
        return Network(modules, layers, tuple(table[0]["input_shape"]), table)

    if seed is None:
        return make()  # torch's own init from the global RNG, as plain torch code does
    return init_parameters(on_meta(make), seed)

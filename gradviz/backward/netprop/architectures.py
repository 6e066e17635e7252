"""How a module becomes a list of NumPy layers: `ARCHITECTURES`, one entry per module class.

An entry may list other modules (expanded in turn), so a network class written by hand is
one entry naming its submodules and its functional steps::

    register_architecture(MyNet, lambda m: [m.fc1, ReLU(), m.fc2, LogSoftmax(dim=1)])

torch's own layers are entered here; network classes are registered by the modules that
define them (gradviz.zoo does so when imported, and gradviz imports the zoo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from torch import nn

from gradviz.backward.netprop.layers import (
    GELU,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    _pair,
)
from gradviz.backward.netprop.norm import BatchNorm, LayerNorm
from gradviz.backward.netprop.windows import AdaptiveAvgPool, AvgPool2d, Conv2d, MaxPool2d
from gradviz.errors import ArgumentError, GradvizError

M = TypeVar("M", bound=nn.Module)
# The table's entries: Any, as each reads the attributes of its own module class and a dict
# keyed by class cannot tie a value's argument type to its key; register_architecture does.
Entry = Callable[[Any], Sequence["Layer | nn.Module"]]


def _conv2d(m: nn.Conv2d) -> list[Layer]:
    _require(m, m.groups == 1, f"groups={m.groups}", "only groups=1 convolutions are written out")
    _require(
        m, m.padding_mode == "zeros", f"padding_mode={m.padding_mode!r}", "use padding_mode='zeros'"
    )
    kernel, dilation, padding = m.kernel_size, m.dilation, m.padding
    if padding == "same":
        # torch pads d·(k−1) in total, the odd one on the bottom/right
        th, tw = (d * (k - 1) for k, d in zip(kernel, dilation, strict=True))
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    elif isinstance(padding, str):  # "valid", the other string torch accepts
        pads = ((0, 0), (0, 0))
    else:
        ph, pw = _pair(padding)
        pads = ((ph, ph), (pw, pw))
    return [Conv2d(m.weight, m.bias, _pair(m.stride), pads, _pair(dilation))]


def _maxpool(m: nn.MaxPool2d) -> list[Layer]:
    _require(m, not m.ceil_mode, "ceil_mode=True", "use ceil_mode=False")
    _require(m, not m.return_indices, "return_indices=True", "use return_indices=False")
    return [MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation)]


def _avgpool(m: nn.AvgPool2d) -> list[Layer]:
    _require(m, not m.ceil_mode, "ceil_mode=True", "use ceil_mode=False")
    return [AvgPool2d(m.kernel_size, m.stride, m.padding, m.count_include_pad, m.divisor_override)]


def _adaptive(k: int) -> Entry:
    def entry(m: nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d) -> list[Layer]:
        size = m.output_size
        return [AdaptiveAvgPool((size,) * k if isinstance(size, int) or size is None else size)]

    return entry


def _dropout(m: nn.modules.dropout._DropoutNd) -> list[Layer]:
    return [dropout_layer(m.p, m.training, type(m).__name__)]


def dropout_layer(p: float, training: bool, what: str) -> Dropout:
    """The identity for dropout that is off; live dropout (``what``) raises, naming it."""
    if training and p > 0:
        raise ArgumentError(
            "model",
            f"{what} (p={p}) in training mode",
            "dropout draws a random mask on every forward that NumPy cannot replay; "
            "call model.eval() first (or use p=0)",
        )
    return Dropout()


def _softmax_dim(m: nn.Softmax | nn.LogSoftmax) -> int:
    if m.dim is None:
        _refuse(m, "dim=None", "give the axis, e.g. nn.Softmax(dim=1)")
    return m.dim


def _batchnorm(dims: tuple[int, ...]) -> Entry:
    def entry(m: nn.modules.batchnorm._BatchNorm) -> list[Layer]:
        return [BatchNorm(m, dims)]

    return entry


ARCHITECTURES: dict[type[nn.Module], Entry] = {
    # torch layers
    nn.Sequential: lambda m: list(m.children()),
    nn.Identity: lambda m: [],
    nn.Linear: lambda m: [Linear(m.weight, m.bias)],
    nn.Conv2d: _conv2d,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool1d: _adaptive(1),
    nn.AdaptiveAvgPool2d: _adaptive(2),
    nn.Flatten: lambda m: [Flatten(m.start_dim, m.end_dim)],
    nn.ReLU: lambda m: [ReLU()],
    nn.LeakyReLU: lambda m: [LeakyReLU(m.negative_slope)],
    nn.Sigmoid: lambda m: [Sigmoid()],
    nn.Tanh: lambda m: [Tanh()],
    nn.GELU: lambda m: [GELU(m.approximate)],
    nn.Softmax: lambda m: [Softmax(_softmax_dim(m))],
    nn.LogSoftmax: lambda m: [LogSoftmax(_softmax_dim(m))],
    nn.Dropout: _dropout,
    nn.Dropout1d: _dropout,
    nn.Dropout2d: _dropout,
    nn.BatchNorm1d: _batchnorm((2, 3)),
    nn.BatchNorm2d: _batchnorm((4,)),
    nn.LayerNorm: lambda m: [LayerNorm(m)],
}


def register_architecture(
    module_type: type[M], entry: Callable[[M], Sequence[Layer | nn.Module]]
) -> Callable[[M], Sequence[Layer | nn.Module]]:
    """Teach `numpy_backprop` to read ``module_type``: ``entry(module)`` lists its steps.

    The list holds `Layer` objects and submodules (expanded in turn), in the order the
    module's ``forward`` runs them. The module that defines a network class registers it
    beside the class (the zoo's presets and examples do so on import), so this package
    never needs to know the networks built on top of it. Registering a class twice
    raises: two readings of one ``forward`` cannot both be right.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ArgumentError("module_type", module_type, "give an nn.Module subclass")
    if not callable(entry):
        raise ArgumentError(
            "entry", entry, "give a function module -> [Layer or submodule, ...]"
        )
    known = ARCHITECTURES.get(module_type)
    if known is not None and known is not entry:
        raise ArgumentError(
            "module_type",
            module_type.__name__,
            "is registered already; change its entry in ARCHITECTURES instead",
        )
    ARCHITECTURES[module_type] = entry
    return entry


def supported_modules() -> list[str]:
    """The module classes `numpy_backprop` can read, by name."""
    return sorted({cls.__name__ for cls in ARCHITECTURES})


def _entry_for(module: nn.Module) -> Entry | None:
    cls = type(module)
    if cls in ARCHITECTURES:
        return ARCHITECTURES[cls]
    # a subclass is read as its base only if it keeps the base's forward (builder.Network)
    for base in cls.__mro__[1:]:
        if base in ARCHITECTURES:
            same = cls.forward is getattr(base, "forward", None)  # keys are Module classes
            return ARCHITECTURES[base] if same else None
    return None


def _require(module: nn.Module, ok: bool, setting: str, fix: str) -> None:
    if not ok:
        _refuse(module, setting, fix)


def _refuse(module: nn.Module, setting: str, fix: str) -> NoReturn:
    raise ArgumentError("model", f"{type(module).__name__} with {setting}", fix)


def layers_of(model: nn.Module) -> list[Layer]:
    """The model as a flat list of layers, each with ``where`` set to the module it came from."""
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", model, "give a torch.nn.Module")
    paths = {id(m): name for name, m in model.named_modules()}

    def expand(module: nn.Module, path: str) -> list[Layer]:
        entry = _entry_for(module)
        if entry is None:
            raise ArgumentError(
                "model",
                f"{type(module).__name__} at {path or '(the model itself)'!r}",
                f"numpy_backprop has no NumPy backward for {type(module).__name__}; supported "
                f"modules: {', '.join(supported_modules())} (a new class is one entry in "
                "gradviz.backward.netprop.ARCHITECTURES: see register_architecture)",
            )
        out: list[Layer] = []
        for item in entry(module):
            if isinstance(item, Layer):
                if not item.where:  # a layer of its own, or a functional step of a forward()
                    leaf = next(module.children(), None) is None
                    name = path or type(module).__name__
                    item.where = name if leaf else f"{name}.forward"
                out.append(item)
            elif isinstance(item, nn.Module):
                out += expand(item, paths.get(id(item), f"{path}.?"))
            else:
                raise GradvizError(
                    f"ARCHITECTURES[{type(module).__name__}] gave {item!r}; an entry lists "
                    "Layer objects and submodules"
                )
        return out

    return expand(model, "")



"""Per-sample shapes through a layer list: one inference rule per layer type, in a table.

Each rule checks that its layer can take the incoming shape and returns the torch
constructor arguments, the output shape and the parameter count; a layer that cannot
take its input raises `SpecError` naming the layer, the shapes and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradviz.errors import ArgumentError, SpecError
from gradviz.train.layer_kinds import _KINDS, _LayerKind, _where
from gradviz.train.spec import _layer_text, parse_spec

__all__ = ["infer_shapes", "layer_table", "MAX_PARAMETERS", "MAX_ACTIVATION"]

# A Streamlit server builds what users type; these keep one typo (an extra zero) from
# allocating gigabytes for everyone on the machine.
MAX_PARAMETERS = 50_000_000
MAX_ACTIVATION = 20_000_000  # elements of one sample's output of one layer


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}×{shape[1]}"


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    ok = (
        isinstance(input_shape, (list, tuple))
        and 1 <= len(input_shape) <= 3
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_shape)
    )
    if not ok:
        raise ArgumentError(
            "input_shape",
            input_shape,
            "give the shape of one sample without the batch dimension, 1 to 3 positive "
            "whole numbers: (784,) for flat inputs, (1, 28, 28) for a grey image",
        )
    return tuple(int(s) for s in input_shape)


@dataclass(frozen=True)
class _Inferred:
    ctor: dict[str, Any]  # keyword arguments for the torch module
    out_shape: tuple[int, ...]
    params: int


def _need_dims(index: int, kind: _LayerKind, shape: tuple[int, ...], dims: Sequence[int]) -> None:
    if len(shape) not in dims:
        if kind.name == "Linear":
            fix = 'add a Flatten layer before it ({"type": "Flatten"})'
        elif 1 in dims or len(shape) > max(dims):
            fix = "add a Flatten layer before it or pick a layer for this input"
        else:
            fix = "give input_shape as (channels, height, width), e.g. (1, 28, 28)"
        raise SpecError(
            f"{_where(index, kind.name)}: needs {kind.needs}, but its input has shape "
            f"{_fmt_shape(shape)}; {fix}"
        )


def _check_given(
    index: int, kind: _LayerKind, layer: Mapping[str, Any], name: str, inferred: Any, what: str
) -> None:
    if name in layer:
        given = layer[name]
        if given != inferred:
            raise SpecError(
                f"{_where(index, kind.name)}: {name}={given!r} but {what} is {inferred!r}; "
                f"remove {name} (it is inferred from the input) or fix the layer before it"
            )


def _pool_or_conv_out(
    index: int,
    kind: _LayerKind,
    hw: tuple[int, int],
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
) -> tuple[int, int]:
    padded = (hw[0] + 2 * p[0], hw[1] + 2 * p[1])
    eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    if eff[0] > padded[0] or eff[1] > padded[1]:
        ks = k[0] if k[0] == k[1] else _hw(k)
        limit = f"≤ {min(padded)}" if k[0] == k[1] else f"≤ {_hw(padded)}"
        span = "" if d == (1, 1) else f" (spanning {_hw(eff)} with dilation {_hw(d)})"
        raise SpecError(
            f"{_where(index, kind.name)}: kernel_size {ks}{span} is larger than the {_hw(hw)} "
            f"input (padded {_hw(padded)}); use kernel_size {limit} or add padding"
        )
    # o = ⌊(n + 2p − f)/s⌋ + 1, with f the kernel's span when dilated
    return ((padded[0] - eff[0]) // s[0] + 1, (padded[1] - eff[1]) // s[1] + 1)



def _get(kind: _LayerKind, layer: Mapping[str, Any], name: str) -> Any:
    """A field's value as given, else its declared default."""
    f = kind.field(name)
    return layer.get(name, None if f is None else f.default)


_Layer = Mapping[str, Any]
_Shape = tuple[int, ...]
_Rule = Callable[[int, _LayerKind, _Layer, _Shape], _Inferred]


def _linear(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (1,))
    _check_given(index, kind, layer, "in_features", shape[0], "the input's feature count")
    out, bias = _get(kind, layer, "out_features"), _get(kind, layer, "bias")
    ctor = {"in_features": shape[0], "out_features": out, "bias": bias}
    return _Inferred(ctor, (out,), shape[0] * out + (out if bias else 0))


def _same_padding_check(
    index: int, kind: _LayerKind, layer: Mapping[str, Any], k: tuple[int, int], d: tuple[int, int]
) -> None:
    if _pair(_get(kind, layer, "stride")) != (1, 1):
        raise SpecError(
            f"{_where(index, kind.name)}: padding='same' needs stride 1, got stride "
            f"{_get(kind, layer, 'stride')!r}; use stride=1 or a number for padding"
        )
    if any(d[i] * (k[i] - 1) % 2 for i in (0, 1)):
        # torch then pads one side more than the other (and warns); seed 001 gives
        # this as the reason kernels are odd
        raise SpecError(
            f"{_where(index, kind.name)}: padding='same' with kernel_size "
            f"{_get(kind, layer, 'kernel_size')!r} would pad one side more than the other; "
            "use an odd kernel_size (3, 5, 7) or a number for padding"
        )


def _conv2d(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (3,))
    _check_given(index, kind, layer, "in_channels", shape[0], "the input's channel count")

    def get(name: str) -> Any:
        return _get(kind, layer, name)

    k, s, d = _pair(get("kernel_size")), _pair(get("stride")), _pair(get("dilation"))
    padding = get("padding")
    if padding == "same":
        _same_padding_check(index, kind, layer, k, d)
        out_hw = (shape[1], shape[2])  # what 'same' means
    else:
        p = (0, 0) if padding == "valid" else _pair(padding)
        out_hw = _pool_or_conv_out(index, kind, (shape[1], shape[2]), k, s, p, d)
    out_c = get("out_channels")
    ctor = {
        "in_channels": shape[0],
        "out_channels": out_c,
        "kernel_size": k,
        "stride": s,
        "padding": padding if isinstance(padding, str) else _pair(padding),
        "dilation": d,
        "bias": get("bias"),
    }
    params = out_c * shape[0] * k[0] * k[1] + (out_c if get("bias") else 0)
    return _Inferred(ctor, (out_c, *out_hw), params)


def _pool2d(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (3,))
    k = _pair(_get(kind, layer, "kernel_size"))
    stride = _get(kind, layer, "stride")
    s = _pair(stride) if stride is not None else k
    p = _pair(_get(kind, layer, "padding"))
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise SpecError(
            f"{_where(index, kind.name)}: padding {_get(kind, layer, 'padding')!r} is more than "
            f"half the kernel_size {_get(kind, layer, 'kernel_size')!r}; use padding ≤ "
            f"{min(k) // 2}"
        )
    out_hw = _pool_or_conv_out(index, kind, (shape[1], shape[2]), k, s, p, (1, 1))
    return _Inferred({"kernel_size": k, "stride": s, "padding": p}, (shape[0], *out_hw), 0)


def _adaptive1d(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (2,))
    size = _get(kind, layer, "output_size")
    return _Inferred({"output_size": size}, (shape[0], size), 0)


def _adaptive2d(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (3,))
    o = _pair(_get(kind, layer, "output_size"))
    return _Inferred({"output_size": o}, (shape[0], *o), 0)


def _dropout(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    if kind.name == "Dropout2d":
        # torch warns (and treats the input differently) for 3-D batches; keep to images
        _need_dims(index, kind, shape, (3,))
    return _Inferred({"p": float(_get(kind, layer, "p"))}, shape, 0)


def _batchnorm(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    _need_dims(index, kind, shape, (1, 2) if kind.name == "BatchNorm1d" else (3,))
    _check_given(index, kind, layer, "num_features", shape[0], "the input's channel count")
    ctor = {
        "num_features": shape[0],
        "eps": float(_get(kind, layer, "eps")),
        "momentum": float(_get(kind, layer, "momentum")),
    }
    return _Inferred(ctor, shape, 2 * shape[0])


def _layernorm(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    given = layer.get("normalized_shape")
    if given is None:
        normalized = shape  # the whole sample, as torch's image example writes it
    elif isinstance(given, (list, tuple)):
        normalized = tuple(given)
    else:
        normalized = (given,)
    if len(normalized) > len(shape) or tuple(shape[len(shape) - len(normalized) :]) != normalized:
        raise SpecError(
            f"{_where(index, kind.name)}: normalized_shape={given!r} does not match the end of "
            f"the input shape {_fmt_shape(shape)}; remove normalized_shape (it is inferred) "
            "or give trailing sizes of the input"
        )
    ctor = {"normalized_shape": list(normalized), "eps": float(_get(kind, layer, "eps"))}
    return _Inferred(ctor, shape, 2 * math.prod(normalized))


def _flatten(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    nd = len(shape) + 1  # torch counts the batch dimension
    start, end = _get(kind, layer, "start_dim"), _get(kind, layer, "end_dim")
    s = start + nd if start < 0 else start
    e = end + nd if end < 0 else end
    if not (1 <= s < nd) or not (1 <= e < nd) or s > e:
        raise SpecError(
            f"{_where(index, kind.name)}: start_dim={start}, end_dim={end} do not pick "
            f"dimensions of the input (batch, {', '.join(map(str, shape))}) after the batch; "
            "use Flatten() to flatten everything but the batch"
        )
    flat = math.prod(shape[s - 1 : e])
    out = (*shape[: s - 1], flat, *shape[e:])
    return _Inferred({"start_dim": start, "end_dim": end}, out, 0)


def _softmax(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    nd = len(shape) + 1
    dim = _get(kind, layer, "dim")
    if not -nd <= dim < nd or dim in (0, -nd):
        raise SpecError(
            f"{_where(index, kind.name)}: dim={dim} is not a dimension of one sample of shape "
            f"{_fmt_shape(shape)} (dim 0 is the batch: normalising over it mixes samples); "
            "use dim=1 or dim=-1"
        )
    return _Inferred({"dim": dim}, shape, 0)


def _elementwise(index: int, kind: _LayerKind, layer: _Layer, shape: _Shape) -> _Inferred:
    """Activations: the shape passes through; their own fields go to the constructor."""
    ctor: dict[str, Any] = {}
    for f in kind.fields:
        value = _get(kind, layer, f.name)
        ctor[f.name] = float(value) if f.kind == "float" else value
    return _Inferred(ctor, shape, 0)


# Layer type -> its shape rule; tests check that every declared layer kind has one.
_INFER: dict[str, _Rule] = {
    "Linear": _linear,
    "Conv2d": _conv2d,
    "MaxPool2d": _pool2d,
    "AvgPool2d": _pool2d,
    "AdaptiveAvgPool1d": _adaptive1d,
    "AdaptiveAvgPool2d": _adaptive2d,
    "Dropout": _dropout,
    "Dropout2d": _dropout,
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
    "LayerNorm": _layernorm,
    "Flatten": _flatten,
    "ReLU": _elementwise,
    "LeakyReLU": _elementwise,
    "Sigmoid": _elementwise,
    "Tanh": _elementwise,
    "GELU": _elementwise,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
}


def _infer_layer(index: int, layer: _Layer, shape: _Shape) -> _Inferred:
    kind = _KINDS[layer["type"]]
    return _INFER[kind.name](index, kind, layer, shape)

def _resolve_input_shape(layers: list[dict[str, Any]], input_shape: Any) -> tuple[int, ...]:
    if input_shape is not None:
        return _check_input_shape(input_shape)
    first = layers[0]
    if first["type"] == "Linear" and "in_features" in first:
        return (first["in_features"],)
    raise ArgumentError(
        "input_shape",
        None,
        f"layer 0 {first['type']} cannot tell the input size; pass the shape of one sample, "
        "e.g. input_shape=(1, 28, 28) for grey 28×28 images or (784,) for flat inputs",
    )


def infer_shapes(
    spec: str | Sequence[Mapping[str, Any]], input_shape: Sequence[int] | int | None = None
) -> list[tuple[int, ...]]:
    """Per-sample output shape of every layer (layer i → entry i)."""
    return [row["output_shape"] for row in layer_table(spec, input_shape)]


def layer_table(
    spec: str | Sequence[Mapping[str, Any]], input_shape: Sequence[int] | int | None = None
) -> list[dict[str, Any]]:
    """One row per layer for the UI: index, layer text, type, input/output shape, parameters.

    Shapes are per sample (no batch dimension). Raises `SpecError` at the first layer that
    cannot take its input, naming the layer, the shapes and the fix.
    """
    layers = parse_spec(spec)
    shape = _resolve_input_shape(layers, input_shape)
    rows: list[dict[str, Any]] = []
    total = 0
    for i, layer in enumerate(layers):
        inferred = _infer_layer(i, layer, shape)
        total += inferred.params
        if total > MAX_PARAMETERS:
            raise SpecError(
                f"{_where(i, layer['type'])}: the network reaches {total:,} parameters, more "
                f"than the {MAX_PARAMETERS:,} gradviz builds; use smaller layers"
            )
        if math.prod(inferred.out_shape) > MAX_ACTIVATION:
            raise SpecError(
                f"{_where(i, layer['type'])}: output {_fmt_shape(inferred.out_shape)} has "
                f"{math.prod(inferred.out_shape):,} values per sample, more than the "
                f"{MAX_ACTIVATION:,} gradviz allows; shrink the input or add pooling/stride"
            )
        rows.append(
            {
                "index": i,
                "layer": _layer_text(layer),
                "type": layer["type"],
                "input_shape": shape,
                "output_shape": inferred.out_shape,
                "params": inferred.params,
            }
        )
        shape = inferred.out_shape
    return rows

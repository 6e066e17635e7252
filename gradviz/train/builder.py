"""Build an nn.Sequential from a layer list, with shape inference and errors that name the layer.

A spec is either text or a list of layer dicts:

* compact text for a fully connected net, ``"2-3-3-4 sigmoid"``: Linear layers of those
  sizes with the activation after every one of them, the output included (as in every
  seed program that writes a net this way: the quadrant net, the 1-10-1 tanh regression
  and the 784-250-10 sigmoid net). Append ``nobias`` for Linear layers without bias;
  leave the activation out for a purely linear stack.
* general text, layers separated by ``->`` or new lines, each ``Type`` or
  ``Type(arg, key=value)``: ``"Conv2d(out_channels=10, kernel_size=5) -> MaxPool2d(2) -> ReLU"``.
  Values are Python literals read with ``ast.literal_eval`` (never ``eval``).
* a list of dicts: ``[{"type": "Conv2d", "out_channels": 10, "kernel_size": 5}, ...]``.

Input sizes (``in_features``, ``in_channels``, ``num_features``, ``normalized_shape``) are
inferred from the per-sample ``input_shape`` and may be given only to be checked.
Layer ``i`` of the spec is child ``i`` of the built ``nn.Sequential``, the row ``i`` of
``layer_table`` and "layer i" in every error message.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError, SpecError

__all__ = [
    "Network",
    "build_network",
    "layer_table",
    "parse_spec",
    "spec_to_text",
    "infer_shapes",
    "layer_types",
    "init_parameters",
    "on_meta",
    "MAX_PARAMETERS",
    "MAX_ACTIVATION",
]

# A Streamlit server builds what users type; these keep one typo (an extra zero) from
# allocating gigabytes for everyone on the machine.
MAX_PARAMETERS = 50_000_000
MAX_ACTIVATION = 20_000_000  # elements of one sample's output of one layer

_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str
    default: Any = None
    inferred: bool = False  # filled in from the input shape; giving it only checks it


@dataclass(frozen=True)
class _LayerKind:
    name: str
    fields: tuple[_Field, ...]
    positional: tuple[str, ...]
    needs: str  # what per-sample input it takes, for messages and checks
    example: str

    def field(self, name: str) -> _Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _kinds() -> dict[str, _LayerKind]:
    eps = _Field("eps", "pos_float", 1e-5)
    bn_momentum = _Field("momentum", "prob", 0.1)
    pool = (
        _Field("kernel_size", "pos_pair", _REQUIRED),
        _Field("stride", "pos_pair_or_none", None),
        _Field("padding", "nonneg_pair", 0),
    )
    any_shape = "any input"
    kinds = [
        _LayerKind(
            "Linear",
            (
                _Field("in_features", "pos_int", None, inferred=True),
                _Field("out_features", "pos_int", _REQUIRED),
                _Field("bias", "bool", True),
            ),
            ("out_features",),
            "a 1-D input (features)",
            "Linear(out_features=10)",
        ),
        _LayerKind(
            "Conv2d",
            (
                _Field("in_channels", "pos_int", None, inferred=True),
                _Field("out_channels", "pos_int", _REQUIRED),
                _Field("kernel_size", "pos_pair", _REQUIRED),
                _Field("stride", "pos_pair", 1),
                _Field("padding", "conv_padding", 0),
                _Field("dilation", "pos_pair", 1),
                _Field("bias", "bool", True),
            ),
            ("out_channels", "kernel_size", "stride", "padding"),
            "a (channels, height, width) input",
            "Conv2d(out_channels=10, kernel_size=5)",
        ),
        _LayerKind(
            "MaxPool2d",
            pool,
            ("kernel_size", "stride", "padding"),
            "a (channels, height, width) input",
            "MaxPool2d(kernel_size=2)",
        ),
        _LayerKind(
            "AvgPool2d",
            pool,
            ("kernel_size", "stride", "padding"),
            "a (channels, height, width) input",
            "AvgPool2d(kernel_size=2)",
        ),
        _LayerKind(
            "AdaptiveAvgPool1d",
            (_Field("output_size", "pos_int", _REQUIRED),),
            ("output_size",),
            "a (channels, length) input",
            "AdaptiveAvgPool1d(output_size=4)",
        ),
        _LayerKind(
            "AdaptiveAvgPool2d",
            (_Field("output_size", "pos_pair", _REQUIRED),),
            ("output_size",),
            "a (channels, height, width) input",
            "AdaptiveAvgPool2d(output_size=1)",
        ),
        _LayerKind("Dropout", (_Field("p", "prob", 0.5),), ("p",), any_shape, "Dropout(p=0.5)"),
        _LayerKind(
            "Dropout2d",
            (_Field("p", "prob", 0.5),),
            ("p",),
            "a (channels, height, width) input",
            "Dropout2d(p=0.5)",
        ),
        _LayerKind(
            "BatchNorm1d",
            (_Field("num_features", "pos_int", None, inferred=True), eps, bn_momentum),
            (),
            "a (features,) or (channels, length) input",
            "BatchNorm1d",
        ),
        _LayerKind(
            "BatchNorm2d",
            (_Field("num_features", "pos_int", None, inferred=True), eps, bn_momentum),
            (),
            "a (channels, height, width) input",
            "BatchNorm2d",
        ),
        _LayerKind(
            "LayerNorm",
            (_Field("normalized_shape", "shape", None, inferred=True), eps),
            (),
            any_shape,
            "LayerNorm",
        ),
        _LayerKind(
            "Flatten",
            (_Field("start_dim", "int", 1), _Field("end_dim", "int", -1)),
            ("start_dim", "end_dim"),
            any_shape,
            "Flatten",
        ),
        _LayerKind("ReLU", (), (), any_shape, "ReLU"),
        _LayerKind(
            "LeakyReLU",
            (_Field("negative_slope", "float", 0.01),),
            ("negative_slope",),
            any_shape,
            "LeakyReLU(negative_slope=0.01)",
        ),
        _LayerKind("Sigmoid", (), (), any_shape, "Sigmoid"),
        _LayerKind("Tanh", (), (), any_shape, "Tanh"),
        _LayerKind(
            "GELU",
            (_Field("approximate", "gelu_mode", "none"),),
            ("approximate",),
            any_shape,
            "GELU",
        ),
        _LayerKind("Softmax", (_Field("dim", "int", 1),), ("dim",), any_shape, "Softmax(dim=1)"),
        _LayerKind(
            "LogSoftmax", (_Field("dim", "int", 1),), ("dim",), any_shape, "LogSoftmax(dim=1)"
        ),
    ]
    return {k.name: k for k in kinds}


_KINDS = _kinds()
_KINDS_LOWER = {name.lower(): name for name in _KINDS}

# Words allowed after the sizes in compact text, and the layer each one stands for.
_COMPACT_ACTIVATIONS = {
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "gelu": "GELU",
    "leakyrelu": "LeakyReLU",
}
_COMPACT_RE = re.compile(r"^\s*\d+(\s*-\s*\d+)+(\s+[A-Za-z_]+)*\s*$")


def layer_types() -> tuple[str, ...]:
    """The layer types the builder knows, in the order the UI should offer them."""
    return tuple(_KINDS)


# ---------------------------------------------------------------------------- parsing


def _suggest(word: str, options: Sequence[str]) -> str:
    lower = {o.lower(): o for o in options}
    close = difflib.get_close_matches(word.lower(), list(lower), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(lower[c] for c in close) + "?"
    return "known: " + ", ".join(options)


def _where(index: int, type_name: str | None = None) -> str:
    return f"layer {index} {type_name}" if type_name else f"layer {index}"


def _check_value(index: int, kind: _LayerKind, field: _Field, value: Any) -> Any:
    """Check one field's type and range; return the value unchanged (lists stay lists)."""
    where = _where(index, kind.name)

    def bad(expected: str) -> SpecError:
        example = kind.example
        return SpecError(f"{where}: {field.name}={value!r} is not {expected}; write e.g. {example}")

    def is_int(v: Any) -> bool:
        # bool is an int subclass; True as a kernel size is a mistake, not a 1.
        return isinstance(v, int) and not isinstance(v, bool)

    k = field.kind
    if k == "pos_int":
        if not is_int(value) or value < 1:
            raise bad("a positive whole number")
    elif k == "int":
        if not is_int(value):
            raise bad("a whole number")
    elif k in ("pos_pair", "pos_pair_or_none", "nonneg_pair", "conv_padding"):
        if k == "pos_pair_or_none" and value is None:
            return value
        if k == "conv_padding" and isinstance(value, str):
            if value not in ("same", "valid"):
                raise bad("a whole number ≥ 0, a pair of them, 'same' or 'valid'")
            return value
        low = 0 if k in ("nonneg_pair", "conv_padding") else 1
        what = (
            "a whole number ≥ 0 or a pair of them"
            if low == 0
            else ("a positive whole number or a pair of them")
        )
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(items) != 2:
            raise bad(what)
        if not all(is_int(v) and v >= low for v in items):
            raise bad(what)
    elif k == "bool":
        if not isinstance(value, bool):
            raise bad("True or False")
    elif k in ("prob", "float", "pos_float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        if k == "prob" and not 0 <= value <= 1:
            raise bad("a probability between 0 and 1")
        if k == "pos_float" and value <= 0:
            raise bad("a positive number")
    elif k == "gelu_mode":
        if value not in ("none", "tanh"):
            raise bad("'none' or 'tanh'")
    elif k == "shape":
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items or not all(is_int(v) and v >= 1 for v in items):
            raise bad("a positive whole number or a list of them")
    return value


def _normalize_layer(index: int, layer: Any) -> dict[str, Any]:
    if not isinstance(layer, Mapping):
        raise SpecError(
            f"{_where(index)}: {layer!r} is not a layer; write a dict such as "
            '{"type": "Linear", "out_features": 10}'
        )
    type_name = layer.get("type")
    if not isinstance(type_name, str):
        raise SpecError(
            f'{_where(index)}: needs a "type" string, got {type_name!r}; write e.g. '
            '{"type": "ReLU"}'
        )
    canonical = _KINDS_LOWER.get(type_name.lower())
    if canonical is None:
        raise SpecError(
            f"{_where(index)}: unknown layer type {type_name!r}; {_suggest(type_name, list(_KINDS))}"
        )
    kind = _KINDS[canonical]
    for key in layer:
        if key != "type" and (not isinstance(key, str) or kind.field(key) is None):
            names = [f.name for f in kind.fields]
            hint = _suggest(str(key), names) if names else f"{canonical} takes no arguments"
            raise SpecError(f"{_where(index, canonical)}: unknown field {key!r}; {hint}")
    out: dict[str, Any] = {"type": canonical}
    for f in kind.fields:  # schema order, so equal layers give equal dicts and text
        if f.name in layer:
            out[f.name] = _check_value(index, kind, f, layer[f.name])
        elif f.default is _REQUIRED:
            raise SpecError(
                f"{_where(index, canonical)}: {f.name} is required; write e.g. {kind.example}"
            )
    return out


def _parse_compact(text: str) -> list[dict[str, Any]]:
    words = text.split()
    sizes_text, extra = words[0], words[1:]
    # sizes may be written "2 - 3 - 4": glue the pieces that belong to the size list
    while extra and re.fullmatch(r"[-\d]+", extra[0]):
        sizes_text += extra.pop(0)
    sizes = [int(s) for s in sizes_text.split("-")]
    activation: str | None = None
    bias = True
    for word in extra:
        w = word.lower().replace("_", "")
        if w == "nobias":
            bias = False
        elif w in _COMPACT_ACTIVATIONS and activation is None:
            activation = _COMPACT_ACTIVATIONS[w]
        else:
            raise SpecError(
                f"spec {text!r}: cannot read {word!r}; after the sizes write one activation "
                f"({', '.join(_COMPACT_ACTIVATIONS)}) and optionally 'nobias', "
                "e.g. '2-3-3-4 sigmoid'"
            )
    for i, size in enumerate(sizes):
        if size < 1:
            raise SpecError(f"spec {text!r}: size {i} is {size}; every layer needs at least 1 unit")
    spec: list[dict[str, Any]] = []
    for i in range(1, len(sizes)):
        linear: dict[str, Any] = {"type": "Linear"}
        if i == 1:
            linear["in_features"] = sizes[0]
        linear["out_features"] = sizes[i]
        if not bias:
            linear["bias"] = False
        spec.append(linear)
        if activation:
            spec.append({"type": activation})
    return spec


def _parse_segment(index: int, segment: str) -> dict[str, Any]:
    try:
        node = ast.parse(segment.strip(), mode="eval").body
    except SyntaxError as exc:
        raise SpecError(
            f"{_where(index)}: cannot read {segment.strip()!r} ({exc.msg}); write a layer "
            "like Conv2d(out_channels=10, kernel_size=5) or ReLU"
        ) from None
    if isinstance(node, ast.Name):
        return {"type": node.id}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise SpecError(
            f"{_where(index)}: {segment.strip()!r} is not a layer; write a layer name, "
            "optionally with arguments: Linear(out_features=10)"
        )
    type_name = node.func.id
    canonical = _KINDS_LOWER.get(type_name.lower())
    if canonical is None:
        raise SpecError(
            f"{_where(index)}: unknown layer type {type_name!r}; {_suggest(type_name, list(_KINDS))}"
        )
    kind = _KINDS[canonical]

    def literal(arg: ast.expr, label: str) -> Any:
        try:
            return ast.literal_eval(arg)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise SpecError(
                f"{_where(index, canonical)}: {label} = {ast.unparse(arg)!r} is not a plain "
                "value; use numbers, True/False, quoted strings or tuples"
            ) from None

    layer: dict[str, Any] = {"type": canonical}
    if len(node.args) > len(kind.positional):
        named = ", ".join(kind.positional) or "no arguments by position"
        raise SpecError(
            f"{_where(index, canonical)}: {len(node.args)} arguments by position, but "
            f"{canonical} takes {named} (input sizes are inferred); write e.g. {kind.example}"
        )
    for name, arg in zip(kind.positional, node.args, strict=False):
        if isinstance(arg, ast.Starred):
            raise SpecError(f"{_where(index, canonical)}: *args are not allowed; name each value")
        layer[name] = literal(arg, name)
    for kw in node.keywords:
        if kw.arg is None:
            raise SpecError(
                f"{_where(index, canonical)}: **kwargs are not allowed; name each value"
            )
        if kw.arg in layer:
            raise SpecError(f"{_where(index, canonical)}: {kw.arg} is given twice; give it once")
        layer[kw.arg] = literal(kw.value, kw.arg)
    return layer


def parse_spec(spec: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Read text or a list of layer dicts into the canonical list of layer dicts.

    Checks layer names, field names and field types/ranges; shapes are checked by
    `infer_shapes`/`build_network`, which know the input. Values are kept as given
    (a list stays a list) and fields are put in a fixed order, so equal specs are equal.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise SpecError("spec is empty; write e.g. '2-3-3-4 sigmoid' or 'Linear(10) -> ReLU'")
        if _COMPACT_RE.match(text):
            raw: list[Any] = _parse_compact(text)
        else:
            segments = [s for s in re.split(r"->|\n", text)]
            if any(not s.strip() for s in segments):
                raise SpecError(
                    f"spec {text!r} has an empty layer between separators; write layers "
                    "separated by '->', e.g. 'Linear(10) -> ReLU'"
                )
            raw = [_parse_segment(i, s) for i, s in enumerate(segments)]
    elif isinstance(spec, (list, tuple)):
        # a list may mix dicts and one-layer texts such as "Conv2d(10, 5)"
        raw = [_parse_segment(i, s) if isinstance(s, str) else s for i, s in enumerate(spec)]
    else:
        raise SpecError(
            f"spec must be text or a list of layer dicts, got {type(spec).__name__}; write "
            'e.g. \'2-3-3-4 sigmoid\' or [{"type": "Linear", "out_features": 3}]'
        )
    if not raw:
        raise SpecError("spec has no layers; add at least one, e.g. Linear(out_features=10)")
    return [_normalize_layer(i, layer) for i, layer in enumerate(raw)]


def _format_value(value: Any) -> str:
    return repr(value)


def _layer_text(layer: Mapping[str, Any]) -> str:
    args = [f"{k}={_format_value(v)}" for k, v in layer.items() if k != "type"]
    return f"{layer['type']}({', '.join(args)})" if args else str(layer["type"])


def _compact_text(spec: list[dict[str, Any]]) -> str | None:
    """The '2-3-3-4 sigmoid' form of a spec, or None when the spec has another shape."""
    if spec[0]["type"] != "Linear" or "in_features" not in spec[0]:
        return None
    step = 2 if len(spec) > 1 and spec[1]["type"] != "Linear" else 1
    if len(spec) % step:
        return None
    activation = spec[1]["type"] if step == 2 else None
    by_layer = {v: k for k, v in _COMPACT_ACTIVATIONS.items()}
    if activation is not None and activation not in by_layer:
        return None
    bias_values = {layer.get("bias", None) for layer in spec[::step]}
    if bias_values not in ({None}, {False}):
        return None
    sizes = [spec[0]["in_features"]]
    for i in range(0, len(spec), step):
        linear = spec[i]
        allowed = {"type", "out_features", "bias"} | ({"in_features"} if i == 0 else set())
        if linear["type"] != "Linear" or set(linear) - allowed:
            return None
        if step == 2 and spec[i + 1] != {"type": activation}:
            return None
        sizes.append(linear["out_features"])
    text = "-".join(str(s) for s in sizes)
    if activation:
        text += " " + by_layer[activation]
    if bias_values == {False}:
        text += " nobias"
    return text


def spec_to_text(spec: str | Sequence[Mapping[str, Any]]) -> str:
    """The canonical text of a spec: compact ``"2-3-4 tanh"`` when it fits, else ``A -> B``.

    ``spec_to_text(parse_spec(t)) == t`` for canonical text ``t``, and
    ``parse_spec(spec_to_text(s)) == parse_spec(s)`` for every valid spec ``s``.
    """
    layers = parse_spec(spec)
    compact = _compact_text(layers)
    if compact is not None:
        return compact
    return " -> ".join(_layer_text(layer) for layer in layers)


# ---------------------------------------------------------------------- shape inference


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


def _infer_layer(index: int, layer: Mapping[str, Any], shape: tuple[int, ...]) -> _Inferred:
    kind = _KINDS[layer["type"]]
    name = kind.name

    def get(field: str) -> Any:
        f = kind.field(field)
        return layer.get(field, None if f is None else f.default)

    if name == "Linear":
        _need_dims(index, kind, shape, (1,))
        _check_given(index, kind, layer, "in_features", shape[0], "the input's feature count")
        out = get("out_features")
        ctor = {"in_features": shape[0], "out_features": out, "bias": get("bias")}
        return _Inferred(ctor, (out,), shape[0] * out + (out if get("bias") else 0))
    if name == "Conv2d":
        _need_dims(index, kind, shape, (3,))
        _check_given(index, kind, layer, "in_channels", shape[0], "the input's channel count")
        k, s, d = _pair(get("kernel_size")), _pair(get("stride")), _pair(get("dilation"))
        padding = get("padding")
        if padding == "same":
            if s != (1, 1):
                raise SpecError(
                    f"{_where(index, name)}: padding='same' needs stride 1, got stride "
                    f"{get('stride')!r}; use stride=1 or a number for padding"
                )
            if any(d[i] * (k[i] - 1) % 2 for i in (0, 1)):
                # torch then pads one side more than the other (and warns); seed 001 gives
                # this as the reason kernels are odd
                raise SpecError(
                    f"{_where(index, name)}: padding='same' with kernel_size "
                    f"{get('kernel_size')!r} would pad one side more than the other; use an "
                    "odd kernel_size (3, 5, 7) or a number for padding"
                )
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
    if name in ("MaxPool2d", "AvgPool2d"):
        _need_dims(index, kind, shape, (3,))
        k = _pair(get("kernel_size"))
        s = _pair(get("stride")) if get("stride") is not None else k
        p = _pair(get("padding"))
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise SpecError(
                f"{_where(index, name)}: padding {get('padding')!r} is more than half the "
                f"kernel_size {get('kernel_size')!r}; use padding ≤ {min(k) // 2}"
            )
        out_hw = _pool_or_conv_out(index, kind, (shape[1], shape[2]), k, s, p, (1, 1))
        return _Inferred({"kernel_size": k, "stride": s, "padding": p}, (shape[0], *out_hw), 0)
    if name == "AdaptiveAvgPool1d":
        _need_dims(index, kind, shape, (2,))
        return _Inferred({"output_size": get("output_size")}, (shape[0], get("output_size")), 0)
    if name == "AdaptiveAvgPool2d":
        _need_dims(index, kind, shape, (3,))
        o = _pair(get("output_size"))
        return _Inferred({"output_size": o}, (shape[0], *o), 0)
    if name == "Dropout":
        return _Inferred({"p": float(get("p"))}, shape, 0)
    if name == "Dropout2d":
        # torch warns (and treats the input differently) for 3-D batches; keep to images
        _need_dims(index, kind, shape, (3,))
        return _Inferred({"p": float(get("p"))}, shape, 0)
    if name in ("BatchNorm1d", "BatchNorm2d"):
        _need_dims(index, kind, shape, (1, 2) if name == "BatchNorm1d" else (3,))
        _check_given(index, kind, layer, "num_features", shape[0], "the input's channel count")
        ctor = {
            "num_features": shape[0],
            "eps": float(get("eps")),
            "momentum": float(get("momentum")),
        }
        return _Inferred(ctor, shape, 2 * shape[0])
    if name == "LayerNorm":
        given = layer.get("normalized_shape")
        if given is None:
            normalized = shape  # the whole sample, as torch's image example writes it
        elif isinstance(given, (list, tuple)):
            normalized = tuple(given)
        else:
            normalized = (given,)
        if tuple(shape[len(shape) - len(normalized) :]) != normalized or len(normalized) > len(
            shape
        ):
            raise SpecError(
                f"{_where(index, name)}: normalized_shape={given!r} does not match the end of "
                f"the input shape {_fmt_shape(shape)}; remove normalized_shape (it is inferred) "
                "or give trailing sizes of the input"
            )
        n = math.prod(normalized)
        return _Inferred(
            {"normalized_shape": list(normalized), "eps": float(get("eps"))}, shape, 2 * n
        )
    if name == "Flatten":
        nd = len(shape) + 1  # torch counts the batch dimension
        start, end = get("start_dim"), get("end_dim")
        s = start + nd if start < 0 else start
        e = end + nd if end < 0 else end
        if not (1 <= s < nd) or not (1 <= e < nd) or s > e:
            raise SpecError(
                f"{_where(index, name)}: start_dim={start}, end_dim={end} do not pick dimensions "
                f"of the input (batch, {', '.join(map(str, shape))}) after the batch; use "
                "Flatten() to flatten everything but the batch"
            )
        flat = math.prod(shape[s - 1 : e])
        out = (*shape[: s - 1], flat, *shape[e:])
        return _Inferred({"start_dim": start, "end_dim": end}, out, 0)
    if name in ("Softmax", "LogSoftmax"):
        nd = len(shape) + 1
        dim = get("dim")
        if not -nd <= dim < nd or dim in (0, -nd):
            raise SpecError(
                f"{_where(index, name)}: dim={dim} is not a dimension of one sample of shape "
                f"{_fmt_shape(shape)} (dim 0 is the batch: normalising over it mixes samples); "
                "use dim=1 or dim=-1"
            )
        return _Inferred({"dim": dim}, shape, 0)
    if name == "LeakyReLU":
        return _Inferred({"negative_slope": float(get("negative_slope"))}, shape, 0)
    if name == "GELU":
        return _Inferred({"approximate": get("approximate")}, shape, 0)
    return _Inferred({}, shape, 0)  # ReLU, Sigmoid, Tanh


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


def on_meta(make: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module without running its random init (allocate, values unset).

    Layers draw their default init from the global RNG as they are made; made on the
    meta device they draw nothing, so building never disturbs a run that is replaying
    dropout masks in another session of the same server. Fill every parameter after.
    """
    with torch.device("meta"):
        module = make()
    return module.to_empty(device="cpu")


def init_parameters(model: nn.Module, seed: int) -> nn.Module:
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

"""The layer types the builder knows: one declaration per type, with its fields and checks.

To teach the builder a layer type, add its `_LayerKind` to `_KIND_TABLE` here and its
shape rule to `gradviz.train.shapes._INFER`; the UI offers types in table order.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gradviz.errors import SpecError

__all__ = ["layer_types"]

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



_EPS = _Field("eps", "pos_float", 1e-5)
_BN_MOMENTUM = _Field("momentum", "prob", 0.1)
_POOL = (
    _Field("kernel_size", "pos_pair", _REQUIRED),
    _Field("stride", "pos_pair_or_none", None),
    _Field("padding", "nonneg_pair", 0),
)
_ANY = "any input"
_KIND_TABLE: tuple[_LayerKind, ...] = (
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
        _POOL,
        ("kernel_size", "stride", "padding"),
        "a (channels, height, width) input",
        "MaxPool2d(kernel_size=2)",
    ),
    _LayerKind(
        "AvgPool2d",
        _POOL,
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
    _LayerKind("Dropout", (_Field("p", "prob", 0.5),), ("p",), _ANY, "Dropout(p=0.5)"),
    _LayerKind(
        "Dropout2d",
        (_Field("p", "prob", 0.5),),
        ("p",),
        "a (channels, height, width) input",
        "Dropout2d(p=0.5)",
    ),
    _LayerKind(
        "BatchNorm1d",
        (_Field("num_features", "pos_int", None, inferred=True), _EPS, _BN_MOMENTUM),
        (),
        "a (features,) or (channels, length) input",
        "BatchNorm1d",
    ),
    _LayerKind(
        "BatchNorm2d",
        (_Field("num_features", "pos_int", None, inferred=True), _EPS, _BN_MOMENTUM),
        (),
        "a (channels, height, width) input",
        "BatchNorm2d",
    ),
    _LayerKind(
        "LayerNorm",
        (_Field("normalized_shape", "shape", None, inferred=True), _EPS),
        (),
        _ANY,
        "LayerNorm",
    ),
    _LayerKind(
        "Flatten",
        (_Field("start_dim", "int", 1), _Field("end_dim", "int", -1)),
        ("start_dim", "end_dim"),
        _ANY,
        "Flatten",
    ),
    _LayerKind("ReLU", (), (), _ANY, "ReLU"),
    _LayerKind(
        "LeakyReLU",
        (_Field("negative_slope", "float", 0.01),),
        ("negative_slope",),
        _ANY,
        "LeakyReLU(negative_slope=0.01)",
    ),
    _LayerKind("Sigmoid", (), (), _ANY, "Sigmoid"),
    _LayerKind("Tanh", (), (), _ANY, "Tanh"),
    _LayerKind(
        "GELU",
        (_Field("approximate", "gelu_mode", "none"),),
        ("approximate",),
        _ANY,
        "GELU",
    ),
    _LayerKind("Softmax", (_Field("dim", "int", 1),), ("dim",), _ANY, "Softmax(dim=1)"),
    _LayerKind(
        "LogSoftmax", (_Field("dim", "int", 1),), ("dim",), _ANY, "LogSoftmax(dim=1)"
    ),
)

_KINDS = {k.name: k for k in _KIND_TABLE}
_KINDS_LOWER = {name.lower(): name for name in _KINDS}


def layer_types() -> tuple[str, ...]:
    """The layer types the builder knows, in the order the UI should offer them."""
    return tuple(_KINDS)


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



"""Read a layer list (text or dicts) into canonical layer dicts, and write it back as text.

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
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gradviz.errors import SpecError
from gradviz.train.layer_kinds import (
    _KINDS,
    _KINDS_LOWER,
    _REQUIRED,
    _check_value,
    _suggest,
    _where,
)

__all__ = ["parse_spec", "spec_to_text"]

# Words allowed after the sizes in compact text, and the layer each one stands for.
_COMPACT_ACTIVATIONS = {
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "gelu": "GELU",
    "leakyrelu": "LeakyReLU",
}
_COMPACT_RE = re.compile(r"^\s*\d+(\s*-\s*\d+)+(\s+[A-Za-z_]+)*\s*$")


def _canonical(index: int, type_name: str) -> str:
    """The declared spelling of a layer type, matched without regard to case."""
    canonical = _KINDS_LOWER.get(type_name.lower())
    if canonical is None:
        hint = _suggest(type_name, list(_KINDS))
        raise SpecError(f"{_where(index)}: unknown layer type {type_name!r}; {hint}")
    return canonical


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
    canonical = _canonical(index, type_name)
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
    canonical = _canonical(index, type_name)
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


def parse_spec(spec: str | Sequence[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
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


def spec_to_text(spec: str | Sequence[Mapping[str, Any] | str]) -> str:
    """The canonical text of a spec: compact ``"2-3-4 tanh"`` when it fits, else ``A -> B``.

    ``spec_to_text(parse_spec(t)) == t`` for canonical text ``t``, and
    ``parse_spec(spec_to_text(s)) == parse_spec(s)`` for every valid spec ``s``.
    """
    layers = parse_spec(spec)
    compact = _compact_text(layers)
    if compact is not None:
        return compact
    return " -> ".join(_layer_text(layer) for layer in layers)

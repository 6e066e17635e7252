"""A step's backward formula with that step's numbers written in, for small tensors.

`numbers_latex(step)` rewrites the gradient part of the node's LaTeX formula, replacing
each symbol bound to a tensor of at most `MAX_ELEMENTS` elements by its values (a
``bmatrix``, or a number). Bindings say which symbol is which tensor: ``out0`` is the
first gradient the node received, ``in1`` what it sent along its second edge, any other
name a value the node saved (``mat2``, ``alpha``). Nodes without a binding get the
numbers they received and sent, so every small step shows its arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BINDINGS", "MAX_ELEMENTS", "formula_lines", "latex_value", "numbers_latex"]

MAX_ELEMENTS = 16
_Y, _X = r"\bar{y}", r"\bar{x}"
_UNARY_RESULT = {_Y: "out0", "y": "result", _X: "in0"}
_UNARY_SELF = {_Y: "out0", "x": "self", _X: "in0"}
_BINARY = {_Y: "out0", "a": "self", "b": "other", r"\bar{a}": "in0", r"\bar{b}": "in1"}
_ADD = {_Y: "out0", r"\alpha": "alpha", r"\bar{a}": "in0", r"\bar{b}": "in1"}
_COPY = {r"\bar{Y}": "out0", r"\bar{X}": "in0"}
BINDINGS: dict[str, dict[str, str]] = {
    "AddmmBackward0": {
        r"\bar{Y}": "out0", "A": "mat1", "B": "mat2", r"\alpha": "alpha", r"\beta": "beta",
        r"\bar{M}": "in0", r"\bar{A}": "in1", r"\bar{B}": "in2",
    },
    "MmBackward0": {
        r"\bar{Y}": "out0", "A": "self", "B": "mat2", r"\bar{A}": "in0", r"\bar{B}": "in1",
    },
    "MulBackward0": _BINARY,
    "DivBackward0": _BINARY,
    "AddBackward0": _ADD,
    "SubBackward0": _ADD,
    "ReluBackward0": _UNARY_RESULT,
    "SigmoidBackward0": _UNARY_RESULT,
    "TanhBackward0": _UNARY_RESULT,
    "ExpBackward0": _UNARY_RESULT,
    "LogSoftmaxBackward0": _UNARY_RESULT,
    "SoftmaxBackward0": _UNARY_RESULT,
    "SqrtBackward0": _UNARY_RESULT,
    "LogBackward0": _UNARY_SELF,
    "AbsBackward0": _UNARY_SELF,
    "PowBackward0": {**_UNARY_SELF, "p": "exponent"},
    "NegBackward0": {_Y: "out0", _X: "in0"},
    "SumBackward0": {_Y: "out0", _X: "in0"},
    "MeanBackward0": {_Y: "out0", _X: "in0", "N": "self_sym_numel"},
    "TBackward0": _COPY,
    "CloneBackward0": _COPY,
    "ViewBackward0": _COPY,
    "UnsafeViewBackward0": _COPY,
    "ReshapeAliasBackward0": _COPY,
    "MseLossBackward0": {
        r"\bar{\ell}": "out0", "x": "self", "t": "target", _X: "in0", r"\bar{t}": "in1",
    },
    "AccumulateGrad": {r"\bar{y}": "out0"},
}

# One token: a \bar{..} symbol, a text-like group (never substituted inside), a control
# word, a single letter, or any other character.
_TOKEN = re.compile(
    r"\\bar\{\\?[A-Za-z]+\}"  # \bar{x}, \bar{\ell}
    r"|\\(?:text|operatorname|mathrm|mathbb)\{[^{}]*\}"
    r"|\\[A-Za-z]+|[A-Za-z]|\s+|."
)
# Equations of one formula are separated by a comma and a LaTeX space.
_SEPARATOR = re.compile(r",\s*(?:\\quad|\\ )(?:\s*\\ )*\s*")
_MARK = "\x00"  # ends a substituted value while the subscripts after it are tidied


def _number(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    text = f"{float(v):.4g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = rf"{mant}\times 10^{{{int(exp)}}}"
    return text


def latex_value(value: Any) -> str:
    """A number, or a tensor as a ``bmatrix`` (vectors as one row, more axes flattened to
    rows of the last axis), with 4 significant digits."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        text = _number(float(arr))
        return f"({text})" if text.startswith("-") else text
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(-1, arr.shape[-1])
    body = r" \\ ".join(" & ".join(_number(v) for v in row) for row in rows)
    return rf"\begin{{bmatrix}} {body} \end{{bmatrix}}"


def _small(value: Any) -> bool:
    if value is None or isinstance(value, (str, tuple)):
        return False
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return arr.size <= MAX_ELEMENTS and bool(np.all(np.isfinite(arr)))


def _values(step: Any, binding: Mapping[str, str]) -> dict[str, Any]:
    """Symbol -> value, for the bound values that exist and are small enough."""
    out: dict[str, Any] = {}
    for symbol, name in binding.items():
        if name.startswith("out") and name[3:].isdigit():
            seq = step.grad_outputs
        elif name.startswith("in") and name[2:].isdigit():
            seq = step.grad_inputs
        else:
            if name in step.saved and _small(step.saved[name]):
                out[symbol] = step.saved[name]
            continue
        i = int(name[3:] if name.startswith("out") else name[2:])
        if i < len(seq) and _small(seq[i]):
            out[symbol] = seq[i]
    return out


def _substitute(equation: str, values: Mapping[str, Any]) -> tuple[str, int]:
    out: list[str] = []
    count = 0
    for tok in _TOKEN.findall(equation):
        if tok in values:
            out.append(latex_value(values[tok]) + _MARK)
            # A scalar setting (alpha = 1) alone does not make a line worth showing.
            count += tok.startswith(r"\bar") or np.ndim(values[tok]) > 0
        else:
            out.append(tok)
    # An index subscript after a substituted tensor ("\bar{x}_i") goes: the matrix stands
    # for every index at once.
    text = re.sub(_MARK + r"_(?:\{[^{}]*\}|[A-Za-z0-9])", "", "".join(out))
    return text.replace(_MARK, ""), count


def formula_lines(formula: str) -> list[str]:
    """The formula one equation a line: the forward definition first, if it has one, then
    each gradient, so a narrow column need not scroll sideways."""
    head, sep, _ = formula.partition(r":\quad")
    lines = [head.strip() + r":"] if sep else []
    return lines + [e.strip() for e in _SEPARATOR.split(_gradient_part(formula)) if e.strip()]


def _gradient_part(formula: str) -> str:
    # "Y = f(X):\quad grads" -> the grads; a formula of gradients only is taken whole.
    return formula.split(r":\quad", 1)[1] if r":\quad" in formula else formula


def _absent(equation: str, step: Any, binding: Mapping[str, str]) -> bool:
    """Whether the equation's left side is an edge that carried no gradient."""
    lhs = equation.split("=", 1)[0].strip()
    for symbol, name in binding.items():
        if lhs.startswith(symbol) and name.startswith("in") and name[2:].isdigit():
            i = int(name[2:])
            return i >= len(step.grad_inputs) or step.grad_inputs[i] is None
    return False


def _fallback(step: Any, names: Sequence[str | None]) -> list[str]:
    lines = []
    received = [g for g in step.grad_outputs if _small(g)]
    if received:
        lines.append(r"\text{received } \bar{y} = " + latex_value(received[0]))
    for i, g in enumerate(step.grad_inputs):
        if _small(g):
            to = (names[i] if i < len(names) else None) or f"edge {i}"
            lines.append(rf"\text{{sent to {_escape(to)}: }} \bar{{x}}_{{{i}}} = " + latex_value(g))
    return lines


def _escape(text: str) -> str:
    return re.sub(r"([_#%&$])", r"\\\1", text)


def numbers_latex(step: Any, names: Sequence[str | None] = ()) -> list[str]:
    """The step's formula with its small tensors' numbers in, one LaTeX line per equation.

    step: a `gradviz.backward.stepper.Step`. names: labels of the nodes its edges lead to
    (for the lines of a node without a binding). Empty when every tensor is too large.
    """
    binding = BINDINGS.get(step.node.grad_fn or step.node.label) or BINDINGS.get(step.node.label)
    if binding is None and step.node.kind in ("param", "leaf"):
        binding = BINDINGS["AccumulateGrad"]
    if binding is None or not step.formula:
        return _fallback(step, names)
    values = _values(step, binding)
    lines = []
    for equation in _SEPARATOR.split(_gradient_part(step.formula)):
        if _absent(equation, step, binding):
            continue
        line = _equation(equation.strip(), values)
        if line:
            lines.append(line)
    return lines


def _equation(equation: str, values: Mapping[str, Any]) -> str | None:
    """``lhs = rhs`` as ``lhs = rhs with numbers = lhs's numbers`` (None: nothing small)."""
    lhs, eq, rhs = equation.partition("=")
    if not eq:
        text, count = _substitute(equation, values)
        return text if count else None
    rhs_text, count = _substitute(rhs.strip(), values)
    result, result_count = _substitute(lhs.strip(), values)
    parts = [lhs.strip(), rhs_text if count else rhs.strip()]
    if result_count and result != lhs.strip():
        parts.append(result)
    return " = ".join(parts) if count or result_count else None

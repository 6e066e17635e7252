"""The registry of NumPy backward rules, one entry per autograd node name.

A rule is a plain NumPy function of a `RuleContext` (what the autograd node saved during
forward, the shapes around it, and the gradients it received) that returns the gradients
the node sends to each of its next edges. Forward values come from the node's saved
tensors (``node._saved_*``), converted to float64 NumPy arrays by `context_from_node`;
nothing inside a rule may call torch.

Each entry keeps together the rule, its LaTeX formula and `example`: a Hypothesis-driven
builder of a small torch program whose graph contains that node, which the generic
property test in ``tests/test_numpy_rules.py`` runs against torch in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn

__all__ = ["Case", "Rule", "RuleContext", "RULES", "rule", "sum_to"]

Grads = tuple[np.ndarray | None, ...]
# A NumPy backward rule: the gradient for each next edge (None where the edge is absent).
RuleFn = Callable[["RuleContext"], Sequence[np.ndarray | None]]


@dataclass(frozen=True)
class RuleContext:
    """Everything a NumPy rule may read about one autograd node.

    saved: the node's saved attributes without the ``_saved_`` prefix (``mat1``,
        ``alpha``, ``dim``...). Floating tensors become float64 arrays, integer/bool
        tensors keep their dtype, lists of tensors become tuples of arrays, other values
        stay Python values (int, float, bool, tuple of ints, None).
    grad_outputs: the gradient arriving for each forward output (None where none came).
    input_shapes: the shape of each next edge's tensor, i.e. the shape each returned
        gradient must have; None where the edge is absent (input did not need grad).
    output_shapes: the shape of each forward output of the op.
    complex_inputs: which next edges carry complex tensors (empty: none do). Complex
        gradients follow torch's convention: the conjugate Wirtinger derivative, i.e.
        dL/dRe(z) + i dL/dIm(z) for the real loss L.
    """

    name: str
    saved: Mapping[str, Any]
    grad_outputs: Grads
    input_shapes: tuple[tuple[int, ...] | None, ...]
    output_shapes: tuple[tuple[int, ...], ...] = ()
    complex_inputs: tuple[bool, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.saved[key]

    @property
    def grad(self) -> np.ndarray:
        """The first (usually only) incoming gradient."""
        g = self.grad_outputs[0]
        if g is None:
            return np.zeros(self.output_shapes[0])
        return g


@dataclass(frozen=True)
class Case:
    """A small torch program for a rule's property test.

    `fn(*inputs)` must return a tensor (or tuple) whose autograd graph contains a node
    named like the rule. Inputs are float64 tensors; those with requires_grad=True are
    the ones whose gradients are compared.
    """

    inputs: tuple[Any, ...]
    fn: Callable[..., Any]


@dataclass(frozen=True)
class Rule:
    name: str
    fn: RuleFn
    formula: str
    example: Callable[[DrawFn], Case] | None = field(default=None, repr=False)
    # Rules that are exact only for some inputs say so here (shown in the UI).
    note: str = ""
    # Whether the rule reads complex tensors correctly; the others are refused them.
    complex: bool = False


RULES: dict[str, Rule] = {}


def rule(
    *names: str,
    formula: str,
    example: Callable[[DrawFn], Case] | None = None,
    note: str = "",
    complex: bool = False,
) -> Callable[[RuleFn], RuleFn]:
    """Register `fn` as the NumPy backward of every autograd node in `names`.

    complex=True says the rule handles complex tensors (torch's conjugate Wirtinger
    convention); nodes with complex tensors are otherwise refused.
    """

    def register(fn: RuleFn) -> RuleFn:
        for name in names:
            if name in RULES:
                raise RuntimeError(f"two NumPy rules registered for {name}")
            RULES[name] = Rule(name=name, fn=fn, formula=formula, example=example, note=note,
                              complex=complex)
        return fn

    return register


def sum_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Reduce a broadcast gradient to `shape`, as the autograd engine does for each edge."""
    grad = np.asarray(grad)
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead > 0:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)

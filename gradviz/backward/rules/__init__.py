"""NumPy backward rules for autograd nodes: the independent "manual backprop".

Importing this package registers every rule module below.
"""

from __future__ import annotations

# Each family module registers its rules when imported; a new family is listed here.
from gradviz.backward.rules import (  # noqa: F401, E402
    activations,
    arith,
    conv,
    decomp,
    index,
    inplace,
    join,
    layers,
    linalg,
    loss,
    pad,
    reduce,
    resample,
    scatter,
    solve,
    special,
    spectral,
    unary,
    view,
)
from gradviz.backward.rules._context import (
    compare,
    context_from_node,
    reference_for,
    saved_values,
    to_numpy,
)
from gradviz.backward.rules._registry import RULES, Case, Rule, RuleContext, rule, sum_to

__all__ = [
    "RULES",
    "Case",
    "compare",
    "Rule",
    "RuleContext",
    "context_from_node",
    "reference_for",
    "rule",
    "saved_values",
    "sum_to",
    "to_numpy",
]

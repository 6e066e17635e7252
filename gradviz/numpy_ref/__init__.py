"""NumPy backward rules for autograd nodes: the independent "manual backprop".

Importing this package registers every rule module below.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._context import compare, context_from_node, reference_for, saved_values, to_numpy
from ._registry import RULES, Case, Rule, RuleContext, rule, sum_to

# Every module named rules_*.py holds rules for one family of ops.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("rules_"):
        importlib.import_module(f"{__name__}.{_info.name}")

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

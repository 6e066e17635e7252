"""gradviz: see and check PyTorch's autograd.

Trace a program's autograd graph into Graphviz, step through backward node by node with an
independent NumPy check of every gradient, build and train the tutorial networks, and
property-test custom autograd Functions.
"""

from __future__ import annotations

from .errors import ArgumentError, DataError, GradvizError, SpecError, TraceError

__all__ = [
    "ArgumentError",
    "DataError",
    "GradvizError",
    "SpecError",
    "TraceError",
]

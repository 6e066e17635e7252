"""gradviz: see and check PyTorch's autograd.

Trace a program's autograd graph into Graphviz, step through backward node by node with an
independent NumPy check of every gradient, build and train the tutorial networks, and
property-test custom autograd Functions.
"""

from __future__ import annotations

from .drawing import plan_view, to_dot
from .errors import ArgumentError, DataError, GradvizError, SpecError, TraceError
from .examples import example_names, trace_example
from .export import render
from .graph import Graph, Node, SavedTensor
from .tracing import capture, trace

__all__ = [
    "ArgumentError",
    "DataError",
    "GradvizError",
    "Graph",
    "Node",
    "SavedTensor",
    "SpecError",
    "TraceError",
    "capture",
    "example_names",
    "plan_view",
    "render",
    "to_dot",
    "trace",
    "trace_example",
]

"""gradviz: see and check PyTorch's autograd.

Trace a program's autograd graph into Graphviz, step through backward node by node with an
independent NumPy check of every gradient, build and train the tutorial networks, and
property-test custom autograd Functions.
"""

from __future__ import annotations

from . import explorer, strategies
from .builder import Network, build_network, layer_table, parse_spec, spec_to_text
from .checking import Failure, FunctionReport, assert_function_ok, check_function
from .data import TrainData, load_mnist_csv, load_mnist_idx
from .drawing import plan_view, to_dot
from .errors import ArgumentError, DataError, GradvizError, SpecError, TraceError
from .examples import example_names, trace_example
from .export import render
from .graph import Graph, Node, SavedTensor
from .presets import Preset, get_preset, presets
from .stepper import BackwardStepper, Step
from .tracing import capture, trace
from .training import Checkpoint, StopTraining, TrainResult, load_checkpoint, save_checkpoint, train

__all__ = [
    "ArgumentError",
    "BackwardStepper",
    "Checkpoint",
    "DataError",
    "Failure",
    "FunctionReport",
    "GradvizError",
    "Graph",
    "Network",
    "Node",
    "Preset",
    "SavedTensor",
    "SpecError",
    "Step",
    "StopTraining",
    "TraceError",
    "TrainData",
    "TrainResult",
    "assert_function_ok",
    "build_network",
    "capture",
    "check_function",
    "example_names",
    "explorer",
    "get_preset",
    "layer_table",
    "load_checkpoint",
    "load_mnist_csv",
    "load_mnist_idx",
    "parse_spec",
    "plan_view",
    "presets",
    "render",
    "save_checkpoint",
    "spec_to_text",
    "strategies",
    "to_dot",
    "trace",
    "trace_example",
    "train",
]

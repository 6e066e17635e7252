"""gradviz: see and check PyTorch's autograd.

Trace a program's autograd graph into Graphviz, step through backward node by node with an
independent NumPy check of every gradient, build and train the tutorial networks, and
property-test custom autograd Functions.
"""

from __future__ import annotations

from gradviz import explorer
from gradviz.backward.stepper import BackwardStepper, Step
from gradviz.check import Failure, FunctionReport, assert_function_ok, check_function, strategies
from gradviz.draw.dot import plan_view, to_dot
from gradviz.draw.export import render
from gradviz.errors import (
    ArgumentError,
    DataError,
    GradvizError,
    ModelUnavailable,
    SpecError,
    TraceError,
)
from gradviz.graph.model import Graph, Node, SavedTensor
from gradviz.graph.tracing import capture, trace
from gradviz.notebook import step_widget, widget  # lazy: anywidget loads on first call
from gradviz.train.builder import Network, build_network
from gradviz.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from gradviz.train.data import TrainData
from gradviz.train.flow import GradientFlow
from gradviz.train.mnist import load_mnist_csv, load_mnist_idx
from gradviz.train.results import StopTraining, TrainResult
from gradviz.train.shapes import layer_table
from gradviz.train.spec import parse_spec, spec_to_text
from gradviz.train.training import train
from gradviz.zoo.examples import example_names, trace_example
from gradviz.zoo.models import build_model, model_loss, model_names
from gradviz.zoo.presets import Preset, get_preset, presets

__all__ = [
    "ArgumentError",
    "BackwardStepper",
    "Checkpoint",
    "DataError",
    "Failure",
    "FunctionReport",
    "GradientFlow",
    "GradvizError",
    "Graph",
    "ModelUnavailable",
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
    "build_model",
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
    "model_loss",
    "model_names",
    "parse_spec",
    "plan_view",
    "presets",
    "render",
    "save_checkpoint",
    "spec_to_text",
    "step_widget",
    "strategies",
    "to_dot",
    "trace",
    "trace_example",
    "train",
    "widget",
]

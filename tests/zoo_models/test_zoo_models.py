"""The models users bring (torchvision classifiers, Hugging Face architectures from small
configs; random weights, nothing downloaded): each traces, draws its default view, and steps
in float64 with a NumPy reference for every node, all agreeing with torch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz import BackwardStepper, capture, trace
from gradviz.backward.rules import RULES
from gradviz.draw.cost import COST_BUDGET, layout_cost
from gradviz.draw.dot import to_dot
from gradviz.draw.plan import plan_view
from gradviz.errors import ArgumentError
from gradviz.graph.runs import repeated_runs
from gradviz.zoo.models import HF_ARCHS, TORCHVISION_MODELS, build_model, model_loss, model_names

NAMES = model_names()


def test_the_zoo_covers_the_families_users_bring():
    # Both libraries are test dependencies: an empty zoo would pass every test below.
    assert len([n for n in NAMES if not n.startswith("hf:")]) >= 10
    assert len([n for n in NAMES if n.startswith("hf:")]) >= 8


def _traced(name: str, dtype=torch.float32):
    model, inputs = build_model(name, dtype=dtype)
    with capture(model):
        loss = model_loss(model, inputs)
    return model, loss, trace(loss, model=model)


@pytest.mark.parametrize("name", NAMES)
def test_model_traces_draws_and_steps_with_every_reference_agreeing(name):
    model, loss, graph = _traced(name, torch.float64)
    view = plan_view(graph)
    # The default view lays out quickly whatever the topology (densenet's concatenations).
    assert layout_cost([i.id for i in view.items], view.edges) <= COST_BUDGET
    dot = to_dot(graph, view).source
    assert dot.startswith("digraph") and "->" in dot
    stepper = BackwardStepper(loss, model=model)
    types = {s.node.grad_fn for s in stepper.op_steps()}
    # A node type without a rule fails here, named, before any other check.
    assert sorted(types - set(RULES)) == []
    summary = stepper.summary()
    assert summary["missing"] == [] and summary["finite_differences"] == 0
    assert stepper.coverage == 1.0
    bad = [(s.node.label, s.max_rel_error) for s in stepper.op_steps() if not s.agrees]
    assert bad == []
    # Parameters get their gradients under their own names (wav2vec2 also marks its input
    # as requiring grad in training mode: that leaf is kept, but under no parameter's name).
    named = {n for n, p in model.named_parameters() if p.requires_grad}
    got = set(stepper.param_grads)
    assert got & named and all(k in named or k.startswith("leaf") for k in got)


@pytest.mark.parametrize("name, block, inner", [
    ("hf:bert", ("encoder.layer.0", "encoder.layer.1"), "encoder.layer.1.attention.self"),
    ("hf:gpt2", ("h.0", "h.1"), "h.0.attn"),
    # T5's first block alone holds the relative attention bias: its blocks differ.
    ("hf:t5", None, "encoder.block.0.layer.0.SelfAttention"),
    ("resnet18", ("layer1.0", "layer1.1"), "layer2.0.downsample.0"),
])
def test_clusters_carry_the_models_own_paths_and_repeated_blocks_roll(name, block, inner):
    _, _, graph = _traced(name)
    modules = {n.module for n in graph.nodes if n.module}
    assert inner in modules
    runs = [r.paths[:2] for r in repeated_runs(graph)]
    assert block in runs if block else runs == []
    # Drawn in full, the module's box carries its own path as its label.
    assert inner in to_dot(graph, depth=None, budget=None).source


@settings(max_examples=15, deadline=None)
@given(st.text(min_size=1, max_size=12).filter(
    lambda s: s not in TORCHVISION_MODELS and s[3:] not in HF_ARCHS))
def test_an_unknown_name_is_refused_naming_the_argument(name):
    with pytest.raises(ArgumentError, match="name"):
        build_model(name)


def test_transformers_imports_beside_the_cpu_torch():
    # transformers imports torchvision, whose C ops do not load on the CPU torch wheel.
    model, inputs = build_model("hf:wav2vec2")
    assert model_loss(model, inputs).ndim == 0

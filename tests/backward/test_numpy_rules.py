"""Every NumPy backward rule against torch, over random shapes and values (float64)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradviz.backward.rules import RULES, compare, context_from_node, reference_for

RULE_NAMES = sorted(n for n, r in RULES.items() if r.example is not None)


def _find(outputs, name):
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    seen = set()
    while stack:
        node = stack.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == name:
            return node
        stack.extend(f for f, _ in node.next_functions if f is not None)
    return None


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@pytest.mark.parametrize("name", RULE_NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rule_matches_torch(name, data):
    case = RULES[name].example(data.draw)
    outputs = [
        t for t in _as_tuple(case.fn(*case.inputs))
        if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()
    ]
    node = _find(outputs, name)
    assert node is not None, f"the example for {name} does not produce a {name} node"
    seen = {}

    def hook(grad_inputs, grad_outputs):
        seen["in"], seen["out"] = grad_inputs, grad_outputs

    handle = node.register_hook(hook)
    try:
        seeds = data.draw(st.integers(0, 2**16), label="grad seed")
        gen = torch.Generator().manual_seed(seeds)
        grads = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in outputs]
        torch.autograd.backward(outputs, grads, retain_graph=True)
    finally:
        handle.remove()
    ctx = context_from_node(node, seen["out"])
    ref = reference_for(ctx)
    assert ref is not None
    assert len(ref) == len(seen["in"])
    # A gradient sent along an absent edge (an input that needs none) is dropped by the
    # engine; some nodes (CatBackward0) still compute it, so it is not compared.
    actual = [
        None if f is None else g
        for (f, _), g in zip(node.next_functions, seen["in"], strict=True)
    ]
    max_abs, max_rel = compare(ref, actual)
    assert max_rel <= 1e-7 or max_abs <= 1e-10, (name, max_abs, max_rel)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 5), m=st.integers(1, 5), bias=st.booleans(),
       column_major=st.booleans())
def test_matmul_weight_gradients_come_back_in_torchs_layout(n, k, m, bias, column_major):
    # Same layout as torch lets the stepper compare in one pass, not tile by tile.
    x = torch.randn(n, k, dtype=torch.float64)
    w = torch.randn(m, k, dtype=torch.float64, requires_grad=True)
    mat2 = w.T if column_major else w.T.contiguous()
    y = torch.addmm(torch.zeros(m, dtype=torch.float64), x, mat2) if bias else x @ mat2
    name = "AddmmBackward0" if bias else "MmBackward0"
    node = _find([y], name)
    grads = (torch.randn_like(y),)
    ref = reference_for(context_from_node(node, grads))[-1]
    got = node(*grads)[-1]
    np.testing.assert_allclose(ref, got.numpy(), rtol=1e-12, atol=1e-12)
    assert ref.strides == got.numpy().strides


def test_rules_do_not_call_torch():
    # The examples build torch programs; the rules themselves must be NumPy only.
    for name, r in RULES.items():
        source = inspect.getsource(r.fn)
        assert "torch" not in source, f"the NumPy rule for {name} mentions torch"


def test_every_rule_has_formula_and_example():
    assert RULES, "no rules registered"
    for name, r in RULES.items():
        assert r.formula.strip(), name
        assert r.example is not None, f"{name} has no property-test example"


def test_sum_to_reduces_like_broadcasting():
    from gradviz.backward.rules import sum_to

    g = np.ones((4, 2, 3))
    assert sum_to(g, (2, 1)).tolist() == [[12.0], [12.0]]
    assert sum_to(g, (3,)).shape == (3,)


def test_where_torchs_nearest_backward_is_not_its_forwards_derivative_the_rule_follows_forward():
    # torch 2.13: 1-D nearest with a kept scale_factor 1.2 on length 4 reads x[floor(o / 1.2)]
    # forward, but its backward routes output o to input o. The rule must side with the
    # forward (central differences), so the stepper flags torch there.
    from gradviz import BackwardStepper

    x = torch.randn(1, 1, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 4, dtype=torch.float64)

    def f(x):
        return (torch.nn.functional.interpolate(x, scale_factor=1.2, mode="nearest") * w).sum()

    eps = 1e-6
    numeric = np.array([
        (f(x.detach() + eps * e) - f(x.detach() - eps * e)).item() / (2 * eps)
        for e in torch.eye(4, dtype=torch.float64).reshape(4, 1, 1, 4)
    ])
    steps = BackwardStepper(f(x))
    step = next(s for s in steps.steps if s.node.label == "UpsampleNearest1DBackward0")
    np.testing.assert_allclose(step.reference[0].ravel(), numeric, atol=1e-8)
    torch_grad = step.grad_inputs[0].ravel()
    assert not np.allclose(torch_grad, numeric)  # if this fails, torch fixed it: drop the note
    assert step.agrees is False

"""A step's formula with its numbers written in: the right numbers, only for small tensors."""

from __future__ import annotations

import re

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradviz.backward.numbers import MAX_ELEMENTS, formula_lines, latex_value, numbers_latex
from gradviz.backward.rules import RULES
from gradviz.backward.stepper import BackwardStepper


def _numbers(latex: str) -> list[float]:
    text = re.sub(r"\\times 10\^\{(-?\d+)\}", r"e\1", latex)
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                  elements=st.floats(-1e8, 1e8, allow_subnormal=False)))
def test_latex_value_shows_every_entry_to_four_digits(arr):
    text = latex_value(arr)
    shown = _numbers(text)
    assert len(shown) == arr.size
    np.testing.assert_allclose(shown, arr.reshape(-1), rtol=1e-3, atol=1e-300)
    assert ("bmatrix" in text) == (arr.ndim > 0)


def _step(stepper: BackwardStepper, name: str):
    return next(s for s in stepper if s.node.label == name)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4), seed=st.integers(0, 99))
def test_addmm_numbers_are_the_steps_own(n, k, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    w = torch.randn(m, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, generator=g, dtype=torch.float64, requires_grad=True)
    step = _step(BackwardStepper(torch.nn.functional.linear(x, w, b).sum()), "AddmmBackward0")
    lines = numbers_latex(step)
    # bias gradient (m entries) is always small; mat1 = x is shown when it is small.
    bias_line = next(line for line in lines if line.startswith(r"\bar{M}"))
    assert bias_line.endswith(latex_value(step.grad_inputs[0]))
    weight = [line for line in lines if line.startswith(r"\bar{B}")]
    small = x.numel() <= MAX_ELEMENTS and n * m <= MAX_ELEMENTS and k * m <= MAX_ELEMENTS
    if small:
        assert latex_value(x.numpy()) in weight[0]
        assert weight[0].endswith(latex_value(step.grad_inputs[2]))
    # x needs no gradient, so no line for it.
    assert not any(line.startswith(r"\bar{A}") for line in lines)


def test_large_tensors_stay_symbols_and_absent_edges_get_no_line():
    a = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert numbers_latex(_step(BackwardStepper((a * a.detach()).sum()), "MulBackward0")) == []
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64)
    step = _step(BackwardStepper((a * b).sum()), "MulBackward0")
    lines = numbers_latex(step)
    assert len(lines) == 1 and lines[0].startswith(r"\bar{a}")
    assert latex_value(b.numpy()) in lines[0]
    assert lines[0].endswith(latex_value(step.grad_inputs[0]))


def test_relu_uses_its_saved_result_and_a_node_without_binding_shows_what_it_sent():
    x = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    stepper = BackwardStepper(torch.relu(x).cumsum(0).sum())
    relu = numbers_latex(_step(stepper, "ReluBackward0"))
    assert relu == [r"\bar{x} = \begin{bmatrix} 3 & 2 & 1 \end{bmatrix} \odot \mathbb{1}"
                    r"[\begin{bmatrix} 0 & 2 & 0.5 \end{bmatrix} > 0] = "
                    r"\begin{bmatrix} 0 & 2 & 1 \end{bmatrix}"]
    cumsum = numbers_latex(_step(stepper, "CumsumBackward0"), ["ReluBackward0"])
    assert any(line.startswith(r"\text{received }") for line in cumsum)
    assert any(r"\text{sent to ReluBackward0: }" in line and line.endswith(
        r"\begin{bmatrix} 3 & 2 & 1 \end{bmatrix}") for line in cumsum)


def test_every_registered_formula_splits_into_lines_that_keep_its_text():
    for name, rule in RULES.items():
        if not rule.formula:
            continue
        lines = formula_lines(rule.formula)
        assert lines and all(lines), name
        squash = re.sub(r"[\s,:]|\\quad|\\ ", "", rule.formula)
        assert re.sub(r"[\s,:]|\\quad|\\ ", "", "".join(lines)) == squash, name

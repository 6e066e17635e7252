"""GradientFlow(budget=...): recording takes at most a share of the training time, by
widening the stride instead of slowing every step down."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_flow import _fit, _mlp
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.flow import GradientFlow
from gradviz.train.flow_keep import _Pacer


def test_without_a_budget_the_stride_is_the_one_given():
    flow = GradientFlow(every=2, capacity=1000)
    _fit(_mlp([4, 3, 1], nn.Tanh), flow, 40)
    assert flow.stride == 2 and flow.steps == list(range(1, 41, 2))


def test_a_budget_no_recorder_can_keep_widens_the_stride_and_keeps_the_grid():
    # A record always costs more than a billionth of a training step.
    flow = GradientFlow(every=1, capacity=1000, budget=1e-9)
    _fit(_mlp([4, 3, 1], nn.Tanh), flow, 300)
    steps = flow.steps
    gaps = np.diff(steps).tolist()
    # the first steps are not judged (one-off costs); then at strides 1 and 2 the
    # recorder's own clocked time doubles the stride at each record
    first = 2 * _Pacer.WARM + 1
    assert steps[:first] == list(range(1, first + 1)) and gaps[first] == 1
    assert gaps[first + 1 : first + 3] == [2, 4]
    # then whole steps are timed, and the stride jumps to what the budget needs
    assert all(g & (g - 1) == 0 for g in gaps) and gaps == sorted(gaps)
    assert all((s - 1) % g == 0 for s, g in zip(steps[1:], gaps, strict=True))  # from step 1
    assert flow.stride >= 64 and len(steps) < 20 and flow.steps_seen == 300


def test_a_generous_budget_on_a_slow_step_keeps_every_record():
    flow = GradientFlow(every=1, capacity=1000, budget=1.0, activations=False)
    model = _mlp([4, 3, 1], nn.Tanh)

    class Slow(nn.Module):  # a training step far dearer than one record
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            big = torch.randn(120, 120)
            for _ in range(10):
                big = big @ big / 120
            return self.inner(x) + 0 * big.sum()

    _fit(Slow(), flow, 12)
    assert flow.stride == 1 and flow.steps == list(range(1, 13))


@given(st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_a_bad_budget_names_itself(value):
    if isinstance(value, float) and 0 < value <= 1:
        assert _Pacer(value).budget == value
        return
    with pytest.raises(ArgumentError, match=r"budget=.*share of training time in \(0, 1\]"):
        GradientFlow(budget=value)

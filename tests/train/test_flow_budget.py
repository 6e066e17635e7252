"""GradientFlow(budget=...): recording takes at most a share of the training time, by
widening the stride instead of slowing every step down."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_flow import _fit, _mlp
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train import flow_keep
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


def _paced_stride(monkeypatch, *, first: float, read: float, steps: int = 400) -> int:
    """The stride a pacer leaves after ``steps`` optimizer steps of 1 s on a fake clock, a
    record costing 0.2 s (2.5% of a stride of 8), the first one ``first`` s more, and its
    reduction of records ``read`` s (timed once, as the recorder does)."""
    clock = [0.0]
    monkeypatch.setattr(flow_keep, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    pacer, stride = _Pacer(0.1), 8
    for step in range(1, steps + 1):
        kept = (step - 1) % stride == 0
        if kept:
            start = pacer.start()
            clock[0] += 0.2 + (first if step == 1 else 0.0)
            pacer.add(start)
        clock[0] += 1.0
        if kept and pacer.read is None:
            pacer.add(pacer.start() - read, read=True)
        stride *= pacer.widen(stride) if kept else 1
        pacer.step(step % stride == 0)
    return stride


def test_the_first_record_and_the_read_to_come_are_charged(monkeypatch):
    # within budget alone: the stride stays
    assert _paced_stride(monkeypatch, first=0.0, read=0.0) == 8
    # a first record, or a final read, dearer than the budget so far widens it, as the
    # time they take is recording's too (they are outside the steps the pacer compares)
    assert _paced_stride(monkeypatch, first=30.0, read=0.0) > 8
    assert _paced_stride(monkeypatch, first=0.0, read=30.0) > 8

"""How GradientFlow sees a training step: by its optimizer's steps when it has one (a
forward pre-hook goes on only for a step the stride keeps), by training forwards when not."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flow import _mlp
from torch import nn

from gradviz.train.flow import GradientFlow


def _run(model, flow, steps, evals=()):
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked: list[int] = []  # forward pre-hooks on the model as each step began
    with flow.attach(model, opt):
        for i in range(steps):
            if i < len(evals) and evals[i]:
                with torch.no_grad():
                    model(X)  # an evaluation: not a step, and not the step it waits for
            hooked.append(len(model._forward_pre_hooks))
            opt.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
            opt.step()
    return hooked


def _same(a: GradientFlow, b: GradientFlow) -> None:
    assert a.steps == b.steps and a.steps_seen == b.steps_seen
    for x, y in zip(a.records, b.records, strict=True):
        np.testing.assert_array_equal(x.grad, y.grad)
        np.testing.assert_array_equal(x.update_ratio, y.update_ratio)
        np.testing.assert_array_equal(x.act, y.act)


@settings(max_examples=20, deadline=None)
@given(
    steps=st.integers(1, 24),
    every=st.integers(1, 4),
    evals=st.lists(st.booleans(), min_size=24, max_size=24),
)
def test_evaluation_forwards_between_steps_change_no_record(steps, every, evals):
    model = _mlp([4, 3, 1], nn.Tanh)
    twin = copy.deepcopy(model)
    plain, evaluated = GradientFlow(every=every), GradientFlow(every=every)
    _run(model, plain, steps)
    _run(twin, evaluated, steps, evals)
    _same(plain, evaluated)
    assert plain.steps == list(range(1, steps + 1, every)) and plain.steps_seen == steps


@settings(max_examples=10, deadline=None)
@given(steps=st.integers(2, 30), every=st.integers(2, 5))
def test_only_a_kept_step_runs_with_a_forward_hook(steps, every):
    flow = GradientFlow(every=every)
    hooked = _run(_mlp([4, 3, 1], nn.ReLU), flow, steps)
    # the pre-hook that hooks the step's gradients and modules, on kept steps only
    assert [i + 1 for i, n in enumerate(hooked) if n] == flow.steps
    assert set(hooked) == {0, 1}


def test_without_an_optimizer_each_training_forward_is_a_step():
    model = _mlp([4, 3, 1], nn.Tanh)
    X, y = torch.randn(8, 4), torch.randn(8, 1)
    with GradientFlow(model, every=2) as flow:
        for _ in range(7):
            with torch.no_grad():
                model(X)  # evaluations are not steps here either
            model.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    assert flow.steps == [1, 3, 5, 7] and flow.steps_seen == 7
    assert all(np.isfinite(r.update_ratio).all() for r in flow.records)


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_recording_leaves_no_hook_dict_on_any_parameter(with_optimizer):
    # A parameter keeps its hook dict once a hook was registered on it, and autograd then
    # calls into Python at every accumulation, after detach too (+0.3 µs per parameter).
    model = _mlp([4, 8, 1], nn.ReLU)
    X, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    flow = GradientFlow(every=2)
    with flow.attach(model, opt if with_optimizer else None):
        for _ in range(6):
            opt.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
            opt.step()
            flow.after_step()
    assert flow.steps == [1, 3, 5] and np.isfinite(flow.series("norm")[1]).all()
    for p in model.parameters():
        assert p._post_accumulate_grad_hooks is None and p._backward_hooks is None


@settings(max_examples=10, deadline=None)
@given(micro=st.integers(1, 4), seed=st.integers(0, 99))
def test_with_accumulation_a_record_has_the_gradients_the_optimizer_applied(micro, seed):
    torch.manual_seed(seed)
    model = _mlp([3, 5, 1], nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    applied = []
    with GradientFlow(model, optimizer=opt) as flow:
        for _ in range(3):
            opt.zero_grad()
            for _ in range(micro):  # several backward passes, one optimizer step
                model(torch.randn(8, 3)).square().mean().backward()
            applied.append({n: float(p.grad.norm()) for n, p in model.named_parameters()})
            opt.step()
    steps, norms = flow.series("norm")
    assert steps == [1, 2, 3]
    for row, want in zip(norms, applied, strict=True):
        assert row == pytest.approx([want[n] for n in flow.params], rel=1e-5)

"""The double_backward check and checks="all": right answers whichever evaluation path runs.

double_backward compares backward's own Jacobian (one vmapped autograd call, or a loop when
the backward cannot run under vmap) with finite differences of backward (points stacked
along a batch dim when a spot-check shows backward treats rows alone, else one by one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz.check import ALL_CHECKS, check_function
from gradviz.check._extra_checks import _hessian_batched
from gradviz.errors import ArgumentError
from gradviz.zoo.functions import function_examples, get_example


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_output


class _SquareWrongSecond(_Square):
    """First derivative right (2·x·g), its derivative in x wrong (g instead of 2·g)."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return (x + x.detach()) * grad_output


class _Normalize(torch.autograd.Function):
    """x / sum(x): every output depends on every input, so a leading batch dim changes the
    numbers and the batched finite differences must be refused by the spot-check."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x / x.sum()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = x.sum()  # in backward, so the double backward sees how s depends on x
        return grad_output / s - (grad_output * x).sum() / (s * s)


class _NormalizeWrongSecond(_Normalize):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = x.sum()
        return grad_output / s - (grad_output * x).sum() / (s * s.detach())


_POSITIVE = {"min_value": 0.5, "max_value": 2.0}


def _positive(shape):
    from gradviz.check import strategies as gst

    return gst.function_inputs(shapes=[shape], zeros=False, **_POSITIVE)


@pytest.mark.parametrize("fn", [_Square, _Normalize])
def test_a_right_double_backward_passes(fn):
    report = check_function(fn, inputs=_positive((4,)), max_examples=30, seed=1,
                            checks=["double_backward"])
    assert report.ok, str(report)
    assert "double_backward" in report.checks_run


@pytest.mark.parametrize("fn", [_SquareWrongSecond, _NormalizeWrongSecond])
def test_a_wrong_double_backward_is_caught(fn):
    report = check_function(fn, inputs=_positive((4,)), max_examples=30, seed=1,
                            checks=["double_backward"])
    assert [f.check for f in report.failures] == ["double_backward"], str(report)


def test_all_means_every_check_that_applies():
    sigmoid = get_example("sigmoid").load()
    report = check_function(sigmoid, shapes=[(3,)], max_examples=10, seed=0, checks="all")
    assert report.ok, str(report)
    ran = set(report.checks_run)
    assert "double_backward" in ran and "jacobian" in ran
    assert not {"reference", "jvp", "vmap"} & ran  # no reference, no jvp or vmap rule
    with_reference = check_function(sigmoid, shapes=[(3,)], max_examples=10, seed=0,
                                    checks="all", reference=torch.sigmoid)
    assert "reference" in with_reference.checks_run
    assert "checks='all'" in with_reference.reproduce


def test_reference_without_one_says_why_nothing_numerical_serves():
    with pytest.raises(ArgumentError, match="nothing numerical can replace") as info:
        check_function(_Square, shapes=[(3,)], checks=list(ALL_CHECKS))
    assert "checks='all'" in str(info.value)


_TWICE = [name for name, ex in function_examples().items()
          if ex.correct and name not in ("floor", "relu_in_place")]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(_TWICE), side=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_one_vmapped_call_gives_the_looped_rows(name, side, seed):
    example = get_example(name)
    fn = example.load()
    generator = torch.Generator().manual_seed(seed)
    shapes = [tuple(side if d == example.shapes[0][-1] else d for d in s) for s in example.shapes]
    if name == "linear":
        shapes = [(side, 4), (2, 4), (2,)]
    xs = [torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True)
          for s in shapes]
    outs = fn.apply(*xs)
    outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o.requires_grad]
    us = [torch.randn(o.shape, generator=generator, dtype=torch.float64, requires_grad=True)
          for o in outs]
    grads = torch.autograd.grad(outs, xs, us, create_graph=True, materialize_grads=True)
    wrt = xs + us
    n = sum(w.numel() for w in wrt)
    batched = _hessian_batched(grads, wrt, n)
    assert batched is not None, f"{name}: the vmapped call fell back"
    rows = []
    for g in grads:
        for e in range(g.numel()):
            if not g.requires_grad:
                rows.append(np.zeros(n))
                continue
            onehot = torch.zeros(g.numel(), dtype=g.dtype)
            onehot[e] = 1
            second = torch.autograd.grad(g, wrt, onehot.reshape(g.shape), retain_graph=True,
                                         allow_unused=True, materialize_grads=True)
            rows.append(np.concatenate([s.detach().numpy().ravel() for s in second]))
    np.testing.assert_array_equal(batched, np.stack(rows))

"""gradviz.check.strategies: shapes, broadcastable shapes, and tensors that hit zeros and ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz.check import strategies as gst
from gradviz.errors import ArgumentError


def test_all_is_exact():
    public = {
        name
        for name in vars(gst)
        if not name.startswith("_")
        and callable(getattr(gst, name))
        and getattr(getattr(gst, name), "__module__", None) == gst.__name__
    }
    assert set(gst.__all__) == public - {"check_shape"}
    assert gst.__all__ == sorted(gst.__all__)


@given(gst.shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
def test_shapes_respect_their_bounds(shape):
    assert 1 <= len(shape) <= 3 and all(2 <= side <= 5 for side in shape)


@given(st.data())
def test_broadcastable_shapes_broadcast(data):
    shape = data.draw(gst.shapes())
    other = data.draw(gst.broadcastable_shapes(shape))
    np.broadcast_shapes(shape, other)  # raises if they do not broadcast


@given(gst.tensors(shape=(3, 4), dtype=torch.float32, min_value=-2.0, max_value=1.5))
def test_tensors_have_the_asked_shape_dtype_and_range(x):
    assert x.shape == (3, 4) and x.dtype == torch.float32 and not x.requires_grad
    assert bool(((x >= -2.0) & (x <= 1.5)).all())


@given(gst.tensors(shape=gst.shapes(max_dims=2), requires_grad=True))
def test_tensor_shape_may_be_a_strategy(x):
    assert x.dim() <= 2 and x.requires_grad and x.dtype == torch.float64


def _stats(strategy, count=200):
    seen = {"zero": 0, "tie": 0, "cross_tie": 0}

    @settings(max_examples=count, database=None, derandomize=True)
    @given(strategy)
    def collect(inputs):
        values = np.concatenate([t.numpy().ravel() for t in inputs])
        seen["zero"] += bool((values == 0).any())
        seen["tie"] += len(np.unique(values)) < len(values)
        a, b = (t.numpy() for t in inputs)
        seen["cross_tie"] += bool(np.isin(a, b).any() and (a != 0).any())

    collect()
    return seen


def test_zeros_and_ties_are_common_also_across_inputs():
    seen = _stats(gst.function_inputs(shapes=[(4,), (4,)]))
    assert seen["zero"] > 60 and seen["tie"] > 100 and seen["cross_tie"] > 40


def test_zeros_can_be_turned_off():
    # Hypothesis itself likes 0 as a float, but no longer a fifth of all elements.
    seen = _stats(gst.function_inputs(shapes=[(4,), (4,)], zeros=False, ties=False))
    assert seen["zero"] < 30


def test_zeros_default_to_off_when_zero_is_out_of_range():
    @settings(max_examples=30, database=None, derandomize=True)
    @given(gst.tensors(shape=(5,), min_value=0.5, max_value=4.0))
    def positive(x):
        assert bool((x >= 0.5).all())

    positive()


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: gst.shapes(min_dims=-1), "min_dims"),
        (lambda: gst.shapes(min_dims=3, max_dims=2), "max_dims"),
        (lambda: gst.shapes(max_side=True), "max_side"),
        (lambda: gst.broadcastable_shapes("3x4"), "shape"),
        (lambda: gst.tensors(shape=(3,), dtype=torch.int64), "dtype"),
        (lambda: gst.tensors(shape=(3,), min_value=2.0, max_value=1.0), "max_value"),
        (lambda: gst.tensors(shape=(3,), min_value=float("nan")), "min_value"),
        (lambda: gst.tensors(shape=(3,), min_value=1.0, max_value=2.0, zeros=True), "zeros"),
        (lambda: gst.tensors(shape=(3,), ties="yes"), "ties"),
        (lambda: gst.tensors(shape=(3, -2)), "shapes[0]"),
        (lambda: gst.function_inputs(shapes="3"), "shapes"),
        (lambda: gst.tensors(shape=(3,), requires_grad=1), "requires_grad"),
    ],
)
def test_bad_arguments_fail_early_with_the_fix(make, argument):
    with pytest.raises(ArgumentError) as caught:
        make()  # before anything is drawn
    assert caught.value.argument == argument


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        gst.tensors((3,))  # type: ignore[misc]
    with pytest.raises(TypeError):
        gst.shapes(1, 2)  # type: ignore[misc]

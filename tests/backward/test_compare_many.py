"""`compare_many` (the stepper's batched check) gives what comparing node by node gives."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz.backward.rules._context import compare_many, compare_with_scale, largest

_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.complex64]


@st.composite
def _edge(draw):
    # Small and large (past the batched size), odd dtypes, NaN, empty, absent edges, a
    # missing or mis-shaped reference: every branch of both paths.
    if draw(st.integers(0, 9)) == 0:
        return None, None
    shape = draw(st.sampled_from([(), (0,), (1,), (2, 2), (3, 1, 2), (70, 70)]))
    dtype = draw(st.sampled_from(_DTYPES))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    act = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if act.numel() and draw(st.booleans()):
        act.view(-1)[0] = float("nan")
    if dtype.is_complex or draw(st.integers(0, 5)) == 0:
        ref = None
    else:
        noise = torch.randn(shape, generator=g, dtype=torch.float64) * 1e-6
        ref = (act.double() + noise).numpy()
        if draw(st.integers(0, 7)) == 0:
            ref = np.zeros((5,))
    if dtype == torch.float32 and act.dim() == 2 and draw(st.booleans()):
        act = act.T  # a column-major gradient, as torch hands back for Linear weights
        ref = None if ref is None else np.ascontiguousarray(ref.T)
    return ref, act


def _one_by_one(reference, actual, outputs):
    max_abs, max_rel, top = compare_with_scale(reference, actual)
    biggest = max((largest(g) for g in outputs if isinstance(g, torch.Tensor)), default=0.0)
    return max_abs, max_rel, max(top, biggest)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(_edge(), max_size=4), st.lists(_edge(), max_size=2)),
                max_size=6))
def test_batched_check_equals_one_node_at_a_time(nodes):
    items = [([r for r, _ in edges], [a for _, a in edges], [a for _, a in outs])
             for edges, outs in nodes]
    batched = compare_many(items)
    assert len(batched) == len(items)
    for item, got in zip(items, batched, strict=True):
        want = _one_by_one(*item)
        assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (got, want)

"""The error shown beside "agrees" is the measure that decided it, in every step and in
`summary()`: a cancellation-level round-off edge agrees by its error relative to the node's
largest gradient, and shows that number, not its large relative error."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz import BackwardStepper
from gradviz.backward.stepper import TOLERANCE


def _bn_net(dtype: torch.dtype, width: int, batch: int, seed: int) -> BackwardStepper:
    # A bias before BatchNorm has a true gradient of zero: only round-off reaches it.
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.BatchNorm1d(width),
                            torch.nn.Tanh(), torch.nn.Linear(width, 1)).to(dtype)
    return BackwardStepper(m(torch.randn(batch, 3, dtype=dtype)).sum(), model=m)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([torch.float32, torch.float64]), st.integers(2, 8), st.integers(2, 9),
       st.integers(0, 2**16))
def test_every_verdict_comes_with_the_measure_that_decided_it(dtype, width, batch, seed):
    stepper = _bn_net(dtype, width, batch, seed)
    tol = TOLERANCE[str(dtype).removeprefix("torch.")]
    for s in stepper.op_steps():
        c = s.check
        assert c is not None and c.passed is s.agrees
        if c.measure == "relative":
            assert c.value == s.max_rel_error and c.bound == tol
        else:  # chosen only where the relative error alone would have refused
            assert s.max_rel_error > tol and c.value <= c.bound
            assert c.measure in str(c) or "÷" in str(c)
    worst = stepper.summary()["worst_check"]
    ratios = [s.check.value / s.check.bound for s in stepper.op_steps()]
    assert worst["value"] / worst["bound"] == max(ratios)
    # float32 BatchNorm over two nearly equal values is ill-conditioned: torch's own float32
    # gradient can be 10% off the float64 NumPy one, and the summary must say so.
    assert worst["passed"] is all(s.agrees for s in stepper.op_steps())


def test_round_off_edges_show_the_small_deciding_number_not_the_large_relative_one():
    stepper = _bn_net(torch.float64, 6, 8, 0)
    decided = [s for s in stepper.op_steps() if s.check.measure != "relative"]
    assert decided, "the bias before BatchNorm gets round-off only"
    for s in decided:
        assert s.max_rel_error > 1e-3 and s.check.value < 1e-12
        assert f"{s.check.value:.1e}" in str(s.check)

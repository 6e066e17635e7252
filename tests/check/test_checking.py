"""check_function: right Functions never fail; every buggy one is caught, shrunk into its bug."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from gradviz.check import (
    ALL_CHECKS,
    DEFAULT_CHECKS,
    Failure,
    FunctionReport,
    assert_function_ok,
    check_function,
)
from gradviz.check import strategies as gst
from gradviz.errors import ArgumentError, GradvizError
from gradviz.zoo.functions import function_examples, get_example

CORRECT = [e for e in function_examples().values() if e.correct]
BUGGY = [e for e in function_examples().values() if not e.correct]


def _check(name: str, **kwargs) -> FunctionReport:
    example = get_example(name)
    kwargs.setdefault("shapes", list(example.shapes))
    kwargs.setdefault("max_examples", 60)
    kwargs.setdefault("seed", 0)
    return check_function(example.load(), **kwargs)


# ----------------------------------------------------------------------------- correct: no alarms


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("example", CORRECT, ids=lambda e: e.name)
def test_correct_functions_raise_no_false_alarm(example, seed):
    report = check_function(example.load(), shapes=list(example.shapes), max_examples=80, seed=seed)
    assert report.ok, str(report)
    assert not report.warnings, str(report)
    assert report.examples_run >= 80
    assert {"runs", "jacobian", "linearity", "grad_output_unchanged", "inputs_unchanged"} <= set(
        report.checks_run
    )


@pytest.mark.parametrize("name",
                         ["sigmoid", "exp", "softplus", "relu", "maximum_split_ties", "sort",
                                  "linear"])
def test_correct_functions_pass_in_float32(name):
    report = _check(name, dtype=torch.float32)
    assert report.ok, str(report)
    assert report.dtype == "float32"


@pytest.mark.parametrize("name", ["relu", "maximum_first_wins", "sort", "floor"])
def test_kinks_and_ties_are_reported_as_information(name):
    report = _check(name)
    assert report.ok
    assert report.kinks_seen > 0
    kink = report.kinks[0]
    low, high = sorted((kink.left, kink.right))
    assert low - 1e-3 <= kink.analytical <= high + 1e-3


# ------------------------------------------------------------------------- buggy: caught and shrunk


def _in_band(inputs):  # wrong threshold 0.5: an input strictly inside (0, 0.5)
    x = inputs[0]
    return bool(((x > 0) & (x < 0.5)).any())


SHRUNK_INTO_BUG = {
    "relu_forgot_mask": lambda inputs: bool((inputs[0] < 0).any()),
    "relu_wrong_threshold": _in_band,
    "relu_mutates_grad_output": lambda inputs: bool((inputs[0] < 0).any()),
    "relu_mutates_input": lambda inputs: bool((inputs[0] < 0).any()),
    "linear_wrong_transpose": lambda inputs: not np.allclose(inputs[1], inputs[1].T),
    "maximum_ties_both": lambda inputs: bool((inputs[0] == inputs[1]).any()),
    # wrong everywhere: 0 is simplest
    "sigmoid_wrong_sign": lambda inputs: bool(np.all(inputs[0] == 0)),
    "linear_missing_bias_reduction": lambda inputs: inputs[2].shape == (2,),
    "sigmoid_float32_grad": lambda inputs: bool(np.all(inputs[0] == 0)),
}


def test_every_buggy_example_has_a_shrink_expectation():
    assert set(SHRUNK_INTO_BUG) == {e.name for e in BUGGY}


@pytest.mark.parametrize("example", BUGGY, ids=lambda e: e.name)
def test_buggy_functions_are_caught_and_shrunk(example):
    report = check_function(example.load(), shapes=list(example.shapes), max_examples=100, seed=0)
    findings = report.failures if example.severity == "failure" else report.warnings
    by_check = {f.check: f for f in findings}
    assert example.catches in by_check, str(report)
    if example.severity == "failure":
        assert not report.ok
    else:
        assert report.ok and not report.failures, str(report)
    finding = by_check[example.catches]
    assert len(finding.inputs) == len(example.shapes)
    assert all(
        isinstance(a, np.ndarray) and a.shape == s
        for a, s in zip(finding.inputs, example.shapes, strict=True)
    )
    assert SHRUNK_INTO_BUG[example.name](finding.inputs), (
        f"not shrunk into the bug: {finding.inputs}"
    )
    assert finding.example.startswith("@example(inputs=(torch.tensor(")


def test_wrong_threshold_failure_points_at_the_band_entry():
    failure = _check("relu_wrong_threshold").failures[0]
    x = failure.inputs[0]
    entry = failure.entries[0]
    index = int(entry.where.split("[")[-1].rstrip("]"))
    assert 0 < x[index] < 0.5
    assert entry.actual == 0 and entry.expected == pytest.approx(1)


def test_tie_bug_is_found_along_the_joint_direction():
    failure = _check("maximum_ties_both").failures[0]
    assert "+" in failure.entries[0].where
    assert failure.entries[0].actual == pytest.approx(2)
    assert failure.entries[0].high == pytest.approx(1)


def test_jacobian_failure_keeps_both_jacobians_for_a_heatmap():
    failure = _check("linear_wrong_transpose").failures[0]
    m, n = 2 * 3, 2 * 3 + 3 * 3 + 3
    assert failure.analytical.shape == failure.numerical.shape == (m, n)
    assert len(failure.rows) == m and len(failure.columns) == n
    assert failure.columns[0] == "x[0,0]" and failure.rows[-1] == "out[1,2]"
    assert not np.allclose(failure.analytical, failure.numerical, atol=1e-3)


def test_each_failing_property_gets_its_own_counterexample():
    report = check_function(_DoubleTrouble, shapes=[(4,)], max_examples=100, seed=0)
    by_check = {f.check: f for f in report.failures}
    assert set(by_check) == {"jacobian", "grad_output_unchanged"}
    assert (by_check["grad_output_unchanged"].inputs[0] < -1).any()
    assert (by_check["jacobian"].inputs[0] > 1).any()


class _DoubleTrouble(torch.autograd.Function):
    """Zeroes grad_output in place where x < -1 (after copying it), drops the gradient where
    1 < x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 1.0

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad = grad_output.clone()
        grad_output[x < -1] = 0
        return torch.where(x > 1, 0.0, 1.0).to(grad.dtype) * grad


# ----------------------------------------------------------------------------- other properties


class _SquareNonlinearGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_output.abs()  # right for one-hot grad_outputs, wrong in general


def test_nonlinear_backward_is_caught_by_linearity():
    report = check_function(_SquareNonlinearGrad, shapes=[(3,)], max_examples=50, seed=0)
    assert [f.check for f in report.failures] == ["linearity"]


class _CountingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.calls = 0
        return x * 2

    @staticmethod
    def backward(ctx, grad_output):
        ctx.calls += 1
        return grad_output * 2 * ctx.calls


def test_stateful_backward_is_caught_by_determinism():
    report = check_function(_CountingBackward, shapes=[(3,)], max_examples=20, seed=0,
                            checks=["deterministic"])
    assert [f.check for f in report.failures] == ["deterministic"]
    assert report.checks_run == ("runs", "deterministic")


class _AliasBlind(torch.autograd.Function):
    """a * b whose backward gives only one share of the gradient when a is b."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        ctx.same = a is b
        return a * b

    @staticmethod
    def backward(ctx, grad_output):
        a, b = ctx.saved_tensors
        if ctx.same:
            return grad_output * b, torch.zeros_like(a)
        return grad_output * b, grad_output * a


def test_aliasing_bug_is_caught():
    report = check_function(_AliasBlind, shapes=[(3,), (3,)], max_examples=30, seed=0)
    assert [f.check for f in report.failures] == ["aliasing"]
    inputs = report.failures[0].inputs
    np.testing.assert_array_equal(inputs[0], inputs[1])


class _Log(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.log(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / x


def test_non_finite_output_on_finite_input_is_flagged_with_the_fix():
    report = check_function(_Log, shapes=[(3,)], max_examples=30, seed=0)
    assert report.failures[0].check == "finite"
    assert "min_value" in report.failures[0].message


def test_a_restricted_domain_passes():
    inputs = gst.function_inputs(shapes=[(3,)], min_value=0.1, max_value=5.0)
    assert check_function(_Log, inputs=inputs, max_examples=40, seed=0).ok


class _Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.bounds = (low, high)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        low, high = ctx.bounds
        return grad_output * ((x >= low) & (x <= high)), None, None


def test_non_tensor_arguments_and_none_gradients():
    inputs = st.tuples(gst.tensors(shape=(4,)), st.sampled_from([-1.0, 0.0]),
                       st.sampled_from([0.5, 2.0]))
    report = check_function(_Clamp, inputs=inputs, max_examples=50, seed=0)
    assert report.ok, str(report)


def test_reference_is_compared_with_forward():
    relu = get_example("relu").load()
    assert check_function(
        relu, shapes=[(4,)], reference=lambda x: torch.relu(x), max_examples=20, seed=0
    ).ok
    report = check_function(relu, shapes=[(4,)], reference=lambda x: x.abs(), max_examples=20,
                            seed=0)
    assert report.failures[0].check == "reference"
    assert (report.failures[0].inputs[0] < 0).any()


class _Sin(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.cos(x)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * torch.cos(x)


class _SinBadJvp(_Sin):
    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * torch.sin(x)


class _DetachedSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 2 * x.detach()  # right once, wrong when differentiated again


def test_jvp_and_vmap_run_when_defined():
    report = check_function(_Sin, shapes=[(3,)], max_examples=30, seed=0)
    assert report.ok, str(report)
    assert {"jvp", "vmap"} <= set(report.checks_run)
    report = check_function(_SinBadJvp, shapes=[(3,)], max_examples=30, seed=0)
    assert [f.check for f in report.failures] == ["jvp"]


def test_double_backward_is_opt_in():
    assert (
        "double_backward"
        not in check_function(_DetachedSquare, shapes=[(3,)], max_examples=10, seed=0).checks_run
    )
    assert check_function(
        _Sin, shapes=[(3,)], max_examples=20, seed=0, checks=["double_backward"]
    ).ok
    report = check_function(_DetachedSquare, shapes=[(3,)], max_examples=20, seed=0,
                            checks=["double_backward"])
    assert [f.check for f in report.failures] == ["double_backward"]


def test_inferred_shapes_when_none_given():
    report = check_function(get_example("maximum_split_ties").load(), max_examples=30, seed=0)
    assert report.ok and "aliasing" in report.checks_run


# ----------------------------------------------------------------------------- the report


def test_report_is_json_safe_and_round_trips():
    report = _check("relu_wrong_threshold")
    text = json.dumps(report.to_dict(), allow_nan=False)
    again = FunctionReport.from_dict(json.loads(text))
    assert again.to_dict() == report.to_dict()
    assert str(again) == str(report)
    failure = again.failures[0]
    assert isinstance(failure, Failure) and failure.inputs[0].dtype == np.float64
    np.testing.assert_array_equal(failure.inputs[0], report.failures[0].inputs[0])


def test_report_encodes_non_finite_numbers_as_strings():
    report = check_function(_Log, shapes=[(3,)], max_examples=10, seed=0)
    data = report.to_dict()
    json.dumps(data, allow_nan=False)
    assert FunctionReport.from_dict(data).failures[0].inputs[0].shape == (3,)


def test_str_shows_worst_entries_tolerances_and_a_reproduction():
    report = _check("linear_wrong_transpose")
    text = str(report)
    assert "FAILED jacobian" in text
    assert (
        "analytical" in text and "numerical" in text and "tolerance" in text and "allowed" in text
    )
    assert "@example(inputs=(torch.tensor(" in text
    assert ("reproduce: check_function(LinearWrongTranspose, shapes=[(2, 3), (3, 3), (3,)], "
            "max_examples=60, seed=0)") in text
    assert len(text.splitlines()) < 30  # worst entries only, never the whole Jacobian
    assert text.isascii()  # printed to terminals of any encoding


def test_example_line_replays_the_failure():
    report = _check("relu_wrong_threshold")
    namespace = {"torch": torch, "example": lambda inputs: inputs}
    inputs = eval(report.failures[0].example.removeprefix("@"), namespace)  # noqa: S307
    again = check_function(get_example("relu_wrong_threshold").load(), inputs=st.just(inputs),
                           max_examples=1, seed=0)
    assert [f.check for f in again.failures] == ["jacobian"]


def test_same_seed_same_counterexample_and_a_fresh_seed_is_recorded():
    first, second = _check("relu_forgot_mask", seed=7), _check("relu_forgot_mask", seed=7)
    np.testing.assert_array_equal(first.failures[0].inputs[0], second.failures[0].inputs[0])
    fresh = check_function(get_example("relu").load(), shapes=[(2,)], max_examples=5)
    assert isinstance(fresh.seed, int)


def test_assert_function_ok():
    report = assert_function_ok(get_example("abs").load(), shapes=[(3,)], max_examples=20, seed=0)
    assert report.ok
    with pytest.raises(AssertionError, match="FAILED jacobian"):
        assert_function_ok(get_example("relu_forgot_mask").load(), shapes=[(3,)], max_examples=50,
                           seed=0)


def test_check_names():
    assert ALL_CHECKS[0] == "runs" and "double_backward" not in DEFAULT_CHECKS
    assert set(DEFAULT_CHECKS) < set(ALL_CHECKS)


class DoubleInPlace(torch.autograd.Function):
    """A declared in-place Function: autograd refuses it on the leaves the checks use."""

    @staticmethod
    def forward(ctx, x):
        x.mul_(2)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class DoubleInPlaceWrongSlope(DoubleInPlace):
    @staticmethod
    def backward(ctx, grad):
        return grad * 3


@pytest.mark.parametrize("how", ["shapes", "inputs"])
def test_in_place_functions_are_checked_on_clones(how):
    kwargs = (
        {"shapes": [(3,)]} if how == "shapes" else {"inputs": gst.function_inputs(shapes=[(3,)])}
    )
    good = check_function(DoubleInPlace, seed=1, max_examples=30, **kwargs)
    assert good.ok, str(good)
    assert any("mark_dirty" in note for note in good.notes)
    bad = check_function(DoubleInPlaceWrongSlope, seed=1, max_examples=30, **kwargs)
    assert [f.check for f in bad.failures] == ["jacobian"]


# ----------------------------------------------------------------------------- bad arguments

RELU = get_example("relu").load()
MAXIMUM = get_example("maximum_split_ties").load()




@pytest.mark.parametrize(
    ("fn", "kwargs", "argument", "words"),
    [
        (RELU.apply, {"shapes": [(3,)]}, "fn", "not MyReLU.apply"),
        (torch.sin, {"shapes": [(3,)]}, "fn", "Function subclass"),
        (torch.autograd.Function, {"shapes": [(3,)]}, "fn", "Function subclass"),
        (RELU, {"shapes": "4x3"}, "shapes", "one shape per input"),
        (RELU, {"shapes": [(3, -1)]}, "shapes[0]", ">= 0"),
        (RELU, {"shapes": [("a",)]}, "shapes[0]", "tuple of ints"),
        (RELU, {"shapes": [(3,), (3,)]}, "shapes", "takes 1 inputs"),
        (MAXIMUM, {"shapes": [(3,), (4,)]}, "shapes", "forward raised"),
        (RELU, {"shapes": [(100, 100)]}, "shapes", "keep them under"),
        (RELU, {"shapes": [(3,)], "max_examples": 0}, "max_examples", "positive int"),
        (RELU, {"shapes": [(3,)], "max_examples": 2.5}, "max_examples", "positive int"),
        (RELU, {"shapes": [(3,)], "checks": ["jacobain"]}, "checks", "unknown check 'jacobain'"),
        (RELU, {"shapes": [(3,)], "checks": "jacobian"}, "checks", "list of names"),
        (RELU, {"shapes": [(3,)], "checks": ["reference"]}, "checks", "reference="),
        (RELU, {"shapes": [(3,)], "checks": ["jvp"]}, "checks", "no jvp"),
        (RELU, {"shapes": [(3,)], "dtype": torch.int64}, "dtype", "torch.float32"),
        (RELU, {"shapes": [(3,)], "seed": "x"}, "seed", "an int"),
        (RELU, {"shapes": [(3,)], "inputs": st.just(1)}, "inputs", "not both"),
        (RELU, {"inputs": [1]}, "inputs", "Hypothesis strategy"),
        (RELU, {"shapes": [(3,)], "reference": 3}, "reference", "function"),
    ],
)
def test_bad_arguments_raise_with_the_fix(fn, kwargs, argument, words):
    with pytest.raises(ArgumentError) as caught:
        check_function(fn, **kwargs)
    assert caught.value.argument == argument
    assert words in str(caught.value)
    assert isinstance(caught.value, GradvizError)


# ----------------------------------------------------------------------------- the catalogue


def test_catalogue_entries_load_and_describe_themselves():
    examples = function_examples()
    assert {"relu", "abs", "clamp", "maximum_split_ties", "sort", "sigmoid", "exp", "softplus",
            "linear",
            "sincos"} <= set(examples)
    assert len(BUGGY) >= 9
    for name, example in examples.items():
        fn = example.load()
        assert fn.__name__ == example.class_name and example.name == name
        assert isinstance(example.source, str) and "import torch" in example.source
        assert example.description and example.shapes
        assert (example.catches is None) == example.correct
        assert example.catches in (None, *ALL_CHECKS)
    assert "grad_input[input < 0] = 0" in examples["relu"].source
    with pytest.raises(GradvizError, match="known examples"):
        get_example("nope")

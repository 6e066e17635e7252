"""BackwardStepper: engine order, recorded gradients, NumPy agreement, hygiene, errors."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradviz.backward.stepper as stepper_mod
from gradviz import GradvizError, capture
from gradviz.backward.rules import RULES
from gradviz.backward.stepper import BackwardStepper
from gradviz.zoo.examples import examples
from gradviz.zoo.presets import MyReLU


def _float64(name: str):
    model, loss_fn = examples()[name].make(0)
    model = model.double()
    torch.set_default_dtype(torch.float64)
    try:
        model, loss_fn = examples()[name].make(0)
        with capture(model):
            loss = loss_fn(model)
    finally:
        torch.set_default_dtype(torch.float32)
    return model, loss


def _engine_order(loss: torch.Tensor) -> list[str]:
    """Independent record of the order: our own pre-hooks on every node, nothing else."""
    order: list[str] = []
    stack, seen, handles = [loss.grad_fn], set(), []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        name = type(fn).__name__
        handles.append(fn.register_prehook(lambda g, name=name: order.append(name)))
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    torch.autograd.backward(loss, retain_graph=True)
    for h in handles:
        h.remove()
    return order


@pytest.mark.parametrize("name", ["two-layer-relu", "mnist-cnn", "transformer-2"])
def test_examples_fully_covered_and_agreeing_in_float64(name):
    model, loss = _float64(name)
    steps = BackwardStepper(loss, model=model)
    assert steps.coverage == 1.0
    for s in steps.op_steps():
        assert s.reference_kind == "numpy" and s.agrees, (s.node.label, s.max_rel_error)
        assert s.max_rel_error <= 1e-7
        assert s.formula


def test_order_is_the_engines_and_grads_match_torch():
    model, loss = _float64("mnist-cnn")
    model.eval()  # same dropout masks on both runs
    with capture(model):
        x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
        loss = model(x).logsumexp(dim=1).sum()
    expected_order = _engine_order(loss)
    model.zero_grad()
    steps = BackwardStepper(loss, model=model)
    assert [s.node.grad_fn or "AccumulateGrad" for s in steps] == expected_order
    torch.autograd.backward(loss, retain_graph=True)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(steps.param_grads[name], p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_grad_inputs_feed_the_next_nodes_grad_outputs():
    model, loss = _float64("two-layer-relu")
    steps = BackwardStepper(loss, model=model)
    by_id = {s.node.id: s for s in steps}
    for s in steps.op_steps():
        for nid, g in zip(s.next_ids, s.grad_inputs, strict=True):
            nxt = by_id.get(nid)
            if nxt is not None and nxt.contributions == 1 and g is not None:
                np.testing.assert_array_equal(nxt.grad_outputs[0], g)


def test_weight_sharing_sums_at_accumulate_grad_and_frontier_is_consistent():
    lin = nn.Linear(3, 3).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    h = lin(x)
    loss = (lin(torch.tanh(h)) + h).sum()  # h fans out twice; lin used twice
    steps = BackwardStepper(loss, params={"lin.weight": lin.weight, "lin.bias": lin.bias})
    weight = next(s for s in steps if s.node.label == "lin.weight")
    assert weight.contributions == 2 and "accumulated" in weight.summed
    fan = [s for s in steps if s.node.kind == "op" and s.contributions == 2]
    assert fan and "summed" in fan[0].summed
    done: set[str] = set()
    for s in steps:
        done.add(s.node.id)
        assert not (set(s.frontier) & done), "a ready node has already run"
    for s, nxt in zip(steps, steps[1:], strict=False):
        assert (nxt.node.id in s.frontier or nxt.node.kind in ("param", "leaf")
                or nxt.node.id in {f for t in steps for f in t.frontier})


def test_param_grad_restored_and_no_hooks_left(monkeypatch):
    live = weakref.WeakSet()

    class Tracked(stepper_mod._Recorder):
        def __init__(self, count):
            super().__init__(count)
            live.add(self)

    monkeypatch.setattr(stepper_mod, "_Recorder", Tracked)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    model[0].weight.grad = torch.full_like(model[0].weight, 7.0)
    for _ in range(3):
        loss = model(torch.randn(5, 4)).sum()
        steps = BackwardStepper(loss, model=model)
        assert len(steps) == 10  # sum, 2×(addmm, t), relu, 4 parameters
        del steps, loss
    gc.collect()
    # Hooks still attached to the parameters' AccumulateGrad nodes would keep recorders alive.
    assert len(live) == 0
    assert torch.all(model[0].weight.grad == 7.0)
    assert model[2].weight.grad is None


def test_custom_function_gets_finite_difference_reference():
    class Wrong(MyReLU):
        @staticmethod
        def backward(ctx, g):
            return g  # forgot the mask

    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 6, dtype=torch.float64)
    for fn, ok in ((MyReLU, True), (Wrong, False)):
        # grad nonzero where x@w < 0
        loss = (fn.apply(x @ w) * torch.randn(3, 4, dtype=torch.float64)).sum()
        steps = BackwardStepper(loss, params={"w": w})
        custom = next(s for s in steps if s.node.label == fn.__name__)
        assert custom.reference_kind == "finite differences"
        assert custom.agrees is ok
        assert steps.coverage < 1.0  # custom Functions are not NumPy-covered


def test_zero_gradients_torch_keeps_lazy_are_compared_too():
    # sgn's backward hands on a storage-less ZeroTensor on real inputs.
    x = torch.tensor([-1.5, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    stepper = BackwardStepper((x.sgn() * x).sum())
    sgn = next(s for s in stepper.steps if s.node.label == "SgnBackward0")
    assert sgn.reference_kind == "numpy" and sgn.agrees
    np.testing.assert_array_equal(sgn.grad_inputs[0], np.zeros(3))
    assert all(s.agrees is not False for s in stepper.steps)


# Without the guard NumPy only warns when a complex result is read as real; the suite turns
# warnings into errors, which would hide the false alarm this test is about.
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_complex_nodes_get_no_reference_rather_than_a_false_alarm():
    # Read as real, sin's rule gives cos(Re z)·ḡ and would flag torch's correct conj(cos z)·ḡ;
    # |z|'s rule is written for complex tensors too (z/|z|·ḡ) and is checked.
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    z = torch.view_as_complex(x)
    stepper = BackwardStepper(torch.view_as_real(torch.sin(z)).sum() + z.abs().sum())
    sin_step = next(s for s in stepper.steps if s.node.label == "SinBackward0")
    assert sin_step.reference is None and sin_step.agrees is None
    abs_step = next(s for s in stepper.steps if s.node.label == "AbsBackward0")
    assert abs_step.reference_kind == "numpy" and abs_step.agrees
    assert all(s.agrees is not False for s in stepper.steps)


def _float32_cancelling_models():
    torch.manual_seed(0)
    # The conv bias's gradient is zero (BatchNorm removes the mean); so is the input's
    # gradient of a LayerNorm whose output is summed with unit weights.
    conv_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                            nn.Linear(144, 2))
    norm_sum = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    return [(conv_bn, torch.randn(2, 3, 8, 8)), (norm_sum, torch.randn(2, 3, 8))]


@pytest.mark.parametrize("case", range(2))
def test_float32_round_off_on_cancelling_gradients_is_not_a_disagreement(case):
    model, x = _float32_cancelling_models()[case]
    stepper = BackwardStepper(model(x).sum(), model=model)
    assert [s.node.label for s in stepper.op_steps() if s.agrees is not True] == []


@pytest.mark.parametrize("case", range(2))
def test_a_wrong_rule_is_still_flagged_in_float32(case, monkeypatch):
    model, x = _float32_cancelling_models()[case]
    name = "ConvolutionBackward0" if case == 0 else "NativeLayerNormBackward0"
    real = RULES[name]

    def off_by_one_percent(ctx):
        return [None if g is None else g * 1.01 for g in real.fn(ctx)]

    monkeypatch.setitem(RULES, name, dataclasses.replace(real, fn=off_by_one_percent))
    stepper = BackwardStepper(model(x).sum(), model=model)
    assert [s.agrees for s in stepper.op_steps() if s.node.label == name] == [False]


def test_a_checkpointed_block_with_a_forward_of_its_own_is_left_unchecked_not_fatal():
    # The reentrant checkpoint is a custom Function whose forward takes more than its
    # saved tensors, so finite differences cannot re-run it.
    from torch.utils.checkpoint import checkpoint

    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    stepper = BackwardStepper(checkpoint(lin, x, use_reentrant=True).sum())
    step = next(s for s in stepper.steps if s.node.label == "CheckpointFunction")
    assert step.reference is None and step.agrees is None
    assert all(s.agrees is not False for s in stepper.steps)


def test_steps_built_on_first_access_agree_across_threads():
    # Steps are derived lazily from the recording; a stepper shared by Streamlit sessions
    # may be read from several threads at once.
    import threading

    model, loss_fn = examples()["mnist-cnn"].make(0)
    eager = BackwardStepper(loss_fn(model), model=model)
    lazy = BackwardStepper(loss_fn(model), model=model, references=False)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(lazy.steps)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and all(len(s) == len(eager) for s in seen)
    for steps in seen:
        assert [(s.node.id, s.frontier, s.next_ids, s.contributions) for s in steps] == \
            [(s.node.id, s.frontier, s.next_ids, s.contributions) for s in eager]


def test_errors():
    with pytest.raises(GradvizError, match="grad="):
        BackwardStepper(torch.randn(3, requires_grad=True) * 2)
    with pytest.raises(GradvizError, match="no grad_fn"):
        BackwardStepper(torch.randn(3).sum())
    with pytest.raises(GradvizError, match="loss="):
        BackwardStepper("loss")
    y = torch.randn(3, requires_grad=True) * 2
    with pytest.raises(GradvizError, match="shape"):
        BackwardStepper(y, grad=torch.ones(4))
    steps = BackwardStepper(y, grad=torch.ones(3))
    assert len(steps) == 2


def test_find_breakpoints():
    model, loss = _float64("mnist-cnn")
    steps = BackwardStepper(loss, model=model)
    i = steps.find(label="Convolution")
    assert steps[i].node.label == "ConvolutionBackward0"
    j = steps.find(module="fc1")
    assert steps[j].node.module == "fc1"
    assert steps.find(label="NoSuchOp") is None


_ACTS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.Softplus]


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    acts=st.lists(st.integers(0, len(_ACTS) - 1), min_size=4, max_size=4),
    norm=st.booleans(),
    batch=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_random_mlps_every_op_checked_against_numpy(widths, acts, norm, batch, seed):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if norm:
            layers.append(nn.LayerNorm(b))
        layers.append(_ACTS[acts[i % len(acts)]]())
    model = nn.Sequential(*layers).double()
    x = torch.randn(batch, widths[0], dtype=torch.float64, requires_grad=True)
    loss = nn.functional.mse_loss(model(x), torch.zeros(batch, widths[-1], dtype=torch.float64))
    steps = BackwardStepper(loss, model=model)
    assert steps.coverage == 1.0, steps.summary()["missing"]
    for s in steps.op_steps():
        assert s.agrees, (s.node.label, s.max_rel_error)

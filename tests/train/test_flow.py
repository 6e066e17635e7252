"""GradientFlow: bounded record, exact statistics, diagnoses on broken and healthy nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz import get_preset, presets, train
from gradviz.errors import ArgumentError
from gradviz.train.flow import ACT_STATS, GRAD_STATS, GradientFlow
from gradviz.train.flow_diagnose import KINDS, Diagnosis, diagnose
from gradviz.train.flow_keep import _Keeper
from gradviz.train.flow_view import (
    NeuronView,
    chart_bytes,
    flow_chart,
    heatmap_frame,
    neuron_png,
    neuron_view,
)


class _Rec:
    def __init__(self, step: int) -> None:
        self.step = step


def _simulate(n: int, capacity: int, every: int, mode: str) -> _Keeper:
    keeper = _Keeper(capacity, every, mode)
    for step in range(1, n + 1):
        if keeper.wants(step):
            keeper.push(step, _Rec(step))
    return keeper


@given(
    n=st.integers(1, 3000),
    capacity=st.integers(1, 64),
    every=st.integers(1, 5),
)
def test_decimation_keeps_an_even_bounded_overview_of_the_whole_run(n, capacity, every):
    keeper = _simulate(n, capacity, every, "decimate")
    steps = [r.step for r in keeper.records]
    assert 1 <= len(steps) <= capacity
    assert steps[0] == 1  # the start of the run is never dropped
    assert all(b - a == keeper.stride for a, b in zip(steps, steps[1:], strict=False))
    assert keeper.stride % every == 0
    # nothing newer than one stride is missing: the overview reaches the latest steps
    assert n - steps[-1] < keeper.stride
    # the stride only doubled when needed: half of it would overflow capacity
    if keeper.stride > every:
        assert len(range(1, n + 1, keeper.stride // 2)) > capacity


@given(n=st.integers(1, 2000), capacity=st.integers(1, 64), every=st.integers(1, 5))
def test_ring_keeps_the_latest_recorded_steps(n, capacity, every):
    keeper = _simulate(n, capacity, every, "ring")
    wanted = list(range(1, n + 1, every))
    assert [r.step for r in keeper.records] == wanted[-capacity:]
    assert keeper.stride == every


def _mlp(sizes: list[int], act: type[nn.Module], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])


def _fit(model, flow, steps, *, lr=0.1, opt="sgd", n_in=4, fresh=False, seed=0, loss=None):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(32, n_in, generator=g), torch.randn(32, 1, generator=g)
    make = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
    o = make(model.parameters(), lr=lr)
    loss = loss or (lambda out, t: ((out - t) ** 2).mean())
    with flow.attach(model, o):
        for _ in range(steps):
            if fresh:
                X, y = torch.randn(8, n_in, generator=g), torch.randn(8, 1, generator=g)
            o.zero_grad()
            loss(model(X), y).backward()
            o.step()
    return flow


@settings(max_examples=15)
@given(
    n=st.integers(1, 40),
    capacity=st.integers(1, 12),
    every=st.integers(1, 3),
    mode=st.sampled_from(["decimate", "ring"]),
)
def test_a_real_run_keeps_the_steps_the_keeper_promises(n, capacity, every, mode):
    flow = GradientFlow(every=every, capacity=capacity, mode=mode)
    _fit(_mlp([4, 3, 1], nn.Tanh), flow, n)
    expected = [r.step for r in _simulate(n, capacity, every, mode).records]
    assert flow.steps == expected and flow.steps_seen == n
    assert len(flow.records) <= capacity
    for r in flow.records:
        assert r.grad.shape == (4, len(GRAD_STATS)) and r.act.shape == (3, len(ACT_STATS))
        assert np.isfinite(r.grad).all() and np.isfinite(r.update_ratio).all()


def test_statistics_equal_direct_computation():
    model = _mlp([3, 5, 2], nn.ReLU)
    with torch.no_grad():
        model[0].bias[:2] = -10.0  # two units dead for every input: zeros in their grads
    X, y = torch.randn(16, 3), torch.randn(16, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    kept = []

    def keep(module, args, out):
        out.retain_grad()
        kept.append(out)

    model[0].register_forward_hook(keep)
    model[1].register_forward_hook(keep)
    with GradientFlow(model, optimizer=opt) as flow:
        loss = ((model(X) - y) ** 2).mean()
        h, r = kept
        before = [p.detach().clone() for p in model.parameters()]
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
    (record,) = flow.records
    names = [n for n, _ in model.named_parameters()]
    assert list(flow.params) == names  # backward showed the depth order
    for i, (g, w0, p) in enumerate(zip(grads, before, model.parameters(), strict=True)):
        assert record.grad[i, 0] == pytest.approx(float(g.norm()), rel=1e-6)
        assert record.grad[i, 1] == pytest.approx(float(g.abs().mean()), rel=1e-6)
        assert record.grad[i, 2] == pytest.approx(float(g.abs().max()), rel=1e-6)
        assert record.grad[i, 3] == pytest.approx(float((g == 0).double().mean()))
        ratio = float((p.detach() - w0).norm() / w0.norm())
        assert record.update_ratio[i] == pytest.approx(ratio, rel=1e-5)
    assert record.grad[0, 3] >= 2 * 3 / 15  # the dead units' rows of 0.weight
    relu = model[1](h).detach()
    mean, std, zero, dead, gnorm = record.act[flow.modules.index("1")]
    assert mean == pytest.approx(float(relu.mean()), rel=1e-6)
    assert std == pytest.approx(float(relu.std(unbiased=False)), rel=1e-5)
    assert zero == pytest.approx(float((relu == 0).double().mean()))
    assert dead == pytest.approx(float((~(relu != 0).any(0)).double().mean()))
    linear_out_grad = record.act[flow.modules.index("0"), 4]
    assert linear_out_grad == pytest.approx(float(h.grad.norm()), rel=1e-6)
    assert gnorm == pytest.approx(float(r.grad.norm()), rel=1e-6)


def test_train_callback_attaches_records_each_step_and_removes_every_hook():
    flow = GradientFlow()
    result = train("quadrant-linear-sigmoid", steps=40, callback=flow, evaluate=False)
    assert flow.steps == list(range(1, 41))
    assert [r.loss for r in flow.records] == pytest.approx(result.losses)
    model = result.model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # not even an empty hook dict: autograd would call into Python for it every step
    assert all(p._post_accumulate_grad_hooks is None for p in model.parameters())
    assert not result.optimizer._optimizer_step_post_hooks
    with pytest.raises(ArgumentError, match="another network"):
        flow.attach(get_preset("quadrant-sgd").build(0))


def test_hand_written_updates_are_recorded_before_grad_zero():
    flow = GradientFlow()
    train("quadrant-params", steps=20, callback=flow, evaluate=False)  # p.data = ...; zero_()
    steps, norm = flow.series("norm")
    assert steps == list(range(1, 21)) and (norm > 0).all()
    _, ratio = flow.series(kind="update")
    assert np.isfinite(ratio).all() and (ratio > 0).all()


def test_chain_runs_the_progress_callback_too():
    seen = []
    flow = GradientFlow()
    train("single-neuron", steps=5, callback=flow.chain(lambda *a: seen.append(a)))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5] and len(flow.records) == 5


def test_a_numpy_preset_gives_no_records_and_no_warnings():
    flow = GradientFlow()
    train("two-layer-numpy", steps=5, callback=flow, evaluate=False)
    assert flow.records == () and flow.diagnose() == []
    assert flow.frame().empty


def test_hooks_are_removed_when_the_loop_fails():
    model = _mlp([4, 3, 1], nn.Tanh)
    with pytest.raises(RuntimeError), GradientFlow(model):
        model(torch.randn(2, 5))  # wrong width
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # not even an empty hook dict: autograd would call into Python for it every step
    assert all(p._post_accumulate_grad_hooks is None for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"every": 0}, "every"),
        ({"capacity": 1.5}, "capacity"),
        ({"mode": "fifo"}, "mode"),
        ({"optimizer": "sgd"}, "optimizer"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, argument):
    with pytest.raises(ArgumentError, match=argument) as info:
        GradientFlow(**kwargs)
    assert info.value.argument == argument


def test_no_model_to_attach_says_so():
    with pytest.raises(ArgumentError, match="GradientFlow\\(model\\)"):
        GradientFlow().attach()
    with pytest.raises(ArgumentError, match="known thresholds"):
        diagnose(GradientFlow(), vanishing_ratio=3)


# ----------------------------------------------------------------------------- diagnoses


def _kinds(found: list[Diagnosis]) -> list[tuple[str, str]]:
    return [(d.kind, d.layer) for d in found]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ten_layer_sigmoid_net_is_vanishing_at_its_first_layer(seed):
    model = _mlp([16] * 11 + [1], nn.Sigmoid, seed)
    bce = nn.functional.binary_cross_entropy_with_logits
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 16, generator=g)
    y = (X[:, :1] > 0).double().float()
    o = torch.optim.SGD(model.parameters(), lr=1.0)
    with GradientFlow(model, optimizer=o) as flow:
        for _ in range(60):
            o.zero_grad()
            bce(model(X), y).backward()
            o.step()
    found = flow.diagnose()
    assert _kinds(found) == [("vanishing", "0")]
    assert found[0].value > 1e4 and found[0].threshold == 100
    assert "ReLU" in found[0].message and "sigmoid" in found[0].message
    assert diagnose(flow, vanishing=found[0].value * 2) == []  # the threshold is used


def test_a_deep_net_initialised_too_large_is_exploding():
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(12):
        lin = nn.Linear(16 if i == 0 else 64, 64)
        nn.init.normal_(lin.weight, 0, 2.0 / lin.in_features**0.5)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Identity()]
    model = nn.Sequential(*layers, nn.Linear(64, 1))
    flow = _fit(model, GradientFlow(), 6, lr=1e-12, n_in=16)  # too small to move
    found = flow.diagnose()
    assert _kinds(found) == [("exploding", "0")]
    assert found[0].value > 100 and "clip_grad_norm_" in found[0].message


def test_dead_relus_are_named_with_the_share():
    model = _mlp([4, 16, 1], nn.ReLU)
    with torch.no_grad():
        model[0].bias.fill_(-5.0)
    found = _fit(model, GradientFlow(), 20).diagnose()
    assert ("dead-relu", "1") in _kinds(found)
    dead = next(d for d in found if d.kind == "dead-relu")
    assert dead.value == 1.0 and "LeakyReLU" in dead.message and "100%" in dead.message


def test_dead_units_behind_a_functional_relu_show_in_the_zero_gradients():
    class Loose(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(4, 20))
            self.b1 = nn.Parameter(torch.full((20,), -20.0))
            self.w2 = nn.Parameter(torch.randn(20, 1))

        def forward(self, x):
            return torch.relu(x @ self.w1 + self.b1) @ self.w2

    found = _fit(Loose(), GradientFlow(), 10).diagnose()
    assert ("dead-relu", "w1") in _kinds(found)


def test_a_learning_rate_too_large_is_named_at_the_worst_weight():
    model = _mlp([4, 16, 1], nn.Tanh)
    found = _fit(model, GradientFlow(), 100, lr=0.5, opt="adam", fresh=True).diagnose()
    assert [d.kind for d in found] == ["lr-too-large"]
    assert found[0].layer.endswith("weight") and found[0].value > 0.1
    assert "lr" in found[0].message


def test_an_infinite_gradient_is_reported_first():
    model = _mlp([4, 3, 1], nn.Tanh)
    flow = _fit(model, GradientFlow(), 3, loss=lambda out, t: (out - t).mean() * math.inf)
    found = flow.diagnose()
    assert found[0].kind == "non-finite" and found[0].steps == (1, 1)
    assert str(found[0]).startswith("non-finite at ")
    assert set(KINDS) >= {d.kind for d in found}


def test_a_healthy_relu_net_gets_no_warning():
    model = _mlp([4, 32, 32, 1], nn.ReLU)
    assert _fit(model, GradientFlow(), 100, lr=0.01).diagnose() == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(presets()))
def test_no_false_warnings_on_the_default_training_of_every_preset(name):
    flow = GradientFlow()
    result = train(name, callback=flow)
    assert flow.diagnose() == [], result.message
    if get_preset(name).update not in ("numpy", "manual-backward"):
        assert flow.records and len(flow.records) <= flow.capacity


# ----------------------------------------------------------------------------- views


@pytest.fixture(scope="module")
def quadrant_flow():
    flow = GradientFlow()
    result = train("quadrant-linear-sigmoid", steps=60, callback=flow, evaluate=False)
    return flow, result


def test_frames_are_long_form_and_in_depth_order(quadrant_flow):
    flow, _ = quadrant_flow
    df = heatmap_frame(flow)
    assert list(df.columns) == ["step", "layer", "depth", "value"]
    assert len(df) == 60 * len(flow.params) and (df["value"] > 0).all()
    first = df[df["step"] == 1].sort_values("depth")
    assert list(first["layer"]) == list(flow.params)
    full = flow.frame()
    assert set(full["kind"]) == {"grad", "update", "act"}
    steps, values = flow.series("mean_abs")
    assert values.shape == (60, len(flow.params)) and steps == list(range(1, 61))
    with pytest.raises(ArgumentError, match="stat"):
        heatmap_frame(flow, "median")


def test_chart_is_a_log_heatmap_above_lines_and_exports(quadrant_flow):
    flow, _ = quadrant_flow
    spec = flow_chart(flow).to_dict()
    heat, lines = spec["vconcat"]
    assert heat["mark"]["type"] == "rect" and lines["mark"]["type"] == "line"
    assert heat["encoding"]["color"]["scale"]["type"] == "log"
    assert heat["encoding"]["y"]["sort"] == list(flow.params)
    svg = chart_bytes(flow_chart(flow), "svg")
    assert svg.lstrip().startswith(b"<svg") and b"0-th MAC.weight" in svg


def test_flow_json_is_plain_data(quadrant_flow):
    import json

    flow, _ = quadrant_flow
    data = json.loads(json.dumps(flow.to_json(), allow_nan=False))
    assert len(data["records"]) == 60 and data["params"] == list(flow.params)
    assert set(data["records"][0]["grad"]) == set(flow.params)


def test_neuron_view_shows_each_unit_over_the_input_plane(quadrant_flow):
    _, result = quadrant_flow
    model = result.model
    view = neuron_view(model, result.data.X, grid=9)
    assert isinstance(view, NeuronView)
    assert [c.shape for c in view.columns] == [(2, 9, 9), (3, 9, 9), (3, 9, 9), (4, 9, 9)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for w, lin in zip(view.edges, linears, strict=True):
        np.testing.assert_allclose(w, lin.weight.detach().double().numpy())
    x0, x1, y0, y1 = view.bounds
    corner = torch.tensor([[x0, y1]], dtype=next(model.parameters()).dtype)  # top left
    with torch.no_grad():
        hidden = torch.sigmoid(linears[0](corner))[0].double().numpy()
    np.testing.assert_allclose(view.columns[1][:, 0, 0], hidden, rtol=1e-5)
    png = neuron_png(view)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ArgumentError, match="grid"):
        neuron_view(model, grid=1)

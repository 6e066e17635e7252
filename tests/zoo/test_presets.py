"""The 21 seed programs build, give their loss graphs, and agree where the tutorials say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.builder import build_network
from gradviz.train.data import TrainData
from gradviz.zoo.presets import (
    PRESET_NAMES,
    UPDATE_STYLES,
    DynamicNet,
    MyReLU,
    Preset,
    get_preset,
    numpy_vs_autograd,
    presets,
    quadrant_loss,
)
from gradviz.zoo.seednets import NeuralNetWork, TwoLayerNumpy

EXPECTED = {
    "000": ["single-neuron", "two-layer-sigmoid"],
    "001": ["mnist-cnn"],
    "002": [
        "quadrant-params",
        "quadrant-sgd",
        "quadrant-folded-bias",
        "quadrant-weighted-sum",
        "quadrant-softmax",
        "quadrant-sequential",
        "quadrant-linear-sigmoid",
    ],
    "003": [
        "two-layer-numpy",
        "two-layer-tensors",
        "two-layer-autograd",
        "two-layer-myrelu",
        "two-layer-nn",
        "two-layer-adam",
        "two-layer-module",
        "dynamic-net",
    ],
    "004": ["scratch-784-250-10", "keras-dense-512", "regression-1-10-1"],
}
QUADRANTS = EXPECTED["002"]


def _autograd_nodes(t: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def test_exactly_the_21_presets():
    all_presets = presets()
    assert sorted(all_presets) == sorted(n for names in EXPECTED.values() for n in names)
    assert len(all_presets) == 21 and tuple(all_presets) == PRESET_NAMES
    for seed, names in EXPECTED.items():
        for name in names:
            p = all_presets[name]
            assert isinstance(p, Preset) and p.name == name
            assert p.seed_program == seed
            assert p.description.startswith(f"Seed {seed}")
            assert p.update in UPDATE_STYLES
            assert p.task in ("classification", "regression", "random-regression")
            assert (p.steps is None) != (p.epochs is None)
    assert presets() is not presets()  # callers may change their dict freely


def test_the_table_is_the_one_place_presets_are_declared():
    import dataclasses

    from gradviz.train import recipe as record
    from gradviz.zoo import presets as package
    from gradviz.zoo.presets import table

    assert tuple(p.name for p in table.TABLE) == PRESET_NAMES
    assert all(presets()[p.name] is p for p in table.TABLE)
    assert "table" in package.__doc__ and "TABLE" in table.__doc__
    # the registry takes each name once and only Preset declarations
    with pytest.raises(ArgumentError, match="exists"):
        record.register(dataclasses.replace(table.TABLE[0], description="again"))
    with pytest.raises(ArgumentError, match="Preset"):
        record.register({"name": "not-a-preset"})
    assert presets() == {p.name: p for p in table.TABLE}


def test_descriptions_say_which_program():
    assert get_preset("two-layer-myrelu").description == (
        "Seed 003: two-layer net with a custom autograd Function MyReLU"
    )


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_gives_a_loss_graph_in_one_call(name):
    preset = get_preset(name)
    model, loss = preset.example_loss(seed=0)
    assert isinstance(model, nn.Module)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.grad_fn is not None
    _, again = preset.example_loss(seed=0)
    assert again.item() == loss.item()  # seeded, dropout and DynamicNet included
    loss.backward()
    params = [p for p in model.parameters()]
    assert (
        params and all(p.grad is not None for p in params if p is not None) or name == "dynamic-net"
    )
    data = preset.data(0)
    assert isinstance(data, TrainData) and data.task == preset.task
    assert preset.forward_loss(model, data.subset(4)).ndim == 0


def test_builds_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    for name in PRESET_NAMES:
        get_preset(name).build(seed=1)
    assert torch.equal(torch.get_rng_state(), state)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ArgumentError, match="quadrant-sgd"):
        get_preset("quadrant-sdg")
    with pytest.raises(ArgumentError, match="preset"):
        get_preset(3)


# ------------------------------------------------------------------ seed 002: one net, 7 ways


def test_quadrant_params_start_from_the_tutorials_weights():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = [
            torch.randn(*s) * 0.01 for s in [(2, 3), (1, 3), (3, 3), (1, 3), (3, 4), (1, 4)]
        ]
    model = get_preset("quadrant-sgd").build(0)
    got = [model.W1, model.b1, model.W2, model.b2, model.W3, model.b3]
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g.detach(), e)


def _common_weights() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(42)
    return [
        (
            torch.randn(i, o, generator=g, dtype=torch.float64),
            torch.randn(o, generator=g, dtype=torch.float64),
        )
        for i, o in [(2, 3), (3, 3), (3, 4)]
    ]


def _grads(name: str, weights, X, Y) -> tuple[torch.Tensor, list]:
    preset = get_preset(name)
    model = preset.build(0).double()
    preset.set_weights(model, weights)
    loss = preset.forward_loss(model, (X, Y))
    loss.backward()
    return loss.detach(), preset.get_weights(model, grad=True)


def test_the_sigmoid_quadrant_variants_give_the_same_gradients_for_the_same_weights():
    data = get_preset("quadrant-sgd").data(0)
    X, Y = data.X.double(), data.y.double()
    weights = _common_weights()
    ref_loss, ref = _grads("quadrant-params", weights, X, Y)
    for name in [n for n in QUADRANTS if n != "quadrant-softmax"]:
        preset = get_preset(name)
        model = preset.build(0).double()
        preset.set_weights(model, weights)
        for (w, b), (w0, b0) in zip(preset.get_weights(model), weights, strict=True):
            assert torch.equal(w, w0) and torch.equal(b, b0)
        loss, grads = _grads(name, weights, X, Y)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-13, atol=0)
        for (gw, gb), (rw, rb) in zip(grads, ref, strict=True):
            torch.testing.assert_close(gw, rw, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(gb, rb, rtol=1e-12, atol=1e-15)


def test_the_softmax_variant_is_the_sigmoid_net_followed_by_softmax():
    """Softmax changes the function, so its gradients differ from the other six; what is
    equal: (a) its pre-softmax output is the sigmoid net's output, and (b) its gradients
    are those of quadrant_loss(softmax(sigmoid net(X))) computed on the loose-parameter net."""
    data = get_preset("quadrant-sgd").data(0)
    X, Y = data.X.double(), data.y.double()
    weights = _common_weights()
    soft = get_preset("quadrant-softmax")
    model = soft.build(0).double()
    soft.set_weights(model, weights)
    plain_preset = get_preset("quadrant-params")
    plain = plain_preset.build(0).double()
    plain_preset.set_weights(plain, weights)
    pre = model.layer3(model.layer2(model.layer1(X)))
    torch.testing.assert_close(pre, plain(X), rtol=1e-13, atol=0)
    soft.forward_loss(model, (X, Y)).backward()
    quadrant_loss(torch.softmax(plain(X), dim=1), Y).backward()
    for (gw, gb), (rw, rb) in zip(
        soft.get_weights(model, grad=True), plain_preset.get_weights(plain, grad=True), strict=True
    ):
        torch.testing.assert_close(gw, rw, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(gb, rb, rtol=1e-12, atol=1e-15)
    _, plain_grads = _grads("quadrant-params", weights, X, Y)
    assert not torch.allclose(plain_grads[0][0], soft.get_weights(model, grad=True)[0][0])


def test_quadrant_topologies_and_weight_layout_errors():
    seq = get_preset("quadrant-sequential")
    tutorial = seq.build(0, topology=[2, 10, 4])
    assert [name for name, _ in tutorial.model.named_children()] == ["0-th layer", "1-th layer"]
    lin = get_preset("quadrant-linear-sigmoid").build(0, topology=[2, 10, 4])
    assert [name for name, _ in lin.named_children()] == [
        "0-th MAC",
        "0-th ACT",
        "1-th MAC",
        "1-th ACT",
    ]
    with pytest.raises(ArgumentError, match="topology"):
        seq.build(0, topology=[3, 4])
    with pytest.raises(ArgumentError, match="topology"):
        get_preset("quadrant-sgd").build(0, topology=[2, 4])
    model = seq.build(0)
    with pytest.raises(ArgumentError, match=r"\(2, 3\)"):
        seq.set_weights(model, [(torch.zeros(3, 3), torch.zeros(3))] * 3)
    with pytest.raises(ArgumentError, match="3 \\(W, b\\) pairs"):
        seq.set_weights(model, [])
    with pytest.raises(ArgumentError, match="weight layout"):
        get_preset("dynamic-net").get_weights(get_preset("dynamic-net").build(0))
    with pytest.raises(ArgumentError, match="backward"):
        seq.get_weights(model, grad=True)
    with pytest.raises(ArgumentError, match=r"layers\[0\]\[0\]"):
        seq.set_weights(model, [("W", None)] * 3)


# ------------------------------------------------------------------------------ seed 003


def test_myrelu_is_a_real_custom_function_in_the_graph():
    assert issubclass(MyReLU, torch.autograd.Function)
    _, loss = get_preset("two-layer-myrelu").example_loss()
    assert "MyReLUBackward" in _autograd_nodes(loss)
    _, plain = get_preset("two-layer-autograd").example_loss()
    assert any(n.startswith("Clamp") for n in _autograd_nodes(plain))
    assert not any(n.startswith("Clamp") for n in _autograd_nodes(loss))
    x = torch.tensor([[-1.5, 0.3], [2.0, -0.2]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(MyReLU.apply, (x,))


def test_numpy_two_layer_gradients_equal_autograd():
    pairs = numpy_vs_autograd("two-layer-numpy")
    assert set(pairs) == {"w1", "w2"}
    for numpy_grad, torch_grad in pairs.values():
        assert numpy_grad.dtype == np.float64
        np.testing.assert_allclose(
            numpy_grad, torch_grad, rtol=1e-10, atol=1e-10 * np.abs(torch_grad).max()
        )


def test_numpy_program_updates_the_module_in_place():
    preset = get_preset("two-layer-numpy")
    model = preset.build(0)
    d = preset.data(0)
    x, y = d.X.numpy(), d.y.numpy()
    reference = TwoLayerNumpy(model.w1.detach().numpy().copy(), model.w2.detach().numpy().copy())
    program = preset.numpy_program(model)
    for _ in range(3):
        assert program.step(x, y, preset.lr) == reference.step(x, y, preset.lr)
    assert np.array_equal(model.w1.detach().numpy(), reference.w1)  # shared memory, no copy


def test_hand_written_tensor_backward_equals_autograd():
    tensors, autograd = get_preset("two-layer-tensors"), get_preset("two-layer-autograd")
    a, b = tensors.build(0).double(), autograd.build(0).double()
    d = tensors.data(0).to(torch.float64)
    loss_a = tensors.manual_step_fn(a, d.X, d.y, 1e-6)
    loss_b = autograd.forward_loss(b, d)
    loss_b.backward()
    with torch.no_grad():
        for p in b.parameters():
            p -= 1e-6 * p.grad
    assert loss_a == pytest.approx(loss_b.item(), rel=1e-12)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_seed_003_nn_variants_share_their_start():
    nn_net = get_preset("two-layer-nn").build(0)
    module_net = get_preset("two-layer-module").build(0)
    assert torch.equal(nn_net[0].weight, module_net.linear1.weight)
    assert torch.equal(nn_net[2].bias, module_net.linear2.bias)
    with torch.random.fork_rng(devices=[]):  # the tutorial's global-RNG program, same numbers
        torch.manual_seed(0)
        torch.randn(64, 1000)
        torch.randn(64, 10)
        tutorial = torch.nn.Sequential(nn.Linear(1000, 100), nn.ReLU(), nn.Linear(100, 10))
    for p, q in zip(nn_net.parameters(), tutorial.parameters(), strict=True):
        assert torch.equal(p, q)


def test_dynamic_net_shared_layer_collects_gradient_from_every_use():
    preset = get_preset("dynamic-net")
    model = preset.build(0).double()
    model.fixed_depth = 3
    d = preset.data(0).subset(8).to(torch.float64)
    preset.forward_loss(model, d).backward()
    shared = model.middle_linear.weight.grad.clone()
    # the same forward with one untied copy of middle_linear per use
    copies = [
        (
            model.middle_linear.weight.detach().clone().requires_grad_(),
            model.middle_linear.bias.detach().clone().requires_grad_(),
        )
        for _ in range(3)
    ]
    h = model.input_linear(d.X).clamp(min=0)
    for w, b in copies:
        h = F.linear(h, w, b).clamp(min=0)
    F.mse_loss(model.output_linear(h), d.y, reduction="sum").backward()
    per_use = [w.grad for w, _ in copies]
    assert all(g.abs().sum() > 0 for g in per_use)
    torch.testing.assert_close(shared, sum(per_use), rtol=1e-12, atol=1e-12)


def test_dynamic_net_graph_changes_from_run_to_run():
    preset = get_preset("dynamic-net")
    graphs = {}
    for seed in range(12):
        model, loss = preset.example_loss(seed=seed)
        graphs.setdefault(model.last_depth, _autograd_nodes(loss))
    assert len(graphs) >= 3
    sizes = {depth: len(nodes) for depth, nodes in graphs.items()}
    assert len(set(sizes.values())) == len(sizes)  # one more use, more nodes
    model = preset.build(0)
    x = preset.data(0).X[:2]
    depths = set()
    for _ in range(20):
        model(x)
        depths.add(model.last_depth)
    assert depths == {0, 1, 2, 3}
    assert isinstance(model, DynamicNet)


# ------------------------------------------------------------------------------ seed 004


def test_scratch_updates_against_autograd_gradients():
    """who's update is −lr × the gradient of ½Σ(t − o)²; wih's is not (the tutorial skips
    the output sigmoid's derivative when it sends the errors back), but it is exactly the
    straight-through gradient, and with exact_gradient=True it is the gradient."""
    pairs = numpy_vs_autograd("scratch-784-250-10", sample=3)
    assert set(pairs) == {"wih", "who", "wih_tutorial_rule"}
    for key in ["who", "wih_tutorial_rule"]:
        delta, expected = pairs[key]
        assert np.abs(delta).max() > 1e-4
        np.testing.assert_allclose(delta, expected, rtol=0, atol=1e-10)
    delta, gradient_step = pairs["wih"]
    assert np.abs(delta - gradient_step).max() > 1e-3


def test_scratch_with_exact_gradient_is_gradient_descent():
    preset = get_preset("scratch-784-250-10")
    model = preset.build(0)
    d = preset.data(0)
    wih0, who0 = model.wih.detach().numpy().copy(), model.who.detach().numpy().copy()
    net = NeuralNetWork(wih=wih0.copy(), who=who0.copy(), exact_gradient=True)
    net.train(d.X[5].numpy(), d.y[5].numpy())
    preset.forward_loss(model, (d.X[5:6], d.y[5:6])).backward()
    np.testing.assert_allclose(net.who - who0, -0.1 * model.who.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(net.wih - wih0, -0.1 * model.wih.grad.numpy(), rtol=0, atol=1e-10)


def test_scratch_network_matches_its_numpy_class():
    preset = get_preset("scratch-784-250-10")
    model = preset.build(0)
    assert model.wih.shape == (250, 784) and model.who.shape == (10, 250)
    assert model.wih.dtype == torch.float64
    assert abs(float(model.wih.detach().std()) - 250**-0.5) < 0.002
    assert abs(float(model.who.detach().std()) - 10**-0.5) < 0.02
    d = preset.data(0)
    net = NeuralNetWork(wih=model.wih.detach().numpy(), who=model.who.detach().numpy())
    np.testing.assert_allclose(
        net.query(d.X[0].numpy())[:, 0], model(d.X[:1])[0].detach().numpy(), rtol=1e-12
    )


def test_builder_specs_describe_the_preset_networks():
    # the mnist-cnn spec, built by the network builder, is the same function as Net
    cnn = get_preset("mnist-cnn")
    net = cnn.build(0).eval()
    built = build_network(cnn.spec, cnn.input_shape).eval()
    with torch.no_grad():
        for dst, src in zip(
            [m for m in built if list(m.parameters())],
            [net.conv1, net.conv2, net.fc1, net.fc2],
            strict=True,
        ):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    x = cnn.data(0).X[:5]
    torch.testing.assert_close(built(x), net(x))
    for name in ["keras-dense-512", "regression-1-10-1"]:
        p = get_preset(name)
        assert p.build(0).spec_text == p.spec
    assert [type(m) for m in get_preset("regression-1-10-1").build(0)] == [
        nn.Linear,
        nn.Tanh,
        nn.Linear,
        nn.Tanh,
    ]
    keras = get_preset("keras-dense-512").build(0)
    assert torch.count_nonzero(keras[0].bias) == 0

"""numpy_backprop: NumPy's layer-by-layer gradients equal torch.autograd's; bad input is named."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradviz.backward.netprop as nb
from gradviz.backward.netprop import ARCHITECTURES, autograd_grads, numpy_backprop
from gradviz.errors import ArgumentError, GradvizError
from gradviz.train.builder import build_network
from gradviz.zoo.examples import MnistNet, TwoLayerNet

RTOL = 1e-10

# torch's own performance note for padding='same' with an even kernel, raised once per process
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def _init(model: nn.Module, seed: int) -> nn.Module:
    """float64 weights and running statistics from a private generator."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=torch.float64) + 0.5)
    return model


def _torch_grads(model, x, loss_fn) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """autograd written out here, independently of numpy_backprop's own helpers."""
    m = copy.deepcopy(model).double()
    x = x.detach().double().requires_grad_()
    value = loss_fn(m(x))
    named = list(m.named_parameters())
    got = torch.autograd.grad(value, [x] + [p for _, p in named], allow_unused=True)
    grads = {
        n: np.zeros(tuple(p.shape)) if g is None else g.numpy()
        for (n, p), g in zip(named, got[1:], strict=True)
    }
    g_x = np.zeros(tuple(x.shape)) if got[0] is None else got[0].numpy()
    return value.item(), grads, g_x


def _assert_same(result, loss, grads, grad_input=None) -> None:
    """Equal to 1e-10 relative, measured against the largest gradient of the whole network.

    The scale never drops below 1: some random stacks are constant in exact arithmetic
    (Σ softmax = 1, a LayerNorm without affine summed, a LayerNorm over one feature), and
    then both sides hold rounding noise with no relative agreement to show. A LayerNorm
    multiplies that noise by 1/sqrt(eps) ≈ 316: Hypothesis found 1.04e-12 of it in a weight
    gradient that is exactly 0 (Linear 1→1→2→1, LayerNorm((1,)), BatchNorm1d).
    """
    every = [*grads.values()] + ([grad_input] if grad_input is not None else [])
    scale = max([np.abs(g).max() for g in every if g.size] + [1.0])
    assert result.loss == pytest.approx(loss, rel=RTOL, abs=RTOL)  # Σ LayerNorm = 0
    assert set(result.grads) == set(grads)
    for row in result.compare(grads):
        assert row["max_abs_diff"] <= RTOL * scale, (row, scale)
    if grad_input is not None:
        assert np.abs(result.grad_input - grad_input).max() <= RTOL * scale


# ------------------------------------------------------------------ random stacks

ACTIVATIONS = (
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "GELU-tanh", "Softmax", "LogSoftmax",
    "LayerNorm", "BatchNorm1d", "Identity", "Dropout",
)  # fmt: skip


def _activation(kind: str, width: int, draw) -> nn.Module:
    if kind == "LeakyReLU":
        return nn.LeakyReLU(draw(st.sampled_from([0.01, 0.2, -0.5])))
    if kind == "GELU-tanh":
        return nn.GELU(approximate="tanh")
    if kind in ("Softmax", "LogSoftmax"):
        return getattr(nn, kind)(dim=draw(st.sampled_from([1, -1])))
    if kind == "LayerNorm":
        return nn.LayerNorm(width, elementwise_affine=draw(st.booleans()))
    if kind == "BatchNorm1d":
        return nn.BatchNorm1d(width, affine=draw(st.booleans()))
    if kind == "Dropout":
        return nn.Dropout(draw(st.sampled_from([0.0, 0.5])))
    return getattr(nn, kind)()


def _loss_case(draw, out: torch.Tensor, g: torch.Generator):
    """A loss name, reduction, target and the same loss in torch."""
    kinds = ["mse", "mse-sum", "half_sse", "cross_entropy", "sum"]
    kind = draw(st.sampled_from(kinds))
    if kind == "cross_entropy":
        t = torch.randint(0, out.shape[1], (out.shape[0],), generator=g)
        return "cross_entropy", None, t, lambda y: F.cross_entropy(y, t)
    t = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if kind == "mse":
        return "mse", None, t, lambda y: F.mse_loss(y, t)
    if kind == "mse-sum":
        return nn.MSELoss(reduction="sum"), None, t, lambda y: F.mse_loss(y, t, reduction="sum")
    if kind == "half_sse":
        return "half_sse", None, t, lambda y: 0.5 * (t - y).pow(2).sum()
    return "sum", None, None, lambda y: y.sum()


@st.composite
def mlp_cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    batch = draw(st.integers(2, 5))
    widths = draw(st.lists(st.integers(1, 6), min_size=2, max_size=5))
    training = draw(st.booleans())  # BatchNorm on batch statistics, dropout must be p=0
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:], strict=False):
        layers.append(nn.Linear(n_in, n_out, bias=draw(st.booleans())))
        for kind in draw(st.lists(st.sampled_from(ACTIVATIONS), max_size=2)):
            layers.append(_activation(kind, n_out, draw))
    if draw(st.booleans()) and len(layers) > 2:  # nested Sequentials
        cut = draw(st.integers(1, len(layers) - 1))
        layers = [nn.Sequential(*layers[:cut]), nn.Sequential(nn.Sequential(*layers[cut:]))]
    model = _init(nn.Sequential(*layers), seed).train(training)
    if training:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, widths[0], generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = copy.deepcopy(model)(x)
    return (model, x) + _loss_case(draw, out, g)


@settings(max_examples=60)
@given(mlp_cases())
def test_random_mlp_stacks_match_autograd(case):
    model, x, loss, reduction, target, torch_loss = case
    result = numpy_backprop(model, x, target, loss, reduction=reduction)
    _assert_same(result, *_torch_grads(model, x, torch_loss))


def _out_size(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def cnn_cases(draw):
    """Conv/pool/norm stacks that always fit, then a head: adaptive pool, flatten, linear."""
    seed = draw(st.integers(0, 2**31 - 1))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(4, 9)), draw(st.integers(4, 9))
    x_shape = (n, c, h, w)
    training = draw(st.booleans()) and n > 1
    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "conv-same", "max", "avg", "bn", "act"]))
        if kind in ("conv", "conv-same"):
            k, d = draw(st.integers(1, 3)), draw(st.sampled_from([1, 1, 2]))
            out = draw(st.integers(1, 4))
            if kind == "conv-same":
                conv = nn.Conv2d(c, out, k, padding="same", dilation=d, bias=draw(st.booleans()))
            else:
                s, p = draw(st.integers(1, 2)), draw(st.integers(0, 1))
                if _out_size(min(h, w), k, s, p, d) < 1:
                    continue
                conv = nn.Conv2d(c, out, k, stride=s, padding=p, dilation=d)
                h, w = _out_size(h, k, s, p, d), _out_size(w, k, s, p, d)
            layers.append(conv)
            c = out
        elif kind in ("max", "avg"):
            k = draw(st.integers(1, min(3, h, w)))
            s = draw(st.integers(1, k))  # overlapping windows when s < k
            p = draw(st.integers(0, k // 2))
            if kind == "max":
                layers.append(nn.MaxPool2d(k, s, p, dilation=1))
            else:
                layers.append(nn.AvgPool2d(k, s, p, count_include_pad=draw(st.booleans())))
            h, w = _out_size(h, k, s, p), _out_size(w, k, s, p)
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(c))
        else:
            layers.append(
                _activation(draw(st.sampled_from(["ReLU", "LeakyReLU", "Tanh", "GELU"])), c, draw)
            )
    oh, ow = draw(st.integers(1, h)), draw(st.integers(1, w))  # any adaptive size, dividing or not
    layers += [nn.AdaptiveAvgPool2d((oh, ow)), nn.Flatten(), nn.Linear(c * oh * ow, 3)]
    model = _init(nn.Sequential(*layers), seed).train(training)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = copy.deepcopy(model)(x)
    return (model, x) + _loss_case(draw, out, g)


@settings(max_examples=80)
@given(cnn_cases())
def test_random_cnn_stacks_match_autograd(case):
    model, x, loss, reduction, target, torch_loss = case
    result = numpy_backprop(model, x, target, loss, reduction=reduction)
    _assert_same(result, *_torch_grads(model, x, torch_loss))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 6)),
        (nn.Conv2d(2, 3, 4, padding="same", dilation=2), (2, 2, 9, 8)),  # odd padding split
        (nn.Conv2d(2, 3, 3, padding="valid", bias=False), (1, 2, 5, 5)),
        (nn.MaxPool2d(3, stride=1, padding=1), (2, 2, 5, 5)),
        (nn.MaxPool2d(2, dilation=2), (2, 2, 7, 7)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 6, 5)),
        (nn.AvgPool2d(2, divisor_override=3), (2, 2, 4, 4)),
        (nn.AdaptiveAvgPool2d((3, None)), (2, 2, 7, 5)),
        (nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
        (nn.AdaptiveAvgPool1d(3), (2, 3, 7)),
        (nn.BatchNorm1d(3), (4, 3, 5)),
        (nn.LayerNorm((3, 4)), (2, 3, 4)),
        (nn.Flatten(0, 1), (2, 3, 4)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
@pytest.mark.parametrize("training", [False, True])
def test_single_layers_with_unusual_settings(layer, shape, training):
    model = _init(nn.Sequential(layer), 3).train(training)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    w = torch.randn(copy.deepcopy(model)(x).shape, generator=torch.Generator().manual_seed(5))
    w = w.double()
    result = numpy_backprop(model, x, w, "half_sse")
    _assert_same(result, *_torch_grads(model, x, lambda y: 0.5 * (w - y).pow(2).sum()))


@settings(max_examples=30, deadline=None)
@given(
    dropped=st.sampled_from(["weight", "bias"]),
    batch=st.integers(2, 5),
    width=st.integers(1, 4),
    training=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_batch_norm_with_only_a_weight_or_only_a_bias(dropped, batch, width, training, seed):
    # F.batch_norm takes weight and bias each optional; the NumPy layer must too
    model = _init(nn.Sequential(nn.BatchNorm1d(width)), seed).train(training)
    setattr(model[0], dropped, None)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    w = torch.randn(batch, width, generator=g, dtype=torch.float64)
    result = numpy_backprop(model, x, w, "half_sse")
    assert set(result.grads) == {"0.weight", "0.bias"} - {f"0.{dropped}"}
    _assert_same(result, *_torch_grads(model, x, lambda y: 0.5 * (w - y).pow(2).sum()))


def test_max_pool_ties_go_to_the_first_entry_as_in_torch():
    # a constant image: every window is a tie, and torch sends the gradient to its first entry
    model = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(16, 1))
    model = _init(model, 0)
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    result = numpy_backprop(model, x, loss="sum")
    _assert_same(result, *_torch_grads(model, x, lambda y: y.sum()))


# ------------------------------------------------------------------ seed networks


def test_mnist_net_in_eval_mode_matches_autograd():
    model = _init(MnistNet(), 1).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(0, 10, (3,), generator=g)
    result = numpy_backprop(model, x, t, "nll")
    _assert_same(result, *_torch_grads(model, x, lambda y: F.nll_loss(y, t)))
    assert len(result.grads) == 8 and result.output.shape == (3, 10)
    assert any("F.dropout" not in s and "Reshape(-1, 320)" in s for s in result.layers)


def test_two_layer_net_with_mse_sum_matches_autograd_and_the_tutorial_formula():
    torch.manual_seed(0)
    model = TwoLayerNet(20, 8, 3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 20, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64)
    result = numpy_backprop(model, x, y, nn.MSELoss(reduction="sum"))
    _assert_same(result, *_torch_grads(model, x, lambda out: F.mse_loss(out, y, reduction="sum")))
    # seed 003 by hand: g_y = 2(y_pred − y); g_w2 = h_reluᵀ·g_y; g_h = g_y·w2 where h > 0
    w1, b1 = model.linear1.weight.detach().numpy(), model.linear1.bias.detach().numpy()
    w2, b2 = model.linear2.weight.detach().numpy(), model.linear2.bias.detach().numpy()
    h = x.numpy() @ w1.T + b1
    h_relu = np.maximum(h, 0)
    g_y = 2 * (h_relu @ w2.T + b2 - y.numpy())
    g_h = (g_y @ w2) * (h > 0)
    np.testing.assert_allclose(result.grads["linear2.weight"], g_y.T @ h_relu, rtol=1e-12)
    np.testing.assert_allclose(result.grads["linear1.weight"], g_h.T @ x.numpy(), rtol=1e-12)
    # the same loss by name
    by_name = numpy_backprop(model, x, y, "mse", reduction="sum")
    assert by_name.loss == result.loss


def _preset_names() -> list[str]:
    from gradviz.zoo.presets import PRESET_NAMES

    return list(PRESET_NAMES)


@pytest.mark.parametrize("name", _preset_names())
def test_every_preset_network_and_loss_matches_autograd(name):
    from gradviz.zoo.presets import get_preset

    preset = get_preset(name)
    model = preset.build(0).eval()
    if hasattr(model, "fixed_depth"):
        model.fixed_depth = 2  # DynamicNet: pin the random depth
    d = preset.data(0)
    x, y = d.X[:4], d.y[:4]
    result = numpy_backprop(model, x, y, preset.loss)  # the preset's own loss callable
    _assert_same(
        result,
        *_torch_grads(
            model, x, lambda out: preset.loss(out, y.to(out.dtype) if y.is_floating_point() else y)
        ),
    )


def test_seed003_numpy_program_gives_the_same_gradients():
    from gradviz.zoo.presets import get_preset
    from gradviz.zoo.seednets import TwoLayerNumpy

    preset = get_preset("two-layer-numpy")
    model = preset.build(0)
    d = preset.data(0)
    x, y = d.X[:16], d.y[:16]
    loss, g_w1, g_w2 = TwoLayerNumpy(
        model.w1.detach().numpy(), model.w2.detach().numpy()
    ).gradients(x.numpy(), y.numpy())
    result = numpy_backprop(model, x, y, "mse", reduction="sum")
    assert result.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(result.grads["w1"], g_w1, rtol=1e-12)
    np.testing.assert_allclose(result.grads["w2"], g_w2, rtol=1e-12)


def test_a_shared_weight_collects_the_gradient_of_every_use():
    from gradviz.zoo.presets import DynamicNet

    model = _init(DynamicNet(5, 4, 2), 7)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    y = torch.zeros(3, 2, dtype=torch.float64)
    grads = {}
    for depth in (0, 3):
        model.fixed_depth = depth
        result = numpy_backprop(model, x, y, "mse")
        _assert_same(result, *_torch_grads(model, x, lambda out: F.mse_loss(out, y)))
        grads[depth] = result.grads["middle_linear.weight"]
        assert sum("middle_linear" in s for s in result.layers) == depth
    assert not grads[0].any() and grads[3].any()
    model.fixed_depth = None
    with pytest.raises(ArgumentError, match="fixed_depth"):
        numpy_backprop(model, x, y, "mse")


def test_a_new_class_is_one_registry_entry():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 2)

        def forward(self, x):
            return torch.tanh(self.inner(x)).clamp(max=0.5)

    model = _init(Tiny(), 9)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(ArgumentError, match="Tiny"):
        numpy_backprop(model, x, loss="sum")
    ARCHITECTURES[Tiny] = lambda m: [m.inner, nb.Tanh(), nb.Clamp(max=0.5)]
    try:
        result = numpy_backprop(model, x, loss="sum")
    finally:
        del ARCHITECTURES[Tiny]
    _assert_same(result, *_torch_grads(model, x, lambda y: y.sum()))
    assert result.layers == (
        "inner: Linear(3→2)",
        "Tiny.forward: Tanh",
        "Tiny.forward: Clamp(min=None, max=0.5)",
    )


def test_register_architecture_adds_a_class_and_refuses_a_second_reading():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 3)

        def forward(self, x):
            return torch.sigmoid(self.inner(self.inner(x)))

    def entry(m):
        return [m.inner, m.inner, nb.Sigmoid()]

    model = _init(Twice(), 4)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert nb.register_architecture(Twice, entry) is entry
    try:
        assert "Twice" in nb.supported_modules()
        nb.register_architecture(Twice, entry)  # the same entry again is harmless
        with pytest.raises(ArgumentError, match="registered already"):
            nb.register_architecture(Twice, lambda m: [m.inner])
        result = numpy_backprop(model, x, loss="sum")
    finally:
        del ARCHITECTURES[Twice]
    _assert_same(result, *_torch_grads(model, x, lambda y: y.sum()))
    assert "Twice" not in nb.supported_modules()
    with pytest.raises(ArgumentError, match="registered already"):
        nb.register_architecture(nn.Linear, lambda m: [])  # torch's own entry stays
    with pytest.raises(ArgumentError, match="nn.Module subclass"):
        nb.register_architecture(int, entry)
    with pytest.raises(ArgumentError, match="entry"):
        nb.register_architecture(Twice, "not callable")


def test_the_zoo_registers_its_networks_without_backward_importing_it():
    # a fresh interpreter that asks netprop alone still reads the presets' classes: the
    # zoo registers them when gradviz is imported, and netprop never imports the zoo
    import os
    import subprocess
    import sys

    code = (
        "import gradviz.backward.netprop as nb; "
        "assert {'QuadrantParams', 'DynamicNet', 'Net', 'ScratchNet'} "
        "<= set(nb.supported_modules()); "
        "from gradviz.zoo.presets import get_preset; p = get_preset('quadrant-folded-bias'); "
        "d = p.data(0); r = nb.numpy_backprop(p.build(0), d.X[:4], d.y[:4], p.loss); "
        "print(r.loss_name)"
    )
    here = str(Path(nb.__file__).parents[3])  # the checkout whose gradviz this test runs
    env = {**os.environ, "PYTHONPATH": here}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "bce, reduction='batchmean'"
    imported = set()
    for f in Path(nb.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
    assert "gradviz.backward.netprop.layers" in imported  # the walk saw the package
    assert not {m for m in imported if m.startswith(("gradviz.zoo", "importlib"))}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(nb.LOSSES)),
    reduction=st.sampled_from(["mean", "sum", "batchmean", "none"]),
)
def test_a_registered_loss_function_reads_as_its_name(name, reduction):
    def my_loss(out, target):  # never called: the NumPy side computes the named loss
        raise AssertionError("numpy_backprop must not call the loss function")

    if reduction not in nb.LOSSES[name].reductions:
        with pytest.raises(ArgumentError, match="reduction"):
            nb.register_loss(my_loss, name, reduction)
        return
    assert nb.register_loss(my_loss, name, reduction) is my_loss
    try:
        model = _init(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid()), 3)
        x = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        target = _target_for(name, model(x))
        by_fn = numpy_backprop(model, x, target, my_loss)
        by_name = numpy_backprop(model, x, target, name, reduction=reduction)
    finally:
        nb.losses._CALLABLES.pop(my_loss)
    assert by_fn.loss == by_name.loss and by_fn.loss_name == by_name.loss_name
    for key, grad in by_name.grads.items():
        np.testing.assert_array_equal(by_fn.grads[key], grad)


def _target_for(name: str, out: torch.Tensor) -> torch.Tensor | None:
    if name == "sum":
        return None
    if name in ("nll", "cross_entropy"):
        return torch.tensor([0, 1, 2, 3, 0, 1])
    return torch.full(out.shape, 0.25, dtype=torch.float64)


def test_register_loss_names_what_is_wrong():
    with pytest.raises(ArgumentError, match="name"):
        nb.register_loss(lambda y, t: y, "hinge", "mean")
    with pytest.raises(ArgumentError, match="loss function"):
        nb.register_loss("mse", "mse", "mean")


def test_builder_networks_are_read_as_sequentials():
    net = build_network(
        "Conv2d(out_channels=2, kernel_size=3) -> ReLU -> Flatten -> Linear(out_features=3) "
        "-> LogSoftmax",
        (1, 5, 5),
        seed=0,
    )
    model = _init(net, 2)
    x = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([0, 2])
    result = numpy_backprop(model, x, t, nn.NLLLoss(reduction="sum"))
    _assert_same(result, *_torch_grads(model, x, lambda y: F.nll_loss(y, t, reduction="sum")))


# --------------------------------------------------------------------------- losses


def _probs(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


LOGITS_CASES = [
    ("mse", None, lambda y, t: F.mse_loss(y, t), "same"),
    ("mse", "sum", lambda y, t: F.mse_loss(y, t, reduction="sum"), "same"),
    ("mse", "batchmean", lambda y, t: F.mse_loss(y, t, reduction="sum") / y.shape[0], "same"),
    (nn.MSELoss(), None, lambda y, t: F.mse_loss(y, t), "same"),
    (nn.MSELoss(reduction="sum"), None, lambda y, t: F.mse_loss(y, t, reduction="sum"), "same"),
    ("half_sse", None, lambda y, t: 0.5 * ((t - y) ** 2).sum(), "same"),
    ("sum", None, lambda y, t: y.sum(), "none"),
    ("cross_entropy", None, lambda y, t: F.cross_entropy(y, t), "classes"),
    ("cross_entropy", "sum", lambda y, t: F.cross_entropy(y, t, reduction="sum"), "classes"),
    ("cross_entropy", None, lambda y, t: F.cross_entropy(y, t), "probs"),
    (nn.CrossEntropyLoss(), None, lambda y, t: F.cross_entropy(y, t), "classes"),
    (F.cross_entropy, None, lambda y, t: F.cross_entropy(y, t), "classes"),
]


@pytest.mark.parametrize("loss, reduction, torch_loss, target_kind", LOGITS_CASES)
def test_each_loss_on_logits(loss, reduction, torch_loss, target_kind):
    model = _init(nn.Sequential(nn.Linear(4, 3)), 11)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    t = {
        "same": torch.randn(5, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64),
        "classes": torch.tensor([0, 2, 1, 2, 0]),
        "probs": torch.softmax(_probs((5, 3), 14), dim=1),
        "none": None,
    }[target_kind]
    result = numpy_backprop(model, x, t, loss, reduction=reduction)
    _assert_same(result, *_torch_grads(model, x, lambda y: torch_loss(y, t)))


@pytest.mark.parametrize(
    "head, loss, reduction, torch_loss",
    [
        (nn.LogSoftmax(dim=1), "nll", None, lambda y, t: F.nll_loss(y, t)),
        (nn.LogSoftmax(dim=1), "nll", "sum", lambda y, t: F.nll_loss(y, t, reduction="sum")),
        (nn.LogSoftmax(dim=1), nn.NLLLoss(), None, lambda y, t: F.nll_loss(y, t)),
        (nn.Sigmoid(), "bce", None, lambda y, t: F.binary_cross_entropy(y, t)),
        (nn.Sigmoid(), "bce", "sum", lambda y, t: F.binary_cross_entropy(y, t, reduction="sum")),
        (nn.Sigmoid(), nn.BCELoss(), None, lambda y, t: F.binary_cross_entropy(y, t)),
        (
            nn.Softmax(dim=1),
            "categorical_crossentropy",
            None,
            lambda y, t: -(t * torch.log(y.clamp(1e-7, 1 - 1e-7))).sum(dim=1).mean(),
        ),
    ],  # fmt: skip
)
def test_each_loss_on_probabilities(head, loss, reduction, torch_loss):
    model = _init(nn.Sequential(nn.Linear(4, 3), head), 21)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    classes = torch.tensor([1, 0, 2, 2, 1])
    t = classes if isinstance(head, nn.LogSoftmax) else F.one_hot(classes, 3).double()
    if isinstance(head, nn.Sigmoid):
        t = _probs((5, 3), 23)  # soft targets
    result = numpy_backprop(model, x, t, loss, reduction=reduction)
    _assert_same(result, *_torch_grads(model, x, lambda y: torch_loss(y, t)))


def test_autograd_grads_agrees_and_leaves_the_model_alone():
    model = _init(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh()), 5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t = torch.zeros(6, 4, dtype=torch.float64)
    result = numpy_backprop(model, x, t, "mse")
    loss, grads = autograd_grads(model, x, t, "mse")
    _assert_same(result, loss, grads)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert all(p.grad is None for p in model.parameters())
    # a network without parameters, and the same refusal of live dropout as numpy_backprop
    assert autograd_grads(nn.Tanh(), x, loss="sum")[1] == {}
    with pytest.raises(ArgumentError, match=r"model\.eval\(\)"):
        autograd_grads(nn.Dropout().train(), x, loss="sum")


# ------------------------------------------------------------------- comparison table


def test_compare_rows_name_the_worst_entry_and_str_reads():
    model = _init(nn.Sequential(nn.Linear(2, 2)), 1)
    x = torch.ones(1, 2, dtype=torch.float64)
    result = numpy_backprop(model, x, loss="sum")
    torch_grads = {k: v.copy() for k, v in result.grads.items()}
    torch_grads["0.weight"][1, 0] += 0.5
    rows = {r["name"]: r for r in result.compare(torch_grads)}
    assert rows["0.bias"]["max_abs_diff"] == 0 and rows["0.bias"]["max_rel_diff"] == 0
    w = rows["0.weight"]
    assert w["shape"] == (2, 2) and w["worst_index"] == (1, 0)
    assert w["max_abs_diff"] == pytest.approx(0.5) and w["max_rel_diff"] == pytest.approx(1 / 3)
    assert w["torch"] - w["numpy"] == pytest.approx(0.5)
    text = str(result)
    assert "loss (sum, reduction='sum') = " in text and "0: Linear(2→2)" in text
    with pytest.raises(ArgumentError, match="missing"):
        result.compare({"0.weight": torch_grads["0.weight"]})
    with pytest.raises(ArgumentError, match="shape"):
        result.compare({"0.weight": np.zeros(3), "0.bias": np.zeros(2)})


def test_public_names():
    assert sorted(nb.__all__) == nb.__all__
    assert all(hasattr(nb, name) for name in nb.__all__)
    assert {"Linear", "Conv2d", "Net", "Sequential", "QuadrantParams"} <= set(
        nb.supported_modules()
    )


# --------------------------------------------------------------------------- bad input


def _small():
    return _init(nn.Sequential(nn.Linear(3, 2)), 0), torch.zeros(4, 3, dtype=torch.float64)


def test_unsupported_module_names_its_type_and_the_supported_ones():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ELU()))
    with pytest.raises(GradvizError) as info:
        numpy_backprop(model, torch.zeros(2, 3), loss="sum")
    message = str(info.value)
    assert "ELU at '1.0'" in message and "Conv2d" in message and "ARCHITECTURES" in message


@pytest.mark.parametrize("model_train", [True, False])
def test_dropout_in_training_mode_asks_for_eval(model_train):
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.3)).train(model_train)
    x = torch.zeros(2, 3)
    if not model_train:
        numpy_backprop(model, x, loss="sum")
        return
    with pytest.raises(GradvizError, match=r"Dropout \(p=0.3\) in training mode.*model\.eval\(\)"):
        numpy_backprop(model, x, loss="sum")
    numpy_backprop(nn.Sequential(nn.Dropout(0.0)).train(), x, loss="sum")  # p = 0 is fine


def test_mnist_net_in_training_mode_asks_for_eval():
    with pytest.raises(GradvizError, match=r"dropout.*model\.eval\(\)"):
        numpy_backprop(MnistNet().train(), torch.zeros(1, 1, 28, 28), torch.tensor([1]), "nll")


@pytest.mark.parametrize(
    "target, loss, match",
    [
        (torch.zeros(4, 3), "mse", r"target=.*\(4, 3\).*output has shape \(4, 2\)"),
        (None, "mse", "needs a target"),
        (torch.zeros(4, 2), "nll", "one class index per row"),
        (torch.tensor([0, 1, 2, 0]), "cross_entropy", r"class indices must lie in 0…1"),
        (torch.zeros(4, 2), "bce", "Sigmoid"),
    ],
)
def test_bad_targets_name_the_problem_and_the_fix(target, loss, match):
    model, x = _small()
    with torch.no_grad():
        model[0].bias.fill_(-3.0)  # outputs outside [0, 1] for bce
    with pytest.raises(ArgumentError, match=match):
        numpy_backprop(model, x, target, loss)


@pytest.mark.parametrize(
    "loss, reduction, match",
    [
        ("hinge", None, "use one of mse, half_sse"),
        ("mse", "none", "give a scalar loss"),
        ("half_sse", "mean", "takes reduction 'sum'"),
        (nn.MSELoss(reduction="sum"), "mean", "already says reduction='sum'"),
        (nn.L1Loss(), None, "use MSELoss, NLLLoss"),
        (nn.NLLLoss(weight=torch.ones(2)), None, "drop weight="),
        (nn.CrossEntropyLoss(label_smoothing=0.1), None, "label_smoothing=0"),
        (F.l1_loss, None, "give a loss name"),
    ],
)
def test_bad_losses_are_named(loss, reduction, match):
    model, x = _small()
    with pytest.raises(ArgumentError, match=match):
        numpy_backprop(model, x, torch.zeros(4, 2), loss, reduction=reduction)


def test_bad_inputs_and_layer_settings_are_named():
    model, _ = _small()
    with pytest.raises(
        ArgumentError, match=r"layer 0 \(0: Linear\(3→2\)\) expects 3 input features"
    ):
        numpy_backprop(model, torch.zeros(4, 5), loss="sum")
    with pytest.raises(ArgumentError, match="x="):
        numpy_backprop(model, "abc", loss="sum")
    with pytest.raises(ArgumentError, match="unsqueeze"):
        numpy_backprop(nn.Conv2d(1, 1, 2), torch.zeros(1, 3, 3), loss="sum")
    with pytest.raises(ArgumentError, match="groups=2"):
        numpy_backprop(nn.Conv2d(2, 2, 1, groups=2), torch.zeros(1, 2, 3, 3), loss="sum")
    with pytest.raises(ArgumentError, match="ceil_mode"):
        numpy_backprop(nn.MaxPool2d(2, ceil_mode=True), torch.zeros(1, 1, 3, 3), loss="sum")
    with pytest.raises(ArgumentError, match="does not fit"):
        numpy_backprop(nn.Conv2d(1, 1, 5), torch.zeros(1, 1, 3, 3), loss="sum")
    with pytest.raises(ArgumentError, match="more than one value per channel"):
        numpy_backprop(nn.BatchNorm1d(2).train(), torch.zeros(1, 2), loss="sum")
    with pytest.raises(ArgumentError, match="give a torch.nn.Module"):
        numpy_backprop(lambda x: x, torch.zeros(1), loss="sum")

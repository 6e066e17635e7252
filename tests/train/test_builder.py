"""Network builder: shape inference against torch's real shapes, text round-trips, clear errors."""

from __future__ import annotations

import math
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz.errors import ArgumentError, GradvizError, SpecError
from gradviz.train.builder import Network, build_network
from gradviz.train.layer_kinds import _KINDS, layer_types
from gradviz.train.shapes import _INFER, infer_shapes, layer_table
from gradviz.train.spec import parse_spec, spec_to_text

# ----------------------------------------------------------------- valid spec strategy


def _out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def valid_specs(draw: st.DrawFn) -> tuple[list[dict], tuple[int, ...], list[tuple[int, ...]]]:
    """A random valid spec, its input shape and the shapes this test expects (own arithmetic)."""
    start = draw(st.sampled_from(["flat", "image", "sequence"]))
    if start == "flat":
        shape: tuple[int, ...] = (draw(st.integers(1, 12)),)
    elif start == "image":
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 12)), draw(st.integers(3, 12)))
    else:
        shape = (draw(st.integers(1, 4)), draw(st.integers(2, 10)))
    input_shape = shape
    layers: list[dict] = []
    shapes: list[tuple[int, ...]] = []
    for _ in range(draw(st.integers(1, 6))):
        nd = len(shape)
        options = [
            "ReLU",
            "Sigmoid",
            "Tanh",
            "GELU",
            "LeakyReLU",
            "Dropout",
            "Softmax",
            "LogSoftmax",
            "LayerNorm",
        ]
        if nd > 1:
            options.append("Flatten")
        if nd == 1:
            options += ["Linear", "Linear", "BatchNorm1d"]
        if nd == 2:
            options += ["AdaptiveAvgPool1d", "BatchNorm1d"]
        if nd == 3:
            options += [
                "Conv2d",
                "Conv2d",
                "MaxPool2d",
                "AvgPool2d",
                "AdaptiveAvgPool2d",
                "Dropout2d",
                "BatchNorm2d",
            ]
        kind = draw(st.sampled_from(options))
        layer: dict = {"type": kind}
        if kind == "Linear":
            layer["out_features"] = draw(st.integers(1, 8))
            if draw(st.booleans()):
                layer["bias"] = draw(st.booleans())
            if draw(st.booleans()):
                layer["in_features"] = shape[0]
            shape = (layer["out_features"],)
        elif kind == "Conv2d":
            c, h, w = shape
            pad = draw(st.integers(0, 2))
            dil = draw(st.integers(1, 2))
            kmax = min((h + 2 * pad - 1) // dil + 1, (w + 2 * pad - 1) // dil + 1, 5)
            k = draw(st.integers(1, kmax))
            stride = draw(st.integers(1, 3))
            out_c = draw(st.integers(1, 4))
            layer.update(out_channels=out_c, kernel_size=k)
            if stride != 1:
                layer["stride"] = stride
            if pad:
                layer["padding"] = pad
            if dil != 1:
                layer["dilation"] = dil
            shape = (out_c, _out(h, k, stride, pad, dil), _out(w, k, stride, pad, dil))
        elif kind in ("MaxPool2d", "AvgPool2d"):
            c, h, w = shape
            k = draw(st.integers(1, min(h, w, 4)))
            pad = draw(st.integers(0, k // 2))
            stride = draw(st.one_of(st.none(), st.integers(1, 3)))
            layer["kernel_size"] = k
            if stride is not None:
                layer["stride"] = stride
            if pad:
                layer["padding"] = pad
            s = k if stride is None else stride
            shape = (c, _out(h, k, s, pad), _out(w, k, s, pad))
        elif kind == "AdaptiveAvgPool1d":
            layer["output_size"] = draw(st.integers(1, shape[1]))
            shape = (shape[0], layer["output_size"])
        elif kind == "AdaptiveAvgPool2d":
            o = draw(st.integers(1, 3))
            layer["output_size"] = o
            shape = (shape[0], o, o)
        elif kind in ("Dropout", "Dropout2d"):
            layer["p"] = draw(st.sampled_from([0.0, 0.25, 0.5]))
        elif kind == "LeakyReLU":
            layer["negative_slope"] = draw(st.sampled_from([0.01, 0.2]))
        elif kind == "GELU" and draw(st.booleans()):
            layer["approximate"] = draw(st.sampled_from(["none", "tanh"]))
        elif kind in ("Softmax", "LogSoftmax"):
            layer["dim"] = draw(st.sampled_from([*range(1, nd + 1), -1]))
        elif kind == "Flatten":
            shape = (math.prod(shape),)
        shapes.append(shape)
        layers.append(layer)
    return layers, input_shape, shapes


@given(valid_specs())
@settings(max_examples=80)
def test_random_valid_specs_build_and_run_with_the_inferred_shapes(case):
    spec, input_shape, expected = case
    net = build_network(spec, input_shape, seed=0)
    assert isinstance(net, nn.Sequential)
    assert net.input_shape == input_shape
    assert net.output_shapes == expected
    assert infer_shapes(spec, input_shape) == expected
    x = torch.randn(3, *input_shape)
    with torch.no_grad():
        for i, module in enumerate(net):
            x = module(x)
            assert tuple(x.shape) == (3, *expected[i]), f"layer {i} {spec[i]}"
    table = layer_table(spec, input_shape)
    assert [r["params"] for r in table] == [sum(p.numel() for p in m.parameters()) for m in net]


@given(valid_specs())
@settings(max_examples=80)
def test_spec_text_round_trips(case):
    spec, _, _ = case
    text = spec_to_text(spec)
    assert parse_spec(text) == parse_spec(spec)  # spec → text → spec
    assert spec_to_text(parse_spec(text)) == text  # text → spec → text


@given(
    sizes=st.lists(st.integers(1, 999), min_size=2, max_size=6),
    activation=st.sampled_from(["", "relu", "sigmoid", "tanh", "gelu", "leakyrelu"]),
    nobias=st.booleans(),
)
def test_compact_text_round_trips(sizes, activation, nobias):
    text = (
        "-".join(map(str, sizes))
        + (f" {activation}" if activation else "")
        + (" nobias" if nobias else "")
    )
    spec = parse_spec(text)
    assert spec_to_text(spec) == text
    linears = [layer for layer in spec if layer["type"] == "Linear"]
    assert [layer["out_features"] for layer in linears] == sizes[1:]
    assert linears[0]["in_features"] == sizes[0]


# --------------------------------------------------------------------- invalid specs

_BAD_VALUES = {
    "pos_int": [0, -3, 2.5, "4", True, None, [1, 2, 3]],
    "int": ["1", 1.5, None, True],
    "prob": [-0.1, 1.5, "0.5", float("nan"), None],
    "bool": [1, "yes", None],
    "pair": [0, -1, (1, 2, 3), (0, 2), "3", 2.0, False],
}
_FIELD_KIND = {
    "out_features": "pos_int",
    "out_channels": "pos_int",
    "kernel_size": "pair",
    "output_size": "pos_int",
    "p": "prob",
    "bias": "bool",
    "start_dim": "int",
    "dim": "int",
}
_KNOWN = {t.lower() for t in layer_types()}


@st.composite
def invalid_specs(draw: st.DrawFn) -> tuple[object, object]:
    spec, input_shape, _ = draw(valid_specs())
    spec = [dict(layer) for layer in spec]
    i = draw(st.integers(0, len(spec) - 1))
    how = draw(
        st.sampled_from(
            ["type", "field", "value", "kernel", "missing", "not_dict", "empty", "input_shape"]
        )
    )
    if how == "type":
        name = draw(
            st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(
                lambda s: s.lower() not in _KNOWN
            )
        )
        spec[i]["type"] = name
    elif how == "field":
        spec[i]["zz_" + draw(st.text(string.ascii_lowercase, max_size=6))] = 1
    elif how == "value":
        candidates = [k for k in spec[i] if k in _FIELD_KIND]
        if not candidates:
            spec[i]["type"] = 123
        else:
            key = draw(st.sampled_from(candidates))
            spec[i][key] = draw(st.sampled_from(_BAD_VALUES[_FIELD_KIND[key]]))
    elif how == "kernel":
        spec.insert(0, {"type": "Conv2d", "out_channels": 2, "kernel_size": 99})
        input_shape = (1, 8, 8)
    elif how == "missing":
        spec[i] = {"type": "Linear"}
    elif how == "not_dict":
        spec[i] = draw(st.sampled_from([None, 3, ["Linear"], b"ReLU"]))
    elif how == "empty":
        spec = []
    else:
        input_shape = draw(
            st.sampled_from([(), (0,), (-1, 3), (2.5,), "784", (1, 2, 3, 4), None, (True,)])
        )
        if input_shape is None:
            spec.insert(0, {"type": "ReLU"})
    return spec, input_shape


@given(invalid_specs())
@settings(max_examples=150)
def test_random_invalid_specs_raise_gradviz_errors(case):
    spec, input_shape = case
    with pytest.raises(GradvizError) as info:
        build_network(spec, input_shape)
    assert str(info.value)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 40)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "out_features", "kernel_size", "p", "dim", "bias", "x"])
            | st.text(max_size=4),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_layer_junk = st.fixed_dictionaries(
    {"type": st.sampled_from([*layer_types(), "relu", "Nope", ""])},
    optional={
        k: _json
        for k in [
            "out_features",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "p",
            "dim",
            "bias",
            "output_size",
            "start_dim",
            "end_dim",
            "normalized_shape",
            "eps",
            "approximate",
        ]
    },
)


@given(
    spec=st.one_of(_json, st.lists(_layer_junk, max_size=5), st.text(max_size=40)),
    input_shape=st.one_of(
        _json, st.tuples(st.integers(-1, 9), st.integers(-1, 9), st.integers(-1, 9))
    ),
)
@settings(max_examples=300)
def test_any_input_builds_or_raises_a_gradviz_error(spec, input_shape):
    try:
        net = build_network(spec, input_shape)
    except GradvizError as exc:
        assert str(exc)
        return
    with torch.no_grad():
        out = net(torch.randn(2, *net.input_shape))
    assert tuple(out.shape[1:]) == net.output_shapes[-1]


@given(st.text(alphabet="0123456789-() ,=->\nLinearReLUConv2dkernel_sizeout", max_size=50))
def test_any_text_parses_or_raises_a_spec_error(text):
    try:
        spec = parse_spec(text)
    except GradvizError:
        return
    assert parse_spec(spec_to_text(spec)) == spec


# ----------------------------------------------------------------- compact text facts


@pytest.mark.parametrize(
    ("text", "sizes", "act"),
    [
        ("2-3-3-4 sigmoid", [2, 3, 3, 4], nn.Sigmoid),
        ("784-250-10 sigmoid", [784, 250, 10], nn.Sigmoid),
        ("1-10-1 tanh", [1, 10, 1], nn.Tanh),
    ],
)
def test_compact_text_puts_the_activation_after_every_layer_including_the_output(text, sizes, act):
    net = build_network(text)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, act] * (len(sizes) - 1)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == sizes[1:]
    assert net.input_shape == (sizes[0],)
    assert net.spec_text == text


def test_compact_text_variants():
    assert [type(m) for m in build_network("2-3-4")] == [nn.Linear, nn.Linear]
    net = build_network("784-250-10 sigmoid nobias")
    assert all(m.bias is None for m in net if isinstance(m, nn.Linear))
    assert spec_to_text("2 - 3 - 4 Sigmoid") == "2-3-4 sigmoid"
    with pytest.raises(SpecError, match="size 1 is 0"):
        parse_spec("2-0-4")
    with pytest.raises(SpecError, match="softmaxx"):
        parse_spec("2-3-4 softmaxx")


def test_general_text_reads_positional_and_keyword_arguments():
    spec = parse_spec("Conv2d(10, 5) -> MaxPool2d(2) -> relu\nFlatten -> Linear(out_features=10)")
    assert spec == [
        {"type": "Conv2d", "out_channels": 10, "kernel_size": 5},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "ReLU"},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 10},
    ]
    assert parse_spec(["Linear(3)", {"type": "ReLU"}]) == [
        {"type": "Linear", "out_features": 3},
        {"type": "ReLU"},
    ]


# ---------------------------------------------------------------------- error messages


def _error(spec, input_shape=None) -> str:
    with pytest.raises(GradvizError) as info:
        build_network(spec, input_shape)
    return str(info.value)


def test_kernel_too_big_names_layer_shapes_and_fix():
    spec = "Conv2d(4, 5) -> MaxPool2d(3) -> ReLU -> Conv2d(8, 7)"
    assert _error(spec, (1, 16, 16)) == (
        "layer 3 Conv2d: kernel_size 7 is larger than the 4×4 input (padded 4×4); "
        "use kernel_size ≤ 4 or add padding"
    )
    assert "padded 6×6" in _error("Conv2d(2, 7, padding=1)", (1, 4, 4))


@pytest.mark.parametrize(
    ("spec", "input_shape", "needles"),
    [
        ("Conv2d(10, 5) -> Linear(10)", (1, 28, 28), ["layer 1 Linear", "(10, 24, 24)", "Flatten"]),
        ("Linear(3)", (1, 28, 28), ["layer 0 Linear", "Flatten"]),
        ("Conv2d(3, 3)", (784,), ["layer 0 Conv2d", "(784,)", "input_shape"]),
        ("Relux", (3,), ["layer 0", "'Relux'", "ReLU"]),
        ([{"type": "Linear", "out_features": -2}], (3,), ["layer 0 Linear", "out_features=-2"]),
        (
            [{"type": "Linear", "out_feature": 2}],
            (3,),
            ["layer 0 Linear", "out_feature", "out_features"],
        ),
        ([{"type": "Linear", "in_features": 5, "out_features": 2}], (3,), ["in_features=5", "3"]),
        ("2-3-4 sigmoid", (5,), ["layer 0 Linear", "in_features=2", "5"]),
        ("Softmax(dim=0)", (4,), ["layer 0 Softmax", "dim=0", "batch"]),
        ("MaxPool2d(2, padding=2)", (1, 8, 8), ["layer 0 MaxPool2d", "padding", "≤ 1"]),
        ("Conv2d(2, 4, padding='same')", (1, 8, 8), ["odd kernel_size"]),
        ("Conv2d(2, 3, stride=2, padding='same')", (1, 8, 8), ["stride 1"]),
        ("Linear(320, 50)", (320,), ["layer 0 Linear", "out_features", "inferred"]),
        ("Conv2d(10)", (1, 8, 8), ["layer 0 Conv2d", "kernel_size is required"]),
        ("Linear(10) -> -> ReLU", (3,), ["empty layer"]),
        ("Linear(10", (3,), ["layer 0", "cannot read"]),
        ("Linear(x)", (3,), ["layer 0 Linear", "not a plain value"]),
        ("Linear(10**9)", (784,), ["layer 0 Linear"]),
        ("Linear(10000000)", (784,), ["parameters", "smaller layers"]),
        ("Conv2d(2000, 3, padding=1000)", (1, 8, 8), ["values per sample"]),
        ("Flatten(start_dim=0)", (2, 3), ["layer 0 Flatten", "start_dim=0"]),
        ("LayerNorm(normalized_shape=7)", (3,), ["layer 0 LayerNorm", "normalized_shape=7"]),
        ("Dropout2d", (3, 4), ["layer 0 Dropout2d"]),
        (42, None, ["spec must be text or a list"]),
        ("", None, ["spec is empty"]),
        ("Conv2d(3, 3)", None, ["input_shape", "(1, 28, 28)"]),
    ],
)
def test_errors_name_the_layer_the_values_and_the_fix(spec, input_shape, needles):
    message = _error(spec, input_shape)
    for needle in needles:
        assert needle in message, message


def test_bad_input_shape_is_an_argument_error():
    with pytest.raises(ArgumentError, match="input_shape"):
        build_network("ReLU", (0, 3))
    with pytest.raises(ArgumentError, match="seed"):
        build_network("2-3", seed=-1)


# ------------------------------------------------------------------ table and building


def test_layer_table_of_the_seed_001_cnn():
    spec = (
        "Conv2d(10, 5) -> MaxPool2d(2) -> ReLU -> Conv2d(20, 5) -> Dropout2d -> MaxPool2d(2)"
        " -> ReLU -> Flatten -> Linear(50) -> ReLU -> Dropout -> Linear(10) -> LogSoftmax"
    )
    rows = layer_table(spec, (1, 28, 28))
    assert [r["output_shape"] for r in rows] == [
        (10, 24, 24),
        (10, 12, 12),
        (10, 12, 12),
        (20, 8, 8),
        (20, 8, 8),
        (20, 4, 4),
        (20, 4, 4),
        (320,),
        (50,),
        (50,),
        (50,),
        (10,),
        (10,),
    ]
    assert [r["params"] for r in rows if r["params"]] == [260, 5020, 16050, 510]
    assert rows[0] == {
        "index": 0,
        "layer": "Conv2d(out_channels=10, kernel_size=5)",
        "type": "Conv2d",
        "input_shape": (1, 28, 28),
        "output_shape": (10, 24, 24),
        "params": 260,
    }


def test_every_layer_type_is_buildable():
    shapes = {"Linear": (4,), "BatchNorm1d": (4,), "AdaptiveAvgPool1d": (2, 6)}
    for kind in layer_types():
        spec = parse_spec(
            {
                "Linear": "Linear(3)",
                "Conv2d": "Conv2d(2, 3)",
                "MaxPool2d": "MaxPool2d(2)",
                "AvgPool2d": "AvgPool2d(2)",
                "AdaptiveAvgPool1d": "AdaptiveAvgPool1d(3)",
                "AdaptiveAvgPool2d": "AdaptiveAvgPool2d(2)",
            }.get(kind, kind)
        )
        net = build_network(spec, shapes.get(kind, (2, 6, 6)))
        assert type(net[0]).__name__ == kind


def test_seed_makes_weights_reproducible_without_touching_the_global_rng():
    state = torch.get_rng_state()
    a = build_network("2-8-4 relu", seed=3)
    b = build_network("2-8-4 relu", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    c = build_network("2-8-4 relu", seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    assert isinstance(a, Network) and a.spec == parse_spec("2-8-4 relu")
    bn = build_network("Conv2d(2, 3) -> BatchNorm2d -> Flatten -> LayerNorm", (1, 5, 5), seed=0)
    assert torch.equal(bn[1].running_var, torch.ones(2))
    assert torch.equal(bn[3].weight, torch.ones(18))


def test_every_declared_layer_kind_has_a_shape_rule_and_builds():
    # the declarations and the shape rules are two tables: a type added to one only fails here
    assert set(_INFER) == set(_KINDS) == set(layer_types())
    for name in layer_types():
        assert issubclass(getattr(nn, name), nn.Module), name

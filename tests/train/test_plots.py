"""The pictures: a PNG encoder checked by an independent reader, and grids that match the model."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.plots import (
    boundary_png,
    curve_png,
    decision_grid,
    digit_grid_png,
    digit_predictions,
    fitted_curve,
    picture_for,
    predict,
    prediction_pairs,
    scatter_png,
)
from gradviz.train.raster import encode_png
from gradviz.train.training import train
from gradviz.zoo.presets import get_preset

# ------------------------------------------------------------ an independent PNG reader


def read_png(data: bytes) -> np.ndarray:
    """Parse PNG chunks by hand, check every CRC, inflate IDAT and undo the scanline filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body), f"CRC of {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0)
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    stride = w * channels
    assert len(raw) == h * (stride + 1)
    out = np.zeros((h, stride), np.int64)
    for r in range(h):
        ftype, line = (
            raw[r * (stride + 1)],
            np.frombuffer(raw, np.uint8, stride, r * (stride + 1) + 1),
        )
        prev = out[r - 1] if r else np.zeros(stride, np.int64)
        cur = line.astype(np.int64)
        if ftype == 0:
            out[r] = cur
        elif ftype == 2:
            out[r] = (cur + prev) % 256
        else:  # Sub/Average/Paeth would need a left neighbour loop; the encoder uses 0
            raise AssertionError(f"filter {ftype}")
    img = out.astype(np.uint8).reshape(h, w, channels)
    return img[:, :, 0] if channels == 1 else img


@settings(max_examples=40)
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
            lambda hw: st.sampled_from([hw, (*hw, 3), (*hw, 4)])
        ),
    )
)
def test_png_round_trips_through_an_independent_reader(image):
    png = encode_png(image)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(read_png(png), image)


def test_png_rejects_what_it_cannot_encode():
    with pytest.raises(ArgumentError, match="uint8"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ArgumentError, match="RGB"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ArgumentError, match="pixels a side"):
        encode_png(np.zeros((0, 4), np.uint8))


# ----------------------------------------------------------------------- the pictures


def _mlp(n_in: int, n_out: int, hidden: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # torch's own init, without touching the global RNG
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


@settings(max_examples=25)
@given(
    resolution=st.integers(2, 40),
    n_points=st.integers(1, 30),
    n_classes=st.integers(1, 6),
    hidden=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
def test_decision_grid_classes_are_the_models_argmax(resolution, n_points, n_classes, hidden, seed):
    model = _mlp(2, n_classes, hidden, seed)
    X = torch.randn(n_points, 2, generator=torch.Generator().manual_seed(seed)) * 3
    xx, yy, classes = decision_grid(model, None, X, resolution)
    assert xx.shape == yy.shape == classes.shape == (resolution, resolution)
    points = torch.tensor(np.stack([xx.ravel(), yy.ravel()], axis=1), dtype=torch.float32)
    with torch.no_grad():
        out = model(points)
    expected = out.argmax(1) if n_classes > 1 else (out[:, 0] > 0.5).long()
    np.testing.assert_array_equal(classes, expected.numpy().reshape(resolution, resolution))
    # the grid covers every point
    assert xx.min() <= X[:, 0].min() and xx.max() >= X[:, 0].max()
    assert yy.min() <= X[:, 1].min() and yy.max() >= X[:, 1].max()
    png = boundary_png(xx, yy, classes, X, torch.zeros(n_points, dtype=torch.long), size=96)
    assert read_png(png).shape == (96, 96, 3)


def test_decision_grid_on_a_trained_quadrant_net_and_state_is_restored():
    preset = get_preset("quadrant-sgd")
    model = preset.build(0)
    model.train()
    data = preset.data(0)
    xx, yy, classes = decision_grid(model, preset, data.X, 30)
    pts = torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        assert (classes.ravel() == model(pts).argmax(1).numpy()).all()
    assert model.training  # the training flag comes back
    assert all(p.grad is None for p in model.parameters())


def test_prediction_leaves_dynamic_nets_random_state_alone():
    preset = get_preset("dynamic-net")
    model = preset.build(0)
    before = model.rng.getstate()
    predict(model, preset.data(0).X[:4], preset)
    assert model.rng.getstate() == before


def test_fitted_curve_and_scatter():
    model = _mlp(1, 1, 5, 0)
    X = torch.linspace(-1, 1, 17).unsqueeze(1)
    xs, ys = fitted_curve(model, None, X, 50)
    with torch.no_grad():
        np.testing.assert_allclose(
            ys, model(torch.tensor(xs, dtype=torch.float32).unsqueeze(1))[:, 0], rtol=1e-6
        )
    assert xs[0] < -1 < 1 < xs[-1]
    assert read_png(curve_png(xs, ys, X, X.square(), width=200, height=120)).shape == (120, 200, 3)
    t, p = prediction_pairs(model, None, X, X.square())
    assert t.shape == p.shape == (17,)
    assert read_png(scatter_png(t, p, size=100)).shape == (100, 100, 3)


def test_digit_grid_marks_right_and_wrong():
    preset = get_preset("keras-dense-512")
    data = preset.data(0)
    model = preset.build(0)
    imgs, pred, true = digit_predictions(model, preset, data.X, data.labels, 10)
    assert imgs.shape == (10, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    np.testing.assert_array_equal(true, data.labels[:10].numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(pred, model(data.X[:10]).argmax(1).numpy())
    img = read_png(digit_grid_png(imgs, pred, true, columns=5))
    assert img.shape[1] > img.shape[0]  # 2 rows of 5


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("quadrant-sgd", "boundary"),
        ("regression-1-10-1", "curve"),
        ("mnist-cnn", "digits"),
        ("scratch-784-250-10", "digits"),
        ("two-layer-numpy", "scatter"),
        ("single-neuron", "scatter"),
    ],
)
def test_picture_for_each_kind_of_preset(name, kind):
    result = train(name, steps=2)
    picture = picture_for(result.model, result.preset, result.data)
    assert picture is not None and picture.kind == kind and picture.caption
    assert read_png(picture.png).ndim == 3


def test_bad_arguments_say_what_to_give():
    model = _mlp(2, 3, 4, 0)
    with pytest.raises(ArgumentError, match="resolution"):
        decision_grid(model, None, torch.zeros(3, 2), 1)
    with pytest.raises(ArgumentError, match=r"\(N, 2\)"):
        decision_grid(model, None, torch.zeros(3, 5), 10)
    with pytest.raises(ArgumentError, match="finite"):
        decision_grid(model, None, torch.tensor([[0.0, float("nan")]]), 10)

"""Offline data follows the tutorials' recipes; the MNIST readers reject bad files clearly."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
import torch

from gradviz.errors import ArgumentError, DataError, GradvizError
from gradviz.train.data import (
    MNIST_MEAN,
    MNIST_STD,
    TrainData,
    as_train_data,
    digits_for,
    quadrants,
    random_regression,
    regression_points,
    shipped_digits,
)
from gradviz.train.mnist import load_mnist_csv, load_mnist_idx, read_idx

# -------------------------------------------------------------------- generated sets


def _tutorial_quadrants() -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 002's own cell, run on the global RNG (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        N, var = 200, 0.5
        torch.manual_seed(0)
        x1 = torch.randn(N, 1) * var + 1
        y1 = torch.randn(N, 1) * var + 1
        l1 = torch.randn(N, 1) * 0 + 0
        x3 = torch.randn(N, 1) * var - 1
        y3 = torch.randn(N, 1) * var + 1
        l3 = torch.randn(N, 1) * 0 + 1
        x4 = torch.randn(N, 1) * var - 1
        y4 = torch.randn(N, 1) * var - 1
        l4 = torch.randn(N, 1) * 0 + 2
        x2 = torch.randn(N, 1) * var + 1
        y2 = torch.randn(N, 1) * var - 1
        l2 = torch.randn(N, 1) * 0 + 3
        X1 = torch.cat((x1, x2, x3, x4), dim=0)
        X2 = torch.cat((y1, y2, y3, y4), dim=0)
        X = torch.cat((X1, X2), dim=1)
        y = torch.cat((l1, l2, l3, l4), dim=0)
        idx = torch.randperm(X.shape[0])
        return X[idx, :], y[idx, :].flatten()


def test_quadrants_are_the_tutorials_points():
    d = quadrants(0)
    X, y = _tutorial_quadrants()
    assert torch.equal(d.X, X)
    assert torch.equal(d.labels, y.long())
    assert d.task == "classification" and d.num_classes == 4
    assert torch.equal(d.y, torch.eye(4)[d.labels])
    assert torch.bincount(d.labels).tolist() == [200] * 4
    centres = {0: (1, 1), 1: (-1, 1), 2: (-1, -1), 3: (1, -1)}
    for k, c in centres.items():
        mean = d.X[d.labels == k].mean(0)
        assert torch.allclose(mean, torch.tensor(c, dtype=torch.float32), atol=0.1)
        assert abs(float(d.X[d.labels == k].std(0).mean()) - 0.5) < 0.05
    assert torch.equal(quadrants(0).X, d.X)
    assert not torch.equal(quadrants(1).X, d.X)


def test_regression_points_recipe():
    d = regression_points(0)
    assert d.X.shape == (200, 1) and d.task == "regression"
    assert torch.allclose(d.X[:, 0], torch.linspace(-0.5, 0.5, 200))
    noise = d.y - d.X.square()
    assert abs(float(noise.std()) - 0.02) < 0.004
    assert abs(float(noise.mean())) < 0.005


def test_random_regression_shapes_and_determinism():
    d = random_regression(0)
    assert d.X.shape == (64, 1000) and d.y.shape == (64, 10)
    assert d.task == "random-regression"
    assert torch.equal(random_regression(0).X, d.X)
    with pytest.raises(ArgumentError, match="seed"):
        random_regression(-1)


# ------------------------------------------------------------------------ shipped digits


def test_shipped_digits_layouts():
    cnn = shipped_digits("cnn")
    assert cnn.X.shape == (1500, 1, 28, 28) and cnn.X_test.shape == (297, 1, 28, 28)
    assert cnn.labels.dtype == torch.int64 and set(cnn.labels.tolist()) == set(range(10))
    raw = cnn.X * MNIST_STD + MNIST_MEAN
    assert float(raw.min()) > -1e-5 and float(raw.max()) < 1 + 1e-5
    # MNIST keeps a 4-pixel empty frame around each 20×20 digit; so do the digits
    assert torch.allclose(raw[:, :, :4, :], torch.zeros(1), atol=1e-6)
    assert float(raw.amax(dim=(1, 2, 3)).min()) > 0.5  # every image has ink
    scratch = shipped_digits("scratch")
    assert scratch.X.shape == (1500, 784) and scratch.X.dtype == torch.float64
    assert float(scratch.X.min()) >= 0.01 - 1e-12 and float(scratch.X.max()) <= 1.0 + 1e-12
    assert set(scratch.y.unique().tolist()) == {0.01, 0.99}
    assert torch.equal(scratch.y.argmax(1), scratch.labels)
    keras = shipped_digits("keras")
    assert keras.X.shape == (1500, 784) and float(keras.X.max()) <= 1.0
    assert torch.equal(keras.y, torch.eye(10)[keras.labels])
    assert torch.allclose(keras.X.double(), (scratch.X - 0.01) / 0.99, atol=1e-6)
    with pytest.raises(ArgumentError, match="layout"):
        shipped_digits("cnn3d")


def test_digits_for_checks_its_arrays():
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9])
    d = digits_for("scratch", images, labels)
    assert torch.allclose(d.X[0], torch.tensor(images[0].reshape(-1) / 255.0 * 0.99 + 0.01))
    assert digits_for("cnn", images.reshape(5, 784), labels).X.shape == (5, 1, 28, 28)
    with pytest.raises(DataError, match="28×28"):
        digits_for("cnn", np.zeros((5, 8, 8)), labels)
    with pytest.raises(DataError, match="outside 0–9"):
        digits_for("cnn", images, np.array([0, 1, 2, 3, 10]))
    with pytest.raises(DataError, match="one label per image"):
        digits_for("cnn", images, labels[:3])
    with pytest.raises(DataError, match="0–255"):
        digits_for("cnn", images.astype(float), labels)
    with pytest.raises(ArgumentError, match="test_labels"):
        digits_for("cnn", images, labels, test_images=images)


# --------------------------------------------------------------------------- IDX files


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([5, 0, 4, 1, 9, 2])


def test_idx_from_path_bytes_gzip_and_file_objects(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    (tmp_path / "img.idx").write_bytes(_idx(images))
    (tmp_path / "lab.idx.gz").write_bytes(gzip.compress(_idx(labels)))
    img, lab = load_mnist_idx(tmp_path / "img.idx", str(tmp_path / "lab.idx.gz"))
    assert np.array_equal(img, images) and np.array_equal(lab, labels)
    img2, lab2 = load_mnist_idx(_idx(images), io.BytesIO(gzip.compress(_idx(labels))))
    assert np.array_equal(img2, images) and np.array_equal(lab2, labels)
    assert read_idx(_idx(labels)).dtype == np.uint8


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda b: b"\x08\x03" + b[2:], ["wrong magic", "0x0803"]),
        (lambda b: b[:2] + b"\x0d" + b[3:], ["0x0d", "float32", "0x08"]),
        (lambda b: b[:-10], ["truncated", "6×28×28", "4,694"]),
        (lambda b: b[:9], ["truncated header"]),
        (lambda b: b + b"\x00\x00", ["2 bytes more"]),
        (lambda b: b"", ["too short"]),
        (lambda b: gzip.compress(b)[:-12], ["gzip", "damaged"]),
        (lambda b: b[:3] + b"\x09" + b[4:], ["9 dimensions"]),
    ],
)
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, mnist_arrays, mutate, needles):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mutate(_idx(mnist_arrays[0])))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_idx_pairs_are_checked(mnist_arrays):
    images, labels = mnist_arrays
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        load_mnist_idx(_idx(images), _idx(labels[:5]), names=("img", "lab"))
    with pytest.raises(DataError, match="swap"):
        load_mnist_idx(_idx(labels), _idx(images), names=("img", "lab"))
    with pytest.raises(DataError, match="lab: label 12 at index 1"):
        load_mnist_idx(_idx(images), _idx(np.array([0, 12, 1, 1, 1, 1])), names=("img", "lab"))
    with pytest.raises(DataError, match="no such file"):
        read_idx("/nonexistent/train-images.idx")
    with pytest.raises(ArgumentError, match="source"):
        read_idx(12345)


# --------------------------------------------------------------------------- CSV files


def _csv(images: np.ndarray, labels: np.ndarray, header: bool = False) -> str:
    rows = ["label," + ",".join(f"pixel{i}" for i in range(784))] if header else []
    rows += [
        f"{lab}," + ",".join(map(str, img.reshape(-1)))
        for img, lab in zip(images, labels, strict=True)
    ]
    return "\n".join(rows) + "\n"


def test_csv_reads_paths_bytes_and_headers(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    path = tmp_path / "mnist_train.csv"
    path.write_text(_csv(images, labels))
    img, lab = load_mnist_csv(path)
    assert np.array_equal(img, images) and np.array_equal(lab, labels)
    img2, lab2 = load_mnist_csv(_csv(images, labels, header=True).encode())
    assert np.array_equal(img2, images) and np.array_equal(lab2, labels)


def _replace_row(text: str, row: int, new: str) -> str:
    lines = text.splitlines()
    lines[row - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (
            lambda t, r: _replace_row(t, 3, r[2].rsplit(",", 1)[0]),
            ["row 3", "784 columns", "no label"],
        ),
        (lambda t, r: _replace_row(t, 2, r[1] + ",7"), ["row 2", "786 columns"]),
        (
            lambda t, r: _replace_row(t, 4, r[3].replace(",", ",x", 1)),
            ["row 4", "column 2", "'x", "not a number"],
        ),
        (lambda t, r: _replace_row(t, 5, "12" + r[4][1:]), ["row 5", "label 12", "outside 0–9"]),
        (
            lambda t, r: _replace_row(t, 6, r[5].rsplit(",", 1)[0] + ",300"),
            ["row 6", "column 785", "pixel 300"],
        ),
        (lambda t, r: _replace_row(t, 1, "a,b,c"), ["row 1", "3 columns"]),
        (lambda t, r: "", ["no data rows"]),
        (
            lambda t, r: _replace_row(
                t, 2, r[1].split(",", 1)[0] + ",inf," + r[1].split(",", 2)[2]
            ),
            ["row 2", "inf or nan"],
        ),
    ],
)
def test_bad_csv_rows_are_named(mnist_arrays, edit, needles):
    images, labels = mnist_arrays
    text = _csv(images, labels)
    bad = edit(text, text.splitlines())
    with pytest.raises(DataError) as info:
        load_mnist_csv(bad.encode(), name="upload.csv")
    message = str(info.value)
    assert message.startswith("upload.csv: ")
    for needle in needles:
        assert needle in message, message


def test_csv_that_is_not_text():
    with pytest.raises(DataError, match="not a text file"):
        load_mnist_csv(b"\xff\xfe\x00\x81binary", name="x.csv")


def test_user_mnist_trains_a_digit_preset(mnist_arrays):
    from gradviz.train.training import train
    from gradviz.zoo.presets import get_preset

    images, labels = mnist_arrays
    preset = get_preset("mnist-cnn")
    data = preset.prepare(*load_mnist_idx(_idx(images), _idx(labels)), images[:2], labels[:2])
    result = train(preset, data=data, steps=2, batch_size=3)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    assert "test_accuracy" in result.metrics
    with pytest.raises(ArgumentError, match="digit images"):
        get_preset("quadrant-sgd").prepare(images, labels)


# --------------------------------------------------------------------- user-given data


def test_as_train_data_accepts_tuples_and_infers_the_task():
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    d = as_train_data((X, np.arange(10) % 3))
    assert d.task == "classification" and d.num_classes == 3
    r = as_train_data((torch.tensor(X), torch.zeros(10, 1)))
    assert r.task == "regression" and r.labels is None
    t = as_train_data((X, np.arange(10) % 2, X[:4], np.arange(4) % 2))
    assert t.has_test and t.X_test.shape == (4, 3)
    assert isinstance(d.subset(4), TrainData) and d.subset(4).n == 4
    for bad in [X, (X,), (X, np.arange(9)), (X, "y"), (X, np.zeros(10), X[:, :2], np.zeros(2))]:
        with pytest.raises(GradvizError):
            as_train_data(bad)

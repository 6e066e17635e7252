"""Offline data for the presets: generated sets, shipped digits, user-given tensors.

Readers for downloaded MNIST files are in `gradviz.train.mnist`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from gradviz.errors import ArgumentError, DataError

__all__ = [
    "TrainData",
    "as_train_data",
    "quadrants",
    "regression_points",
    "random_regression",
    "neuron_data",
    "shipped_digits",
    "digits_for",
    "DIGIT_LAYOUTS",
    "MNIST_MEAN",
    "MNIST_STD",
]

# Seed 001 normalises with MNIST's own statistics; the presets keep them for every digit set.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

TASKS = ("classification", "regression", "random-regression")


# a tensor stays a tensor and a missing split stays None through `TrainData.to`
_MaybeTensor = TypeVar("_MaybeTensor", torch.Tensor, torch.Tensor | None)


@dataclass(frozen=True, eq=False)
class TrainData:
    """A training set (and optional test set) in the form a preset's loss takes.

    ``y`` is what the loss compares with (one-hot rows, class indices or real values);
    ``labels`` are class indices for accuracy (``None`` for regression).
    """

    name: str
    task: str
    X: torch.Tensor
    y: torch.Tensor
    labels: torch.Tensor | None = None
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    num_classes: int | None = None
    description: str = ""

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def has_test(self) -> bool:
        return self.X_test is not None

    def subset(self, n: int, n_test: int | None = None) -> TrainData:
        """The first ``n`` training (and ``n_test`` test) samples: quick runs and tests."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ArgumentError("n", n, "use a whole number ≥ 1 of samples to keep")
        n_test = n if n_test is None else n_test

        def cut(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
            return None if t is None else t[:k]

        return replace(
            self,
            X=self.X[:n],
            y=self.y[:n],
            labels=cut(self.labels, n),
            X_test=cut(self.X_test, n_test),
            y_test=cut(self.y_test, n_test),
            labels_test=cut(self.labels_test, n_test),
        )

    def to(self, dtype: torch.dtype) -> TrainData:
        """The same data with floating inputs/targets cast to ``dtype`` (labels stay ints)."""

        def cast(t: _MaybeTensor) -> _MaybeTensor:
            return t.to(dtype) if t is not None and t.is_floating_point() else t

        return replace(
            self, X=cast(self.X), y=cast(self.y), X_test=cast(self.X_test), y_test=cast(self.y_test)
        )


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ArgumentError("seed", seed, "use a whole number ≥ 0")
    # A private generator: sessions of one Streamlit server never share random state.
    return torch.Generator().manual_seed(seed)


def _one_hot(labels: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return F.one_hot(labels.long(), k).to(dtype)


def quadrants(seed: int = 0, n_per_class: int = 200, std: float = 0.5) -> TrainData:
    """Seed 002's four Gaussian clusters, drawn in the tutorial's order.

    With seed 0 these are the tutorial's points: it seeds 0 and draws x1, y1, l1, x3, y3,
    l3, x4, y4, l4, x2, y2, l2 (the class columns are drawn too, times 0), stacks the
    clusters as (1,1)→0, (1,−1)→3, (−1,1)→1, (−1,−1)→2, then shuffles with randperm.
    """
    g = _generator(seed)
    n = n_per_class

    def draw(centre: float) -> torch.Tensor:
        return torch.randn(n, 1, generator=g) * std + centre

    def label(value: float) -> torch.Tensor:
        return torch.randn(n, 1, generator=g) * 0 + value

    x1, y1, l1 = draw(1), draw(1), label(0)
    x3, y3, l3 = draw(-1), draw(1), label(1)
    x4, y4, l4 = draw(-1), draw(-1), label(2)
    x2, y2, l2 = draw(1), draw(-1), label(3)
    X = torch.cat((torch.cat((x1, x2, x3, x4)), torch.cat((y1, y2, y3, y4))), dim=1)
    y = torch.cat((l1, l2, l3, l4))
    idx = torch.randperm(X.shape[0], generator=g)
    X = X[idx, :]
    labels = y[idx, :].flatten().long()
    return TrainData(
        name="quadrants",
        task="classification",
        X=X,
        y=_one_hot(labels, 4),
        labels=labels,
        num_classes=4,
        description=f"4 Gaussian clusters × {n} points, std {std}, one-hot targets (seed 002)",
    )


def regression_points(seed: int = 0, n: int = 200, noise: float = 0.02) -> TrainData:
    """Seed 004's regression set: x evenly spaced over [−0.5, 0.5], y = x² + N(0, noise)."""
    g = _generator(seed)
    x = torch.linspace(-0.5, 0.5, n).unsqueeze(1)
    y = x.square() + torch.randn(x.shape, generator=g) * noise
    return TrainData(
        name="parabola",
        task="regression",
        X=x,
        y=y,
        description=f"{n} points y = x² + N(0, {noise}) on [−0.5, 0.5] (seed 004)",
    )


def random_regression(
    seed: int = 0,
    n: int = 64,
    d_in: int = 1000,
    d_out: int = 10,
    dtype: torch.dtype = torch.float32,
) -> TrainData:
    """Seed 003's random inputs and outputs, x and y ~ N(0, 1): a net learns to fit noise."""
    g = _generator(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    y = torch.randn(n, d_out, generator=g, dtype=dtype)
    return TrainData(
        name="random",
        task="random-regression",
        X=x,
        y=y,
        description=f"x ~ N(0,1) {n}×{d_in}, y ~ N(0,1) {n}×{d_out} (seed 003)",
    )


def neuron_data(seed: int = 0, n: int = 64, n_in: int = 2, n_out: int = 1) -> TrainData:
    """Targets a sigmoid unit can reach: y = σ(x·w + b) for hidden w, b (seed 000 has no data)."""
    g = _generator(seed)
    x = torch.randn(n, n_in, generator=g)
    w = torch.randn(n_in, n_out, generator=g)
    b = torch.randn(1, n_out, generator=g)
    return TrainData(
        name="neuron",
        task="regression",
        X=x,
        y=torch.sigmoid(x @ w + b),
        description=f"x ~ N(0,1) {n}×{n_in}, y = σ(x·w + b) for a hidden w, b",
    )


# ------------------------------------------------------------------------------ digits

DIGIT_LAYOUTS = {
    "cnn": "(N, 1, 28, 28), (x − 0.1307)/0.3081, class indices (seed 001)",
    "scratch": "(N, 784) float64, x·0.99 + 0.01, targets 0.01 with 0.99 at the label (seed 004)",
    "keras": "(N, 784), x in [0, 1], one-hot targets (seed 004, Keras)",
}


@functools.lru_cache(maxsize=1)
def _shipped_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 real 8×8 digits laid out like MNIST: 20×20 in a 28×28 frame."""
    from sklearn.datasets import load_digits  # ships with the wheel: no download

    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float64).unsqueeze(1) / 16.0
    # MNIST centres each digit's 20×20 box in a 28×28 image; do the same so the seed-001
    # network sees digits of the size and place it was built for.
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    big = F.pad(big, (4, 4, 4, 4)).clamp(0.0, 1.0).squeeze(1)
    images = big.numpy().copy()
    labels = np.asarray(digits.target, dtype=np.int64).copy()
    images.setflags(write=False)  # cached and shared: nobody may change it in place
    labels.setflags(write=False)
    return images, labels


def _images01(images: Any, what: str) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 2 and arr.shape[1] == 784:
        arr = arr.reshape(-1, 28, 28)
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise DataError(
            f"{what}: shape {tuple(arr.shape)} is not N×28×28 (or N×784); the digit presets "
            "take 28×28 images like MNIST's"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what}: dtype {arr.dtype} is not numeric; pass pixel values")
    arr = arr.astype(np.float64)
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
        raise DataError(
            f"{what}: values run from {arr.min()} to {arr.max()}; pass uint8 pixels (0–255) "
            "or floats scaled to [0, 1]"
        )
    return arr


def _labels(labels: Any, n: int, what: str) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what}: {arr.shape} labels for {n} images; give one label per image")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what}: labels have dtype {arr.dtype}; give whole numbers 0–9")
    bad = np.flatnonzero((arr < 0) | (arr > 9))
    if bad.size:
        raise DataError(f"{what}: label {arr[bad[0]]} at index {bad[0]} is outside 0–9")
    return arr.astype(np.int64)


def _layout(images01: np.ndarray, labels: np.ndarray, layout: str) -> tuple[torch.Tensor, ...]:
    lab = torch.tensor(labels, dtype=torch.int64)
    if layout == "cnn":
        x = (torch.tensor(images01, dtype=torch.float32).unsqueeze(1) - MNIST_MEAN) / MNIST_STD
        return x, lab, lab
    flat = torch.tensor(images01.reshape(len(images01), 784), dtype=torch.float64)
    if layout == "scratch":
        # inputs = pixel/255·0.99 + 0.01 and targets 0.01/0.99, exactly as seed 004's loop
        targets = torch.full((len(labels), 10), 0.01, dtype=torch.float64)
        targets[torch.arange(len(labels)), lab] = 0.99
        return flat * 0.99 + 0.01, targets, lab
    return flat.float(), _one_hot(lab, 10), lab


def digits_for(
    layout: str,
    images: Any,
    labels: Any,
    test_images: Any = None,
    test_labels: Any = None,
    *,
    name: str = "digits",
) -> TrainData:
    """Lay out digit images (uint8 0–255 or floats in [0, 1]) as a digit preset takes them.

    ``layout`` is one of `DIGIT_LAYOUTS`: "cnn" (mnist-cnn), "scratch"
    (scratch-784-250-10), "keras" (keras-dense-512).
    """
    if layout not in DIGIT_LAYOUTS:
        raise ArgumentError("layout", layout, f"use one of {', '.join(DIGIT_LAYOUTS)}")
    img = _images01(images, "images")
    lab = _labels(labels, len(img), "labels")
    X, y, labs = _layout(img, lab, layout)
    fields: dict[str, Any] = {}
    if test_images is not None or test_labels is not None:
        if test_images is None or test_labels is None:
            raise ArgumentError(
                "test_images", test_images, "give test_images and test_labels together, or neither"
            )
        timg = _images01(test_images, "test_images")
        tlab = _labels(test_labels, len(timg), "test_labels")
        X_test, y_test, labs_test = _layout(timg, tlab, layout)
        fields = {"X_test": X_test, "y_test": y_test, "labels_test": labs_test}
    return TrainData(
        name=name,
        task="classification",
        X=X,
        y=y,
        labels=labs,
        num_classes=10,
        description=DIGIT_LAYOUTS[layout],
        **fields,
    )


def shipped_digits(layout: str = "cnn", test_size: int = 297) -> TrainData:
    """scikit-learn's real digits (1797, 8×8) as 28×28 MNIST look-alikes, no download.

    The last ``test_size`` images are the test split (the same for every seed: the run's
    seed only shuffles the batches).
    """
    images, labels = _shipped_digit_images()
    if (
        not isinstance(test_size, int)
        or isinstance(test_size, bool)
        or not 0 <= test_size < len(images)
    ):
        raise ArgumentError(
            "test_size", test_size, f"use a whole number from 0 to {len(images) - 1}"
        )
    cut = len(images) - test_size
    test = (images[cut:], labels[cut:]) if test_size else (None, None)
    data = digits_for(layout, images[:cut], labels[:cut], *test, name="shipped digits")
    return replace(
        data, description=f"scikit-learn digits upsampled to 28×28; {DIGIT_LAYOUTS[layout]}"
    )


# ------------------------------------------------------------------- user-given data


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DataError(f"{what}: dtype {value.dtype} is not numeric")
        return torch.tensor(value)  # a copy: the caller's array stays theirs
    raise DataError(f"{what}: {type(value).__name__} is not a tensor or NumPy array")


def as_train_data(data: Any, task: str | None = None) -> TrainData:
    """Accept a `TrainData`, ``(X, y)`` or ``(X, y, X_test, y_test)`` of tensors/arrays.

    Integer ``y`` means class indices (classification), anything else regression.
    """
    if isinstance(data, TrainData):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise ArgumentError(
            "data",
            data,
            "give a TrainData, (X, y) or (X, y, X_test, y_test) with tensors "
            "or NumPy arrays of equal length",
        )
    parts = [_tensor(v, f"data[{i}]") for i, v in enumerate(data)]
    X, y = parts[0], parts[1]
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise DataError(
            f"data: X has shape {tuple(X.shape)} and y {tuple(y.shape)}; give one "
            "target per input row (same first dimension, at least one row)"
        )
    X_test = y_test = None
    if len(parts) == 4:
        X_test, y_test = parts[2], parts[3]
        if (
            X_test.ndim == 0
            or y_test.ndim == 0
            or X_test.shape[0] != y_test.shape[0]
            or (X_test.shape[1:] != X.shape[1:])
        ):
            raise DataError(
                f"data: test X {tuple(X_test.shape)} / y {tuple(y_test.shape)} do "
                f"not match the training X {tuple(X.shape)}; same sample shape, one "
                "target per row"
            )
    if task is None:
        task = "classification" if not y.is_floating_point() and y.ndim == 1 else "regression"
    if task not in TASKS:
        raise ArgumentError("task", task, f"use one of {', '.join(TASKS)}")
    if X.is_floating_point() is False:
        X = X.float()
        X_test = None if X_test is None else X_test.float()
    labels = labels_test = None
    num_classes = None
    if task == "classification":
        if y.is_floating_point() and y.ndim == 2:
            labels = y.argmax(1)
            labels_test = None if y_test is None else y_test.argmax(1)
            num_classes = y.shape[1]
        elif not y.is_floating_point() and y.ndim == 1:
            if (y < 0).any():
                raise DataError("data: class labels must be ≥ 0")
            labels = y = y.long()
            labels_test = y_test = None if y_test is None else y_test.long()
            num_classes = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
        else:
            raise DataError(
                f"data: classification needs integer labels (N,) or one-hot rows "
                f"(N, classes), got y of shape {tuple(y.shape)} and {y.dtype}"
            )
    return TrainData(
        name="user data",
        task=task,
        X=X,
        y=y,
        labels=labels,
        X_test=X_test,
        y_test=y_test,
        labels_test=labels_test,
        num_classes=num_classes,
    )

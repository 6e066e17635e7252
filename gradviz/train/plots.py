"""Pictures of a network and its data, as plain arrays and as PNG bytes drawn with NumPy.

Two layers, as in tracing and drawing: functions that compute what a picture shows
(`decision_grid`, `fitted_curve`, `prediction_pairs`, `digit_predictions`) and functions
that draw those arrays into an RGB image and encode it (`boundary_png`, `curve_png`,
`scatter_png`, `digit_grid_png`) with the NumPy primitives of `gradviz.train.raster`.
Every prediction runs under ``torch.no_grad()`` in eval mode, and the model's training
flag and any extra state its forward changes (DynamicNet's random depth) are restored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.boundary import BOUNDARY_GRID, boundary_spec
from gradviz.train.raster import (
    _AXIS,
    _BAD,
    _GOOD,
    _INK,
    _WHITE,
    PALETTE,
    _box,
    _canvas,
    _class_colors,
    _polyline,
    _stamp,
    _text,
    _text_width,
    encode_png,
)

__all__ = [
    "Picture",
    "predict",
    "predicted_classes",
    "decision_grid",
    "fitted_curve",
    "prediction_pairs",
    "digit_predictions",
    "boundary_png",
    "curve_png",
    "scatter_png",
    "digit_grid_png",
    "picture_for",
]

# tab10: the class colours readers know from matplotlib
_CHUNK = 8192  # rows per forward when predicting, so a big grid keeps memory flat


# ------------------------------------------------------------------------ predicting


def _as_tensor(X: Any, what: str = "X") -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.detach()
    arr = np.asarray(X)
    if not np.issubdtype(arr.dtype, np.number):
        raise ArgumentError(what, f"dtype {arr.dtype}", "give numbers (a tensor or an array)")
    return torch.as_tensor(arr)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode without a trace: the training flag and forward-changed extra state come back."""
    was_training = model.training
    # a module whose forward draws from its own RNG (DynamicNet) keeps it in extra state
    kept = [
        (m, m.get_extra_state())
        for m in model.modules()
        if type(m).get_extra_state is not nn.Module.get_extra_state
    ]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, state in kept:
            m.set_extra_state(state)
        model.train(was_training)


def predict(model: nn.Module, X: Any, preset: Any = None) -> np.ndarray:
    """The model's outputs for inputs ``X`` as a float64 array (no grad, eval mode).

    With a preset its own ``forward`` runs (it casts ``X`` to the network's dtype);
    without, ``X`` is cast to the dtype of the model's first parameter.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", model, "give the nn.Module to draw")
    x = _as_tensor(X)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ArgumentError("X", f"shape {tuple(x.shape)}", "give at least one input row")
    p = next(iter(model.parameters()), None)
    if p is not None and x.dtype != p.dtype:
        x = x.to(p.dtype)
    outs = []
    with _evaluating(model):
        for start in range(0, x.shape[0], _CHUNK):
            xb = x[start : start + _CHUNK]
            out = preset.forward(model, xb) if preset is not None else model(xb)
            outs.append(out.detach().to(torch.float64).reshape(len(xb), -1))
    return torch.cat(outs).numpy()


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class per row: argmax over several outputs; one output is read as P(class 1)."""
    return outputs.argmax(axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0.5).astype(int)


def _check_resolution(resolution: Any, name: str = "resolution") -> int:
    ok = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool)
    if not ok or not 2 <= resolution <= 1000:
        raise ArgumentError(name, resolution, "use a whole number from 2 to 1000, e.g. 200")
    return int(resolution)


def _bounds(values: np.ndarray, margin: float) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ArgumentError("X", "inf or nan", "give finite inputs to draw")
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    return lo - margin * span, hi + margin * span


def _points(X: Any, features: int, what: str) -> np.ndarray:
    x = _as_tensor(X).to(torch.float64).numpy()
    if x.ndim != 2 or x.shape[1] != features or x.shape[0] == 0:
        raise ArgumentError(
            "X", f"shape {x.shape}", f"{what} needs inputs of shape (N, {features}) with N ≥ 1"
        )
    return x


def decision_grid(
    model: nn.Module, preset: Any, X: Any, resolution: int = 200, *, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class over a grid covering 2-D inputs ``X``: ``(xx, yy, classes)``.

    ``xx``/``yy`` come from ``np.meshgrid`` (shape resolution × resolution, ``yy``
    increasing with the row); ``classes[i, j]`` is the model's class at
    ``(xx[i, j], yy[i, j])``: the argmax of its outputs (one output: output > 0.5).
    """
    res = _check_resolution(resolution)
    x = _points(X, 2, "a decision boundary")
    x0, x1 = _bounds(x[:, 0], margin)
    y0, y1 = _bounds(x[:, 1], margin)
    xx, yy = np.meshgrid(np.linspace(x0, x1, res), np.linspace(y0, y1, res))
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    classes = predicted_classes(predict(model, grid, preset)).reshape(res, res)
    return xx, yy, classes


def fitted_curve(
    model: nn.Module, preset: Any, X: Any, points: int = 200, *, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The model's output (its first output) along the range of 1-D inputs ``X``."""
    n = _check_resolution(points, "points")
    x = _points(X, 1, "a fitted curve")
    lo, hi = _bounds(x[:, 0], margin)
    xs = np.linspace(lo, hi, n)
    return xs, predict(model, xs.reshape(-1, 1), preset)[:, 0]


def prediction_pairs(
    model: nn.Module, preset: Any, X: Any, y: Any, *, limit: int = 4000
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, predictions)`` flattened, at most ``limit`` pairs (a fit lies on y = x)."""
    out = predict(model, X, preset)
    target = _as_tensor(y, "y").to(torch.float64).reshape(out.shape[0], -1).numpy()
    if target.shape != out.shape:
        raise ArgumentError(
            "y", f"shape {target.shape}", f"give one target per output, shape {out.shape}"
        )
    return target.ravel()[:limit], out.ravel()[:limit]


def digit_predictions(
    model: nn.Module, preset: Any, X: Any, labels: Any, count: int = 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``count`` digits as (count, 28, 28) images in [0, 1], predicted and true labels.

    Inputs may be laid out for any digit preset ((N, 1, 28, 28) normalised, or (N, 784)
    scaled): each image is rescaled to [0, 1] for display.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ArgumentError("count", count, "use a whole number ≥ 1, e.g. 24")
    x = _as_tensor(X)[:count]
    lab = _as_tensor(labels, "labels")[:count].reshape(-1).numpy().astype(int)
    if x.ndim < 2 or math.prod(x.shape[1:]) != 784 or len(lab) != len(x):
        raise ArgumentError(
            "X", f"shape {tuple(x.shape)}", "give 28×28 digit images and one label per image"
        )
    predicted = predicted_classes(predict(model, x, preset))
    imgs = x.to(torch.float64).reshape(len(x), 28, 28).numpy()
    lo = imgs.min(axis=(1, 2), keepdims=True)
    hi = imgs.max(axis=(1, 2), keepdims=True)
    imgs = (imgs - lo) / np.where(hi > lo, hi - lo, 1.0)
    return imgs, predicted, lab


def boundary_png(
    xx: np.ndarray,
    yy: np.ndarray,
    classes: np.ndarray,
    X: Any,
    labels: Any,
    *,
    size: int = 420,
) -> bytes:
    """The decision regions of `decision_grid` tinted by class, with the labelled points on top.

    Region borders are drawn dark; each point is filled with its true class's colour, so
    a point whose colour differs from its region is one the model gets wrong.
    """
    classes = np.asarray(classes)
    if classes.ndim != 2 or np.shape(xx) != classes.shape or np.shape(yy) != classes.shape:
        raise ArgumentError(
            "classes", f"shape {classes.shape}", "pass decision_grid's (xx, yy, classes)"
        )
    x = _points(X, 2, "a decision boundary")
    lab = np.asarray(labels).reshape(-1).astype(int)
    if len(lab) != len(x):
        raise ArgumentError("labels", f"{len(lab)} labels", f"give one label per point ({len(x)})")
    img, f = _canvas(size, size, (xx.min(), xx.max(), yy.min(), yy.max()), grid=False)
    res_y, res_x = classes.shape
    # each plot pixel takes the grid cell nearest to it; row 0 of the image is the top (max y)
    gx = np.clip(
        np.round(np.arange(f.width) / max(f.width - 1, 1) * (res_x - 1)).astype(int), 0, res_x - 1
    )
    gy = np.clip(
        np.round((f.height - 1 - np.arange(f.height)) / max(f.height - 1, 1) * (res_y - 1)).astype(
            int
        ),
        0,
        res_y - 1,
    )
    region = classes[np.ix_(gy, gx)]
    tint = (0.28 * _class_colors(region) + 0.72 * 255).astype(np.uint8)
    edge = np.zeros(region.shape, bool)
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    tint[edge] = (90, 90, 90)
    img[f.top : f.top + f.height, f.left : f.left + f.width] = tint
    for v, axis in ((0.0, "x"), (0.0, "y")):
        if axis == "x" and f.x0 < v < f.x1:
            img[f.top : f.top + f.height, int(round(float(f.px(v))))] = _AXIS
        if axis == "y" and f.y0 < v < f.y1:
            img[int(round(float(f.py(v)))), f.left : f.left + f.width] = _AXIS
    px, py = f.px(x[:, 0]), f.py(x[:, 1])
    _stamp(img, px, py, 3.6, _INK)
    _stamp(img, px, py, 2.6, _class_colors(lab))
    _box(img, f)
    return encode_png(img)


def curve_png(
    xs: np.ndarray, ys: np.ndarray, X: Any, y: Any, *, width: int = 520, height: int = 360
) -> bytes:
    """The data points (grey) with the fitted curve of `fitted_curve` (blue) over them."""
    x = _points(X, 1, "a fitted curve")[:, 0]
    t = _as_tensor(y, "y").to(torch.float64).reshape(-1).numpy()[: len(x)]
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if xs.shape != ys.shape or xs.ndim != 1 or len(t) != len(x):
        raise ArgumentError(
            "ys", f"shape {ys.shape}", "pass fitted_curve's (xs, ys) and one target per point"
        )
    finite = ys[np.isfinite(ys)]
    lo, hi = _bounds(np.concatenate([t, finite]), 0.06)
    img, f = _canvas(width, height, (xs.min(), xs.max(), lo, hi), grid=True)
    _stamp(img, f.px(x), f.py(t), 2.2, (134, 142, 150))
    ok = np.isfinite(ys)
    if ok.any():
        _polyline(img, f.px(xs[ok]), f.py(ys[ok]), 2.5, PALETTE[0])
    _box(img, f)
    return encode_png(img)


def scatter_png(targets: Any, predictions: Any, *, size: int = 420) -> bytes:
    """Each prediction against its target, with the line y = x a perfect fit lies on."""
    t = np.asarray(targets, float).reshape(-1)
    p = np.asarray(predictions, float).reshape(-1)
    if t.shape != p.shape or t.size == 0:
        raise ArgumentError(
            "predictions", f"{p.size} values", f"give one prediction per target ({t.size})"
        )
    ok = np.isfinite(t) & np.isfinite(p)
    both = np.concatenate([t[ok], p[ok]]) if ok.any() else np.zeros(1)
    lo, hi = _bounds(both, 0.05)
    img, f = _canvas(size, size, (lo, hi, lo, hi), grid=True)
    _polyline(img, f.px(np.array([lo, hi])), f.py(np.array([lo, hi])), 1.5, _AXIS)
    _stamp(img, f.px(t[ok]), f.py(p[ok]), 2.0, PALETTE[0])
    _box(img, f)
    return encode_png(img)


def digit_grid_png(
    images: Any, predicted: Any, true: Any, *, columns: int = 8, scale: int = 2
) -> bytes:
    """Digits in a grid, each framed and labelled green when predicted right, red when wrong.

    A wrong prediction shows the true label in grey after it: ``3 (8)``.
    """
    imgs = np.asarray(images, float)
    pred = np.asarray(predicted).reshape(-1).astype(int)
    lab = np.asarray(true).reshape(-1).astype(int)
    if imgs.ndim != 3 or imgs.shape[0] == 0 or len(pred) != len(imgs) or len(lab) != len(imgs):
        raise ArgumentError(
            "images",
            f"shape {imgs.shape}",
            "give (N, H, W) images with one predicted and one true label each",
        )
    for name, v, top in (("columns", columns, 64), ("scale", scale, 8)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            raise ArgumentError(name, v, f"use a whole number from 1 to {top}")
    n, h, w = imgs.shape
    cw, ch = w * scale + 10, h * scale + 10 + 5 * 2 + 4
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    out = np.empty((rows * ch + 4, cols * cw + 4, 3), np.uint8)
    out[:] = _WHITE
    ink = 255 - (np.clip(imgs, 0.0, 1.0) * 255).astype(np.uint8)  # dark strokes on white
    for k in range(n):
        r, c = divmod(k, cols)
        x, y = 2 + c * cw + 5, 2 + r * ch + 4
        color = _GOOD if pred[k] == lab[k] else _BAD
        out[y - 2 : y + h * scale + 2, x - 2 : x + w * scale + 2] = color
        digit = np.kron(ink[k], np.ones((scale, scale), np.uint8))
        out[y : y + h * scale, x : x + w * scale] = digit[:, :, None]
        text_y = y + h * scale + 5
        label = str(pred[k])
        _text(out, x, text_y, label, color, scale=2)
        if pred[k] != lab[k]:
            _text(
                out,
                x + _text_width(label, 2) + 6,
                text_y,
                f"({lab[k]})",
                np.array((134, 142, 150), np.uint8),
                scale=2,
            )
    return encode_png(out)


# ------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Picture:
    """A picture of a model on its data: ``kind`` is boundary, curve, scatter or digits."""

    kind: str
    png: bytes
    caption: str
    # A Vega-Lite chart of the same picture, where one serves better (hover, crisp axes).
    spec: dict[str, Any] | None = None


def picture_for(model: nn.Module, preset: Any, data: Any) -> Picture | None:
    """The picture that suits the data: a decision boundary for 2-D classes, a fitted curve
    for 1-D regression, predicted digits for digit images, predictions against targets for
    other regression; None when none fits.
    """
    X, task = data.X, data.task
    sample = tuple(X.shape[1:])
    if task == "classification" and math.prod(sample) == 784 and data.labels is not None:
        has_test = data.X_test is not None and data.labels_test is not None
        Xd, labels = (data.X_test, data.labels_test) if has_test else (X, data.labels)
        imgs, pred, true = digit_predictions(model, preset, Xd, labels, 24)
        right = int((pred == true).sum())
        split = "test" if has_test else "training"
        return Picture(
            "digits",
            digit_grid_png(imgs, pred, true),
            f"First {len(pred)} {split} digits: {right} predicted right (green); a red one "
            "shows the prediction and the true label in brackets",
        )
    if task == "classification" and sample == (2,) and data.labels is not None:
        xx, yy, classes = decision_grid(model, preset, X, 200)
        gx, gy, grid = decision_grid(model, preset, X, BOUNDARY_GRID)
        predicted = predicted_classes(predict(model, X, preset))
        return Picture(
            "boundary",
            boundary_png(xx, yy, classes, X, data.labels),
            "Decision boundary: the background is the predicted class, each point is "
            "coloured by its true class (hover a point for its prediction)",
            boundary_spec(gx, gy, grid, _points(X, 2, "a decision boundary"), data.labels,
                          predicted=predicted),
        )
    if task != "classification" and sample == (1,):
        xs, ys = fitted_curve(model, preset, X)
        return Picture(
            "curve", curve_png(xs, ys, X, data.y), "The fitted curve (blue) over the data (grey)"
        )
    if task != "classification":
        t, p = prediction_pairs(model, preset, X, data.y)
        return Picture(
            "scatter",
            scatter_png(t, p),
            "Each output's prediction (up) against its target (across): a perfect fit "
            "lies on the grey diagonal",
        )
    return None

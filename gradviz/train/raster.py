"""Raster drawing with NumPy: a PNG encoder, a 3×5 pixel font and a framed canvas with axes.

No plotting library: the PNG encoder is zlib + struct. `gradviz.train.plots` draws its
figures with these primitives.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gradviz.errors import ArgumentError

__all__ = ["PALETTE", "encode_png"]

# tab10: the class colours readers know from matplotlib
PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)
_WHITE = np.array((255, 255, 255), np.uint8)
_INK = np.array((33, 37, 41), np.uint8)
_GRID = np.array((233, 236, 239), np.uint8)
_AXIS = np.array((173, 181, 189), np.uint8)
_GOOD = np.array((43, 138, 62), np.uint8)
_BAD = np.array((224, 49, 49), np.uint8)

_MAX_SIDE = 4096  # pixels; a picture for a web page, not a poster

# ----------------------------------------------------------------------------- PNG


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: Any, *, level: int = 6) -> bytes:
    """PNG bytes of an 8-bit image: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ArgumentError("image", f"dtype {arr.dtype}", "give uint8 pixel values 0–255")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    colour_types = {2: 0, 3: 2, 4: 6}  # grey, truecolour, truecolour with alpha
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and channels not in (3, 4)):
        raise ArgumentError(
            "image", f"shape {arr.shape}", "give (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    h, w = arr.shape[:2]
    if not (1 <= h <= _MAX_SIDE and 1 <= w <= _MAX_SIDE):
        raise ArgumentError("image", f"shape {arr.shape}", f"use 1 to {_MAX_SIDE} pixels a side")
    colour_type = colour_types[arr.ndim if channels == 1 else channels]
    rows = np.ascontiguousarray(arr).reshape(h, w * channels)
    # every scanline starts with its filter type; 0 (None) keeps the encoder obvious
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, level))
        + _png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- drawing

# 3×5 glyphs, one string of 15 bits per character (rows top to bottom)
_FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001010010",
    "8": "111101111101111",
    "9": "111101111001111",
    "-": "000000111000000",
    "+": "000010111010000",
    ".": "000000000000010",
    "E": "111100111100111",
    "(": "010100100100010",
    ")": "010001001001010",
    " ": "000000000000000",
}
_TICK = 2  # tick numbers at 6×10 pixels
_GLYPHS = {c: np.array([int(b) for b in bits], bool).reshape(5, 3) for c, bits in _FONT.items()}


def _text_width(text: str, scale: int) -> int:
    return max(0, 4 * scale * len(text) - scale)


def _text(img: np.ndarray, x: int, y: int, text: str, color: np.ndarray, scale: int = 1) -> None:
    """Draw ``text`` with its top-left corner at (x, y); characters outside the font are skipped."""
    for ch in text:
        glyph = _GLYPHS.get(ch)
        if glyph is not None:
            big = np.kron(glyph, np.ones((scale, scale), bool))
            h, w = big.shape
            ys, xs = (
                slice(max(y, 0), min(y + h, img.shape[0])),
                slice(max(x, 0), min(x + w, img.shape[1])),
            )
            part = big[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
            img[ys, xs][part] = color
        x += 4 * scale


def _stamp(img: np.ndarray, px: np.ndarray, py: np.ndarray, radius: float, color: Any) -> None:
    """Filled disks of ``radius`` at pixel centres (px, py); ``color`` one RGB or one per point."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dx**2 + dy**2 <= radius**2 + 0.25
    dx, dy = dx[keep], dy[keep]
    cols = np.asarray(color, np.uint8)
    px = np.round(px).astype(int)[:, None] + dx[None, :]
    py = np.round(py).astype(int)[:, None] + dy[None, :]
    inside = (px >= 0) & (px < img.shape[1]) & (py >= 0) & (py < img.shape[0])
    if cols.ndim == 2:
        cols = np.broadcast_to(cols[:, None, :], (*px.shape, 3))[inside]
    img[py[inside], px[inside]] = cols


def _polyline(img: np.ndarray, px: np.ndarray, py: np.ndarray, width: float, color: Any) -> None:
    if len(px) == 1:
        _stamp(img, px, py, width / 2, color)
        return
    xs, ys = [], []
    for x0, y0, x1, y1 in zip(px[:-1], py[:-1], px[1:], py[1:], strict=True):
        n = max(2, int(math.hypot(x1 - x0, y1 - y0) * 2) + 1)
        t = np.linspace(0.0, 1.0, n)
        xs.append(x0 + (x1 - x0) * t)
        ys.append(y0 + (y1 - y0) * t)
    _stamp(img, np.concatenate(xs), np.concatenate(ys), width / 2, color)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def _tick_label(v: float) -> str:
    return f"{v:.3g}".replace("e", "E").replace("E+0", "E").replace("E-0", "E-")


@dataclass(frozen=True)
class _Frame:
    """A plot area inside an image, with data bounds; y grows upwards."""

    left: int
    top: int
    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: ArrayLike) -> np.ndarray:
        return self.left + (np.asarray(x, float) - self.x0) / (self.x1 - self.x0) * (self.width - 1)

    def py(self, y: ArrayLike) -> np.ndarray:
        return self.top + (self.y1 - np.asarray(y, float)) / (self.y1 - self.y0) * (self.height - 1)


def _canvas(
    width: int, height: int, bounds: Sequence[float], *, grid: bool
) -> tuple[np.ndarray, _Frame]:
    """A white image with a framed plot area, tick numbers and (optionally) grid lines."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or not 64 <= v <= _MAX_SIDE:
            raise ArgumentError(name, v, f"use a whole number of pixels from 64 to {_MAX_SIDE}")
    x0, x1, y0, y1 = (float(b) for b in bounds)
    if not all(math.isfinite(b) for b in (x0, x1, y0, y1)):
        raise ArgumentError("values", "inf or nan", "give finite numbers to draw")
    if x1 <= x0:
        x0, x1 = x0 - 1.0, x0 + 1.0
    if y1 <= y0:
        y0, y1 = y0 - 1.0, y0 + 1.0
    xt, yt = _nice_ticks(x0, x1), _nice_ticks(y0, y1)
    left = 10 + max(_text_width(_tick_label(t), _TICK) for t in yt)
    frame = _Frame(left, 8, width - left - 10, height - 8 - 24, x0, x1, y0, y1)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = _WHITE
    bottom, right = frame.top + frame.height, frame.left + frame.width
    for t in xt:
        x = int(round(float(frame.px(t))))
        if grid:
            img[frame.top : bottom, x] = _GRID
        img[bottom : bottom + 3, x] = _AXIS
        label = _tick_label(t)
        _text(img, x - _text_width(label, _TICK) // 2, bottom + 6, label, _INK, _TICK)
    for t in yt:
        y = int(round(float(frame.py(t))))
        if grid:
            img[y, frame.left : right] = _GRID
        img[y, frame.left - 3 : frame.left] = _AXIS
        label = _tick_label(t)
        _text(img, frame.left - 6 - _text_width(label, _TICK), y - 5, label, _INK, _TICK)
    return img, frame


def _box(img: np.ndarray, frame: _Frame) -> None:
    b, r = frame.top + frame.height - 1, frame.left + frame.width - 1
    img[frame.top, frame.left : r + 1] = _AXIS
    img[b, frame.left : r + 1] = _AXIS
    img[frame.top : b + 1, frame.left] = _AXIS
    img[frame.top : b + 1, r] = _AXIS


def _class_colors(labels: np.ndarray) -> np.ndarray:
    return PALETTE[np.asarray(labels, int) % len(PALETTE)]

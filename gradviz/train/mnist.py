"""Readers for MNIST files as they are downloaded: IDX (gzipped or not) and CSV.

Each reader takes bytes, a path or an uploaded file object and returns NumPy arrays;
a malformed file raises `DataError` naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from gradviz.errors import ArgumentError, DataError

__all__ = ["read_idx", "load_mnist_idx", "load_mnist_csv"]

# Largest file the readers unpack (real MNIST train images: 47 MB); a bigger or
# decompression-bomb upload fails with a message instead of filling the server's memory.
_MAX_BYTES = 400_000_000


def _read_source(source: Any, name: str | None) -> tuple[bytes, str]:
    """Bytes and a display name from bytes, a path or an uploaded file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<uploaded bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        try:
            if path.stat().st_size > _MAX_BYTES:
                raise DataError(
                    f"{label}: {path.stat().st_size:,} bytes is more than the "
                    f"{_MAX_BYTES:,} gradviz reads; use a smaller file"
                )
            return path.read_bytes(), label
        except FileNotFoundError:
            raise DataError(f"{label}: no such file; check the path") from None
        except IsADirectoryError:
            raise DataError(f"{label}: is a folder; give the file inside it") from None
        except PermissionError:
            raise DataError(f"{label}: cannot be read (permission denied)") from None
    if hasattr(source, "read"):
        data = source.read(_MAX_BYTES + 1)
        label = name or str(getattr(source, "name", "<uploaded file>"))
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray)):
            raise ArgumentError("source", source, "give a file opened in binary mode ('rb')")
        if len(data) > _MAX_BYTES:
            raise DataError(f"{label}: more than {_MAX_BYTES:,} bytes; use a smaller file")
        return bytes(data), label
    raise ArgumentError(
        "source", source, "give the file's bytes, a path, or an uploaded file object"
    )


def _maybe_gunzip(data: bytes, label: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{label}: the gzip data is damaged or cut short ({exc}); download the file again"
        ) from None
    if len(out) > _MAX_BYTES:
        raise DataError(f"{label}: unpacks to more than {_MAX_BYTES:,} bytes; use a smaller file")
    return out


_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def read_idx(source: Any, *, name: str | None = None) -> np.ndarray:
    """Read one IDX file (MNIST's ubyte format, optionally gzipped) into a uint8 array."""
    data, label = _read_source(source, name)
    data = _maybe_gunzip(data, label)
    if len(data) < 4:
        raise DataError(
            f"{label}: {len(data)} bytes is too short for an IDX header (4 bytes "
            "of magic number); is this the right file?"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{label}: wrong magic number 0x{data[:4].hex()}; an IDX file starts with "
            "0x00000801 (labels) or 0x00000803 (images). Is it a CSV or another format?"
        )
    code, ndim = data[2], data[3]
    if code != 0x08:
        kind = _IDX_TYPES.get(code, "unknown")
        raise DataError(
            f"{label}: IDX type code 0x{code:02x} ({kind}); MNIST files hold unsigned bytes (0x08)"
        )
    if not 1 <= ndim <= 4:
        raise DataError(
            f"{label}: IDX header says {ndim} dimensions; MNIST files have 1 (labels) or 3 (images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{label}: truncated header: {len(data)} bytes, the sizes of {ndim} "
            f"dimensions need {header}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{label}: truncated: header says {'×'.join(map(str, dims))} = "
            f"{expected:,} bytes of data but only {got:,} follow; download it again"
        )
    if got > expected:
        raise DataError(
            f"{label}: {got - expected:,} bytes more than the header's "
            f"{'×'.join(map(str, dims))} = {expected:,}; the file is damaged"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_mnist_idx(
    images: Any, labels: Any, *, names: tuple[str | None, str | None] = (None, None)
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST image file and its label file (IDX, optionally .gz).

    Returns ``(images, labels)``: N×28×28 uint8 and N labels.
    """
    img = read_idx(images, name=names[0])
    lab = read_idx(labels, name=names[1])
    img_name = (
        names[0]
        or getattr(images, "name", None)
        or (str(images) if isinstance(images, (str, os.PathLike)) else "images")
    )
    lab_name = (
        names[1]
        or getattr(labels, "name", None)
        or (str(labels) if isinstance(labels, (str, os.PathLike)) else "labels")
    )
    if img.ndim != 3:
        raise DataError(
            f"{img_name}: IDX with {img.ndim} dimension(s) {img.shape}; an image "
            "file has 3 (count, rows, columns). Did you swap images and labels?"
        )
    if lab.ndim != 1:
        raise DataError(
            f"{lab_name}: IDX with {lab.ndim} dimensions {lab.shape}; a label file "
            "has 1. Did you swap images and labels?"
        )
    if len(img) != len(lab):
        raise DataError(
            f"{img_name} has {len(img):,} images but {lab_name} has {len(lab):,} "
            "labels; use the label file that belongs to these images"
        )
    bad = np.flatnonzero(lab > 9)
    if bad.size:
        raise DataError(
            f"{lab_name}: label {lab[bad[0]]} at index {bad[0]} is outside 0–9; "
            "is this an MNIST label file?"
        )
    return img, lab.astype(np.int64)


_CSV_CHUNK = 4096
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _csv_row_error(label: str, row_no: int, line: str) -> DataError:
    """Find what is wrong with one row of a label,p1..p784 CSV."""
    fields = line.split(",")
    if len(fields) != 785:
        hint = " (no label column?)" if len(fields) == 784 else ""
        return DataError(
            f"{label}: row {row_no} has {len(fields)} columns{hint}; each row must "
            "be label,p1,…,p784 (785 columns)"
        )
    for col, text in enumerate(fields, start=1):
        if not _NUMBER.match(text):
            return DataError(
                f"{label}: row {row_no}, column {col}: {text.strip()[:20]!r} is not "
                "a number; each row must be label,p1,…,p784 with numbers only"
            )
    return DataError(f"{label}: row {row_no} cannot be read; each row must be label,p1,…,p784")


def load_mnist_csv(source: Any, *, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the CSV layout ``label,p1,…,p784`` (seed 004) → (N×28×28 uint8, N labels).

    A first row that starts with text (e.g. ``label,pixel0,…``) is taken as a header.
    """
    data, label = _read_source(source, name)
    data = _maybe_gunzip(data, label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{label}: not a text file (byte {exc.start} is not UTF-8); for the "
            "binary MNIST files use load_mnist_idx"
        ) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    first_row = 1
    head = lines[0].split(",") if lines else []
    if head and not _NUMBER.match(head[0]) and (len(head) == 785 or "label" in lines[0].lower()):
        lines, first_row = lines[1:], 2  # a header such as "label,pixel0,...,pixel783"
    if not lines:
        raise DataError(f"{label}: no data rows; each row must be label,p1,…,p784")
    images = np.empty((len(lines), 784), dtype=np.uint8)
    labels = np.empty(len(lines), dtype=np.int64)
    for start in range(0, len(lines), _CSV_CHUNK):
        chunk = lines[start : start + _CSV_CHUNK]
        try:
            # numpy's C parser: fast for 60 000 rows; on any trouble look row by row below
            values = np.loadtxt(
                io.StringIO("\n".join(chunk)), delimiter=",", dtype=np.float64, ndmin=2
            )
            ok = values.shape == (len(chunk), 785)
        except ValueError:
            ok = False
        if not ok:
            for i, line in enumerate(chunk):
                try:
                    row = np.array([float(v) for v in line.split(",")])
                except ValueError:
                    raise _csv_row_error(label, first_row + start + i, line) from None
                if row.shape != (785,):
                    raise _csv_row_error(label, first_row + start + i, line)
            raise DataError(
                f"{label}: rows {first_row + start}–{first_row + start + len(chunk) - 1} "
                "cannot be read; each row must be label,p1,…,p784"
            )
        for i, row in enumerate(values):
            if not np.isfinite(row).all():
                raise DataError(
                    f"{label}: row {first_row + start + i} holds inf or nan; use pixel values 0–255"
                )
        lab = values[:, 0]
        bad = np.flatnonzero((lab != np.round(lab)) | (lab < 0) | (lab > 9))
        if bad.size:
            raise DataError(
                f"{label}: row {first_row + start + bad[0]}: label {lab[bad[0]]:g} is "
                "outside 0–9; the first column must be the digit"
            )
        pix = values[:, 1:]
        bad_rows = np.flatnonzero(((pix < 0) | (pix > 255)).any(axis=1))
        if bad_rows.size:
            r = bad_rows[0]
            col = int(np.flatnonzero((pix[r] < 0) | (pix[r] > 255))[0])
            raise DataError(
                f"{label}: row {first_row + start + r}, column {col + 2}: pixel "
                f"{pix[r, col]:g} is outside 0–255"
            )
        images[start : start + len(chunk)] = np.round(pix).astype(np.uint8)
        labels[start : start + len(chunk)] = lab.astype(np.int64)
    return images.reshape(-1, 28, 28), labels

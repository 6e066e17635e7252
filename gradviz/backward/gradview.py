"""Gradients as heatmaps: any tensor as a matrix, pooled to a readable size, as Vega-Lite.

Plain data in, plain data out (NumPy arrays, dicts): Streamlit shows the spec with
`st.vega_lite_chart`, a notebook or a test can read it as is. Colours are a diverging
map centred on 0 with a symmetric domain the caller shares between charts, so torch's
and NumPy's gradients read on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradviz.errors import ArgumentError

__all__ = [
    "Pooled", "as_matrix", "exact", "heatmap_spec", "pooled", "slice_dims", "symmetric_limit",
    "worst_entries",
]

MAX_ROWS = MAX_COLS = 64  # cells of one heatmap: ~4k SVG rects stay quick to draw
SCHEME = "redblue"  # ColorBrewer RdBu, reversed: negative blue, 0 white, positive red


def slice_dims(shape: Sequence[int]) -> tuple[int, ...]:
    """The leading axes a slice selector picks from: all but the last two."""
    return tuple(shape[:-2]) if len(shape) > 2 else ()


def as_matrix(arr: Any, index: Sequence[int] = ()) -> np.ndarray:
    """A gradient as a 2-D float64 matrix: a scalar as 1×1, a vector as one row, a matrix
    as is, a higher-rank tensor as the matrix at `index` of its leading axes."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    lead = slice_dims(a.shape)
    index = tuple(int(i) for i in index)
    if len(index) != len(lead) or any(not 0 <= i < n for i, n in zip(index, lead, strict=True)):
        raise ArgumentError(
            "index", index, f"pass one index per leading axis of the shape {a.shape}, "
            f"each in range: {len(lead)} indices below {lead}",
        )
    return a[index] if index else a


@dataclass(frozen=True)
class Pooled:
    """A matrix cut into blocks; each block shows its entry of largest magnitude.

    values: the shown value per block. rows/cols: the first row/column of each block plus
    the end. where: (row, col) of the shown entry in the full matrix, per block.
    """

    values: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    where: np.ndarray

    @property
    def exact(self) -> bool:
        """Whether every block is one entry (the matrix is shown as is)."""
        return self.values.shape == (len(self.rows) - 1, len(self.cols) - 1) and bool(
            np.all(np.diff(self.rows) == 1) and np.all(np.diff(self.cols) == 1)
        )


def _edges(n: int, most: int) -> np.ndarray:
    blocks = min(n, most)
    return np.linspace(0, n, blocks + 1).round().astype(int)


def pooled(mat: np.ndarray, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> Pooled:
    """`mat` in at most max_rows×max_cols blocks, keeping each block's largest |entry| with
    its sign: a single spike stays visible, where an average would wash it out."""
    m = np.asarray(mat, dtype=np.float64)
    if m.ndim != 2:
        raise ArgumentError("mat", f"shape {m.shape}", "pass a 2-D matrix (see as_matrix)")
    rows, cols = _edges(m.shape[0], max_rows), _edges(m.shape[1], max_cols)
    values = np.zeros((len(rows) - 1, len(cols) - 1))
    where = np.zeros((len(rows) - 1, len(cols) - 1, 2), dtype=int)
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            block = m[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            if block.size == 0:
                continue
            # nan and inf must win: a broken gradient is what the reader looks for.
            mag = np.where(np.isfinite(block), np.abs(block), np.inf)
            r, c = np.unravel_index(int(np.argmax(mag)), block.shape)
            values[i, j] = block[r, c]
            where[i, j] = (rows[i] + r, cols[j] + c)
    return Pooled(values, rows, cols, where)


def symmetric_limit(*arrays: Any) -> float:
    """max |value| over the finite entries of all arrays: the colour domain is ±this."""
    finite = [np.abs(a[np.isfinite(a)]) for a in (np.asarray(x, np.float64) for x in arrays)]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return top if top > 0 else 1.0  # all zeros: any domain shows white


def exact(v: float) -> str:
    """The shortest text that reads back as exactly this float64 (never cut to 0.000000)."""
    return repr(float(v))


def _cells(p: Pooled) -> list[dict[str, Any]]:
    cells = []
    one = p.exact
    for i in range(p.values.shape[0]):
        for j in range(p.values.shape[1]):
            r, c = (int(x) for x in p.where[i, j])
            entry = f"[{r}, {c}]" if one else (
                f"rows {p.rows[i]}–{p.rows[i + 1] - 1}, cols {p.cols[j]}–{p.cols[j + 1] - 1}: "
                f"largest at [{r}, {c}]"
            )
            v = float(p.values[i, j])
            cells.append({"row": i, "col": j, "value": v if np.isfinite(v) else None,
                          "entry": entry, "exact": exact(v)})
    return cells


def _axis(n: int, edges: np.ndarray, title: str) -> dict[str, Any]:
    # Label about every 8th cell, by the index of the matrix it starts at.
    step = max(1, n // 8)
    return {
        "field": title, "type": "ordinal", "title": None,
        "axis": {"values": list(range(0, n, step)), "labelAngle": 0,
                 "labelExpr": f"{[int(e) for e in edges[:-1]]}[datum.value]"},
        "scale": {"paddingInner": 0, "paddingOuter": 0},
    }


def heatmap_spec(p: Pooled, *, limit: float, title: str, cell: int | None = None) -> dict[str, Any]:
    """A Vega-Lite heatmap of `p`, coloured on the symmetric domain [-limit, limit].

    cell: pixels per (square) cell; by default the map fits about 200×360 px, with cells
    of 3 to 24 px. Hover shows the entry and its exact value. Drawn as SVG so each cell
    is a DOM element a test can read.
    """
    if not limit > 0:
        raise ArgumentError("limit", limit, "pass a positive colour limit (see symmetric_limit)")
    n_rows, n_cols = p.values.shape
    size = cell or int(max(3, min(24, 200 // max(n_cols, 1), 360 // max(n_rows, 1))))
    return {
        "title": {"text": title, "anchor": "start", "fontSize": 12},
        "data": {"values": _cells(p)},
        "mark": {"type": "rect"},
        "width": {"step": size},
        "height": {"step": size},
        "encoding": {
            "x": _axis(n_cols, p.cols, "col"),
            "y": _axis(n_rows, p.rows, "row"),
            "color": {
                "field": "value", "type": "quantitative", "title": None,
                "scale": {"scheme": SCHEME, "reverse": True, "domain": [-limit, limit],
                          "domainMid": 0, "clamp": True},
                "legend": {"format": ".1~e", "gradientLength": max(60, min(160, n_rows * size))},
            },
            "tooltip": [{"field": "entry", "title": "entry"}, {"field": "exact", "title": "value"}],
        },
        "config": {"view": {"stroke": None}},
        "usermeta": {"embedOptions": {"renderer": "svg"}},
    }


def worst_entries(torch_grad: Any, numpy_grad: Any, k: int = 8) -> list[dict[str, str]]:
    """The k entries where torch and NumPy differ most, every number at full precision."""
    a = np.asarray(torch_grad, dtype=np.float64)
    b = np.asarray(numpy_grad, dtype=np.float64)
    if a.shape != b.shape:
        raise ArgumentError("numpy_grad", f"shape {b.shape}", f"pass a gradient of shape {a.shape}")
    diff = np.abs(a - b).reshape(-1)
    order = np.argsort(-np.where(np.isnan(diff), np.inf, diff), kind="stable")[:k]
    return [
        {"entry": str([int(x) for x in np.unravel_index(int(i), a.shape)]),
         "torch": exact(a.reshape(-1)[i]), "NumPy": exact(b.reshape(-1)[i]),
         "|torch − NumPy|": exact(diff[i])}
        for i in order
    ]

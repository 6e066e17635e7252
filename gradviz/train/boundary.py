"""A decision boundary as a Vega-Lite chart: crisp at any size, axes in the browser's own
fonts, hover on a point for its coordinates, true and predicted class.

The regions are rectangles, one per run of equal predictions along a grid row, so a
60 × 60 grid of two classes is ~100-300 rectangles rather than 3,600 cells (or a bitmap
that blurs when the column is wide). Streamlit ships Vega-Lite: nothing to download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradviz.errors import ArgumentError
from gradviz.train.raster import PALETTE

__all__ = ["BOUNDARY_GRID", "boundary_spec", "region_runs"]

# Cells per side of the decision grid: fine enough that the boundary reads as a line.
BOUNDARY_GRID = 60


def region_runs(classes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Runs of equal class along each row of `classes`: (row, first col, end col, class),
    end exclusive; together they tile the grid exactly once."""
    grid = np.asarray(classes)
    if grid.ndim != 2 or grid.size == 0:
        raise ArgumentError("classes", f"shape {grid.shape}", "pass a 2-D grid of classes")
    runs = []
    for r, row in enumerate(grid):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        ends = np.r_[starts[1:], len(row)]
        runs += [(r, int(a), int(b), int(row[a])) for a, b in zip(starts, ends, strict=True)]
    return runs


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def boundary_spec(
    xx: np.ndarray, yy: np.ndarray, classes: np.ndarray, X: Any, labels: Any,
    *, predicted: Any = None, height: int = 360,
) -> dict[str, Any]:
    """The Vega-Lite spec of `decision_grid`'s (xx, yy, classes) with the labelled points.

    Each point is filled with its true class's colour over the tinted region of the class
    the model predicts there, so a point whose colour differs from its region is wrong.
    predicted: the model's class per point, shown on hover (None: left out).
    """
    classes = np.asarray(classes)
    if classes.ndim != 2 or np.shape(xx) != classes.shape or np.shape(yy) != classes.shape:
        raise ArgumentError("classes", f"shape {classes.shape}",
                            "pass decision_grid's (xx, yy, classes)")
    pts = np.asarray(X, dtype=float).reshape(len(X), -1)
    lab = np.asarray(labels).reshape(-1).astype(int)
    if pts.shape[1] != 2 or len(lab) != len(pts):
        raise ArgumentError("labels", f"{len(lab)} labels for {len(pts)} points",
                            "give 2-D points and one label per point")
    xs, ys = xx[0], yy[:, 0]
    # Cell edges halfway between grid points, so each cell is centred on its prediction.
    ex = np.r_[xs[0], (xs[1:] + xs[:-1]) / 2, xs[-1]]
    ey = np.r_[ys[0], (ys[1:] + ys[:-1]) / 2, ys[-1]]
    regions = [{"x": float(ex[a]), "x2": float(ex[b]), "y": float(ey[r]),
                "y2": float(ey[r + 1]), "region": str(c)}
               for r, a, b, c in region_runs(classes)]
    points = [{"x1": float(p[0]), "x2": float(p[1]), "class": str(t)}
              for p, t in zip(pts, lab, strict=True)]
    tips = [{"field": "x1", "title": "x₁", "format": ".3f"},
            {"field": "x2", "title": "x₂", "format": ".3f"},
            {"field": "class", "title": "true class"}]
    if predicted is not None:
        for row, p in zip(points, np.asarray(predicted).reshape(-1), strict=True):
            row["predicted"] = str(int(p))
        tips.append({"field": "predicted", "title": "predicted"})
    names = sorted({str(c) for c in np.unique(classes)} | {str(t) for t in np.unique(lab)},
                   key=int)
    colors = {"domain": names, "range": [_hex(PALETTE[int(n) % len(PALETTE)]) for n in names]}
    axis_x = {"title": "x₁", "grid": False}
    axis_y = {"title": "x₂", "grid": False}
    scale_x = {"domain": [float(ex[0]), float(ex[-1])], "nice": False, "zero": False}
    scale_y = {"domain": [float(ey[0]), float(ey[-1])], "nice": False, "zero": False}
    return {
        # SVG keeps it crisp when zoomed and lets a test (or a reader's tools) see each mark.
        "usermeta": {"embedOptions": {"renderer": "svg"}},
        "height": height,
        "width": "container",
        "layer": [
            {"data": {"values": regions},
             "mark": {"type": "rect", "opacity": 0.3, "strokeWidth": 0},
             "encoding": {
                 "x": {"field": "x", "type": "quantitative", "scale": scale_x, "axis": axis_x},
                 "x2": {"field": "x2"},
                 "y": {"field": "y", "type": "quantitative", "scale": scale_y, "axis": axis_y},
                 "y2": {"field": "y2"},
                 "color": {"field": "region", "type": "nominal", "scale": colors,
                           "legend": {"title": "class"}},
                 "tooltip": None}},
            {"data": {"values": points},
             "mark": {"type": "circle", "size": 38, "opacity": 1, "stroke": "#222",
                      "strokeWidth": 0.8, "tooltip": True},
             "encoding": {
                 "x": {"field": "x1", "type": "quantitative"},
                 "y": {"field": "x2", "type": "quantitative"},
                 "color": {"field": "class", "type": "nominal", "scale": colors},
                 "tooltip": tips}},
        ],
    }

"""The decision boundary as a Vega-Lite chart: regions tile the grid exactly, every point is
there with its true and predicted class for hover, colours agree between regions and points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradviz.errors import ArgumentError
from gradviz.train.boundary import boundary_spec, region_runs

grids = hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30),
                   elements=st.integers(0, 3))


@settings(max_examples=60)
@given(grids)
def test_runs_tile_every_row_once_with_its_class(classes):
    runs = region_runs(classes)
    rebuilt = np.full(classes.shape, -1)
    for r, a, b, c in runs:
        assert a < b and (rebuilt[r, a:b] == -1).all()  # no overlap
        rebuilt[r, a:b] = c
    assert (rebuilt == classes).all()  # no gap, right class
    # Maximal runs: two neighbours in one row never share a class.
    for (r1, _, b1, c1), (r2, a2, _, c2) in zip(runs, runs[1:], strict=False):
        assert not (r1 == r2 and b1 == a2 and c1 == c2)


@settings(max_examples=30, deadline=None)
@given(grids.filter(lambda g: min(g.shape) >= 2), st.integers(1, 40), st.randoms())
def test_the_spec_covers_the_plane_and_shows_each_point(classes, n, rnd):
    rows, cols = classes.shape
    xx, yy = np.meshgrid(np.linspace(-1, 2, cols), np.linspace(0, 5, rows))
    X = np.array([[rnd.uniform(-1, 2), rnd.uniform(0, 5)] for _ in range(n)])
    labels = np.array([rnd.randrange(4) for _ in range(n)])
    spec = boundary_spec(xx, yy, classes, X, labels, predicted=labels[::-1])
    regions, points = (layer["data"]["values"] for layer in spec["layer"])
    area = sum((r["x2"] - r["x"]) * (r["y2"] - r["y"]) for r in regions)
    assert area == pytest.approx(3 * 5)
    assert [(p["x1"], p["x2"], p["class"]) for p in points] == [
        (float(a), float(b), str(c)) for (a, b), c in zip(X, labels, strict=True)]
    assert [p["predicted"] for p in points] == [str(c) for c in labels[::-1]]
    # One colour scale for regions and points: a class has one colour everywhere.
    scales = [layer["encoding"]["color"]["scale"] for layer in spec["layer"]]
    assert scales[0] == scales[1]
    assert set(scales[0]["domain"]) >= {str(c) for c in np.unique(classes)} | {
        str(c) for c in labels}


def test_bad_grids_and_labels_name_the_argument():
    xx, yy = np.meshgrid(np.arange(3.0), np.arange(3.0))
    with pytest.raises(ArgumentError, match="classes"):
        boundary_spec(xx, yy, np.zeros((2, 3)), np.zeros((1, 2)), [0])
    with pytest.raises(ArgumentError, match="labels"):
        boundary_spec(xx, yy, np.zeros((3, 3)), np.zeros((2, 2)), [0])

"""Gradient heatmaps: matrices of any rank, pooling that keeps spikes, one colour scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradviz.backward.gradview import (
    MAX_COLS,
    MAX_ROWS,
    SCHEME,
    as_matrix,
    exact,
    heatmap_spec,
    pooled,
    slice_dims,
    symmetric_limit,
    worst_entries,
)
from gradviz.errors import GradvizError

FLOATS = st.floats(-1e6, 1e6, allow_nan=False)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
                  elements=FLOATS),
       st.data())
def test_any_rank_becomes_the_matrix_a_reader_expects(arr, data):
    index = tuple(data.draw(st.integers(0, n - 1)) for n in slice_dims(arr.shape))
    mat = as_matrix(arr, index)
    assert mat.ndim == 2
    if arr.ndim <= 1:
        assert mat.shape == (1, max(arr.size, 1))
        assert np.array_equal(mat.reshape(-1), arr.reshape(-1))
    else:
        assert np.array_equal(mat, arr[index])


def test_a_wrong_slice_index_says_what_to_pass():
    with pytest.raises(GradvizError, match="one index per leading axis"):
        as_matrix(np.zeros((2, 3, 4, 5)), (2, 0))
    with pytest.raises(GradvizError, match="one index per leading axis"):
        as_matrix(np.zeros((2, 3, 4)), ())


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=150),
                  elements=FLOATS))
def test_pooling_keeps_each_blocks_largest_entry(mat):
    p = pooled(mat)
    assert p.values.shape[0] <= MAX_ROWS and p.values.shape[1] <= MAX_COLS
    assert p.rows[0] == 0 and p.rows[-1] == mat.shape[0] and p.cols[-1] == mat.shape[1]
    for i in range(p.values.shape[0]):
        for j in range(p.values.shape[1]):
            block = mat[p.rows[i]:p.rows[i + 1], p.cols[j]:p.cols[j + 1]]
            r, c = p.where[i, j]
            assert p.values[i, j] == mat[r, c] and abs(mat[r, c]) == np.abs(block).max()
    # The single largest entry of the matrix is always on the map.
    assert np.abs(p.values).max() == np.abs(mat).max()
    assert p.exact == (mat.shape[0] <= MAX_ROWS and mat.shape[1] <= MAX_COLS)
    if p.exact:
        assert np.array_equal(p.values, mat)


def test_a_nan_is_never_pooled_away():
    mat = np.ones((200, 200))
    mat[77, 131] = np.nan
    p = pooled(mat)
    assert np.isnan(p.values).sum() == 1


@given(st.lists(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=6), elements=FLOATS),
                min_size=1, max_size=3))
def test_the_shared_limit_covers_every_array(arrays):
    limit = symmetric_limit(*arrays)
    assert limit > 0
    assert all(np.all(np.abs(a) <= limit) for a in arrays)
    if any(np.any(a != 0) for a in arrays):
        assert limit == max(float(np.abs(a).max()) for a in arrays if a.size)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=20),
                  elements=st.floats(-1, 1, allow_nan=False) | st.sampled_from([1e-17, -3e-19])))
def test_the_spec_is_a_centred_diverging_map_with_exact_hover_values(mat):
    limit = symmetric_limit(mat)
    spec = heatmap_spec(pooled(mat), limit=limit, title="torch")
    color = spec["encoding"]["color"]["scale"]
    assert color["scheme"] == SCHEME and color["domain"] == [-limit, limit]
    assert color["domainMid"] == 0
    cells = spec["data"]["values"]
    assert len(cells) == mat.size
    for cell in cells:
        # The hover text reads back as the very float shown: nothing cut to "0.000000".
        assert float(cell["exact"]) == mat[cell["row"], cell["col"]] == cell["value"]
    assert spec["usermeta"]["embedOptions"]["renderer"] == "svg"
    with pytest.raises(GradvizError, match="positive colour limit"):
        heatmap_spec(pooled(mat), limit=0.0, title="x")


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=5), elements=FLOATS), st.data())
def test_worst_entries_are_the_largest_differences_at_full_precision(a, data):
    b = a + data.draw(hnp.arrays(np.float64, a.shape, elements=st.floats(-1e-12, 1e-12)))
    rows = worst_entries(a, b, k=4)
    diffs = [float(r["|torch − NumPy|"]) for r in rows]
    assert diffs == sorted(diffs, reverse=True)
    assert len(rows) == min(4, a.size)
    if rows:
        assert diffs[0] == float(np.abs(a - b).max())
        idx = tuple(int(i) for i in rows[0]["entry"].strip("[]").split(", ") if i)
        assert float(rows[0]["torch"]) == a[idx] and float(rows[0]["NumPy"]) == b[idx]
    assert exact(1e-17) == "1e-17" and exact(0.1 + 0.2) == "0.30000000000000004"

"""The numpy sparse helpers of the request path against scipy and hand cases."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shortlist.retrieval.sparse import (
    descending_key,
    drop_entries,
    gather_rows,
    row_products,
    sum_duplicates,
    top_k_entries,
    truncate_rows,
)


def random_csr(rows: int, cols: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(rows, cols, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data = np.round(m.data * 4) + 1  # small integers: plenty of ties
    m.sort_indices()
    return m


def test_gather_rows_equals_scipy_row_slicing():
    m = random_csr(50, 40, 0.2, 0)
    rows = np.array([3, 0, 3, 49, 17])
    owner, col, value = gather_rows(m, rows)
    dense = np.zeros((len(rows), 40))
    np.add.at(dense, (owner, col), value)
    assert np.array_equal(dense, m[rows].toarray())
    assert gather_rows(m, np.array([], np.int64))[0].size == 0


def test_sum_duplicates_adds_and_sorts():
    row, col, value = sum_duplicates(
        np.array([1, 0, 1, 1]), np.array([5, 2, 5, 3]), np.array([1.0, 2.0, 3.0, 4.0])
    )
    assert row.tolist() == [0, 1, 1] and col.tolist() == [2, 3, 5]
    assert value.tolist() == [2.0, 4.0, 4.0]


def test_drop_entries_removes_pairs_not_columns():
    entries = (np.array([0, 0, 1]), np.array([1, 2, 1]), np.array([1.0, 1.0, 1.0]))
    row, col, _ = drop_entries(entries, (np.array([1]), np.array([1]), np.array([0.0])))
    assert list(zip(row.tolist(), col.tolist(), strict=True)) == [(0, 1), (0, 2)]


def test_descending_key_orders_any_float():
    values = np.array([0.5, -2.0, np.inf, -0.0, 3.0, np.nan, -np.inf, 1e-30], np.float32)
    order = np.argsort(descending_key(values), kind="stable")
    assert values[order[:-1]].tolist() == sorted(values[~np.isnan(values)].tolist(), reverse=True)
    assert np.isnan(values[order[-1]])


def test_top_k_entries_matches_a_sort_per_row_with_ties_by_column():
    m = random_csr(30, 60, 0.3, 1)
    items, scores = top_k_entries(gather_rows(m, np.arange(30)), 30, 7)
    for r in range(30):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        best = np.lexsort((m.indices[lo:hi], -m.data[lo:hi]))[:7]
        want = m.indices[lo:hi][best].tolist()
        assert items[r, : len(want)].tolist() == want
        assert (items[r, len(want) :] == -1).all() and np.isnan(scores[r, len(want) :]).all()


def test_truncate_rows_keeps_each_rows_k_largest():
    m = random_csr(20, 50, 0.5, 2)
    t = truncate_rows(m, 4)
    assert (np.diff(t.indptr) == np.minimum(np.diff(m.indptr), 4)).all()
    full, _ = top_k_entries(gather_rows(m, np.arange(20)), 20, 4)
    cut, _ = top_k_entries(gather_rows(t, np.arange(20)), 20, 4)
    assert np.array_equal(full, cut)
    assert np.array_equal(t.toarray()[t.toarray() > 0], m.toarray()[t.toarray() > 0])


def test_row_products_agree_for_few_and_many_rows():
    a, b, banned = (
        random_csr(80, 30, 0.2, 3),
        random_csr(30, 50, 0.3, 4),
        random_csr(80, 50, 0.1, 5),
    )
    rows = np.arange(80)
    want = (a @ b).toarray()
    want[banned.toarray() > 0] = 0
    for chunk in (1, 7, 80):  # the numpy path below SCIPY_ROWS, scipy's above
        for lo in range(0, 80, chunk):
            row, col, value = row_products(a, b, rows[lo : lo + chunk], exclude=banned)
            got = np.zeros((len(rows[lo : lo + chunk]), 50))
            got[row, col] = value
            assert np.allclose(got, want[lo : lo + chunk])
            assert (np.diff(row) >= 0).all()
            same_row = np.diff(row) == 0
            assert (np.diff(col)[same_row] > 0).all()

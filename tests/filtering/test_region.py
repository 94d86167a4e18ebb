"""AvailableInRegionFilter: item x region availability against the user's region code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shortlist.errors import ConfigError, FilterError
from shortlist.filtering import AvailableInRegionFilter, FilterContext

# 3 regions; item 0 everywhere, 1 only in region 0, 2 in regions 1 and 2, 3 nowhere
ITEMS = np.array([[0, 1, 2, 3, 5, -1]] * 4, np.int32)  # 5 is beyond the table
REGIONS = [0, 1, 2, -1]


def _matrix() -> sp.csr_array:
    dense = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
    return sp.csr_array(dense)


def test_keeps_items_sold_in_the_users_region():
    f = AvailableInRegionFilter(_matrix())
    keep = f.keep(FilterContext([0, 1, 2, 3], region=REGIONS), ITEMS)
    assert keep.tolist() == [
        [True, True, False, False, True, False],
        [True, False, True, False, True, False],
        [True, False, True, False, True, False],
        [True, True, True, True, True, False],  # unknown region keeps everything
    ]


def test_unlisted_items_removed_when_configured():
    f = AvailableInRegionFilter(_matrix(), unlisted_available=False)
    keep = f.keep(FilterContext([0, 1], region=[0, -1]), ITEMS[:2])
    assert keep[:, 4].tolist() == [False, True]  # an unknown region still keeps it


def test_no_regions_in_context_keeps_everything_but_padding():
    keep = AvailableInRegionFilter(_matrix()).keep(FilterContext([0]), ITEMS[:1])
    assert keep.tolist() == [[True] * 5 + [False]]


def test_explicit_zeros_in_the_matrix_are_not_availability():
    m = sp.csr_array((np.array([1, 0]), (np.array([0, 1]), np.array([0, 0]))), shape=(2, 1))
    keep = AvailableInRegionFilter(m).keep(FilterContext([0], region=0), np.array([[0, 1]]))
    assert keep.tolist() == [[True, False]]


def test_bad_configuration_and_requests():
    with pytest.raises(ConfigError):
        AvailableInRegionFilter(np.ones((2, 2)))
    with pytest.raises(FilterError, match="region"):
        AvailableInRegionFilter(_matrix()).keep(FilterContext([0], region=3), ITEMS[:1])


def test_the_dense_table_and_the_pair_keys_answer_alike(monkeypatch):
    import shortlist.filtering.region as region_module

    rng = np.random.default_rng(0)
    m = sp.random_array((300, 8), density=0.2, format="csr", rng=rng)
    m.data[::5] = 0  # stored zeros: not available, on both paths
    dense = AvailableInRegionFilter(m)
    monkeypatch.setattr(region_module, "DENSE_CELLS", 0)  # as for a huge catalogue
    keys = AvailableInRegionFilter(m)
    assert dense.table is not None and dense.pairs is None
    assert keys.table is None and keys.pairs is not None
    items = rng.integers(-1, 340, size=(50, 40))  # padding, listed and unlisted items
    regions = rng.integers(-1, 8, size=50)
    for unlisted in (True, False):
        dense.unlisted_available = keys.unlisted_available = unlisted
        ctx = FilterContext(np.arange(50), region=regions)
        got = dense.keep(ctx, items)
        assert np.array_equal(got, keys.keep(ctx, items))
        listed = (items >= 0) & (items < 300) & (regions[:, None] >= 0)
        expected = m.toarray()[np.clip(items, 0, 299), np.maximum(regions, 0)[:, None]] != 0
        assert np.array_equal(got[listed], expected[listed])

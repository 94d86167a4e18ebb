"""NotBoughtBeforeFilter over an exact set or a Bloom filter, and the exact PairSet itself."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shortlist.errors import ConfigError
from shortlist.filtering import BloomFilter, FilterContext, NotBoughtBeforeFilter, PairSet

# interactions: user 0 bought items 1 and 3 (3 twice), user 1 bought item 0
USERS = np.array([0, 0, 0, 1])
ITEMS_BOUGHT = np.array([1, 3, 3, 0])
CANDIDATES = np.array([[0, 1, 2, 3, -1], [0, 1, 2, 3, 4], [3, 1, -1, -1, -1]], np.int32)
CTX = FilterContext([0, 1, 2])  # user 2 bought nothing
EXPECTED = [
    [True, False, True, False, False],
    [False, True, True, True, True],
    [True, True, False, False, False],
]


@pytest.mark.parametrize("kind", ["exact", "bloom"])
def test_removes_what_each_user_bought(kind):
    f = getattr(NotBoughtBeforeFilter, kind)(USERS, ITEMS_BOUGHT)
    assert f.keep(CTX, CANDIDATES).tolist() == EXPECTED


@pytest.mark.parametrize("kind", ["exact", "bloom"])
def test_purchases_added_in_real_time_are_removed(kind):
    f = getattr(NotBoughtBeforeFilter, kind)(USERS, ITEMS_BOUGHT)
    f.add([2, 1], [1, 4])
    keep = f.keep(CTX, CANDIDATES)
    assert keep[1].tolist() == [False, True, True, True, False]
    assert keep[2].tolist() == [True, False, False, False, False]


def test_exact_set_from_a_csr_matrix():
    csr = sp.csr_array((np.ones(4), (USERS, ITEMS_BOUGHT)), shape=(3, 5))  # duplicates summed
    f = NotBoughtBeforeFilter(PairSet.from_csr(csr))
    assert f.keep(CTX, CANDIDATES).tolist() == EXPECTED
    assert len(f.history) == 3


def test_pair_set_adds_merge_and_stay_exact():
    pairs = PairSet.from_pairs([0], [0])
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 1000, 20_000), rng.integers(0, 1000, 20_000)
    for start in range(0, 20_000, 1000):  # past the delta's limit: merged into the main array
        pairs.add(rows[start : start + 1000], cols[start : start + 1000])
    expected = {(0, 0)} | set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert len(pairs) == len(expected)
    assert pairs.contains(rows, cols).all()
    u, i = rng.integers(0, 1000, 5000), rng.integers(0, 1000, 5000)
    truth = [(a, b) in expected for a, b in zip(u.tolist(), i.tolist(), strict=True)]
    assert pairs.contains(u, i).tolist() == truth


def test_bloom_history_instance_is_used_as_given():
    bloom = BloomFilter(100, 0.01)
    f = NotBoughtBeforeFilter(bloom)
    f.add(5, 7)
    assert bloom.contains([5], [7])[0]
    assert not f.keep(FilterContext([5]), np.array([[7]]))[0, 0]


def test_bad_history():
    with pytest.raises(ConfigError):
        NotBoughtBeforeFilter({(0, 1)})


@pytest.mark.parametrize("kind", ["exact", "bloom"])
def test_purchases_in_the_context_are_removed(kind):
    """What real-time events recorded in the online store reach the filter per request."""
    f = getattr(NotBoughtBeforeFilter, kind)(USERS, ITEMS_BOUGHT)
    bought = (np.array([], np.int64), np.array([4, 2]), np.array([3]))
    keep = f.keep(FilterContext([0, 1, 2], bought=bought), CANDIDATES)
    assert keep.tolist() == [
        EXPECTED[0],
        [False, True, False, True, False],
        [False, True] + [False] * 3,
    ]
    with pytest.raises(Exception, match="bought has 2 rows"):
        FilterContext([0, 1, 2], bought=bought[:2])

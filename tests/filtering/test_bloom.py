"""The Bloom filter: its sizing, no false negatives, a measured false-positive rate within
its bound, and adds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shortlist.errors import ConfigError, DataError
from shortlist.filtering import BloomFilter, PairSet, bloom_size


def _members(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50_000, n), rng.integers(0, 100_000, n)


def test_sizing_follows_the_standard_formulas():
    m, k = bloom_size(1_000_000, 0.01)
    assert m == math.ceil(1_000_000 * math.log(100) / math.log(2) ** 2)  # 9,585,059 bits
    assert k == 7
    assert bloom_size(1000, 0.001)[1] == 10
    bloom = BloomFilter(1_000_000, 0.01)
    assert bloom.nbytes == (m + 7) // 8


@pytest.mark.parametrize("fp_rate", [0.01, 0.05])
def test_no_false_negatives_and_false_positives_within_the_bound(fp_rate):
    users, items = _members(50_000)
    bloom = BloomFilter(50_000, fp_rate)
    bloom.add(users, items)
    assert bloom.contains(users, items).all()
    # non-members: users outside the members' range, so none of these pairs was added
    rng = np.random.default_rng(1)
    others = bloom.contains(rng.integers(50_000, 10**9, 200_000), rng.integers(0, 100_000, 200_000))
    measured = others.mean()
    assert measured <= 1.5 * fp_rate
    assert measured >= 0.5 * fp_rate  # and the bits are actually used as sized
    assert bloom.estimated_fp_rate <= 1.5 * fp_rate


def test_contains_keeps_the_shape_of_a_candidate_matrix():
    bloom = BloomFilter.from_pairs([1, 2], [10, 20])
    users = np.array([[1], [2]])
    items = np.array([[10, 20, 30], [10, 20, 30]])
    assert bloom.contains(users, items).tolist() == [[True, False, False], [False, True, False]]
    assert bloom.contains(np.empty(0, np.int64), np.empty(0, np.int64)).shape == (0,)


def test_add_then_contains():
    bloom = BloomFilter.from_pairs([1, 2], [10, 20], fp_rate=0.001)
    assert bloom.capacity == 4  # twice the distinct pairs
    assert not bloom.contains([3], [30])[0]
    bloom.add(3, 30)
    bloom.add(np.array([4, 4]), np.array([40, 41]))
    assert bloom.contains([1, 2, 3, 4, 4], [10, 20, 30, 40, 41]).all()


def test_agrees_with_the_exact_set_on_members():
    users, items = _members(20_000, seed=3)
    exact = PairSet.from_pairs(users, items)
    bloom = BloomFilter.from_pairs(users, items, fp_rate=0.01)
    # members: both say yes; a non-member the exact set rejects may pass the Bloom filter,
    # never the other way round
    assert exact.contains(users, items).all() and bloom.contains(users, items).all()
    rng = np.random.default_rng(4)
    u, i = rng.integers(0, 50_000, 100_000), rng.integers(0, 100_000, 100_000)
    in_exact, in_bloom = exact.contains(u, i), bloom.contains(u, i)
    assert not (in_exact & ~in_bloom).any()


def test_bad_configuration_and_ids():
    for capacity, fp_rate in [(0, 0.01), (10, 0.0), (10, 1.0), (10, "0.1"), (1.5, 0.1)]:
        with pytest.raises(ConfigError):
            BloomFilter(capacity, fp_rate)
    with pytest.raises(DataError):
        BloomFilter(10).add([-1], [2])
    with pytest.raises(DataError):
        BloomFilter(10).add([1], [2**32])

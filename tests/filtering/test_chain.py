"""Composition: filters in order, what each removed, padding, and the context's checks."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.errors import ConfigError, FilterError
from shortlist.filtering import (
    AgeAllowedFilter,
    FilterChain,
    FilterContext,
    InStockFilter,
    NotBoughtBeforeFilter,
    compact,
)

# items 0..5: 2 is out of stock, 4 is 18+; user 0 (age 16) bought 1, user 1 (age 40) bought 2
CANDIDATES = np.array([[0, 1, 2, 3, 4, -1], [5, 4, 2, 1, -1, -1]], np.int32)
CTX = FilterContext([0, 1], age=[16, 40])


def _filters():
    stock = InStockFilter([1, 1, 0, 1, 1, 1])
    age = AgeAllowedFilter([np.nan, np.nan, np.nan, np.nan, 18, np.nan])
    bought = NotBoughtBeforeFilter.exact([0, 1], [1, 2])
    return stock, age, bought


def test_chain_keeps_what_every_filter_keeps_and_counts_removals():
    stock, age, bought = _filters()
    out = FilterChain([stock, age, bought]).apply(CTX, CANDIDATES)
    assert out.keep.tolist() == [
        [True, False, False, True, False, False],
        [True, True, False, True, False, False],
    ]
    assert out.removed == {"in_stock": 2, "age_allowed": 1, "not_bought_before": 1}
    assert [s.candidates_in for s in out.steps] == [9, 7, 6]
    assert all(s.seconds >= 0 for s in out.steps)
    assert out.items.tolist() == [[0, 3, -1, -1, -1, -1], [5, 4, 1, -1, -1, -1]]


def test_order_changes_the_counts_not_the_result():
    stock, age, bought = _filters()
    first = FilterChain([stock, age, bought]).apply(CTX, CANDIDATES)
    # item 2 for user 1 is both out of stock and bought: whoever runs first removes it
    second = FilterChain([bought, age, stock]).apply(CTX, CANDIDATES)
    assert np.array_equal(first.keep, second.keep)
    assert second.removed == {"not_bought_before": 2, "age_allowed": 1, "in_stock": 1}


def test_later_filters_see_only_surviving_candidates():
    seen = []

    class Spy(InStockFilter):
        name = "spy"

        def _keep(self, ctx, items, valid):
            seen.append(items.copy())
            return super()._keep(ctx, items, valid)

    *_, bought = _filters()
    FilterChain([bought, Spy([1] * 6)]).apply(CTX, CANDIDATES)
    assert seen[0].tolist() == [[0, -1, 2, 3, 4, -1], [5, 4, -1, 1, -1, -1]]


def test_padding_is_never_kept_even_by_an_empty_chain():
    out = FilterChain([]).apply(CTX, CANDIDATES)
    assert out.keep.tolist() == (CANDIDATES >= 0).tolist()
    assert out.steps == ()
    # a filter that would keep anything: untracked items are kept, padding still is not
    keep = InStockFilter([]).keep(CTX, CANDIDATES)
    assert keep.tolist() == (CANDIDATES >= 0).tolist()


def test_compact_keeps_order():
    items = np.array([[7, 8, 9, 10]])
    keep = np.array([[False, True, False, True]])
    assert compact(items, keep).tolist() == [[8, 10, -1, -1]]


def test_bad_chains_and_requests():
    stock, age, _ = _filters()
    with pytest.raises(ConfigError):
        FilterChain([stock, "age"])
    with pytest.raises(ConfigError, match="distinct"):
        FilterChain([stock, InStockFilter([1])])
    with pytest.raises(FilterError, match="candidate rows"):
        FilterChain([stock]).apply(CTX, CANDIDATES[:1])
    with pytest.raises(FilterError):
        stock.keep(CTX, CANDIDATES.astype(float))
    with pytest.raises(FilterError):
        FilterContext([[0, 1]])
    ctx = FilterContext(np.array([3, 4]), region=2, age=30.0)
    assert ctx.region.tolist() == [2, 2] and ctx.age.tolist() == [30.0, 30.0]

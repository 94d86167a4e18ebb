"""InStockFilter: stock > 0 kept, untracked items by configuration, updates change the answer."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.errors import ConfigError, DataError
from shortlist.filtering import FilterContext, InStockFilter, Inventory

# items 0..4: 3 units, none, 1 unit, untracked (NaN), oversold
UNITS = [3, 0, 1, np.nan, -2]
ITEMS = np.array([[0, 1, 2, 3, 4, 7, -1], [4, 2, -1, -1, -1, -1, -1]], np.int32)
CTX = FilterContext([10, 11])


def test_keeps_items_with_stock_and_untracked_ones():
    keep = InStockFilter(UNITS).keep(CTX, ITEMS)
    # 3 is NaN, 7 is beyond the inventory: both untracked, kept by default; padding never
    expected = [[True, False, True, True, False, True, False], [False, True] + [False] * 5]
    assert keep.tolist() == expected


def test_untracked_items_removed_when_configured():
    keep = InStockFilter(UNITS, keep_untracked=False).keep(CTX, ITEMS)
    assert keep[0].tolist() == [True, False, True, False, False, False, False]


def test_set_stock_updates_the_result_in_place():
    inventory = Inventory(UNITS)
    f = InStockFilter(inventory, keep_untracked=False)
    f.set_stock([0, 1], 0)  # sold out, and restocked below
    inventory.set_stock(np.array([1, 9]), np.array([5, 2]))  # 9 grows the inventory
    assert f.inventory is inventory
    assert inventory.stock([0, 1, 9, 8, -1]).tolist()[:3] == [0, 5, 2]
    assert np.isnan(inventory.stock([8, -1])).all()  # the gap left by growing is untracked
    keep = f.keep(FilterContext([1]), np.array([[0, 1, 9, 8]]))
    assert keep.tolist() == [[False, True, True, False]]


def test_bad_inventory_and_updates():
    with pytest.raises(ConfigError):
        Inventory([[1, 2]])
    with pytest.raises(ConfigError):
        InStockFilter(UNITS, keep_untracked="yes")
    with pytest.raises(DataError):
        Inventory(UNITS).set_stock([-1], 3)
    with pytest.raises(DataError):
        Inventory(UNITS).set_stock([0, 1], [1, 2, 3])


def test_stock_events_in_the_context_win_over_the_inventory():
    f = InStockFilter(UNITS)
    # item 0 sold out, item 1 restocked, item 3 (untracked) now tracked at 0, item 7 sold out
    live = (np.array([0, 1, 3, 7]), np.array([0.0, 4.0, 0.0, -1.0]))
    keep = f.keep(CTX.with_stock(live), ITEMS)
    assert keep.tolist() == [
        [False, True, True, False, False, False, False],
        [False, True] + [False] * 5,
    ]
    assert f.keep(CTX.with_stock(None), ITEMS).tolist() == f.keep(CTX, ITEMS).tolist()
    assert CTX.with_stock(live).rows(1, 2).stock is live  # a row's context keeps them

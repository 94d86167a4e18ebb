"""AttributeFilter: request predicates through the retrieval stage's ItemAttributes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shortlist.data.filters import ItemAttributes, parse_filter
from shortlist.errors import ConfigError, FilterError
from shortlist.filtering import AttributeFilter, FilterContext

ITEMS = np.array([[0, 1, 2, 3, 4, 9, -1]], np.int32)  # 9 is beyond the table


@pytest.fixture
def attributes() -> ItemAttributes:
    frame = pd.DataFrame(
        {
            "product_group_name": ["Shoes", "Garment", "Shoes", None, "Bags"],
            "price": [5.0, 10.0, np.nan, 7.5, 12.0],
        }
    )
    return ItemAttributes.from_table(frame)


def test_request_filter_from_the_context(attributes):
    f = AttributeFilter(attributes)
    ctx = FilterContext([0], filters={"price": {"lte": 10}})
    # item 2 has no price and item 9 no attributes: no match
    assert f.keep(ctx, ITEMS).tolist() == [[True, True, False, True, False, False, False]]
    parsed = FilterContext([0], filters=parse_filter({"product_group_name": {"in": ["Shoes"]}}))
    assert f.keep(parsed, ITEMS).tolist() == [[True, False, True, False, False, False, False]]


def test_fixed_spec_and_request_filter_both_apply(attributes):
    f = AttributeFilter(attributes, {"product_group_name": {"in": ["Shoes", "Bags"]}})
    assert f.keep(FilterContext([0]), ITEMS).tolist() == [[1, 0, 1, 0, 1, 0, 0]]
    ctx = FilterContext([0], filters={"price": {"gt": 6}})
    assert f.keep(ctx, ITEMS).tolist() == [[0, 0, 0, 0, 1, 0, 0]]


def test_no_filter_keeps_everything_but_padding(attributes):
    keep = AttributeFilter(attributes).keep(FilterContext([0]), ITEMS)
    assert keep.tolist() == [[True] * 6 + [False]]


def test_malformed_request_filter_is_a_422(attributes):
    f = AttributeFilter(attributes)
    for bad in ({"price": {"between": 1}}, {"colour": "red"}, {"price": "cheap"}, ["price"]):
        with pytest.raises(FilterError) as info:
            f.keep(FilterContext([0], filters=bad), ITEMS)
        assert info.value.http_status == 422


def test_bad_fixed_spec_is_a_config_error(attributes):
    with pytest.raises(ConfigError, match="attributes.spec"):
        AttributeFilter(attributes, {"colour": "red"})
    with pytest.raises(ConfigError):
        AttributeFilter({"price": [1.0]})

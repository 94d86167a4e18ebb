"""The filter language: parsing valid and bad forms, and masks on a hand-made items table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shortlist.data.filters import (
    And,
    AttrType,
    Eq,
    In,
    ItemAttributes,
    Range,
    parse_filter,
)
from shortlist.errors import FilterError, ShortlistError

SCHEMA = {
    "price": AttrType.NUMBER,
    "product_group_name": AttrType.STRING,
    "in_stock": AttrType.BOOL,
}


@pytest.fixture
def items() -> pd.DataFrame:
    # item ids 0..5; row i is item i
    return pd.DataFrame(
        {
            "product_group_name": ["Shoes", "Garment Upper body", None, "Shoes", "Bags", "Shoes"],
            "in_stock": [True, False, True, True, False, True],
            "price": [5.0, 10.0, np.nan, 7.5, 12.0, 4.99],
            "colour_code": [9, 10, 9, 11, 10, 9],
        }
    )


def test_parse_valid_forms():
    assert parse_filter({"in_stock": True}, SCHEMA) == Eq("in_stock", True)
    assert parse_filter({"price": {"eq": 5}}, SCHEMA) == Eq("price", 5)
    assert parse_filter({"product_group_name": {"in": ["Shoes", "Bags"]}}, SCHEMA) == In(
        "product_group_name", ["Bags", "Shoes"]
    )
    assert parse_filter({"price": {"gte": 5, "lte": 10}}, SCHEMA) == Range("price", 5, 10)
    assert parse_filter({"price": {"gt": 5}}, SCHEMA) == Range("price", 5, None, False, True)
    assert parse_filter({"price": {"lt": 10.5}}, SCHEMA) == Range("price", None, 10.5, True, False)
    both = parse_filter({"price": {"gte": 5, "lte": 10}, "in_stock": True}, SCHEMA)
    assert isinstance(both, And) and set(both.clauses) == {
        Range("price", 5, 10),
        Eq("in_stock", True),
    }
    # written in another order, the same filter (and so the same cache key)
    assert parse_filter({"in_stock": True, "price": {"lte": 10, "gte": 5}}, SCHEMA) == both
    assert hash(parse_filter({"in_stock": True, "price": {"lte": 10, "gte": 5}}, SCHEMA)) == hash(
        both
    )


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"colour": "red"}, "colour", "unknown attribute"),
        ({"price": {"between": [1, 2]}}, "price", "unknown operator 'between'"),
        ({"price": "cheap"}, "price", "expects a number"),
        ({"price": {"gte": True}}, "price", "expects a number"),
        ({"price": {"in": [1, "two"]}}, "price", "expects a number"),
        ({"product_group_name": 3}, "product_group_name", "expects a string"),
        ({"product_group_name": {"in": "Shoes"}}, "product_group_name", "non-empty list"),
        ({"product_group_name": {"in": []}}, "product_group_name", "non-empty list"),
        ({"product_group_name": {"gte": "A"}}, "product_group_name", "numeric attribute"),
        ({"in_stock": "yes"}, "in_stock", "true or false"),
        ({"in_stock": {"lt": 1}}, "in_stock", "numeric attribute"),
        ({"in_stock": None}, "in_stock", "true or false"),
        ({"price": {"gt": 1, "gte": 2}}, "price", "not both"),
        ({"price": {"gte": 10, "lte": 5}}, "price", "empty range"),
        ({"price": {}}, "price", "no operator"),
    ],
)
def test_parse_rejects_bad_forms_naming_the_field(spec, field, says):
    with pytest.raises(FilterError) as err:
        parse_filter(spec, SCHEMA)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and says in str(err.value)
    assert isinstance(err.value, ShortlistError) and err.value.http_status in (400, 422)


def test_parse_rejects_a_non_object():
    with pytest.raises(FilterError, match="expected an object"):
        parse_filter(["price"], SCHEMA)  # type: ignore[arg-type]


def test_schema_comes_from_the_table(items):
    attrs = ItemAttributes.from_table(items)
    assert attrs.schema == {
        "product_group_name": AttrType.STRING,
        "in_stock": AttrType.BOOL,
        "price": AttrType.NUMBER,
        "colour_code": AttrType.NUMBER,
    }
    with pytest.raises(FilterError) as err:
        attrs.mask({"colour": "red"})
    assert err.value.field == "colour"


def ids(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_masks_on_a_hand_made_table(items):
    attrs = ItemAttributes.from_table(items)
    assert ids(attrs.mask({"product_group_name": "Shoes"})) == [0, 3, 5]
    assert ids(attrs.mask({"product_group_name": "Hats"})) == []  # unseen value: no match
    assert ids(attrs.mask({"in_stock": True})) == [0, 2, 3, 5]
    assert ids(attrs.mask({"in_stock": False})) == [1, 4]
    assert ids(attrs.mask({"product_group_name": {"in": ["Bags", "Garment Upper body"]}})) == [1, 4]
    assert ids(attrs.mask({"colour_code": {"in": [9, 11]}})) == [0, 2, 3, 5]
    assert ids(attrs.mask({"price": {"gte": 5, "lte": 10}})) == [0, 1, 3]  # closed
    assert ids(attrs.mask({"price": {"gt": 5, "lt": 10}})) == [3]  # open
    assert ids(attrs.mask({"price": {"gte": 7.5}})) == [1, 3, 4]  # no upper bound
    assert ids(attrs.mask({"price": {"lt": 5}})) == [5]  # no lower bound
    assert ids(attrs.mask({"price": 10})) == [1]
    both = {"product_group_name": "Shoes", "in_stock": True, "price": {"lte": 5}}
    assert ids(attrs.mask(both)) == [0, 5]


def test_missing_values_never_match(items):
    attrs = ItemAttributes.from_table(items)
    # item 2 has no price and no group: outside every range, equal to nothing
    assert 2 not in ids(attrs.mask(Range("price")))
    assert 2 not in ids(attrs.mask({"price": {"gte": -1e300}}))
    assert 2 not in ids(attrs.mask({"price": {"lte": 1e300}}))
    assert ids(attrs.mask(Range("price"))) == [0, 1, 3, 4, 5]
    assert 2 not in ids(attrs.mask(In("product_group_name", ["None", "nan", ""])))


def test_masks_are_cached_and_read_only(items):
    attrs = ItemAttributes.from_table(items)
    first = attrs.mask({"in_stock": True, "price": {"lte": 10}})
    again = attrs.mask({"price": {"lte": 10}, "in_stock": True})
    assert again is first
    with pytest.raises(ValueError):
        first[0] = False
    attrs.cache_size = 1
    attrs.mask({"in_stock": False})
    attrs.mask({"in_stock": True})
    assert len(attrs._cache) == 1


def test_typed_filters_built_directly_are_checked_against_the_column(items):
    attrs = ItemAttributes.from_table(items)
    with pytest.raises(FilterError, match="numeric attribute"):
        attrs.mask(Range("product_group_name", 1, 2))
    with pytest.raises(FilterError, match="does not fit"):
        attrs.mask(Eq("price", "5"))
    with pytest.raises(FilterError, match="does not fit"):
        attrs.mask(In("in_stock", [True, "yes"]))
    with pytest.raises(FilterError, match="does not fit"):
        attrs.mask(Eq("product_group_name", 3))


def test_rows_placed_by_an_id_column_and_arrow_input(items):
    table = items.assign(item_idx=[6, 0, 2, 3, 4, 1])  # out of order, item 5 absent
    attrs = ItemAttributes.from_table(pa.Table.from_pandas(table), id_column="item_idx", n_items=8)
    assert attrs.n_items == 8 and "item_idx" not in attrs.schema
    assert ids(attrs.mask({"product_group_name": "Shoes"})) == [1, 3, 6]
    assert ids(attrs.mask({"in_stock": False})) == [0, 4]
    assert ids(attrs.mask(Range("price"))) == [0, 1, 3, 4, 6]  # 2: NaN; 5, 7: absent


def test_booleans_with_missing_values_stay_booleans():
    attrs = ItemAttributes.from_table(pd.DataFrame({"in_stock": [True, None, False]}))
    assert attrs.schema == {"in_stock": AttrType.BOOL}
    assert ids(attrs.mask({"in_stock": True})) == [0]
    assert ids(attrs.mask({"in_stock": {"in": [True, False]}})) == [0, 2]

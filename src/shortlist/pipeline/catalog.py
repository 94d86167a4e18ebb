"""The data a bound pipeline serves from: tables, ids, business rules, last prices.

Requests then only index numpy arrays: no file or SQL reads on the request path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from shortlist.config import AttributeKind
from shortlist.data.arrays import Dataset
from shortlist.data.filters import ItemAttributes
from shortlist.data.rules import Rules
from shortlist.errors import NotFoundError

PRICE = "price"  # the filterable price: the price an item last sold at


@dataclass
class Catalog:
    data: Dataset
    item_ids: np.ndarray  # external id (str) by item idx
    user_ids: np.ndarray  # external id (str) by user idx
    rules: Rules | None
    attributes: ItemAttributes  # filterable item attributes (+ last price)
    price: np.ndarray  # float32 last price by item idx, NaN unknown

    def __post_init__(self) -> None:
        self._items = pd.Index(self.item_ids)
        # object dtype: shares the ids' str objects (a `str` Index would copy 1.37 M of them
        # into Arrow and take seconds to build at full scale)
        self._users = pd.Index(self.user_ids, dtype=object)

    @cached_property
    def _display(self) -> dict[str, np.ndarray]:
        """The display attributes as plain arrays (None where missing), made on first use:
        `describe` runs for every item a request returns; evaluation never asks."""
        items = self.data.items
        if items is None:
            return {}
        return {
            c: items[c].astype("string").to_numpy(dtype=object, na_value=None)
            for c in display_columns(self.data)
        }

    def describe(self, item: int) -> dict[str, Any]:
        """What a person needs to recognise an item: its display attributes and last price."""
        out: dict[str, Any] = {c: values[item] for c, values in self._display.items()}
        price = float(self.price[item])
        out[PRICE] = None if np.isnan(price) else round(price, 6)
        return out

    @classmethod
    def from_dataset(cls, data: Dataset, price: np.ndarray | None = None) -> Catalog:
        """From loaded data: ids from the dataset (the dense idx as strings when it has none)
        and its business rules; `price`, the last prices, unless given (a saved funnel's), from
        the interactions."""
        price = last_price(data) if price is None else price
        items = data.items if data.items is not None else pd.DataFrame(index=range(data.n_items))
        keep = [n for n, k in data.item_kinds.items() if k != AttributeKind.TEXT and n in items]
        table = items[keep].copy()
        if PRICE not in table.columns:
            table[PRICE] = price
        return cls(
            data,
            data.item_ids if data.item_ids is not None else np.arange(data.n_items).astype(str),
            data.user_ids if data.user_ids is not None else np.arange(data.n_users).astype(str),
            data.rules,
            ItemAttributes.from_table(table, n_items=data.n_items),
            price,
        )

    def user_idx(self, user_id: object) -> int:
        """Raises: NotFoundError for a user the workspace has never seen."""
        try:
            return int(self._users.get_loc(str(user_id)))  # a hash lookup: ids are unique
        except KeyError:
            raise NotFoundError(f"unknown user '{user_id}'") from None

    def find_user(self, user_id: object) -> int:
        """The user's idx, -1 for an id the workspace has never seen (or not a string)."""
        return _position(self._users, user_id)

    def find_item(self, item_id: object) -> int:
        """The item's idx, -1 for an id the catalogue lacks (or not a string)."""
        return _position(self._items, item_id)

    def item_idx(self, item_ids: Sequence[object]) -> np.ndarray:
        """Raises: NotFoundError naming the first unknown item."""
        pos = self._items.get_indexer([str(i) for i in item_ids])
        if (pos < 0).any():
            raise NotFoundError(f"unknown item '{item_ids[int(np.argmax(pos < 0))]}'")
        return pos.astype(np.int64)


def _position(index: pd.Index, value: object) -> int:
    if not isinstance(value, str):
        return -1
    try:
        return int(index.get_loc(value))
    except KeyError:
        return -1


def last_price(data: Dataset) -> np.ndarray:
    """The price each item last sold at (interactions are sorted by time), NaN if never."""
    out = np.full(data.n_items, np.nan, np.float32)
    inter = data.interactions
    if inter.price is None or len(inter) == 0:
        return out
    known = np.flatnonzero(~np.isnan(inter.price))[::-1]  # newest first
    items, first = np.unique(inter.item[known], return_index=True)
    out[items] = inter.price[known[first]]
    return out


def display_columns(data: Dataset, most: int = 4) -> list[str]:
    """The item attributes that name an item for a person: those whose column name ends in
    "name" (the H&M adapter's prod_name, product_type_name, ...; many shops' name, brand_name),
    else the first categorical ones; at most `most`."""
    if data.items is None:
        return []
    usable = [c for c in data.items.columns if data.item_kinds.get(c) != AttributeKind.TEXT]
    named = [c for c in usable if c.lower().endswith("name")]
    categorical = [c for c in usable if data.item_kinds.get(c) == AttributeKind.CATEGORICAL]
    return (named or categorical)[:most]

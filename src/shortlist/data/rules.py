"""Business-rule data from the offline store, as arrays the candidate filters take.

`load_rules(store)` reads the optional tables ingest wrote from `inventory`, `item_regions`,
`user_regions` and `item_restrictions` (see the README's data layouts). A table the source did
not have, including every table of a store ingested before they existed, leaves its field None.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shortlist import columns as C
from shortlist.data.offline import OfflineStore
from shortlist.errors import ConfigError

# Filter name (as in shortlist.filtering) -> the Rules field it needs, and that field's table
FILTERS = {
    "in_stock": ("units", "inventory"),
    "available_in_region": ("availability", "item_regions"),
    "age_allowed": ("min_age", "item_restrictions"),
}


@dataclass(frozen=True, eq=False)
class Rules:
    """Per-item and per-user rule arrays, indexed by the store's dense ids.

    - `units`: float64 per item_idx, units in stock (0 or negative: out of stock); NaN for
      items the inventory does not list. None without an inventory.
    - `availability`: n_items x n_regions CSR matrix (int8), 1 where the item is sold in that
      region. An item listed in `item_regions` has ones in its listed regions only; an item not
      listed there is sold everywhere, and its row holds a one in every region, so
      `AvailableInRegion(availability)` (which keeps stored non-zeros) agrees. None without
      `item_regions`.
    - `user_region`: int32 per user_idx, the column of `availability` for the user's region;
      -1 for users `user_regions` does not list. None without `user_regions`.
    - `region_names`: region code -> name (both region tables share the codes); empty without
      region tables.
    - `min_age`: float64 per item_idx, the minimum buyer age; NaN for no limit. None without
      `item_restrictions`.
    """

    units: np.ndarray | None
    availability: sp.csr_matrix | None
    user_region: np.ndarray | None
    region_names: list[str]
    min_age: np.ndarray | None

    def region_code(self, name: str) -> int:
        """The code of a region name; -1 when unknown."""
        try:
            return self.region_names.index(name)
        except ValueError:
            return -1

    def filters(self, names: Iterable[str] | None = None, *, strict: bool = False) -> list:
        """The candidate filters these rules support, in the order named.

        Args:
            names: any of "in_stock", "available_in_region", "age_allowed"; None: all three.
                A filter whose data the store lacks is left out, unless `strict`.
            strict: raise ConfigError for a named filter without data instead.

        The filters take their defaults (`InStock` keeps untracked items, `AgeAllowed` hides
        restricted items from users of unknown age); build them directly for other options.
        The user's region for `FilterContext(region=...)` is `user_region[users]`.
        """
        from shortlist.filtering import AgeAllowed, AvailableInRegion, InStock

        build = {"in_stock": InStock, "available_in_region": AvailableInRegion,
                 "age_allowed": AgeAllowed}  # fmt: skip
        out = []
        for name in FILTERS if names is None else names:
            if name not in FILTERS:
                raise ConfigError(f"unknown filter {name!r} (known: {', '.join(FILTERS)})")
            attr, table = FILTERS[name]
            data = getattr(self, attr)
            if data is None:
                if strict:
                    raise ConfigError(f"{name} needs {table} data, which the store lacks")
                continue
            out.append(build[name](data))
        return out


def load_rules(store: OfflineStore) -> Rules:
    """The rule arrays of the store (None fields for tables it lacks)."""
    n_items, n_users = store.manifest.items.rows, store.manifest.users.rows
    regions = list(store.manifest.regions)

    def columns(name: str, value: str) -> tuple[np.ndarray, np.ndarray] | None:
        rel = store.rule_table(name)
        if rel is None:
            return None
        idx = C.USER_IDX if name == "user_regions" else C.ITEM_IDX
        got = rel.select(f"{idx}, {value}").fetchnumpy()
        return np.asarray(got[idx], np.int64), np.asarray(got[value])

    units = min_age = availability = user_region = None
    if (inv := columns("inventory", C.UNITS)) is not None:
        units = np.full(n_items, np.nan)
        units[inv[0]] = inv[1]
    if (lim := columns("item_restrictions", C.MIN_AGE)) is not None:
        min_age = np.full(n_items, np.nan)
        min_age[lim[0]] = lim[1]
    if (ur := columns("user_regions", C.REGION)) is not None:
        user_region = np.full(n_users, -1, np.int32)
        user_region[ur[0]] = ur[1]
    if (ir := columns("item_regions", C.REGION)) is not None:
        availability = _availability(ir[0], ir[1].astype(np.int64), n_items, len(regions))
    return Rules(units, availability, user_region, regions, min_age)


def _availability(
    items: np.ndarray, codes: np.ndarray, n_items: int, n_regions: int
) -> sp.csr_matrix:
    """Listed items in their regions; every other item in all regions."""
    listed = np.zeros(n_items, bool)
    listed[items] = True
    everywhere = np.flatnonzero(~listed)
    rows = np.concatenate([items, np.repeat(everywhere, n_regions)])
    cols = np.concatenate([codes, np.tile(np.arange(n_regions), len(everywhere))])
    data = np.ones(len(rows), np.int8)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_items, n_regions))

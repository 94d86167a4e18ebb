"""Business-rule data from the offline store, as arrays the candidate filters take.

`load_rules(store)` reads the optional tables ingest wrote from `inventory`, `item_regions`,
`user_regions` and `item_restrictions` (see the README's data layouts). A table the source did
not have, including every table of a store ingested before they existed, leaves its field None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from shortlist import columns as C
from shortlist.data.offline import OfflineStore
from shortlist.errors import RequestError


@dataclass(frozen=True, eq=False)
class Rules:
    """Per-item and per-user rule arrays, indexed by the store's dense ids.

    - `units`: float64 per item_idx, units in stock (0 or negative: out of stock); NaN for
      items the inventory does not list. None without an inventory.
    - `availability`: n_items x n_regions CSR matrix (int8), 1 where the item is sold in that
      region. An item listed in `item_regions` has ones in its listed regions only; an item not
      listed there is sold everywhere, and its row holds a one in every region, so
      `AvailableInRegionFilter(availability)` (which keeps stored non-zeros) agrees. None without
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
    withheld: dict[str, str] = field(default_factory=dict)  # table -> why it is not used

    def as_of_past(self) -> Rules:
        """The rules that hold at any past date: regions and age limits do not change with
        time, but the inventory is a snapshot of the end of the data, and filtering a past
        window's candidates by it would leak what sold out later. It is withheld (with the
        reason, which the filter's trace and the evaluation report give)."""
        if self.units is None:
            return self
        reason = (
            "the inventory is a snapshot of the end of the data: applied to past windows "
            "it would leak what sold out later"
        )
        return replace(self, units=None, withheld={**self.withheld, "inventory": reason})

    def region_code(self, name: object) -> int:
        """The code of a region name.

        Raises:
            RequestError: a name the region tables do not hold (misspelled, or no regions).
        """
        try:
            return self.region_names.index(str(name))
        except ValueError:
            known = ", ".join(self.region_names[:20]) or "none: the data has no regions"
            more = ", ..." if len(self.region_names) > 20 else ""
            raise RequestError(
                f"unknown region {name!r} (known: {known}{more})", field="region"
            ) from None


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
